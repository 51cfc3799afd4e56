/* control/dispatch_relay.c — the relay side of the dispatcher: login, camera sync, keepalive. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/log.h"
#include "common/util.h"
#include "control/dispatch_int.h"

struct relay_link {
    struct ctl_dispatch *d;
    struct cr_link *l;
    const char *name; /* the authenticated account, borrowed from the hello */
    uint64_t ping_seq;
};

/* Joins the hello's addresses into the registry's comma-separated form. Returns 0 or -EINVAL
 * (none, an empty one, one with a comma, or too long altogether). */
static int join_addrs(const Camrelay__RelayHello *hello, char out[CTL_ADDRS_MAX])
{
    size_t used = 0;
    if (hello->n_public_addrs == 0)
        return -EINVAL;
    for (size_t i = 0; i < hello->n_public_addrs; i++) {
        const char *a = hello->public_addrs[i];
        size_t n = strlen(a);
        if (n == 0 || strchr(a, ',') || used + n + (i > 0) >= CTL_ADDRS_MAX)
            return -EINVAL;
        if (i > 0)
            out[used++] = ',';
        memcpy(out + used, a, n);
        used += n;
    }
    out[used] = '\0';
    return 0;
}

/* Makes c the live link of account name, shutting down the link it replaces. */
static void session_claim(struct ctl_dispatch *d, struct ctl_dispatch_conn *c, const char *name,
                          const char *peer)
{
    struct ctl_dispatch_relay *r;
    pthread_mutex_lock(&d->lock);
    for (r = d->relays; r; r = r->next)
        if (strcmp(r->name, name) == 0)
            break;
    if (r) {
        /* The old link's thread is still registered (it releases the session before it
         * unlinks its conn), so its fd is valid; it sees the shutdown and ends. */
        cr_info("relay %s reconnected from %s: replacing its link from %s", name, peer,
                r->conn->peer);
        shutdown(r->conn->fd, SHUT_RDWR);
    } else {
        r = cr_xcalloc(1, sizeof(*r));
        cr_strlcpy(r->name, name, sizeof(r->name));
        r->next = d->relays;
        d->relays = r;
    }
    r->conn = c;
    pthread_mutex_unlock(&d->lock);
}

