/* control/uplink.c — the relay's link to the dispatcher: login, full sync, queued changes,
 * keepalive, reconnect with backoff. One thread; blocking I/O with deadlines (common/link.h). */
#include "control/uplink.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/util.h"
#include "control/registry.h"

#define PINGS_MISSED_MAX 3
#define KEEPALIVE_MIN_MS 100
#define KEEPALIVE_MAX_MS 600000

/* A change to tell the dispatcher about. Only a hint: the full sync on every connect is what
 * makes the dispatcher's copy right, so the queue is cleared then. */
struct change {
    struct change *next;
    int removed;
    char serial[CTL_NAME_MAX];
};

struct ctl_uplink {
    char *name;
    char **addrs; /* public addresses, split */
    size_t n_addrs;
    char **dispatchers;
    size_t n_dispatchers;
    SSL_CTX *tls;
    char *password;
    uint8_t ticket_key[32];
    uint32_t keepalive_default_ms, backoff_min_ms, backoff_max_ms;
    struct ctl_registry *reg;
    struct cr_auth_client auth; /* uplink thread only: caches ClientKey across reconnects */
    uint64_t seq;               /* uplink thread only */
    int wake_fd;
    pthread_t thread;

    pthread_mutex_t lock; /* guards the fields below */
    struct change *head, *tail;
    int stopping;
    int connected;
    int link_fd; /* the live link's socket, for stop to shut down; -1 = none */
};

/* One connection to one dispatcher. */
struct session {
    struct ctl_uplink *up;
    struct cr_link l;
    const char *addr;
    uint32_t keepalive_ms;
    unsigned missed; /* pings sent since the dispatcher last sent anything */
    uint64_t next_ping;
};

/* A camera's record as sent in SyncCameras. */
struct cam_rec {
    char serial[CTL_NAME_MAX];
    struct ctl_verifier v;
};

struct snapshot {
    struct cam_rec *v;
    size_t n, cap;
};

/* Splits a comma-separated list into owned strings, skipping empty items. */
static char **split_list(const char *list, size_t *n)
{
    char *copy = cr_xstrdup(list ? list : ""), *save = NULL;
    size_t cap = 4;
    char **v = cr_xcalloc(cap, sizeof(*v));
    *n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (!len)
            continue;
        if (*n == cap) {
            cap *= 2;
            char **nv = cr_xcalloc(cap, sizeof(*nv));
            memcpy(nv, v, *n * sizeof(*v));
            free(v);
            v = nv;
        }
        v[(*n)++] = cr_xstrdup(tok);
    }
    free(copy);
    return v;
}

