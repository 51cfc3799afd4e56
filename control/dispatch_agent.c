/* control/dispatch_agent.c — the agent side of the dispatcher: hold, authenticate, dispatch. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/log.h"
#include "common/util.h"
#include "control/dispatch_int.h"

#define MAX_RELAY_ADDRS 16
#define RELAY_RETRY_MS 5000 /* the camera's relay has never connected: try again soon */

static int send_pending(struct cr_link *l, uint32_t hold_ms)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Pending p = CAMRELAY__PENDING__INIT;
    p.hold_ms = hold_ms;
    f.body_case = CAMRELAY__FRAME__BODY_PENDING;
    f.pending = &p;
    return cr_link_write(l, &f, CTL_DISPATCH_STEP_MS);
}

static struct timespec monotonic_at(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    return ts;
}

/*
 * Holds the agent until serial is registered: Pending every pending_interval_ms, woken by
 * ctl__dispatch_wake. Returns 0 with *cam filled, -ENOENT when the hold expired, -ECANCELED
 * when the dispatcher is stopping, -EPIPE when the agent went away, or another -errno from the
 * registry.
 */
static int hold_until_registered(struct ctl_dispatch *d, struct cr_link *l, const char *serial,
                                 struct ctl_camera *cam)
{
    struct ctl_dispatch_waiter w = {.serial = serial};
    pthread_condattr_t attr;
    uint64_t deadline = cr_now_ms() + d->hold_ms, next_pending = 0;
    int rc;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &attr);
    pthread_condattr_destroy(&attr);

    /* Linked before the first look-up: a registration landing between the look-up and the
     * wait sets w.ready, so it cannot be missed. */
    pthread_mutex_lock(&d->lock);
    w.next = d->waiters;
    d->waiters = &w;
    pthread_mutex_unlock(&d->lock);

    cr_info("holding %s (serial %s, not registered yet) for up to %u ms", l->peer, serial,
            d->hold_ms);
    for (;;) {
        rc = ctl_registry_camera_get(d->reg, serial, cam);
        if (rc != -ENOENT)
            break;
        uint64_t now = cr_now_ms();
        if (now >= deadline)
            break; /* rc is -ENOENT: the hold expired */
        if (now >= next_pending) {
            if (send_pending(l, (uint32_t)(deadline - now)) < 0) {
                rc = -EPIPE;
                break;
            }
            next_pending = now + d->pending_interval_ms;
        }
        /* cr_now_ms() reads CLOCK_MONOTONIC, the clock the condition variable waits on. */
        struct timespec ts = monotonic_at(next_pending < deadline ? next_pending : deadline);

        pthread_mutex_lock(&d->lock);
        while (!w.ready && !d->stopping) {
            if (pthread_cond_timedwait(&w.cond, &d->lock, &ts) == ETIMEDOUT)
                break;
        }
        w.ready = 0;
        int stopping = d->stopping;
        pthread_mutex_unlock(&d->lock);
        if (stopping) {
            rc = -ECANCELED;
            break;
        }
    }

    pthread_mutex_lock(&d->lock);
    for (struct ctl_dispatch_waiter **p = &d->waiters; *p; p = &(*p)->next) {
        if (*p == &w) {
            *p = w.next;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    pthread_cond_destroy(&w.cond);
    return rc;
}

/* The site's address as the dispatcher sees it: the peer without its port. */
static void site_of(const char *peer, char *out, size_t cap)
{
    cr_strlcpy(out, peer, cap);
    char *colon = strrchr(out, ':');
    if (colon && (out[0] != '[' || colon[-1] == ']'))
        *colon = '\0';
}

/* Sends the DispatchResult for an authenticated camera, or the refusal that applies. */
static void dispatch(struct ctl_dispatch *d, struct cr_link *l, const struct ctl_camera *cam)
{
    struct ctl_relay_account acct;
    char *addrs[MAX_RELAY_ADDRS];
    uint8_t ticket[CR_TICKET_LEN];
    char site[CTL_NAME_MAX];

    int rc = ctl_registry_relay_get(d->reg, cam->relay, &acct);
    if (rc < 0 && rc != -ENOENT) {
        cr_err("dispatch of serial %s: relay account %s: %s", cam->serial, cam->relay,
               strerror(-rc));
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_INTERNAL, "registry error", 0);
        return;
    }
    size_t n = rc == 0 ? ctl__dispatch_split(acct.public_addrs, addrs, MAX_RELAY_ADDRS) : 0;
    if (n == 0 || !acct.has_ticket_key) {
        char msg[160];
        cr_info("serial %s from %s: relay %s has not connected yet; retry in %d ms",
                cam->serial, l->peer, cam->relay, RELAY_RETRY_MS);
        snprintf(msg, sizeof(msg), "relay %s has not connected to the dispatcher yet",
                 cam->relay);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_RETRY, msg, RELAY_RETRY_MS);
        cr_wipe(&acct, sizeof(acct));
        return;
    }

    uint64_t expires = (uint64_t)cr_unix_now() + d->ticket_ttl_s;
    cr_ticket_make(acct.ticket_key, cam->serial, acct.name, expires, ticket);
    cr_wipe(acct.ticket_key, sizeof(acct.ticket_key));

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__DispatchResult r = CAMRELAY__DISPATCH_RESULT__INIT;
    r.relay_name = acct.name;
    r.n_relay_addrs = n;
    r.relay_addrs = addrs;
    r.ticket.data = ticket;
    r.ticket.len = sizeof(ticket);
    r.ticket_expires_unix = expires;
    f.body_case = CAMRELAY__FRAME__BODY_DISPATCH_RESULT;
    f.dispatch_result = &r;
    rc = cr_link_write(l, &f, CTL_DISPATCH_STEP_MS);
    if (rc < 0) {
        cr_info("serial %s: sending the dispatch result to %s failed: %s", cam->serial, l->peer,
                strerror(-rc));
        return;
    }
    atomic_fetch_add(&d->dispatches, 1);
    cr_info("dispatched serial %s (%s) to relay %s", cam->serial, l->peer, acct.name);
    site_of(l->peer, site, sizeof(site));
    rc = ctl_registry_camera_seen(d->reg, cam->serial, cr_unix_now(), site, cam->bytes_relayed);
    if (rc < 0 && rc != -ENOENT)
        cr_warn("serial %s: cannot record the dispatch time: %s", cam->serial, strerror(-rc));
}

