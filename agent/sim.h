/* Simulated IP camera: one H.264 clip over RTSP (RTP/TCP interleaved), plus a tiny HTTP page. */
#ifndef AGT_SIM_H
#define AGT_SIM_H

#include "agent/h264.h"

#include <stdint.h>

#define AGT_SIM_SERIAL_MAX 64   /* serial: 1..64 of [A-Za-z0-9._:-] */
#define AGT_SIM_NAME_MAX 64     /* name: same rules as a serial */
#define AGT_SIM_MAX_SESSIONS 65536u

enum agt_sim_service {
    AGT_SIM_RTSP = 0,
    AGT_SIM_HTTP = 1,
};

struct agt_sim_config {
    const char *clip_path; /* .h264/.264 Annex-B or .mp4 */
    double fps;            /* Annex-B without VUI timing only; 0 means 25 */
    const char *name;      /* SDP session name, serial of listener sessions; NULL: camrelay-sim */
};

/* Process-visible counters; totals over the simulator's life. */
struct agt_sim_stats {
    uint64_t frames_sent;    /* access units completely written to a socket */
    uint64_t frames_dropped; /* skipped because a session's output buffer was full */
    uint64_t bytes_sent;
    uint32_t sessions;       /* open right now, RTSP and HTTP */
};

struct agt_sim;

/* Loads the clip and starts the simulator's single event-loop thread (epoll + timerfd), which
 * serves every session. Returns 0 and an owned simulator in *out, or -errno after logging why.
 * Start-up code; any thread. */
int agt_sim_create(const struct agt_sim_config *cfg, struct agt_sim **out);

/* Hands a connected stream socket (TCP, or one end of an AF_UNIX socketpair) to the simulator,
 * which serves svc on it until the peer leaves. Consumes fd on every path: on error it is
 * closed. serial names the session in logs and pages (NULL: the simulator's name). Returns 0,
 * -EINVAL (bad fd/svc/serial), -ENOTSOCK, -ESHUTDOWN (being destroyed) or -ENOMEM. Thread-safe:
 * any thread, concurrently. */
int agt_sim_serve_fd(struct agt_sim *sim, int fd, enum agt_sim_service svc, const char *serial);

/* Opens a TCP listener for svc on host_port ("127.0.0.1:0", "[::1]:8554", ":554"; port 0 picks
 * an ephemeral port) and reports the bound port in *bound_port (may be NULL). Returns 0 or
 * -errno (-EINVAL for a malformed address, -ENOSPC past 8 listeners). Thread-safe. */
int agt_sim_listen(struct agt_sim *sim, enum agt_sim_service svc, const char *host_port,
                   uint16_t *bound_port);

/* Stops the loop thread, ends every session (each logs its summary line), closes all sockets
 * and frees the simulator. NULL is a no-op. Must not race with other calls on the same sim. */
void agt_sim_destroy(struct agt_sim *sim);

/* Access units completely written to sockets since creation. Thread-safe. */
uint64_t agt_sim_frames_sent_total(const struct agt_sim *sim);

/* Snapshot of the counters. Thread-safe. */
void agt_sim_get_stats(const struct agt_sim *sim, struct agt_sim_stats *out);

/* The loaded clip (read-only, owned by the simulator, valid until agt_sim_destroy). */
const struct agt_clip *agt_sim_clip(const struct agt_sim *sim);

#endif
