/* control/metrics.h — Prometheus text exposition (format 0.0.4) and the smoothed byte-rate
 * sampler behind the per-camera bitrate. */
#ifndef CTL_METRICS_H
#define CTL_METRICS_H

#include <stdint.h>

#include "control/http.h"

enum ctl_metric_type {
    CTL_METRIC_GAUGE = 0,
    CTL_METRIC_COUNTER,
};

/*
 * Writes a family's "# HELP name help" and "# TYPE name gauge|counter" lines. Call once per
 * family, before its samples. help is escaped as the format wants (backslash, newline).
 */
void ctl_metrics_family(struct ctl_text *t, const char *name, enum ctl_metric_type type,
                        const char *help);

/*
 * Writes one sample: `name v`, or `name{label="value"} v` when label is non-NULL. The label
 * value is escaped (backslash, double quote, newline), so any string is safe there.
 */
void ctl_metrics_u64(struct ctl_text *t, const char *name, const char *label, const char *value,
                     uint64_t v);
/* As ctl_metrics_u64 with a floating-point value (NaN, +Inf and -Inf spelled as the format
 * wants). */
void ctl_metrics_f64(struct ctl_text *t, const char *name, const char *label, const char *value,
                     double v);

/* Appends value escaped for a label value (without the surrounding quotes). */
void ctl_metrics_escape_label(struct ctl_text *t, const char *value);

/*
 * A byte counter's smoothed rate: fed the counter's value every second or so, it keeps an
 * exponentially weighted moving average of the rate with time constant CTL_RATE_TAU_MS (a
 * step in traffic shows 63 % after one time constant, whatever the sampling interval). The
 * first sample only primes it; a counter that goes backwards (the camera was removed and
 * registered again) primes it again and keeps the last rate. All-zero is a valid, unprimed
 * sampler. Not thread-safe: the caller serialises updates and reads.
 */
#define CTL_RATE_TAU_MS 5000

struct ctl_rate {
    uint64_t last_ms;    /* time of the last sample (any monotonic millisecond clock) */
    uint64_t last_bytes; /* counter value at that time */
    double bps;          /* smoothed rate, bits per second */
    int primed;          /* a first sample has been seen */
};

void ctl_rate_update(struct ctl_rate *r, uint64_t now_ms, uint64_t bytes);

/* The smoothed rate in bits per second (0 until two samples were seen; below 0.5 it is 0). */
double ctl_rate_bps(const struct ctl_rate *r);

#endif
