/* control/sizing_plot.c — renders a computed sizing plan: the table, JSON, and SVG/PNG plots. */
#include "control/sizing_plot.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/util.h"

#define SHOW_SITES_DEFAULT 20
/* Beyond this ratio between the plan's and the bench's bitrate, linear scaling of the
 * bench's stream count is a guess worth a note. */
#define BENCH_RATIO_NOTE 2.0

/* ---- the human report ------------------------------------------------------------------------ */

/* kbit/s to Mbit/s for a %.2f column, half-way cases up (see ctl_size_fmt_rate). */
static double mbit(double kbps)
{
    return kbps / 1e3 + 1e-9;
}

static void print_overhead(const struct ctl_size_plan *plan, FILE *out)
{
    double tcp = 100.0 * CTL_SIZE_OVH_TCPIP_BYTES / CTL_SIZE_OVH_MSS;
    double rtp = 100.0 * CTL_SIZE_OVH_RTP_BYTES / CTL_SIZE_OVH_RTP_PAYLOAD;
    double tls = 100.0 * CTL_SIZE_OVH_TLS_BYTES /
                 (CTL_SIZE_OVH_RTP_PAYLOAD + CTL_SIZE_OVH_RTP_BYTES);
    double all = ((1 + tcp / 100) * (1 + rtp / 100) * (1 + tls / 100) - 1) * 100;

    if (plan->overhead_pct == CTL_SIZE_OVERHEAD_PCT_DEFAULT)
        fprintf(out,
                "  overhead %g%%: TCP/IPv4 %.1f%% + RTP in RTSP %.1f%% + TLS 1.3 records %.1f%% "
                "= %.1f%%, rounded up\n",
                plan->overhead_pct, tcp, rtp, tls, all);
    else
        fprintf(out, "  overhead %g%% (--overhead; the default is %g%% for TLS+TCP/IP+RTP)\n",
                plan->overhead_pct, CTL_SIZE_OVERHEAD_PCT_DEFAULT);
}

static void print_totals(const struct ctl_size_plan *plan, FILE *out)
{
    const struct ctl_size_site *big = &plan->sites[plan->largest_site];
    double ovh = 1.0 + plan->overhead_pct / 100.0, hr = 1.0 + plan->headroom_pct / 100.0;
    char h1[32], h2[32], name[80];

    if (plan->uniform) {
        const struct ctl_size_site *s = &plan->sites[0];
        char rate[32];
        fprintf(out, "Plan: %zu site%s × %u camera%s × %u stream%s × %s", plan->n_sites,
                plan->n_sites == 1 ? "" : "s", s->cameras, s->cameras == 1 ? "" : "s",
                s->streams_per_camera, s->streams_per_camera == 1 ? "" : "s",
                ctl_size_fmt_rate(s->kbps, rate, sizeof(rate)));
        if (s->fps)
            fprintf(out, " at %u fps", s->fps);
        fprintf(out, "\n");
    } else {
        fprintf(out, "Plan: %zu site%s\n", plan->n_sites, plan->n_sites == 1 ? "" : "s");
    }
    fprintf(out, "  %llu cameras, %llu streams\n\n", (unsigned long long)plan->cameras,
            (unsigned long long)plan->streams);

    snprintf(h1, sizeof(h1), "+%g%% overhead", plan->overhead_pct);
    snprintf(h2, sizeof(h2), "+%g%% headroom", plan->headroom_pct);
    fprintf(out, "  %-24s %14s %16s %16s\n", "", "payload", h1, h2);
    if (plan->uniform) {
        fprintf(out, "  %-24s %7.2f Mbit/s %9.2f Mbit/s %9.2f Mbit/s\n", "upstream per site",
                mbit(big->up_payload_kbps), mbit(big->up_wire_kbps), mbit(big->need_kbps));
    } else {
        double avg = plan->central_payload_kbps / (double)plan->n_sites;
        fprintf(out, "  %-24s %7.2f Mbit/s %9.2f Mbit/s %9.2f Mbit/s  (%s)\n",
                "upstream, largest site", mbit(big->up_payload_kbps), mbit(big->up_wire_kbps),
                mbit(big->need_kbps),
                ctl_size__show(big->name, sizeof(big->name), name, sizeof(name)));
        fprintf(out, "  %-24s %7.2f Mbit/s %9.2f Mbit/s %9.2f Mbit/s\n",
                "upstream, average site", mbit(avg), mbit(avg * ovh), mbit(avg * ovh * hr));
    }
    fprintf(out, "  %-24s %7.2f Mbit/s %9.2f Mbit/s %9.2f Mbit/s\n", "central downstream",
            mbit(plan->central_payload_kbps), mbit(plan->central_wire_kbps),
            mbit(plan->central_need_kbps));
    fprintf(out, "  %-24s %14llu %16s %16llu\n\n", "relay streams",
            (unsigned long long)plan->streams, "", (unsigned long long)plan->streams_need);
    print_overhead(plan, out);
    if (plan->n_unchecked == plan->n_sites)
        fprintf(out, "  uplinks: not checked (give --uplink-kbps, or uplink_kbps in the CSV)\n");
    else if (plan->n_short == 0 && plan->n_unchecked == 0)
        fprintf(out, "  uplinks: every site's uplink carries its upstream with %g%% headroom\n",
                plan->headroom_pct);
    else
        fprintf(out, "  uplinks: %zu too small, %zu unchecked (no uplink_kbps), %zu fine\n",
                plan->n_short, plan->n_unchecked,
                plan->n_sites - plan->n_short - plan->n_unchecked);
}

