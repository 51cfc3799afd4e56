/* Control-link framing: 4-byte big-endian length + a packed camrelay.Frame (proto/). */
#ifndef CR_FRAME_H
#define CR_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "proto/camrelay.pb-c.h"

#define CR_FRAME_HDR 4
/* Largest frame body accepted on any link. Control messages are small; the largest is a
 * management reply listing cameras, which callers page to stay under this. */
#define CR_FRAME_MAX (256 * 1024)

/* Encodes f as header + body into buf[cap]. Returns the total length, or -EMSGSIZE when the
 * body exceeds CR_FRAME_MAX or cap. Borrows f. */
int cr_frame_encode(const Camrelay__Frame *f, uint8_t *buf, size_t cap);

/* Length of the encoded frame (header included), for sizing buffers. */
size_t cr_frame_encoded_size(const Camrelay__Frame *f);

/* Reads the body length from a 4-byte header. Returns it, or -EMSGSIZE if above max. */
int cr_frame_body_len(const uint8_t hdr[CR_FRAME_HDR], size_t max);

/* Parses one frame from buf[0..len). Returns >0 bytes consumed and sets *out (owned by the
 * caller, free with cr_frame_free), 0 when more bytes are needed, -EMSGSIZE when the header
 * announces more than max, -EBADMSG when the body does not unpack or has no body set. */
int cr_frame_decode(const uint8_t *buf, size_t len, size_t max, Camrelay__Frame **out);

/* Unpacks a body of exactly len bytes (header already consumed). Same returns as decode. */
int cr_frame_unpack_body(const uint8_t *body, size_t len, Camrelay__Frame **out);

/* Frees a frame from cr_frame_decode/cr_frame_unpack_body; NULL is fine. */
void cr_frame_free(Camrelay__Frame *f);

/* Name of the frame's body for log messages ("tunnel_hello"), "none" when unset. */
const char *cr_frame_body_name(const Camrelay__Frame *f);

/* Name of a status code for messages ("ERR_AUTH"). */
const char *cr_status_name(int status);

#endif
