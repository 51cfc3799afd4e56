/* camrelay-bench's results and how they are shown: a line per step, the summary table, the
 * JSON file (merged with what earlier runs put there) and the SVG plot. Main thread only. */
#ifndef CAP_CAPACITY_REPORT_H
#define CAP_CAPACITY_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "bench/capacity.h"
#include "bench/capacity_gen.h"

#define CAP_MAX_STEPS 64

/* One step of a paced ramp against one peer. */
struct cap_step {
    uint32_t streams;
    uint64_t sched, recv, late, lost, ooo; /* frames; lost = undelivered + gaps */
    double window_s, goodput_mbps, p50_ms, p99_ms, max_ms, late_pct, lag_p99_ms, lag_max_ms;
    double peer_cpu_s, peer_cpu_pct, cpu_s_per_gb, gen_cpu_pct;
    double other_cpu_pct;   /* machine CPU used by neither: other processes, softirq */
    long rss_kb;
    double rss_per_stream;  /* bytes: (RSS - RSS at start) / streams */
    uint64_t buffers_exhausted; /* relay: waits for a buffer during the window */
    int pass;               /* no frame late or lost; p99 latency and generator lag in budget */
};

struct cap_paced {
    int ran;
    char error[160];
    char path[24];          /* relay peers: the stream path its streams took (plain...) */
    uint32_t n_steps;
    /* The last step of the ramp's unbroken run of passing steps (0 = none): every load up
     * to it was held. A step that passes after one has failed does not count, since the
     * load below it was not held; max_pass_any is the largest passing step anywhere. */
    uint32_t max_streams, max_pass_any;
    struct cap_step steps[CAP_MAX_STEPS];
};

struct cap_bulk {
    int ran;
    char error[160];
    uint64_t bytes;
    double seconds, gbps, peer_cpu_pct, gen_cpu_pct, cpu_s_per_gb;
    char cipher[48];        /* TLS peers: the negotiated suite */
    char path[24];          /* relay peers: the stream path the relay took */
};

struct cap_idle {
    int ran;
    char error[160];
    uint32_t requested, tunnels;
    long rss_base_kb, rss_half_kb, rss_full_kb;
    double per_tunnel, marginal, setup_s; /* bytes, bytes, seconds */
};

struct cap_hs {
    int ran;
    char error[160];
    uint32_t concurrency;
    uint64_t logins;
    double seconds, per_s, relay_cpu_s, per_core_s, relay_cpu_pct, gen_cpu_pct;
};

struct cap_results {
    const struct cap_opts *o;
    unsigned workers;       /* relay workers / haproxy threads actually used */
    long nofile_soft0, nofile_hard0, nofile_soft, nofile_hard; /* RLIMIT_NOFILE before/after */
    const char *command;    /* the command line, for the record */
    struct cap_paced paced[CAP_N_PEERS];
    struct cap_bulk bulk[CAP_N_PEERS];
    struct cap_idle idle;
    struct cap_hs hs;
};

/* Turns a window's counts and the /proc samples into a step; sets pass. */
void cap_step_fill(struct cap_step *st, const struct cap_wstats *w, double budget_ms,
                   double window_s, double peer_cpu_s, double gen_cpu_s, double machine_cpu_s,
                   long rss_kb, long rss_base_kb);

/* The progress line of one step (header first when header is set). */
void cap_report_step(FILE *out, int peer, const struct cap_step *st, int header);

/* The final tables and the ratios of whatever ran. */
void cap_report_summary(FILE *out, const struct cap_results *r);

/* Writes the results into path as JSON, keeping the sections of other modes already there
 * (so several runs build one file), and the top-level capacity fields camrelayctl size reads.
 * Returns 0 or -1 with a message. */
int cap_report_json(const char *path, const struct cap_results *r);

/* Writes an SVG plot of the paced results: p99 added latency and CPU s/GB against streams,
 * one series per peer. Returns 0 or -1 with a message. */
int cap_report_svg(const char *path, const struct cap_results *r);

#endif
