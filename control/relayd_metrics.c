/* control/relayd_metrics.c — what camrelayd's internal HTTP port shows: the per-camera bitrate
 * sampler, /metrics (Prometheus), the status page and /api/cameras. Never a secret: only
 * CameraInfo (no verifier exists there), counters and names. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "control/ctl_print.h"
#include "control/http.h"
#include "control/metrics.h"
#include "control/mgmt_reply.h"
#include "control/relayd_int.h"
#include "control/status_page.h"
#include "control/uplink.h"
#include "relay/ktls.h"
#include "relay/relay.h"

/* ---- the bitrate sampler ---- */

struct sample {
    char serial[RLY_NAME_MAX];
    uint64_t bytes;
};

struct sample_vec {
    struct sample *v;
    size_t n, cap;
};

/* Runs under the relay's lock: copy and return. The vector was sized before the walk; a camera
 * added since is picked up on the next second. */
static void collect(void *ctx, const char *serial, const struct rly_camera_status *st)
{
    struct sample_vec *sv = ctx;
    if (sv->n == sv->cap)
        return;
    cr_strlcpy(sv->v[sv->n].serial, serial, sizeof(sv->v[sv->n].serial));
    sv->v[sv->n].bytes = st->bytes_relayed;
    sv->n++;
}

void ctl_relayd_sample(struct ctl_relayd *d, uint64_t now_ms)
{
    struct sample_vec sv = {0};
    int found;

    if (!d->relay)
        return;
    pthread_mutex_lock(&d->cams_lock);
    sv.cap = d->n_cams + 16;
    pthread_mutex_unlock(&d->cams_lock);
    sv.v = cr_xcalloc(sv.cap, sizeof(*sv.v));
    rly_relay_camera_foreach(d->relay, collect, &sv);

    pthread_mutex_lock(&d->cams_lock);
    for (size_t i = 0; i < sv.n; i++) {
        size_t k = ctl__relayd_cams_find(d, sv.v[i].serial, &found);
        if (found)
            ctl_rate_update(&d->cams[k].rate, now_ms, sv.v[i].bytes);
    }
    pthread_mutex_unlock(&d->cams_lock);
    free(sv.v);
}

double ctl__relayd_bitrate(struct ctl_relayd *d, const char *serial)
{
    int found;
    double bps = 0;
    pthread_mutex_lock(&d->cams_lock);
    size_t k = ctl__relayd_cams_find(d, serial, &found);
    if (found)
        bps = ctl_rate_bps(&d->cams[k].rate);
    pthread_mutex_unlock(&d->cams_lock);
    return bps;
}

/* ---- one snapshot for a page or a scrape ---- */

struct snapshot {
    struct ctl_mgmt_reply rep;        /* every camera, as camrelayctl camera list */
    struct ctl_status_camera *cams;   /* rows: rep's cameras with their bitrate */
    struct ctl_status_summary sum;
    struct rly_counters counters;
    int list_failed;
};

static void snapshot_take(struct ctl_relayd *d, struct snapshot *s)
{
    memset(s, 0, sizeof(*s));
    ctl_mgmt_reply_init(&s->rep, 0);
    s->list_failed = ctl__relayd_list(d, &s->rep) < 0;
    size_t n = s->rep.msg.n_cameras;
    s->cams = cr_xcalloc(n + 1, sizeof(*s->cams));

    s->sum.relay_name = d->name;
    s->sum.now_unix = cr_unix_now();
    s->sum.cameras = (unsigned)n;
    s->sum.ktls_available = rly_ktls_available();
    s->sum.have_dispatcher = d->uplink != NULL;
    s->sum.dispatcher_connected = d->uplink && ctl_uplink_connected(d->uplink);
    for (size_t i = 0; i < n; i++) {
        const Camrelay__CameraInfo *ci = s->rep.msg.cameras[i];
        s->cams[i].info = ci;
        s->cams[i].bitrate_bps = ctl__relayd_bitrate(d, ci->serial);
        int st = ctl_status_state(ci->state);
        if (st >= 0)
            s->sum.by_state[st]++;
        if (!ci->synced)
            s->sum.unsynced++;
    }
    if (d->relay) {
        rly_relay_counters(d->relay, &s->counters);
        s->sum.data_path = rly_relay_data_path(d->relay);
        for (unsigned i = 0; i < rly_relay_worker_count(d->relay); i++) {
            struct rly_worker_stats ws;
            rly_relay_worker_stats(d->relay, i, &ws);
            s->sum.tunnels_online += ws.tunnels;
            s->sum.streams_open += ws.streams;
        }
        s->sum.bytes_relayed = s->counters.bytes_relayed;
    }
}

static void snapshot_free(struct snapshot *s)
{
    free(s->cams);
    ctl_mgmt_reply_free(&s->rep);
}

/* ---- /metrics ---- */

static void gauge(struct ctl_text *t, const char *name, const char *help, uint64_t v)
{
    ctl_metrics_family(t, name, CTL_METRIC_GAUGE, help);
    ctl_metrics_u64(t, name, NULL, NULL, v);
}

