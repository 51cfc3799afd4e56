/* Phone home: per-camera state machine (dispatcher -> relay -> tunnel) run by loop threads
 * over non-blocking control links; TLS connects run in a small dialer pool. */
#include "agent/tunnel.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/stream.h"
#include "common/log.h"
#include "common/util.h"

#define PENDING_GRACE_MS 15000   /* a held agent hears Pending every 5 s */
#define AUTH_REFUSED_MIN_MS 5000 /* wrong credentials: never retry sooner than this */
#define RETRY_DEFAULT_MS 5000    /* Refusal{ERR_RETRY} without retry_after_ms */
#define RETRY_MAX_MS 300000
#define KEEPALIVE_MIN_MS 100
#define KEEPALIVE_MAX_MS 3600000
#define RX_INIT 512
#define EV_WAKE UINT64_MAX
#define TIMEOUT_CAP_MS 60000
#define WHY_MAX 320 /* local message buffers; status keeps AGT_ERR_MAX of it */

static void on_readable(struct agt_cam *c);

const char *agt_cam_state_name(enum agt_cam_state s)
{
    switch (s) {
    case AGT_CAM_IDLE:
        return "idle";
    case AGT_CAM_DISPATCHING:
        return "dispatching";
    case AGT_CAM_WAITING_REG:
        return "waiting-registration";
    case AGT_CAM_CONNECTING:
        return "connecting";
    case AGT_CAM_ONLINE:
        return "online";
    }
    return "unknown";
}

/* epoll user data: camera index and attempt generation, so an event for a link that has
 * since been closed (and its fd number reused) is recognised and dropped. */
static uint64_t ev_pack(unsigned index, uint32_t gen)
{
    return (uint64_t)gen << 32 | index;
}

