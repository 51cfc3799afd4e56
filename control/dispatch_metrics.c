/* control/dispatch_metrics.c — the dispatcher's /metrics: relays, cameras, held agents and
 * what it has refused. Counts and names only, never a secret. */
#include <errno.h>
#include <string.h>

#include "control/dispatch_int.h"
#include "control/http.h"
#include "control/metrics.h"

static int count_relay(const struct ctl_relay_account *a, void *ctx)
{
    (void)a;
    (*(unsigned *)ctx)++;
    return 0;
}

static int count_camera(const struct ctl_camera *c, void *ctx)
{
    (void)c;
    (*(unsigned *)ctx)++;
    return 0;
}

void ctl_dispatch_stats(struct ctl_dispatch *d, struct ctl_dispatch_stats *out)
{
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&d->lock);
    for (struct ctl_dispatch_relay *r = d->relays; r; r = r->next)
        out->relays_online++;
    for (struct ctl_dispatch_waiter *w = d->waiters; w; w = w->next)
        out->agents_held++;
    out->connections = d->active;
    out->conns_refused = d->refused;
    pthread_mutex_unlock(&d->lock);
    out->max_conns = d->max_conns;
    out->dispatches = atomic_load(&d->dispatches);
    out->auth_failures_agent = atomic_load(&d->auth_failures_agent);
    out->auth_failures_relay = atomic_load(&d->auth_failures_relay);
    /* The registry has its own lock; never walk it under d->lock. */
    int rc1 = ctl_registry_relay_foreach(d->reg, count_relay, &out->relays_known);
    int rc2 = ctl_registry_camera_foreach(d->reg, NULL, count_camera, &out->cameras_registered);
    out->registry_ok = rc1 == 0 && rc2 == 0;
}

static void one(struct ctl_text *t, const char *name, enum ctl_metric_type type,
                const char *help, uint64_t v)
{
    ctl_metrics_family(t, name, type, help);
    ctl_metrics_u64(t, name, NULL, NULL, v);
}

static void render(struct ctl_dispatch *d, struct ctl_text *t)
{
    struct ctl_dispatch_stats s;
    ctl_dispatch_stats(d, &s);

    one(t, "camrelay_dispatch_relays_known", CTL_METRIC_GAUGE, "Relay accounts registered.",
        s.relays_known);
    one(t, "camrelay_dispatch_relays_online", CTL_METRIC_GAUGE,
        "Relays with a live, authenticated link.", s.relays_online);
    one(t, "camrelay_dispatch_cameras_registered", CTL_METRIC_GAUGE,
        "Cameras registered, all relays together.", s.cameras_registered);
    one(t, "camrelay_dispatch_agents_held", CTL_METRIC_GAUGE,
        "Agents held (pending) until their camera's registration arrives.", s.agents_held);
    one(t, "camrelay_dispatch_connections", CTL_METRIC_GAUGE,
        "Open connections: agents, relays and management.", s.connections);
    one(t, "camrelay_dispatch_connections_max", CTL_METRIC_GAUGE,
        "The connection limit; connections above it are closed at once.", s.max_conns);
    one(t, "camrelay_dispatch_dispatches_total", CTL_METRIC_COUNTER,
        "Cameras sent their relay's address and a ticket.", s.dispatches);
    ctl_metrics_family(t, "camrelay_dispatch_auth_failures_total", CTL_METRIC_COUNTER,
                       "Logins refused: a camera's proof (link agent) or a relay account's "
                       "(link relay; unknown account included).");
    ctl_metrics_u64(t, "camrelay_dispatch_auth_failures_total", "link", "agent",
                    s.auth_failures_agent);
    ctl_metrics_u64(t, "camrelay_dispatch_auth_failures_total", "link", "relay",
                    s.auth_failures_relay);
    one(t, "camrelay_dispatch_connections_refused_total", CTL_METRIC_COUNTER,
        "Connections closed at once because the connection limit was reached.",
        s.conns_refused);
    one(t, "camrelay_dispatch_registry_ok", CTL_METRIC_GAUGE,
        "0 when the registry could not be counted for this scrape.", (uint64_t)s.registry_ok);
}

int ctl_dispatch_http(void *ctx, const char *path, struct ctl_http_response *rsp)
{
    struct ctl_dispatch *d = ctx;
    if (strcmp(path, "/metrics") == 0) {
        rsp->content_type = CTL_HTTP_PROMETHEUS;
        render(d, &rsp->body);
        return 0;
    }
    if (strcmp(path, "/") == 0) {
        ctl_text_puts(&rsp->body, "camrelay-dispatch: metrics at /metrics\n");
        return 0;
    }
    return -ENOENT;
}
