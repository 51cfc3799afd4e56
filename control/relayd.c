/* control/relayd.c — camrelayd's control plane: registration, status, data-path events. */
#include "control/relayd.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/net.h"
#include "common/util.h"
#include "control/registry.h"
#include "control/relayd_int.h"
#include "control/uplink.h"
#include "relay/relay.h"

#define EVENT_BATCH 64
/* The data path applies camera_del asynchronously on its worker threads, so a port freed by a
 * removal may still be held for a moment: a registration retries a port in use this long,
 * this often. */
#define PORT_IN_USE_WAIT_MS 200
#define PORT_RETRY_US 20000
/* At start-up the endpoint ports may still be held by the relay that ran before: a killed
 * one's listeners go only when the kernel has torn its io_uring down, seconds later on older
 * kernels. Ports in use are retried until this long after loading began, then given up. */
#define LOAD_PORT_WAIT_MS 10000
#define FD_WAIT_RETRIES 2000 /* 2 s in all */
#define FD_WAIT_US 1000

/* ---- small helpers ---- */

/* "host:port", bracketing an IPv6 literal. */
static void join_host_port(char *buf, size_t cap, const char *host, unsigned port)
{
    if (strchr(host, ':') && host[0] != '[')
        snprintf(buf, cap, "[%s]:%u", host, port);
    else
        snprintf(buf, cap, "%s:%u", host, port);
}

static void endpoint_url(const struct ctl_relayd *d, const struct ctl_endpoint *ep, char *buf,
                         size_t cap)
{
    char hp[300];
    join_host_port(hp, sizeof(hp), d->url_host, ep->port);
    snprintf(buf, cap, "%s://%s/", ep->service, hp);
}

/* ---- per-camera byte bases ---- */

