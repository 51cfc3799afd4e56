/* Types shared by the agent's modules (agent.c, tunnel.c, stream.c): the agent, its cameras,
 * the loop threads that drive the cameras' tunnels and the dialer pool. No prototypes here. */
#ifndef AGT_AGENT_T_H
#define AGT_AGENT_T_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "agent/agent_backoff.h"
#include "agent/agent_cache.h"
#include "agent/agent_config.h"
#include "common/auth_link.h"
#include "common/link.h"

#define AGT_ERR_MAX 160
#define AGT_TICKET_MAX 256
#define AGT_TOKEN_MAX 64

/* What `status` shows for a camera. */
enum agt_cam_state {
    AGT_CAM_IDLE = 0,    /* button not pressed yet */
    AGT_CAM_DISPATCHING, /* asking (or about to ask) a dispatcher */
    AGT_CAM_WAITING_REG, /* held by the dispatcher until the camera is registered */
    AGT_CAM_CONNECTING,  /* logging in to (or about to retry) the relay */
    AGT_CAM_ONLINE,      /* control tunnel up */
};

/* Where a camera is in its phone-home cycle; owned by its loop thread. */
enum agt_phase {
    AGT_PH_IDLE = 0,
    AGT_PH_BACKOFF,       /* next attempt at due_ms */
    AGT_PH_DIALING,       /* a dialer thread connects and sends the first frame */
    AGT_PH_DISP_HELLO,    /* AuthStart sent: Pending / AuthChallenge / Refusal expected */
    AGT_PH_DISP_RESULT,   /* AuthProof sent: DispatchResult / Refusal expected */
    AGT_PH_RELAY_HELLO,   /* TunnelHello sent: AuthChallenge / Refusal expected */
    AGT_PH_RELAY_WELCOME, /* AuthProof sent: TunnelWelcome / Refusal expected */
    AGT_PH_ONLINE,        /* Ping / OpenStream expected; dead at due_ms */
};

/* Bytes of a control link read but not yet decoded into a frame. Invariant: len <= cap; data
 * is NULL (cap 0) while the camera has no link; it grows to the announced frame size, at most
 * AGT_FRAME_MAX + 4. */
struct agt_rxbuf {
    uint8_t *data;
    uint32_t len, cap;
};

struct agt_loop;
struct agt_agent;

/* One camera: a serial with its own tunnel. Lives as long as the agent (a fixed array), so
 * threads may hold a pointer to it; the link and everything above `state` belong to the
 * camera's loop thread. */
struct agt_cam {
    struct cr_link link; /* fd -1 when there is none */
    uint32_t gen;        /* bumped per attempt: stale dialer results and events are dropped */
    enum agt_phase phase;
    int to_dispatcher; /* the current/next attempt goes to a dispatcher (else the relay) */
    uint64_t due_ms;   /* BACKOFF: attempt time; login phases: step deadline; ONLINE: dead */
    struct agt_rxbuf rx;
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    char addr[CR_ADDR_STRLEN]; /* peer of the current attempt */
    unsigned disp_idx, disp_tried;
    unsigned relay_fail; /* consecutive failed relay attempts */
    struct agt_backoff backoff;
    char relays[AGT_MAX_RELAYS][CR_ADDR_STRLEN];
    unsigned n_relays, relay_idx;
    uint8_t ticket[AGT_TICKET_MAX];
    uint32_t ticket_len;
    uint64_t ticket_expires_unix;
    uint32_t keepalive_ms;
    int pending_logged;
    struct cr_auth_client auth; /* secret borrowed from the agent; cached ClientKey */
    char serial[AGT_SERIAL_MAX];
    unsigned index;
    struct agt_loop *loop;
    struct agt_agent *agent;
    atomic_uint streams; /* open data connections */

    /* Status for `status`: written by the loop thread, read by anyone, under loop->mu. */
    enum agt_cam_state state;
    char shown_relay[CR_ADDR_STRLEN];
    char last_error[AGT_ERR_MAX];
};

enum agt_cmd_type {
    AGT_CMD_NONE = 0,
    AGT_CMD_LINK_UP,       /* dialer: connected, first frame sent; link handed over */
    AGT_CMD_DIAL_FAILED,   /* dialer: text says why */
    AGT_CMD_STREAM_FAILED, /* stream thread: send StreamFailed{stream_id, text} on the tunnel */
    AGT_CMD_PRESS,         /* the button */
};

/* A message to a loop thread (heap, control path only; freed by the loop). */
struct agt_cmd {
    struct agt_cmd *next;
    enum agt_cmd_type type;
    struct agt_cam *cam;
    uint32_t gen;
    struct cr_link link; /* LINK_UP: consumed by the loop */
    uint64_t stream_id;
    char text[AGT_ERR_MAX];
};

/* A loop thread: one epoll over the control links of its cameras, their timers, and a queue
 * of commands from other threads (woken through an eventfd). */
struct agt_loop {
    pthread_t thread;
    int started;
    int epfd;
    int evfd;
    pthread_mutex_t mu; /* the command queue and the status fields of its cameras */
    struct agt_cmd *head, *tail;
    struct agt_agent *agent;
    struct agt_cam **cams;
    unsigned n_cams;
};

/* A connect job for the dialer pool: TLS connect plus the first frame of a login. */
struct agt_dial_job {
    struct agt_dial_job *next;
    struct agt_cam *cam;
    uint32_t gen;
    int to_dispatcher;
    char addr[CR_ADDR_STRLEN];
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    uint8_t ticket[AGT_TICKET_MAX];
    uint32_t ticket_len;
};

struct agt_dialer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct agt_dial_job *head, *tail;
    unsigned n_threads;
    int stop;
};

struct agt_agent {
    const struct agt_config *cfg; /* borrowed until agt_agent_destroy */
    SSL_CTX *tls;
    struct agt_sim *sim; /* --simulate: shared by every camera; NULL for a real camera */
    struct cr_auth_secret secret; /* borrows cfg's strings */
    const char *svc_names[AGT_MAX_SERVICES];
    unsigned n_svc;
    int durable_cache;

    struct agt_cam *cams;
    unsigned n_cams;
    struct agt_loop *loops;
    unsigned n_loops;
    struct agt_dialer dialer;

    int stop_fd; /* eventfd, readable once the agent stops (streams poll it) */
    atomic_int stopping;
    atomic_int pressed;
    atomic_int cache_warned;
    atomic_uint streams_open;
    pthread_attr_t detached_attr; /* small stacks, detached: dialers and streams */
    pthread_attr_t joinable_attr; /* small stacks: loops */

    pthread_mutex_t life_mu; /* threads_alive: detached threads still running */
    pthread_cond_t life_cv;
    unsigned threads_alive;
};

#endif