static void print_fleet(const struct ctl_size_plan *plan, FILE *out)
{
    const struct ctl_size_bench *b = &plan->bench;
    const struct ctl_size_fleet *f = &plan->fleet;
    double avg = plan->streams ? plan->central_payload_kbps / (double)plan->streams : 0;
    char r1[32], r2[32], m1[32], m2[32], m3[32];

    fprintf(out, "\nRelay appliances (bench: %u cores, %llu streams × %s, %.3g CPU-s/GB",
            b->cores, (unsigned long long)b->max_streams,
            ctl_size_fmt_rate(b->stream_kbps, r1, sizeof(r1)), b->cpu_s_per_gb);
    if (b->has_rss)
        fprintf(out, ", %s per tunnel",
                ctl_size__fmt_bytes((double)b->rss_per_tunnel_bytes, m1, sizeof(m1)));
    fprintf(out, ")\n");
    if (b->machine[0])
        fprintf(out, "  bench machine: %s\n", b->machine);
    fprintf(out, "  %-18s %llu streams at %s = %.1f bench streams; %.1f with headroom\n",
            "stream load", (unsigned long long)plan->streams,
            ctl_size_fmt_rate(avg, r2, sizeof(r2)), f->load_streams, f->load_need);
    fprintf(out, "  %-18s → %llu appliance%s (%llu streams at %s each)\n", "",
            (unsigned long long)f->appliances_by_streams,
            f->appliances_by_streams == 1 ? "" : "s", (unsigned long long)b->max_streams, r1);
    fprintf(out, "  %-18s %.4g GB/s on the wire × %.3g CPU-s/GB = %.2f cores with headroom\n",
            "CPU", f->gb_per_s, b->cpu_s_per_gb, f->cores_need);
    fprintf(out, "  %-18s → %llu appliance%s (%u cores each)\n", "",
            (unsigned long long)f->appliances_by_cpu, f->appliances_by_cpu == 1 ? "" : "s",
            b->cores);
    if (b->has_rss)
        fprintf(out, "  %-18s %llu streams × %s = %s with headroom, %s per appliance\n",
                "memory", (unsigned long long)plan->streams,
                ctl_size__fmt_bytes((double)b->rss_per_tunnel_bytes, m3, sizeof(m3)),
                ctl_size__fmt_bytes((double)f->memory_need_bytes, m1, sizeof(m1)),
                ctl_size__fmt_bytes((double)f->memory_need_bytes /
                                        (double)(f->appliances ? f->appliances : 1),
                                    m2, sizeof(m2)));
    else
        fprintf(out, "  %-18s not in the bench result (no rss_per_tunnel_bytes)\n", "memory");
    fprintf(out, "  %-18s %llu (%llu cores in all)\n", "appliances needed",
            (unsigned long long)f->appliances,
            (unsigned long long)(f->appliances * (uint64_t)b->cores));
    if (avg > 0 &&
        (avg / b->stream_kbps > BENCH_RATIO_NOTE || b->stream_kbps / avg > BENCH_RATIO_NOTE))
        fprintf(out, "  note: %s per stream is far from the bench's %s: its stream count was\n"
                     "        scaled linearly; rerun the bench at the plan's bitrate to be sure\n",
                r2, r1);
}