size_t ctl__relayd_cams_find(const struct ctl_relayd *d, const char *serial, int *found)
{
    size_t lo = 0, hi = d->n_cams;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(d->cams[mid].serial, serial);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static void cams_set(struct ctl_relayd *d, const char *serial, uint64_t bytes)
{
    int found;
    pthread_mutex_lock(&d->cams_lock);
    size_t i = ctl__relayd_cams_find(d, serial, &found);
    if (!found) {
        if (d->n_cams == d->cap_cams) {
            d->cap_cams = d->cap_cams ? 2 * d->cap_cams : 64;
            struct cam_base *nv = cr_xcalloc(d->cap_cams, sizeof(*nv));
            if (d->n_cams)
                memcpy(nv, d->cams, d->n_cams * sizeof(*nv));
            free(d->cams);
            d->cams = nv;
        }
        memmove(&d->cams[i + 1], &d->cams[i], (d->n_cams - i) * sizeof(*d->cams));
        d->n_cams++;
        memset(&d->cams[i], 0, sizeof(d->cams[i]));
        cr_strlcpy(d->cams[i].serial, serial, sizeof(d->cams[i].serial));
    }
    d->cams[i].bytes = bytes;
    pthread_mutex_unlock(&d->cams_lock);
}

static void cams_del(struct ctl_relayd *d, const char *serial)
{
    int found;
    pthread_mutex_lock(&d->cams_lock);
    size_t i = ctl__relayd_cams_find(d, serial, &found);
    if (found) {
        memmove(&d->cams[i], &d->cams[i + 1], (d->n_cams - i - 1) * sizeof(*d->cams));
        d->n_cams--;
    }
    pthread_mutex_unlock(&d->cams_lock);
}

/* Returns 1 and *bytes when serial has a base. */
static int cams_base(struct ctl_relayd *d, const char *serial, uint64_t *bytes)
{
    int found;
    pthread_mutex_lock(&d->cams_lock);
    size_t i = ctl__relayd_cams_find(d, serial, &found);
    if (found)
        *bytes = d->cams[i].bytes;
    pthread_mutex_unlock(&d->cams_lock);
    return found;
}

/* ---- endpoints and the data path ---- */

/*
 * Binds the endpoint listeners of cam into spec (serial and verifier copied too), retrying a
 * port in use until in_use_until_ms (cr_now_ms time). all_or_none: on the first failure close
 * what was bound and return -errno, naming the endpoint in err; otherwise skip endpoints that
 * fail (logged) and return how many bound.
 */
static int bind_endpoints(struct ctl_relayd *d, const struct ctl_camera *cam,
                          struct rly_camera_spec *spec, int all_or_none, uint64_t in_use_until_ms,
                          char *err, size_t errlen)
{
    memset(spec, 0, sizeof(*spec));
    cr_strlcpy(spec->serial, cam->serial, sizeof(spec->serial));
    memcpy(spec->salt, cam->verifier.salt, sizeof(spec->salt));
    spec->iterations = cam->verifier.iterations;
    memcpy(spec->stored_key, cam->verifier.stored_key, sizeof(spec->stored_key));

    for (unsigned i = 0; i < cam->n_endpoints && i < RLY_MAX_SERVICES; i++) {
        const struct ctl_endpoint *ep = &cam->endpoints[i];
        char addr[128];
        join_host_port(addr, sizeof(addr), d->internal_host, ep->port);
        int fd = cr_tcp_listen(addr, 0, 128);
        if (fd == -EADDRINUSE && in_use_until_ms > cr_now_ms() + PORT_IN_USE_WAIT_MS)
            cr_info("camera %s's %s endpoint: %s is in use (the relay that ran before still "
                    "closing?): waiting up to %llu ms",
                    cam->serial, ep->service, addr,
                    (unsigned long long)(in_use_until_ms - cr_now_ms()));
        while (fd == -EADDRINUSE && cr_now_ms() < in_use_until_ms) {
            usleep(PORT_RETRY_US); /* a listener of ours still closing */
            fd = cr_tcp_listen(addr, 0, 128);
        }
        /* The data path keeps a listener as a registered file and closes its descriptor when
         * it applies the put, so at start-up the loader may run ahead of it by thousands of
         * descriptors: out of them, give the workers time to catch up. */
        for (int t = 0; fd == -EMFILE && t < FD_WAIT_RETRIES; t++) {
            usleep(FD_WAIT_US);
            fd = cr_tcp_listen(addr, 0, 128);
        }
        if (fd < 0) {
            snprintf(err, errlen, "cannot listen on %s for camera %s's %s endpoint: %s", addr,
                     cam->serial, ep->service, strerror(-fd));
            if (all_or_none) {
                for (unsigned j = 0; j < spec->n_endpoints; j++)
                    close(spec->endpoints[j].listen_fd);
                spec->n_endpoints = 0;
                return fd;
            }
            cr_err("%s; that endpoint stays closed until the next restart", err);
            continue;
        }
        struct rly_endpoint_spec *es = &spec->endpoints[spec->n_endpoints++];
        cr_strlcpy(es->service, ep->service, sizeof(es->service));
        es->listen_fd = fd;
        es->port = ep->port;
    }
    return (int)spec->n_endpoints;
}

/* Hands spec to the data path (fds consumed on every path). Without a data path the listeners
 * were only a check that the ports are free: close them. Returns 0 or -errno. */
static int put_camera(struct ctl_relayd *d, struct rly_camera_spec *spec)
{
    int rc = 0;
    if (d->relay) {
        rc = rly_relay_camera_put(d->relay, spec);
    } else {
        for (unsigned i = 0; i < spec->n_endpoints; i++)
            close(spec->endpoints[i].listen_fd);
    }
    cr_wipe(spec->stored_key, sizeof(spec->stored_key));
    return rc;
}

struct load_ctx {
    struct ctl_relayd *d;
    int loaded;
    uint64_t ports_wait_until; /* cr_now_ms: a port in use is retried until then */
};

static int load_one(const struct ctl_camera *cam, void *arg)
{
    struct load_ctx *lc = arg;
    struct ctl_relayd *d = lc->d;
    struct rly_camera_spec spec;
    char err[512];

    bind_endpoints(d, cam, &spec, 0, lc->ports_wait_until, err, sizeof(err));
    int rc = put_camera(d, &spec);
    if (rc < 0) {
        cr_err("camera %s: the data path refused it: %s", cam->serial, strerror(-rc));
        return 0;
    }
    cams_set(d, cam->serial, cam->bytes_relayed);
    lc->loaded++;
    return 0;
}

int ctl_relayd_load_cameras(struct ctl_relayd *d)
{
    struct load_ctx lc = {d, 0, cr_now_ms() + LOAD_PORT_WAIT_MS};
    int rc = ctl_registry_camera_foreach(d->reg, NULL, load_one, &lc);
    if (rc < 0) {
        cr_err("cannot read the registered cameras: %s", strerror(-rc));
        return rc;
    }
    /* From now on an unknown serial at the relay really is unknown. */
    if (d->relay)
        rly_relay_set_ready(d->relay);
    cr_info("loaded %d registered camera%s", lc.loaded, lc.loaded == 1 ? "" : "s");
    return lc.loaded;
}

/* ---- data-path events ---- */

void ctl_relayd_on_event(void *ctx, const char *serial, int online, const char *site_addr,
                         uint64_t bytes_relayed)
{
    struct ctl_relayd *d = ctx;
    uint64_t one = 1;

    pthread_mutex_lock(&d->ev_lock);
    if (d->ev_count == CTL_RELAYD_EVENTS_MAX) {
        d->ev_dropped++;
        pthread_mutex_unlock(&d->ev_lock);
        return;
    }
    struct relayd_event *e = &d->ev[(d->ev_head + d->ev_count++) % CTL_RELAYD_EVENTS_MAX];
    cr_strlcpy(e->serial, serial ? serial : "", sizeof(e->serial));
    cr_strlcpy(e->site_addr, site_addr ? site_addr : "", sizeof(e->site_addr));
    e->bytes_relayed = bytes_relayed;
    e->when_unix = cr_unix_now();
    e->online = online;
    pthread_mutex_unlock(&d->ev_lock);
    /* Non-blocking eventfd: a full counter (never in practice) just means already signalled. */
    ssize_t w = write(d->ev_fd, &one, sizeof(one));
    (void)w;
}

int ctl_relayd_event_fd(const struct ctl_relayd *d)
{
    return d->ev_fd;
}

static void persist_event(struct ctl_relayd *d, const struct relayd_event *e)
{
    uint64_t base = 0;
    const char *site = e->site_addr[0] ? e->site_addr : NULL;

    if (!cr_name_valid(e->serial, CTL_NAME_MAX - 1))
        return;
    cams_base(d, e->serial, &base);
    /* The data path logs tunnels up and down itself; this is the registry's side. */
    cr_debug("camera %s %s%s%s: recording last contact", e->serial,
             e->online ? "online" : "offline", site ? (e->online ? " from " : ", last from ") : "",
             site ? site : "");
    int rc = ctl_registry_camera_seen(d->reg, e->serial, e->when_unix, site,
                                      base + e->bytes_relayed);
    if (rc == -EINVAL && site) /* an address the registry will not store: keep the rest */
        rc = ctl_registry_camera_seen(d->reg, e->serial, e->when_unix, NULL,
                                      base + e->bytes_relayed);
    if (rc < 0 && rc != -ENOENT) /* -ENOENT: removed since */
        cr_warn("camera %s: cannot record its last contact: %s", e->serial, strerror(-rc));
}

void ctl_relayd_drain_events(struct ctl_relayd *d)
{
    struct relayd_event batch[EVENT_BATCH];
    uint64_t v, dropped;
    size_t n;

    while (read(d->ev_fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
        ;
    do {
        pthread_mutex_lock(&d->ev_lock);
        n = d->ev_count < EVENT_BATCH ? d->ev_count : EVENT_BATCH;
        for (size_t i = 0; i < n; i++) {
            batch[i] = d->ev[d->ev_head];
            d->ev_head = (d->ev_head + 1) % CTL_RELAYD_EVENTS_MAX;
        }
        d->ev_count -= n;
        dropped = d->ev_dropped;
        d->ev_dropped = 0;
        pthread_mutex_unlock(&d->ev_lock);
        if (dropped)
            cr_warn("%llu camera online/offline events dropped (queue full); the list still "
                    "shows live state",
                    (unsigned long long)dropped);
        for (size_t i = 0; i < n; i++)
            persist_event(d, &batch[i]);
    } while (n == EVENT_BATCH);
}

/* ---- CameraInfo ---- */

static void fill_info(struct ctl_relayd *d, Camrelay__CameraInfo *ci, const struct ctl_camera *cam)
{
    struct rly_camera_status st;
    int have = 0;
    char url[400];
    uint64_t base;

    memset(&st, 0, sizeof(st));
    if (d->relay && rly_relay_camera_status(d->relay, cam->serial, &st) == 0)
        have = 1;
    int online = have && st.online;

    ctl_mgmt_str(&ci->serial, cam->serial);
    ctl_mgmt_str(&ci->state, !online ? "red" : cam->recorder[0] ? "green" : "yellow");
    ci->online = online;
    int64_t last = cam->last_seen_unix;
    if (have && st.last_seen_unix > last)
        last = st.last_seen_unix;
    if (online && last == 0)
        last = cr_unix_now();
    ci->last_seen_unix = last;
    st.site_addr[sizeof(st.site_addr) - 1] = '\0';
    ctl_mgmt_str(&ci->site_addr, have && st.site_addr[0] ? st.site_addr : cam->site_addr);
    for (unsigned i = 0; i < cam->n_endpoints; i++) {
        endpoint_url(d, &cam->endpoints[i], url, sizeof(url));
        ctl_mgmt_camera_add_endpoint(ci, cam->endpoints[i].service, cam->endpoints[i].port, url);
    }
    ctl_mgmt_str(&ci->recorder, cam->recorder);
    if (have)
        ci->bytes_relayed = (cams_base(d, cam->serial, &base) ? base : cam->bytes_relayed) +
                            st.bytes_relayed;
    else
        ci->bytes_relayed = cam->bytes_relayed;
    ci->open_streams = have ? st.open_streams : 0;
    ctl_mgmt_str(&ci->relay, d->name);
    ci->synced = cam->synced != 0;
    /* A camera just put is not in the data path's tables until its worker takes it
     * (rly_relay_camera_put only queues it): its path is then the one any new stream takes,
     * as the data path itself says for a camera with no stream yet. */
    const char *path = have && st.data_path ? st.data_path
                       : d->relay                ? rly_relay_data_path(d->relay)
                                                 : "";
    ctl_mgmt_str(&ci->data_path, path);
    ci->bitrate_bps = online ? ctl__relayd_bitrate(d, cam->serial) : 0;
}

/* Adds serial's CameraInfo to rep. Returns 0, -ENOENT, or -errno. */
static int add_info(struct ctl_relayd *d, struct ctl_mgmt_reply *rep, const char *serial)
{
    struct ctl_camera cam;
    int rc = ctl_registry_camera_get(d->reg, serial, &cam);
    if (rc < 0)
        return rc;
    fill_info(d, ctl_mgmt_reply_add_camera(rep), &cam);
    return 0;
}

struct list_ctx {
    struct ctl_relayd *d;
    struct ctl_mgmt_reply *rep;
};

static int list_one(const struct ctl_camera *cam, void *arg)
{
    struct list_ctx *lc = arg;
    fill_info(lc->d, ctl_mgmt_reply_add_camera(lc->rep), cam);
    return 0;
}

static void registry_failure(struct ctl_mgmt_reply *rep, const char *what, const char *serial,
                             int rc)
{
    cr_err("%s %s: registry: %s", what, serial, strerror(-rc));
    ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_INTERNAL, "%s %s: registry error: %s", what,
                       serial, strerror(-rc));
}

static void unknown_serial(struct ctl_mgmt_reply *rep, const char *serial)
{
    ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL,
                       "camera %s is not registered on this relay", serial);
}

static int check_serial(struct ctl_mgmt_reply *rep, const char *serial)
{
    if (cr_name_valid(serial, CTL_NAME_MAX - 1))
        return 0;
    ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                       "serial must be 1 to 63 characters of A-Z a-z 0-9 . _ : -");
    return -EINVAL;
}