static void free_list(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int stopping(struct ctl_uplink *up)
{
    pthread_mutex_lock(&up->lock);
    int s = up->stopping;
    pthread_mutex_unlock(&up->lock);
    return s;
}

static void drain_wake(struct ctl_uplink *up)
{
    uint64_t v;
    while (read(up->wake_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
}

/* Sleeps ms, returning early when the uplink is stopped. */
static void nap(struct ctl_uplink *up, uint32_t ms)
{
    uint64_t deadline = cr_now_ms() + ms;
    while (!stopping(up)) {
        uint64_t now = cr_now_ms();
        if (now >= deadline)
            return;
        struct pollfd p = {.fd = up->wake_fd, .events = POLLIN};
        poll(&p, 1, (int)(deadline - now));
        drain_wake(up);
    }
}

static void clear_queue(struct ctl_uplink *up)
{
    pthread_mutex_lock(&up->lock);
    struct change *c = up->head;
    up->head = up->tail = NULL;
    pthread_mutex_unlock(&up->lock);
    while (c) {
        struct change *next = c->next;
        free(c);
        c = next;
    }
}

void ctl_uplink_camera_changed(struct ctl_uplink *up, const char *serial, int removed)
{
    uint64_t one = 1;
    struct change *c;

    if (!up)
        return;
    c = cr_xcalloc(1, sizeof(*c));
    c->removed = removed;
    cr_strlcpy(c->serial, serial, sizeof(c->serial));
    pthread_mutex_lock(&up->lock);
    if (up->tail)
        up->tail->next = c;
    else
        up->head = c;
    up->tail = c;
    pthread_mutex_unlock(&up->lock);
    if (write(up->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        cr_warn("uplink: cannot wake the uplink thread: %s", strerror(errno));
}

int ctl_uplink_connected(struct ctl_uplink *up)
{
    if (!up)
        return 0;
    pthread_mutex_lock(&up->lock);
    int c = up->connected;
    pthread_mutex_unlock(&up->lock);
    return c;
}

/* ---- one session ---- */

static int send_frame(struct session *s, Camrelay__Frame *f)
{
    int rc = cr_link_write(&s->l, f, CTL_UPLINK_STEP_MS);
    if (rc < 0 && !stopping(s->up)) /* stop shuts the socket down: not worth a warning */
        cr_warn("uplink: cannot send %s to dispatcher %s: %s", cr_frame_body_name(f), s->addr,
                strerror(-rc));
    return rc;
}

static int send_ping(struct session *s)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ping p = CAMRELAY__PING__INIT;
    p.seq = ++s->up->seq;
    f.body_case = CAMRELAY__FRAME__BODY_PING;
    f.ping = &p;
    return send_frame(s, &f);
}

static void log_read_error(struct session *s, int rc, const char *waiting_for)
{
    if (stopping(s->up))
        return; /* our own shutdown(2) from ctl_uplink_stop() */
    if (rc == -ECONNRESET)
        cr_warn("uplink: dispatcher %s closed the link while we waited for %s", s->addr,
                waiting_for);
    else if (rc == -ETIMEDOUT)
        cr_warn("uplink: dispatcher %s did not send %s in time", s->addr, waiting_for);
    else
        cr_warn("uplink: reading %s from dispatcher %s failed: %s", waiting_for, s->addr,
                strerror(-rc));
}

static void log_refusal(struct session *s, const Camrelay__Refusal *r)
{
    cr_err("uplink: dispatcher %s refused the relay: %s: %s", s->addr,
           cr_status_name(r->status), r->message && *r->message ? r->message : "(no message)");
}

/*
 * Reads the next frame that is not keepalive traffic, answering Ping with Pong on the way.
 * Any frame at all proves the dispatcher alive. Returns 0 and an owned *out, or -errno from
 * cr_link_read (-ETIMEDOUT when nothing came within wait_ms).
 */
static int next_frame(struct session *s, int wait_ms, Camrelay__Frame **out)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)(wait_ms < 0 ? 0 : wait_ms);
    for (;;) {
        uint64_t now = cr_now_ms();
        int left = now >= deadline ? 0 : (int)(deadline - now);
        Camrelay__Frame *f = NULL;
        int rc = cr_link_read(&s->l, left, &f);
        if (rc < 0)
            return rc;
        s->missed = 0;
        if (f->body_case == CAMRELAY__FRAME__BODY_PING) {
            Camrelay__Frame r = CAMRELAY__FRAME__INIT;
            Camrelay__Pong p = CAMRELAY__PONG__INIT;
            p.seq = f->ping->seq;
            r.body_case = CAMRELAY__FRAME__BODY_PONG;
            r.pong = &p;
            cr_frame_free(f);
            rc = send_frame(s, &r);
            if (rc < 0)
                return rc;
            continue;
        }
        if (f->body_case == CAMRELAY__FRAME__BODY_PONG) {
            cr_frame_free(f);
            continue;
        }
        *out = f;
        return 0;
    }
}

/* Waits for the Ack of seq. Returns 0 with *status and msg filled, or -errno (link gone,
 * refusal, timeout, protocol error: the session must end). */
static int await_ack(struct session *s, uint64_t seq, int *status, char *msg, size_t cap)
{
    uint64_t wait = CTL_UPLINK_STEP_MS;
    if (3ull * s->keepalive_ms > wait)
        wait = 3ull * s->keepalive_ms;
    uint64_t deadline = cr_now_ms() + wait;
    for (;;) {
        uint64_t now = cr_now_ms();
        Camrelay__Frame *f = NULL;
        int rc = next_frame(s, now >= deadline ? 0 : (int)(deadline - now), &f);
        if (rc < 0) {
            log_read_error(s, rc, "an ack");
            return rc;
        }
        if (f->body_case == CAMRELAY__FRAME__BODY_ACK && f->ack->seq == seq) {
            *status = f->ack->status;
            cr_strlcpy(msg, f->ack->message ? f->ack->message : "", cap);
            cr_frame_free(f);
            return 0;
        }
        if (f->body_case == CAMRELAY__FRAME__BODY_ACK) {
            cr_debug("uplink: dispatcher %s acked unknown seq %llu", s->addr,
                     (unsigned long long)f->ack->seq);
            cr_frame_free(f);
            continue;
        }
        if (f->body_case == CAMRELAY__FRAME__BODY_REFUSAL)
            log_refusal(s, f->refusal);
        else
            cr_warn("uplink: unexpected %s frame from dispatcher %s; reconnecting",
                    cr_frame_body_name(f), s->addr);
        cr_frame_free(f);
        return -EPROTO;
    }
}

static void fill_record(Camrelay__CameraRecord *pr, struct cam_rec *r)
{
    Camrelay__CameraRecord init = CAMRELAY__CAMERA_RECORD__INIT;
    *pr = init;
    pr->serial = r->serial;
    pr->salt.data = r->v.salt;
    pr->salt.len = sizeof(r->v.salt);
    pr->iterations = r->v.iterations;
    pr->stored_key.data = r->v.stored_key;
    pr->stored_key.len = sizeof(r->v.stored_key);
}

/* Sends SyncCameras for recs[0..n) and waits for its Ack. Returns 0 with *status, or -errno. */
static int sync_records(struct session *s, struct cam_rec *recs, size_t n, int full,
                        int *status, char *msg, size_t cap)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__SyncCameras sc = CAMRELAY__SYNC_CAMERAS__INIT;
    Camrelay__CameraRecord *pr = cr_xcalloc(n, sizeof(*pr));
    Camrelay__CameraRecord **pp = cr_xcalloc(n, sizeof(*pp));
    int rc;

    for (size_t i = 0; i < n; i++) {
        fill_record(&pr[i], &recs[i]);
        pp[i] = &pr[i];
    }
    sc.seq = ++s->up->seq;
    sc.n_cameras = n;
    sc.cameras = pp;
    sc.full = full;
    f.body_case = CAMRELAY__FRAME__BODY_SYNC_CAMERAS;
    f.sync_cameras = &sc;
    rc = send_frame(s, &f);
    free(pp);
    free(pr);
    if (rc < 0)
        return rc;
    return await_ack(s, sc.seq, status, msg, cap);
}

static void mark_synced(struct session *s, const char *serial, int synced)
{
    int rc = ctl_registry_camera_set_synced(s->up->reg, serial, synced);
    if (rc < 0 && rc != -ENOENT)
        cr_warn("uplink: cannot record camera %s as %s: %s", serial,
                synced ? "synced" : "not synced", strerror(-rc));
}

/* Acts on a per-camera Ack: synced, or refused and left unsynced. */
static void camera_acked(struct session *s, const char *serial, int status, const char *msg)
{
    if (status == CAMRELAY__STATUS__OK) {
        mark_synced(s, serial, 1);
        cr_debug("uplink: dispatcher %s has camera %s", s->addr, serial);
        return;
    }
    mark_synced(s, serial, 0);
    if (status == CAMRELAY__STATUS__ERR_DUPLICATE)
        cr_err("dispatcher refused camera %s: %s", serial, *msg ? msg : "registered elsewhere");
    else
        cr_err("dispatcher refused camera %s: %s: %s", serial, cr_status_name(status),
               *msg ? msg : "(no message)");
}

static int sync_one(struct session *s, struct cam_rec *r)
{
    char msg[256];
    int status;
    int rc = sync_records(s, r, 1, 0, &status, msg, sizeof(msg));
    if (rc < 0)
        return rc;
    camera_acked(s, r->serial, status, msg);
    return 0;
}

static int snapshot_add(const struct ctl_camera *cam, void *ctx)
{
    struct snapshot *sn = ctx;
    if (sn->n == sn->cap) {
        sn->cap = sn->cap ? 2 * sn->cap : 64;
        struct cam_rec *nv = cr_xcalloc(sn->cap, sizeof(*nv));
        if (sn->n)
            memcpy(nv, sn->v, sn->n * sizeof(*nv));
        free(sn->v);
        sn->v = nv;
    }
    struct cam_rec *r = &sn->v[sn->n++];
    memcpy(r->serial, cam->serial, sizeof(r->serial));
    r->v = cam->verifier;
    return 0;
}

/*
 * Sends everything the registry holds. The first batch carries full=true (the dispatcher drops
 * this relay's other cameras); a registry larger than one frame follows in full=false batches.
 * A batch the dispatcher does not accept as a whole is retried camera by camera so that only
 * the refused ones stay unsynced. Returns 0 or -errno (the session must end).
 */
static int full_sync(struct session *s)
{
    struct snapshot sn = {0};
    char msg[256];
    int status, rc;

    rc = ctl_registry_camera_foreach(s->up->reg, NULL, snapshot_add, &sn);
    if (rc < 0) {
        cr_err("uplink: cannot read the registry for the full sync: %s", strerror(-rc));
        goto out_free;
    }
    size_t off = 0;
    do {
        size_t n = sn.n - off > CTL_UPLINK_SYNC_BATCH ? CTL_UPLINK_SYNC_BATCH : sn.n - off;
        rc = sync_records(s, sn.v + off, n, off == 0, &status, msg, sizeof(msg));
        if (rc < 0)
            goto out_free;
        if (status == CAMRELAY__STATUS__OK) {
            for (size_t i = off; i < off + n; i++)
                mark_synced(s, sn.v[i].serial, 1);
        } else {
            cr_warn("uplink: dispatcher %s did not accept the sync as a whole (%s: %s); "
                    "sending the %zu cameras one by one",
                    s->addr, cr_status_name(status), *msg ? msg : "no message", n);
            for (size_t i = off; i < off + n; i++) {
                rc = sync_one(s, &sn.v[i]);
                if (rc < 0)
                    goto out_free;
            }
        }
        off += n;
    } while (off < sn.n);
    cr_info("uplink: sent %zu cameras to dispatcher %s", sn.n, s->addr);
    rc = 0;

out_free:
    free(sn.v);
    return rc;
}

/* Sends the oldest queued change and waits for its Ack. Returns 0, 1 if the queue was empty,
 * or -errno. */
static int send_next_change(struct session *s)
{
    struct ctl_uplink *up = s->up;
    struct change *c;
    char msg[256];
    int status, rc;

    pthread_mutex_lock(&up->lock);
    c = up->head; /* only this thread unlinks entries, so c stays valid unlocked */
    pthread_mutex_unlock(&up->lock);
    if (!c)
        return 1;

    if (c->removed) {
        Camrelay__Frame f = CAMRELAY__FRAME__INIT;
        Camrelay__UnregisterCamera u = CAMRELAY__UNREGISTER_CAMERA__INIT;
        u.seq = ++up->seq;
        u.serial = c->serial;
        f.body_case = CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA;
        f.unregister_camera = &u;
        rc = send_frame(s, &f);
        if (rc == 0)
            rc = await_ack(s, u.seq, &status, msg, sizeof(msg));
        if (rc < 0)
            return rc;
        if (status != CAMRELAY__STATUS__OK && status != CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL)
            cr_warn("uplink: dispatcher %s did not unregister camera %s: %s: %s", s->addr,
                    c->serial, cr_status_name(status), *msg ? msg : "(no message)");
    } else {
        struct ctl_camera cam;
        rc = ctl_registry_camera_get(up->reg, c->serial, &cam);
        if (rc == 0) {
            struct cam_rec r;
            memcpy(r.serial, cam.serial, sizeof(r.serial));
            r.v = cam.verifier;
            rc = sync_one(s, &r);
            if (rc < 0)
                return rc;
        } else if (rc != -ENOENT) { /* -ENOENT: removed since; its removal is queued */
            cr_warn("uplink: cannot read camera %s from the registry: %s; it goes with the "
                    "next full sync",
                    c->serial, strerror(-rc));
        }
    }

    pthread_mutex_lock(&up->lock);
    up->head = c->next;
    if (!up->head)
        up->tail = NULL;
    pthread_mutex_unlock(&up->lock);
    free(c);
    return 0;
}

/* Handles a frame that arrived while idle. Returns 0 or -errno (end the session). */
static int idle_frame(struct session *s)
{
    Camrelay__Frame *f = NULL;
    int rc = next_frame(s, 100, &f);
    if (rc == -ETIMEDOUT)
        return 0; /* only keepalive traffic, or TLS bookkeeping */
    if (rc < 0) {
        log_read_error(s, rc, "the next frame");
        return rc;
    }
    if (f->body_case == CAMRELAY__FRAME__BODY_ACK) {
        cr_debug("uplink: stray ack %llu from dispatcher %s", (unsigned long long)f->ack->seq,
                 s->addr);
        cr_frame_free(f);
        return 0;
    }
    if (f->body_case == CAMRELAY__FRAME__BODY_REFUSAL)
        log_refusal(s, f->refusal);
    else
        cr_warn("uplink: unexpected %s frame from dispatcher %s; reconnecting",
                cr_frame_body_name(f), s->addr);
    cr_frame_free(f);
    return -EPROTO;
}

/* The steady state: queued changes, pings, and whatever the dispatcher sends. Returns when
 * the link must be re-established (-errno) or the uplink is stopping (0). */
static int serve(struct session *s)
{
    struct ctl_uplink *up = s->up;
    s->next_ping = cr_now_ms() + s->keepalive_ms;
    for (;;) {
        if (stopping(up))
            return 0;
        uint64_t now = cr_now_ms();
        if (now >= s->next_ping) {
            if (s->missed >= PINGS_MISSED_MAX) {
                cr_warn("uplink: dispatcher %s missed %u pings; reconnecting", s->addr,
                        s->missed);
                return -ETIMEDOUT;
            }
            int rc = send_ping(s);
            if (rc < 0)
                return rc;
            s->missed++;
            s->next_ping = now + s->keepalive_ms;
            continue;
        }
        int rc = send_next_change(s);
        if (rc < 0)
            return rc;
        if (rc == 0)
            continue; /* maybe more queued */
        if (cr_link_pending(&s->l)) {
            rc = idle_frame(s);
            if (rc < 0)
                return rc;
            continue;
        }
        struct pollfd p[2] = {{.fd = s->l.fd, .events = POLLIN},
                              {.fd = up->wake_fd, .events = POLLIN}};
        now = cr_now_ms();
        int timeout = s->next_ping > now ? (int)(s->next_ping - now) : 0;
        if (poll(p, 2, timeout) < 0 && errno != EINTR) {
            cr_err("uplink: poll failed: %s", strerror(errno));
            return -errno;
        }
        if (p[1].revents)
            drain_wake(up);
        if (p[0].revents) {
            rc = idle_frame(s);
            if (rc < 0)
                return rc;
        }
    }
}

/* Reads the login step's answer: want, or a Refusal (logged). Returns 0 with an owned *out,
 * -EACCES on refusal, other -errno. */
static int login_read(struct session *s, int want, const char *what, Camrelay__Frame **out)
{
    Camrelay__Frame *f = NULL;
    int rc = cr_link_read(&s->l, CTL_UPLINK_STEP_MS, &f);
    if (rc < 0) {
        log_read_error(s, rc, what);
        return rc;
    }
    if ((int)f->body_case == want) {
        *out = f;
        return 0;
    }
    if (f->body_case == CAMRELAY__FRAME__BODY_REFUSAL) {
        cr_err("dispatcher refused relay account %s: %s", s->up->name,
               *f->refusal->message ? f->refusal->message : cr_status_name(f->refusal->status));
        rc = -EACCES;
    } else {
        cr_warn("uplink: dispatcher %s sent %s instead of %s", s->addr, cr_frame_body_name(f),
                what);
        rc = -EPROTO;
    }
    cr_frame_free(f);
    return rc;
}

/* RelayHello -> AuthChallenge -> AuthProof -> RelayWelcome. Returns 0 or -errno. */
static int login(struct session *s)
{
    struct ctl_uplink *up = s->up;
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    Camrelay__Frame *in = NULL;
    int rc;

    cr_random_bytes(nonce, sizeof(nonce));
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__RelayHello h = CAMRELAY__RELAY_HELLO__INIT;
    Camrelay__AuthStart st = CAMRELAY__AUTH_START__INIT;
    st.identity = up->name;
    st.client_nonce.data = nonce;
    st.client_nonce.len = sizeof(nonce);
    h.auth = &st;
    h.n_public_addrs = up->n_addrs;
    h.public_addrs = up->addrs;
    h.ticket_key.data = up->ticket_key;
    h.ticket_key.len = sizeof(up->ticket_key);
    f.body_case = CAMRELAY__FRAME__BODY_RELAY_HELLO;
    f.relay_hello = &h;
    rc = send_frame(s, &f);
    if (rc < 0)
        return rc;

    rc = login_read(s, CAMRELAY__FRAME__BODY_AUTH_CHALLENGE, "auth_challenge", &in);
    if (rc < 0)
        return rc;
    rc = cr_auth_client_respond(&s->l, &up->auth, up->name, nonce, sizeof(nonce),
                                in->auth_challenge);
    cr_frame_free(in);
    if (rc < 0) {
        cr_warn("uplink: cannot answer dispatcher %s's challenge: %s", s->addr,
                rc == -EINVAL ? "unacceptable parameters" : strerror(-rc));
        return rc;
    }

    rc = login_read(s, CAMRELAY__FRAME__BODY_RELAY_WELCOME, "relay_welcome", &in);
    if (rc < 0)
        return rc;
    uint32_t ka = in->relay_welcome->keepalive_ms;
    cr_frame_free(in);
    if (ka == 0)
        ka = up->keepalive_default_ms;
    if (ka < KEEPALIVE_MIN_MS)
        ka = KEEPALIVE_MIN_MS;
    if (ka > KEEPALIVE_MAX_MS)
        ka = KEEPALIVE_MAX_MS;
    s->keepalive_ms = ka;
    return 0;
}

/* Connects to one dispatcher and runs the session to its end. *was_up is set once logged in.
 * Returns 0 when stopping, else -errno saying why the session ended. */
static int session(struct ctl_uplink *up, const char *addr, int *was_up)
{
    struct session s = {.up = up, .addr = addr};
    char err[256];
    int rc;

    *was_up = 0;
    rc = cr_link_connect_tls(&s.l, up->tls, addr, CTL_UPLINK_CONNECT_MS, err, sizeof(err));
    if (rc < 0) {
        cr_warn("uplink: %s", err);
        return rc;
    }
    pthread_mutex_lock(&up->lock);
    if (up->stopping) {
        pthread_mutex_unlock(&up->lock);
        cr_link_close(&s.l);
        return 0;
    }
    up->link_fd = s.l.fd;
    pthread_mutex_unlock(&up->lock);

    rc = login(&s);
    if (rc < 0)
        goto out_close;
    *was_up = 1;
    pthread_mutex_lock(&up->lock);
    up->connected = 1;
    pthread_mutex_unlock(&up->lock);
    cr_info("uplink: logged in to dispatcher %s as %s (keepalive %u ms)", addr, up->name,
            s.keepalive_ms);

    /* Everything queued so far is covered by the full sync; later changes queue behind it. */
    clear_queue(up);
    rc = full_sync(&s);
    if (rc == 0)
        rc = serve(&s);
    pthread_mutex_lock(&up->lock);
    up->connected = 0;
    pthread_mutex_unlock(&up->lock);
    if (rc < 0 && !stopping(up))
        cr_warn("uplink: lost dispatcher %s; reconnecting", addr);

out_close:
    pthread_mutex_lock(&up->lock);
    up->link_fd = -1;
    pthread_mutex_unlock(&up->lock);
    cr_link_close(&s.l);
    return stopping(up) ? 0 : rc;
}

static uint32_t jitter(uint32_t ms)
{
    return ms / 2 + cr_random_below(ms / 2 + 1);
}

static void *uplink_main(void *arg)
{
    struct ctl_uplink *up = arg;
    uint32_t backoff = up->backoff_min_ms;

    while (!stopping(up)) {
        int was_up = 0;
        for (size_t i = 0; i < up->n_dispatchers && !stopping(up); i++) {
            session(up, up->dispatchers[i], &was_up);
            if (was_up)
                break; /* a working link dropped: start over from the first dispatcher */
        }
        if (stopping(up))
            break;
        if (was_up) {
            backoff = up->backoff_min_ms;
            nap(up, jitter(backoff));
            continue;
        }
        uint32_t delay = jitter(backoff);
        cr_info("uplink: no dispatcher accepted the relay; next round in %u ms", delay);
        nap(up, delay);
        backoff = backoff * 2 > up->backoff_max_ms ? up->backoff_max_ms : backoff * 2;
    }
    return NULL;
}

int ctl_uplink_start(const struct ctl_uplink_config *cfg, struct ctl_registry *reg,
                     struct ctl_uplink **out)
{
    struct ctl_uplink *up;
    int rc;

    *out = NULL;
    if (!cfg->name || !cfg->dispatchers || !cfg->tls || !cfg->password || !cfg->ticket_key ||
        !reg)
        return -EINVAL;
    up = cr_xcalloc(1, sizeof(*up));
    up->name = cr_xstrdup(cfg->name);
    up->addrs = split_list(cfg->public_addrs, &up->n_addrs);
    up->dispatchers = split_list(cfg->dispatchers, &up->n_dispatchers);
    if (up->n_dispatchers == 0) {
        rc = -EINVAL;
        goto out_free;
    }
    up->tls = cfg->tls;
    up->password = cr_xstrdup(cfg->password);
    memcpy(up->ticket_key, cfg->ticket_key, sizeof(up->ticket_key));
    up->keepalive_default_ms = cfg->keepalive_ms ? cfg->keepalive_ms : 5000;
    up->backoff_min_ms = cfg->backoff_min_ms ? cfg->backoff_min_ms : CTL_UPLINK_BACKOFF_MIN_MS;
    up->backoff_max_ms = cfg->backoff_max_ms ? cfg->backoff_max_ms : CTL_UPLINK_BACKOFF_MAX_MS;
    if (up->backoff_max_ms < up->backoff_min_ms)
        up->backoff_max_ms = up->backoff_min_ms;
    up->reg = reg;
    up->auth.secret.password = up->password;
    up->link_fd = -1;
    pthread_mutex_init(&up->lock, NULL);
    up->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (up->wake_fd < 0) {
        rc = -errno;
        goto out_destroy;
    }
    rc = pthread_create(&up->thread, NULL, uplink_main, up);
    if (rc != 0) {
        rc = -rc;
        close(up->wake_fd);
        goto out_destroy;
    }
    *out = up;
    return 0;

out_destroy:
    pthread_mutex_destroy(&up->lock);
    cr_wipe(up->password, strlen(up->password));
    free(up->password);
    cr_wipe(up->ticket_key, sizeof(up->ticket_key));
out_free:
    free_list(up->dispatchers, up->n_dispatchers);
    free_list(up->addrs, up->n_addrs);
    free(up->name);
    free(up);
    return rc;
}

void ctl_uplink_stop(struct ctl_uplink *up)
{
    uint64_t one = 1;

    if (!up)
        return;
    pthread_mutex_lock(&up->lock);
    up->stopping = 1;
    if (up->link_fd >= 0)
        shutdown(up->link_fd, SHUT_RDWR); /* unblocks a read or write in progress */
    pthread_mutex_unlock(&up->lock);
    if (write(up->wake_fd, &one, sizeof(one)) < 0)
        cr_warn("uplink: cannot wake the uplink thread: %s", strerror(errno));
    pthread_join(up->thread, NULL);

    clear_queue(up);
    close(up->wake_fd);
    cr_auth_client_forget(&up->auth);
    cr_wipe(up->password, strlen(up->password));
    free(up->password);
    cr_wipe(up->ticket_key, sizeof(up->ticket_key));
    free_list(up->dispatchers, up->n_dispatchers);
    free_list(up->addrs, up->n_addrs);
    free(up->name);
    pthread_mutex_destroy(&up->lock);
    free(up);
}
