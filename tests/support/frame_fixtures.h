/* Fixtures for the common/frame.c tests (tests/common/test_frame.c, test_frame_decode.c): inputs
 * that end right before a guard page, one sample Frame per body, and a descriptor-driven deep
 * comparison of two messages. Failures are cmocka assertions. */
#ifndef TEST_FRAME_FIXTURES_H
#define TEST_FRAME_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "common/frame.h"

/* ---- Guard page: inputs end right before a PROT_NONE page ---- */

struct frame_fx_guard {
    uint8_t *map;    /* data pages + one PROT_NONE page */
    size_t data_len; /* bytes of accessible memory before the guard */
    size_t map_len;
};

/* Maps room for max_input bytes followed by the guard page; unmap with frame_fx_guard_free. */
void frame_fx_guard_init(struct frame_fx_guard *g, size_t max_input);

/* Copies data so that its last byte is the last accessible byte; returns the copy, which g
 * owns (overwritten by the next place). */
const uint8_t *frame_fx_guard_place(struct frame_fx_guard *g, const void *data, size_t len);

void frame_fx_guard_free(struct frame_fx_guard *g);

/* ---- Representative values and the samples built from them ---- */

/* cmocka group set-up for every frame test binary: fills the byte patterns the builders borrow
 * (0x00, 0xff and everything between, and a 100 KiB token). Returns 0. */
int frame_fx_group_setup(void **state);

typedef void (*frame_fx_build_fn)(Camrelay__Frame *f);

/* One Frame body with every field set to a non-default value (plus the variants of
 * MgmtRequest's oneof, an all-defaults ping, a 100 KiB token and empty lists). build fills a
 * Frame with messages that live in the fixtures; release it with frame_fx_sample_release. */
struct frame_fx_sample {
    const char *name; /* test name suffix */
    const char *body; /* expected cr_frame_body_name */
    frame_fx_build_fn build;
};

#define FRAME_FX_N_SAMPLES 30
extern const struct frame_fx_sample frame_fx_samples[];

/* The ack sample's builder, for tests that want one small frame. */
void frame_fx_build_ack(Camrelay__Frame *f);

/* Frees what the builders allocated (only the AuthStart submessages are heap-allocated). */
void frame_fx_sample_release(Camrelay__Frame *f);

/* Encodes a sample (header + body) into a buffer the caller owns (free); returns its length. */
size_t frame_fx_sample_encode(const struct frame_fx_sample *s, uint8_t **out);

/* ---- Generic, descriptor-driven deep comparison (every field of every message) ---- */

/* Size of one element of a field of type t in a protobuf-c message struct. */
size_t frame_fx_elem_size(ProtobufCType t);

/* The case m holds in the oneof that field fd belongs to (fd->flags has
 * PROTOBUF_C_FIELD_FLAG_ONEOF): fd->id when fd is the member set. */
uint32_t frame_fx_oneof_case(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd);

/* How many elements repeated field fd has in m. */
size_t frame_fx_n_elems(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd);

/* Fails the test, naming the field, unless a and b hold the same value in every field,
 * recursively. Borrows both. */
void frame_fx_assert_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b);

#endif