/* Copies a string from the network for a log line: printable ASCII only, bounded. */
static const char *clean(const char *in, char *out, size_t cap)
{
    size_t i = 0;
    for (; in && *in && i + 1 < cap; in++)
        out[i++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
    out[i] = '\0';
    return out;
}

/* ---- loop commands (any thread -> loop thread) ---- */

static void post(struct agt_loop *lp, struct agt_cmd *cmd)
{
    uint64_t one = 1;
    cmd->next = NULL;
    pthread_mutex_lock(&lp->mu);
    if (lp->tail)
        lp->tail->next = cmd;
    else
        lp->head = cmd;
    lp->tail = cmd;
    pthread_mutex_unlock(&lp->mu);
    ssize_t w = write(lp->evfd, &one, sizeof(one));
    (void)w; /* the counter only saturates if the loop is gone; the queue still holds it */
}

void agt_tunnel_stream_failed(struct agt_cam *cam, uint32_t gen, uint64_t stream_id,
                              const char *reason)
{
    struct agt_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    cmd->type = AGT_CMD_STREAM_FAILED;
    cmd->cam = cam;
    cmd->gen = gen;
    cmd->link.fd = -1;
    cmd->stream_id = stream_id;
    cr_strlcpy(cmd->text, reason, sizeof(cmd->text));
    post(cam->loop, cmd);
}

void agt_tunnel_press(struct agt_agent *a)
{
    for (unsigned i = 0; i < a->n_loops; i++) {
        struct agt_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
        cmd->type = AGT_CMD_PRESS;
        cmd->link.fd = -1;
        post(&a->loops[i], cmd);
    }
}

/* ---- status (read by the control socket under loop->mu) ---- */

static void set_status(struct agt_cam *c, enum agt_cam_state st, const char *relay,
                       const char *err)
{
    pthread_mutex_lock(&c->loop->mu);
    c->state = st;
    if (relay)
        cr_strlcpy(c->shown_relay, relay, sizeof(c->shown_relay));
    if (err)
        cr_strlcpy(c->last_error, err, sizeof(c->last_error));
    pthread_mutex_unlock(&c->loop->mu);
}

static const char *known_relay(const struct agt_cam *c)
{
    return c->n_relays ? c->relays[c->relay_idx] : "";
}

/* ---- dialer pool ---- */

static void dialer_submit(struct agt_agent *a, struct agt_dial_job *j)
{
    struct agt_dialer *d = &a->dialer;
    j->next = NULL;
    pthread_mutex_lock(&d->mu);
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

/* The first frame of a login: AuthStart to a dispatcher, TunnelHello to a relay. */
static int send_first_frame(struct agt_agent *a, const struct agt_dial_job *j, struct cr_link *l)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    Camrelay__TunnelHello th = CAMRELAY__TUNNEL_HELLO__INIT;

    as.identity = j->cam->serial;
    as.client_nonce.data = (uint8_t *)j->nonce;
    as.client_nonce.len = sizeof(j->nonce);
    if (j->to_dispatcher) {
        f.body_case = CAMRELAY__FRAME__BODY_AUTH_START;
        f.auth_start = &as;
    } else {
        th.auth = &as;
        th.ticket.data = (uint8_t *)j->ticket;
        th.ticket.len = j->ticket_len;
        th.agent_version = (char *)AGT_VERSION;
        th.services = (char **)a->svc_names;
        th.n_services = a->n_svc;
        f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
        f.tunnel_hello = &th;
    }
    return cr_link_write(l, &f, AGT_WRITE_MS);
}

static void run_dial(struct agt_agent *a, const struct agt_dial_job *j)
{
    struct agt_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    char err[AGT_ERR_MAX] = "";
    int rc;

    cmd->cam = j->cam;
    cmd->gen = j->gen;
    rc = cr_link_connect_tls(&cmd->link, a->tls, j->addr, AGT_DIAL_TIMEOUT_MS, err, sizeof(err));
    if (rc == 0) {
        rc = send_first_frame(a, j, &cmd->link);
        if (rc < 0) {
            snprintf(err, sizeof(err), "cannot send %s: %s",
                     j->to_dispatcher ? "auth_start" : "tunnel_hello", strerror(-rc));
            cr_link_close(&cmd->link);
        }
    }
    if (rc == 0) {
        cmd->type = AGT_CMD_LINK_UP;
    } else {
        cmd->type = AGT_CMD_DIAL_FAILED;
        cmd->link.fd = -1;
        cr_strlcpy(cmd->text, err, sizeof(cmd->text));
    }
    post(j->cam->loop, cmd);
}

static void *dialer_main(void *arg)
{
    struct agt_agent *a = arg;
    struct agt_dialer *d = &a->dialer;
    for (;;) {
        pthread_mutex_lock(&d->mu);
        while (!d->head && !d->stop)
            pthread_cond_wait(&d->cv, &d->mu);
        if (d->stop) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        struct agt_dial_job *j = d->head;
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        pthread_mutex_unlock(&d->mu);
        run_dial(a, j);
        free(j);
    }
    return NULL;
}

/* ---- the state machine (loop thread only from here on) ---- */

static void close_link(struct agt_cam *c)
{
    if (c->link.fd >= 0) {
        epoll_ctl(c->loop->epfd, EPOLL_CTL_DEL, c->link.fd, NULL);
        cr_link_close(&c->link);
    }
    free(c->rx.data);
    c->rx.data = NULL;
    c->rx.len = c->rx.cap = 0;
}

static void schedule(struct agt_cam *c, int to_dispatcher, uint32_t delay_ms)
{
    c->phase = AGT_PH_BACKOFF;
    c->to_dispatcher = to_dispatcher;
    c->due_ms = cr_now_ms() + delay_ms;
    set_status(c, to_dispatcher ? AGT_CAM_DISPATCHING : AGT_CAM_CONNECTING, known_relay(c), NULL);
    cr_debug("serial=%s next attempt: %s in %u ms", c->serial,
             to_dispatcher ? c->agent->cfg->disp[c->disp_idx] : known_relay(c), delay_ms);
}

static void start_attempt(struct agt_cam *c)
{
    struct agt_agent *a = c->agent;
    struct agt_dial_job *j = cr_xcalloc(1, sizeof(*j));

    if (!c->to_dispatcher && c->n_relays == 0)
        c->to_dispatcher = 1;
    c->gen++;
    cr_random_bytes(c->nonce, sizeof(c->nonce));
    cr_strlcpy(c->addr, c->to_dispatcher ? a->cfg->disp[c->disp_idx] : c->relays[c->relay_idx],
               sizeof(c->addr));
    j->cam = c;
    j->gen = c->gen;
    j->to_dispatcher = c->to_dispatcher;
    memcpy(j->addr, c->addr, sizeof(j->addr));
    memcpy(j->nonce, c->nonce, sizeof(j->nonce));
    /* A ticket is presented only while fresh; an empty one is always acceptable. */
    if (!c->to_dispatcher && c->ticket_len &&
        c->ticket_expires_unix > (uint64_t)cr_unix_now() + 5) {
        memcpy(j->ticket, c->ticket, c->ticket_len);
        j->ticket_len = c->ticket_len;
    }
    c->phase = AGT_PH_DIALING;
    c->due_ms = 0;
    set_status(c, c->to_dispatcher ? AGT_CAM_DISPATCHING : AGT_CAM_CONNECTING, known_relay(c),
               NULL);
    cr_debug("serial=%s connecting to %s %s", c->serial,
             c->to_dispatcher ? "dispatcher" : "relay", c->addr);
    dialer_submit(a, j);
}

/* A dispatcher attempt failed (logged at level, or not when level < 0): the next dispatcher
 * at once, or after a whole round (or when min_delay_ms asks for it) a backoff. After a
 * fruitless round a known relay gets one more try: the dispatchers may be down while the
 * relay is back. */
static void dispatcher_failed(struct agt_cam *c, int level, const char *why, uint32_t min_delay_ms)
{
    unsigned n = c->agent->cfg->n_disp;
    char err[WHY_MAX];

    close_link(c);
    if (level >= 0)
        cr_log(level, "dispatcher %s: %s (serial=%s)", c->addr, why, c->serial);
    snprintf(err, sizeof(err), "dispatcher %s: %s", c->addr, why);
    set_status(c, AGT_CAM_DISPATCHING, NULL, err);
    c->disp_tried++;
    c->disp_idx = (c->disp_idx + 1) % n;
    int round_over = c->disp_tried >= n;
    if (round_over) {
        c->disp_tried = 0;
        c->disp_idx = 0;
    }
    if (!round_over && !min_delay_ms) {
        schedule(c, 1, 0);
        return;
    }
    uint32_t d = agt_backoff_next_ms(&c->backoff);
    if (d < min_delay_ms)
        d = min_delay_ms;
    if (round_over && c->n_relays) {
        c->relay_fail = AGT_RELAY_FAILS_MAX - 1;
        schedule(c, 0, d);
    } else {
        schedule(c, 1, d);
    }
}

/* A relay login attempt failed: retry the relay (next address) with backoff; after
 * AGT_RELAY_FAILS_MAX in a row, ask the dispatchers again. */
static void relay_failed(struct agt_cam *c, const char *why)
{
    char err[WHY_MAX];

    close_link(c);
    c->relay_fail++;
    cr_warn("relay %s: %s (serial=%s, failure %u of %d before asking a dispatcher)", c->addr,
            why, c->serial, c->relay_fail, AGT_RELAY_FAILS_MAX);
    snprintf(err, sizeof(err), "relay %s: %s", c->addr, why);
    set_status(c, AGT_CAM_CONNECTING, NULL, err);
    uint32_t d = agt_backoff_next_ms(&c->backoff);
    if (c->relay_fail >= AGT_RELAY_FAILS_MAX || c->n_relays == 0) {
        c->relay_fail = 0;
        c->disp_idx = 0;
        c->disp_tried = 0;
        schedule(c, 1, d);
        return;
    }
    c->relay_idx = (c->relay_idx + 1) % c->n_relays;
    schedule(c, 0, d);
}

/* The relay does not (or no longer) accept this camera: forget it, ask a dispatcher. */
static void forget_relay(struct agt_cam *c)
{
    struct agt_agent *a = c->agent;
    int rc = agt_cache_drop(a->cfg->state_dir, c->serial);
    if (rc < 0)
        cr_warn("cannot remove relay cache of serial=%s in %s: %s", c->serial,
                a->cfg->state_dir, strerror(-rc));
    c->n_relays = 0;
    c->relay_idx = 0;
    c->relay_fail = 0;
    c->ticket_len = 0;
    c->disp_idx = 0;
    c->disp_tried = 0;
}

static void tunnel_down(struct agt_cam *c, const char *why)
{
    close_link(c);
    cr_warn("tunnel down serial=%s reason=%s", c->serial, why);
    c->relay_fail = 0;
    set_status(c, AGT_CAM_CONNECTING, NULL, why);
    schedule(c, 0, agt_backoff_next_ms(&c->backoff));
}

/* Whatever the current step was, it failed. */
static void attempt_failed(struct agt_cam *c, const char *why)
{
    if (c->phase == AGT_PH_ONLINE)
        tunnel_down(c, why);
    else if (c->to_dispatcher)
        dispatcher_failed(c, CR_LOG_WARN, why, 0);
    else
        relay_failed(c, why);
}

static int write_frame(struct agt_cam *c, const Camrelay__Frame *f)
{
    int rc = cr_link_write(&c->link, f, AGT_WRITE_MS);
    if (rc < 0) {
        char why[WHY_MAX];
        snprintf(why, sizeof(why), "cannot send %s: %s", cr_frame_body_name(f), strerror(-rc));
        attempt_failed(c, why);
    }
    return rc;
}

static void send_stream_failed(struct agt_cam *c, uint64_t stream_id, const char *reason)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__StreamFailed sf = CAMRELAY__STREAM_FAILED__INIT;
    sf.stream_id = stream_id;
    sf.reason = (char *)reason;
    f.body_case = CAMRELAY__FRAME__BODY_STREAM_FAILED;
    f.stream_failed = &sf;
    write_frame(c, &f);
}