static void counter(struct ctl_text *t, const char *name, const char *help, uint64_t v)
{
    ctl_metrics_family(t, name, CTL_METRIC_COUNTER, help);
    ctl_metrics_u64(t, name, NULL, NULL, v);
}

static void render_workers(struct ctl_relayd *d, struct ctl_text *t)
{
    static const struct {
        const char *name, *help;
        enum ctl_metric_type type;
    } fam[] = {
        {"camrelay_worker_connections", "Connection slots in use on the io_uring worker "
         "(listeners included).", CTL_METRIC_GAUGE},
        {"camrelay_worker_cameras", "Cameras owned by the worker.", CTL_METRIC_GAUGE},
        {"camrelay_worker_tunnels", "Live control tunnels on the worker.", CTL_METRIC_GAUGE},
        {"camrelay_worker_streams", "Paired streams on the worker.", CTL_METRIC_GAUGE},
        {"camrelay_worker_completions_total", "io_uring completions the worker handled.",
         CTL_METRIC_COUNTER},
        {"camrelay_worker_busy_seconds_total", "Time the worker spent handling completions "
         "(the rest it waited).", CTL_METRIC_COUNTER},
    };
    unsigned n = rly_relay_worker_count(d->relay);
    struct rly_worker_stats *ws = cr_xcalloc(n + 1, sizeof(*ws));
    char id[16];

    for (unsigned i = 0; i < n; i++)
        rly_relay_worker_stats(d->relay, i, &ws[i]);
    for (size_t f = 0; f < CR_ARRAY_SIZE(fam); f++) {
        ctl_metrics_family(t, fam[f].name, fam[f].type, fam[f].help);
        for (unsigned i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "%u", i);
            switch (f) {
            case 0: ctl_metrics_u64(t, fam[f].name, "worker", id, ws[i].connections); break;
            case 1: ctl_metrics_u64(t, fam[f].name, "worker", id, ws[i].cameras); break;
            case 2: ctl_metrics_u64(t, fam[f].name, "worker", id, ws[i].tunnels); break;
            case 3: ctl_metrics_u64(t, fam[f].name, "worker", id, ws[i].streams); break;
            case 4: ctl_metrics_u64(t, fam[f].name, "worker", id, ws[i].completions); break;
            default:
                ctl_metrics_f64(t, fam[f].name, "worker", id, (double)ws[i].busy_ns / 1e9);
                break;
            }
        }
    }
    free(ws);
}

