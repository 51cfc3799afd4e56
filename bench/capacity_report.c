/* camrelay-bench's results: step lines, summary tables, JSON and SVG (capacity_report.h). */
#include "bench/capacity_report.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "common/util.h"

const char *const cap_mode_names[CAP_N_MODES] = {"paced", "bulk", "idle", "handshakes"};
const char *const cap_peer_names[CAP_N_PEERS] = {"camrelay", "direct", "haproxy", "haproxy-tls",
                                                 "camrelay-plain"};
static const char *const peer_colors[CAP_N_PEERS] = {"#d62728", "#7f7f7f", "#1f77b4", "#2ca02c",
                                                     "#ff7f0e"};

/* The ratios: each relay peer against the peers it is fairly compared with, as "other / relay".
 * camrelay (TLS data connections) against every other peer, haproxy-tls being its like;
 * camrelay-plain (plaintext, spliced) against the plaintext ones, haproxy (spliced TCP) being
 * its like and direct the floor. */
static const struct baseline {
    int peer;
    const char *json_key;
} baselines[] = {
    {CAP_CAMRELAY, "ratios_vs_camrelay"},
    {CAP_CAMRELAY_PLAIN, "ratios_vs_camrelay_plain"},
};

static int compared_with(const struct baseline *b, int p)
{
    if (p == b->peer)
        return 0;
    return b->peer == CAP_CAMRELAY || (cap_peer_is_plain(p) && !cap_peer_is_relay(p));
}

double cap_hist_pct(const uint32_t *hist, uint64_t total, double q)
{
    uint64_t want = (uint64_t)ceil(q * (double)total), acc = 0;
    for (unsigned i = 0; total && i < CAP_HBINS; i++) {
        if ((acc += hist[i]) < want)
            continue;
        if (i < 64)
            return i / 1000.0;
        unsigned b = (i - 64) / 32 + 6, s = (i - 64) % 32;
        return (double)((uint64_t)(32 + s) << (b - 5)) * 1.015 / 1000.0; /* bin middle */
    }
    return 0;
}

void cap_step_fill(struct cap_step *st, const struct cap_wstats *w, double budget_ms,
                   double window_s, double peer_cpu_s, double gen_cpu_s, double machine_cpu_s,
                   long rss_kb, long rss_base_kb)
{
    uint64_t undelivered = w->sched > w->recv ? w->sched - w->recv : 0;
    st->sched = w->sched;
    st->recv = w->recv;
    st->lost = undelivered; /* includes frames dropped at the camera (src_drop) */
    st->late = w->late + undelivered;
    st->ooo = w->ooo;
    st->window_s = window_s;
    st->goodput_mbps = (double)w->bytes * 8.0 / window_s / 1e6;
    st->p50_ms = cap_hist_pct(w->hist, w->recv, 0.50);
    st->p99_ms = cap_hist_pct(w->hist, w->recv, 0.99);
    st->max_ms = (double)w->max_us / 1000.0;
    st->late_pct = w->sched ? 100.0 * (double)st->late / (double)w->sched : 0;
    st->lag_p99_ms = cap_hist_pct(w->lag, w->sched, 0.99);
    st->lag_max_ms = (double)w->lag_max_us / 1000.0;
    st->peer_cpu_s = peer_cpu_s;
    st->peer_cpu_pct = 100.0 * peer_cpu_s / window_s;
    st->cpu_s_per_gb = w->bytes ? peer_cpu_s / ((double)w->bytes / 1e9) : NAN;
    st->gen_cpu_pct = 100.0 * gen_cpu_s / window_s;
    st->other_cpu_pct = fmax(0, 100.0 * (machine_cpu_s - peer_cpu_s - gen_cpu_s) / window_s);
    st->rss_kb = rss_kb;
    st->rss_per_stream = st->streams && isfinite(peer_cpu_s)
                             ? (double)(rss_kb - rss_base_kb) * 1024.0 / st->streams
                             : NAN; /* NAN: no peer process (direct) */
    /* A step counts only if the generator offered its load on time (lag within budget). */
    st->pass = w->sched > 0 && st->late == 0 && st->lost == 0 && st->ooo == 0 &&
               st->p99_ms <= budget_ms && st->lag_p99_ms <= budget_ms;
}

