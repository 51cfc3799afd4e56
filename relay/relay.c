/* The data path's interface to the control plane: start/stop, cameras in and out, status. */
#include "relay/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/util.h"
#include "relay/ktls.h"
#include "relay/worker.h"

/* Binds the external listener of every worker on the same address (SO_REUSEPORT): the
 * kernel spreads agents' connections over the workers. Port 0 picks one port for all. */
static int listen_all(struct rly_relay *r, int *fds)
{
    char addr[CR_ADDR_STRLEN];
    const char *where = r->cfg.listen_external;
    for (unsigned i = 0; i < r->n_workers; i++) {
        fds[i] = cr_tcp_listen(where, 1, 1024);
        if (fds[i] < 0) {
            cr_err("cannot listen on %s for agents: %s", where, strerror(-fds[i]));
            int rc = fds[i];
            while (i-- > 0)
                close(fds[i]);
            return rc;
        }
        if (i == 0) {
            struct sockaddr_storage ss;
            socklen_t len = sizeof(ss);
            getsockname(fds[0], (struct sockaddr *)&ss, &len);
            cr_addr_format((struct sockaddr *)&ss, addr, sizeof(addr));
            where = addr;
        }
    }
    return 0;
}

/* The stream paths after pairing take the session's traffic keys over (kTLS or our record
 * layer), which BoringSSL exposes only through its keylog callback: install ours. */
static void keep_secrets(SSL_CTX *ctx)
{
    int rc = rly_ktls_keylog_install(ctx);
    if (rc < 0)
        cr_warn("cannot capture TLS traffic keys (%s): data connections will use BoringSSL's "
                "record layer",
                rc == -EEXIST ? "another keylog callback is installed" : strerror(-rc));
}

int rly_relay_start(const struct rly_config *cfg, struct rly_relay **out)
{
    struct rly_relay *r = cr_xcalloc(1, sizeof(*r));
    int rc;
    unsigned started = 0;

    r->cfg = *cfg;
    if (!r->cfg.keepalive_ms)
        r->cfg.keepalive_ms = 5000;
    atomic_init(&r->keepalive_ms, r->cfg.keepalive_ms);
    pthread_mutex_init(&r->tls_lock, NULL);
    r->tls = cfg->tls;
    if (r->tls) {
        SSL_CTX_up_ref(r->tls);
        keep_secrets(r->tls);
    }
    r->ktls = !cfg->no_kernel_tls && rly_ktls_available();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->n_workers = cfg->workers ? cfg->workers : (unsigned)(cores > 0 ? cores : 1);
    if (r->n_workers > 256)
        r->n_workers = 256;
    pthread_mutex_init(&r->lock, NULL);
    pthread_barrier_init(&r->ready, NULL, r->n_workers);
    r->workers = cr_xcalloc(r->n_workers, sizeof(*r->workers));
    int *fds = cr_xcalloc(r->n_workers, sizeof(int));
    rc = listen_all(r, fds);
    if (rc < 0)
        goto out_free_relay;
    for (unsigned i = 0; i < r->n_workers; i++) {
        rc = rly__worker_init(&r->workers[i], r, i, fds[i]);
        if (rc < 0) {
            cr_err("cannot set up relay worker %u: %s", i, strerror(-rc));
            goto out_free_relay; /* the fds of uninitialised workers leak only on this exit */
        }
    }
    for (; started < r->n_workers; started++) {
        rc = rly__worker_start(&r->workers[started]);
        if (rc < 0) {
            cr_err("cannot start relay worker %u: %s", started, strerror(-rc));
            abort(); /* the started ones wait on the barrier for the rest: nothing sane to undo */
        }
    }
    free(fds);
    /* The data path is chosen at run time: kernel TLS where the kernel has the TLS ULP, our
     * in-place userspace record layer otherwise (relay/stream.c: choose_path). */
    if (r->ktls)
        cr_info("kernel TLS is available: TLS data connections are spliced through kTLS");
    else if (cfg->no_kernel_tls)
        cr_info("kernel TLS turned off (kernel-tls = false): TLS data connections use the "
                "in-place userspace record layer");
    else
        cr_info("kernel TLS not available (%s): TLS data connections use the in-place "
                "userspace record layer",
                rly_ktls_unavailable_reason());
    if (cfg->allow_plain_data)
        cr_info("plaintext data connections are accepted and spliced (allow_plain_data)");
    cr_info("relay listening for agents on %s (port %u), %u worker%s", cfg->listen_external,
            rly_relay_external_port(r), r->n_workers, r->n_workers == 1 ? "" : "s");
    *out = r;
    return 0;

out_free_relay:
    free(fds);
    SSL_CTX_free(r->tls);
    pthread_mutex_destroy(&r->tls_lock);
    pthread_barrier_destroy(&r->ready);
    pthread_mutex_destroy(&r->lock);
    free(r->workers);
    free(r);
    return rc;
}

