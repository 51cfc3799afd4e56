/* Unit tests for agent/h264.c and agent/h264_mp4.c: SPS parsing, Annex-B and MP4 clip loading. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "agent/h264.h"
#include "tests/agent/helpers.h"

/* Real SPS/PPS from libx264: 320x240 High@1.1 with VUI timing 1/16 (8 fps). */
static const uint8_t sps_320[] = {0x67, 0x64, 0x00, 0x0b, 0xac, 0xb2, 0x02, 0x83, 0xf6, 0x02,
                                  0x20, 0x00, 0x00, 0x03, 0x00, 0x20, 0x00, 0x00, 0x03, 0x02,
                                  0x01, 0xe2, 0x85, 0x49};
static const uint8_t pps_320[] = {0x68, 0xeb, 0xc3, 0xcb, 0x22, 0xc0};
/* Real SPS from libx264: 1920x1080 (1088 coded, cropped) High@4.0, timing 1/60 (30 fps). */
static const uint8_t sps_1080[] = {0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02,
                                   0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04,
                                   0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58};

static struct clips clips;

/* ---- a bit writer to build SPSs with chosen fields ---- */

struct bw {
    uint8_t b[64];
    size_t bits;
};

static void bw_u(struct bw *w, unsigned n, uint32_t v)
{
    for (unsigned i = n; i-- > 0; w->bits++)
        if (v >> i & 1)
            w->b[w->bits / 8] |= (uint8_t)(0x80 >> (w->bits % 8));
}

static void bw_ue(struct bw *w, uint32_t v)
{
    unsigned len = 0;

    while ((uint64_t)(v + 1) >> (len + 1))
        len++;
    bw_u(w, len, 0);
    bw_u(w, len + 1, v + 1);
}

/* Finishes the RBSP and escapes it into a NAL unit (header 0x67). Returns its length. */
static size_t bw_sps_nal(struct bw *w, uint8_t *out)
{
    size_t n = 1, zeros = 0;

    bw_u(w, 1, 1); /* rbsp_stop_one_bit, then zero alignment */
    out[0] = 0x67;
    for (size_t i = 0; i < (w->bits + 7) / 8; i++) {
        if (zeros >= 2 && w->b[i] <= 3) {
            out[n++] = 3;
            zeros = 0;
        }
        out[n++] = w->b[i];
        zeros = w->b[i] == 0 ? zeros + 1 : 0;
    }
    return n;
}

/* Baseline SPS of w_mbs x h_mbs macroblocks, optional bottom crop and VUI timing. */
static size_t make_sps(uint8_t *out, uint32_t w_mbs, uint32_t h_mbs, uint32_t crop_bottom,
                       uint32_t units, uint32_t scale)
{
    struct bw w = {0};

    bw_u(&w, 8, 66);
    bw_u(&w, 8, 0xc0);
    bw_u(&w, 8, 30);
    bw_ue(&w, 0);          /* sps id */
    bw_ue(&w, 0);          /* log2_max_frame_num_minus4 */
    bw_ue(&w, 2);          /* poc type */
    bw_ue(&w, 1);          /* refs */
    bw_u(&w, 1, 0);        /* gaps */
    bw_ue(&w, w_mbs - 1);
    bw_ue(&w, h_mbs - 1);
    bw_u(&w, 1, 1);        /* frame_mbs_only */
    bw_u(&w, 1, 1);        /* direct_8x8 */
    bw_u(&w, 1, crop_bottom != 0);
    if (crop_bottom) {
        bw_ue(&w, 0);
        bw_ue(&w, 0);
        bw_ue(&w, 0);
        bw_ue(&w, crop_bottom);
    }
    bw_u(&w, 1, units != 0); /* vui */
    if (units) {
        bw_u(&w, 4, 0); /* no aspect, overscan, signal type, chroma loc */
        bw_u(&w, 1, 1);
        bw_u(&w, 32, units);
        bw_u(&w, 32, scale);
        bw_u(&w, 1, 1);
        bw_u(&w, 5, 0); /* no HRD, no pic_struct, no bitstream restriction */
    }
    return bw_sps_nal(&w, out);
}

