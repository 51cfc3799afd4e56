/* Minimal ISO-BMFF (MP4) demuxer: the first H.264 video track's samples, as access units. */
#include "agent/h264_int.h"

#include <errno.h>
#include <string.h>

#define FOURCC(a, b, c, d)                                                                         \
    ((uint32_t)(uint8_t)(a) << 24 | (uint32_t)(uint8_t)(b) << 16 | (uint32_t)(uint8_t)(c) << 8 |  \
     (uint32_t)(uint8_t)(d))

#define VISUAL_SAMPLE_ENTRY_LEN 78 /* fixed fields before an avc1 entry's child boxes */
#define MAX_FRAME_90K 900000       /* 10 s: longer stts deltas are treated as missing */

/* A bounded byte range inside the input; every read checks against len first. */
struct view {
    const uint8_t *p;
    size_t len;
};

static uint32_t rd16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Takes the next box off *rest. Returns 1 with its type and payload, 0 at the end, -EINVAL if
 * the header is truncated or the size runs past the container. */
static int next_box(struct view *rest, uint32_t *type, struct view *payload)
{
    uint64_t size;
    size_t hdr = 8;

    if (rest->len == 0)
        return 0;
    if (rest->len < 8)
        return -EINVAL;
    size = rd32(rest->p);
    *type = rd32(rest->p + 4);
    if (size == 1) {
        if (rest->len < 16)
            return -EINVAL;
        size = rd64(rest->p + 8);
        hdr = 16;
    } else if (size == 0) {
        size = rest->len; /* extends to the end of the container */
    }
    if (size < hdr || size > rest->len)
        return -EINVAL;
    payload->p = rest->p + hdr;
    payload->len = (size_t)size - hdr;
    rest->p += size;
    rest->len -= (size_t)size;
    return 1;
}

/* Finds the first child of type in parent. Returns 0, -ENOENT, or -EINVAL if malformed. */
static int find_box(struct view parent, uint32_t type, struct view *out)
{
    uint32_t t;
    struct view payload;
    int rc;

    while ((rc = next_box(&parent, &t, &payload)) > 0) {
        if (t == type) {
            *out = payload;
            return 0;
        }
    }
    return rc < 0 ? rc : -ENOENT;
}

static int need_box(struct agt__clip_build *b, struct view parent, uint32_t type,
                    const char *name, struct view *out)
{
    int rc = find_box(parent, type, out);

    if (rc == -ENOENT)
        return agt__clip_fail(b, -EINVAL, "MP4: missing '%s' box", name);
    if (rc < 0)
        return agt__clip_fail(b, -EINVAL, "MP4: malformed box while looking for '%s'", name);
    return 0;
}

/* A full-box table "version/flags, entry_count, entries": checks the count fits the payload. */
static int table(struct agt__clip_build *b, struct view box, size_t skip, size_t entry,
                 const char *name, uint32_t *count, const uint8_t **entries)
{
    if (box.len < skip + 4)
        return agt__clip_fail(b, -EINVAL, "MP4: '%s' box truncated", name);
    *count = rd32(box.p + skip);
    if (*count > (box.len - skip - 4) / entry)
        return agt__clip_fail(b, -EINVAL, "MP4: '%s' claims %u entries, box holds fewer", name,
                              *count);
    *entries = box.p + skip + 4;
    return 0;
}

/* The sample tables of the chosen track, validated to be readable for their entry counts. */
struct track {
    uint32_t timescale;
    unsigned nal_len_size;
    uint32_t n_samples, fixed_size;
    const uint8_t *sizes;
    uint32_t n_chunks;
    const uint8_t *chunks;
    bool co64;
    uint32_t n_stsc, n_stts, n_stss, n_ctts;
    const uint8_t *stsc, *stts, *stss, *ctts;
    bool has_stss, ctts_signed;
};

