/* H.264 clip loading: Annex-B scanning, SPS parsing and access-unit assembly for the simulator. */
#include "agent/h264.h"

#include "agent/h264_int.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_FPS 25.0
#define MAX_FPS 1000.0
#define MIN_FPS 0.1
#define MAX_DURATION_90K 900000u /* one frame may last at most 10 s */

/* ---- bit reader over an RBSP (emulation prevention already removed) ---- */

/* Invariant: pos <= nbits. Reading past the end sets bad and yields zeros. */
struct bitreader {
    const uint8_t *p;
    size_t nbits;
    size_t pos;
    bool bad;
};

static uint32_t br_bits(struct bitreader *br, unsigned n)
{
    uint32_t v = 0;

    if (n > 32 || br->nbits - br->pos < n) {
        br->bad = true;
        br->pos = br->nbits;
        return 0;
    }
    for (unsigned i = 0; i < n; i++) {
        size_t bit = br->pos++;
        v = (v << 1) | ((br->p[bit >> 3] >> (7 - (bit & 7))) & 1u);
    }
    return v;
}

/* Exp-Golomb ue(v); codes longer than 32 bits are invalid in an SPS. */
static uint32_t br_ue(struct bitreader *br)
{
    unsigned zeros = 0;

    while (!br->bad && br_bits(br, 1) == 0) {
        if (++zeros > 31) {
            br->bad = true;
            return 0;
        }
    }
    if (br->bad)
        return 0;
    return (uint32_t)(((uint64_t)1 << zeros) - 1 + br_bits(br, zeros));
}

static int64_t br_se(struct bitreader *br)
{
    uint64_t k = br_ue(br);

    return (k & 1) ? (int64_t)((k + 1) / 2) : -(int64_t)(k / 2);
}

/* Copies a NAL payload dropping emulation-prevention bytes (00 00 03 -> 00 00). Returns the
 * RBSP length, or SIZE_MAX if it does not fit in cap. */
static size_t rbsp_unescape(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    size_t n = 0;
    unsigned zeros = 0;

    for (size_t i = 0; i < len; i++) {
        uint8_t c = src[i];
        if (zeros >= 2 && c == 3) {
            zeros = 0;
            continue;
        }
        if (n == cap)
            return SIZE_MAX;
        dst[n++] = c;
        zeros = c == 0 ? zeros + 1 : 0;
    }
    return n;
}

static void skip_scaling_list(struct bitreader *br, unsigned size)
{
    int64_t last = 8, next = 8;

    for (unsigned j = 0; j < size && !br->bad; j++) {
        if (next != 0) {
            int64_t delta = br_se(br);
            if (delta < -128 || delta > 127) {
                br->bad = true;
                return;
            }
            next = (last + delta + 256) % 256;
        }
        last = next == 0 ? last : next;
    }
}

static bool high_profile(unsigned p)
{
    return p == 100 || p == 110 || p == 122 || p == 244 || p == 44 || p == 83 || p == 86 ||
           p == 118 || p == 128 || p == 138 || p == 139 || p == 134 || p == 135;
}

/* Reads the VUI only as far as timing_info; a broken VUI just means "no timing". */
static void parse_vui_timing(struct bitreader *br, struct agt_sps_info *info)
{
    if (br_bits(br, 1) && br_bits(br, 8) == 255) /* aspect_ratio_info, Extended_SAR */
        br_bits(br, 32);
    if (br_bits(br, 1)) /* overscan_info_present */
        br_bits(br, 1);
    if (br_bits(br, 1)) { /* video_signal_type_present */
        br_bits(br, 4);
        if (br_bits(br, 1))
            br_bits(br, 24);
    }
    if (br_bits(br, 1)) { /* chroma_loc_info_present */
        br_ue(br);
        br_ue(br);
    }
    if (br_bits(br, 1)) {
        uint32_t units = br_bits(br, 32);
        uint32_t scale = br_bits(br, 32);
        if (!br->bad && units > 0 && scale > 0) {
            info->timing_present = true;
            info->num_units_in_tick = units;
            info->time_scale = scale;
        }
    }
}

