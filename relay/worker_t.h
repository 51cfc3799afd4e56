/* Types of the relay's data path: a worker (one io_uring, its connections, its cameras), the
 * connections it owns, and the cameras. Only relay/ embeds these. */
#ifndef RLY_WORKER_T_H
#define RLY_WORKER_T_H

#include <liburing.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <openssl/ssl.h>

#include "proto/camrelay.pb-c.h"
#include "relay/relay.h"
#include "relay/tls_record.h"

/* One buffer size for everything: a TLS record carries at most 16 KiB of plaintext plus a
 * small overhead, so a buffer holds one whole record either way. */
#define RLY_BUF_SIZE (17 * 1024)
#define RLY_PLAIN_CAP (16 * 1024)
/* Receive buffers for agent connections come from a provided-buffer ring: an idle tunnel
 * holds no receive buffer while it waits, the kernel picks one when bytes arrive. */
#define RLY_RING_BUFS 256
/* Two groups of half the buffers each. Tunnels, handshakes and recorders give a buffer back
 * as soon as its bytes are copied or sealed; a stream keeps one until its bytes have been
 * sent on, so slow recorders could otherwise take every buffer from the control tunnels.
 * Streams read from their own group: when it is empty they read into a buffer of their
 * own (TLS) or splice (plaintext), and the tunnels' group is untouched. Buffer ids are
 * global: 0..127 in the first group, 128..255 in the second. */
#define RLY_RING_GROUPS 2
#define RLY_RING_GROUP_BUFS (RLY_RING_BUFS / RLY_RING_GROUPS)
#define RLY_RING_BGID 0        /* tunnels, handshakes, recorders */
#define RLY_RING_BGID_STREAM 1 /* paired streams' camera bytes */
/* A stream whose reads fill whole ring buffers (bulk, or a burst) reads into one of these
 * instead: 16 full records per recv and sendmsg rather than one. A few per worker. */
#define RLY_BIG_BUF_SIZE (1024 * 1024)
#define RLY_BIG_BUFS 16
#define RLY_PIPE_POOL 256 /* idle pipes a worker keeps for splicing bursts */
#define RLY_FRAME_MAX_EXTERNAL (16 * 1024) /* control frames from agents */
#define RLY_HANDSHAKE_TIMEOUT_MS 10000
#define RLY_HELLO_TIMEOUT_MS 10000
#define RLY_STREAM_OPEN_TIMEOUT_MS 10000
#define RLY_TICK_MS 250
#define RLY_TOKEN_LEN 32

/* A byte buffer: data lives in [off, off+len) of mem[cap]; len == 0 means empty and then
 * off is reset to 0 so appends always have the whole capacity. mem is NULL while the
 * connection needs no buffer; it comes from the worker's pool (struct rly_pool) and goes
 * back when drained, so an idle connection holds none. */
struct rly_buf {
    uint8_t *mem;
    uint32_t off, len, cap;
};

enum rly_conn_kind {
    RLY_CONN_FREE = 0,
    RLY_CONN_LISTEN_EXTERNAL, /* agents' TLS port */
    RLY_CONN_LISTEN_ENDPOINT, /* one camera service's internal port */
    RLY_CONN_AGENT,           /* accepted on the external port: TLS, tunnel or data */
    RLY_CONN_RECORDER,        /* accepted on an endpoint: plaintext */
};

enum rly_agent_state {
    RLY_AGENT_IDLE = 0,
    RLY_AGENT_HANDSHAKE, /* TLS handshake in progress */
    RLY_AGENT_HELLO,     /* waiting for TunnelHello or DataHello */
    RLY_AGENT_AUTH,      /* challenge sent, waiting for AuthProof */
    RLY_AGENT_TUNNEL,    /* authenticated control tunnel */
    RLY_AGENT_DATA,      /* paired data connection: raw bytes */
};

/* How a paired stream's bytes move between the data connection and the recorder, chosen
 * once per stream right after pairing (relay/stream.c: choose_path). */
enum rly_path {
    RLY_PATH_TLS_BIO = 0,   /* BoringSSL through memory BIOs: the fallback when the session's
                               keys cannot be taken over (bytes buffered behind the hello) */
    RLY_PATH_TLS_INPLACE,   /* our record layer: records opened in place in the buffer they
                               were received into, plaintext sent from there */
    RLY_PATH_KTLS_SPLICE,   /* the kernel's TLS (TCP_ULP "tls") and splice through pipes */
    RLY_PATH_PLAIN,         /* a plaintext data connection: frames copied through the receive
                               ring, bigger bursts spliced through pipes */
    RLY_PATH_COUNT
};

_Static_assert(RLY_PATH_COUNT == RLY_PATHS, "relay.h names every path");

#define RLY_STREAM_IOV 64 /* records sent to the recorder in one sendmsg */

/* Per-stream state of the zero-copy paths, allocated at pairing (once per stream, never per
 * I/O) and owned by the data connection. */