static void print_short_site(const struct ctl_size_plan *plan, const struct ctl_size_site *s,
                             const char *who, FILE *out)
{
    char need[32], up[32], sh[32], link[80];

    fprintf(out, "  %s: needs %s with %g%% headroom, uplink %s", who,
            ctl_size_fmt_rate(s->need_kbps, need, sizeof(need)), plan->headroom_pct,
            ctl_size_fmt_rate(s->uplink_kbps, up, sizeof(up)));
    if (s->link[0])
        fprintf(out, " (%s)", ctl_size__show(s->link, sizeof(s->link), link, sizeof(link)));
    fprintf(out, ": short by %s\n", ctl_size_fmt_rate(s->short_kbps, sh, sizeof(sh)));
}

static void print_sites(const struct ctl_size_plan *plan, int all, FILE *out)
{
    size_t shown = all ? plan->n_sites : SHOW_SITES_DEFAULT;
    char name[80], link[80], who[100];

    if (plan->n_short > 0) {
        fprintf(out, "\nSites whose uplink is too small (%zu of %zu):\n", plan->n_short,
                plan->n_sites);
        if (plan->uniform) {
            snprintf(who, sizeof(who), "every site (%zu)", plan->n_sites);
            print_short_site(plan, &plan->sites[0], who, out);
        } else {
            for (size_t i = 0; i < plan->n_sites; i++) {
                const struct ctl_size_site *s = &plan->sites[i];
                if (s->short_kbps <= 0)
                    continue;
                snprintf(who, sizeof(who), "site %s",
                         ctl_size__show(s->name, sizeof(s->name), name, sizeof(name)));
                print_short_site(plan, s, who, out);
            }
        }
    }
    if (plan->uniform && !all) {
        fprintf(out, "\nSites: all %zu alike (--all lists them)\n", plan->n_sites);
        return;
    }
    if (shown > plan->n_sites)
        shown = plan->n_sites;
    if (shown < plan->n_sites)
        fprintf(out, "\nSites (first %zu of %zu; --all lists every site):\n", shown,
                plan->n_sites);
    else
        fprintf(out, "\nSites (%zu):\n", plan->n_sites);
    fprintf(out, "  %-20s %5s %5s %8s %9s %9s %9s %9s  %-8s %s\n", "name", "cams", "strms",
            "kbit/s", "up Mbit/s", "+overhead", "+headroom", "uplink", "link", "status");
    for (size_t i = 0; i < shown; i++) {
        const struct ctl_size_site *s = &plan->sites[i];
        char up[24], status[48];

        if (s->has_uplink)
            snprintf(up, sizeof(up), "%.2f", mbit(s->uplink_kbps));
        else
            snprintf(up, sizeof(up), "-");
        if (!s->has_uplink)
            snprintf(status, sizeof(status), "unchecked");
        else if (s->short_kbps > 0)
            snprintf(status, sizeof(status), "SHORT by %.2f Mbit/s", mbit(s->short_kbps));
        else
            snprintf(status, sizeof(status), "ok");
        fprintf(out, "  %-20s %5u %5llu %8g %9.2f %9.2f %9.2f %9s  %-8s %s\n",
                ctl_size__show(s->name, sizeof(s->name), name, sizeof(name)), s->cameras,
                (unsigned long long)s->streams, s->kbps, mbit(s->up_payload_kbps),
                mbit(s->up_wire_kbps), mbit(s->need_kbps), up,
                s->link[0] ? ctl_size__show(s->link, sizeof(s->link), link, sizeof(link)) : "-",
                status);
    }
}

void ctl_size_print(const struct ctl_size_plan *plan, int all, FILE *out)
{
    if (plan->n_sites == 0) {
        fprintf(out, "Plan: no sites\n");
        return;
    }
    print_totals(plan, out);
    if (plan->has_bench)
        print_fleet(plan, out);
    print_sites(plan, all, out);
}

/* ---- JSON ------------------------------------------------------------------------------------ */

/* Integral figures as JSON integers so 100000 reads back as 100000, not 100000.0. */
static json_t *jnum(double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        return json_integer((json_int_t)v);
    return json_real(v);
}

static json_t *site_json(const struct ctl_size_site *s)
{
    json_t *o = json_object();
    const char *status = !s->has_uplink ? "unchecked" : s->short_kbps > 0 ? "short" : "ok";

    json_object_set_new(o, "name", json_string(s->name));
    if (s->line)
        json_object_set_new(o, "line", json_integer(s->line));
    json_object_set_new(o, "link", s->link[0] ? json_string(s->link) : json_null());
    json_object_set_new(o, "cameras", json_integer(s->cameras));
    json_object_set_new(o, "streams_per_camera", json_integer(s->streams_per_camera));
    json_object_set_new(o, "streams", json_integer((json_int_t)s->streams));
    json_object_set_new(o, "fps", s->fps ? json_integer(s->fps) : json_null());
    json_object_set_new(o, "kbps", jnum(s->kbps));
    json_object_set_new(o, "uplink_kbps", s->has_uplink ? jnum(s->uplink_kbps) : json_null());
    json_object_set_new(o, "upstream_payload_kbps", jnum(s->up_payload_kbps));
    json_object_set_new(o, "upstream_wire_kbps", jnum(s->up_wire_kbps));
    json_object_set_new(o, "upstream_need_kbps", jnum(s->need_kbps));
    json_object_set_new(o, "short_kbps", jnum(s->short_kbps));
    json_object_set_new(o, "status", json_string(status));
    return o;
}