/* ---- operations ---- */

static int check_secret(struct ctl_mgmt_reply *rep, const char *what, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n >= 1 && n <= CTL_RELAYD_SECRET_MAX)
        return 0;
    ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                       "%s must be 1 to %d characters", what, CTL_RELAYD_SECRET_MAX);
    return -EINVAL;
}

static void op_register(struct ctl_relayd *d, const Camrelay__CameraRegister *r,
                        struct ctl_mgmt_reply *rep)
{
    struct ctl_camera cam;
    struct rly_camera_spec spec;
    char err[512];
    int rc;

    if (check_serial(rep, r->serial) < 0 || check_secret(rep, "OAK", r->oak) < 0 ||
        check_secret(rep, "user name", r->user) < 0 ||
        check_secret(rep, "password", r->password) < 0)
        return;

    /* PBKDF2 runs before taking the lock: registrations do not queue behind each other's. */
    memset(&cam, 0, sizeof(cam));
    struct cr_auth_secret secret = {.oak = r->oak, .user = r->user, .password = r->password};
    rc = cr_auth_make_verifier(&secret, d->iterations, cam.verifier.salt,
                               cam.verifier.stored_key);
    if (rc < 0) {
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_INTERNAL, "cannot derive a verifier: %s",
                           strerror(-rc));
        return;
    }
    cam.verifier.iterations = d->iterations;
    cr_strlcpy(cam.serial, r->serial, sizeof(cam.serial));
    cr_strlcpy(cam.relay, d->name, sizeof(cam.relay));

    pthread_mutex_lock(&d->ops_lock);
    rc = ctl_registry_camera_add(d->reg, &cam, (const char *const *)d->services, d->n_services,
                                 d->port_lo, d->port_hi);
    if (rc == -EEXIST) {
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_DUPLICATE,
                           "camera %s is already registered on this relay", cam.serial);
        goto out_unlock;
    }
    if (rc == -ENOSPC) {
        cr_err("camera register %s: no free endpoint ports left in %u-%u", cam.serial,
               d->port_lo, d->port_hi);
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_INTERNAL,
                           "no free endpoint ports left in %u-%u (%u needed); widen --port-range",
                           d->port_lo, d->port_hi, d->n_services);
        goto out_unlock;
    }
    if (rc < 0) {
        registry_failure(rep, "camera register", cam.serial, rc);
        goto out_unlock;
    }

    rc = bind_endpoints(d, &cam, &spec, 1, cr_now_ms() + PORT_IN_USE_WAIT_MS, err, sizeof(err));
    if (rc >= 0) {
        rc = put_camera(d, &spec);
        if (rc < 0)
            snprintf(err, sizeof(err), "the data path refused camera %s: %s", cam.serial,
                     strerror(-rc));
    }
    if (rc < 0) {
        int rb = ctl_registry_camera_remove(d->reg, cam.serial);
        if (rb < 0)
            cr_err("camera register %s: rollback failed: %s", cam.serial, strerror(-rb));
        cr_err("camera register %s: %s; registration rolled back", cam.serial, err);
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_INTERNAL, "%s; registration rolled back",
                           err);
        goto out_unlock;
    }
    cams_set(d, cam.serial, 0);
    pthread_mutex_unlock(&d->ops_lock);

    char ports[64] = "";
    for (unsigned i = 0, n = 0; i < cam.n_endpoints && n < sizeof(ports); i++)
        n += (unsigned)snprintf(ports + n, sizeof(ports) - n, "%s%s %u", i ? ", " : "",
                                cam.endpoints[i].service, cam.endpoints[i].port);
    cr_info("camera %s registered (endpoints: %s)%s", cam.serial, ports[0] ? ports : "none",
            d->uplink ? "" : "; no dispatcher configured");
    ctl_uplink_camera_changed(d->uplink, cam.serial, 0);
    fill_info(d, ctl_mgmt_reply_add_camera(rep), &cam);
    if (!d->uplink)
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK,
                           "registered; no dispatcher is configured on this relay");
    else if (ctl_uplink_connected(d->uplink))
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK, "registered; sent to the dispatcher");
    else
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK,
                           "registered; the dispatcher is unreachable now, the registration "
                           "goes out when it is back");
    cr_wipe(&cam.verifier, sizeof(cam.verifier));
    return;