void ctl__dispatch_agent(struct ctl_dispatch *d, struct cr_link *l,
                         const Camrelay__AuthStart *start)
{
    struct ctl_camera cam;
    char msg[200];
    int rc;

    if (cr_auth_start_check(start) < 0) {
        cr_warn("malformed auth_start from %s (bad serial or nonce); closing", l->peer);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                       "malformed AuthStart: serial must be 1..63 of [A-Za-z0-9._:-], nonce "
                       "16..64 bytes",
                       0);
        return;
    }
    const char *serial = start->identity;

    rc = ctl_registry_camera_get(d->reg, serial, &cam);
    if (rc == -ENOENT && d->hold_ms > 0)
        rc = hold_until_registered(d, l, serial, &cam);
    if (rc == -ENOENT) {
        cr_info("serial %s from %s: not registered on any relay%s", serial, l->peer,
                d->hold_ms ? " (hold expired)" : "");
        snprintf(msg, sizeof(msg),
                 "serial %s is not registered: register it on its relay (camrelayctl camera "
                 "register)",
                 serial);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL, msg, d->retry_after_ms);
        return;
    }
    if (rc == -ECANCELED) {
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_RETRY, "dispatcher shutting down",
                       d->retry_after_ms);
        return;
    }
    if (rc == -EPIPE) {
        cr_info("serial %s: %s went away while held", serial, l->peer);
        return;
    }
    if (rc < 0) {
        cr_err("serial %s from %s: registry look-up failed: %s", serial, l->peer, strerror(-rc));
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_INTERNAL, "registry error", 0);
        return;
    }

    rc = cr_auth_server_verify(l, start, cam.verifier.salt, cam.verifier.iterations,
                               cam.verifier.stored_key, CTL_DISPATCH_STEP_MS);
    switch (rc) {
    case 0:
        break;
    case -EACCES:
        atomic_fetch_add(&d->auth_failures_agent, 1);
        cr_warn("authentication failed for serial %s from %s", serial, l->peer);
        snprintf(msg, sizeof(msg),
                 "authentication failed for serial %s: OAK or credentials do not match the "
                 "registration",
                 serial);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_AUTH, msg, 0);
        return;
    case -EBADMSG:
        cr_warn("serial %s from %s: expected auth_proof; closing", serial, l->peer);
        cr_link_refuse(l, CAMRELAY__STATUS__ERR_BAD_REQUEST, "expected AuthProof", 0);
        return;
    case -EMSGSIZE:
        cr_warn("frame above %d bytes from unauthenticated %s (serial %s); closing",
                CTL_DISPATCH_UNAUTH_MAX_FRAME, l->peer, serial);
        return;
    default:
        cr_info("serial %s: login from %s aborted: %s", serial, l->peer, strerror(-rc));
        return;
    }
    dispatch(d, l, &cam);
}