static json_t *fleet_json(const struct ctl_size_plan *plan)
{
    const struct ctl_size_bench *b = &plan->bench;
    const struct ctl_size_fleet *f = &plan->fleet;
    json_t *bench = json_object(), *o = json_object();

    json_object_set_new(bench, "cores", json_integer(b->cores));
    json_object_set_new(bench, "max_streams", json_integer((json_int_t)b->max_streams));
    json_object_set_new(bench, "stream_kbps", jnum(b->stream_kbps));
    json_object_set_new(bench, "cpu_s_per_gb", jnum(b->cpu_s_per_gb));
    json_object_set_new(bench, "rss_per_tunnel_bytes",
                        b->has_rss ? json_integer((json_int_t)b->rss_per_tunnel_bytes)
                                   : json_null());
    json_object_set_new(bench, "machine", json_string(b->machine));
    json_object_set_new(o, "bench", bench);
    json_object_set_new(o, "load_bench_streams", jnum(f->load_streams));
    json_object_set_new(o, "load_bench_streams_need", jnum(f->load_need));
    json_object_set_new(o, "gb_per_s", jnum(f->gb_per_s));
    json_object_set_new(o, "cores_need", jnum(f->cores_need));
    json_object_set_new(o, "memory_need_bytes",
                        b->has_rss ? json_integer((json_int_t)f->memory_need_bytes)
                                   : json_null());
    json_object_set_new(o, "appliances_by_streams",
                        json_integer((json_int_t)f->appliances_by_streams));
    json_object_set_new(o, "appliances_by_cpu", json_integer((json_int_t)f->appliances_by_cpu));
    json_object_set_new(o, "appliances", json_integer((json_int_t)f->appliances));
    json_object_set_new(o, "cores_total", json_integer((json_int_t)(f->appliances * b->cores)));
    return o;
}

