/* Fixtures for the common/frame.c tests; see frame_fixtures.h. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/util.h"
#include "tests/support/frame_fixtures.h"

/* ---- Guard page: inputs end right before a PROT_NONE page ---- */

void frame_fx_guard_init(struct frame_fx_guard *g, size_t max_input)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t data_pages = (max_input + page - 1) / page;
    if (data_pages == 0)
        data_pages = 1;
    g->data_len = data_pages * page;
    g->map_len = g->data_len + page;
    g->map = mmap(NULL, g->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(g->map != MAP_FAILED);
    assert_int_equal(mprotect(g->map + g->data_len, page, PROT_NONE), 0);
}

const uint8_t *frame_fx_guard_place(struct frame_fx_guard *g, const void *data, size_t len)
{
    assert_true(len <= g->data_len);
    uint8_t *p = g->map + g->data_len - len;
    if (len)
        memcpy(p, data, len);
    return p;
}

void frame_fx_guard_free(struct frame_fx_guard *g)
{
    munmap(g->map, g->map_len);
}

/* ---- Representative values ---- */

static uint8_t bytes64[64]; /* covers 0x00, 0xff and everything between */
static uint8_t big_token[100 * 1024];

static ProtobufCBinaryData bin(const uint8_t *p, size_t n)
{
    ProtobufCBinaryData b = {n, (uint8_t *)p};
    return b;
}

int frame_fx_group_setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bytes64); i++)
        bytes64[i] = (uint8_t)(i * 37 + 11);
    bytes64[0] = 0x00;
    bytes64[1] = 0xff;
    bytes64[2] = 0x80;
    for (size_t i = 0; i < sizeof(big_token); i++)
        big_token[i] = (uint8_t)(i ^ (i >> 8));
    return 0;
}

/* ---- Generic, descriptor-driven deep comparison (every field of every message) ---- */

size_t frame_fx_elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default:
        return 4; /* int32, uint32, enum, bool (protobuf_c_boolean is int), float */
    }
}

static void assert_value_equal(const ProtobufCMessageDescriptor *d,
                               const ProtobufCFieldDescriptor *fd, const void *va, const void *vb)
{
    switch (fd->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *sa = *(char *const *)va, *sb = *(char *const *)vb;
        if (strcmp(sa ? sa : "", sb ? sb : "") != 0)
            fail_msg("%s.%s: \"%s\" != \"%s\"", d->name, fd->name, sa, sb);
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *ba = va, *bb = vb;
        if (ba->len != bb->len || (ba->len && memcmp(ba->data, bb->data, ba->len) != 0))
            fail_msg("%s.%s: bytes differ (len %zu vs %zu)", d->name, fd->name, ba->len, bb->len);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *ma = *(ProtobufCMessage *const *)va;
        const ProtobufCMessage *mb = *(ProtobufCMessage *const *)vb;
        if (!ma || !mb) {
            if (ma != mb)
                fail_msg("%s.%s: one side missing", d->name, fd->name);
            break;
        }
        frame_fx_assert_msg_equal(ma, mb);
        break;
    }
    default:
        if (memcmp(va, vb, frame_fx_elem_size(fd->type)) != 0)
            fail_msg("%s.%s: scalar differs", d->name, fd->name);
        break;
    }
}

uint32_t frame_fx_oneof_case(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd)
{
    return *(const uint32_t *)(const void *)((const char *)m + fd->quantifier_offset);
}

size_t frame_fx_n_elems(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *fd)
{
    return *(const size_t *)(const void *)((const char *)m + fd->quantifier_offset);
}

void frame_fx_assert_msg_equal(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    const ProtobufCMessageDescriptor *d = a->descriptor;
    assert_ptr_equal(d, b->descriptor);
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *fd = &d->fields[i];
        const char *pa = (const char *)a + fd->offset, *pb = (const char *)b + fd->offset;
        if (fd->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t ca = frame_fx_oneof_case(a, fd), cb = frame_fx_oneof_case(b, fd);
            if (ca != cb)
                fail_msg("%s: oneof case %u != %u", d->name, ca, cb);
            if (ca == fd->id)
                assert_value_equal(d, fd, pa, pb);
        } else if (fd->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t na = frame_fx_n_elems(a, fd), nb = frame_fx_n_elems(b, fd);
            if (na != nb)
                fail_msg("%s.%s: %zu != %zu elements", d->name, fd->name, na, nb);
            const char *ea = *(char *const *)(const void *)pa, *eb = *(char *const *)(const void *)pb;
            for (size_t k = 0; k < na; k++)
                assert_value_equal(d, fd, ea + k * frame_fx_elem_size(fd->type),
                                   eb + k * frame_fx_elem_size(fd->type));
        } else {
            assert_value_equal(d, fd, pa, pb);
        }
    }
}

