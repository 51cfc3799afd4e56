/* The data path's interface to the control plane: start/stop, cameras in and out, status. */
#include "relay/relay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/util.h"
#include "relay/worker.h"

int rly_relay_start(const struct rly_config *cfg, struct rly_relay **out)
{
    struct rly_relay *r = cr_xcalloc(1, sizeof(*r));
    int rc, fd;

    r->cfg = *cfg;
    if (!r->cfg.keepalive_ms)
        r->cfg.keepalive_ms = 5000;
    pthread_mutex_init(&r->lock, NULL);
    r->cmd_tail = &r->cmd_head;
    fd = cr_tcp_listen(cfg->listen_external, 1, 1024);
    if (fd < 0) {
        cr_err("cannot listen on %s for agents: %s", cfg->listen_external, strerror(-fd));
        rc = fd;
        goto out_free_relay;
    }
    rc = rly__worker_init(&r->worker, r, fd);
    if (rc < 0) {
        cr_err("cannot set up the relay worker: %s", strerror(-rc));
        close(fd);
        goto out_free_relay;
    }
    rc = rly__worker_start(&r->worker);
    if (rc < 0) {
        cr_err("cannot start the relay worker: %s", strerror(-rc));
        goto out_free_relay;
    }
    cr_info("relay listening for agents on %s (port %u)", cfg->listen_external,
            cr_sock_port(fd));
    *out = r;
    return 0;

out_free_relay:
    pthread_mutex_destroy(&r->lock);
    free(r);
    return rc;
}

static void enqueue(struct rly_relay *r, struct rly_cmd *cmd)
{
    pthread_mutex_lock(&r->lock);
    cmd->next = NULL;
    *r->cmd_tail = cmd;
    r->cmd_tail = &cmd->next;
    pthread_mutex_unlock(&r->lock);
    rly__worker_wake(&r->worker);
}

void rly_relay_stop(struct rly_relay *r)
{
    if (!r)
        return;
    struct rly_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    cmd->kind = RLY_CMD_STOP;
    enqueue(r, cmd);
    rly__worker_join(&r->worker);
    while (r->cmd_head) {
        struct rly_cmd *c = r->cmd_head;
        r->cmd_head = c->next;
        for (unsigned i = 0; c->kind == RLY_CMD_CAMERA_PUT && i < c->spec.n_endpoints; i++)
            if (c->spec.endpoints[i].listen_fd >= 0)
                close(c->spec.endpoints[i].listen_fd);
        free(c);
    }
    pthread_mutex_destroy(&r->lock);
    cr_wipe(r->ticket_key, sizeof(r->ticket_key));
    free(r);
}

uint16_t rly_relay_external_port(struct rly_relay *r)
{
    return cr_sock_port(r->worker.conns[r->worker.external_listener].fd);
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
    enqueue(r, cmd);
    return 0;
}

/* Finds a camera by serial; caller holds r->lock. */
static struct rly_camera *find_locked(struct rly_relay *r, const char *serial)
{
    struct rly_worker *w = &r->worker;
    for (uint32_t i = 0; i < w->n_cameras; i++)
        if (w->cameras[i].in_use && strcmp(w->cameras[i].serial, serial) == 0)
            return &w->cameras[i];
    return NULL;
}

int rly_relay_camera_del(struct rly_relay *r, const char *serial)
{
    pthread_mutex_lock(&r->lock);
    int found = find_locked(r, serial) != NULL;
    pthread_mutex_unlock(&r->lock);
    if (!found)
        return -ENOENT;
    struct rly_cmd *cmd = cr_xcalloc(1, sizeof(*cmd));
    cmd->kind = RLY_CMD_CAMERA_DEL;
    cr_strlcpy(cmd->spec.serial, serial, sizeof(cmd->spec.serial));
    enqueue(r, cmd);
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
        out->data_path = "userspace-tls"; /* kTLS hand-off comes with the zero-copy work */
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
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
}
