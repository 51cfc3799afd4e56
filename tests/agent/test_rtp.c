/* Unit tests for agent/rtp.c: RFC 6184 single NAL unit and FU-A packetization. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/rtp.h"

#define MAX_PKTS 256
#define PKT_MAX 2048

/* Collects emitted packets (header + payload joined) for inspection. */
struct capture {
    size_t n;
    size_t len[MAX_PKTS];
    uint8_t pkt[MAX_PKTS][PKT_MAX];
    int fail_at; /* return -EIO on this packet index; -1 never */
};

static int capture_emit(void *ctx, const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                        size_t payload_len)
{
    struct capture *c = ctx;

    if ((int)c->n == c->fail_at)
        return -EIO;
    assert_true(c->n < MAX_PKTS);
    assert_true(hdr_len + payload_len <= PKT_MAX);
    memcpy(c->pkt[c->n], hdr, hdr_len);
    memcpy(c->pkt[c->n] + hdr_len, payload, payload_len);
    c->len[c->n++] = hdr_len + payload_len;
    return 0;
}

static struct capture *capture_new(void)
{
    struct capture *c = calloc(1, sizeof(*c));

    assert_non_null(c);
    c->fail_at = -1;
    return c;
}

static uint16_t pkt_seq(const uint8_t *p)
{
    return (uint16_t)(p[2] << 8 | p[3]);
}

static uint32_t pkt_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool pkt_marker(const uint8_t *p)
{
    return p[1] & 0x80;
}

static void fill(uint8_t *nal, size_t len, uint8_t header)
{
    nal[0] = header;
    for (size_t i = 1; i < len; i++)
        nal[i] = (uint8_t)(i * 7 + 3);
}

static void test_rtp_small_nal_single_packet(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.seq = 100, .ssrc = 0x11223344, .payload_type = 96, .max_payload = 1400};
    uint8_t nal[200];
    struct agt_nal n = {nal, sizeof(nal)};

    (void)state;
    fill(nal, sizeof(nal), 0x65);
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0xdeadbeef, capture_emit, c), 1);
    assert_int_equal(c->n, 1);
    assert_int_equal(c->len[0], AGT_RTP_HDR_LEN + sizeof(nal));
    assert_int_equal(c->pkt[0][0], 0x80);
    assert_int_equal(c->pkt[0][1], 0x80 | 96); /* marker: last packet of the AU */
    assert_int_equal(pkt_seq(c->pkt[0]), 100);
    assert_int_equal(pkt_u32(c->pkt[0] + 4), 0xdeadbeef);
    assert_int_equal(pkt_u32(c->pkt[0] + 8), 0x11223344);
    assert_memory_equal(c->pkt[0] + AGT_RTP_HDR_LEN, nal, sizeof(nal));
    assert_int_equal(rtp.seq, 101);
    free(c);
}

static void test_rtp_nal_exactly_max_payload_is_single(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.payload_type = 96, .max_payload = 100};
    uint8_t nal[100];
    struct agt_nal n = {nal, sizeof(nal)};

    (void)state;
    fill(nal, sizeof(nal), 0x41);
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c), 1);
    assert_int_equal(c->len[0], AGT_RTP_HDR_LEN + 100);
    free(c);
}

static void test_rtp_large_nal_fua_split(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.seq = 7, .payload_type = 96, .max_payload = 100};
    static uint8_t nal[1000], joined[1000];
    struct agt_nal n = {nal, sizeof(nal)};
    size_t jl = 1, expected = (sizeof(nal) - 1 + 97) / 98;

    (void)state;
    fill(nal, sizeof(nal), 0x65); /* NRI 3, type 5 (IDR) */
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 1234, capture_emit, c), (int)expected);
    assert_int_equal(c->n, expected);
    joined[0] = (uint8_t)((c->pkt[0][12] & 0xe0) | (c->pkt[0][13] & 0x1f));
    for (size_t i = 0; i < c->n; i++) {
        const uint8_t *p = c->pkt[i];
        bool last = i + 1 == c->n;
        assert_true(c->len[i] <= AGT_RTP_HDR_LEN + 100);
        assert_int_equal(pkt_seq(p), 7 + i);
        assert_int_equal(pkt_u32(p + 4), 1234);
        assert_int_equal(p[12], 0x60 | 28);                  /* FU indicator: NRI kept, FU-A */
        assert_int_equal(p[13] & 0x1f, 5);                    /* original type */
        assert_int_equal(!!(p[13] & 0x80), i == 0);           /* S */
        assert_int_equal(!!(p[13] & 0x40), last);             /* E */
        assert_int_equal(p[13] & 0x20, 0);                    /* R */
        assert_int_equal(pkt_marker(p), last);
        memcpy(joined + jl, p + 14, c->len[i] - 14);
        jl += c->len[i] - 14;
    }
    assert_int_equal(jl, sizeof(nal));
    assert_memory_equal(joined, nal, sizeof(nal)); /* reassembly reproduces the NAL */
    assert_int_equal(rtp.seq, 7 + expected);
    free(c);
}

