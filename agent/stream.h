/* One stream: a data connection to the relay (DataHello / DataAccepted; TLS, or plain TCP with
 * --data-plain) joined to the local service (a TCP connect, or a socketpair into the
 * simulator), bytes pumped both ways with half-close. One thread per stream, 256 KiB stack;
 * buffers AGT_PUMP_BUF per direction. */
#ifndef AGT_STREAM_H
#define AGT_STREAM_H

#include <stdint.h>

#include "agent/agent_t.h"

#define AGT_PUMP_BUF (64 * 1024)
#define AGT_LOCAL_CONNECT_MS 3000

/* What a stream thread needs; agt_stream_start copies it. */
struct agt_stream_req {
    struct agt_cam *cam; /* borrowed: cameras live as long as the agent */
    uint32_t tunnel_gen; /* StreamFailed goes back on this tunnel only */
    char relay[CR_ADDR_STRLEN];
    uint64_t stream_id;
    char service[AGT_SERVICE_NAME_MAX];
    uint8_t token[AGT_TOKEN_MAX];
    uint32_t token_len;
};

/* Starts a detached stream thread for req (counted in cam->streams and the agent's
 * streams_open). Returns 0, or -errno when no thread could be started (the caller answers
 * StreamFailed). Loop thread. */
int agt_stream_start(const struct agt_stream_req *req);

/* Moves bytes between a data connection (after DataAccepted: TLS, or plaintext when l has no
 * SSL) and a connected local stream socket until both directions are closed: local EOF ->
 * close_notify to the relay (shutdown(SHUT_WR) on a plaintext one), relay close_notify/EOF ->
 * shutdown(local, SHUT_WR); each direction keeps flowing until its own EOF. At most
 * AGT_PUMP_BUF bytes per direction are held: a side that cannot take more stops the reads on
 * the other. Returns 0 after a clean close, -ECANCELED when stop_fd became readable, or
 * -errno on an I/O error. bytes_in counts relay -> local, bytes_out local -> relay. Borrows l
 * and local (the caller closes them). Any thread (blocks in poll). */
int agt_stream_pump(struct cr_link *l, int local, int stop_fd, uint64_t *bytes_in,
                    uint64_t *bytes_out);

#endif