void cap_report_step(FILE *out, int peer, const struct cap_step *st, int header)
{
    if (header)
        fprintf(out, "%-14s %7s %8s %7s %7s %8s %6s %6s %6s %8s %8s %6s %7s %6s\n", "peer",
                "streams", "Mbit/s", "p50 ms", "p99 ms", "max ms", "late%", "lost", "CPU%",
                "CPU s/GB", "RSS/str", "gen%", "lag99ms", "other%");
    char cpu[16] = "-", per_gb[16] = "-", rss[16] = "-";
    if (isfinite(st->peer_cpu_pct)) {
        snprintf(cpu, sizeof(cpu), "%.1f", st->peer_cpu_pct);
        snprintf(per_gb, sizeof(per_gb), "%.3f", st->cpu_s_per_gb);
        snprintf(rss, sizeof(rss), "%.1fK", st->rss_per_stream / 1024.0);
    }
    fprintf(out, "%-14s %7u %8.1f %7.2f %7.2f %8.1f %6.2f %6llu %6s %8s %8s %6.1f %7.2f %6.1f %s\n",
            cap_peer_names[peer], st->streams, st->goodput_mbps, st->p50_ms, st->p99_ms,
            st->max_ms, st->late_pct, (unsigned long long)st->lost, cpu, per_gb, rss,
            st->gen_cpu_pct, st->lag_p99_ms, st->other_cpu_pct, st->pass ? "ok" : "OVER");
    fflush(out);
}

static const struct cap_step *step_at(const struct cap_paced *p, uint32_t streams)
{
    for (uint32_t i = 0; i < p->n_steps; i++)
        if (p->steps[i].streams == streams)
            return &p->steps[i];
    return NULL;
}

/* The largest step both peers ran (0 if none). */
static uint32_t common_step(const struct cap_paced *a, const struct cap_paced *b)
{
    uint32_t best = 0;
    for (uint32_t i = 0; i < a->n_steps; i++)
        if (step_at(b, a->steps[i].streams) && a->steps[i].streams > best)
            best = a->steps[i].streams;
    return best;
}

/* Why the ramp's result is what it is: its last step passed (a lower bound), or a step failed
 * (and whether a later one passed again). Returns buf. */
static const char *limited_by(const struct cap_opts *o, const struct cap_paced *pr, char *buf,
                              size_t len)
{
    if (pr->n_steps && pr->steps[pr->n_steps - 1].pass && pr->max_streams == o->ramp_max)
        snprintf(buf, len, "ramp max: not saturated, a lower bound");
    else if (pr->max_pass_any > pr->max_streams)
        snprintf(buf, len, "latency budget or lost frames in the next step (a later step, %u, "
                 "passed again)", pr->max_pass_any);
    else
        snprintf(buf, len, "%s", pr->max_streams ? "latency budget or lost frames in the next step"
                                                 : "latency budget");
    return buf;
}

