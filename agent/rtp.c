/* RFC 6184 H.264 RTP packetizer (packetization-mode=1 without aggregation packets). */
#include "agent/rtp.h"

#include <errno.h>

#define FU_A_TYPE 28

static int check_args(const struct agt_rtp *rtp, const struct agt_nal *nals, size_t n_nals)
{
    if (!rtp || !nals || n_nals == 0 || rtp->payload_type > 127 ||
        rtp->max_payload < AGT_RTP_MIN_PAYLOAD || rtp->max_payload > AGT_RTP_MAX_PAYLOAD)
        return -EINVAL;
    for (size_t i = 0; i < n_nals; i++)
        if (!nals[i].data || nals[i].len == 0)
            return -EINVAL;
    return 0;
}

/* Payload bytes per FU-A packet: the NAL header byte is not repeated, 2 FU bytes are added. */
static size_t fu_chunk(const struct agt_rtp *rtp)
{
    return rtp->max_payload - AGT_RTP_FU_HDR_LEN;
}

int agt_rtp_au_size(const struct agt_rtp *rtp, const struct agt_nal *nals, size_t n_nals,
                    size_t per_packet_extra, size_t *bytes, size_t *packets)
{
    size_t total = 0, count = 0;

    if (check_args(rtp, nals, n_nals) || !bytes || !packets)
        return -EINVAL;
    for (size_t i = 0; i < n_nals; i++) {
        size_t len = nals[i].len;
        if (len <= rtp->max_payload) {
            total += per_packet_extra + AGT_RTP_HDR_LEN + len;
            count++;
        } else {
            size_t n = (len - 1 + fu_chunk(rtp) - 1) / fu_chunk(rtp);
            total += n * (per_packet_extra + AGT_RTP_MAX_HDR_LEN) + (len - 1);
            count += n;
        }
    }
    *bytes = total;
    *packets = count;
    return 0;
}

static void put_header(uint8_t *h, const struct agt_rtp *rtp, uint16_t seq, uint32_t ts,
                       bool marker)
{
    h[0] = 0x80; /* version 2, no padding, no extension, no CSRC */
    h[1] = (uint8_t)((marker ? 0x80 : 0) | rtp->payload_type);
    h[2] = (uint8_t)(seq >> 8);
    h[3] = (uint8_t)seq;
    h[4] = (uint8_t)(ts >> 24);
    h[5] = (uint8_t)(ts >> 16);
    h[6] = (uint8_t)(ts >> 8);
    h[7] = (uint8_t)ts;
    h[8] = (uint8_t)(rtp->ssrc >> 24);
    h[9] = (uint8_t)(rtp->ssrc >> 16);
    h[10] = (uint8_t)(rtp->ssrc >> 8);
    h[11] = (uint8_t)rtp->ssrc;
}

int agt_rtp_packetize(struct agt_rtp *rtp, const struct agt_nal *nals, size_t n_nals, uint32_t ts,
                      agt_rtp_emit_fn emit, void *ctx)
{
    uint8_t hdr[AGT_RTP_MAX_HDR_LEN];
    uint16_t seq;
    int packets = 0, rc;

    if (check_args(rtp, nals, n_nals) || !emit)
        return -EINVAL;
    seq = rtp->seq;
    for (size_t i = 0; i < n_nals; i++) {
        const uint8_t *nal = nals[i].data;
        size_t len = nals[i].len;
        bool last_nal = i + 1 == n_nals;

        if (len <= rtp->max_payload) {
            put_header(hdr, rtp, seq++, ts, last_nal);
            rc = emit(ctx, hdr, AGT_RTP_HDR_LEN, nal, len);
            if (rc < 0)
                return rc;
            packets++;
            continue;
        }
        /* FU-A: indicator keeps F and NRI of the NAL header, FU header carries its type */
        hdr[AGT_RTP_HDR_LEN] = (uint8_t)((nal[0] & 0xe0) | FU_A_TYPE);
        for (size_t off = 1; off < len;) {
            size_t chunk = len - off < fu_chunk(rtp) ? len - off : fu_chunk(rtp);
            bool start = off == 1, end = off + chunk == len;

            put_header(hdr, rtp, seq++, ts, last_nal && end);
            hdr[AGT_RTP_HDR_LEN + 1] =
                (uint8_t)((start ? 0x80 : 0) | (end ? 0x40 : 0) | (nal[0] & 0x1f));
            rc = emit(ctx, hdr, AGT_RTP_MAX_HDR_LEN, nal + off, chunk);
            if (rc < 0)
                return rc;
            packets++;
            off += chunk;
        }
    }
    rtp->seq = seq;
    return packets;
}