int ctl_size_print_json(const struct ctl_size_plan *plan, FILE *out)
{
    json_t *root = json_object(), *totals = json_object(), *shorts = json_array();
    json_t *sites = json_array(), *units = json_object();
    int rc;

    json_object_set_new(units, "rates", json_string("kbit/s (1000 bit/s)"));
    json_object_set_new(units, "memory", json_string("bytes"));
    json_object_set_new(root, "units", units);
    json_object_set_new(root, "overhead_pct", jnum(plan->overhead_pct));
    json_object_set_new(root, "overhead_covers",
                        json_string("TLS 1.3 records + TCP/IPv4 headers + RTP in RTSP "
                                    "interleaved framing, site to centre"));
    json_object_set_new(root, "headroom_pct", jnum(plan->headroom_pct));

    json_object_set_new(totals, "sites", json_integer((json_int_t)plan->n_sites));
    json_object_set_new(totals, "cameras", json_integer((json_int_t)plan->cameras));
    json_object_set_new(totals, "streams", json_integer((json_int_t)plan->streams));
    json_object_set_new(totals, "streams_need", json_integer((json_int_t)plan->streams_need));
    json_object_set_new(totals, "central_payload_kbps", jnum(plan->central_payload_kbps));
    json_object_set_new(totals, "central_wire_kbps", jnum(plan->central_wire_kbps));
    json_object_set_new(totals, "central_need_kbps", jnum(plan->central_need_kbps));
    if (plan->n_sites) {
        const struct ctl_size_site *big = &plan->sites[plan->largest_site];
        json_object_set_new(totals, "largest_site", json_string(big->name));
        json_object_set_new(totals, "site_max_upstream_payload_kbps", jnum(big->up_payload_kbps));
        json_object_set_new(totals, "site_max_upstream_wire_kbps", jnum(big->up_wire_kbps));
        json_object_set_new(totals, "site_max_upstream_need_kbps", jnum(big->need_kbps));
    }
    json_object_set_new(totals, "sites_short", json_integer((json_int_t)plan->n_short));
    json_object_set_new(totals, "sites_unchecked", json_integer((json_int_t)plan->n_unchecked));
    json_object_set_new(root, "totals", totals);

    for (size_t i = 0; i < plan->n_sites; i++) {
        const struct ctl_size_site *s = &plan->sites[i];
        if (s->short_kbps > 0)
            json_array_append_new(shorts, site_json(s));
        json_array_append_new(sites, site_json(s));
    }
    json_object_set_new(root, "short_sites", shorts);
    json_object_set_new(root, "appliances", plan->has_bench ? fleet_json(plan) : json_null());
    json_object_set_new(root, "sites", sites);

    rc = json_dumpf(root, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    fputc('\n', out);
    json_decref(root);
    return rc == 0 ? 0 : -EIO;
}


/* ---- plots ----------------------------------------------------------------------------------- */

/* The figures for "the first k sites". */
struct sample {
    uint64_t k;
    double payload_mbps;
    double need_mbps;       /* with overhead and headroom */
    double streams;
    double appliances;      /* 0 without a bench */
};

enum series {
    SERIES_PAYLOAD = 0,
    SERIES_NEED,
    SERIES_STREAMS,
    SERIES_APPLIANCES,
};

static double sample_value(const struct sample *s, enum series which)
{
    switch (which) {
    case SERIES_PAYLOAD:
        return s->payload_mbps;
    case SERIES_NEED:
        return s->need_mbps;
    case SERIES_STREAMS:
        return s->streams;
    case SERIES_APPLIANCES:
        return s->appliances;
    }
    return 0;
}

/* Returns an owned array of at most CTL_SIZE_PLOT_POINTS samples (*n of them), evenly spread
 * over k = 1..N and always including both ends. */
static struct sample *make_samples(const struct ctl_size_plan *plan, size_t *n)
{
    size_t total = plan->n_sites;
    size_t m = total < CTL_SIZE_PLOT_POINTS ? total : CTL_SIZE_PLOT_POINTS;
    double ovh = 1.0 + plan->overhead_pct / 100.0, hr = 1.0 + plan->headroom_pct / 100.0;
    struct sample *out = cr_xcalloc(m ? m : 1, sizeof(*out));
    double payload = 0;
    uint64_t streams = 0;
    size_t j = 0;

    for (size_t i = 0; i < total && j < m; i++) {
        size_t want =
            m < 2 ? 0 : (size_t)llround((double)j * (double)(total - 1) / (double)(m - 1));
        struct sample *s = &out[j];

        payload += plan->sites[i].up_payload_kbps;
        streams += plan->sites[i].streams;
        if (i != want)
            continue;
        s->k = i + 1;
        s->payload_mbps = payload / 1e3;
        s->need_mbps = payload * ovh * hr / 1e3;
        s->streams = (double)streams;
        if (plan->has_bench) {
            struct ctl_size_fleet f;
            ctl_size_fleet_for(&plan->bench, payload, payload * ovh, streams, plan->headroom_pct,
                               &f);
            s->appliances = (double)f.appliances;
        }
        j++;
    }
    *n = j;
    return out;
}

struct axis {
    double top;   /* the axis runs 0..top */
    double step;  /* between ticks */
};

/* 0..max rounded up to a 1-2-5 step, about five ticks; integral axes step by whole units. */
static struct axis nice_axis(double max, int integral)
{
    struct axis a;
    double raw, mag, norm;

    if (!(max > 0) || !isfinite(max))
        max = 1;
    raw = max / 5;
    mag = pow(10, floor(log10(raw)));
    norm = raw / mag;
    a.step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
    if (integral && a.step < 1)
        a.step = 1;
    a.top = ceil(max / a.step - 1e-9) * a.step;
    if (a.top < max)
        a.top += a.step;
    return a;
}

static void fmt_tick(double v, double step, char *buf, size_t cap)
{
    int decimals = step >= 1 ? 0 : (int)ceil(-log10(step) - 1e-9);
    snprintf(buf, cap, "%.*f", decimals, v);
}

/* Geometry of the drawing, in SVG user units. */
#define SVG_W 960
#define SVG_H 760
#define SVG_LEFT 90
#define SVG_RIGHT (SVG_W - 90)
#define SVG_MARKERS_MAX 60  /* draw a dot per sample when there are this few */

struct panel {
    double top, bottom;
    struct axis x, y, y2;
    int has_y2;
};

static double px(const struct panel *p, double k)
{
    return SVG_LEFT + k / p->x.top * (SVG_RIGHT - SVG_LEFT);
}

static double py(const struct panel *p, const struct axis *a, double v)
{
    return p->bottom - v / a->top * (p->bottom - p->top);
}

static void svg_frame(FILE *f, const struct panel *p, const char *title, const char *ylabel,
                      const char *y2label)
{
    char t[32];
    double mid = (p->top + p->bottom) / 2;

    fprintf(f, "<g class=\"frame\">\n");
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"15\" font-weight=\"bold\">%s</text>\n",
            SVG_LEFT, p->top - 12, title);
    /* grid and ticks */
    for (double v = 0; v <= p->y.top + p->y.step / 2; v += p->y.step) {
        double y = py(p, &p->y, v);
        fmt_tick(v, p->y.step, t, sizeof(t));
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n",
                SVG_LEFT, y, SVG_RIGHT, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", SVG_LEFT - 8,
                y + 4, t);
    }
    for (double v = 0; v <= p->x.top + p->x.step / 2; v += p->x.step) {
        double x = px(p, v);
        fmt_tick(v, p->x.step, t, sizeof(t));
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n",
                x, p->top, x, p->bottom);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x,
                p->bottom + 18, t);
    }
    if (p->has_y2) {
        for (double v = 0; v <= p->y2.top + p->y2.step / 2; v += p->y2.step) {
            fmt_tick(v, p->y2.step, t, sizeof(t));
            fprintf(f, "<text x=\"%d\" y=\"%.1f\" fill=\"#d62728\">%s</text>\n", SVG_RIGHT + 8,
                    py(p, &p->y2, v) + 4, t);
        }
        fprintf(f,
                "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#d62728\" "
                "transform=\"rotate(90 %d %.1f)\">%s</text>\n",
                SVG_W - 30, mid, SVG_W - 30, mid, y2label);
    }
    /* axes on top of the grid */
    fprintf(f,
            "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000000\"/>\n"
            "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000000\"/>\n",
            SVG_LEFT, p->bottom, SVG_RIGHT, p->bottom, SVG_LEFT, p->top, SVG_LEFT, p->bottom);
    if (p->has_y2)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#000000\"/>\n",
                SVG_RIGHT, p->top, SVG_RIGHT, p->bottom);
    fprintf(f,
            "<text x=\"%d\" y=\"%.1f\" text-anchor=\"middle\">Number of sites</text>\n"
            "<text x=\"26\" y=\"%.1f\" text-anchor=\"middle\" transform=\"rotate(-90 26 %.1f)\">"
            "%s</text>\n</g>\n",
            (SVG_LEFT + SVG_RIGHT) / 2, p->bottom + 40, mid, mid, ylabel);
}