void cap_report_summary(FILE *out, const struct cap_results *r)
{
    const struct cap_opts *o = r->o;
    int any = 0;
    for (int p = 0; p < CAP_N_PEERS; p++)
        any |= r->paced[p].ran;
    if (any) {
        fprintf(out, "\n== paced: %.0f kbit/s per stream, %u fps, p99 budget %.0f ms, "
                "%.0f s steps, %u relay workers / haproxy threads ==\n", o->kbps, o->fps,
                o->budget_ms, o->seconds, r->workers);
        fprintf(out, "%-14s %11s %8s %7s %6s %6s %9s %9s %-12s  %s\n", "peer", "max streams",
                "Mbit/s", "p99 ms", "late%", "CPU%", "CPU s/GB", "RSS/str", "path",
                "limited by");
        for (int p = 0; p < CAP_N_PEERS; p++) {
            const struct cap_paced *pr = &r->paced[p];
            const struct cap_step *b = pr->max_streams ? step_at(pr, pr->max_streams) : NULL;
            if (!pr->ran)
                continue;
            if (!b) {
                fprintf(out, "%-14s %11u  no step within budget%s%s\n", cap_peer_names[p], 0,
                        pr->error[0] ? ": " : "", pr->error);
                continue;
            }
            char cpu[16] = "-", per_gb[16] = "-", rss[16] = "-", why[128];
            if (isfinite(b->peer_cpu_pct)) {
                snprintf(cpu, sizeof(cpu), "%.1f", b->peer_cpu_pct);
                snprintf(per_gb, sizeof(per_gb), "%.3f", b->cpu_s_per_gb);
                snprintf(rss, sizeof(rss), "%.1fK", b->rss_per_stream / 1024.0);
            }
            fprintf(out, "%-14s %11u %8.1f %7.2f %6.2f %6s %9s %9s %-12s  %s\n",
                    cap_peer_names[p], pr->max_streams, b->goodput_mbps, b->p99_ms, b->late_pct,
                    cpu, per_gb, rss, pr->path[0] ? pr->path : "-",
                    pr->error[0] ? pr->error : limited_by(o, pr, why, sizeof(why)));
        }
        for (size_t k = 0; k < CR_ARRAY_SIZE(baselines); k++) {
            const struct baseline *bl = &baselines[k];
            const struct cap_paced *cam = &r->paced[bl->peer];
            for (int p = 0; cam->ran && p < CAP_N_PEERS; p++) {
                uint32_t n = compared_with(bl, p) && r->paced[p].ran
                                 ? common_step(cam, &r->paced[p])
                                 : 0;
                if (!n)
                    continue;
                const struct cap_step *a = step_at(cam, n), *b = step_at(&r->paced[p], n);
                if (p == CAP_DIRECT) /* no process in the middle: only latency compares */
                    fprintf(out, "ratio at %u streams, direct / %s: p99 %.2fx\n", n,
                            cap_peer_names[bl->peer], b->p99_ms / a->p99_ms);
                else
                    fprintf(out, "ratio at %u streams, %s / %s: CPU s/GB %.2fx, p99 %.2fx, "
                            "RSS/stream %.2fx\n", n, cap_peer_names[p], cap_peer_names[bl->peer],
                            b->cpu_s_per_gb / a->cpu_s_per_gb, b->p99_ms / a->p99_ms,
                            b->rss_per_stream / a->rss_per_stream);
            }
        }
    }
    any = 0;
    for (int p = 0; p < CAP_N_PEERS; p++)
        any |= r->bulk[p].ran;
    if (any) {
        fprintf(out, "\n== bulk: one stream as fast as it goes, %.0f s ==\n", o->seconds);
        fprintf(out, "%-14s %8s %9s %9s %9s  %-12s %s\n", "peer", "Gbit/s", "peer CPU%",
                "CPU s/GB", "gen CPU%", "path", "TLS");
        for (int p = 0; p < CAP_N_PEERS; p++) {
            const struct cap_bulk *b = &r->bulk[p];
            if (b->ran && !b->error[0] && isfinite(b->peer_cpu_pct))
                fprintf(out, "%-14s %8.2f %9.1f %9.3f %9.1f  %-12s %s\n", cap_peer_names[p],
                        b->gbps, b->peer_cpu_pct, b->cpu_s_per_gb, b->gen_cpu_pct,
                        b->path[0] ? b->path : "-", b->cipher[0] ? b->cipher : "-");
            else if (b->ran && !b->error[0])
                fprintf(out, "%-14s %8.2f %9s %9s %9.1f  %-12s -\n", cap_peer_names[p], b->gbps,
                        "-", "-", b->gen_cpu_pct, "-");
            else if (b->ran)
                fprintf(out, "%-14s failed: %s\n", cap_peer_names[p], b->error);
        }
        for (size_t k = 0; k < CR_ARRAY_SIZE(baselines); k++) {
            const struct baseline *bl = &baselines[k];
            const struct cap_bulk *a = &r->bulk[bl->peer];
            for (int p = 0; a->ran && a->gbps > 0 && p < CAP_N_PEERS; p++) {
                const struct cap_bulk *b = &r->bulk[p];
                if (!compared_with(bl, p) || !b->ran || b->gbps <= 0)
                    continue;
                fprintf(out, "ratio %s / %s: Gbit/s %.2fx", cap_peer_names[p],
                        cap_peer_names[bl->peer], b->gbps / a->gbps);
                if (p != CAP_DIRECT)
                    fprintf(out, ", CPU s/GB %.2fx", b->cpu_s_per_gb / a->cpu_s_per_gb);
                fputc('\n', out);
            }
        }
    }
    if (r->idle.ran) {
        const struct cap_idle *d = &r->idle;
        fprintf(out, "\n== idle: logged-in control tunnels ==\n");
        if (d->error[0])
            fprintf(out, "failed: %s\n", d->error);
        fprintf(out, "tunnels %u (asked %u; RLIMIT_NOFILE %ld/%ld), set up in %.1f s (%.0f/s)\n"
                "relay RSS %.1f MiB at start, %.1f MiB at %u, %.1f MiB at %u\n"
                "RSS per tunnel %.2f KiB (average), %.2f KiB (marginal, second half)\n",
                d->tunnels, d->requested, r->nofile_soft, r->nofile_hard, d->setup_s,
                d->setup_s > 0 ? d->tunnels / d->setup_s : 0, d->rss_base_kb / 1024.0,
                d->rss_half_kb / 1024.0, d->tunnels / 2, d->rss_full_kb / 1024.0, d->tunnels,
                d->per_tunnel / 1024.0, d->marginal / 1024.0);
    }
    if (r->hs.ran) {
        const struct cap_hs *h = &r->hs;
        fprintf(out, "\n== handshakes: TLS 1.3 handshake + login, %u in parallel, %.0f s ==\n",
                h->concurrency, h->seconds);
        if (h->error[0])
            fprintf(out, "failed: %s\n", h->error);
        fprintf(out, "%.0f logins/s; relay CPU %.1f%% -> %.0f logins per relay core-second; "
                "generator CPU %.1f%%\n", h->per_s, h->relay_cpu_pct, h->per_core_s,
                h->gen_cpu_pct);
    }
    fflush(out);
}