/* Marks the account offline unless a newer link has taken it over. */
static void session_release(struct ctl_dispatch *d, struct ctl_dispatch_conn *c)
{
    pthread_mutex_lock(&d->lock);
    for (struct ctl_dispatch_relay **p = &d->relays; *p; p = &(*p)->next) {
        if ((*p)->conn == c) {
            struct ctl_dispatch_relay *r = *p;
            *p = r->next;
            free(r);
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
}

static int send_ack(struct relay_link *rl, uint64_t seq, int status, const char *message)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ack a = CAMRELAY__ACK__INIT;
    a.seq = seq;
    a.status = status;
    a.message = (char *)message;
    f.body_case = CAMRELAY__FRAME__BODY_ACK;
    f.ack = &a;
    return cr_link_write(rl->l, &f, CTL_DISPATCH_STEP_MS);
}

/* Records the first problem of a batch (later ones only count). */
static void note(int *status, char *msg, size_t cap, int st, const char *text)
{
    if (*status != CAMRELAY__STATUS__OK)
        return;
    *status = st;
    cr_strlcpy(msg, text, cap);
}

static int record_ok(const Camrelay__CameraRecord *rec)
{
    return cr_name_valid(rec->serial, CTL_NAME_MAX - 1) && rec->salt.len == CR_AUTH_SALT_LEN &&
           rec->stored_key.len == CR_AUTH_KEY_LEN && rec->iterations >= CR_AUTH_ITERATIONS_MIN &&
           rec->iterations <= CR_AUTH_ITERATIONS_MAX;
}

/* Applies one SyncCameras and answers it. Returns 0 or -errno from the link. */
static int handle_sync(struct relay_link *rl, const Camrelay__SyncCameras *s)
{
    struct ctl_dispatch *d = rl->d;
    int status = CAMRELAY__STATUS__OK;
    char msg[200] = "", text[200];
    const char **keep = cr_xcalloc(s->n_cameras + 1, sizeof(*keep));
    unsigned n_keep = 0, stored = 0;
    int rc;

    pthread_mutex_lock(&d->sync_lock);
    for (size_t i = 0; i < s->n_cameras; i++) {
        const Camrelay__CameraRecord *rec = s->cameras[i];
        struct ctl_camera cur, cam;

        if (!cr_name_valid(rec->serial, CTL_NAME_MAX - 1)) {
            snprintf(text, sizeof(text), "camera record %zu: serial must be 1..63 of "
                     "[A-Za-z0-9._:-]", i);
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_BAD_REQUEST, text);
            continue;
        }
        keep[n_keep++] = rec->serial; /* even if rejected below: never prune what was sent */
        if (!record_ok(rec)) {
            snprintf(text, sizeof(text), "serial %s: verifier needs a 16-byte salt, a 32-byte "
                     "stored key and %d..%d iterations", rec->serial, CR_AUTH_ITERATIONS_MIN,
                     CR_AUTH_ITERATIONS_MAX);
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_BAD_REQUEST, text);
            continue;
        }
        rc = ctl_registry_camera_get(d->reg, rec->serial, &cur);
        if (rc == 0 && cur.relay[0] && strcmp(cur.relay, rl->name) != 0) {
            cr_warn("relay %s tried to register serial %s, which is registered on relay %s: "
                    "refused", rl->name, rec->serial, cur.relay);
            snprintf(text, sizeof(text), "serial %s is registered on relay %s", rec->serial,
                     cur.relay);
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_DUPLICATE, text);
            continue;
        }
        if (rc < 0 && rc != -ENOENT) {
            snprintf(text, sizeof(text), "serial %s: registry error", rec->serial);
            cr_err("relay %s sync: serial %s: %s", rl->name, rec->serial, strerror(-rc));
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_INTERNAL, text);
            continue;
        }
        if (rc == 0 && cur.verifier.iterations == rec->iterations &&
            memcmp(cur.verifier.salt, rec->salt.data, CR_AUTH_SALT_LEN) == 0 &&
            memcmp(cur.verifier.stored_key, rec->stored_key.data, CR_AUTH_KEY_LEN) == 0 &&
            strcmp(cur.relay, rl->name) == 0)
            continue; /* unchanged: no write on every reconnect */

        memset(&cam, 0, sizeof(cam));
        cr_strlcpy(cam.serial, rec->serial, sizeof(cam.serial));
        memcpy(cam.verifier.salt, rec->salt.data, CR_AUTH_SALT_LEN);
        cam.verifier.iterations = rec->iterations;
        memcpy(cam.verifier.stored_key, rec->stored_key.data, CR_AUTH_KEY_LEN);
        cr_strlcpy(cam.relay, rl->name, sizeof(cam.relay));
        rc = ctl_registry_camera_upsert(d->reg, &cam);
        if (rc < 0) {
            cr_err("relay %s sync: storing serial %s: %s", rl->name, rec->serial, strerror(-rc));
            snprintf(text, sizeof(text), "serial %s: registry error", rec->serial);
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_INTERNAL, text);
            continue;
        }
        stored++;
        cr_info("relay %s registered serial %s", rl->name, rec->serial);
        ctl__dispatch_wake(d, rec->serial);
    }
    if (s->full) {
        rc = ctl_registry_camera_prune_relay(d->reg, rl->name, keep, n_keep);
        if (rc < 0) {
            cr_err("relay %s full sync: pruning: %s", rl->name, strerror(-rc));
            note(&status, msg, sizeof(msg), CAMRELAY__STATUS__ERR_INTERNAL, "registry error");
        } else {
            cr_info("relay %s full sync: %zu cameras, %u stored, %d removed", rl->name,
                    s->n_cameras, stored, rc);
        }
    }
    pthread_mutex_unlock(&d->sync_lock);
    free(keep);
    return send_ack(rl, s->seq, status, msg);
}