static struct rly_worker *owner_of(struct rly_relay *r, const char *serial)
{
    return &r->workers[rly__owner(r, serial)];
}

static void enqueue(struct rly_relay *r, struct rly_worker *w, struct rly_cmd *cmd)
{
    pthread_mutex_lock(&r->lock);
    cmd->next = NULL;
    *w->cmd_tail = cmd;
    w->cmd_tail = &cmd->next;
    pthread_mutex_unlock(&r->lock);
    rly__worker_wake(w);
}

void rly_relay_stop(struct rly_relay *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->n_workers; i++) {
        struct rly_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
        cmd->kind = RLY_CMD_STOP;
        enqueue(r, &r->workers[i], cmd);
    }
    for (unsigned i = 0; i < r->n_workers; i++)
        pthread_join(r->workers[i].thread, NULL);
    for (unsigned i = 0; i < r->n_workers; i++) {
        struct rly_worker *w = &r->workers[i];
        rly__worker_free(w);
        while (w->cmd_head) {
            struct rly_cmd *c = w->cmd_head;
            w->cmd_head = c->next;
            for (unsigned k = 0; c->kind == RLY_CMD_CAMERA_PUT && k < c->spec.n_endpoints; k++)
                if (c->spec.endpoints[k].listen_fd >= 0)
                    close(c->spec.endpoints[k].listen_fd);
            free(c);
        }
    }
    free(r->workers);
    SSL_CTX_free(r->tls); /* every connection (and its SSL) is gone by now */
    pthread_mutex_destroy(&r->tls_lock);
    pthread_barrier_destroy(&r->ready);
    pthread_mutex_destroy(&r->lock);
    cr_wipe(r->ticket_key, sizeof(r->ticket_key));
    free(r);
}

void rly_relay_set_tls(struct rly_relay *r, SSL_CTX *tls)
{
    SSL_CTX_up_ref(tls);
    keep_secrets(tls); /* before any worker makes an SSL from it */
    pthread_mutex_lock(&r->tls_lock);
    SSL_CTX *old = r->tls;
    r->tls = tls;
    pthread_mutex_unlock(&r->tls_lock);
    SSL_CTX_free(old); /* live SSLs made from it hold their own references */
}

void rly_relay_set_keepalive(struct rly_relay *r, uint32_t keepalive_ms)
{
    atomic_store(&r->keepalive_ms, keepalive_ms ? keepalive_ms : 5000);
}

uint16_t rly_relay_external_port(struct rly_relay *r)
{
    return cr_sock_port(r->workers[0].conns[r->workers[0].external_listener].fd);
}

void rly_relay_set_ready(struct rly_relay *r)
{
    atomic_store(&r->cameras_loaded, 1);
}

void rly_relay_set_ticket_key(struct rly_relay *r, const uint8_t key[32])
{
    pthread_mutex_lock(&r->lock);
    memcpy(r->ticket_key, key, sizeof(r->ticket_key));
    pthread_mutex_unlock(&r->lock);
    atomic_store(&r->have_ticket_key, 1);
}

int rly_relay_camera_put(struct rly_relay *r, struct rly_camera_spec *spec)
{
    if (!spec->serial[0] || spec->n_endpoints > RLY_MAX_SERVICES) {
        for (unsigned i = 0; i < spec->n_endpoints && i < RLY_MAX_SERVICES; i++)
            if (spec->endpoints[i].listen_fd >= 0)
                close(spec->endpoints[i].listen_fd);
        return -EINVAL;
    }
    struct rly_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    cmd->kind = RLY_CMD_CAMERA_PUT;
    cmd->spec = *spec;
    for (unsigned i = 0; i < spec->n_endpoints; i++)
        spec->endpoints[i].listen_fd = -1; /* consumed: the worker owns them now */
    enqueue(r, owner_of(r, spec->serial), cmd);
    return 0;
}

/* Finds a camera by serial in its owner's table; caller holds r->lock. */
/* The path of the camera's latest stream; before its first, the one a TLS stream would take. */
static const char *camera_path(struct rly_relay *r, const struct rly_camera *cam)
{
    unsigned p = atomic_load_explicit(&cam->last_path, memory_order_relaxed);
    return p ? rly_path_name(p - 1) : rly_relay_data_path(r);
}

static struct rly_camera *find_locked(struct rly_relay *r, const char *serial)
{
    struct rly_worker *w = owner_of(r, serial);
    for (uint32_t i = 0; i < w->n_cameras; i++)
        if (w->cameras[i].in_use && strcmp(w->cameras[i].serial, serial) == 0)
            return &w->cameras[i];
    return NULL;
}

int rly_relay_camera_del(struct rly_relay *r, const char *serial)
{
    /* Queued unconditionally: each worker applies its commands in order, so a delete right
     * after a put (not yet applied) still removes the camera. */
    if (!serial || !*serial)
        return -EINVAL;
    struct rly_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    cmd->kind = RLY_CMD_CAMERA_DEL;
    cr_strlcpy(cmd->spec.serial, serial, sizeof(cmd->spec.serial));
    enqueue(r, owner_of(r, serial), cmd);
    return 0;
}