/* ---- JSON ---------------------------------------------------------------------------------- */

static json_t *jnum(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static json_t *jint(uint64_t x)
{
    return json_integer((json_int_t)x);
}

/* A byte count measured as a double (an average): a whole number, null when unknown. */
static json_t *jbytes(double x)
{
    return isfinite(x) ? json_integer((json_int_t)llround(x)) : json_null();
}

/* The machine description; note (NULL: keep the one in old, if any) says what else ran. */
static json_t *machine_json(const char *note, json_t *old)
{
    char line[512], model[256] = "unknown";
    long mem_kb = 0;
    struct utsname u;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            snprintf(model, sizeof(model), "%s", colon + 2);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    }
    if (f)
        fclose(f);
    if ((f = fopen("/proc/meminfo", "r"))) {
        if (fgets(line, sizeof(line), f) && strncmp(line, "MemTotal:", 9) == 0)
            mem_kb = atol(line + 9);
        fclose(f);
    }
    uname(&u);
    json_t *m = json_object();
    json_object_set_new(m, "cores", jint((uint64_t)sysconf(_SC_NPROCESSORS_ONLN)));
    json_object_set_new(m, "model", json_string(model));
    json_object_set_new(m, "kernel", json_string(u.release));
    json_object_set_new(m, "mem_total_bytes", jint((uint64_t)mem_kb * 1024));
    if (note)
        json_object_set_new(m, "note", json_string(note));
    else if (json_object_get(old, "note"))
        json_object_set(m, "note", json_object_get(old, "note"));
    return m;
}

static json_t *step_json(const struct cap_step *s)
{
    json_t *j = json_object();
    json_object_set_new(j, "streams", jint(s->streams));
    json_object_set_new(j, "window_s", jnum(s->window_s));
    json_object_set_new(j, "frames_due", jint(s->sched));
    json_object_set_new(j, "frames_received", jint(s->recv));
    json_object_set_new(j, "frames_late", jint(s->late));
    json_object_set_new(j, "frames_lost", jint(s->lost));
    json_object_set_new(j, "frames_out_of_order", jint(s->ooo));
    json_object_set_new(j, "late_pct", jnum(s->late_pct));
    json_object_set_new(j, "goodput_mbps", jnum(s->goodput_mbps));
    json_object_set_new(j, "latency_p50_ms", jnum(s->p50_ms));
    json_object_set_new(j, "latency_p99_ms", jnum(s->p99_ms));
    json_object_set_new(j, "latency_max_ms", jnum(s->max_ms));
    json_object_set_new(j, "generator_lag_p99_ms", jnum(s->lag_p99_ms));
    json_object_set_new(j, "generator_lag_max_ms", jnum(s->lag_max_ms));
    json_object_set_new(j, "peer_cpu_s", jnum(s->peer_cpu_s));
    json_object_set_new(j, "peer_cpu_pct", jnum(s->peer_cpu_pct));
    json_object_set_new(j, "cpu_s_per_gb", jnum(s->cpu_s_per_gb));
    json_object_set_new(j, "generator_cpu_pct", jnum(s->gen_cpu_pct));
    json_object_set_new(j, "other_cpu_pct", jnum(s->other_cpu_pct));
    json_object_set_new(j, "peer_rss_bytes",
                        isfinite(s->peer_cpu_s) ? jint((uint64_t)s->rss_kb * 1024) : json_null());
    json_object_set_new(j, "rss_per_stream_bytes", jbytes(s->rss_per_stream));
    json_object_set_new(j, "buffers_exhausted", jint(s->buffers_exhausted));
    json_object_set_new(j, "pass", json_boolean(s->pass));
    return j;
}