/* One series as a polyline (a staircase when step), dots when there are few samples, and a
 * <title> giving its value at N for viewers' tooltips. */
static void svg_series(FILE *f, const struct panel *p, const struct axis *a,
                       const struct sample *s, size_t n, enum series which, const char *id,
                       const char *label, const char *unit, const char *colour, int dashed,
                       int step)
{
    fprintf(f, "<g id=\"%s\" class=\"series\">\n<title>%s: %.6g %s at %llu sites</title>\n", id,
            label, sample_value(&s[n - 1], which), unit, (unsigned long long)s[n - 1].k);
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", colour,
            dashed ? " stroke-dasharray=\"7 4\"" : "");
    for (size_t i = 0; i < n; i++) {
        double x = px(p, (double)s[i].k), y = py(p, a, sample_value(&s[i], which));
        if (step && i > 0)
            fprintf(f, "%.1f,%.1f ", x, py(p, a, sample_value(&s[i - 1], which)));
        fprintf(f, "%.1f,%.1f%s", x, y, i + 1 < n ? " " : "");
    }
    fprintf(f, "\"/>\n");
    if (n <= SVG_MARKERS_MAX)
        for (size_t i = 0; i < n; i++)
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                    px(p, (double)s[i].k), py(p, a, sample_value(&s[i], which)), colour);
    fprintf(f, "</g>\n");
}

struct legend_entry {
    const char *label;
    const char *colour;
    int dashed;
};

static void svg_legend(FILE *f, const struct panel *p, const struct legend_entry *e, size_t n)
{
    double x = SVG_LEFT + 12, y = p->top + 10, w = 330, h = 12 + 20.0 * (double)n;

    fprintf(f,
            "<g class=\"legend\">\n<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
            "fill=\"#ffffff\" fill-opacity=\"0.9\" stroke=\"#999999\"/>\n",
            x, y, w, h);
    for (size_t i = 0; i < n; i++) {
        double ly = y + 18 + 20.0 * (double)i;
        fprintf(f,
                "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                "stroke-width=\"2\"%s/>\n<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
                x + 10, ly - 4, x + 40, ly - 4, e[i].colour,
                e[i].dashed ? " stroke-dasharray=\"7 4\"" : "", x + 48, ly, e[i].label);
    }
    fprintf(f, "</g>\n");
}

