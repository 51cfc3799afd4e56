/* The relay's data path as the control plane sees it: start/stop the io_uring worker(s),
 * tell them which cameras exist, read per-camera status. This is the one narrow interface
 * between control/ and relay/; relay/ never includes control/ headers. */
#ifndef RLY_RELAY_H
#define RLY_RELAY_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define RLY_NAME_MAX 64
#define RLY_MAX_SERVICES 4

struct rly_relay;

/* Called from a worker thread when a camera's tunnel comes up or goes down. Must not block:
 * the control plane copies what it needs and returns. */
typedef void (*rly_event_fn)(void *ctx, const char *serial, int online, const char *site_addr,
                             uint64_t bytes_relayed);

struct rly_config {
    const char *relay_name;      /* in tickets */
    const char *listen_external; /* "host:port" for agents (TLS) */
    SSL_CTX *tls;                /* server context (the relay takes its own reference) */
    uint32_t keepalive_ms;       /* ping interval on control tunnels (0 = 5000) */
    uint32_t max_conns;          /* connection slots per worker (pool sized at start) */
    uint32_t workers;            /* worker threads, one io_uring each; 0 = one per core */
    uint32_t batch_wait_us;      /* a busy worker (over 20,000 completions/s) waits up to this
                                    long for a batch of completions (fewer wake-ups, at most
                                    this much added latency); 0 = every completion at once */
    int allow_plain_data;        /* accept plaintext data connections on the external port
                                    (a framed DataHello instead of a TLS ClientHello) and
                                    splice them: for sites whose link is already private (a
                                    VPN, a private APN). Tunnels are always TLS. */
    int no_kernel_tls;           /* keep TLS data connections on our in-place record layer
                                    even where the kernel has kTLS (0: kTLS where it exists):
                                    for a kernel whose TLS offload misbehaves, and for tests of
                                    the in-place path on such kernels */
    rly_event_fn on_event;
    void *event_ctx;
};

struct rly_endpoint_spec {
    char service[16];
    int listen_fd; /* a bound, listening, non-blocking socket; consumed by rly_relay_camera_put */
    uint16_t port;
};

struct rly_camera_spec {
    char serial[RLY_NAME_MAX];
    uint8_t salt[16];
    uint32_t iterations;
    uint8_t stored_key[32];
    unsigned n_endpoints;
    struct rly_endpoint_spec endpoints[RLY_MAX_SERVICES];
};

struct rly_camera_status {
    int online;
    char site_addr[RLY_NAME_MAX];
    int64_t last_seen_unix;
    uint64_t bytes_relayed; /* both directions, streams of this camera, since start */
    uint32_t open_streams;
    const char *data_path;  /* how its latest stream moved (rly_path_name), or before any
                               stream the path a TLS stream would take (static string) */
};

/* Starts the worker thread(s) listening on cfg->listen_external. Returns 0 or -errno with a
 * logged reason. Call from the main thread. */
int rly_relay_start(const struct rly_config *cfg, struct rly_relay **out);

/* Port the external listener is bound to (useful with port 0). */
uint16_t rly_relay_external_port(struct rly_relay *relay);

/* Stops the workers, closes every connection and listener, frees the relay. */
void rly_relay_stop(struct rly_relay *relay);

/* Replaces the server context for connections accepted from now on (a reload with a renewed
 * certificate); connections already open keep theirs. Takes its own reference on tls (the
 * caller keeps its own) and drops the one on the context it replaces, which lives on until its
 * last connection is gone. Any thread. */
void rly_relay_set_tls(struct rly_relay *relay, SSL_CTX *tls);

/* Sets the ping interval (ms, 0 = 5000) for tunnels that come up from now on; live tunnels
 * keep the interval they were told in their welcome. Any thread. */
void rly_relay_set_keepalive(struct rly_relay *relay, uint32_t keepalive_ms);