static json_t *paced_json(const struct cap_results *r)
{
    const struct cap_opts *o = r->o;
    json_t *j = json_object(), *cfg = json_object(), *peers = json_object();
    json_object_set_new(cfg, "stream_kbps", jnum(o->kbps));
    json_object_set_new(cfg, "fps", jint(o->fps));
    json_object_set_new(cfg, "frame_bytes", jint((uint64_t)(o->kbps * 1000.0 / 8.0 / o->fps)));
    json_object_set_new(cfg, "step_seconds", jnum(o->seconds));
    json_object_set_new(cfg, "latency_budget_ms", jnum(o->budget_ms));
    json_object_set_new(cfg, "ramp", json_pack("[III]", (json_int_t)o->ramp_start,
                                               (json_int_t)o->ramp_step, (json_int_t)o->ramp_max));
    json_object_set_new(cfg, "workers", jint(r->workers));
    json_object_set_new(cfg, "relay_batch_wait_us", jint(o->batch_wait_us));
    json_object_set_new(cfg, "generator_threads", jint(o->gen_threads));
    json_object_set_new(j, "config", cfg);
    for (int p = 0; p < CAP_N_PEERS; p++) {
        const struct cap_paced *pr = &r->paced[p];
        if (!pr->ran)
            continue;
        json_t *pj = json_object(), *steps = json_array();
        const struct cap_step *best = pr->max_streams ? step_at(pr, pr->max_streams) : NULL;
        for (uint32_t i = 0; i < pr->n_steps; i++)
            json_array_append_new(steps, step_json(&pr->steps[i]));
        json_object_set_new(pj, "max_streams", jint(pr->max_streams));
        json_object_set_new(pj, "cpu_s_per_gb_at_max",
                            best ? jnum(best->cpu_s_per_gb) : json_null());
        json_object_set_new(pj, "rss_per_stream_bytes_at_max",
                            best ? jbytes(best->rss_per_stream) : json_null());
        char why[128];
        json_object_set_new(pj, "max_passing_step", jint(pr->max_pass_any));
        json_object_set_new(pj, "limited_by", json_string(limited_by(o, pr, why, sizeof(why))));
        json_object_set_new(pj, "relay_stream_path",
                            pr->path[0] ? json_string(pr->path) : json_null());
        json_object_set_new(pj, "error", pr->error[0] ? json_string(pr->error) : json_null());
        json_object_set_new(pj, "steps", steps);
        json_object_set_new(peers, cap_peer_names[p], pj);
    }
    json_object_set_new(j, "peers", peers);
    for (size_t k = 0; k < CR_ARRAY_SIZE(baselines); k++) {
        const struct baseline *bl = &baselines[k];
        const struct cap_paced *base = &r->paced[bl->peer];
        json_t *ratios = json_object();
        for (int p = 0; base->ran && p < CAP_N_PEERS; p++) {
            uint32_t n = compared_with(bl, p) && r->paced[p].ran
                             ? common_step(base, &r->paced[p])
                             : 0;
            if (!n)
                continue;
            const struct cap_step *a = step_at(base, n), *b = step_at(&r->paced[p], n);
            /* direct has no process in the middle: its CPU and RSS are NaN, null here */
            json_object_set_new(ratios, cap_peer_names[p],
                                json_pack("{sIsososo}", "streams", (json_int_t)n, "cpu_s_per_gb",
                                          jnum(b->cpu_s_per_gb / a->cpu_s_per_gb), "latency_p99",
                                          jnum(b->p99_ms / a->p99_ms), "rss_per_stream",
                                          jnum(b->rss_per_stream / a->rss_per_stream)));
        }
        json_object_set_new(j, bl->json_key, ratios);
    }
    return j;
}

static json_t *bulk_json(const struct cap_results *r)
{
    json_t *j = json_object(), *peers = json_object();
    json_object_set_new(j, "seconds", jnum(r->o->seconds));
    for (int p = 0; p < CAP_N_PEERS; p++) {
        const struct cap_bulk *b = &r->bulk[p];
        if (!b->ran)
            continue;
        json_object_set_new(peers, cap_peer_names[p],
                            json_pack("{sosososososIsososo}", "gbps", jnum(b->gbps), "window_s",
                                      jnum(b->seconds), "peer_cpu_pct", jnum(b->peer_cpu_pct),
                                      "cpu_s_per_gb", jnum(b->cpu_s_per_gb), "generator_cpu_pct",
                                      jnum(b->gen_cpu_pct), "bytes", (json_int_t)b->bytes,
                                      "tls", b->cipher[0] ? json_string(b->cipher) : json_null(),
                                      "relay_stream_path",
                                      b->path[0] ? json_string(b->path) : json_null(),
                                      "error", b->error[0] ? json_string(b->error) : json_null()));
    }
    json_object_set_new(j, "peers", peers);
    for (size_t k = 0; k < CR_ARRAY_SIZE(baselines); k++) {
        const struct baseline *bl = &baselines[k];
        const struct cap_bulk *a = &r->bulk[bl->peer];
        json_t *ratios = json_object();
        for (int p = 0; a->ran && a->gbps > 0 && p < CAP_N_PEERS; p++) {
            const struct cap_bulk *b = &r->bulk[p];
            if (compared_with(bl, p) && b->ran && b->gbps > 0)
                json_object_set_new(ratios, cap_peer_names[p],
                                    json_pack("{soso}", "gbps", jnum(b->gbps / a->gbps),
                                              "cpu_s_per_gb",
                                              jnum(b->cpu_s_per_gb / a->cpu_s_per_gb)));
        }
        json_object_set_new(j, bl->json_key, ratios);
    }
    return j;
}