struct rly_stream {
    uint8_t path;           /* enum rly_path */
    uint8_t rx_eof;         /* in place: close_notify opened, half-close once sent */
    uint8_t in_kind;        /* in place: where `in` comes from (stream_inplace.c: enum in_kind) */
    uint8_t busy;           /* in place: its last read filled a ring buffer: read big next */
    uint16_t in_bid;        /* the ring buffer's id when in_kind is the ring */
    uint32_t in_cap;
    struct rly_rec tls;     /* in place: both directions' keys and sequence numbers */
    uint8_t *in;            /* in place: the buffer the camera's records were received into */
    uint8_t *sendbuf;       /* in place: a big buffer whose spans are being sent while `in`
                               receives the next ones (busy streams only) */
    uint32_t in_start, in_end; /* its unprocessed bytes */
    uint32_t sending;       /* in place: plaintext bytes of the sendmsg in flight */
    struct msghdr msg;
    struct iovec iov[RLY_STREAM_IOV];
    /* splice: a pipe per direction while bytes are in it ([0] read end, [1] write end; -1
     * when none is held) and how many bytes each holds */
    int pipe_up[2];         /* camera -> recorder */
    int pipe_down[2];       /* recorder -> camera */
    uint32_t in_pipe_up, in_pipe_down;
    uint8_t eof_up, eof_down; /* the source of that direction reached its end */
};

/* One connection slot. Hot fields first; a slot is reused with a new generation so a stale
 * completion (user_data carries index + generation) can never touch its successor. */
struct rly_conn {
    uint8_t kind;        /* enum rly_conn_kind */
    uint8_t state;       /* enum rly_agent_state for agents; 1 = paired for recorders */
    uint8_t recv_busy;   /* a recv is in flight */
    uint8_t send_busy;   /* a send is in flight */
    uint8_t closing;     /* shut down, waiting for in-flight operations before freeing */
    uint8_t close_after_flush; /* close once the pending output is sent (refusals) */
    uint8_t read_eof;    /* our side saw EOF/close_notify from this peer */
    uint8_t eof_sent;    /* we propagated the other side's EOF to this peer */
    uint8_t accept_armed;
    uint8_t starved;     /* waiting for a pool or ring buffer: retried on the next tick */
    uint8_t plain;       /* agents: a plaintext data connection (no TLS, allow_plain_data) */
    uint8_t sniffed;     /* agents: the first byte told TLS from plaintext */
    uint8_t poll_in, poll_out; /* splice: a POLLIN / POLLOUT poll is armed on fd */
    uint8_t send_iov;    /* the send in flight is the stream's sendmsg, not `out` */
    uint8_t fixed;       /* the socket is in the ring's registered files, at `slot` */
    uint32_t gen;
    int fd;
    int32_t peer;        /* paired connection index, -1 = none */
    int32_t camera;      /* camera index, -1 = none */
    uint32_t keepalive_ms; /* tunnels: the interval told in their welcome (a reload changes
                              only new tunnels') */
    uint32_t slot;       /* its registered file when fixed; fills the padding before ssl */
    SSL *ssl;            /* agents only (NULL for plaintext data connections) */
    struct rly_stream *st; /* paired data connections: the zero-copy paths' state */
    struct rly_buf out;  /* bytes to send: ciphertext (agents) or plaintext (recorders) */
    struct rly_buf frame; /* agents before pairing: decrypted control frames */
    uint64_t deadline_ms; /* handshake/hello/auth/open deadline; 0 = none */
    uint64_t last_rx_ms;  /* tunnels: last frame from the agent */
    uint64_t next_ping_ms;
    uint64_t ping_seq;
    uint64_t stream_id;  /* recorders and data connections */
    uint8_t service;     /* endpoint index within the camera (listeners and recorders) */
    uint8_t token[RLY_TOKEN_LEN]; /* recorders waiting for their data connection */
    uint8_t server_nonce[32];     /* agents in RLY_AGENT_AUTH */
    Camrelay__AuthStart *auth_start; /* owned while in RLY_AGENT_AUTH */
    int32_t next_pending; /* recorders waiting for a data connection: the camera's list */
    uint64_t bytes;       /* relayed through this connection (recorders: both directions) */
    int32_t handover_to;  /* agents: owner worker + 1 once the hello named another worker's
                             camera and a send was still in flight; 0 = none */
    Camrelay__Frame *held_hello; /* that hello, owned until the hand-over */
    uint8_t *recv_big;    /* data connections whose stream ended while a read into one of its
                             big buffers was in flight: that buffer, back to the pool once the
                             read has completed (the rest of the stream went to the recorder) */
    char addr[96];        /* peer address or endpoint name, for log lines */
};

struct rly_camera {
    char serial[RLY_NAME_MAX];
    uint8_t salt[16];
    uint32_t iterations;
    uint8_t stored_key[32];
    uint32_t gen;
    int in_use;
    int32_t tunnel;        /* conn index of the live control tunnel, -1 = offline */
    int32_t pending_head;  /* recorders waiting for a data connection */
    unsigned n_endpoints;
    char service[RLY_MAX_SERVICES][16];
    int32_t listener[RLY_MAX_SERVICES]; /* conn index of the endpoint listener */
    /* Read by the control plane under relay->lock; written by the worker under the lock. */
    char site_addr[RLY_NAME_MAX];
    int64_t last_seen_unix;
    /* Updated on every send completion without a lock; read by anyone. */
    _Atomic uint64_t bytes_relayed;
    _Atomic uint32_t open_streams;
    _Atomic uint8_t last_path; /* enum rly_path + 1 of its latest stream; 0 = none yet */
};

