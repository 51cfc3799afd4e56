/* camrelay-bench's shared vocabulary: modes, peers, options, the clock and the latency
 * histogram. The modules: capacity_peer (the relay or haproxy in a child process),
 * capacity_gen (the load generator), capacity_report (tables, JSON, SVG); cmd/camrelay-bench.c
 * runs the modes. */
#ifndef CAP_CAPACITY_H
#define CAP_CAPACITY_H

#include <stdint.h>
#include <time.h>

#define CAP_NS 1000000000ull
#define CAP_SERIAL_FMT "BENCH%06u"
#define CAP_HBINS 1024 /* latency histogram: exact below 64 us, then 32 bins per octave (3%) */

enum cap_mode { CAP_PACED = 0, CAP_BULK, CAP_IDLE, CAP_HANDSHAKES, CAP_N_MODES };
/* camrelay-plain: the same relay with allow_plain_data, its cameras' data connections in the
 * clear (tunnels still TLS); it compares against haproxy as camrelay does against haproxy-tls.
 * New peers go at the end: the numbers are indexes of results and colours. */
enum cap_peer_kind {
    CAP_CAMRELAY = 0,
    CAP_DIRECT,
    CAP_HAPROXY,
    CAP_HAPROXY_TLS,
    CAP_CAMRELAY_PLAIN,
    CAP_N_PEERS
};

extern const char *const cap_mode_names[CAP_N_MODES];
extern const char *const cap_peer_names[CAP_N_PEERS];

struct cap_opts {
    int mode;                       /* enum cap_mode */
    unsigned peers;                 /* bit per enum cap_peer_kind */
    uint32_t ramp_start, ramp_step, ramp_max; /* --streams N is N:0:N */
    uint32_t fps, workers, gen_threads, concurrency;
    uint32_t batch_wait_us; /* the relay's rly_config.batch_wait_us, as camrelayd's default */
    double kbps, seconds, budget_ms;
    const char *json, *plot, *haproxy_cfg, *note;
    int progress;
};

/* The peer is our relay (a child driven through relay/relay.h, cameras log in over tunnels). */
static inline int cap_peer_is_relay(int peer)
{
    return peer == CAP_CAMRELAY || peer == CAP_CAMRELAY_PLAIN;
}

/* The cameras' stream bytes cross the peer in the clear (no TLS on the data connection). */
static inline int cap_peer_is_plain(int peer)
{
    return peer == CAP_DIRECT || peer == CAP_HAPROXY || peer == CAP_CAMRELAY_PLAIN;
}

static inline uint64_t cap_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * CAP_NS + (uint64_t)ts.tv_nsec;
}

static inline void cap_sleep_until(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / CAP_NS), .tv_nsec = (long)(t % CAP_NS)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
        ; /* EINTR */
}

static inline unsigned cap_hbin(uint64_t us)
{
    if (us < 64)
        return (unsigned)us;
    unsigned b = 63 - (unsigned)__builtin_clzll(us);
    unsigned i = 64 + (b - 6) * 32 + (unsigned)((us >> (b - 5)) & 31);
    return i < CAP_HBINS ? i : CAP_HBINS - 1;
}

/* The q-quantile (0..1) in milliseconds of a histogram holding total samples; 0 when empty. */
double cap_hist_pct(const uint32_t *hist, uint64_t total, double q);

#endif