int rly_relay_camera_status(struct rly_relay *r, const char *serial,
                            struct rly_camera_status *out)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&r->lock);
    struct rly_camera *cam = find_locked(r, serial);
    if (cam) {
        memset(out, 0, sizeof(*out));
        out->online = cam->tunnel >= 0;
        memcpy(out->site_addr, cam->site_addr, sizeof(out->site_addr));
        out->last_seen_unix = cam->last_seen_unix;
        out->bytes_relayed = atomic_load_explicit(&cam->bytes_relayed, memory_order_relaxed);
        out->open_streams = atomic_load_explicit(&cam->open_streams, memory_order_relaxed);
        out->data_path = camera_path(r, cam);
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

unsigned rly_relay_camera_foreach(struct rly_relay *r, rly_camera_fn fn, void *ctx)
{
    struct rly_camera_status st;
    unsigned n = 0;
    pthread_mutex_lock(&r->lock);
    for (unsigned i = 0; i < r->n_workers; i++) {
        struct rly_worker *w = &r->workers[i];
        for (uint32_t k = 0; k < w->n_cameras; k++) {
            struct rly_camera *cam = &w->cameras[k];
            if (!cam->in_use)
                continue;
            memset(&st, 0, sizeof(st));
            st.online = cam->tunnel >= 0;
            memcpy(st.site_addr, cam->site_addr, sizeof(st.site_addr));
            st.last_seen_unix = cam->last_seen_unix;
            st.bytes_relayed = atomic_load_explicit(&cam->bytes_relayed, memory_order_relaxed);
            st.open_streams = atomic_load_explicit(&cam->open_streams, memory_order_relaxed);
            st.data_path = camera_path(r, cam);
            fn(ctx, cam->serial, &st);
            n++;
        }
    }
    pthread_mutex_unlock(&r->lock);
    return n;
}

void rly_relay_counters(struct rly_relay *r, struct rly_counters *out)
{
    out->tunnels_accepted = atomic_load(&r->counters.tunnels_accepted);
    out->tunnels_refused = atomic_load(&r->counters.tunnels_refused);
    out->handshake_failures = atomic_load(&r->counters.handshake_failures);
    out->data_conns_refused = atomic_load(&r->counters.data_conns_refused);
    out->streams_opened = atomic_load(&r->counters.streams_opened);
    out->streams_closed = atomic_load(&r->counters.streams_closed);
    out->bytes_relayed = atomic_load(&r->counters.bytes_relayed);
    out->frames_rejected = atomic_load(&r->counters.frames_rejected);
    out->handovers = atomic_load(&r->counters.handovers);
    out->buffers_exhausted = atomic_load(&r->counters.buffers_exhausted);
    out->plain_reads_copied = out->plain_reads_spliced = 0;
    for (unsigned i = 0; i < r->n_workers; i++) { /* counted per worker: see rly__stat_add */
        struct rly_worker *w = &r->workers[i];
        out->plain_reads_copied += atomic_load_explicit(&w->stat_plain_copied,
                                                        memory_order_relaxed);
        out->plain_reads_spliced += atomic_load_explicit(&w->stat_plain_spliced,
                                                         memory_order_relaxed);
    }
    for (unsigned i = 0; i < RLY_PATHS; i++)
        out->streams_by_path[i] = atomic_load(&r->counters.streams_by_path[i]);
}

unsigned rly_relay_worker_count(struct rly_relay *r)
{
    return r->n_workers;
}

void rly_relay_worker_stats(struct rly_relay *r, unsigned i, struct rly_worker_stats *out)
{
    struct rly_worker *w = &r->workers[i];
    out->connections = atomic_load_explicit(&w->stat_conns, memory_order_relaxed);
    out->cameras = atomic_load_explicit(&w->stat_cameras, memory_order_relaxed);
    out->tunnels = atomic_load_explicit(&w->stat_tunnels, memory_order_relaxed);
    out->streams = atomic_load_explicit(&w->stat_streams, memory_order_relaxed);
    out->completions = atomic_load_explicit(&w->stat_completions, memory_order_relaxed);
    out->busy_ns = atomic_load_explicit(&w->stat_busy_ns, memory_order_relaxed);
}

const char *rly_path_name(unsigned path)
{
    static const char *const names[RLY_PATHS] = {"tls-bio", "tls-inplace", "ktls-splice",
                                                 "plain"};
    return path < RLY_PATHS ? names[path] : "none";
}

const char *rly_relay_data_path(struct rly_relay *r)
{
    return rly_path_name(r->ktls ? RLY_PATH_KTLS_SPLICE : RLY_PATH_TLS_INPLACE);
}