enum rly_cmd_kind { RLY_CMD_CAMERA_PUT = 1, RLY_CMD_CAMERA_DEL, RLY_CMD_STOP };

struct rly_cmd {
    struct rly_cmd *next;
    int kind;
    struct rly_camera_spec spec; /* PUT; DEL uses spec.serial */
};

struct rly_relay;

/* A connection moving from the worker that accepted it to the worker that owns its camera,
 * carried by an IORING_OP_MSG_RING message. Owned by the message until the target adopts it. */
struct rly_handover {
    int fd;
    int plain;
    SSL *ssl;
    Camrelay__Frame *hello;
    char addr[96];
    uint32_t leftover_len; /* plaintext that followed the hello */
    uint8_t leftover[RLY_PLAIN_CAP];
};

/* Buffers of RLY_BUF_SIZE, each allocated once and then recycled: the data path never
 * allocates per I/O, and when `limit` buffers are out it gets NULL (backpressure). */
struct rly_pool {
    void **free;
    uint32_t n_free, n_made, limit;
};

struct rly_worker {
    _Alignas(64) struct io_uring ring;
    struct io_uring_buf_ring *buf_ring[RLY_RING_GROUPS]; /* by group id */
    uint8_t *ring_bufs;    /* RLY_RING_BUFS x RLY_BUF_SIZE, both groups */
    struct rly_pool pool;
    struct rly_pool big_pool; /* RLY_BIG_BUF_SIZE buffers for busy in-place streams */
    int (*pipes)[2];          /* idle pipes lent to splicing streams per burst */
    uint32_t n_pipes;
    struct rly_relay *relay;
    struct rly_conn *conns;
    uint32_t n_conns;
    int32_t free_head;     /* free slots chained through conn->peer */
    uint32_t n_used;
    uint32_t n_fixed;      /* registered-file slots (0 until the worker's ring has its table) */
    int32_t *slot_conn;    /* by slot: the connection registered there, -1 = free */
    uint32_t *slot_free, n_slot_free; /* free slots, a stack */
    uint32_t n_slot_conns; /* slots held by connections (not listeners): a listener may take one */
    uint32_t slot_scan;    /* where the next search for such a slot starts */
    uint32_t n_unslotted;  /* endpoint listeners holding a descriptor: no slot was left */
    uint32_t promote_scan; /* where the next search for one of them starts */
    /* Written by this worker only, read by the control plane for metrics. */
    _Atomic uint32_t stat_conns, stat_cameras, stat_tunnels, stat_streams;
    _Atomic uint64_t stat_completions, stat_busy_ns;
    _Atomic uint64_t stat_plain_copied, stat_plain_spliced; /* per frame: no shared line */
    struct rly_camera *cameras;
    uint32_t n_cameras;    /* capacity */
    int external_listener; /* conn index */
    uint32_t id;
    struct rly_cmd *cmd_head, **cmd_tail; /* under relay->lock */
    int event_fd;
    uint64_t event_val;
    struct __kernel_timespec tick;
    uint64_t next_stream_id;
    int stopping;
    int batching;              /* completions come fast enough to gather them in batches */
    uint64_t tick_completions; /* stat_completions at the last tick */
    pthread_t thread;
    char scratch[RLY_PLAIN_CAP]; /* decrypt target for frames; never held across calls */
};

struct rly_relay {
    struct rly_config cfg;      /* cfg.tls and cfg.keepalive_ms are start values: see below */
    /* The server context new agent connections use, replaced by rly_relay_set_tls. The relay
     * holds its own reference; each SSL holds one too, so a replaced context lives until its
     * last connection is freed. tls_lock covers reading it plus SSL_new (per accepted
     * connection, not per I/O) against a swap freeing the old one in between. */
    pthread_mutex_t tls_lock;
    SSL_CTX *tls;
    _Atomic uint32_t keepalive_ms; /* for tunnels that come up from now on */
    struct rly_worker *workers; /* one per core; a camera belongs to one (rly__owner) */
    unsigned n_workers;
    pthread_barrier_t ready;    /* every ring exists before any worker hands over */
    pthread_mutex_t lock;       /* camera tables' structure and status strings; command queues */
    uint8_t ticket_key[32];
    _Atomic int have_ticket_key;
    int ktls;                   /* the kernel has the TLS ULP (probed at start) */
    _Atomic int cameras_loaded; /* rly_relay_set_ready: every registered camera has been put */
    struct rly_counters_atomic {
        _Atomic uint64_t tunnels_accepted, tunnels_refused, handshake_failures,
            data_conns_refused, streams_opened, streams_closed, bytes_relayed, frames_rejected,
            handovers, buffers_exhausted;
        _Atomic uint64_t streams_by_path[RLY_PATH_COUNT];
    } counters;
};

#endif