out_unlock:
    pthread_mutex_unlock(&d->ops_lock);
    cr_wipe(&cam.verifier, sizeof(cam.verifier));
}

static void op_remove(struct ctl_relayd *d, const Camrelay__CameraSelect *sel,
                      struct ctl_mgmt_reply *rep)
{
    struct ctl_camera cam;
    int rc;

    if (check_serial(rep, sel->serial) < 0)
        return;
    pthread_mutex_lock(&d->ops_lock);
    rc = ctl_registry_camera_get(d->reg, sel->serial, &cam);
    if (rc == -ENOENT) {
        unknown_serial(rep, sel->serial);
        goto out_unlock;
    }
    if (rc < 0) {
        registry_failure(rep, "camera remove", sel->serial, rc);
        goto out_unlock;
    }
    if (d->relay) {
        rc = rly_relay_camera_del(d->relay, sel->serial); /* ordered after any pending put */
        if (rc < 0)
            cr_warn("camera remove %s: data path: %s", sel->serial, strerror(-rc));
    }
    rc = ctl_registry_camera_remove(d->reg, sel->serial);
    if (rc < 0 && rc != -ENOENT) {
        registry_failure(rep, "camera remove", sel->serial, rc);
        goto out_unlock;
    }
    cams_del(d, sel->serial);
    pthread_mutex_unlock(&d->ops_lock);