static int parse_avcc(struct agt__clip_build *b, struct view v, struct track *t)
{
    size_t off = 6;
    unsigned n;

    if (v.len < 7 || v.p[0] != 1)
        return agt__clip_fail(b, -EINVAL, "MP4: avcC truncated or not version 1");
    t->nal_len_size = (v.p[4] & 3u) + 1;
    if (t->nal_len_size == 3)
        return agt__clip_fail(b, -EINVAL, "MP4: avcC NAL length size 3 is invalid");
    for (int set = 0; set < 2; set++) {
        struct agt_nal *dst = set == 0 ? &b->clip->sps : &b->clip->pps;
        if (set == 0) {
            n = v.p[5] & 0x1fu;
        } else {
            if (off >= v.len)
                return agt__clip_fail(b, -EINVAL, "MP4: avcC truncated before PPS count");
            n = v.p[off++];
        }
        for (unsigned i = 0; i < n; i++) {
            if (v.len - off < 2 || v.len - off - 2 < rd16(v.p + off))
                return agt__clip_fail(b, -EINVAL, "MP4: avcC parameter set truncated");
            size_t l = rd16(v.p + off);
            const uint8_t *p = v.p + off + 2;
            off += 2 + l;
            if (dst->len == 0 && l > 0) {
                int rc = agt__clip_check_nal(b, p, l, (size_t)(p - v.p));
                if (rc)
                    return rc;
                dst->data = p;
                dst->len = l;
            }
        }
    }
    return 0;
}

static int parse_stsd(struct agt__clip_build *b, struct view stsd, struct track *t)
{
    struct view rest, entry, avcc;
    uint32_t type;

    if (stsd.len < 8 || rd32(stsd.p + 4) < 1)
        return agt__clip_fail(b, -EINVAL, "MP4: 'stsd' has no sample entry");
    rest = (struct view){stsd.p + 8, stsd.len - 8};
    if (next_box(&rest, &type, &entry) != 1)
        return agt__clip_fail(b, -EINVAL, "MP4: 'stsd' sample entry malformed");
    if (type == FOURCC('e', 'n', 'c', 'v'))
        return agt__clip_fail(b, -EINVAL, "MP4: encrypted video track is not supported");
    if (type != FOURCC('a', 'v', 'c', '1') && type != FOURCC('a', 'v', 'c', '3'))
        return agt__clip_fail(b, -EINVAL, "MP4: video codec '%c%c%c%c' is not H.264 (avc1)",
                              (char)(type >> 24), (char)(type >> 16), (char)(type >> 8),
                              (char)type);
    if (entry.len < VISUAL_SAMPLE_ENTRY_LEN)
        return agt__clip_fail(b, -EINVAL, "MP4: avc1 sample entry truncated");
    entry.p += VISUAL_SAMPLE_ENTRY_LEN;
    entry.len -= VISUAL_SAMPLE_ENTRY_LEN;
    t->nal_len_size = 4;
    int rc = find_box(entry, FOURCC('a', 'v', 'c', 'C'), &avcc);
    if (rc == 0)
        return parse_avcc(b, avcc, t);
    if (rc == -ENOENT && type == FOURCC('a', 'v', 'c', '3'))
        return 0; /* parameter sets are in-band */
    return agt__clip_fail(b, -EINVAL, "MP4: avc1 sample entry without a valid avcC box");
}

static int parse_stbl(struct agt__clip_build *b, struct view stbl, struct track *t)
{
    struct view v;
    int rc;

    if ((rc = need_box(b, stbl, FOURCC('s', 't', 's', 'd'), "stsd", &v)) ||
        (rc = parse_stsd(b, v, t)))
        return rc;
    if ((rc = need_box(b, stbl, FOURCC('s', 't', 's', 'z'), "stsz", &v)))
        return rc;
    if (v.len < 12)
        return agt__clip_fail(b, -EINVAL, "MP4: 'stsz' truncated");
    t->fixed_size = rd32(v.p + 4);
    t->n_samples = rd32(v.p + 8);
    t->sizes = v.p + 12;
    if (t->n_samples == 0)
        return agt__clip_fail(b, -EINVAL, "MP4: video track has no samples "
                                          "(fragmented MP4 is not supported)");
    if (t->n_samples > AGT_CLIP_MAX_FRAMES)
        return agt__clip_fail(b, -EINVAL, "MP4: %u samples exceed the limit of %u",
                              t->n_samples, AGT_CLIP_MAX_FRAMES);
    if (t->fixed_size == 0 && (v.len - 12) / 4 < t->n_samples)
        return agt__clip_fail(b, -EINVAL, "MP4: 'stsz' holds fewer sizes than samples");
    rc = find_box(stbl, FOURCC('s', 't', 'c', 'o'), &v);
    if (rc == -ENOENT) {
        t->co64 = true;
        rc = find_box(stbl, FOURCC('c', 'o', '6', '4'), &v);
    }
    if (rc)
        return agt__clip_fail(b, -EINVAL, "MP4: missing or malformed 'stco'/'co64' box");
    if ((rc = table(b, v, 4, t->co64 ? 8 : 4, "stco", &t->n_chunks, &t->chunks)))
        return rc;
    if ((rc = need_box(b, stbl, FOURCC('s', 't', 's', 'c'), "stsc", &v)) ||
        (rc = table(b, v, 4, 12, "stsc", &t->n_stsc, &t->stsc)))
        return rc;
    if ((rc = need_box(b, stbl, FOURCC('s', 't', 't', 's'), "stts", &v)) ||
        (rc = table(b, v, 4, 8, "stts", &t->n_stts, &t->stts)))
        return rc;
    rc = find_box(stbl, FOURCC('s', 't', 's', 's'), &v);
    t->has_stss = rc == 0;
    if (rc == 0 && (rc = table(b, v, 4, 4, "stss", &t->n_stss, &t->stss)))
        return rc;
    rc = find_box(stbl, FOURCC('c', 't', 't', 's'), &v);
    if (rc == 0) {
        if ((rc = table(b, v, 4, 8, "ctts", &t->n_ctts, &t->ctts)))
            return rc;
        t->ctts_signed = v.p[0] == 1;
    }
    return 0;
}

