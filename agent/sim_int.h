/* Simulator internals shared by its loop (sim.c, sim_api.c) and handlers (sim_rtsp/http.c). */
#ifndef AGT_SIM_INT_H
#define AGT_SIM_INT_H

#include "agent/rtp.h"
#include "agent/sim.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGT_SIM__IN_MAX 8192            /* request bytes buffered per session (headers + body) */
#define AGT_SIM__BODY_MAX 4096          /* largest request body accepted (SET_PARAMETER) */
#define AGT_SIM__FRAME_BUF (512u << 10) /* RTP backlog per session before frames are dropped */
#define AGT_SIM__CTRL_SLACK (16u << 10) /* room past the RTP backlog kept for RTSP replies */
#define AGT_SIM__HTTP_BUF (16u << 10)   /* whole output buffer of an HTTP session */
#define AGT_SIM__AU_QUEUE 128           /* AUs queued but not yet fully written, per session */
#define AGT_SIM__MAX_LISTENERS 8
#define AGT_SIM__SESSION_TIMEOUT_S 60   /* RTSP: no request for this long before PLAY */

/* What an epoll event belongs to (top byte of its user data). */
enum agt_sim__op {
    AGT_SIM__OP_WAKE = 1, /* eventfd: sockets handed over, or stop */
    AGT_SIM__OP_TIMER,    /* timerfd: frames due, housekeeping */
    AGT_SIM__OP_LISTEN,   /* a listener; index in sim->listeners */
    AGT_SIM__OP_SESS,     /* a session; slot index and generation */
};

enum agt_sim__state {
    AGT_SIM__INIT = 0, /* connected, no SETUP yet */
    AGT_SIM__READY,    /* SETUP done, not streaming */
    AGT_SIM__PLAYING,  /* in sim->heap, paced by the timer */
};

/* Pending output of one session. Invariant: head <= tail <= cap; bytes [head, tail) are not
 * yet written. data is an anonymous mapping so only pages a session really fills become
 * resident: thousands of idle sessions cost little. */
struct agt_sim__obuf {
    uint8_t *data;
    size_t head;
    size_t tail;
    size_t cap;
};

/* One connection. Owned by the loop thread; freed only in sess_close (sim.c). */
struct agt_sim__sess {
    /* hot: pacing and output */
    int fd;
    enum agt_sim_service svc;
    enum agt_sim__state state;
    bool close_after_flush; /* final reply queued; close once it is written */
    bool want_keyframe;     /* a frame was dropped: skip until the next keyframe */
    bool rd_shut;           /* peer shut its write side; stop reading */
    uint8_t rtp_channel;    /* interleaved channel of RTP; RTCP is rtp_channel + 1 */
    uint32_t events;        /* epoll mask currently registered */
    size_t heap_idx;        /* position in sim->heap while PLAYING, else SIZE_MAX */
    uint64_t due_ns;        /* CLOCK_MONOTONIC time the next AU is due */
    uint64_t play_ns;       /* CLOCK_MONOTONIC origin of ticks (rebased after long stalls) */
    uint64_t ticks;         /* 90 kHz time of the next AU since PLAY */
    size_t au_idx;          /* next AU of the clip to send */
    uint32_t ts_base;       /* random RTP timestamp origin */
    struct agt_rtp rtp;
    struct agt_sim__obuf out;
    uint64_t queued;        /* bytes ever appended to out */
    uint64_t written;       /* bytes ever written to fd */
    uint64_t au_end[AGT_SIM__AU_QUEUE]; /* value of queued at which each in-flight AU ends */
    unsigned au_head;
    unsigned au_count;
    /* input */
    size_t in_len;
    size_t skip;            /* bytes of a client's interleaved packet still to discard */
    uint64_t last_rx_ns;    /* last complete request */
    uint64_t last_tx_ns;    /* last write progress, or when out became empty */
    uint32_t slot;
    uint32_t gen;
    /* cold: identity and statistics */
    uint64_t frames_sent;
    uint64_t frames_dropped;
    int http_status;
    char session_id[17];
    char serial[AGT_SIM_SERIAL_MAX + 1];
    uint8_t in[AGT_SIM__IN_MAX];
};