/* ---- One builder per Frame body (plus the variants of MgmtRequest's oneof) ---- */

static Camrelay__AuthStart *make_auth_start(const char *identity, size_t nonce_len)
{
    Camrelay__AuthStart *m = calloc(1, sizeof(*m));
    *m = (Camrelay__AuthStart)CAMRELAY__AUTH_START__INIT;
    m->identity = (char *)identity;
    m->client_nonce = bin(bytes64, nonce_len);
    return m;
}

static void build_auth_start(Camrelay__Frame *f)
{
    f->body_case = CAMRELAY__FRAME__BODY_AUTH_START;
    f->auth_start = make_auth_start("CAM-0001.site_a:x", 32);
}

static void build_auth_challenge(Camrelay__Frame *f)
{
    static Camrelay__AuthChallenge m = CAMRELAY__AUTH_CHALLENGE__INIT;
    m.salt = bin(bytes64 + 3, 16);
    m.iterations = 4096;
    m.server_nonce = bin(bytes64, 64);
    f->body_case = CAMRELAY__FRAME__BODY_AUTH_CHALLENGE;
    f->auth_challenge = &m;
}

static void build_auth_proof(Camrelay__Frame *f)
{
    static Camrelay__AuthProof m = CAMRELAY__AUTH_PROOF__INIT;
    m.client_proof = bin(bytes64 + 7, 32);
    f->body_case = CAMRELAY__FRAME__BODY_AUTH_PROOF;
    f->auth_proof = &m;
}

static void build_refusal(Camrelay__Frame *f)
{
    static Camrelay__Refusal m = CAMRELAY__REFUSAL__INIT;
    m.status = CAMRELAY__STATUS__ERR_RETRY;
    m.message = "relay busy, caf\xc3\xa9 closed";
    m.retry_after_ms = UINT32_MAX;
    f->body_case = CAMRELAY__FRAME__BODY_REFUSAL;
    f->refusal = &m;
}

static void build_pending(Camrelay__Frame *f)
{
    static Camrelay__Pending m = CAMRELAY__PENDING__INIT;
    m.hold_ms = 30000;
    f->body_case = CAMRELAY__FRAME__BODY_PENDING;
    f->pending = &m;
}

static void build_dispatch_result(Camrelay__Frame *f)
{
    static char *addrs[] = {"relay1.example:7443", "[2001:db8::1]:7443", "", "10.0.0.1:1"};
    static Camrelay__DispatchResult m = CAMRELAY__DISPATCH_RESULT__INIT;
    m.relay_name = "relay-1";
    m.n_relay_addrs = 4;
    m.relay_addrs = addrs;
    m.ticket = bin(bytes64, 40);
    m.ticket_expires_unix = UINT64_MAX;
    f->body_case = CAMRELAY__FRAME__BODY_DISPATCH_RESULT;
    f->dispatch_result = &m;
}

static void build_tunnel_hello(Camrelay__Frame *f)
{
    static char *services[] = {"rtsp", "http"};
    static Camrelay__TunnelHello m = CAMRELAY__TUNNEL_HELLO__INIT;
    m.auth = make_auth_start("SN123", 16);
    m.ticket = bin(bytes64 + 1, 40);
    m.agent_version = "camrelay-agent 1.2.3";
    m.n_services = 2;
    m.services = services;
    f->body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
    f->tunnel_hello = &m;
}

static void build_tunnel_welcome(Camrelay__Frame *f)
{
    static Camrelay__TunnelWelcome m = CAMRELAY__TUNNEL_WELCOME__INIT;
    m.keepalive_ms = 15000;
    m.site_addr = "203.0.113.7:51234";
    f->body_case = CAMRELAY__FRAME__BODY_TUNNEL_WELCOME;
    f->tunnel_welcome = &m;
}

static void build_ping(Camrelay__Frame *f)
{
    static Camrelay__Ping m = CAMRELAY__PING__INIT;
    m.seq = UINT64_MAX;
    f->body_case = CAMRELAY__FRAME__BODY_PING;
    f->ping = &m;
}