/* Returns 1 if trak is an H.264 video track (tables filled), 0 if not video, <0 on error. */
static int parse_trak(struct agt__clip_build *b, struct view trak, struct track *t)
{
    struct view mdia, hdlr, mdhd, minf, stbl;
    int rc;

    if ((rc = need_box(b, trak, FOURCC('m', 'd', 'i', 'a'), "mdia", &mdia)) ||
        (rc = need_box(b, mdia, FOURCC('h', 'd', 'l', 'r'), "hdlr", &hdlr)))
        return rc;
    if (hdlr.len < 12)
        return agt__clip_fail(b, -EINVAL, "MP4: 'hdlr' truncated");
    if (rd32(hdlr.p + 8) != FOURCC('v', 'i', 'd', 'e'))
        return 0;
    if ((rc = need_box(b, mdia, FOURCC('m', 'd', 'h', 'd'), "mdhd", &mdhd)))
        return rc;
    if (mdhd.len < 24 || (mdhd.p[0] == 1 && mdhd.len < 36))
        return agt__clip_fail(b, -EINVAL, "MP4: 'mdhd' truncated");
    t->timescale = rd32(mdhd.p + (mdhd.p[0] == 1 ? 20 : 12));
    if (t->timescale == 0)
        return agt__clip_fail(b, -EINVAL, "MP4: video timescale is 0");
    if ((rc = need_box(b, mdia, FOURCC('m', 'i', 'n', 'f'), "minf", &minf)) ||
        (rc = need_box(b, minf, FOURCC('s', 't', 'b', 'l'), "stbl", &stbl)) ||
        (rc = parse_stbl(b, stbl, t)))
        return rc;
    return 1;
}

/* Walks a run-length table ("count, value" pairs) one sample at a time. */
struct rle {
    const uint8_t *e;
    uint32_t n, idx, left;
    uint32_t value;
};

static uint32_t rle_next(struct rle *r)
{
    while (r->left == 0 && r->idx < r->n) {
        r->left = rd32(r->e + (size_t)r->idx * 8);
        r->value = rd32(r->e + (size_t)r->idx * 8 + 4);
        r->idx++;
    }
    if (r->left > 0)
        r->left--;
    return r->value; /* past the table: repeat the last value */
}

static int add_sample(struct agt__clip_build *b, const struct track *t, const uint8_t *buf,
                      size_t len, uint32_t i, uint64_t off, uint32_t size, uint32_t dur,
                      int32_t cts, bool key)
{
    size_t first = b->clip->n_nals;
    size_t l = t->nal_len_size;
    int rc;

    if (size == 0 || off > len || size > len - off)
        return agt__clip_fail(b, -EINVAL, "MP4: sample %u (offset %llu, %u bytes) lies outside "
                              "the file", i + 1, (unsigned long long)off, size);
    const uint8_t *p = buf + off;
    size_t rest = size;
    while (rest > 0) {
        size_t n = 0;
        if (rest < l)
            return agt__clip_fail(b, -EINVAL, "MP4: sample %u has a truncated NAL length",
                                  i + 1);
        for (size_t k = 0; k < l; k++)
            n = n << 8 | p[k];
        if (n > rest - l)
            return agt__clip_fail(b, -EINVAL, "MP4: sample %u has a NAL longer than the sample",
                                  i + 1);
        if ((rc = agt__clip_check_nal(b, p + l, n, (size_t)(p - buf) + l)) ||
            (rc = agt__clip_add_nal(b, p + l, n)))
            return rc;
        p += l + n;
        rest -= l + n;
    }
    return agt__clip_add_au(b, first, dur, cts, key);
}