    cr_info("camera %s unregistered", sel->serial);
    ctl_uplink_camera_changed(d->uplink, sel->serial, 1);
    ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK, "camera %s removed", sel->serial);
    return;

out_unlock:
    pthread_mutex_unlock(&d->ops_lock);
}

static void op_attach(struct ctl_relayd *d, const Camrelay__CameraAttach *a,
                      struct ctl_mgmt_reply *rep)
{
    struct ctl_camera cam;
    const char *recorder = a->recorder ? a->recorder : "";
    int rc;

    if (check_serial(rep, a->serial) < 0)
        return;
    if (*recorder && !cr_name_valid(recorder, CTL_NAME_MAX - 1)) {
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                           "recorder name must be 1 to 63 characters of A-Z a-z 0-9 . _ : -");
        return;
    }
    pthread_mutex_lock(&d->ops_lock);
    rc = ctl_registry_camera_set_recorder(d->reg, a->serial, recorder);
    if (rc == 0)
        rc = ctl_registry_camera_get(d->reg, a->serial, &cam);
    pthread_mutex_unlock(&d->ops_lock);
    if (rc == -ENOENT) {
        unknown_serial(rep, a->serial);
        return;
    }
    if (rc < 0) {
        registry_failure(rep, "camera attach", a->serial, rc);
        return;
    }
    Camrelay__CameraInfo *ci = ctl_mgmt_reply_add_camera(rep);
    fill_info(d, ci, &cam);
    if (!*recorder) {
        cr_info("camera %s detached from its recorder", a->serial);
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK, "detached");
    } else if (ci->online) {
        cr_info("camera %s attached to recorder %s", a->serial, recorder);
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK, "attached to %s", recorder);
    } else {
        cr_info("camera %s attached to recorder %s while offline", a->serial, recorder);
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__OK, "attached; camera is offline");
    }
}

