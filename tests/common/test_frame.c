/* Tests common/frame.c with well-formed frames: a round trip of every Frame body (checked field
 * by field and by a descriptor walk, whole and body-only, ending at a guard page), that the
 * samples set every field of every message, encode sizes and limits, the names, and freeing
 * NULL. Hostile input is tested in test_frame_decode.c; the samples are in
 * tests/support/frame_fixtures.c. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/frame.h"
#include "common/util.h"
#include "tests/support/frame_fixtures.h"

/* ---- Field coverage: every field of every message reachable from Frame is set somewhere ---- */

#define COV_MAX_DESC 64
#define COV_MAX_FIELDS 32
static const ProtobufCMessageDescriptor *cov_desc[COV_MAX_DESC];
static uint8_t cov_seen[COV_MAX_DESC][COV_MAX_FIELDS];
static size_t cov_n;

static size_t cov_index(const ProtobufCMessageDescriptor *d)
{
    for (size_t i = 0; i < cov_n; i++)
        if (cov_desc[i] == d)
            return i;
    assert_true(cov_n < COV_MAX_DESC);
    assert_true(d->n_fields <= COV_MAX_FIELDS);
    cov_desc[cov_n] = d;
    return cov_n++;
}

static void cov_mark(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    size_t di = cov_index(d);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *p = (const char *)m + fd->offset;
        int set = 0;
        if ((fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && frame_fx_oneof_case(m, fd) != fd->id)
            continue;
        if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = frame_fx_n_elems(m, fd);
            set = n > 0;
            if (fd->type == PROTOBUF_C_TYPE_MESSAGE)
                for (size_t k = 0; k < n; k++)
                    cov_mark((*(ProtobufCMessage *const *const *)(const void *)p)[k]);
        } else if (fd->type == PROTOBUF_C_TYPE_STRING) {
            const char *s = *(char *const *)(const void *)p;
            set = s && *s;
        } else if (fd->type == PROTOBUF_C_TYPE_BYTES) {
            set = ((const ProtobufCBinaryData *)(const void *)p)->len > 0;
        } else if (fd->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)(const void *)p;
            set = sub != NULL;
            if (sub)
                cov_mark(sub);
        } else {
            static const uint8_t zero[8];
            set = memcmp(p, zero, frame_fx_elem_size(fd->type)) != 0;
        }
        if (set)
            cov_seen[di][i] = 1;
    }
}

/* ---- Hand-written field-by-field checks, independent of the descriptor walk ---- */

static void check_bin(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    assert_int_equal(a.len, b.len);
    if (a.len)
        assert_memory_equal(a.data, b.data, a.len);
}

static void check_strv(size_t na, char **a, size_t nb, char **b)
{
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++)
        assert_string_equal(a[i], b[i]);
}

static void check_auth_start(const Camrelay__AuthStart *a, const Camrelay__AuthStart *b)
{
    assert_non_null(b);
    assert_string_equal(a->identity, b->identity);
    check_bin(a->client_nonce, b->client_nonce);
}