int agt_h264_parse_sps(const uint8_t *nal, size_t len, struct agt_sps_info *out)
{
    uint8_t rbsp[AGT_SPS_MAX_BYTES];
    struct agt_sps_info info = {0};
    uint32_t chroma = 1;
    bool separate_planes = false;

    if (!nal || !out || len < 4 || (nal[0] & 0x80) || (nal[0] & 0x1f) != AGT_NAL_SPS)
        return -EINVAL;
    size_t n = rbsp_unescape(nal + 1, len - 1, rbsp, sizeof(rbsp));
    if (n == SIZE_MAX)
        return -EINVAL;
    struct bitreader br = {.p = rbsp, .nbits = n * 8};

    info.profile_idc = (uint8_t)br_bits(&br, 8);
    info.constraint_flags = (uint8_t)br_bits(&br, 8);
    info.level_idc = (uint8_t)br_bits(&br, 8);
    if (br_ue(&br) > 31) /* seq_parameter_set_id */
        return -EINVAL;
    if (high_profile(info.profile_idc)) {
        chroma = br_ue(&br);
        if (chroma > 3)
            return -EINVAL;
        if (chroma == 3)
            separate_planes = br_bits(&br, 1);
        if (br_ue(&br) > 6 || br_ue(&br) > 6) /* bit_depth_luma/chroma_minus8 */
            return -EINVAL;
        br_bits(&br, 1); /* qpprime_y_zero_transform_bypass */
        if (br_bits(&br, 1)) {
            for (unsigned i = 0; i < (chroma != 3 ? 8u : 12u); i++)
                if (br_bits(&br, 1))
                    skip_scaling_list(&br, i < 6 ? 16 : 64);
        }
    }
    if (br_ue(&br) > 12) /* log2_max_frame_num_minus4 */
        return -EINVAL;
    uint32_t poc_type = br_ue(&br);
    if (poc_type == 0) {
        if (br_ue(&br) > 12)
            return -EINVAL;
    } else if (poc_type == 1) {
        br_bits(&br, 1);
        br_se(&br);
        br_se(&br);
        uint32_t cycle = br_ue(&br);
        if (cycle > 255)
            return -EINVAL;
        for (uint32_t i = 0; i < cycle && !br.bad; i++)
            br_se(&br);
    } else if (poc_type != 2) {
        return -EINVAL;
    }
    br_ue(&br);      /* max_num_ref_frames */
    br_bits(&br, 1); /* gaps_in_frame_num_allowed */
    uint64_t w_mbs = (uint64_t)br_ue(&br) + 1;
    uint64_t h_units = (uint64_t)br_ue(&br) + 1;
    bool frame_mbs_only = br_bits(&br, 1);
    if (!frame_mbs_only)
        br_bits(&br, 1);
    br_bits(&br, 1); /* direct_8x8_inference */
    uint64_t crop[4] = {0};
    if (br_bits(&br, 1))
        for (int i = 0; i < 4; i++)
            crop[i] = br_ue(&br);
    if (br.bad || w_mbs > 1024 || h_units > 1024)
        return -EINVAL;
    if (br_bits(&br, 1))
        parse_vui_timing(&br, &info);

    uint64_t w = w_mbs * 16, h = h_units * 16 * (frame_mbs_only ? 1 : 2);
    uint64_t cx = 1, cy = frame_mbs_only ? 1 : 2;
    if (!separate_planes && chroma != 0) {
        cx = chroma == 3 ? 1 : 2;
        cy *= chroma == 1 ? 2 : 1;
    }
    if (cx * (crop[0] + crop[1]) >= w || cy * (crop[2] + crop[3]) >= h)
        return -EINVAL;
    info.width = (uint32_t)(w - cx * (crop[0] + crop[1]));
    info.height = (uint32_t)(h - cy * (crop[2] + crop[3]));
    *out = info;
    return 0;
}

/* ---- clip builder ---- */

