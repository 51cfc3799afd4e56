/* RFC 6184 H.264 RTP packetizer: single NAL unit packets and FU-A fragments, no allocation. */
#ifndef AGT_RTP_H
#define AGT_RTP_H

#include "agent/h264.h"

#include <stddef.h>
#include <stdint.h>

#define AGT_RTP_HDR_LEN 12     /* fixed RTP header, no CSRC, no extension */
#define AGT_RTP_FU_HDR_LEN 2   /* FU indicator + FU header */
#define AGT_RTP_MAX_HDR_LEN (AGT_RTP_HDR_LEN + AGT_RTP_FU_HDR_LEN)
#define AGT_RTP_MIN_PAYLOAD 3  /* an FU-A must carry at least one NAL byte */
#define AGT_RTP_MAX_PAYLOAD (65535 - AGT_RTP_HDR_LEN) /* fits RTSP interleaved framing */
#define AGT_RTP_DEFAULT_PAYLOAD 1400

/* One RTP stream's sender state. All-zero plus max_payload and payload_type is valid. */
struct agt_rtp {
    uint16_t seq;         /* sequence number of the next packet; wraps */
    uint32_t ssrc;
    uint8_t payload_type; /* 0..127, e.g. 96 */
    size_t max_payload;   /* bytes after the RTP header, AGT_RTP_MIN_PAYLOAD..AGT_RTP_MAX_PAYLOAD */
};

/* Receives one packet as two borrowed pieces (valid only during the call): hdr is the RTP
 * header plus, for FU-A, the FU indicator and header; payload points into the NAL unit. The
 * packet is hdr followed by payload. Return 0 to continue or a negative errno to abort. */
typedef int (*agt_rtp_emit_fn)(void *ctx, const uint8_t *hdr, size_t hdr_len,
                               const uint8_t *payload, size_t payload_len);

/* Packetizes one access unit (NAL units in decode order, borrowed) with RTP timestamp ts; the
 * marker bit is set on its last packet only. Returns the number of packets emitted (> 0),
 * -EINVAL for bad arguments (nothing emitted), or the callback's error. rtp->seq advances only
 * on success, so a caller that rolls back its output on error stays consistent. Any thread,
 * one caller per struct agt_rtp. */
int agt_rtp_packetize(struct agt_rtp *rtp, const struct agt_nal *nals, size_t n_nals, uint32_t ts,
                      agt_rtp_emit_fn emit, void *ctx);

/* Computes what agt_rtp_packetize() would emit for the same AU: *bytes is the sum of packet
 * lengths plus per_packet_extra for each packet (e.g. 4 for RTSP interleaved framing),
 * *packets the packet count. Returns 0 or -EINVAL. */
int agt_rtp_au_size(const struct agt_rtp *rtp, const struct agt_nal *nals, size_t n_nals,
                    size_t per_packet_extra, size_t *bytes, size_t *packets);

#endif