static void render_metrics(struct ctl_relayd *d, struct ctl_text *t)
{
    static const char *const states[CTL_CAM_STATES] = {"red", "yellow", "green"};
    struct snapshot s;
    const struct rly_counters *c = &s.counters;

    snapshot_take(d, &s);
    ctl_metrics_family(t, "camrelay_cameras", CTL_METRIC_GAUGE,
                       "Registered cameras by state: red = offline, yellow = online without a "
                       "recorder, green = online and attached to a recorder.");
    for (int i = 0; i < CTL_CAM_STATES; i++)
        ctl_metrics_u64(t, "camrelay_cameras", "state", states[i], s.sum.by_state[i]);
    gauge(t, "camrelay_tunnels_online", "Cameras with a live control tunnel.",
          s.sum.tunnels_online);
    gauge(t, "camrelay_streams_open", "Streams (recorder connection paired with an agent data "
          "connection) open now.", s.sum.streams_open);
    counter(t, "camrelay_bytes_relayed_total", "Bytes relayed in both directions since the "
            "relay started, counted as they are sent.", c->bytes_relayed);
    counter(t, "camrelay_streams_opened_total", "Streams paired since the relay started.",
            c->streams_opened);
    counter(t, "camrelay_tunnels_accepted_total", "Control tunnels that logged in.",
            c->tunnels_accepted);
    counter(t, "camrelay_tunnels_refused_total", "Control tunnels refused (unknown serial, "
            "failed proof, bad ticket).", c->tunnels_refused);
    counter(t, "camrelay_handshake_failures_total", "TLS handshakes on the agents' port that "
            "failed.", c->handshake_failures);
    counter(t, "camrelay_data_conns_refused_total", "Agent data connections refused (unknown "
            "stream or wrong token).", c->data_conns_refused);
    counter(t, "camrelay_frames_rejected_total", "Control frames rejected (oversized, "
            "malformed, unexpected).", c->frames_rejected);
    counter(t, "camrelay_buffers_exhausted_total", "Times a connection waited for a buffer "
            "(backpressure from the fixed pool).", c->buffers_exhausted);
    counter(t, "camrelay_handovers_total", "Agent connections moved to their camera's worker "
            "after the hello.", c->handovers);
    ctl_metrics_family(t, "camrelay_data_path_info", CTL_METRIC_GAUGE,
                       "The path new TLS data connections take (always 1; the label says "
                       "which: ktls-splice or tls-inplace).");
    ctl_metrics_u64(t, "camrelay_data_path_info", "path",
                    s.sum.data_path ? s.sum.data_path : "none", 1);
    ctl_metrics_family(t, "camrelay_streams_by_path_total", CTL_METRIC_COUNTER,
                       "Streams opened, by how their bytes moved: tls-inplace (our record "
                       "layer), ktls-splice, plain, tls-bio (BoringSSL, the fallback).");
    for (unsigned i = 0; i < RLY_PATHS; i++)
        ctl_metrics_u64(t, "camrelay_streams_by_path_total", "path", rly_path_name(i),
                        s.counters.streams_by_path[i]);
    ctl_metrics_family(t, "camrelay_plain_reads_total", CTL_METRIC_COUNTER,
                       "Reads of plaintext streams' camera bytes, by how they moved on: "
                       "copied (through the receive ring, one send: bursts that fit a ring "
                       "buffer) or spliced (bigger bursts).");
    ctl_metrics_u64(t, "camrelay_plain_reads_total", "how", "copied",
                    s.counters.plain_reads_copied);
    ctl_metrics_u64(t, "camrelay_plain_reads_total", "how", "spliced",
                    s.counters.plain_reads_spliced);
    gauge(t, "camrelay_ktls_available", "1 when the kernel offers TLS offload (the TLS ULP).",
          (uint64_t)s.sum.ktls_available);
    if (d->relay)
        render_workers(d, t);
    gauge(t, "camrelay_dispatcher_connected", "1 while logged in to a dispatcher.",
          (uint64_t)s.sum.dispatcher_connected);
    gauge(t, "camrelay_cameras_unsynced", "Registrations the dispatcher has not acknowledged "
          "yet.", s.sum.unsynced);
    gauge(t, "camrelay_camera_list_ok", "0 when the registry could not be read for this "
          "scrape (the camera figures are then incomplete).", (uint64_t)!s.list_failed);

    if (atomic_load(&d->metrics_per_camera)) {
        size_t n = s.rep.msg.n_cameras;
        ctl_metrics_family(t, "camrelay_camera_online", CTL_METRIC_GAUGE,
                           "1 while the camera's control tunnel is up.");
        for (size_t i = 0; i < n; i++)
            ctl_metrics_u64(t, "camrelay_camera_online", "serial", s.cams[i].info->serial,
                            s.cams[i].info->online ? 1 : 0);
        ctl_metrics_family(t, "camrelay_camera_bytes_relayed_total", CTL_METRIC_COUNTER,
                           "Bytes relayed for the camera, both directions, kept across "
                           "restarts in the registry.");
        for (size_t i = 0; i < n; i++)
            ctl_metrics_u64(t, "camrelay_camera_bytes_relayed_total", "serial",
                            s.cams[i].info->serial, s.cams[i].info->bytes_relayed);
        ctl_metrics_family(t, "camrelay_camera_bitrate_bps", CTL_METRIC_GAUGE,
                           "The camera's relayed bitrate, bits per second, sampled every "
                           "second and smoothed over about 5 s.");
        for (size_t i = 0; i < n; i++)
            ctl_metrics_f64(t, "camrelay_camera_bitrate_bps", "serial", s.cams[i].info->serial,
                            s.cams[i].bitrate_bps);
    }
    snapshot_free(&s);
}

/* ---- /api/cameras ---- */

static int render_json(struct ctl_relayd *d, struct ctl_text *t)
{
    struct ctl_mgmt_reply rep;
    char *buf = NULL;
    size_t len = 0;
    int rc;

    ctl_mgmt_reply_init(&rep, 0);
    rc = ctl__relayd_list(d, &rep);
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        ctl_mgmt_reply_free(&rep);
        return -ENOMEM;
    }
    if (rc == 0)
        rc = ctl_print_cameras_json(f, &rep.msg);
    fclose(f);
    if (rc == 0)
        ctl_text_put(t, buf, len);
    free(buf);
    ctl_mgmt_reply_free(&rep);
    return rc;
}

int ctl_relayd_http(void *ctx, const char *path, struct ctl_http_response *rsp)
{
    struct ctl_relayd *d = ctx;

    if (strcmp(path, "/metrics") == 0) {
        rsp->content_type = CTL_HTTP_PROMETHEUS;
        render_metrics(d, &rsp->body);
        return 0;
    }
    if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
        struct snapshot s;
        snapshot_take(d, &s);
        rsp->content_type = CTL_HTTP_HTML;
        ctl_status_page_render(&rsp->body, &s.sum, s.cams, s.rep.msg.n_cameras);
        snapshot_free(&s);
        return 0;
    }
    if (strcmp(path, "/api/cameras") == 0) {
        rsp->content_type = CTL_HTTP_JSON;
        if (render_json(d, &rsp->body) < 0) {
            ctl_text_free(&rsp->body);
            rsp->status = 503;
            rsp->content_type = CTL_HTTP_TEXT;
            ctl_text_puts(&rsp->body, "the camera list is not available now (registry "
                                      "error; see the relay's log)\n");
        }
        return 0;
    }
    return -ENOENT;
}