/* ---- Annex-B builders ---- */

struct stream {
    uint8_t b[8192];
    size_t len;
};

static void put_nal(struct stream *s, bool four_byte_sc, const uint8_t *nal, size_t len)
{
    static const uint8_t sc[] = {0, 0, 0, 1};

    memcpy(s->b + s->len, four_byte_sc ? sc : sc + 1, four_byte_sc ? 4 : 3);
    s->len += four_byte_sc ? 4 : 3;
    memcpy(s->b + s->len, nal, len);
    s->len += len;
}

/* A slice NAL: type byte then first_mb_in_slice = 0 (bit '1') and filler without zeros. */
static void put_slice(struct stream *s, bool four, uint8_t hdr, size_t len)
{
    uint8_t nal[600];

    nal[0] = hdr;
    for (size_t i = 1; i < len; i++)
        nal[i] = (uint8_t)(0x80 | (i * 13));
    put_nal(s, four, nal, len);
}

/* Every NAL view must lie inside the parsed buffer; every AU must be well-formed. */
static void check_invariants(const struct agt_clip *c, const uint8_t *buf, size_t len)
{
    assert_true(c->n_aus > 0);
    assert_true(c->first_keyframe < c->n_aus);
    assert_true(c->aus[c->first_keyframe].keyframe);
    for (size_t i = 0; i < c->n_aus; i++) {
        const struct agt_au *au = &c->aus[i];
        assert_true(au->nal_count >= 1);
        assert_true(au->nal_first + au->nal_count <= c->n_nals);
        assert_true(au->duration >= 1);
        for (uint32_t k = 0; k < au->nal_count; k++) {
            const struct agt_nal *n = &agt_clip_au_nals(c, au)[k];
            assert_true(n->len > 0);
            assert_true(n->data >= buf && n->data + n->len <= buf + len);
        }
    }
}

static void test_h264_sps_real_320x240(void **state)
{
    struct agt_sps_info si;

    (void)state;
    assert_int_equal(agt_h264_parse_sps(sps_320, sizeof(sps_320), &si), 0);
    assert_int_equal(si.profile_idc, 100);
    assert_int_equal(si.level_idc, 11);
    assert_int_equal(si.width, 320);
    assert_int_equal(si.height, 240);
    assert_true(si.timing_present);
    assert_int_equal(si.num_units_in_tick, 1);
    assert_int_equal(si.time_scale, 16);
}

static void test_h264_sps_real_1080p_cropped(void **state)
{
    struct agt_sps_info si;

    (void)state;
    assert_int_equal(agt_h264_parse_sps(sps_1080, sizeof(sps_1080), &si), 0);
    assert_int_equal(si.profile_idc, 100);
    assert_int_equal(si.level_idc, 40);
    assert_int_equal(si.width, 1920);
    assert_int_equal(si.height, 1080);
    assert_int_equal(si.time_scale / si.num_units_in_tick, 60);
}

static void test_h264_sps_synthetic_fields(void **state)
{
    uint8_t nal[64];
    struct agt_sps_info si;
    size_t n;

    (void)state;
    n = make_sps(nal, 40, 30, 0, 0, 0);
    assert_int_equal(agt_h264_parse_sps(nal, n, &si), 0);
    assert_int_equal(si.profile_idc, 66);
    assert_int_equal(si.constraint_flags, 0xc0);
    assert_int_equal(si.width, 640);
    assert_int_equal(si.height, 480);
    assert_false(si.timing_present);
    n = make_sps(nal, 120, 68, 4, 1001, 60000);
    assert_int_equal(agt_h264_parse_sps(nal, n, &si), 0);
    assert_int_equal(si.height, 1080);
    assert_int_equal(si.num_units_in_tick, 1001);
    assert_int_equal(si.time_scale, 60000);
}