/* ---- dispatcher ---- */

static void on_dispatcher_refusal(struct agt_cam *c, const Camrelay__Refusal *r)
{
    char m[120], why[WHY_MAX];
    clean(r->message, m, sizeof(m));

    switch (r->status) {
    case CAMRELAY__STATUS__ERR_AUTH:
        /* Wrong OAK, user or password: say so plainly, and never retry quickly. */
        cr_err("dispatcher refused: %s (serial=%s, dispatcher %s%s)", m, c->serial, c->addr,
               strstr(m, "authentication failed")
                   ? ""
                   : ": authentication failed, check the OAK, user and password");
        snprintf(why, sizeof(why), "dispatcher refused: %s", m);
        dispatcher_failed(c, -1, why, AUTH_REFUSED_MIN_MS);
        return;
    case CAMRELAY__STATUS__ERR_RETRY:
    case CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL: {
        uint32_t after = r->retry_after_ms ? r->retry_after_ms : RETRY_DEFAULT_MS;
        if (after > RETRY_MAX_MS)
            after = RETRY_MAX_MS;
        uint32_t d = agt_jitter_ms(after, after / 2);
        close_link(c);
        cr_warn("dispatcher %s: %s: %s (serial=%s, asking again in %u ms)", c->addr,
                cr_status_name(r->status), m, c->serial, d);
        snprintf(why, sizeof(why), "dispatcher %s: %s: %s", c->addr, cr_status_name(r->status),
                 m);
        set_status(c, AGT_CAM_DISPATCHING, NULL, why);
        schedule(c, 1, d); /* same dispatcher: it answered */
        return;
    }
    default:
        snprintf(why, sizeof(why), "refused: %s: %s", cr_status_name(r->status), m);
        dispatcher_failed(c, CR_LOG_WARN, why, 0);
        return;
    }
}