/* Removes a camera this relay owns, and answers. Returns 0 or -errno from the link. */
static int handle_unregister(struct relay_link *rl, const Camrelay__UnregisterCamera *u)
{
    struct ctl_dispatch *d = rl->d;
    struct ctl_camera cur;
    char msg[200];
    int status = CAMRELAY__STATUS__OK;

    msg[0] = '\0';
    if (!cr_name_valid(u->serial, CTL_NAME_MAX - 1))
        return send_ack(rl, u->seq, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                        "serial must be 1..63 of [A-Za-z0-9._:-]");
    pthread_mutex_lock(&d->sync_lock);
    int rc = ctl_registry_camera_get(d->reg, u->serial, &cur);
    if (rc == -ENOENT) {
        snprintf(msg, sizeof(msg), "serial %s was not registered", u->serial);
    } else if (rc < 0) {
        cr_err("relay %s: unregistering %s: %s", rl->name, u->serial, strerror(-rc));
        status = CAMRELAY__STATUS__ERR_INTERNAL;
        cr_strlcpy(msg, "registry error", sizeof(msg));
    } else if (strcmp(cur.relay, rl->name) != 0) {
        cr_warn("relay %s tried to unregister serial %s, which is registered on relay %s: "
                "refused", rl->name, u->serial, cur.relay);
        status = CAMRELAY__STATUS__ERR_DUPLICATE;
        snprintf(msg, sizeof(msg), "serial %s is registered on relay %s", u->serial, cur.relay);
    } else {
        rc = ctl_registry_camera_remove(d->reg, u->serial);
        if (rc < 0 && rc != -ENOENT) {
            cr_err("relay %s: removing %s: %s", rl->name, u->serial, strerror(-rc));
            status = CAMRELAY__STATUS__ERR_INTERNAL;
            cr_strlcpy(msg, "registry error", sizeof(msg));
        } else {
            cr_info("relay %s unregistered serial %s", rl->name, u->serial);
        }
    }
    pthread_mutex_unlock(&d->sync_lock);
    return send_ack(rl, u->seq, status, msg);
}

static int send_ping(struct relay_link *rl)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ping p = CAMRELAY__PING__INIT;
    p.seq = ++rl->ping_seq;
    f.body_case = CAMRELAY__FRAME__BODY_PING;
    f.ping = &p;
    return cr_link_write(rl->l, &f, CTL_DISPATCH_STEP_MS);
}

static int send_pong(struct relay_link *rl, uint64_t seq)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Pong p = CAMRELAY__PONG__INIT;
    p.seq = seq;
    f.body_case = CAMRELAY__FRAME__BODY_PONG;
    f.pong = &p;
    return cr_link_write(rl->l, &f, CTL_DISPATCH_STEP_MS);
}

/* Serves the authenticated link: requests, our pings, the silence rule. */
static void serve_link(struct relay_link *rl)
{
    const uint64_t ka = rl->d->relay_keepalive_ms;
    uint64_t now = cr_now_ms(), last_rx = now, next_ping = now + ka;
    int rc = 0;

    for (;;) {
        Camrelay__Frame *f = NULL;
        now = cr_now_ms();
        if (now >= last_rx + 3 * ka) {
            cr_warn("relay %s (%s) silent for %llu ms: dropping its link", rl->name, rl->l->peer,
                    (unsigned long long)(now - last_rx));
            return;
        }
        if (now >= next_ping) {
            rc = send_ping(rl);
            if (rc < 0)
                break;
            next_ping = now + ka;
        }
        uint64_t until = next_ping < last_rx + 3 * ka ? next_ping : last_rx + 3 * ka;
        rc = cr_link_read(rl->l, (int)(until > now ? until - now : 0), &f);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc < 0)
            break;
        last_rx = cr_now_ms();
        switch (f->body_case) {
        case CAMRELAY__FRAME__BODY_SYNC_CAMERAS:
            rc = handle_sync(rl, f->sync_cameras);
            break;
        case CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA:
            rc = handle_unregister(rl, f->unregister_camera);
            break;
        case CAMRELAY__FRAME__BODY_PING:
            rc = send_pong(rl, f->ping->seq);
            break;
        case CAMRELAY__FRAME__BODY_PONG:
            break;
        default:
            cr_warn("unexpected %s from relay %s (%s); closing", cr_frame_body_name(f), rl->name,
                    rl->l->peer);
            cr_frame_free(f);
            return;
        }
        cr_frame_free(f);
        if (rc < 0)
            break;
    }
    switch (rc) {
    case -ECONNRESET:
        cr_info("relay %s (%s) disconnected", rl->name, rl->l->peer);
        break;
    case -EMSGSIZE:
        cr_warn("frame above %d bytes from relay %s (%s); closing", CR_FRAME_MAX, rl->name,
                rl->l->peer);
        break;
    case -EBADMSG:
        cr_warn("malformed frame from relay %s (%s); closing", rl->name, rl->l->peer);
        break;
    default:
        cr_info("relay %s (%s) link ended: %s", rl->name, rl->l->peer, strerror(-rc));
        break;
    }
}