static void check_body(const Camrelay__Frame *w, const Camrelay__Frame *g)
{
    assert_int_equal(w->body_case, g->body_case);
    switch (w->body_case) {
    case CAMRELAY__FRAME__BODY_AUTH_START:
        check_auth_start(w->auth_start, g->auth_start);
        break;
    case CAMRELAY__FRAME__BODY_AUTH_CHALLENGE:
        check_bin(w->auth_challenge->salt, g->auth_challenge->salt);
        assert_int_equal(w->auth_challenge->iterations, g->auth_challenge->iterations);
        check_bin(w->auth_challenge->server_nonce, g->auth_challenge->server_nonce);
        break;
    case CAMRELAY__FRAME__BODY_AUTH_PROOF:
        check_bin(w->auth_proof->client_proof, g->auth_proof->client_proof);
        break;
    case CAMRELAY__FRAME__BODY_REFUSAL:
        assert_int_equal(w->refusal->status, g->refusal->status);
        assert_string_equal(w->refusal->message, g->refusal->message);
        assert_int_equal(w->refusal->retry_after_ms, g->refusal->retry_after_ms);
        break;
    case CAMRELAY__FRAME__BODY_PENDING:
        assert_int_equal(w->pending->hold_ms, g->pending->hold_ms);
        break;
    case CAMRELAY__FRAME__BODY_DISPATCH_RESULT:
        assert_string_equal(w->dispatch_result->relay_name, g->dispatch_result->relay_name);
        check_strv(w->dispatch_result->n_relay_addrs, w->dispatch_result->relay_addrs,
                   g->dispatch_result->n_relay_addrs, g->dispatch_result->relay_addrs);
        check_bin(w->dispatch_result->ticket, g->dispatch_result->ticket);
        assert_true(w->dispatch_result->ticket_expires_unix ==
                    g->dispatch_result->ticket_expires_unix);
        break;
    case CAMRELAY__FRAME__BODY_TUNNEL_HELLO:
        check_auth_start(w->tunnel_hello->auth, g->tunnel_hello->auth);
        check_bin(w->tunnel_hello->ticket, g->tunnel_hello->ticket);
        assert_string_equal(w->tunnel_hello->agent_version, g->tunnel_hello->agent_version);
        check_strv(w->tunnel_hello->n_services, w->tunnel_hello->services,
                   g->tunnel_hello->n_services, g->tunnel_hello->services);
        break;
    case CAMRELAY__FRAME__BODY_TUNNEL_WELCOME:
        assert_int_equal(w->tunnel_welcome->keepalive_ms, g->tunnel_welcome->keepalive_ms);
        assert_string_equal(w->tunnel_welcome->site_addr, g->tunnel_welcome->site_addr);
        break;
    case CAMRELAY__FRAME__BODY_PING:
        assert_true(w->ping->seq == g->ping->seq);
        break;
    case CAMRELAY__FRAME__BODY_PONG:
        assert_true(w->pong->seq == g->pong->seq);
        break;
    case CAMRELAY__FRAME__BODY_OPEN_STREAM:
        assert_true(w->open_stream->stream_id == g->open_stream->stream_id);
        assert_string_equal(w->open_stream->service, g->open_stream->service);
        check_bin(w->open_stream->token, g->open_stream->token);
        break;
    case CAMRELAY__FRAME__BODY_STREAM_FAILED:
        assert_true(w->stream_failed->stream_id == g->stream_failed->stream_id);
        assert_string_equal(w->stream_failed->reason, g->stream_failed->reason);
        break;
    case CAMRELAY__FRAME__BODY_DATA_HELLO:
        assert_string_equal(w->data_hello->serial, g->data_hello->serial);
        assert_true(w->data_hello->stream_id == g->data_hello->stream_id);
        check_bin(w->data_hello->token, g->data_hello->token);
        break;
    case CAMRELAY__FRAME__BODY_DATA_ACCEPTED:
        assert_true(w->data_accepted->stream_id == g->data_accepted->stream_id);
        break;
    case CAMRELAY__FRAME__BODY_RELAY_HELLO:
        check_auth_start(w->relay_hello->auth, g->relay_hello->auth);
        check_strv(w->relay_hello->n_public_addrs, w->relay_hello->public_addrs,
                   g->relay_hello->n_public_addrs, g->relay_hello->public_addrs);
        check_bin(w->relay_hello->ticket_key, g->relay_hello->ticket_key);
        break;
    case CAMRELAY__FRAME__BODY_RELAY_WELCOME:
        assert_int_equal(w->relay_welcome->keepalive_ms, g->relay_welcome->keepalive_ms);
        break;
    case CAMRELAY__FRAME__BODY_SYNC_CAMERAS: {
        const Camrelay__SyncCameras *a = w->sync_cameras, *b = g->sync_cameras;
        assert_true(a->seq == b->seq);
        assert_int_equal(a->full, b->full);
        assert_int_equal(a->n_cameras, b->n_cameras);
        for (size_t i = 0; i < a->n_cameras; i++) {
            assert_string_equal(a->cameras[i]->serial, b->cameras[i]->serial);
            check_bin(a->cameras[i]->salt, b->cameras[i]->salt);
            assert_int_equal(a->cameras[i]->iterations, b->cameras[i]->iterations);
            check_bin(a->cameras[i]->stored_key, b->cameras[i]->stored_key);
        }
        break;
    }
    case CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA:
        assert_true(w->unregister_camera->seq == g->unregister_camera->seq);
        assert_string_equal(w->unregister_camera->serial, g->unregister_camera->serial);
        break;
    case CAMRELAY__FRAME__BODY_ACK:
        assert_true(w->ack->seq == g->ack->seq);
        assert_int_equal(w->ack->status, g->ack->status);
        assert_string_equal(w->ack->message, g->ack->message);
        break;
    case CAMRELAY__FRAME__BODY_MGMT_REQUEST: {
        const Camrelay__MgmtRequest *a = w->mgmt_request, *b = g->mgmt_request;
        assert_true(a->id == b->id);
        assert_string_equal(a->token, b->token);
        assert_int_equal(a->op_case, b->op_case);
        switch (a->op_case) {
        case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER:
            assert_string_equal(a->camera_register->serial, b->camera_register->serial);
            assert_string_equal(a->camera_register->oak, b->camera_register->oak);
            assert_string_equal(a->camera_register->user, b->camera_register->user);
            assert_string_equal(a->camera_register->password, b->camera_register->password);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST:
            assert_string_equal(a->camera_list->serial, b->camera_list->serial);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH:
            assert_string_equal(a->camera_attach->serial, b->camera_attach->serial);
            assert_string_equal(a->camera_attach->recorder, b->camera_attach->recorder);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE:
            assert_string_equal(a->camera_remove->serial, b->camera_remove->serial);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD:
            assert_string_equal(a->account_add->name, b->account_add->name);
            assert_string_equal(a->account_add->password, b->account_add->password);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST:
            assert_string_equal(a->relay_list->serial, b->relay_list->serial);
            break;
        case CAMRELAY__MGMT_REQUEST__OP_RELOAD:
            assert_non_null(b->reload);
            assert_string_equal(a->reload->serial, b->reload->serial);
            break;
        default:
            fail_msg("unexpected op_case %d", (int)a->op_case);
        }
        break;
    }
    case CAMRELAY__FRAME__BODY_MGMT_REPLY: {
        const Camrelay__MgmtReply *a = w->mgmt_reply, *b = g->mgmt_reply;
        assert_true(a->id == b->id);
        assert_int_equal(a->status, b->status);
        assert_string_equal(a->message, b->message);
        assert_int_equal(a->n_cameras, b->n_cameras);
        for (size_t i = 0; i < a->n_cameras; i++) {
            const Camrelay__CameraInfo *ca = a->cameras[i], *cb = b->cameras[i];
            assert_string_equal(ca->serial, cb->serial);
            assert_string_equal(ca->state, cb->state);
            assert_int_equal(ca->online, cb->online);
            assert_true(ca->last_seen_unix == cb->last_seen_unix);
            assert_string_equal(ca->site_addr, cb->site_addr);
            assert_int_equal(ca->n_endpoints, cb->n_endpoints);
            for (size_t k = 0; k < ca->n_endpoints; k++) {
                assert_string_equal(ca->endpoints[k]->service, cb->endpoints[k]->service);
                assert_int_equal(ca->endpoints[k]->port, cb->endpoints[k]->port);
                assert_string_equal(ca->endpoints[k]->url, cb->endpoints[k]->url);
            }
            assert_string_equal(ca->recorder, cb->recorder);
            assert_true(ca->bytes_relayed == cb->bytes_relayed);
            assert_int_equal(ca->open_streams, cb->open_streams);
            assert_string_equal(ca->relay, cb->relay);
            assert_int_equal(ca->synced, cb->synced);
            assert_true(ca->bitrate_bps == cb->bitrate_bps);
            assert_string_equal(ca->data_path, cb->data_path);
        }
        assert_int_equal(a->n_relays, b->n_relays);
        for (size_t i = 0; i < a->n_relays; i++) {
            const Camrelay__RelayInfo *ra = a->relays[i], *rb = b->relays[i];
            assert_string_equal(ra->name, rb->name);
            check_strv(ra->n_public_addrs, ra->public_addrs, rb->n_public_addrs, rb->public_addrs);
            assert_int_equal(ra->online, rb->online);
            assert_int_equal(ra->cameras, rb->cameras);
        }
        break;
    }
    default:
        fail_msg("no hand-written check for body %d", (int)w->body_case);
    }
}