int ctl__relayd_list(struct ctl_relayd *d, struct ctl_mgmt_reply *rep)
{
    struct list_ctx lc = {d, rep};
    int rc = ctl_registry_camera_foreach(d->reg, NULL, list_one, &lc);
    if (rc < 0)
        registry_failure(rep, "camera list", "(all)", rc);
    return rc;
}

static void op_list(struct ctl_relayd *d, const Camrelay__CameraSelect *sel,
                    struct ctl_mgmt_reply *rep)
{
    const char *serial = sel && sel->serial ? sel->serial : "";
    int rc;

    if (*serial) {
        if (check_serial(rep, serial) < 0)
            return;
        rc = add_info(d, rep, serial);
        if (rc == -ENOENT)
            unknown_serial(rep, serial);
        else if (rc < 0)
            registry_failure(rep, "camera list", serial, rc);
        return;
    }
    ctl__relayd_list(d, rep);
}

static void op_reload(struct ctl_relayd *d, struct ctl_mgmt_reply *rep)
{
    char msg[1024] = "";
    if (!d->reload) {
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_UNAVAILABLE,
                           "this relay cannot reload its configuration");
        return;
    }
    int rc = d->reload(d->reload_ctx, "camrelayctl reload", msg, sizeof(msg));
    ctl_mgmt_reply_set(rep, rc < 0 ? CAMRELAY__STATUS__ERR_BAD_REQUEST : CAMRELAY__STATUS__OK,
                       "%s", msg[0] ? msg : rc < 0 ? "reload failed" : "reloaded");
}