static void test_h264_sps_truncated_and_garbage_rejected(void **state)
{
    struct guarded g;
    struct agt_sps_info si;
    uint8_t bad[sizeof(sps_320)];

    (void)state;
    assert_int_equal(guarded_init(&g, 4096), 0);
    for (size_t len = 0; len <= sizeof(sps_320); len++) {
        const uint8_t *p = guarded_place(&g, sps_320, len);
        int rc = agt_h264_parse_sps(p, len, &si);
        assert_true(rc == 0 || rc == -EINVAL);
        if (len < 8) /* cut before the picture size */
            assert_int_equal(rc, -EINVAL);
    }
    memcpy(bad, sps_320, sizeof(bad));
    bad[0] = 0x68; /* a PPS header */
    assert_int_equal(agt_h264_parse_sps(guarded_place(&g, bad, sizeof(bad)), sizeof(bad), &si),
                     -EINVAL);
    memset(bad + 1, 0, sizeof(bad) - 1); /* endless leading zeros of an exp-Golomb code */
    bad[0] = 0x67;
    bad[1] = 66;
    assert_int_equal(agt_h264_parse_sps(guarded_place(&g, bad, sizeof(bad)), sizeof(bad), &si),
                     -EINVAL);
    guarded_free(&g);
}

static void test_h264_annexb_start_code_variants(void **state)
{
    struct stream *s = calloc(1, sizeof(*s));
    struct agt_clip *c;
    char err[160];
    struct guarded g;

    (void)state;
    put_nal(s, true, sps_320, sizeof(sps_320));
    put_nal(s, false, pps_320, sizeof(pps_320));
    put_slice(s, false, 0x65, 300);
    s->b[s->len++] = 0; /* trailing_zero_8bits before a 4-byte start code */
    put_slice(s, true, 0x41, 120);
    put_slice(s, false, 0x41, 90);
    s->b[s->len++] = 0; /* and at the very end */
    s->b[s->len++] = 0;
    assert_int_equal(guarded_init(&g, sizeof(s->b)), 0);
    const uint8_t *buf = guarded_place(&g, s->b, s->len);
    assert_int_equal(agt_clip_parse(buf, s->len, AGT_CLIP_AUTO, 0, &c, err, sizeof(err)), 0);
    check_invariants(c, buf, s->len);
    assert_int_equal(c->format, AGT_CLIP_ANNEXB);
    assert_int_equal(c->n_aus, 3);
    assert_int_equal(c->aus[0].nal_count, 3);
    assert_true(c->aus[0].keyframe);
    assert_false(c->aus[1].keyframe);
    const struct agt_nal *n0 = agt_clip_au_nals(c, &c->aus[0]);
    assert_int_equal(n0[0].len, sizeof(sps_320));
    assert_memory_equal(n0[0].data, sps_320, sizeof(sps_320));
    assert_int_equal(n0[1].len, sizeof(pps_320));
    assert_int_equal(n0[2].len, 300); /* trailing zero stripped */
    assert_int_equal(agt_clip_au_nals(c, &c->aus[1])[0].len, 120);
    assert_int_equal(agt_clip_au_nals(c, &c->aus[2])[0].len, 90);
    assert_true(c->fps > 7.999 && c->fps < 8.001); /* from the SPS VUI timing */
    assert_int_equal(c->aus[0].duration, 11250);
    assert_int_equal(c->duration_90k, 3 * 11250);
    assert_int_equal(c->info.width, 320);
    agt_clip_free(c);
    guarded_free(&g);
    free(s);
}

static void test_h264_annexb_keyframes_get_parameter_sets(void **state)
{
    struct stream *s = calloc(1, sizeof(*s));
    static const uint8_t aud[] = {0x09, 0xf0};
    struct agt_clip *c;

    (void)state;
    put_nal(s, true, aud, sizeof(aud));
    put_nal(s, true, sps_320, sizeof(sps_320));
    put_nal(s, true, pps_320, sizeof(pps_320));
    put_slice(s, true, 0x65, 50);
    put_nal(s, true, aud, sizeof(aud));
    put_slice(s, true, 0x41, 50);
    put_nal(s, true, aud, sizeof(aud));
    put_slice(s, true, 0x65, 50); /* IDR without parameter sets in front */
    assert_int_equal(agt_clip_parse(s->b, s->len, AGT_CLIP_ANNEXB, 0, &c, NULL, 0), 0);
    assert_int_equal(c->n_aus, 3);
    const struct agt_au *k = &c->aus[2];
    const struct agt_nal *n = agt_clip_au_nals(c, k);
    assert_true(k->keyframe);
    assert_int_equal(k->nal_count, 4); /* AUD, SPS, PPS, IDR: AUD stays first */
    assert_int_equal(n[0].data[0] & 0x1f, 9);
    assert_int_equal(n[1].data[0] & 0x1f, 7);
    assert_int_equal(n[2].data[0] & 0x1f, 8);
    assert_int_equal(n[3].data[0] & 0x1f, 5);
    assert_int_equal(c->aus[1].nal_count, 2);
    agt_clip_free(c);
    free(s);
}