/* A body whose message has only defaults still counts as set: it encodes as an empty field. */
static void build_ping_empty(Camrelay__Frame *f)
{
    static Camrelay__Ping m = CAMRELAY__PING__INIT;
    f->body_case = CAMRELAY__FRAME__BODY_PING;
    f->ping = &m;
}

static void build_pong(Camrelay__Frame *f)
{
    static Camrelay__Pong m = CAMRELAY__PONG__INIT;
    m.seq = 1ull << 40;
    f->body_case = CAMRELAY__FRAME__BODY_PONG;
    f->pong = &m;
}

static void build_open_stream(Camrelay__Frame *f)
{
    static Camrelay__OpenStream m = CAMRELAY__OPEN_STREAM__INIT;
    m.stream_id = 0x0123456789abcdefull;
    m.service = "rtsp";
    m.token = bin(bytes64 + 5, 32);
    f->body_case = CAMRELAY__FRAME__BODY_OPEN_STREAM;
    f->open_stream = &m;
}

static void build_stream_failed(Camrelay__Frame *f)
{
    static Camrelay__StreamFailed m = CAMRELAY__STREAM_FAILED__INIT;
    m.stream_id = 7;
    m.reason = "connect 127.0.0.1:554: connection refused";
    f->body_case = CAMRELAY__FRAME__BODY_STREAM_FAILED;
    f->stream_failed = &m;
}

static void build_data_hello(Camrelay__Frame *f)
{
    static Camrelay__DataHello m = CAMRELAY__DATA_HELLO__INIT;
    m.serial = "SN123";
    m.stream_id = 7;
    m.token = bin(bytes64 + 5, 32);
    f->body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f->data_hello = &m;
}

/* Larger than link.c's on-stack buffer and one page: exercises multi-page decode. */
static void build_data_hello_big(Camrelay__Frame *f)
{
    static Camrelay__DataHello m = CAMRELAY__DATA_HELLO__INIT;
    m.serial = "SN-big";
    m.stream_id = 1;
    m.token = bin(big_token, sizeof(big_token));
    f->body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f->data_hello = &m;
}

static void build_data_accepted(Camrelay__Frame *f)
{
    static Camrelay__DataAccepted m = CAMRELAY__DATA_ACCEPTED__INIT;
    m.stream_id = 7;
    f->body_case = CAMRELAY__FRAME__BODY_DATA_ACCEPTED;
    f->data_accepted = &m;
}

static void build_relay_hello(Camrelay__Frame *f)
{
    static char *addrs[] = {"relay.example.com:7443", "198.51.100.2:7443"};
    static Camrelay__RelayHello m = CAMRELAY__RELAY_HELLO__INIT;
    m.auth = make_auth_start("relay-1", 64);
    m.n_public_addrs = 2;
    m.public_addrs = addrs;
    m.ticket_key = bin(bytes64 + 9, 32);
    f->body_case = CAMRELAY__FRAME__BODY_RELAY_HELLO;
    f->relay_hello = &m;
}

static void build_relay_welcome(Camrelay__Frame *f)
{
    static Camrelay__RelayWelcome m = CAMRELAY__RELAY_WELCOME__INIT;
    m.keepalive_ms = 20000;
    f->body_case = CAMRELAY__FRAME__BODY_RELAY_WELCOME;
    f->relay_welcome = &m;
}

static void build_sync_cameras(Camrelay__Frame *f)
{
    static Camrelay__CameraRecord r[3];
    static Camrelay__CameraRecord *rp[3];
    static Camrelay__SyncCameras m = CAMRELAY__SYNC_CAMERAS__INIT;
    static const char *serials[3] = {"SN1", "SN2", "SN3"};
    for (int i = 0; i < 3; i++) {
        r[i] = (Camrelay__CameraRecord)CAMRELAY__CAMERA_RECORD__INIT;
        r[i].serial = (char *)serials[i];
        r[i].salt = bin(bytes64 + i, 16);
        r[i].iterations = 1000u + (uint32_t)i;
        r[i].stored_key = bin(bytes64 + 16 + i, 32);
        rp[i] = &r[i];
    }
    m.seq = 42;
    m.n_cameras = 3;
    m.cameras = rp;
    m.full = 1;
    f->body_case = CAMRELAY__FRAME__BODY_SYNC_CAMERAS;
    f->sync_cameras = &m;
}

static void build_unregister_camera(Camrelay__Frame *f)
{
    static Camrelay__UnregisterCamera m = CAMRELAY__UNREGISTER_CAMERA__INIT;
    m.seq = 43;
    m.serial = "SN2";
    f->body_case = CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA;
    f->unregister_camera = &m;
}

