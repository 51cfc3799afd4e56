/* H.264 clip loading for the camera simulator: Annex-B or MP4 file to SPS/PPS + access units. */
#ifndef AGT_H264_H
#define AGT_H264_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Hard limits that keep a hostile file from exhausting memory or time. */
#define AGT_CLIP_MAX_BYTES (256u << 20)
#define AGT_CLIP_MAX_FRAMES 1000000u
#define AGT_SPS_MAX_BYTES 1024u

enum agt_nal_type {
    AGT_NAL_SLICE = 1,
    AGT_NAL_IDR = 5,
    AGT_NAL_SEI = 6,
    AGT_NAL_SPS = 7,
    AGT_NAL_PPS = 8,
    AGT_NAL_AUD = 9,
};

/* One NAL unit without start code or length prefix (first byte is the NAL header). A view:
 * the memory belongs to whoever owns the clip (or the caller's buffer for a borrowed parse). */
struct agt_nal {
    const uint8_t *data;
    size_t len;
};

/* One access unit (a picture), in decode order. */
struct agt_au {
    size_t nal_first;   /* index of its first NAL in clip->nals */
    uint32_t nal_count; /* >= 1 */
    uint32_t duration;  /* presentation duration in 90 kHz ticks, always >= 1 */
    int32_t cts_offset; /* presentation minus decode time, 90 kHz (MP4 ctts; 0 for Annex-B) */
    bool keyframe;      /* IDR (Annex-B) or sync sample (MP4); always carries SPS+PPS in-band */
};

/* What agt_h264_parse_sps() extracts. */
struct agt_sps_info {
    uint8_t profile_idc;
    uint8_t constraint_flags; /* the byte between profile_idc and level_idc */
    uint8_t level_idc;
    uint32_t width;  /* luma samples after cropping */
    uint32_t height; /* luma samples after cropping */
    bool timing_present;
    uint32_t num_units_in_tick;
    uint32_t time_scale;
};

enum agt_clip_format {
    AGT_CLIP_AUTO = 0, /* sniff: start code means Annex-B, an ISO-BMFF box means MP4 */
    AGT_CLIP_ANNEXB,
    AGT_CLIP_MP4,
};

/* A loaded clip. Read-only after load, so any number of threads may share it. */
struct agt_clip {
    struct agt_au *aus;
    size_t n_aus;
    struct agt_nal *nals;
    size_t n_nals;
    struct agt_nal sps; /* first SPS (avcC or in-band) */
    struct agt_nal pps; /* first PPS */
    struct agt_sps_info info;
    double fps;             /* nominal frame rate the durations were derived from */
    uint64_t duration_90k;  /* sum of all AU durations: one loop of the clip */
    size_t first_keyframe;  /* index of the first keyframe AU; playback starts and loops here */
    enum agt_clip_format format;
    uint8_t *owned;         /* file contents when loaded by agt_clip_load(), else NULL */
};

/* Loads an Annex-B (.h264/.264) or MP4 file. The frame rate comes from the MP4 stts/timescale;
 * for Annex-B from the SPS VUI timing, else fps_override (> 0), else 25. Returns 0 and an owned
 * clip in *out (free with agt_clip_free), or -errno after logging why (-EINVAL for a malformed
 * or unsupported file). Any thread; start-up code (reads the whole file). */
int agt_clip_load(const char *path, double fps_override, struct agt_clip **out);

/* Same as agt_clip_load on a memory buffer. Borrows buf: it must outlive the clip, whose NAL
 * views point into it. On failure writes a one-line reason into err (if err_len > 0) instead
 * of logging, so fuzzing stays quiet. Never reads outside [buf, buf+len). */
int agt_clip_parse(const uint8_t *buf, size_t len, enum agt_clip_format fmt, double fps_override,
                   struct agt_clip **out, char *err, size_t err_len);

/* Frees a clip and, if it owns them, the file bytes. NULL is a no-op. */
void agt_clip_free(struct agt_clip *clip);

/* Parses an SPS NAL unit (with its one-byte NAL header, emulation prevention still in).
 * Returns 0 or -EINVAL (truncated, out-of-range field, not an SPS). */
int agt_h264_parse_sps(const uint8_t *nal, size_t len, struct agt_sps_info *out);

/* The NAL units of one access unit: a view into clip->nals. */
static inline const struct agt_nal *agt_clip_au_nals(const struct agt_clip *clip,
                                                     const struct agt_au *au)
{
    return clip->nals + au->nal_first;
}

#endif