static json_t *idle_json(const struct cap_results *r)
{
    const struct cap_idle *d = &r->idle;
    return json_pack("{sIsIsIsIsIsososososo}", "tunnels_requested", (json_int_t)d->requested,
                     "tunnels", (json_int_t)d->tunnels, "rss_base_bytes",
                     (json_int_t)d->rss_base_kb * 1024, "rss_half_bytes",
                     (json_int_t)d->rss_half_kb * 1024, "rss_full_bytes",
                     (json_int_t)d->rss_full_kb * 1024, "rss_per_tunnel_bytes",
                     jbytes(d->per_tunnel), "rss_per_tunnel_marginal_bytes",
                     jbytes(d->marginal), "setup_seconds", jnum(d->setup_s), "rlimit_nofile",
                     json_pack("{sIsIsIsI}", "soft_before", (json_int_t)r->nofile_soft0,
                               "hard_before", (json_int_t)r->nofile_hard0, "soft",
                               (json_int_t)r->nofile_soft, "hard", (json_int_t)r->nofile_hard),
                     "error", d->error[0] ? json_string(d->error) : json_null());
}

static json_t *hs_json(const struct cap_results *r)
{
    const struct cap_hs *h = &r->hs;
    return json_pack("{sIsIsososososososo}", "concurrency", (json_int_t)h->concurrency, "logins",
                     (json_int_t)h->logins, "seconds", jnum(h->seconds), "logins_per_s",
                     jnum(h->per_s), "relay_cpu_s", jnum(h->relay_cpu_s), "relay_cpu_pct",
                     jnum(h->relay_cpu_pct), "logins_per_relay_core_s", jnum(h->per_core_s),
                     "generator_cpu_pct", jnum(h->gen_cpu_pct), "error",
                     h->error[0] ? json_string(h->error) : json_null());
}

/* The fields camrelayctl size reads, from the camrelay paced ramp (and the idle run). */
static void capacity_fields(json_t *root)
{
    json_t *paced = json_object_get(root, "paced"), *idle = json_object_get(root, "idle");
    json_t *cam = json_object_get(json_object_get(paced, "peers"), "camrelay");
    json_t *cfg = json_object_get(paced, "config"), *cap = json_object();
    json_t *stream_rss = json_object_get(cam, "rss_per_stream_bytes_at_max");
    json_t *idle_rss = json_object_get(idle, "rss_per_tunnel_bytes");
    json_t *machine = json_object_get(root, "machine");
    json_object_set(root, "cores", json_object_get(machine, "cores"));
    if (cam) {
        json_object_set(root, "max_streams", json_object_get(cam, "max_streams"));
        json_object_set(root, "stream_kbps", json_object_get(cfg, "stream_kbps"));
        json_object_set(root, "cpu_s_per_gb", json_object_get(cam, "cpu_s_per_gb_at_max"));
        json_object_set_new(cap, "peer", json_string("camrelay"));
        json_object_set(cap, "max_streams", json_object_get(cam, "max_streams"));
        json_object_set(cap, "stream_kbps", json_object_get(cfg, "stream_kbps"));
        json_object_set(cap, "fps", json_object_get(cfg, "fps"));
        json_object_set(cap, "latency_budget_ms", json_object_get(cfg, "latency_budget_ms"));
        json_object_set(cap, "ramp", json_object_get(cfg, "ramp"));
        json_object_set(cap, "cpu_s_per_gb", json_object_get(cam, "cpu_s_per_gb_at_max"));
        json_object_set(cap, "limited_by", json_object_get(cam, "limited_by"));
    }
    /* Sizing multiplies streams by this: a streaming camera's memory (its tunnel, data
     * connection, recorder and their buffers) when the ramp measured it, else an idle tunnel's. */
    json_t *rss = stream_rss && !json_is_null(stream_rss) ? stream_rss : idle_rss;
    if (rss && !json_is_null(rss)) {
        json_object_set(root, "rss_per_tunnel_bytes", rss);
        json_object_set(cap, "rss_per_tunnel_bytes", rss);
        json_object_set_new(cap, "rss_source", json_string(rss == stream_rss
                                                               ? "paced: per streaming camera"
                                                               : "idle: per idle tunnel"));
    }
    if (idle_rss)
        json_object_set(cap, "rss_per_idle_tunnel_bytes", idle_rss);
    json_object_set_new(root, "capacity", cap);
}