/* ---- Round trips ---- */

static void test_frame_roundtrip(void **state)
{
    const struct frame_fx_sample *s = *state;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *got = NULL;
    struct frame_fx_guard g;

    s->build(&f);
    size_t need = cr_frame_encoded_size(&f);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    int n = cr_frame_encode(&f, buf, need);
    assert_int_equal(n, (int)need);
    assert_int_equal(cr_frame_body_len(buf, CR_FRAME_MAX), n - CR_FRAME_HDR);

    frame_fx_guard_init(&g, need);
    const uint8_t *in = frame_fx_guard_place(&g, buf, need);
    assert_int_equal(cr_frame_decode(in, need, CR_FRAME_MAX, &got), n);
    assert_non_null(got);
    check_body(&f, got);
    frame_fx_assert_msg_equal(&f.base, &got->base);
    assert_string_equal(cr_frame_body_name(got), s->body);
    assert_string_equal(cr_frame_body_name(&f), s->body);
    cr_frame_free(got);

    /* The body alone unpacks to the same thing. */
    got = NULL;
    in = frame_fx_guard_place(&g, buf + CR_FRAME_HDR, need - CR_FRAME_HDR);
    assert_int_equal(cr_frame_unpack_body(in, need - CR_FRAME_HDR, &got), 1);
    frame_fx_assert_msg_equal(&f.base, &got->base);
    cr_frame_free(got);

    frame_fx_guard_free(&g);
    free(buf);
    frame_fx_sample_release(&f);
}

