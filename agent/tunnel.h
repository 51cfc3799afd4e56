/* Phone home: every camera's dispatcher -> relay -> control tunnel state machine.
 *
 * Threads: a few loop threads (1 up to 64 cameras, else up to 4) each own a share of the
 * cameras and drive them from one epoll: login steps, Ping/Pong, OpenStream, timers. TCP+TLS
 * connects block for up to 10 s, so they run in a small dialer pool (at most 16 threads),
 * which connects, sends the first frame of the login and hands the link to the loop. Streams
 * run in their own threads (stream.h), so a busy stream never delays a Pong. */
#ifndef AGT_TUNNEL_H
#define AGT_TUNNEL_H

#include <stdint.h>

#include "agent/agent_t.h"

#define AGT_STEP_MS 10000        /* each step of a login (docs/protocol.md) */
#define AGT_DIAL_TIMEOUT_MS 10000 /* TCP connect, then the TLS handshake */
#define AGT_WRITE_MS 2000        /* one small control frame */
#define AGT_RELAY_FAILS_MAX 3    /* failed relay attempts before asking a dispatcher again */
#define AGT_KEEPALIVE_DEFAULT_MS 5000
#define AGT_FRAME_MAX (16 * 1024) /* largest frame accepted from a dispatcher or relay */
#define AGT_MAX_STREAMS_PER_CAM 32
#define AGT_MAX_STREAMS 4096

/* Creates n_loops loop structures (epoll, eventfd) and deals the cameras out to them, and
 * the dialer queue. Returns 0 or -errno. Start-up only. */
int agt_tunnel_init(struct agt_agent *a, unsigned n_loops);

/* Starts the loop threads and n_dialers dialer threads. Returns 0 or -errno (the threads
 * already started are stopped by agt_tunnel_stop). Start-up only. */
int agt_tunnel_start(struct agt_agent *a, unsigned n_dialers);

/* The button: every idle camera starts phoning home. Any thread. */
void agt_tunnel_press(struct agt_agent *a);

/* Stops the dialers (after their current connect) and the loops; each loop closes its links
 * (close_notify) and logs "tunnel down ... reason=shutdown" for online cameras. Call after
 * setting a->stopping. Joins the loop threads. Main thread. */
void agt_tunnel_stop(struct agt_agent *a);

/* Frees the loops, queued commands (closing handed-over links) and dialer jobs. Only after
 * agt_tunnel_stop and once no detached thread is left. */
void agt_tunnel_fini(struct agt_agent *a);

/* From a stream thread: asks cam's loop to send StreamFailed{stream_id, reason} on the
 * tunnel of generation gen (dropped if that tunnel is gone). Any thread. */
void agt_tunnel_stream_failed(struct agt_cam *cam, uint32_t gen, uint64_t stream_id,
                              const char *reason);

/* "idle", "dispatching", "waiting-registration", "connecting", "online". */
const char *agt_cam_state_name(enum agt_cam_state s);

#endif