int agt__clip_fail(struct agt__clip_build *b, int rc, const char *fmt, ...)
{
    va_list ap;

    if (b->err && b->err_len > 0) {
        va_start(ap, fmt);
        vsnprintf(b->err, b->err_len, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* Grows *arr to hold one more element of size elem; caps the element count at max. */
static int grow(void **arr, size_t *cap, size_t used, size_t elem, size_t max)
{
    if (used < *cap)
        return 0;
    if (used >= max)
        return -E2BIG;
    size_t ncap = *cap ? *cap * 2 : 256;
    if (ncap > max)
        ncap = max;
    void *p = realloc(*arr, ncap * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

int agt__clip_add_nal(struct agt__clip_build *b, const uint8_t *data, size_t len)
{
    struct agt_clip *c = b->clip;
    int rc = grow((void **)&c->nals, &b->cap_nals, c->n_nals, sizeof(*c->nals),
                  AGT_CLIP_MAX_BYTES / 2);

    if (rc == -ENOMEM)
        return agt__clip_fail(b, rc, "out of memory");
    if (rc)
        return agt__clip_fail(b, -EINVAL, "too many NAL units");
    c->nals[c->n_nals].data = data;
    c->nals[c->n_nals].len = len;
    c->n_nals++;
    return 0;
}

int agt__clip_add_au(struct agt__clip_build *b, size_t nal_first, uint32_t duration,
                     int32_t cts_offset, bool keyframe)
{
    struct agt_clip *c = b->clip;

    if (nal_first >= c->n_nals || c->n_nals - nal_first > UINT32_MAX - 2)
        return agt__clip_fail(b, -EINVAL, "access unit %zu has no usable NAL units", c->n_aus);
    int rc = grow((void **)&c->aus, &b->cap_aus, c->n_aus, sizeof(*c->aus), AGT_CLIP_MAX_FRAMES);
    if (rc == -ENOMEM)
        return agt__clip_fail(b, rc, "out of memory");
    if (rc)
        return agt__clip_fail(b, -EINVAL, "more than %u frames", AGT_CLIP_MAX_FRAMES);
    c->aus[c->n_aus] = (struct agt_au){
        .nal_first = nal_first,
        .nal_count = (uint32_t)(c->n_nals - nal_first),
        .duration = duration,
        .cts_offset = cts_offset,
        .keyframe = keyframe,
    };
    c->n_aus++;
    return 0;
}

int agt__clip_check_nal(struct agt__clip_build *b, const uint8_t *nal, size_t len, size_t where)
{
    unsigned type;

    if (len == 0)
        return agt__clip_fail(b, -EINVAL, "empty NAL unit at offset %zu", where);
    type = nal[0] & 0x1f;
    if (nal[0] & 0x80)
        return agt__clip_fail(b, -EINVAL, "NAL unit at offset %zu has forbidden_zero_bit set",
                              where);
    /* 0 and 24..31 are unspecified; 24..29 would collide with RTP aggregation/FU types. */
    if (type == 0 || type >= 24)
        return agt__clip_fail(b, -EINVAL, "NAL unit at offset %zu has reserved type %u", where,
                              type);
    return 0;
}

/* ---- Annex-B ---- */

/* Finds the next 00 00 01 at or after from. Returns its position (first zero) and the payload
 * start in *payload, or len if there is none. */
static size_t find_start_code(const uint8_t *buf, size_t len, size_t from, size_t *payload)
{
    size_t i = from;

    while (i < len && len - i >= 3) {
        const uint8_t *p = memchr(buf + i + 2, 1, len - i - 2);
        if (!p)
            return len;
        size_t k = (size_t)(p - buf);
        if (buf[k - 1] == 0 && buf[k - 2] == 0) {
            *payload = k + 1;
            return k - 2;
        }
        i = k - 1;
    }
    return len;
}

/* AU boundary detection (H.264 7.4.1.2.3): state of the AU being collected. */
struct annexb_au {
    size_t first;
    bool open;
    bool has_vcl;
    bool key;
};

static int annexb_flush(struct agt__clip_build *b, struct annexb_au *au)
{
    int rc = 0;

    if (au->open && au->has_vcl)
        rc = agt__clip_add_au(b, au->first, 0, 0, au->key);
    else if (au->open)
        b->clip->n_nals = au->first; /* parameter sets/SEI with no picture after them */
    *au = (struct annexb_au){0};
    return rc;
}

static int annexb_nal(struct agt__clip_build *b, struct annexb_au *au, const uint8_t *nal,
                      size_t len, size_t where)
{
    int rc = agt__clip_check_nal(b, nal, len, where);
    unsigned type;
    bool vcl, starts = false;

    if (rc)
        return rc;
    type = nal[0] & 0x1f;
    vcl = type >= 1 && type <= 5;
    if (type == AGT_NAL_AUD) {
        starts = au->open;
    } else if (au->has_vcl) {
        if (type == 6 || type == 7 || type == 8 || (type >= 14 && type <= 18))
            starts = true;
        /* first_mb_in_slice == 0 (ue '1') marks the first slice of a new picture */
        else if ((type == 1 || type == 2 || type == 5) && len >= 2 && (nal[1] & 0x80))
            starts = true;
    }
    if (starts) {
        rc = annexb_flush(b, au);
        if (rc)
            return rc;
    }
    if (!au->open) {
        au->open = true;
        au->first = b->clip->n_nals;
    }
    au->has_vcl |= vcl;
    au->key |= type == AGT_NAL_IDR;
    return agt__clip_add_nal(b, nal, len);
}

static int parse_annexb(struct agt__clip_build *b, const uint8_t *buf, size_t len)
{
    struct annexb_au au = {0};
    size_t payload = 0;
    size_t sc = find_start_code(buf, len, 0, &payload);
    int rc;

    if (sc == len)
        return agt__clip_fail(b, -EINVAL, "no Annex-B start code (00 00 01) found");
    for (size_t i = 0; i < sc; i++)
        if (buf[i] != 0)
            return agt__clip_fail(b, -EINVAL, "garbage before the first start code");
    while (payload < len) {
        size_t next_payload = len;
        size_t next = find_start_code(buf, len, payload, &next_payload);
        size_t end = next;
        /* trailing zeros belong to a 4-byte start code or trailing_zero_8bits */
        while (end > payload && buf[end - 1] == 0)
            end--;
        if (end > payload) {
            rc = annexb_nal(b, &au, buf + payload, end - payload, payload);
            if (rc)
                return rc;
        }
        if (next == len)
            break;
        payload = next_payload;
    }
    return annexb_flush(b, &au);
}

/* ---- finishing: parameter sets, frame rate, durations ---- */

static const struct agt_nal *find_nal_type(const struct agt_clip *c, unsigned type)
{
    for (size_t i = 0; i < c->n_nals; i++)
        if ((c->nals[i].data[0] & 0x1f) == type)
            return &c->nals[i];
    return NULL;
}

static bool au_has_type(const struct agt_clip *c, const struct agt_au *au, unsigned type)
{
    const struct agt_nal *n = agt_clip_au_nals(c, au);

    for (uint32_t i = 0; i < au->nal_count; i++)
        if ((n[i].data[0] & 0x1f) == type)
            return true;
    return false;
}

/* Gives every keyframe its own SPS+PPS (after a leading AUD) so playback can start or loop at
 * any keyframe without relying on the receiver having kept the out-of-band parameter sets. */
static int inject_parameter_sets(struct agt__clip_build *b)
{
    struct agt_clip *c = b->clip;
    size_t extra = 0, k = 0;

    for (size_t i = 0; i < c->n_aus; i++)
        if (c->aus[i].keyframe && !au_has_type(c, &c->aus[i], AGT_NAL_SPS))
            extra += 2;
    if (extra == 0)
        return 0;
    struct agt_nal *nals = malloc((c->n_nals + extra) * sizeof(*nals));
    if (!nals)
        return agt__clip_fail(b, -ENOMEM, "out of memory");
    for (size_t i = 0; i < c->n_aus; i++) {
        struct agt_au *au = &c->aus[i];
        const struct agt_nal *src = agt_clip_au_nals(c, au);
        size_t first = k;
        uint32_t j = 0;
        bool add = au->keyframe && !au_has_type(c, au, AGT_NAL_SPS);

        if (add && (src[0].data[0] & 0x1f) == AGT_NAL_AUD)
            nals[k++] = src[j++];
        if (add) {
            nals[k++] = c->sps;
            nals[k++] = c->pps;
        }
        for (; j < au->nal_count; j++)
            nals[k++] = src[j];
        au->nal_first = first;
        au->nal_count = (uint32_t)(k - first);
    }
    free(c->nals);
    c->nals = nals;
    c->n_nals = k;
    b->cap_nals = k;
    return 0;
}

static void set_durations(struct agt_clip *c, double fps_override)
{
    if (c->format == AGT_CLIP_ANNEXB) {
        const struct agt_sps_info *si = &c->info;
        double fps = 0;
        if (si->timing_present)
            fps = (double)si->time_scale / (2.0 * si->num_units_in_tick);
        if (!(fps >= MIN_FPS && fps <= MAX_FPS))
            fps = fps_override > 0 ? fps_override : DEFAULT_FPS;
        c->fps = fps;
        for (size_t i = 0; i < c->n_aus; i++) {
            long long d = llround((double)(i + 1) * 90000.0 / fps) -
                          llround((double)i * 90000.0 / fps);
            c->aus[i].duration = d < 1 ? 1 : (uint32_t)d;
        }
    } else {
        /* MP4: zero or absurd stts deltas were stored as 0; give them the average of the rest */
        uint64_t total = 0, n = 0;
        for (size_t i = 0; i < c->n_aus; i++) {
            if (c->aus[i].duration) {
                total += c->aus[i].duration;
                n++;
            }
        }
        uint32_t nominal = n ? (uint32_t)(total / n)
                             : (uint32_t)lround(90000.0 / (fps_override > 0 ? fps_override
                                                                             : DEFAULT_FPS));
        if (nominal == 0)
            nominal = 1;
        for (size_t i = 0; i < c->n_aus; i++)
            if (c->aus[i].duration == 0)
                c->aus[i].duration = nominal;
    }
    c->duration_90k = 0;
    for (size_t i = 0; i < c->n_aus; i++)
        c->duration_90k += c->aus[i].duration;
    if (c->format == AGT_CLIP_MP4)
        c->fps = 90000.0 * (double)c->n_aus / (double)c->duration_90k;
}

static int clip_finish(struct agt__clip_build *b, double fps_override)
{
    struct agt_clip *c = b->clip;
    const struct agt_nal *n;
    size_t i;

    if (c->n_aus == 0)
        return agt__clip_fail(b, -EINVAL, "no video frames found");
    if (c->sps.len == 0 && (n = find_nal_type(c, AGT_NAL_SPS)) != NULL)
        c->sps = *n;
    if (c->pps.len == 0 && (n = find_nal_type(c, AGT_NAL_PPS)) != NULL)
        c->pps = *n;
    if (c->sps.len == 0 || c->pps.len == 0)
        return agt__clip_fail(b, -EINVAL, "no SPS/PPS parameter sets found");
    if (agt_h264_parse_sps(c->sps.data, c->sps.len, &c->info) < 0)
        return agt__clip_fail(b, -EINVAL, "SPS is truncated, corrupt or unsupported");
    for (i = 0; i < c->n_aus && !c->aus[i].keyframe; i++)
        ;
    if (i == c->n_aus)
        return agt__clip_fail(b, -EINVAL, "no keyframe (IDR/sync sample) in %zu frames",
                              c->n_aus);
    c->first_keyframe = i;
    set_durations(c, fps_override);
    return inject_parameter_sets(b);
}

static enum agt_clip_format sniff(const uint8_t *buf, size_t len)
{
    static const char *const boxes[] = {"ftyp", "moov", "mdat", "free", "skip", "wide", "styp"};
    size_t z = 0;

    if (len >= 8)
        for (size_t i = 0; i < sizeof(boxes) / sizeof(boxes[0]); i++)
            if (memcmp(buf + 4, boxes[i], 4) == 0)
                return AGT_CLIP_MP4;
    while (z < len && buf[z] == 0)
        z++;
    if (z >= 2 && z < len && buf[z] == 1)
        return AGT_CLIP_ANNEXB;
    return AGT_CLIP_AUTO;
}

int agt_clip_parse(const uint8_t *buf, size_t len, enum agt_clip_format fmt, double fps_override,
                   struct agt_clip **out, char *err, size_t err_len)
{
    struct agt__clip_build b = {.err = err, .err_len = err_len};
    int rc;

    if (err && err_len)
        err[0] = '\0';
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!buf && len)
        return agt__clip_fail(&b, -EINVAL, "no input buffer");
    if (len > AGT_CLIP_MAX_BYTES)
        return agt__clip_fail(&b, -EFBIG, "input larger than %u bytes", AGT_CLIP_MAX_BYTES);
    if (isnan(fps_override) || fps_override < 0 || fps_override > MAX_FPS ||
        (fps_override > 0 && fps_override < MIN_FPS))
        return agt__clip_fail(&b, -EINVAL, "frame rate override %g outside %g..%g",
                              fps_override, MIN_FPS, MAX_FPS);
    if (fmt == AGT_CLIP_AUTO)
        fmt = sniff(buf, len);
    if (fmt != AGT_CLIP_ANNEXB && fmt != AGT_CLIP_MP4)
        return agt__clip_fail(&b, -EINVAL,
                              "neither Annex-B H.264 (start code) nor MP4 (ISO-BMFF box)");
    b.clip = calloc(1, sizeof(*b.clip));
    if (!b.clip)
        return agt__clip_fail(&b, -ENOMEM, "out of memory");
    b.clip->format = fmt;
    rc = fmt == AGT_CLIP_MP4 ? agt__mp4_parse(&b, buf, len) : parse_annexb(&b, buf, len);
    if (rc == 0)
        rc = clip_finish(&b, fps_override);
    if (rc) {
        agt_clip_free(b.clip);
        return rc;
    }
    *out = b.clip;
    return 0;
}

void agt_clip_free(struct agt_clip *clip)
{
    if (!clip)
        return;
    free(clip->aus);
    free(clip->nals);
    free(clip->owned);
    free(clip);
}

int agt_clip_load(const char *path, double fps_override, struct agt_clip **out)
{
    char err[192];
    struct stat st;
    uint8_t *buf;
    size_t got = 0;
    int fd, rc;

    if (!path || !out)
        return -EINVAL;
    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        cr_err("h264: cannot open clip %s: %s", path, strerror(-rc));
        return rc;
    }
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        cr_err("h264: cannot stat clip %s: %s", path, strerror(-rc));
        goto out_close_fd;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > AGT_CLIP_MAX_BYTES) {
        rc = S_ISREG(st.st_mode) && st.st_size > 0 ? -EFBIG : -EINVAL;
        cr_err("h264: clip %s: must be a regular, non-empty file of at most %u bytes", path,
               AGT_CLIP_MAX_BYTES);
        goto out_close_fd;
    }
    buf = malloc((size_t)st.st_size);
    if (!buf) {
        rc = -ENOMEM;
        cr_err("h264: clip %s: out of memory for %lld bytes", path, (long long)st.st_size);
        goto out_close_fd;
    }
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rc = r < 0 ? -errno : -EIO;
            cr_err("h264: clip %s: read failed after %zu bytes: %s", path, got, strerror(-rc));
            goto out_free_buf;
        }
        got += (size_t)r;
    }
    rc = agt_clip_parse(buf, got, AGT_CLIP_AUTO, fps_override, out, err, sizeof(err));
    if (rc) {
        cr_err("h264: clip %s: %s", path, err);
        goto out_free_buf;
    }
    (*out)->owned = buf;
    close(fd);
    return 0;

out_free_buf:
    free(buf);
out_close_fd:
    close(fd);
    return rc;
}