static void on_dispatch_result(struct agt_cam *c, const Camrelay__DispatchResult *d)
{
    struct agt_agent *a = c->agent;
    char addrs[AGT_MAX_RELAYS][CR_ADDR_STRLEN], tmp[CR_ADDR_STRLEN];
    unsigned n = 0;

    for (size_t i = 0; i < d->n_relay_addrs; i++) {
        const char *s = d->relay_addrs[i];
        if (s && agt_hostport_check(s) == 0) {
            if (n < AGT_MAX_RELAYS)
                cr_strlcpy(addrs[n++], s, CR_ADDR_STRLEN);
        } else {
            cr_warn("dispatcher %s: ignoring bad relay address \"%s\" (serial=%s)", c->addr,
                    clean(s, tmp, sizeof(tmp)), c->serial);
        }
    }
    if (n == 0) {
        dispatcher_failed(c, CR_LOG_WARN, "dispatch result without a usable relay address", 0);
        return;
    }
    int changed = n != c->n_relays || memcmp(addrs, c->relays, n * sizeof(addrs[0])) != 0;
    memcpy(c->relays, addrs, n * sizeof(addrs[0]));
    c->n_relays = n;
    c->relay_idx = 0;
    c->relay_fail = 0;
    c->ticket_len = 0;
    if (d->ticket.len > 0 && d->ticket.len <= AGT_TICKET_MAX) {
        memcpy(c->ticket, d->ticket.data, d->ticket.len);
        c->ticket_len = (uint32_t)d->ticket.len;
        c->ticket_expires_unix = d->ticket_expires_unix;
    }
    cr_info("dispatched serial=%s relay=%s", c->serial, c->relays[0]);
    cr_debug("serial=%s relay name %s, %u address(es)", c->serial,
             clean(d->relay_name, tmp, sizeof(tmp)), n);
    if (changed) {
        int rc = agt_cache_store(a->cfg->state_dir, c->serial,
                                 (const char(*)[CR_ADDR_STRLEN])c->relays, n, a->durable_cache);
        if (rc < 0) {
            if (!atomic_exchange(&a->cache_warned, 1))
                cr_warn("cannot cache the relay address in %s: %s (the agent works, but asks "
                        "the dispatcher after every restart)",
                        a->cfg->state_dir, strerror(-rc));
        }
    }
    close_link(c);
    c->disp_idx = 0;
    c->disp_tried = 0;
    c->pending_logged = 0;
    c->to_dispatcher = 0;
    start_attempt(c);
}

static void on_dispatcher_frame(struct agt_cam *c, const Camrelay__Frame *f)
{
    char why[WHY_MAX];
    int rc;

    if (f->body_case == CAMRELAY__FRAME__BODY_REFUSAL) {
        on_dispatcher_refusal(c, f->refusal);
        return;
    }
    if (c->phase == AGT_PH_DISP_HELLO && f->body_case == CAMRELAY__FRAME__BODY_PENDING) {
        if (!c->pending_logged) {
            cr_info("waiting at dispatcher serial=%s for registration (dispatcher %s holds the "
                    "camera up to %u ms)",
                    c->serial, c->addr, f->pending->hold_ms);
            c->pending_logged = 1;
        }
        set_status(c, AGT_CAM_WAITING_REG, NULL, NULL);
        c->due_ms = cr_now_ms() + PENDING_GRACE_MS;
        return;
    }
    if (c->phase == AGT_PH_DISP_HELLO && f->body_case == CAMRELAY__FRAME__BODY_AUTH_CHALLENGE) {
        rc = cr_auth_client_respond(&c->link, &c->auth, c->serial, c->nonce, sizeof(c->nonce),
                                    f->auth_challenge);
        if (rc < 0) {
            snprintf(why, sizeof(why), "%s", rc == -EINVAL ? "unacceptable auth challenge"
                                                           : "cannot send auth proof");
            dispatcher_failed(c, CR_LOG_WARN, why, 0);
            return;
        }
        c->phase = AGT_PH_DISP_RESULT;
        c->due_ms = cr_now_ms() + AGT_STEP_MS;
        set_status(c, AGT_CAM_DISPATCHING, NULL, NULL);
        return;
    }
    if (c->phase == AGT_PH_DISP_RESULT && f->body_case == CAMRELAY__FRAME__BODY_DISPATCH_RESULT) {
        on_dispatch_result(c, f->dispatch_result);
        return;
    }
    snprintf(why, sizeof(why), "unexpected %s", cr_frame_body_name(f));
    dispatcher_failed(c, CR_LOG_WARN, why, 0);
}