void frame_fx_build_ack(Camrelay__Frame *f)
{
    static Camrelay__Ack m = CAMRELAY__ACK__INIT;
    m.seq = 43;
    m.status = CAMRELAY__STATUS__ERR_DUPLICATE;
    m.message = "SN2 belongs to relay-2";
    f->body_case = CAMRELAY__FRAME__BODY_ACK;
    f->ack = &m;
}

static Camrelay__MgmtRequest *mgmt_request(Camrelay__Frame *f)
{
    static Camrelay__MgmtRequest m;
    m = (Camrelay__MgmtRequest)CAMRELAY__MGMT_REQUEST__INIT;
    m.id = 99;
    m.token = "0123456789abcdef0123456789abcdef";
    f->body_case = CAMRELAY__FRAME__BODY_MGMT_REQUEST;
    f->mgmt_request = &m;
    return &m;
}

static void build_mgmt_camera_register(Camrelay__Frame *f)
{
    static Camrelay__CameraRegister op = CAMRELAY__CAMERA_REGISTER__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.serial = "SN9";
    op.oak = "OAK-XYZ";
    op.user = "admin";
    op.password = "p@ss word";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
    m->camera_register = &op;
}

static void build_mgmt_camera_list(Camrelay__Frame *f)
{
    static Camrelay__CameraSelect op = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.serial = "SN9";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST;
    m->camera_list = &op;
}

static void build_mgmt_camera_attach(Camrelay__Frame *f)
{
    static Camrelay__CameraAttach op = CAMRELAY__CAMERA_ATTACH__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.serial = "SN9";
    op.recorder = "10.1.1.5";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH;
    m->camera_attach = &op;
}

static void build_mgmt_camera_remove(Camrelay__Frame *f)
{
    static Camrelay__CameraSelect op = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.serial = "SN8";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE;
    m->camera_remove = &op;
}

static void build_mgmt_account_add(Camrelay__Frame *f)
{
    static Camrelay__AccountAdd op = CAMRELAY__ACCOUNT_ADD__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.name = "relay-7";
    op.password = "hunter2";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD;
    m->account_add = &op;
}

static void build_mgmt_relay_list(Camrelay__Frame *f)
{
    static Camrelay__CameraSelect op = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    op.serial = "relay-7";
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST;
    m->relay_list = &op;
}

static void build_mgmt_reload(Camrelay__Frame *f)
{
    static Camrelay__CameraSelect op = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__MgmtRequest *m = mgmt_request(f);
    m->op_case = CAMRELAY__MGMT_REQUEST__OP_RELOAD;
    m->reload = &op; /* no argument: the serial stays "" */
}

static void build_mgmt_reply(Camrelay__Frame *f)
{
    static Camrelay__Endpoint ep[4];
    static Camrelay__Endpoint *ep_p[2][2];
    static Camrelay__CameraInfo cams[2];
    static Camrelay__CameraInfo *cams_p[2];
    static Camrelay__RelayInfo relays[2];
    static Camrelay__RelayInfo *relays_p[2];
    static char *relay_addrs[2][2] = {{"r1.example:7443", "[::1]:7443"}, {"r2.example:7443", ""}};
    static Camrelay__MgmtReply m = CAMRELAY__MGMT_REPLY__INIT;
    static const char *services[2] = {"rtsp", "http"};

    for (int i = 0; i < 4; i++) {
        ep[i] = (Camrelay__Endpoint)CAMRELAY__ENDPOINT__INIT;
        ep[i].service = (char *)services[i % 2];
        ep[i].port = 20001u + (uint32_t)i;
        ep[i].url = i % 2 ? "http://relay-internal:20002/" : "rtsp://relay-internal:20001/";
        ep_p[i / 2][i % 2] = &ep[i];
    }
    for (int i = 0; i < 2; i++) {
        cams[i] = (Camrelay__CameraInfo)CAMRELAY__CAMERA_INFO__INIT;
        cams[i].serial = i ? "SN2" : "SN1";
        cams[i].state = i ? "red" : "green";
        cams[i].online = !i;
        cams[i].last_seen_unix = i ? -1 : 1764000000;
        cams[i].site_addr = "203.0.113.7:51234";
        cams[i].n_endpoints = 2;
        cams[i].endpoints = ep_p[i];
        cams[i].recorder = "10.1.1.5";
        cams[i].bytes_relayed = UINT64_MAX - (uint64_t)i;
        cams[i].open_streams = 3;
        cams[i].relay = "relay-1";
        cams[i].synced = 1;
        cams[i].data_path = i ? "userspace-tls" : "ktls";
        cams[i].bitrate_bps = 512000.5 * (i + 1);
        cams_p[i] = &cams[i];

        relays[i] = (Camrelay__RelayInfo)CAMRELAY__RELAY_INFO__INIT;
        relays[i].name = i ? "relay-2" : "relay-1";
        relays[i].n_public_addrs = 2;
        relays[i].public_addrs = relay_addrs[i];
        relays[i].online = !i;
        relays[i].cameras = 10u + (uint32_t)i;
        relays_p[i] = &relays[i];
    }
    m.id = 99;
    m.status = CAMRELAY__STATUS__ERR_NOT_CONNECTED;
    m.message = "2 cameras";
    m.n_cameras = 2;
    m.cameras = cams_p;
    m.n_relays = 2;
    m.relays = relays_p;
    f->body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    f->mgmt_reply = &m;
}