struct agt_sim__slot {
    struct agt_sim__sess *s; /* NULL when free */
    uint32_t gen;            /* bumped on every free so stale epoll events are ignored */
    uint32_t next_free;
};

struct agt_sim__listener {
    int fd;
    enum agt_sim_service svc;
    bool paused; /* out of fds: re-armed by the next sweep */
};

/* A socket handed over by another thread, waiting for the loop to pick it up. */
struct agt_sim__pending {
    struct agt_sim__pending *next;
    int fd;
    bool listener;
    enum agt_sim_service svc;
    char serial[AGT_SIM_SERIAL_MAX + 1];
};

struct agt_sim {
    /* loop thread only */
    int epfd;
    int timerfd;
    int wakefd;
    uint64_t now_ns; /* CLOCK_MONOTONIC, refreshed each loop iteration */
    struct agt_sim__slot *slots;
    uint32_t n_slots, cap_slots, free_head;
    struct agt_sim__sess **heap; /* min-heap on due_ns of PLAYING sessions */
    size_t heap_len, heap_cap;
    uint64_t armed_ns;           /* absolute expiry the timerfd is set to, 0 if none */
    uint64_t next_sweep_ns;
    uint64_t rng;
    struct agt_sim__listener listeners[AGT_SIM__MAX_LISTENERS];
    unsigned n_listeners;
    /* read-only after create */
    struct agt_clip *clip;
    size_t frame_limit;          /* RTP backlog limit: 512 KiB or more for huge keyframes */
    char *sdp;
    size_t sdp_len;
    char name[AGT_SIM_NAME_MAX + 1];
    pthread_t thread;
    /* guarded by lock */
    pthread_mutex_t lock;
    struct agt_sim__pending *pending;
    struct agt_sim__pending **pending_tail;
    unsigned listeners_requested;
    bool stopping;
    /* any thread */
    _Atomic uint64_t frames_sent;
    _Atomic uint64_t frames_dropped;
    _Atomic uint64_t bytes_sent;
    _Atomic uint32_t sessions;
};

/* The loop thread's body (sim.c); arg is the struct agt_sim. */
void *agt_sim__loop(void *arg);

/* splitmix64 step: session ids, SSRCs and RTP origins must differ, not be secret. Loop thread
 * (or before it starts). */
uint64_t agt_sim__rand(struct agt_sim *sim);

/* Length of a request head ending in an empty line (CRLF CRLF or LF LF), 0 if incomplete. */
size_t agt_sim__header_end(const uint8_t *p, size_t len);

/* Appends formatted text to the session's output. Returns 0 or -ENOBUFS (no room: the caller
 * closes the session). Loop thread. */
int agt_sim__reply(struct agt_sim__sess *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends raw bytes to the session's output. Returns 0 or -ENOBUFS. Loop thread. */
int agt_sim__append(struct agt_sim__sess *s, const void *p, size_t n);

/* RTP timestamp the next AU will carry (for RTP-Info). */
uint32_t agt_sim__next_rtptime(const struct agt_sim *sim, const struct agt_sim__sess *s);

/* Starts pacing frames to s from now (first frame on this loop iteration). Returns 0 or
 * -ENOMEM. Loop thread. */
int agt_sim__play(struct agt_sim *sim, struct agt_sim__sess *s);

/* Stops pacing (TEARDOWN). Loop thread. */
void agt_sim__stop(struct agt_sim *sim, struct agt_sim__sess *s);

/* Protocol handlers: consume complete requests in s->in, queue replies. Return 0, or a
 * negative errno to close the session at once. Loop thread. */
int agt_sim__rtsp_input(struct agt_sim *sim, struct agt_sim__sess *s);
int agt_sim__http_input(struct agt_sim *sim, struct agt_sim__sess *s);

/* Builds sim->sdp from the clip. Returns 0, -ENOMEM, or -EINVAL if it cannot fit a reply. */
int agt_sim__rtsp_build_sdp(struct agt_sim *sim, uint64_t session_version);

#endif