/* ---- relay login ---- */

static void on_relay_refusal(struct agt_cam *c, const Camrelay__Refusal *r, int online)
{
    char m[120], why[WHY_MAX];
    clean(r->message, m, sizeof(m));
    snprintf(why, sizeof(why), "relay refused: %s: %s", cr_status_name(r->status), m);

    switch (r->status) {
    case CAMRELAY__STATUS__ERR_AUTH:
    case CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL:
        close_link(c);
        if (online)
            cr_warn("tunnel down serial=%s reason=%s", c->serial, why);
        cr_log(r->status == CAMRELAY__STATUS__ERR_AUTH ? CR_LOG_ERROR : CR_LOG_WARN,
               "relay %s refused serial=%s: %s: %s; asking a dispatcher again", c->addr,
               c->serial, cr_status_name(r->status), m);
        forget_relay(c);
        set_status(c, AGT_CAM_DISPATCHING, "", why);
        schedule(c, 1, agt_backoff_next_ms(&c->backoff));
        return;
    case CAMRELAY__STATUS__ERR_RETRY: {
        uint32_t after = r->retry_after_ms ? r->retry_after_ms : RETRY_DEFAULT_MS;
        if (after > RETRY_MAX_MS)
            after = RETRY_MAX_MS;
        close_link(c);
        if (online)
            cr_warn("tunnel down serial=%s reason=%s", c->serial, why);
        else
            cr_warn("relay %s: %s (serial=%s)", c->addr, why, c->serial);
        set_status(c, AGT_CAM_CONNECTING, NULL, why);
        schedule(c, 0, agt_jitter_ms(after, after / 2));
        return;
    }
    default:
        attempt_failed(c, why);
        return;
    }
}

static void go_online(struct agt_cam *c, const Camrelay__TunnelWelcome *w)
{
    char site[CR_ADDR_STRLEN];
    uint32_t k = w->keepalive_ms ? w->keepalive_ms : AGT_KEEPALIVE_DEFAULT_MS;
    if (k < KEEPALIVE_MIN_MS)
        k = KEEPALIVE_MIN_MS;
    if (k > KEEPALIVE_MAX_MS)
        k = KEEPALIVE_MAX_MS;
    c->keepalive_ms = k;
    c->phase = AGT_PH_ONLINE;
    c->due_ms = cr_now_ms() + 3ull * k;
    c->relay_fail = 0;
    c->ticket_len = 0; /* used; a reconnect presents an empty ticket */
    c->pending_logged = 0;
    agt_backoff_reset(&c->backoff);
    cr_info("tunnel up serial=%s relay=%s (site address %s)", c->serial, c->addr,
            clean(w->site_addr, site, sizeof(site)));
    set_status(c, AGT_CAM_ONLINE, c->addr, NULL);
}

static void on_login_frame(struct agt_cam *c, const Camrelay__Frame *f)
{
    char why[WHY_MAX];

    if (f->body_case == CAMRELAY__FRAME__BODY_REFUSAL) {
        on_relay_refusal(c, f->refusal, 0);
        return;
    }
    if (c->phase == AGT_PH_RELAY_HELLO && f->body_case == CAMRELAY__FRAME__BODY_AUTH_CHALLENGE) {
        int rc = cr_auth_client_respond(&c->link, &c->auth, c->serial, c->nonce,
                                        sizeof(c->nonce), f->auth_challenge);
        if (rc < 0) {
            relay_failed(c, rc == -EINVAL ? "unacceptable auth challenge" : "cannot send proof");
            return;
        }
        c->phase = AGT_PH_RELAY_WELCOME;
        c->due_ms = cr_now_ms() + AGT_STEP_MS;
        return;
    }
    if (c->phase == AGT_PH_RELAY_WELCOME &&
        f->body_case == CAMRELAY__FRAME__BODY_TUNNEL_WELCOME) {
        go_online(c, f->tunnel_welcome);
        return;
    }
    snprintf(why, sizeof(why), "unexpected %s", cr_frame_body_name(f));
    relay_failed(c, why);
}

/* ---- online tunnel ---- */

static int service_offered(const struct agt_agent *a, const char *name)
{
    for (unsigned i = 0; i < a->n_svc; i++)
        if (strcmp(a->svc_names[i], name) == 0)
            return 1;
    return 0;
}

