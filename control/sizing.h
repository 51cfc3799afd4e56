/* control/sizing.h — `camrelayctl size`: bandwidth and relay-appliance sizing for many sites. */
#ifndef CAMRELAY_CONTROL_SIZING_H
#define CAMRELAY_CONTROL_SIZING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * A plan is a list of sites (from flags or a CSV), each with cameras × streams × kbit/s of
 * H.264 going up its uplink, through the relay, to the recorders. ctl_size_compute() fills in
 * every derived figure; the printers only format them. docs/sizing.md has the formulas.
 *
 * Units: rates are kbit/s (1 kbit = 1000 bit) held in doubles; counts of whole things are
 * integers. "payload" is the cameras' stream bitrate; "wire" adds the protocol overhead
 * (overhead_pct); "need" adds the headroom (headroom_pct) on top of the wire figure.
 *
 * Threads: nothing here keeps global state except ctl_size_main/ctl_size_run, which use
 * getopt and so belong to the main thread of a command-line program. Any thread may use
 * the other functions on its own plan.
 */

#define CTL_SIZE_NAME_MAX 64         /* incl. NUL: site names (63 bytes of UTF-8) */
#define CTL_SIZE_LINK_MAX 64         /* incl. NUL: free-text link type ("adsl", "lte") */
#define CTL_SIZE_MAX_SITES 100000    /* rows in a CSV, or --sites */
#define CTL_SIZE_LINE_MAX 4096       /* bytes in one CSV line, excluding the line end */
#define CTL_SIZE_MAX_ERRORS 20       /* bad CSV rows reported before giving up */

#define CTL_SIZE_HEADROOM_PCT_DEFAULT 25.0
/* Protocol overhead on top of the stream payload, site → centre, rounded up from the parts
 * below (6.6%); see docs/sizing.md. --overhead replaces it (e.g. for PPPoE or IPv6). */
#define CTL_SIZE_OVERHEAD_PCT_DEFAULT 7.0
#define CTL_SIZE_OVH_TCPIP_BYTES 52  /* IPv4 20 + TCP 20 + timestamps 12, per segment */
#define CTL_SIZE_OVH_MSS 1448        /* TCP payload per segment on a 1500-byte MTU */
#define CTL_SIZE_OVH_RTP_BYTES 18    /* RTP 12 + FU-A 2 + RTSP interleaved '$' header 4 */
#define CTL_SIZE_OVH_RTP_PAYLOAD 1400 /* camera packetisation (agent's default too) */
#define CTL_SIZE_OVH_TLS_BYTES 22    /* TLS 1.3 record: header 5 + content type 1 + tag 16 */

/* A camera measured above its planned bitrate by more than this is flagged (live check). */
#define CTL_SIZE_LIVE_TOLERANCE_PCT 20.0

/* One site. Inputs first (as given), then what ctl_size_compute derives. */
struct ctl_size_site {
    char name[CTL_SIZE_NAME_MAX];
    char link[CTL_SIZE_LINK_MAX];   /* "" when not given */
    char address[CTL_SIZE_NAME_MAX]; /* the site's public IP as the relay sees it ("" = none):
                                        how --live matches cameras to sites */
    uint32_t line;                  /* CSV line number, 0 for sites made from flags */
    uint32_t cameras;
    uint32_t streams_per_camera;    /* >= 1 */
    uint32_t fps;                   /* 0 when not given; informational */
    double kbps;                    /* payload per stream */
    double uplink_kbps;             /* usable IP throughput up; meaningful if has_uplink */
    int has_uplink;

    /* derived */
    uint64_t streams;               /* cameras × streams_per_camera */
    double up_payload_kbps;         /* streams × kbps */
    double up_wire_kbps;            /* × (1 + overhead) */
    double need_kbps;               /* × (1 + headroom): what the uplink must carry */
    double short_kbps;              /* need − uplink when positive, else 0 */
};

/* The capacity benchmark's result (camrelay-bench --json), the fields sizing uses. */
struct ctl_size_bench {
    uint32_t cores;                 /* cores of the benchmarked machine */
    uint64_t max_streams;           /* streams it relayed within budget ... */
    double stream_kbps;             /* ... each of this bitrate */
    double cpu_s_per_gb;            /* CPU-seconds per 10^9 bytes relayed */
    uint64_t rss_per_tunnel_bytes;  /* meaningful if has_rss */
    int has_rss;
    char machine[160];              /* compact JSON of "machine", for display; may be "" */
};

/* Appliances a traffic figure needs, given a bench. All figures include the headroom except
 * where the name says otherwise. */
struct ctl_size_fleet {
    double load_streams;            /* streams in bench-bitrate equivalents, no headroom */
    double load_need;               /* × (1 + headroom) */
    double gb_per_s;                /* wire traffic through the relay, 10^9 bytes/s */
    double cores_need;              /* cpu_s_per_gb × gb_per_s × (1 + headroom) */
    uint64_t memory_need_bytes;     /* streams × rss_per_tunnel × (1 + headroom); 0 if unknown */
    uint64_t appliances_by_streams;
    uint64_t appliances_by_cpu;
    uint64_t appliances;            /* the larger of the two */
};

struct ctl_size_plan {
    /* inputs */
    struct ctl_size_site *sites;    /* owned; n_sites entries */
    size_t n_sites;
    int uniform;                    /* every site identical (made from flags) */
    double overhead_pct;
    double headroom_pct;
    struct ctl_size_bench bench;    /* meaningful if has_bench */
    int has_bench;