int cap_report_json(const char *path, const struct cap_results *r)
{
    char tmp[1024];
    json_error_t je;
    json_t *root = access(path, F_OK) == 0 ? json_load_file(path, 0, &je) : NULL;
    const char *tool = json_string_value(json_object_get(root, "tool"));
    if (root && (!json_is_object(root) || !tool || strcmp(tool, "camrelay-bench") != 0)) {
        fprintf(stderr, "camrelay-bench: %s is not a camrelay-bench result: replacing it\n", path);
        json_decref(root);
        root = NULL;
    }
    if (!root)
        root = json_object();
    json_object_set_new(root, "tool", json_string("camrelay-bench"));
    json_object_set_new(root, "format", json_integer(1));
    json_object_set_new(root, "machine",
                        machine_json(r->o->note, json_object_get(root, "machine")));
    int paced = 0, bulk = 0;
    for (int p = 0; p < CAP_N_PEERS; p++)
        paced |= r->paced[p].ran, bulk |= r->bulk[p].ran;
    if (paced)
        json_object_set_new(root, "paced", paced_json(r));
    if (bulk)
        json_object_set_new(root, "bulk", bulk_json(r));
    if (r->idle.ran)
        json_object_set_new(root, "idle", idle_json(r));
    if (r->hs.ran)
        json_object_set_new(root, "handshakes", hs_json(r));
    capacity_fields(root);
    json_t *runs = json_object_get(root, "runs");
    if (!json_is_array(runs)) {
        runs = json_array();
        json_object_set_new(root, "runs", runs);
    }
    json_array_append_new(runs, json_pack("{ssss}", "mode", cap_mode_names[r->o->mode], "command",
                                          r->command ? r->command : ""));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = json_dump_file(root, tmp, JSON_INDENT(2) | JSON_REAL_PRECISION(6) | JSON_SORT_KEYS);
    json_decref(root);
    if (rc < 0 || rename(tmp, path) < 0) {
        fprintf(stderr, "camrelay-bench: cannot write %s: %s\n", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---- SVG ----------------------------------------------------------------------------------- */

static double nice_step(double range)
{
    double e = pow(10, floor(log10(range / 5))), f = range / 5 / e;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * e;
}

/* A plot panel's frame and scales: x = streams (linear), y linear or log10. */
struct panel {
    double x0, y0, w, h, xmax, ymin, ymax;
    int log_y;
};

static double px(const struct panel *pn, double x)
{
    return pn->x0 + x / pn->xmax * pn->w;
}

static double py(const struct panel *pn, double y)
{
    double f = pn->log_y ? (log10(fmax(y, pn->ymin)) - log10(pn->ymin)) /
                               (log10(pn->ymax) - log10(pn->ymin))
                         : y / pn->ymax;
    return pn->y0 + pn->h - f * pn->h;
}

static double panel_value(const struct cap_step *s, int latency)
{
    return latency ? s->p99_ms : s->cpu_s_per_gb;
}

/* One panel: p99 ms on a log scale (latency) or CPU s/GB (linear), one series per peer. */
static void svg_panel(FILE *f, const struct cap_results *r, double x0, int latency, double xmax)
{
    struct panel pn = {.x0 = x0, .y0 = 60, .w = 400, .h = 300, .xmax = xmax, .ymin = 1e9,
                       .log_y = latency};
    for (int p = 0; p < CAP_N_PEERS; p++)
        for (uint32_t i = 0; r->paced[p].ran && i < r->paced[p].n_steps; i++) {
            double v = panel_value(&r->paced[p].steps[i], latency);
            if (isfinite(v) && v > pn.ymax)
                pn.ymax = v;
            if (isfinite(v) && v > 0 && v < pn.ymin)
                pn.ymin = v;
        }
    if (latency) { /* whole decades around the data and the budget */
        pn.ymin = pow(10, floor(log10(fmin(pn.ymin, r->o->budget_ms))));
        pn.ymax = pow(10, ceil(log10(fmax(pn.ymax, r->o->budget_ms) * 1.01)));
    } else {
        double step = pn.ymax > 0 ? nice_step(pn.ymax * 1.1) : 1;
        pn.ymin = 0;
        pn.ymax = pn.ymax > 0 ? ceil(pn.ymax * 1.1 / step) * step : 1;
    }
    fprintf(f, "<rect x='%.0f' y='%.0f' width='%.0f' height='%.0f' fill='none' stroke='#333'/>\n",
            pn.x0, pn.y0, pn.w, pn.h);
    for (double x = 0, xs = nice_step(xmax); x <= xmax + 1e-9; x += xs)
        fprintf(f, "<line x1='%.1f' y1='%.0f' x2='%.1f' y2='%.0f' stroke='#ddd'/>"
                "<text x='%.1f' y='%.0f' text-anchor='middle'>%.0f</text>\n",
                px(&pn, x), pn.y0, px(&pn, x), pn.y0 + pn.h, px(&pn, x), pn.y0 + pn.h + 16, x);
    double ys = latency ? 10 : nice_step(pn.ymax);
    for (double y = pn.ymin; y <= pn.ymax * 1.001; y = latency ? y * ys : y + ys)
        fprintf(f, "<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' stroke='#ddd'/>"
                "<text x='%.0f' y='%.1f' text-anchor='end'>%g</text>\n",
                pn.x0, py(&pn, y), pn.x0 + pn.w, py(&pn, y), pn.x0 - 5, py(&pn, y) + 4, y);
    if (latency)
        fprintf(f, "<line x1='%.0f' y1='%.1f' x2='%.0f' y2='%.1f' stroke='#000' "
                "stroke-dasharray='6,4'/><text x='%.0f' y='%.1f' text-anchor='end'>budget %g ms"
                "</text>\n", pn.x0, py(&pn, r->o->budget_ms), pn.x0 + pn.w,
                py(&pn, r->o->budget_ms), pn.x0 + pn.w - 4, py(&pn, r->o->budget_ms) - 4,
                r->o->budget_ms);
    fprintf(f, "<text x='%.0f' y='%.0f' text-anchor='middle' font-weight='bold'>%s</text>\n"
            "<text x='%.0f' y='%.0f' text-anchor='middle'>streams</text>\n",
            pn.x0 + pn.w / 2, pn.y0 - 12, latency ? "p99 added latency, ms (log scale)"
                                                  : "peer CPU seconds per GB relayed",
            pn.x0 + pn.w / 2, pn.y0 + pn.h + 34);
    for (int p = 0; p < CAP_N_PEERS; p++) {
        const struct cap_paced *pr = &r->paced[p];
        if (!pr->ran || !pr->n_steps)
            continue;
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='2' points='", peer_colors[p]);
        for (uint32_t i = 0; i < pr->n_steps; i++) {
            double v = panel_value(&pr->steps[i], latency);
            if (isfinite(v))
                fprintf(f, "%.1f,%.1f ", px(&pn, pr->steps[i].streams), py(&pn, v));
        }
        fprintf(f, "'/>\n");
        for (uint32_t i = 0; i < pr->n_steps; i++) {
            double v = panel_value(&pr->steps[i], latency);
            if (isfinite(v))
                fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3.5' fill='%s' stroke='%s'/>\n",
                        px(&pn, pr->steps[i].streams), py(&pn, v),
                        pr->steps[i].pass ? peer_colors[p] : "#fff", peer_colors[p]);
        }
    }
}

int cap_report_svg(const char *path, const struct cap_results *r)
{
    double xmax = 0;
    int n = 0;
    for (int p = 0; p < CAP_N_PEERS; p++)
        for (uint32_t i = 0; r->paced[p].ran && i < r->paced[p].n_steps; i++)
            xmax = fmax(xmax, r->paced[p].steps[i].streams), n++;
    if (!n) {
        fprintf(stderr, "camrelay-bench: --plot needs a paced run: no plot written\n");
        return -1;
    }
    xmax = ceil(xmax / nice_step(xmax)) * nice_step(xmax);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "camrelay-bench: cannot write %s: %s\n", path, strerror(errno));
        return -1;
    }
    fprintf(f, "<?xml version='1.0' encoding='UTF-8'?>\n<svg xmlns='http://www.w3.org/2000/svg' "
            "width='1000' height='440' font-family='sans-serif' font-size='12'>\n"
            "<rect width='1000' height='440' fill='#fff'/>\n"
            "<text x='500' y='22' text-anchor='middle' font-size='15'>camrelay-bench paced: "
            "%.0f kbit/s streams at %u fps (hollow marker: step over budget or lost frames)"
            "</text>\n", r->o->kbps, r->o->fps);
    svg_panel(f, r, 70, 1, xmax);
    svg_panel(f, r, 570, 0, xmax);
    double lx = 80;
    for (int p = 0; p < CAP_N_PEERS; p++) {
        if (!r->paced[p].ran)
            continue;
        fprintf(f, "<rect x='%.0f' y='418' width='14' height='4' fill='%s'/>"
                "<text x='%.0f' y='424'>%s</text>\n", lx, peer_colors[p], lx + 18,
                cap_peer_names[p]);
        lx += 120;
    }
    fprintf(f, "</svg>\n");
    if (fclose(f) != 0) {
        fprintf(stderr, "camrelay-bench: cannot write %s\n", path);
        return -1;
    }
    return 0;
}