static void on_open_stream(struct agt_cam *c, const Camrelay__OpenStream *os)
{
    struct agt_agent *a = c->agent;
    char reason[AGT_ERR_MAX], svc[AGT_SERVICE_NAME_MAX + 8];
    clean(os->service, svc, sizeof(svc));

    if (!os->service || strlen(os->service) >= AGT_SERVICE_NAME_MAX ||
        !service_offered(a, os->service)) {
        snprintf(reason, sizeof(reason), "no local service \"%s\"", svc);
    } else if (os->token.len < 16 || os->token.len > AGT_TOKEN_MAX) {
        snprintf(reason, sizeof(reason), "bad token length %zu", os->token.len);
    } else if (atomic_load(&c->streams) >= AGT_MAX_STREAMS_PER_CAM ||
               atomic_load(&a->streams_open) >= AGT_MAX_STREAMS) {
        snprintf(reason, sizeof(reason), "too many open streams");
    } else {
        struct agt_stream_req req = {0};
        req.cam = c;
        req.tunnel_gen = c->gen;
        cr_strlcpy(req.relay, c->addr, sizeof(req.relay));
        req.stream_id = os->stream_id;
        cr_strlcpy(req.service, os->service, sizeof(req.service));
        memcpy(req.token, os->token.data, os->token.len);
        req.token_len = (uint32_t)os->token.len;
        int rc = agt_stream_start(&req);
        if (rc == 0)
            return;
        snprintf(reason, sizeof(reason), "cannot start a stream: %s", strerror(-rc));
    }
    cr_warn("stream %" PRIu64 " serial=%s service=%s refused by the agent: %s", os->stream_id,
            c->serial, svc, reason);
    send_stream_failed(c, os->stream_id, reason);
}

static void on_tunnel_frame(struct agt_cam *c, const Camrelay__Frame *f)
{
    char why[WHY_MAX];

    switch (f->body_case) {
    case CAMRELAY__FRAME__BODY_PING: {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__Pong pong = CAMRELAY__PONG__INIT;
        pong.seq = f->ping->seq;
        out.body_case = CAMRELAY__FRAME__BODY_PONG;
        out.pong = &pong;
        write_frame(c, &out);
        return;
    }
    case CAMRELAY__FRAME__BODY_OPEN_STREAM:
        on_open_stream(c, f->open_stream);
        return;
    case CAMRELAY__FRAME__BODY_REFUSAL:
        on_relay_refusal(c, f->refusal, 1);
        return;
    default:
        snprintf(why, sizeof(why), "unexpected %s from relay", cr_frame_body_name(f));
        tunnel_down(c, why);
        return;
    }
}

static void on_frame(struct agt_cam *c, const Camrelay__Frame *f)
{
    switch (c->phase) {
    case AGT_PH_DISP_HELLO:
    case AGT_PH_DISP_RESULT:
        on_dispatcher_frame(c, f);
        return;
    case AGT_PH_RELAY_HELLO:
    case AGT_PH_RELAY_WELCOME:
        on_login_frame(c, f);
        return;
    case AGT_PH_ONLINE:
        on_tunnel_frame(c, f);
        return;
    default:
        return; /* no link in the other phases */
    }
}

/* Makes room in the receive buffer for the frame being read. Returns 0 or -EMSGSIZE. */
static int rx_reserve(struct agt_cam *c)
{
    uint32_t need = RX_INIT;
    if (c->rx.len >= CR_FRAME_HDR) {
        int body = cr_frame_body_len(c->rx.data, AGT_FRAME_MAX);
        if (body < 0)
            return body;
        if ((uint32_t)body + CR_FRAME_HDR > need)
            need = (uint32_t)body + CR_FRAME_HDR;
    }
    if (c->rx.cap < need) {
        uint8_t *p = realloc(c->rx.data, need);
        if (!p)
            return -ENOMEM;
        c->rx.data = p;
        c->rx.cap = need;
    }
    return 0;
}

/* Reads what the link has, decodes and handles every complete frame. Stops as soon as a
 * handler closed the link or started a new attempt. */
static void on_readable(struct agt_cam *c)
{
    uint32_t gen = c->gen;
    char why[WHY_MAX];

    for (;;) {
        int rc = rx_reserve(c);
        if (rc < 0) {
            attempt_failed(c, rc == -EMSGSIZE ? "oversized frame" : "out of memory");
            return;
        }
        int n = cr_link_read_some(&c->link, c->rx.data + c->rx.len, c->rx.cap - c->rx.len);
        if (n == -EAGAIN)
            return;
        if (n <= 0) {
            const char *what = n == 0         ? "connection closed by peer"
                               : n == -EPROTO ? "TLS error"
                                              : strerror(-n);
            snprintf(why, sizeof(why), "%s", what);
            attempt_failed(c, why);
            return;
        }
        c->rx.len += (uint32_t)n;
        if (c->phase == AGT_PH_ONLINE)
            c->due_ms = cr_now_ms() + 3ull * c->keepalive_ms;
        for (;;) {
            Camrelay__Frame *f = NULL;
            int k = cr_frame_decode(c->rx.data, c->rx.len, AGT_FRAME_MAX, &f);
            if (k == 0)
                break;
            if (k < 0) {
                attempt_failed(c, k == -EMSGSIZE ? "oversized frame" : "malformed frame");
                return;
            }
            memmove(c->rx.data, c->rx.data + k, c->rx.len - (uint32_t)k);
            c->rx.len -= (uint32_t)k;
            on_frame(c, f);
            cr_frame_free(f);
            if (c->gen != gen || c->link.fd < 0)
                return;
        }
    }
}