void ctl__dispatch_relay(struct ctl_dispatch *d, struct ctl_dispatch_conn *c, struct cr_link *l,
                         const Camrelay__RelayHello *hello)
{
    struct ctl_relay_account acct;
    char addrs[CTL_ADDRS_MAX], msg[200];
    struct relay_link rl = {.d = d, .l = l};
    int rc;

    if (!hello->auth || cr_auth_start_check(hello->auth) < 0) {
        cr_warn("malformed relay_hello from %s (bad account name or nonce); closing", l->peer);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                       "malformed RelayHello: bad account name or nonce", 0);
        return;
    }
    rl.name = hello->auth->identity;
    if (hello->ticket_key.len != 32 || join_addrs(hello, addrs) < 0) {
        cr_warn("relay %s from %s: RelayHello needs public addresses and a 32-byte ticket key",
                rl.name, l->peer);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                       "RelayHello needs public_addrs (host:port, no commas) and a 32-byte "
                       "ticket_key",
                       0);
        return;
    }

    rc = ctl_registry_relay_get(d->reg, rl.name, &acct);
    if (rc == -ENOENT) {
        atomic_fetch_add(&d->auth_failures_relay, 1);
        cr_warn("relay login from %s: unknown relay account %s", l->peer, rl.name);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_AUTH, "unknown relay account", 0);
        return;
    }
    if (rc < 0) {
        cr_err("relay login from %s: account %s: %s", l->peer, rl.name, strerror(-rc));
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_INTERNAL, "registry error", 0);
        return;
    }
    cr_wipe(acct.ticket_key, sizeof(acct.ticket_key));

    rc = cr_auth_server_verify(l, hello->auth, acct.verifier.salt, acct.verifier.iterations,
                               acct.verifier.stored_key, CTL_DISPATCH_STEP_MS);
    switch (rc) {
    case 0:
        break;
    case -EACCES:
        atomic_fetch_add(&d->auth_failures_relay, 1);
        cr_warn("authentication failed for relay account %s from %s", rl.name, l->peer);
        snprintf(msg, sizeof(msg), "authentication failed for relay account %s: wrong password",
                 rl.name);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_AUTH, msg, 0);
        return;
    case -EBADMSG:
        cr_warn("relay %s from %s: expected auth_proof; closing", rl.name, l->peer);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_BAD_REQUEST, "expected AuthProof", 0);
        return;
    case -EMSGSIZE:
        cr_warn("frame above %d bytes from unauthenticated %s (relay %s); closing",
                CTL_DISPATCH_UNAUTH_MAX_FRAME, l->peer, rl.name);
        return;
    default:
        cr_info("relay %s: login from %s aborted: %s", rl.name, l->peer, strerror(-rc));
        return;
    }

    rc = ctl_registry_relay_set_addrs(d->reg, rl.name, addrs, hello->ticket_key.data);
    if (rc < 0) {
        cr_warn("relay %s from %s: cannot store its addresses \"%s\": %s", rl.name, l->peer,
                addrs, strerror(-rc));
        cr_link_refuse(l, rc == -EINVAL ? CAMRELAY__STATUS__ERR_BAD_REQUEST
                                        : CAMRELAY__STATUS__ERR_INTERNAL,
                       rc == -EINVAL ? "public_addrs rejected: host:port items only"
                                     : "registry error",
                       0);
        return;
    }

    session_claim(d, c, rl.name, l->peer);
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__RelayWelcome w = CAMRELAY__RELAY_WELCOME__INIT;
    w.keepalive_ms = d->relay_keepalive_ms;
    f.body_case = CAMRELAY__FRAME__BODY_RELAY_WELCOME;
    f.relay_welcome = &w;
    rc = cr_link_write(l, &f, CTL_DISPATCH_STEP_MS);
    if (rc == 0) {
        cr_info("relay %s logged in from %s (public %s)", rl.name, l->peer, addrs);
        l->max_frame = CR_FRAME_MAX; /* authenticated: a full sync may be large */
        serve_link(&rl);
    }
    session_release(d, c);
}
