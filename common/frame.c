/* Control-link framing: 4-byte big-endian length + a packed camrelay.Frame (proto/). */
#include "common/frame.h"

#include <errno.h>
#include <string.h>

size_t cr_frame_encoded_size(const Camrelay__Frame *f)
{
    return CR_FRAME_HDR + camrelay__frame__get_packed_size(f);
}

int cr_frame_encode(const Camrelay__Frame *f, uint8_t *buf, size_t cap)
{
    size_t body = camrelay__frame__get_packed_size(f);
    if (body > CR_FRAME_MAX || body + CR_FRAME_HDR > cap)
        return -EMSGSIZE;
    buf[0] = (uint8_t)(body >> 24);
    buf[1] = (uint8_t)(body >> 16);
    buf[2] = (uint8_t)(body >> 8);
    buf[3] = (uint8_t)body;
    camrelay__frame__pack(f, buf + CR_FRAME_HDR);
    return (int)(body + CR_FRAME_HDR);
}

int cr_frame_body_len(const uint8_t hdr[CR_FRAME_HDR], size_t max)
{
    uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (n > max || n > CR_FRAME_MAX)
        return -EMSGSIZE;
    return (int)n;
}

int cr_frame_unpack_body(const uint8_t *body, size_t len, Camrelay__Frame **out)
{
    Camrelay__Frame *f = camrelay__frame__unpack(NULL, len, body);
    if (!f)
        return -EBADMSG;
    if (f->body_case == CAMRELAY__FRAME__BODY__NOT_SET) {
        camrelay__frame__free_unpacked(f, NULL);
        return -EBADMSG;
    }
    *out = f;
    return 1;
}

int cr_frame_decode(const uint8_t *buf, size_t len, size_t max, Camrelay__Frame **out)
{
    if (len < CR_FRAME_HDR)
        return 0;
    int body = cr_frame_body_len(buf, max);
    if (body < 0)
        return body;
    if (len - CR_FRAME_HDR < (size_t)body)
        return 0;
    int rc = cr_frame_unpack_body(buf + CR_FRAME_HDR, (size_t)body, out);
    if (rc < 0)
        return rc;
    return CR_FRAME_HDR + body;
}

void cr_frame_free(Camrelay__Frame *f)
{
    if (f)
        camrelay__frame__free_unpacked(f, NULL);
}

const char *cr_frame_body_name(const Camrelay__Frame *f)
{
    const ProtobufCFieldDescriptor *d;
    if (!f || f->body_case == CAMRELAY__FRAME__BODY__NOT_SET)
        return "none";
    d = protobuf_c_message_descriptor_get_field(&camrelay__frame__descriptor,
                                                (unsigned)f->body_case);
    return d ? d->name : "unknown";
}

const char *cr_status_name(int status)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&camrelay__status__descriptor, status);
    return v ? v->name : "UNKNOWN_STATUS";
}