static void begin(struct agt_cam *c)
{
    c->to_dispatcher = c->n_relays == 0;
    c->disp_idx = 0;
    c->disp_tried = 0;
    c->relay_idx = 0;
    c->relay_fail = 0;
    start_attempt(c);
}

static void on_link_up(struct agt_cam *c, struct agt_cmd *cmd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = ev_pack(c->index, c->gen)};

    c->link = cmd->link;
    cmd->link.fd = -1;
    cmd->link.ssl = NULL;
    c->link.max_frame = AGT_FRAME_MAX;
    if (epoll_ctl(c->loop->epfd, EPOLL_CTL_ADD, c->link.fd, &ev) < 0) {
        char why[WHY_MAX];
        snprintf(why, sizeof(why), "epoll: %s", strerror(errno));
        c->phase = AGT_PH_DIALING;
        attempt_failed(c, why);
        return;
    }
    c->phase = c->to_dispatcher ? AGT_PH_DISP_HELLO : AGT_PH_RELAY_HELLO;
    c->due_ms = cr_now_ms() + AGT_STEP_MS;
    on_readable(c); /* the handshake may have buffered the answer already */
}

static void run_commands(struct agt_loop *lp)
{
    struct agt_agent *a = lp->agent;
    pthread_mutex_lock(&lp->mu);
    struct agt_cmd *cmd = lp->head;
    lp->head = lp->tail = NULL;
    pthread_mutex_unlock(&lp->mu);

    while (cmd) {
        struct agt_cmd *next = cmd->next;
        struct agt_cam *c = cmd->cam;
        switch (cmd->type) {
        case AGT_CMD_LINK_UP:
            if (atomic_load(&a->stopping) || cmd->gen != c->gen || c->phase != AGT_PH_DIALING)
                cr_link_close(&cmd->link);
            else
                on_link_up(c, cmd);
            break;
        case AGT_CMD_DIAL_FAILED:
            if (cmd->gen == c->gen && c->phase == AGT_PH_DIALING)
                attempt_failed(c, cmd->text);
            break;
        case AGT_CMD_STREAM_FAILED:
            if (cmd->gen == c->gen && c->phase == AGT_PH_ONLINE)
                send_stream_failed(c, cmd->stream_id, cmd->text);
            break;
        case AGT_CMD_PRESS:
            for (unsigned i = 0; i < lp->n_cams; i++)
                if (lp->cams[i]->phase == AGT_PH_IDLE)
                    begin(lp->cams[i]);
            break;
        case AGT_CMD_NONE:
            break;
        }
        free(cmd);
        cmd = next;
    }
}

static void run_timers(struct agt_loop *lp)
{
    uint64_t now = cr_now_ms();
    char why[WHY_MAX];

    for (unsigned i = 0; i < lp->n_cams; i++) {
        struct agt_cam *c = lp->cams[i];
        if (!c->due_ms || c->due_ms > now)
            continue;
        switch (c->phase) {
        case AGT_PH_BACKOFF:
            start_attempt(c);
            break;
        case AGT_PH_DISP_HELLO:
            attempt_failed(c, "timed out waiting for the dispatcher's challenge");
            break;
        case AGT_PH_DISP_RESULT:
            attempt_failed(c, "timed out waiting for the dispatch result");
            break;
        case AGT_PH_RELAY_HELLO:
            attempt_failed(c, "timed out waiting for the relay's challenge");
            break;
        case AGT_PH_RELAY_WELCOME:
            attempt_failed(c, "timed out waiting for the relay's welcome");
            break;
        case AGT_PH_ONLINE:
            snprintf(why, sizeof(why), "no frame from the relay for %" PRIu64 " ms",
                     (uint64_t)3 * c->keepalive_ms);
            tunnel_down(c, why);
            break;
        default:
            c->due_ms = 0;
            break;
        }
    }
}

static int next_timeout(const struct agt_loop *lp)
{
    uint64_t now = cr_now_ms(), first = now + TIMEOUT_CAP_MS;
    for (unsigned i = 0; i < lp->n_cams; i++) {
        uint64_t d = lp->cams[i]->due_ms;
        if (d && d < first)
            first = d;
    }
    return first <= now ? 0 : (int)(first - now);
}

