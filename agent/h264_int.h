/* Clip builder shared by the Annex-B (h264.c) and MP4 (h264_mp4.c) loaders; agent-internal. */
#ifndef AGT_H264_INT_H
#define AGT_H264_INT_H

#include "agent/h264.h"

/* Accumulates NALs and AUs while a loader walks the input; capacities grow geometrically. */
struct agt__clip_build {
    struct agt_clip *clip; /* being filled; borrowed */
    size_t cap_aus;
    size_t cap_nals;
    char *err; /* caller's reason buffer, may be NULL */
    size_t err_len;
};

/* Records why the parse failed and returns rc (a negative errno). */
int agt__clip_fail(struct agt__clip_build *b, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends a NAL view (borrows data). Returns 0 or -ENOMEM/-EINVAL (limits). */
int agt__clip_add_nal(struct agt__clip_build *b, const uint8_t *data, size_t len);

/* Closes an AU made of the NALs added since index nal_first. duration 0 means "derive from the
 * frame rate later". Returns 0 or -ENOMEM/-EINVAL (frame limit). */
int agt__clip_add_au(struct agt__clip_build *b, size_t nal_first, uint32_t duration,
                     int32_t cts_offset, bool keyframe);

/* Checks a NAL header byte is usable in a clip (forbidden bit clear, a type RTP can carry). */
int agt__clip_check_nal(struct agt__clip_build *b, const uint8_t *nal, size_t len, size_t where);

/* Walks an ISO-BMFF file's first H.264 video track into the builder; may set clip->sps/pps
 * from avcC. Returns 0 or a negative errno with the reason recorded. */
int agt__mp4_parse(struct agt__clip_build *b, const uint8_t *buf, size_t len);

#endif