void ctl_relayd_handle(void *ctx, const Camrelay__MgmtRequest *req, struct ctl_mgmt_reply *rep)
{
    struct ctl_relayd *d = ctx;

    switch (req->op_case) {
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER:
        op_register(d, req->camera_register, rep);
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST:
        op_list(d, req->camera_list, rep);
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH:
        op_attach(d, req->camera_attach, rep);
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE:
        op_remove(d, req->camera_remove, rep);
        break;
    case CAMRELAY__MGMT_REQUEST__OP_RELOAD:
        op_reload(d, rep);
        break;
    case CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD:
    case CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST:
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                           "%s is a dispatcher operation; ask the dispatcher",
                           req->op_case == CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD ? "account_add"
                                                                                : "relay_list");
        break;
    default:
        ctl_mgmt_reply_set(rep, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                           "unknown or missing management operation");
        break;
    }
}

/* ---- lifecycle ---- */

int ctl_relayd_new(const struct ctl_relayd_config *cfg, struct ctl_registry *reg,
                   struct ctl_relayd **out)
{
    struct ctl_relayd *d;

    *out = NULL;
    if (!cfg->name || !cfg->internal_host || !cfg->url_host || !reg ||
        cfg->n_services > CTL_MAX_SERVICES || cfg->n_services > RLY_MAX_SERVICES ||
        cfg->port_lo == 0 || cfg->port_lo > cfg->port_hi)
        return -EINVAL;
    d = cr_xcalloc(1, sizeof(*d));
    d->ev_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->ev_fd < 0) {
        int rc = -errno;
        free(d);
        return rc;
    }
    d->name = cr_xstrdup(cfg->name);
    d->internal_host = cr_xstrdup(cfg->internal_host);
    d->url_host = cr_xstrdup(cfg->url_host);
    d->services = cr_xcalloc(cfg->n_services + 1, sizeof(*d->services));
    for (unsigned i = 0; i < cfg->n_services; i++)
        d->services[i] = cr_xstrdup(cfg->services[i]);
    d->n_services = cfg->n_services;
    d->port_lo = cfg->port_lo;
    d->port_hi = cfg->port_hi;
    d->iterations = cfg->iterations ? cfg->iterations : CR_AUTH_ITERATIONS_DEFAULT;
    d->reg = reg;
    atomic_init(&d->metrics_per_camera, 1);
    d->ev = cr_xcalloc(CTL_RELAYD_EVENTS_MAX, sizeof(*d->ev));
    pthread_mutex_init(&d->ops_lock, NULL);
    pthread_mutex_init(&d->cams_lock, NULL);
    pthread_mutex_init(&d->ev_lock, NULL);
    *out = d;
    return 0;
}

void ctl_relayd_set_relay(struct ctl_relayd *d, struct rly_relay *relay)
{
    d->relay = relay;
}

void ctl_relayd_set_uplink(struct ctl_relayd *d, struct ctl_uplink *up)
{
    d->uplink = up;
}

void ctl_relayd_set_reload(struct ctl_relayd *d, ctl_relayd_reload_fn fn, void *ctx)
{
    d->reload = fn;
    d->reload_ctx = ctx;
}

void ctl_relayd_set_metrics_per_camera(struct ctl_relayd *d, int on)
{
    atomic_store(&d->metrics_per_camera, !!on);
}

void ctl_relayd_free(struct ctl_relayd *d)
{
    if (!d)
        return;
    close(d->ev_fd);
    pthread_mutex_destroy(&d->ev_lock);
    pthread_mutex_destroy(&d->cams_lock);
    pthread_mutex_destroy(&d->ops_lock);
    free(d->ev);
    free(d->cams);
    for (unsigned i = 0; i < d->n_services; i++)
        free(d->services[i]);
    free(d->services);
    free(d->url_host);
    free(d->internal_host);
    free(d->name);
    free(d);
}