static void build_mgmt_reply_empty(Camrelay__Frame *f)
{
    static Camrelay__MgmtReply m = CAMRELAY__MGMT_REPLY__INIT;
    m.id = 1;
    f->body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    f->mgmt_reply = &m;
}

/* ---- The samples, in the order of the round-trip tests ---- */

const struct frame_fx_sample frame_fx_samples[] = {
    {"auth_start", "auth_start", build_auth_start},
    {"auth_challenge", "auth_challenge", build_auth_challenge},
    {"auth_proof", "auth_proof", build_auth_proof},
    {"refusal", "refusal", build_refusal},
    {"pending", "pending", build_pending},
    {"dispatch_result", "dispatch_result", build_dispatch_result},
    {"tunnel_hello", "tunnel_hello", build_tunnel_hello},
    {"tunnel_welcome", "tunnel_welcome", build_tunnel_welcome},
    {"ping", "ping", build_ping},
    {"ping_all_defaults", "ping", build_ping_empty},
    {"pong", "pong", build_pong},
    {"open_stream", "open_stream", build_open_stream},
    {"stream_failed", "stream_failed", build_stream_failed},
    {"data_hello", "data_hello", build_data_hello},
    {"data_hello_100k_token", "data_hello", build_data_hello_big},
    {"data_accepted", "data_accepted", build_data_accepted},
    {"relay_hello", "relay_hello", build_relay_hello},
    {"relay_welcome", "relay_welcome", build_relay_welcome},
    {"sync_cameras", "sync_cameras", build_sync_cameras},
    {"unregister_camera", "unregister_camera", build_unregister_camera},
    {"ack", "ack", frame_fx_build_ack},
    {"mgmt_request_camera_register", "mgmt_request", build_mgmt_camera_register},
    {"mgmt_request_camera_list", "mgmt_request", build_mgmt_camera_list},
    {"mgmt_request_camera_attach", "mgmt_request", build_mgmt_camera_attach},
    {"mgmt_request_camera_remove", "mgmt_request", build_mgmt_camera_remove},
    {"mgmt_request_account_add", "mgmt_request", build_mgmt_account_add},
    {"mgmt_request_relay_list", "mgmt_request", build_mgmt_relay_list},
    {"mgmt_request_reload", "mgmt_request", build_mgmt_reload},
    {"mgmt_reply", "mgmt_reply", build_mgmt_reply},
    {"mgmt_reply_empty_lists", "mgmt_reply", build_mgmt_reply_empty},
};
_Static_assert(CR_ARRAY_SIZE(frame_fx_samples) == FRAME_FX_N_SAMPLES,
               "FRAME_FX_N_SAMPLES in frame_fixtures.h counts frame_fx_samples");

void frame_fx_sample_release(Camrelay__Frame *f)
{
    if (f->body_case == CAMRELAY__FRAME__BODY_AUTH_START)
        free(f->auth_start);
    else if (f->body_case == CAMRELAY__FRAME__BODY_TUNNEL_HELLO)
        free(f->tunnel_hello->auth);
    else if (f->body_case == CAMRELAY__FRAME__BODY_RELAY_HELLO)
        free(f->relay_hello->auth);
}

size_t frame_fx_sample_encode(const struct frame_fx_sample *s, uint8_t **out)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    s->build(&f);
    size_t need = cr_frame_encoded_size(&f);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_int_equal(cr_frame_encode(&f, buf, need), (int)need);
    frame_fx_sample_release(&f);
    *out = buf;
    return need;
}