int ctl_size_plot_svg(const struct ctl_size_plan *plan, FILE *f)
{
    size_t n = 0;
    struct sample *s = make_samples(plan, &n);
    struct panel down = {.top = 80, .bottom = 340}, load = {.top = 450, .bottom = 710};
    char need_label[96];
    const struct sample *last;

    if (n == 0) {
        free(s);
        return -EINVAL;
    }
    last = &s[n - 1];
    down.x = load.x = nice_axis((double)last->k, 1);
    down.y = nice_axis(last->need_mbps, 0);
    load.y = nice_axis(last->streams, 1);
    load.has_y2 = plan->has_bench;
    load.y2 = nice_axis(last->appliances + 1, 1); /* keep the staircase off the frame */
    snprintf(need_label, sizeof(need_label), "with %g%% overhead and %g%% headroom",
             plan->overhead_pct, plan->headroom_pct);

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
            "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
            "<title>camrelay sizing: %llu sites, %llu cameras, %llu streams</title>\n"
            "<desc>Central downstream and relay load against the number of sites, from "
            "camrelayctl size.</desc>\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n"
            "<text x=\"%d\" y=\"32\" text-anchor=\"middle\" font-size=\"18\">camrelay sizing: "
            "%llu sites, %llu cameras, %llu streams</text>\n",
            SVG_W, SVG_H, SVG_W, SVG_H, (unsigned long long)last->k,
            (unsigned long long)plan->cameras, (unsigned long long)plan->streams, SVG_W / 2,
            (unsigned long long)last->k, (unsigned long long)plan->cameras,
            (unsigned long long)plan->streams);

    svg_frame(f, &down, "Central downstream", "Mbit/s", NULL);
    svg_series(f, &down, &down.y, s, n, SERIES_PAYLOAD, "downstream-payload",
               "central downstream, payload", "Mbit/s", "#1f77b4", 0, 0);
    svg_series(f, &down, &down.y, s, n, SERIES_NEED, "downstream-need", need_label, "Mbit/s",
               "#ff7f0e", 1, 0);
    {
        const struct legend_entry e[] = {
            {"central downstream, payload (Mbit/s)", "#1f77b4", 0},
            {need_label, "#ff7f0e", 1},
        };
        svg_legend(f, &down, e, CR_ARRAY_SIZE(e));
    }

    svg_frame(f, &load, "Relay load", "streams", "appliances");
    svg_series(f, &load, &load.y, s, n, SERIES_STREAMS, "relay-streams", "relay streams",
               "streams", "#2ca02c", 0, 0);
    if (plan->has_bench) {
        const struct legend_entry e[] = {
            {"relay streams (left axis)", "#2ca02c", 0},
            {"relay appliances, with headroom (right axis)", "#d62728", 0},
        };
        svg_series(f, &load, &load.y2, s, n, SERIES_APPLIANCES, "relay-appliances",
                   "relay appliances", "appliances", "#d62728", 0, 1);
        svg_legend(f, &load, e, CR_ARRAY_SIZE(e));
    } else {
        const struct legend_entry e[] = {
            {"relay streams (no --bench: appliances not shown)", "#2ca02c", 0},
        };
        svg_legend(f, &load, e, CR_ARRAY_SIZE(e));
    }
    fprintf(f, "</svg>\n");
    free(s);
    return ferror(f) ? -EIO : 0;
}