static void test_rtp_marker_only_on_last_packet_of_au(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.payload_type = 96, .max_payload = 50};
    uint8_t sps[10], pps[4], idr[300];
    struct agt_nal au[3] = {{sps, sizeof(sps)}, {pps, sizeof(pps)}, {idr, sizeof(idr)}};

    (void)state;
    fill(sps, sizeof(sps), 0x67);
    fill(pps, sizeof(pps), 0x68);
    fill(idr, sizeof(idr), 0x65);
    int n = agt_rtp_packetize(&rtp, au, 3, 90000, capture_emit, c);
    assert_true(n > 3);
    for (int i = 0; i < n; i++)
        assert_int_equal(pkt_marker(c->pkt[i]), i == n - 1);
    assert_int_equal(c->pkt[0][12], 0x67); /* SPS and PPS travel as single NAL packets */
    assert_int_equal(c->pkt[1][12], 0x68);
    assert_int_equal(c->pkt[2][12] & 0x1f, 28);
    free(c);
}

static void test_rtp_sequence_wraps(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.seq = 65534, .payload_type = 96, .max_payload = 10};
    uint8_t nal[40];
    struct agt_nal n = {nal, sizeof(nal)};

    (void)state;
    fill(nal, sizeof(nal), 0x41);
    int pk = agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c);
    assert_int_equal(pk, 5); /* 39 bytes / 8 per FU-A */
    assert_int_equal(pkt_seq(c->pkt[0]), 65534);
    assert_int_equal(pkt_seq(c->pkt[1]), 65535);
    assert_int_equal(pkt_seq(c->pkt[2]), 0);
    assert_int_equal(pkt_seq(c->pkt[3]), 1);
    assert_int_equal(rtp.seq, 3);
    free(c);
}

static void test_rtp_au_size_matches_packets(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.payload_type = 96, .max_payload = 64};
    static uint8_t a[5], b2[64], d[65], e[1000];
    struct agt_nal au[4] = {{a, sizeof(a)}, {b2, sizeof(b2)}, {d, sizeof(d)}, {e, sizeof(e)}};
    size_t bytes, packets, total = 0;

    (void)state;
    fill(a, sizeof(a), 0x06);
    fill(b2, sizeof(b2), 0x41);
    fill(d, sizeof(d), 0x41);
    fill(e, sizeof(e), 0x25);
    assert_int_equal(agt_rtp_au_size(&rtp, au, 4, 4, &bytes, &packets), 0);
    int n = agt_rtp_packetize(&rtp, au, 4, 0, capture_emit, c);
    assert_int_equal((size_t)n, packets);
    for (size_t i = 0; i < c->n; i++)
        total += c->len[i] + 4;
    assert_int_equal(total, bytes);
    free(c);
}

static void test_rtp_rejects_bad_arguments(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.payload_type = 96, .max_payload = 2};
    uint8_t nal[10] = {0x41};
    struct agt_nal n = {nal, sizeof(nal)}, empty = {nal, 0};

    (void)state;
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c), -EINVAL);
    rtp.max_payload = AGT_RTP_MAX_PAYLOAD + 1;
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c), -EINVAL);
    rtp.max_payload = 100;
    rtp.payload_type = 200;
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c), -EINVAL);
    rtp.payload_type = 96;
    assert_int_equal(agt_rtp_packetize(&rtp, &empty, 1, 0, capture_emit, c), -EINVAL);
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 0, 0, capture_emit, c), -EINVAL);
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, NULL, c), -EINVAL);
    assert_int_equal(c->n, 0);
    free(c);
}

static void test_rtp_emit_error_keeps_sequence(void **state)
{
    struct capture *c = capture_new();
    struct agt_rtp rtp = {.seq = 10, .payload_type = 96, .max_payload = 10};
    uint8_t nal[100];
    struct agt_nal n = {nal, sizeof(nal)};

    (void)state;
    fill(nal, sizeof(nal), 0x41);
    c->fail_at = 3;
    assert_int_equal(agt_rtp_packetize(&rtp, &n, 1, 0, capture_emit, c), -EIO);
    assert_int_equal(rtp.seq, 10); /* caller rolls its buffer back; numbering stays gapless */
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rtp_small_nal_single_packet),
        cmocka_unit_test(test_rtp_nal_exactly_max_payload_is_single),
        cmocka_unit_test(test_rtp_large_nal_fua_split),
        cmocka_unit_test(test_rtp_marker_only_on_last_packet_of_au),
        cmocka_unit_test(test_rtp_sequence_wraps),
        cmocka_unit_test(test_rtp_au_size_matches_packets),
        cmocka_unit_test(test_rtp_rejects_bad_arguments),
        cmocka_unit_test(test_rtp_emit_error_keeps_sequence),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
