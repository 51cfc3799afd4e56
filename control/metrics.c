/* control/metrics.c — Prometheus text exposition 0.0.4 and the smoothed byte-rate sampler. */
#include "control/metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static void escape(struct ctl_text *t, const char *s, int quotes)
{
    const char *run = s;
    for (; *s; s++) {
        const char *rep = NULL;
        if (*s == '\\')
            rep = "\\\\";
        else if (*s == '\n')
            rep = "\\n";
        else if (*s == '"' && quotes)
            rep = "\\\"";
        if (!rep)
            continue;
        ctl_text_put(t, run, (size_t)(s - run));
        ctl_text_puts(t, rep);
        run = s + 1;
    }
    ctl_text_put(t, run, (size_t)(s - run));
}

void ctl_metrics_escape_label(struct ctl_text *t, const char *value)
{
    escape(t, value ? value : "", 1);
}

void ctl_metrics_family(struct ctl_text *t, const char *name, enum ctl_metric_type type,
                        const char *help)
{
    ctl_text_printf(t, "# HELP %s ", name);
    escape(t, help, 0);
    ctl_text_printf(t, "\n# TYPE %s %s\n", name, type == CTL_METRIC_COUNTER ? "counter" : "gauge");
}

static void sample_name(struct ctl_text *t, const char *name, const char *label,
                        const char *value)
{
    ctl_text_puts(t, name);
    if (!label)
        return;
    ctl_text_printf(t, "{%s=\"", label);
    ctl_metrics_escape_label(t, value);
    ctl_text_puts(t, "\"}");
}

void ctl_metrics_u64(struct ctl_text *t, const char *name, const char *label, const char *value,
                     uint64_t v)
{
    sample_name(t, name, label, value);
    ctl_text_printf(t, " %llu\n", (unsigned long long)v);
}

void ctl_metrics_f64(struct ctl_text *t, const char *name, const char *label, const char *value,
                     double v)
{
    sample_name(t, name, label, value);
    if (isnan(v))
        ctl_text_puts(t, " NaN\n");
    else if (isinf(v))
        ctl_text_puts(t, v > 0 ? " +Inf\n" : " -Inf\n");
    else
        ctl_text_printf(t, " %.15g\n", v);
}

/* ---- the rate sampler ---- */

void ctl_rate_update(struct ctl_rate *r, uint64_t now_ms, uint64_t bytes)
{
    if (!r->primed || bytes < r->last_bytes || now_ms < r->last_ms) {
        /* First sample, or a counter that restarted: nothing to take a difference from. */
        r->primed = 1;
        r->last_ms = now_ms;
        r->last_bytes = bytes;
        return;
    }
    if (now_ms == r->last_ms)
        return; /* no time passed: wait for the next sample, keep the base */
    double dt_ms = (double)(now_ms - r->last_ms);
    double inst = (double)(bytes - r->last_bytes) * 8.0 * 1000.0 / dt_ms;
    /* Exact EWMA for an irregular interval: the weight of the old value decays with the time
     * that passed, so a late sample does not count more than its interval. */
    double keep = exp(-dt_ms / (double)CTL_RATE_TAU_MS);
    r->bps = keep * r->bps + (1.0 - keep) * inst;
    if (r->bps < 0.5) /* an idle camera decays to exactly 0, not 1e-300 */
        r->bps = 0;
    r->last_ms = now_ms;
    r->last_bytes = bytes;
}

double ctl_rate_bps(const struct ctl_rate *r)
{
    return r->bps;
}