static void test_h264_annexb_fps_fallbacks(void **state)
{
    struct stream *s = calloc(1, sizeof(*s));
    uint8_t sps[64];
    size_t n = make_sps(sps, 20, 15, 0, 0, 0); /* no VUI timing */
    struct agt_clip *c;

    (void)state;
    put_nal(s, true, sps, n);
    put_nal(s, true, pps_320, sizeof(pps_320));
    put_slice(s, true, 0x65, 40);
    put_slice(s, true, 0x41, 40);
    assert_int_equal(agt_clip_parse(s->b, s->len, AGT_CLIP_AUTO, 0, &c, NULL, 0), 0);
    assert_true(c->fps == 25.0);
    assert_int_equal(c->aus[1].duration, 3600);
    agt_clip_free(c);
    assert_int_equal(agt_clip_parse(s->b, s->len, AGT_CLIP_AUTO, 10, &c, NULL, 0), 0);
    assert_true(c->fps == 10.0);
    assert_int_equal(c->aus[0].duration, 9000);
    assert_int_equal(c->info.width, 320);
    agt_clip_free(c);
    assert_int_equal(agt_clip_parse(s->b, s->len, AGT_CLIP_AUTO, -1, &c, NULL, 0), -EINVAL);
    free(s);
}

/* Each case must be rejected with -EINVAL and a reason, never crash. */
static void test_h264_annexb_garbage_rejected(void **state)
{
    static const uint8_t no_sc[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    static const uint8_t junk_first[] = {7, 0, 0, 1, 0x65, 0x88};
    static const uint8_t forbidden[] = {0, 0, 1, 0xe5, 0x88};
    static const uint8_t reserved[] = {0, 0, 1, 0x1c, 0x88};
    static const uint8_t no_params[] = {0, 0, 1, 0x65, 0x88, 0x84};
    static const uint8_t sc_only[] = {0, 0, 0, 1};
    const struct {
        const uint8_t *p;
        size_t len;
    } cases[] = {
        {no_sc, sizeof(no_sc)},         {junk_first, sizeof(junk_first)},
        {forbidden, sizeof(forbidden)}, {reserved, sizeof(reserved)},
        {no_params, sizeof(no_params)}, {sc_only, sizeof(sc_only)},
        {sc_only, 3},                   {sc_only, 0},
    };
    struct guarded g;
    struct agt_clip *c;
    char err[160];

    (void)state;
    assert_int_equal(guarded_init(&g, 64), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const uint8_t *p = guarded_place(&g, cases[i].p, cases[i].len);
        err[0] = '\0';
        assert_int_equal(agt_clip_parse(p, cases[i].len, AGT_CLIP_ANNEXB, 0, &c, err,
                                        sizeof(err)),
                         -EINVAL);
        assert_null(c);
        assert_true(strlen(err) > 0);
    }
    guarded_free(&g);
}

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

/* Parses buf placed against the guard page; a success must satisfy the invariants. */
static void parse_guarded(struct guarded *g, const uint8_t *data, size_t len,
                          enum agt_clip_format fmt)
{
    const uint8_t *p = guarded_place(g, data, len);
    struct agt_clip *c = NULL;
    int rc = agt_clip_parse(p, len, fmt, 0, &c, NULL, 0);

    assert_true(rc == 0 || rc == -EINVAL);
    if (rc == 0) {
        check_invariants(c, p, len);
        agt_clip_free(c);
    }
}

static void test_h264_annexb_fuzz_mutations(void **state)
{
    struct stream *s = calloc(1, sizeof(*s));
    uint8_t *m = malloc(sizeof(s->b));
    struct guarded g;

    (void)state;
    put_nal(s, true, sps_320, sizeof(sps_320));
    put_nal(s, false, pps_320, sizeof(pps_320));
    put_slice(s, false, 0x65, 200);
    put_slice(s, true, 0x41, 60);
    put_slice(s, false, 0x41, 30);
    assert_int_equal(guarded_init(&g, sizeof(s->b)), 0);
    for (size_t len = 0; len <= s->len; len++) /* every truncation */
        parse_guarded(&g, s->b, len, AGT_CLIP_AUTO);
    for (int iter = 0; iter < 20000; iter++) { /* byte flips, including into start codes */
        size_t len = s->len - rnd() % 16;
        memcpy(m, s->b, len);
        for (unsigned k = 0, flips = 1 + rnd() % 4; k < flips; k++)
            m[rnd() % len] = (uint8_t)(rnd() % 4 == 0 ? rnd() % 4 : rnd());
        parse_guarded(&g, m, len, AGT_CLIP_AUTO);
    }
    for (int iter = 0; iter < 2000; iter++) { /* pure noise, both formats */
        size_t len = rnd() % 512;
        for (size_t k = 0; k < len; k++)
            m[k] = (uint8_t)(rnd() % 3 == 0 ? 0 : rnd());
        parse_guarded(&g, m, len, iter % 2 ? AGT_CLIP_MP4 : AGT_CLIP_ANNEXB);
    }
    guarded_free(&g);
    free(m);
    free(s);
}

static void skip_without_clips(void)
{
    if (!clips.ok) {
        print_message("skipped: ffmpeg with libx264 could not make fixture clips\n");
        skip();
    }
}

static void test_h264_mp4_loads_clip(void **state)
{
    struct agt_clip *c;
    struct stat st;

    (void)state;
    skip_without_clips();
    assert_int_equal(stat(clips.mp4, &st), 0);
    assert_int_equal(agt_clip_load(clips.mp4, 0, &c), 0);
    assert_int_equal(c->format, AGT_CLIP_MP4);
    assert_int_equal(c->n_aus, 16);
    assert_int_equal(c->info.width, 320);
    assert_int_equal(c->info.height, 240);
    assert_true(c->fps > 7.99 && c->fps < 8.01);
    assert_int_equal(c->duration_90k, 2 * 90000);
    for (size_t i = 0; i < c->n_aus; i++) {
        assert_int_equal(c->aus[i].keyframe, i % 8 == 0);
        assert_int_equal(c->aus[i].duration, 11250);
        if (c->aus[i].keyframe) /* SPS+PPS from avcC travel in-band with each keyframe */
            assert_int_equal(agt_clip_au_nals(c, &c->aus[i])[0].data[0] & 0x1f, 7);
    }
    check_invariants(c, c->owned, (size_t)st.st_size);
    agt_clip_free(c);
}

static bool is_param_set(const struct agt_nal *n)
{
    return (n->data[0] & 0x1f) == 7 || (n->data[0] & 0x1f) == 8;
}

/* The same encode as MP4 and Annex-B must give identical pictures. */
static void test_h264_mp4_matches_annexb(void **state)
{
    struct agt_clip *a, *b;

    (void)state;
    skip_without_clips();
    assert_int_equal(agt_clip_load(clips.mp4_fast, 0, &a), 0);
    assert_int_equal(agt_clip_load(clips.h264, 0, &b), 0);
    assert_int_equal(b->format, AGT_CLIP_ANNEXB);
    assert_int_equal(a->n_aus, b->n_aus);
    assert_true(b->fps > 7.99 && b->fps < 8.01);
    assert_int_equal(a->sps.len, b->sps.len);
    assert_memory_equal(a->sps.data, b->sps.data, a->sps.len);
    for (size_t i = 0; i < a->n_aus; i++) {
        const struct agt_nal *na = agt_clip_au_nals(a, &a->aus[i]);
        const struct agt_nal *nb = agt_clip_au_nals(b, &b->aus[i]);
        uint32_t ia = 0, ib = 0;
        assert_int_equal(a->aus[i].keyframe, b->aus[i].keyframe);
        assert_int_equal(a->aus[i].duration, b->aus[i].duration);
        for (;;) {
            while (ia < a->aus[i].nal_count && is_param_set(&na[ia]))
                ia++;
            while (ib < b->aus[i].nal_count && is_param_set(&nb[ib]))
                ib++;
            if (ia == a->aus[i].nal_count || ib == b->aus[i].nal_count)
                break;
            assert_int_equal(na[ia].len, nb[ib].len);
            assert_memory_equal(na[ia].data, nb[ib].data, na[ia].len);
            ia++;
            ib++;
        }
        assert_int_equal(ia, a->aus[i].nal_count);
        assert_int_equal(ib, b->aus[i].nal_count);
    }
    agt_clip_free(a);
    agt_clip_free(b);
}

/* Every truncation of the moov-first file and random corruption of its boxes. */
static void test_h264_mp4_truncated_and_corrupt_rejected(void **state)
{
    size_t len = 0;
    uint8_t *file, *m;
    struct guarded g;

    (void)state;
    skip_without_clips();
    file = slurp(clips.mp4_fast, &len);
    assert_non_null(file);
    m = malloc(len);
    assert_int_equal(guarded_init(&g, len), 0);
    for (size_t l = 0; l < len; l += l < 4096 ? 1 : 61) {
        const uint8_t *p = guarded_place(&g, file, l);
        struct agt_clip *c = NULL;
        int rc = agt_clip_parse(p, l, AGT_CLIP_AUTO, 0, &c, NULL, 0);
        assert_true(rc == -EINVAL); /* the last sample is always cut off */
        assert_null(c);
    }
    parse_guarded(&g, file, len, AGT_CLIP_AUTO);
    for (int iter = 0; iter < 3000; iter++) { /* corrupt the (first ~2 KiB) moov area */
        memcpy(m, file, len);
        for (unsigned k = 0, flips = 1 + rnd() % 3; k < flips; k++)
            m[rnd() % (len < 2048 ? len : 2048)] = (uint8_t)(rnd() % 2 ? rnd() : rnd() % 8);
        parse_guarded(&g, m, len, AGT_CLIP_AUTO);
    }
    guarded_free(&g);
    free(m);
    free(file);
}

static void test_h264_load_errors(void **state)
{
    struct agt_clip *c = (struct agt_clip *)1;
    char path[160];
    int fd;

    (void)state;
    assert_int_equal(agt_clip_load("/nonexistent/clip.h264", 0, &c), -ENOENT);
    assert_null(c);
    assert_int_equal(agt_clip_load("/tmp", 0, &c), -EINVAL);
    snprintf(path, sizeof(path), "/tmp/camrelay-agt-empty-%d", (int)getpid());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(agt_clip_load(path, 0, &c), -EINVAL);
    unlink(path);
}

static int group_setup(void **state)
{
    (void)state;
    clips_make(&clips);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    clips_remove(&clips);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h264_sps_real_320x240),
        cmocka_unit_test(test_h264_sps_real_1080p_cropped),
        cmocka_unit_test(test_h264_sps_synthetic_fields),
        cmocka_unit_test(test_h264_sps_truncated_and_garbage_rejected),
        cmocka_unit_test(test_h264_annexb_start_code_variants),
        cmocka_unit_test(test_h264_annexb_keyframes_get_parameter_sets),
        cmocka_unit_test(test_h264_annexb_fps_fallbacks),
        cmocka_unit_test(test_h264_annexb_garbage_rejected),
        cmocka_unit_test(test_h264_annexb_fuzz_mutations),
        cmocka_unit_test(test_h264_mp4_loads_clip),
        cmocka_unit_test(test_h264_mp4_matches_annexb),
        cmocka_unit_test(test_h264_mp4_truncated_and_corrupt_rejected),
        cmocka_unit_test(test_h264_load_errors),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