static void test_frame_roundtrip_covers_every_field(void **state)
{
    (void)state;
    memset(cov_seen, 0, sizeof(cov_seen));
    cov_n = 0;
    /* Register every descriptor reachable from Frame, so a message no sample reaches fails. */
    cov_index(&camrelay__frame__descriptor);
    for (size_t i = 0; i < cov_n; i++)
        for (unsigned k = 0; k < cov_desc[i]->n_fields; k++)
            if (cov_desc[i]->fields[k].type == PROTOBUF_C_TYPE_MESSAGE)
                cov_index(cov_desc[i]->fields[k].descriptor);

    for (size_t i = 0; i < FRAME_FX_N_SAMPLES; i++) {
        uint8_t *buf;
        Camrelay__Frame *got = NULL;
        size_t n = frame_fx_sample_encode(&frame_fx_samples[i], &buf);
        assert_int_equal(cr_frame_decode(buf, n, CR_FRAME_MAX, &got), (int)n);
        cov_mark(&got->base); /* marks what survived the round trip */
        cr_frame_free(got);
        free(buf);
    }
    int missing = 0;
    for (size_t i = 0; i < cov_n; i++)
        for (unsigned k = 0; k < cov_desc[i]->n_fields; k++)
            if (!cov_seen[i][k]) {
                print_error("field %s.%s never set to a non-default value by any sample\n",
                            cov_desc[i]->name, cov_desc[i]->fields[k].name);
                missing++;
            }
    assert_int_equal(missing, 0);
    /* Every Frame body is a message the table reaches: 21 bodies in the proto today. */
    assert_int_equal(camrelay__frame__descriptor.n_fields, 21);
}

static void test_frame_encode_size_and_small_buffer(void **state)
{
    (void)state;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    frame_fx_build_ack(&f);
    size_t need = cr_frame_encoded_size(&f);
    uint8_t buf[256];
    assert_true(need <= sizeof(buf));
    assert_int_equal(cr_frame_encode(&f, buf, need - 1), -EMSGSIZE);
    assert_int_equal(cr_frame_encode(&f, buf, 0), -EMSGSIZE);
    assert_int_equal(cr_frame_encode(&f, buf, sizeof(buf)), (int)need);
    /* Big-endian header. */
    size_t body = need - CR_FRAME_HDR;
    assert_int_equal(buf[0], 0);
    assert_int_equal(buf[1], 0);
    assert_int_equal(buf[2], (body >> 8) & 0xff);
    assert_int_equal(buf[3], body & 0xff);
}

static void test_frame_encode_rejects_oversized_body(void **state)
{
    (void)state;
    static uint8_t token[CR_FRAME_MAX];
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__DataHello m = CAMRELAY__DATA_HELLO__INIT;
    /* body = token + a few bytes of tags > CR_FRAME_MAX */
    m.token = (ProtobufCBinaryData){sizeof(token), token};
    f.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f.data_hello = &m;
    size_t need = cr_frame_encoded_size(&f);
    assert_true(need - CR_FRAME_HDR > CR_FRAME_MAX);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_int_equal(cr_frame_encode(&f, buf, need), -EMSGSIZE);

    /* A body of exactly CR_FRAME_MAX is fine and decodes. */
    size_t overhead = need - CR_FRAME_HDR - sizeof(token);
    m.token.len = sizeof(token) - overhead;
    need = cr_frame_encoded_size(&f);
    if (need - CR_FRAME_HDR != CR_FRAME_MAX) { /* the length varint may have shrunk by a byte */
        m.token.len += CR_FRAME_MAX - (need - CR_FRAME_HDR);
        need = cr_frame_encoded_size(&f);
    }
    assert_int_equal(need - CR_FRAME_HDR, CR_FRAME_MAX);
    assert_int_equal(cr_frame_encode(&f, buf, need), (int)need);
    Camrelay__Frame *got = NULL;
    assert_int_equal(cr_frame_decode(buf, need, CR_FRAME_MAX, &got), (int)need);
    assert_int_equal(got->data_hello->token.len, m.token.len);
    cr_frame_free(got);
    /* ... but not on a link with a smaller maximum. */
    assert_int_equal(cr_frame_decode(buf, need, 16 * 1024, &got), -EMSGSIZE);
    free(buf);
}