static void *loop_main(void *arg)
{
    struct agt_loop *lp = arg;
    struct agt_agent *a = lp->agent;
    struct epoll_event ev[64];

    while (!atomic_load(&a->stopping)) {
        int n = epoll_wait(lp->epfd, ev, (int)CR_ARRAY_SIZE(ev), next_timeout(lp));
        if (n < 0 && errno != EINTR) {
            cr_err("agent loop: epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            uint64_t u = ev[i].data.u64;
            if (u == EV_WAKE) {
                uint64_t v;
                ssize_t r = read(lp->evfd, &v, sizeof(v));
                (void)r;
                run_commands(lp);
                continue;
            }
            struct agt_cam *c = &a->cams[(uint32_t)u];
            if (c->gen == (uint32_t)(u >> 32) && c->link.fd >= 0 && c->phase >= AGT_PH_DISP_HELLO)
                on_readable(c);
        }
        run_timers(lp);
    }

    for (unsigned i = 0; i < lp->n_cams; i++) {
        struct agt_cam *c = lp->cams[i];
        if (c->phase == AGT_PH_ONLINE)
            cr_info("tunnel down serial=%s reason=shutdown", c->serial);
        close_link(c);
        c->phase = AGT_PH_IDLE;
        c->due_ms = 0;
        set_status(c, AGT_CAM_IDLE, NULL, NULL);
    }
    return NULL;
}

/* ---- life cycle ---- */

int agt_tunnel_init(struct agt_agent *a, unsigned n_loops)
{
    pthread_mutex_init(&a->dialer.mu, NULL);
    pthread_cond_init(&a->dialer.cv, NULL);
    a->loops = cr_xcalloc(n_loops, sizeof(*a->loops));
    a->n_loops = n_loops;
    for (unsigned i = 0; i < n_loops; i++) {
        struct agt_loop *lp = &a->loops[i];
        lp->agent = a;
        lp->epfd = -1;
        lp->evfd = -1;
        pthread_mutex_init(&lp->mu, NULL);
        lp->cams = cr_xcalloc(a->n_cams / n_loops + 1, sizeof(*lp->cams));
    }
    for (unsigned i = 0; i < a->n_cams; i++) {
        struct agt_loop *lp = &a->loops[i % n_loops];
        a->cams[i].loop = lp;
        lp->cams[lp->n_cams++] = &a->cams[i];
    }
    for (unsigned i = 0; i < n_loops; i++) {
        struct agt_loop *lp = &a->loops[i];
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV_WAKE};
        lp->epfd = epoll_create1(EPOLL_CLOEXEC);
        lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (lp->epfd < 0 || lp->evfd < 0 || epoll_ctl(lp->epfd, EPOLL_CTL_ADD, lp->evfd, &ev) < 0)
            return -errno;
    }
    return 0;
}

int agt_tunnel_start(struct agt_agent *a, unsigned n_dialers)
{
    for (unsigned i = 0; i < a->n_loops; i++) {
        int rc = pthread_create(&a->loops[i].thread, &a->joinable_attr, loop_main, &a->loops[i]);
        if (rc != 0)
            return -rc;
        a->loops[i].started = 1;
    }
    for (unsigned i = 0; i < n_dialers; i++) {
        int rc = agt__spawn(a, dialer_main, a);
        if (rc < 0)
            return rc;
        a->dialer.n_threads++;
    }
    return 0;
}

void agt_tunnel_stop(struct agt_agent *a)
{
    pthread_mutex_lock(&a->dialer.mu);
    a->dialer.stop = 1;
    pthread_cond_broadcast(&a->dialer.cv);
    pthread_mutex_unlock(&a->dialer.mu);
    for (unsigned i = 0; i < a->n_loops; i++) {
        uint64_t one = 1;
        ssize_t w = write(a->loops[i].evfd, &one, sizeof(one));
        (void)w;
    }
    for (unsigned i = 0; i < a->n_loops; i++) {
        if (a->loops[i].started) {
            pthread_join(a->loops[i].thread, NULL);
            a->loops[i].started = 0;
        }
    }
}

void agt_tunnel_fini(struct agt_agent *a)
{
    for (unsigned i = 0; i < a->n_loops; i++) {
        struct agt_loop *lp = &a->loops[i];
        struct agt_cmd *cmd = lp->head;
        while (cmd) {
            struct agt_cmd *next = cmd->next;
            if (cmd->type == AGT_CMD_LINK_UP)
                cr_link_close(&cmd->link);
            free(cmd);
            cmd = next;
        }
        lp->head = lp->tail = NULL;
        for (unsigned k = 0; k < lp->n_cams; k++)
            close_link(lp->cams[k]);
        if (lp->epfd >= 0)
            close(lp->epfd);
        if (lp->evfd >= 0)
            close(lp->evfd);
        pthread_mutex_destroy(&lp->mu);
        free(lp->cams);
    }
    free(a->loops);
    a->loops = NULL;
    a->n_loops = 0;

    struct agt_dial_job *j = a->dialer.head;
    while (j) {
        struct agt_dial_job *next = j->next;
        free(j);
        j = next;
    }
    a->dialer.head = a->dialer.tail = NULL;
    pthread_mutex_destroy(&a->dialer.mu);
    pthread_cond_destroy(&a->dialer.cv);
}