/* Maps samples to file offsets through stsc/stco and adds each as an AU. */
static int add_samples(struct agt__clip_build *b, const struct track *t, const uint8_t *buf,
                       size_t len)
{
    struct rle stts = {.e = t->stts, .n = t->n_stts}, ctts = {.e = t->ctts, .n = t->n_ctts};
    uint32_t sample = 0, stss_idx = 0;
    uint64_t dts = 0;

    for (uint32_t e = 0; e < t->n_stsc && sample < t->n_samples; e++) {
        uint32_t first = rd32(t->stsc + (size_t)e * 12);
        uint32_t per_chunk = rd32(t->stsc + (size_t)e * 12 + 4);
        uint64_t next = e + 1 < t->n_stsc ? rd32(t->stsc + (size_t)(e + 1) * 12)
                                          : (uint64_t)t->n_chunks + 1;
        if (first < 1 || first > t->n_chunks || next <= first)
            return agt__clip_fail(b, -EINVAL, "MP4: 'stsc' entry %u is out of order", e + 1);
        for (uint64_t c = first; c < next && c <= t->n_chunks && sample < t->n_samples; c++) {
            const uint8_t *ce = t->chunks + (size_t)(c - 1) * (t->co64 ? 8 : 4);
            uint64_t off = t->co64 ? rd64(ce) : rd32(ce);
            for (uint32_t k = 0; k < per_chunk && sample < t->n_samples; k++, sample++) {
                uint32_t size = t->fixed_size ? t->fixed_size : rd32(t->sizes + (size_t)sample * 4);
                uint32_t delta = rle_next(&stts);
                /* exact 90 kHz conversion of the cumulative time: no drift over long clips */
                uint64_t a = (uint64_t)((unsigned __int128)dts * 90000 / t->timescale);
                uint64_t z = (uint64_t)((unsigned __int128)(dts + delta) * 90000 / t->timescale);
                uint32_t dur = z - a > MAX_FRAME_90K ? 0 : (uint32_t)(z - a);
                int64_t cts = 0;
                bool key = !t->has_stss;
                int rc;

                dts += delta;
                if (t->n_ctts) {
                    uint32_t raw = rle_next(&ctts);
                    int64_t o = t->ctts_signed ? (int64_t)(int32_t)raw : (int64_t)raw;
                    cts = o * 90000 / (int64_t)t->timescale;
                    if (cts > MAX_FRAME_90K || cts < -MAX_FRAME_90K)
                        cts = 0;
                }
                while (t->has_stss && stss_idx < t->n_stss &&
                       rd32(t->stss + (size_t)stss_idx * 4) < sample + 1)
                    stss_idx++;
                if (t->has_stss && stss_idx < t->n_stss)
                    key = rd32(t->stss + (size_t)stss_idx * 4) == sample + 1;
                rc = add_sample(b, t, buf, len, sample, off, size, dur, (int32_t)cts, key);
                if (rc)
                    return rc;
                off += size;
            }
        }
    }
    if (sample < t->n_samples)
        return agt__clip_fail(b, -EINVAL, "MP4: chunk tables cover %u of %u samples", sample,
                              t->n_samples);
    return 0;
}

int agt__mp4_parse(struct agt__clip_build *b, const uint8_t *buf, size_t len)
{
    struct view top = {buf, len}, moov, payload;
    struct track t;
    uint32_t type;
    int rc;

    /* stop at moov: whatever follows (or a truncated mdat) only matters through sample offsets */
    while ((rc = next_box(&top, &type, &payload)) > 0 && type != FOURCC('m', 'o', 'o', 'v'))
        ;
    if (rc <= 0)
        return agt__clip_fail(b, -EINVAL, rc < 0 ? "MP4: malformed top-level box"
                                                 : "MP4: no 'moov' box");
    moov = payload;
    while ((rc = next_box(&moov, &type, &payload)) > 0) {
        if (type != FOURCC('t', 'r', 'a', 'k'))
            continue;
        memset(&t, 0, sizeof(t));
        rc = parse_trak(b, payload, &t);
        if (rc < 0)
            return rc;
        if (rc == 1)
            return add_samples(b, &t, buf, len);
    }
    if (rc < 0)
        return agt__clip_fail(b, -EINVAL, "MP4: malformed box inside 'moov'");
    return agt__clip_fail(b, -EINVAL, "MP4: no video track");
}