/* gnuplot reads this script (with the data inline) and writes the PNG to its stdout. */
static void gnuplot_script(const struct ctl_size_plan *plan, const struct sample *s, size_t n,
                           FILE *f)
{
    fprintf(f, "set terminal png size %d,%d\nset output\n$d << EOD\n", SVG_W, SVG_H);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%llu %.6f %.6f %.0f %.0f\n", (unsigned long long)s[i].k, s[i].payload_mbps,
                s[i].need_mbps, s[i].streams, s[i].appliances);
    fprintf(f,
            "EOD\n"
            "set multiplot layout 2,1 title \"camrelay sizing: %llu sites, %llu cameras, %llu "
            "streams\"\n"
            "set grid\nset key left top box opaque\nset xlabel \"Number of sites\"\n"
            "set xrange [0:*]\nset yrange [0:*]\n"
            "set title \"Central downstream\"\nset ylabel \"Mbit/s\"\n"
            "plot $d using 1:2 with lines lw 2 lc rgb \"#1f77b4\" title \"central downstream, "
            "payload\", \\\n"
            "     $d using 1:3 with lines lw 2 dt 2 lc rgb \"#ff7f0e\" title \"with %g%% overhead "
            "and %g%% headroom\"\n"
            "set title \"Relay load\"\nset ylabel \"streams\"\n",
            (unsigned long long)s[n - 1].k, (unsigned long long)plan->cameras,
            (unsigned long long)plan->streams, plan->overhead_pct, plan->headroom_pct);
    if (plan->has_bench) {
        struct axis y2 = nice_axis(s[n - 1].appliances + 1, 1);
        fprintf(f, "set ytics nomirror\nset y2tics %g\nset y2range [0:%g]\n"
                   "set y2label \"appliances\"\n"
                   "plot $d using 1:4 with lines lw 2 lc rgb \"#2ca02c\" title \"relay streams\", "
                   "\\\n     $d using 1:5 with steps lw 2 lc rgb \"#d62728\" axes x1y2 title "
                   "\"relay appliances\"\n",
                y2.step, y2.top);
    } else {
        fprintf(f, "plot $d using 1:4 with lines lw 2 lc rgb \"#2ca02c\" title \"relay "
                   "streams\"\n");
    }
    fprintf(f, "unset multiplot\n");
}

int ctl_size_plot_png(const struct ctl_size_plan *plan, int out_fd)
{
    const char *tmp = getenv("TMPDIR");
    char script[512];
    size_t n = 0;
    struct sample *s = make_samples(plan, &n);
    FILE *f;
    pid_t pid;
    int fd, status = 0, rc = 0;

    if (n == 0) {
        free(s);
        return -EINVAL;
    }
    snprintf(script, sizeof(script), "%s/camrelay-size-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    fd = mkstemp(script);
    if (fd < 0) {
        rc = -errno;
        goto out_free_samples;
    }
    f = fdopen(fd, "w");
    if (!f) {
        rc = -errno;
        close(fd);
        goto out_unlink;
    }
    gnuplot_script(plan, s, n, f);
    if (fclose(f) != 0) {
        rc = -EIO;
        goto out_unlink;
    }
    fflush(NULL); /* nothing buffered may be written twice by the child */
    pid = fork();
    if (pid < 0) {
        rc = -errno;
        goto out_unlink;
    }
    if (pid == 0) {
        if (dup2(out_fd, STDOUT_FILENO) < 0)
            _exit(126);
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            rc = -errno;
            goto out_unlink;
        }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        rc = -ENOENT;
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        rc = -EIO;
out_unlink:
    unlink(script);
out_free_samples:
    free(s);
    return rc;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && strcasecmp(s + a - b, suffix) == 0;
}

int ctl_size_plot(const struct ctl_size_plan *plan, const char *path, FILE *err)
{
    struct stat st;
    int rc;

    if (plan->n_sites == 0) {
        fprintf(err, "camrelayctl size: --plot: the plan has no sites\n");
        return -EINVAL;
    }
    if (has_suffix(path, ".svg")) {
        FILE *f = fopen(path, "w");
        if (!f) {
            rc = -errno;
            fprintf(err, "camrelayctl size: --plot %s: %s\n", path, strerror(-rc));
            return rc;
        }
        rc = ctl_size_plot_svg(plan, f);
        if (fclose(f) != 0 && rc == 0)
            rc = -EIO;
    } else if (has_suffix(path, ".png")) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            rc = -errno;
            fprintf(err, "camrelayctl size: --plot %s: %s\n", path, strerror(-rc));
            return rc;
        }
        rc = ctl_size_plot_png(plan, fd);
        if (rc == 0 && (fstat(fd, &st) != 0 || st.st_size == 0))
            rc = -EIO;
        close(fd);
        if (rc == -ENOENT)
            fprintf(err, "camrelayctl size: --plot %s: gnuplot is not installed (apt-get install "
                         "gnuplot-nox), or write an .svg instead\n",
                    path);
    } else {
        fprintf(err, "camrelayctl size: --plot %s: the file name must end in .svg or .png\n",
                path);
        return -EINVAL;
    }
    if (rc != 0) {
        if (rc != -ENOENT)
            fprintf(err, "camrelayctl size: --plot %s: writing the plot failed (%s)\n", path,
                    strerror(-rc));
        unlink(path);
    }
    return rc;
}