    /* derived by ctl_size_compute */
    uint64_t cameras, streams;
    uint64_t streams_need;          /* streams × (1 + headroom), rounded up */
    double central_payload_kbps, central_wire_kbps, central_need_kbps;
    size_t largest_site;            /* index of the site with the most upstream */
    size_t n_short;                 /* sites whose uplink is smaller than their need */
    size_t n_unchecked;             /* sites with no uplink figure */
    struct ctl_size_fleet fleet;    /* meaningful if has_bench */
};

/* One camera's measured bitrate, for the live comparison. */
struct ctl_size_measured {
    char site[CTL_SIZE_NAME_MAX];   /* site name as in the plan; "" = the plan's only per-camera
                                       figure (allowed when every site plans the same) */
    char camera[CTL_SIZE_NAME_MAX]; /* serial, for the message */
    double kbps;                    /* all of the camera's streams, payload */
};

/*
 * The `camrelayctl size` command. argv[0] is "size"; the rest are the flags of the usage
 * text (ctl_size_usage). Writes the report to stdout and errors to stderr. Returns the exit
 * status: 0 every site fits, 1 the plan was computed but some site's uplink is too small,
 * 2 usage error or bad input (nothing else printed to stdout). Main thread only (getopt).
 */
/* Where --live gets its measurements: fetch fills *m (owned by the caller afterwards, free())
 * with one entry per camera, site = the camera's public IP (no port). 0 or -1 after a
 * message on err. */
struct ctl_size_live_source {
    int (*fetch)(void *ctx, struct ctl_size_measured **m, size_t *n, FILE *err);
    void *ctx;
};
int ctl_size_main(int argc, char **argv, const struct ctl_size_live_source *src);

/* ctl_size_main with explicit output streams (tests). Borrows out and err. */
int ctl_size_run(int argc, char **argv, FILE *out, FILE *err);
/* The same with a --live source (NULL: --live is refused). */
int ctl_size_run_live(int argc, char **argv, FILE *out, FILE *err,
                      const struct ctl_size_live_source *src);

/* Writes the usage text. */
void ctl_size_usage(FILE *f);

/* Empty plan with the default overhead and headroom. */
void ctl_size_plan_init(struct ctl_size_plan *plan);

/* Releases what the plan owns and leaves it empty (ctl_size_plan_init state). */
void ctl_size_plan_free(struct ctl_size_plan *plan);

/* Fills plan with n_sites identical sites "site-1" … Returns 0, or -EINVAL when a figure is
 * out of the ranges in docs/sizing.md; uplink_kbps < 0 means "not given". Replaces any
 * sites the plan had. */
int ctl_size_plan_uniform(struct ctl_size_plan *plan, uint32_t n_sites, uint32_t cameras,
                          uint32_t streams_per_camera, double kbps, uint32_t fps,
                          double uplink_kbps);

/*
 * Reads a CSV of sites from in (borrowed) into plan, replacing its sites. label names the
 * input in messages ("sites.csv:14: ..."). Every bad row is reported to err (up to
 * CTL_SIZE_MAX_ERRORS) and the result is then -EINVAL with the plan left empty; -E2BIG when
 * there are more than CTL_SIZE_MAX_SITES rows; -EIO on a read error. Any bytes are safe.
 */
int ctl_size_parse_csv(FILE *in, const char *label, struct ctl_size_plan *plan, FILE *err);

/* Parses the benchmark's JSON text (len bytes, need not be NUL-terminated) into out.
 * label names it in messages. Returns 0, or -EINVAL with a message on err. */
int ctl_size_parse_bench(const char *text, size_t len, const char *label,
                         struct ctl_size_bench *out, FILE *err);

/* Reads and parses a bench JSON file (at most 1 MiB). Returns 0 or -errno with a message. */
int ctl_size_load_bench(const char *path, struct ctl_size_bench *out, FILE *err);

/* Derives every figure of the plan from its inputs. */
void ctl_size_compute(struct ctl_size_plan *plan);

/* The appliances needed for payload_kbps (wire_kbps on the wire) in `streams` streams with
 * the given headroom, on machines like the bench's. */
void ctl_size_fleet_for(const struct ctl_size_bench *bench, double payload_kbps,
                        double wire_kbps, uint64_t streams, double headroom_pct,
                        struct ctl_size_fleet *out);

/*
 * The `--live` hook: compares measured per-camera bitrates with a computed plan. A camera is
 * flagged when it sends more than CTL_SIZE_LIVE_TOLERANCE_PCT above its site's planned
 * kbps × streams_per_camera, when its site is not in the plan, or when it names no site and
 * the plan's sites do not all plan the same per camera; one line per flagged camera goes to
 * out. A measurement that is negative or not finite is reported and skipped. Then, per site,
 * the measured total (plus overhead and headroom) is checked against the site's uplink like
 * the plan was (those lines do not count). Returns the number of flagged
 * cameras, or -EINVAL on NULL arguments. Borrows everything.
 */
int ctl_size_compare_live(const struct ctl_size_plan *plan, const struct ctl_size_measured *m,
                          size_t n, FILE *out);

/* Formats a rate for people: "768 kbit/s", "2.68 Mbit/s", "1.25 Gbit/s". Returns buf. */
const char *ctl_size_fmt_rate(double kbps, char *buf, size_t cap);

/* Internal to control/sizing*.c. */
/* Copies at most cap-1 bytes of s (at most max bytes read) for a message or a table: clean
 * UTF-8 characters as they are, control characters and broken UTF-8 as '?', "..." when cut.
 * Returns buf. */
const char *ctl_size__show(const char *s, size_t max, char *buf, size_t cap);
/* "512 B", "180.0 KiB", "1.2 GiB". Returns buf. */
const char *ctl_size__fmt_bytes(double bytes, char *buf, size_t cap);

#endif