/* Sets the key the dispatcher signs this relay's tickets with (32 bytes). Any thread. */
void rly_relay_set_ticket_key(struct rly_relay *relay, const uint8_t key[32]);

/* Adds a camera or replaces its verifier; its endpoint listeners start accepting recorder
 * connections. The spec's listen fds are consumed on every path (a replaced camera keeps its
 * old listeners and the new fds are closed). Asynchronous, like rly_relay_camera_del: the
 * camera's worker applies it shortly, and until then rly_relay_camera_status says -ENOENT.
 * Any thread; returns 0 or -errno. */
int rly_relay_camera_put(struct rly_relay *relay, struct rly_camera_spec *spec);

/* Declares the camera table complete (every registered camera has been put). Until then a
 * tunnel for an unknown serial is told to retry shortly rather than that the camera is not
 * registered: at start-up the registry is still being loaded. Any thread. */
void rly_relay_set_ready(struct rly_relay *relay);

/* Removes a camera: its tunnel, streams and endpoint listeners are closed (asynchronously,
 * in order after any earlier put). Returns 0 or -EINVAL. Any thread. */
int rly_relay_camera_del(struct rly_relay *relay, const char *serial);

/* Copies a camera's live status. Returns 0 or -ENOENT. Any thread. */
int rly_relay_camera_status(struct rly_relay *relay, const char *serial,
                            struct rly_camera_status *out);

/* Calls fn for every camera the data path knows, with its live status (as
 * rly_relay_camera_status), under the relay's lock: fn must be quick and must not call back
 * into the relay. One pass over the camera tables instead of a look-up per camera, for a
 * control plane that samples every camera each second. Returns how many cameras were seen.
 * Any thread. */
typedef void (*rly_camera_fn)(void *ctx, const char *serial, const struct rly_camera_status *st);
unsigned rly_relay_camera_foreach(struct rly_relay *relay, rly_camera_fn fn, void *ctx);

/* Relay-wide counters for status output and tests. */
struct rly_counters {
    uint64_t tunnels_accepted, tunnels_refused, handshake_failures, data_conns_refused;
    uint64_t streams_opened, streams_closed, bytes_relayed, frames_rejected;
    uint64_t handovers; /* connections moved to their camera's worker after the hello */
    uint64_t buffers_exhausted; /* times a connection waited for a buffer (backpressure) */
    uint64_t streams_by_path[4]; /* streams opened, by rly_path_name(i) */
    /* Plaintext streams, camera -> recorder: reads through the receive ring, copied on with
     * one send (bursts that fit a ring buffer: camera frames), and splice reads (bigger
     * bursts, up to 64 KiB each). */
    uint64_t plain_reads_copied, plain_reads_spliced;
};
#define RLY_PATHS 4

/* A stream path's name: "tls-bio" (BoringSSL's record layer, the fallback), "tls-inplace"
 * (our record layer, records opened where they were received), "ktls-splice", "plain";
 * "none" for an index out of range. Static strings. */
const char *rly_path_name(unsigned path);
void rly_relay_counters(struct rly_relay *relay, struct rly_counters *out);

/* Per-worker load, for metrics: what each io_uring worker holds and how busy it is. */
struct rly_worker_stats {
    uint32_t connections;  /* slots in use (listeners included) */
    uint32_t cameras;      /* cameras this worker owns */
    uint32_t tunnels;      /* live control tunnels */
    uint32_t streams;      /* paired streams */
    uint64_t completions;  /* CQEs handled since start */
    uint64_t busy_ns;      /* time spent handling them (the rest is waiting) */
};
unsigned rly_relay_worker_count(struct rly_relay *relay);
void rly_relay_worker_stats(struct rly_relay *relay, unsigned i, struct rly_worker_stats *out);

/* The path new TLS data connections take: "ktls-splice" where the kernel has the TLS ULP,
 * else "tls-inplace" (static string). */
const char *rly_relay_data_path(struct rly_relay *relay);

#endif