/* ---- Names ---- */

static void test_frame_body_name(void **state)
{
    (void)state;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    assert_string_equal(cr_frame_body_name(NULL), "none");
    assert_string_equal(cr_frame_body_name(&f), "none");
    for (size_t i = 0; i < FRAME_FX_N_SAMPLES; i++) {
        Camrelay__Frame s = CAMRELAY__FRAME__INIT;
        frame_fx_samples[i].build(&s);
        assert_string_equal(cr_frame_body_name(&s), frame_fx_samples[i].body);
        frame_fx_sample_release(&s);
    }
    /* Every body case maps to the proto field name. */
    for (unsigned i = 0; i < camrelay__frame__descriptor.n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &camrelay__frame__descriptor.fields[i];
        f.body_case = (Camrelay__Frame__BodyCase)fd->id;
        assert_string_equal(cr_frame_body_name(&f), fd->name);
    }
    f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
    assert_string_equal(cr_frame_body_name(&f), "tunnel_hello");
    f.body_case = (Camrelay__Frame__BodyCase)22;
    assert_string_equal(cr_frame_body_name(&f), "unknown");
    f.body_case = (Camrelay__Frame__BodyCase)1000;
    assert_string_equal(cr_frame_body_name(&f), "unknown");
    f.body_case = (Camrelay__Frame__BodyCase)-1;
    assert_string_equal(cr_frame_body_name(&f), "unknown");
}

static void test_frame_status_name(void **state)
{
    (void)state;
    static const char *const names[] = {"OK", "ERR_AUTH", "ERR_UNKNOWN_SERIAL", "ERR_DUPLICATE",
                                        "ERR_BAD_REQUEST", "ERR_UNAVAILABLE", "ERR_RETRY",
                                        "ERR_INTERNAL", "ERR_PERMISSION", "ERR_NOT_CONNECTED"};
    for (int i = 0; i < (int)CR_ARRAY_SIZE(names); i++)
        assert_string_equal(cr_status_name(i), names[i]);
    assert_string_equal(cr_status_name(CAMRELAY__STATUS__ERR_AUTH), "ERR_AUTH");
    assert_string_equal(cr_status_name(10), "UNKNOWN_STATUS");
    assert_string_equal(cr_status_name(-1), "UNKNOWN_STATUS");
    assert_string_equal(cr_status_name(1 << 30), "UNKNOWN_STATUS");
}

static void test_frame_free_null(void **state)
{
    (void)state;
    cr_frame_free(NULL);
}

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_frame_roundtrip_covers_every_field),
        cmocka_unit_test(test_frame_encode_size_and_small_buffer),
        cmocka_unit_test(test_frame_encode_rejects_oversized_body),
        cmocka_unit_test(test_frame_body_name),
        cmocka_unit_test(test_frame_status_name),
        cmocka_unit_test(test_frame_free_null),
    };
    /* One named round-trip test per sample: test_frame_roundtrip_<body>. */
    static struct CMUnitTest tests[FRAME_FX_N_SAMPLES + CR_ARRAY_SIZE(fixed)];
    static char names[FRAME_FX_N_SAMPLES][80];
    size_t n = 0;
    for (size_t i = 0; i < FRAME_FX_N_SAMPLES; i++, n++) {
        snprintf(names[i], sizeof(names[i]), "test_frame_roundtrip_%s", frame_fx_samples[i].name);
        tests[n] = (struct CMUnitTest){names[i], test_frame_roundtrip, NULL, NULL,
                                       (void *)&frame_fx_samples[i]};
    }
    for (size_t i = 0; i < CR_ARRAY_SIZE(fixed); i++, n++)
        tests[n] = fixed[i];
    return _cmocka_run_group_tests("test_frame", tests, n, frame_fx_group_setup, NULL);
}
