// Google Benchmark micro-benchmarks of camrelay's per-message and per-byte costs: control
// framing, protobuf, authentication, the TLS record layer, RTP packetization, io_uring
// provided-buffer recycling. C code comes from build/libcamrelay.a; run with bench/run-micro.sh.
#include <benchmark/benchmark.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <protobuf-c/protobuf-c.h>

// camrelay's headers have no extern "C" guards of their own.
extern "C" {
#include "agent/rtp.h"
#include "common/auth.h"
#include "common/frame.h"
#include "relay/tls_record.h"
}

#include "bench/shim.h"

namespace {

std::vector<uint8_t> random_bytes(size_t n)
{
    std::vector<uint8_t> v(n);
    RAND_bytes(v.data(), v.size());
    return v;
}

// protobuf-c wants mutable char * and uint8_t *: keeps the backing storage alive and stable.
class Arena {
public:
    char *str(std::string s)
    {
        strings_.push_back(std::move(s));
        return &strings_.back()[0];
    }
    ProtobufCBinaryData bytes(size_t n)
    {
        blobs_.push_back(random_bytes(n));
        return ProtobufCBinaryData{blobs_.back().size(), blobs_.back().data()};
    }

private:
    std::deque<std::string> strings_;
    std::deque<std::vector<uint8_t>> blobs_;
};

// ---- 1. Control frames: cr_frame_encode / cr_frame_decode ----

enum class FrameKind { Ping, OpenStream, MgmtReply100 };

struct FrameFixture {
    Arena arena;
    Camrelay__Frame frame;
    Camrelay__Ping ping;
    Camrelay__OpenStream open;
    Camrelay__MgmtReply reply;
    std::vector<Camrelay__CameraInfo> infos;
    std::vector<Camrelay__CameraInfo *> info_ptrs;
    std::vector<Camrelay__Endpoint> endpoints;
    std::vector<Camrelay__Endpoint *> endpoint_ptrs;
};

// A camera listing as camrelayctl gets it: one RTSP endpoint per camera, every field set.
std::unique_ptr<FrameFixture> make_frame(FrameKind kind)
{
    auto fx = std::make_unique<FrameFixture>();
    camrelay__frame__init(&fx->frame);
    switch (kind) {
    case FrameKind::Ping:
        camrelay__ping__init(&fx->ping);
        fx->ping.seq = 123456;
        fx->frame.body_case = CAMRELAY__FRAME__BODY_PING;
        fx->frame.ping = &fx->ping;
        break;
    case FrameKind::OpenStream:
        camrelay__open_stream__init(&fx->open);
        fx->open.stream_id = 0x100000042ull;
        fx->open.service = fx->arena.str("rtsp");
        fx->open.token = fx->arena.bytes(32);
        fx->frame.body_case = CAMRELAY__FRAME__BODY_OPEN_STREAM;
        fx->frame.open_stream = &fx->open;
        break;
    case FrameKind::MgmtReply100: {
        const size_t n = 100;
        fx->infos.resize(n);
        fx->endpoints.resize(n);
        fx->endpoint_ptrs.reserve(n); // ci->endpoints points into it: no reallocation
        for (size_t i = 0; i < n; i++) {
            Camrelay__Endpoint *ep = &fx->endpoints[i];
            camrelay__endpoint__init(ep);
            ep->service = fx->arena.str("rtsp");
            ep->port = uint32_t(20001 + i);
            ep->url = fx->arena.str("rtsp://relay-internal:" + std::to_string(20001 + i) + "/");
            fx->endpoint_ptrs.push_back(ep);

            Camrelay__CameraInfo *ci = &fx->infos[i];
            camrelay__camera_info__init(ci);
            char serial[32];
            snprintf(serial, sizeof(serial), "CAM-%08zu", 1000 + i);
            ci->serial = fx->arena.str(serial);
            ci->state = fx->arena.str(i % 10 ? "green" : "yellow");
            ci->online = i % 10 != 0;
            ci->last_seen_unix = 1700000000 + int64_t(i);
            ci->site_addr = fx->arena.str("198.51.100." + std::to_string(i % 250) + ":" +
                                          std::to_string(40000 + i));
            ci->n_endpoints = 1;
            ci->endpoints = &fx->endpoint_ptrs[i];
            ci->recorder = fx->arena.str("nvr-" + std::to_string(i % 4) + ".example:554");
            ci->bytes_relayed = 123456789012ull + i;
            ci->open_streams = 1;
            ci->relay = fx->arena.str("relay-eu-1");
            ci->synced = 1;
            ci->data_path = fx->arena.str("userspace-tls");
        }
        for (auto &ci : fx->infos)
            fx->info_ptrs.push_back(&ci);
        camrelay__mgmt_reply__init(&fx->reply);
        fx->reply.id = 77;
        fx->reply.status = CAMRELAY__STATUS__OK;
        fx->reply.n_cameras = n;
        fx->reply.cameras = fx->info_ptrs.data();
        fx->frame.body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
        fx->frame.mgmt_reply = &fx->reply;
        break;
    }
    }
    return fx;
}

void BM_FrameEncode(benchmark::State &state, FrameKind kind)
{
    auto fx = make_frame(kind);
    std::vector<uint8_t> buf(cr_frame_encoded_size(&fx->frame));
    const int len = cr_frame_encode(&fx->frame, buf.data(), buf.size());
    if (len < 0) {
        state.SkipWithError("cr_frame_encode failed");
        return;
    }
    for (auto _ : state) {
        int n = cr_frame_encode(&fx->frame, buf.data(), buf.size());
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * len);
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["frame_bytes"] = len;
}

void BM_FrameDecode(benchmark::State &state, FrameKind kind)
{
    auto fx = make_frame(kind);
    std::vector<uint8_t> buf(cr_frame_encoded_size(&fx->frame));
    const int len = cr_frame_encode(&fx->frame, buf.data(), buf.size());
    Camrelay__Frame *f = nullptr;
    if (len < 0 || cr_frame_decode(buf.data(), size_t(len), CR_FRAME_MAX, &f) != len ||
        f->body_case != fx->frame.body_case) {
        state.SkipWithError("frame does not round-trip");
        return;
    }
    cr_frame_free(f);
    for (auto _ : state) {
        // The decode allocates the message tree; freeing it is part of every frame's cost.
        int n = cr_frame_decode(buf.data(), size_t(len), CR_FRAME_MAX, &f);
        benchmark::DoNotOptimize(n);
        cr_frame_free(f);
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * len);
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["frame_bytes"] = len;
}

BENCHMARK_CAPTURE(BM_FrameEncode, ping, FrameKind::Ping);
BENCHMARK_CAPTURE(BM_FrameEncode, open_stream, FrameKind::OpenStream);
BENCHMARK_CAPTURE(BM_FrameEncode, mgmt_reply_100, FrameKind::MgmtReply100);
BENCHMARK_CAPTURE(BM_FrameDecode, ping, FrameKind::Ping);
BENCHMARK_CAPTURE(BM_FrameDecode, open_stream, FrameKind::OpenStream);
BENCHMARK_CAPTURE(BM_FrameDecode, mgmt_reply_100, FrameKind::MgmtReply100);

// ---- 2. protobuf-c pack / unpack of single messages ----

enum class MsgKind { TunnelHello, SyncCameras100 };

struct MsgFixture {
    Arena arena;
    Camrelay__TunnelHello hello;
    Camrelay__AuthStart auth;
    std::vector<char *> services;
    Camrelay__SyncCameras sync;
    std::vector<Camrelay__CameraRecord> records;
    std::vector<Camrelay__CameraRecord *> record_ptrs;
    ProtobufCMessage *msg;
};

std::unique_ptr<MsgFixture> make_msg(MsgKind kind)
{
    auto fx = std::make_unique<MsgFixture>();
    if (kind == MsgKind::TunnelHello) {
        camrelay__auth_start__init(&fx->auth);
        fx->auth.identity = fx->arena.str("CAM-00001042");
        fx->auth.client_nonce = fx->arena.bytes(CR_AUTH_NONCE_LEN);
        camrelay__tunnel_hello__init(&fx->hello);
        fx->hello.auth = &fx->auth;
        fx->hello.ticket = fx->arena.bytes(CR_TICKET_LEN);
        fx->hello.agent_version = fx->arena.str("camrelay-agent 0.1.0");
        fx->services = {fx->arena.str("rtsp"), fx->arena.str("http")};
        fx->hello.n_services = fx->services.size();
        fx->hello.services = fx->services.data();
        fx->msg = &fx->hello.base;
    } else {
        const size_t n = 100;
        fx->records.resize(n);
        for (size_t i = 0; i < n; i++) {
            Camrelay__CameraRecord *r = &fx->records[i];
            camrelay__camera_record__init(r);
            char serial[32];
            snprintf(serial, sizeof(serial), "CAM-%08zu", 1000 + i);
            r->serial = fx->arena.str(serial);
            r->salt = fx->arena.bytes(CR_AUTH_SALT_LEN);
            r->iterations = CR_AUTH_ITERATIONS_DEFAULT;
            r->stored_key = fx->arena.bytes(CR_AUTH_KEY_LEN);
            fx->record_ptrs.push_back(r);
        }
        camrelay__sync_cameras__init(&fx->sync);
        fx->sync.seq = 9;
        fx->sync.n_cameras = n;
        fx->sync.cameras = fx->record_ptrs.data();
        fx->sync.full = 1;
        fx->msg = &fx->sync.base;
    }
    return fx;
}

// Size + pack, as every sender does: the size is needed to reserve the buffer first.
void BM_ProtobufPack(benchmark::State &state, MsgKind kind)
{
    auto fx = make_msg(kind);
    std::vector<uint8_t> buf(protobuf_c_message_get_packed_size(fx->msg));
    for (auto _ : state) {
        size_t need = protobuf_c_message_get_packed_size(fx->msg);
        size_t n = protobuf_c_message_pack(fx->msg, buf.data());
        benchmark::DoNotOptimize(need);
        benchmark::DoNotOptimize(n);
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(buf.size()));
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["msg_bytes"] = double(buf.size());
}

void BM_ProtobufUnpack(benchmark::State &state, MsgKind kind)
{
    auto fx = make_msg(kind);
    const ProtobufCMessageDescriptor *desc = fx->msg->descriptor;
    std::vector<uint8_t> buf(protobuf_c_message_get_packed_size(fx->msg));
    protobuf_c_message_pack(fx->msg, buf.data());
    ProtobufCMessage *m = protobuf_c_message_unpack(desc, nullptr, buf.size(), buf.data());
    if (!m) {
        state.SkipWithError("message does not unpack");
        return;
    }
    protobuf_c_message_free_unpacked(m, nullptr);
    for (auto _ : state) {
        m = protobuf_c_message_unpack(desc, nullptr, buf.size(), buf.data());
        benchmark::DoNotOptimize(m);
        protobuf_c_message_free_unpacked(m, nullptr);
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(buf.size()));
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["msg_bytes"] = double(buf.size());
}

BENCHMARK_CAPTURE(BM_ProtobufPack, tunnel_hello, MsgKind::TunnelHello);
BENCHMARK_CAPTURE(BM_ProtobufPack, sync_cameras_100, MsgKind::SyncCameras100);
BENCHMARK_CAPTURE(BM_ProtobufUnpack, tunnel_hello, MsgKind::TunnelHello);
BENCHMARK_CAPTURE(BM_ProtobufUnpack, sync_cameras_100, MsgKind::SyncCameras100);

// ---- 3. Authentication and tickets ----

const cr_auth_secret kSecret = {"OAK-7F3A-99C1", "admin", "correct horse battery staple"};

struct AuthFixture {
    uint8_t salt[CR_AUTH_SALT_LEN];
    uint8_t stored_key[CR_AUTH_KEY_LEN];
    uint8_t client_key[CR_AUTH_KEY_LEN];
    uint8_t client_nonce[CR_AUTH_NONCE_LEN];
    uint8_t server_nonce[CR_AUTH_NONCE_LEN];
    uint8_t proof[CR_AUTH_KEY_LEN];
    cr_auth_transcript t;
};

// A login as the relay sees it: the camera's verifier, a transcript, the agent's proof.
bool make_auth(AuthFixture *a)
{
    if (cr_auth_make_verifier(&kSecret, CR_AUTH_ITERATIONS_DEFAULT, a->salt, a->stored_key) ||
        cr_auth_client_key(&kSecret, a->salt, CR_AUTH_ITERATIONS_DEFAULT, a->client_key))
        return false;
    RAND_bytes(a->client_nonce, sizeof(a->client_nonce));
    RAND_bytes(a->server_nonce, sizeof(a->server_nonce));
    memset(&a->t, 0, sizeof(a->t));
    a->t.identity = "CAM-00001042";
    a->t.client_nonce = a->client_nonce;
    a->t.client_nonce_len = sizeof(a->client_nonce);
    a->t.server_nonce = a->server_nonce;
    a->t.server_nonce_len = sizeof(a->server_nonce);
    a->t.salt = a->salt;
    a->t.iterations = CR_AUTH_ITERATIONS_DEFAULT;
    RAND_bytes(a->t.binding, sizeof(a->t.binding));
    cr_auth_client_proof(a->client_key, &a->t, a->proof);
    return cr_auth_verify(a->stored_key, &a->t, a->proof, sizeof(a->proof)) == 1;
}

void BM_AuthVerify(benchmark::State &state)
{
    AuthFixture a;
    if (!make_auth(&a)) {
        state.SkipWithError("proof does not verify");
        return;
    }
    for (auto _ : state) {
        int ok = cr_auth_verify(a.stored_key, &a.t, a.proof, sizeof(a.proof));
        benchmark::DoNotOptimize(ok);
    }
    state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_AuthVerify);

void BM_AuthClientKey(benchmark::State &state)
{
    uint8_t salt[CR_AUTH_SALT_LEN], key[CR_AUTH_KEY_LEN];
    RAND_bytes(salt, sizeof(salt));
    if (cr_auth_client_key(&kSecret, salt, CR_AUTH_ITERATIONS_DEFAULT, key)) {
        state.SkipWithError("cr_auth_client_key failed");
        return;
    }
    for (auto _ : state) {
        int rc = cr_auth_client_key(&kSecret, salt, CR_AUTH_ITERATIONS_DEFAULT, key);
        benchmark::DoNotOptimize(rc);
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["iterations_pbkdf2"] = CR_AUTH_ITERATIONS_DEFAULT;
}
BENCHMARK(BM_AuthClientKey)->Unit(benchmark::kMicrosecond);

void BM_TicketCheck(benchmark::State &state)
{
    uint8_t key[32], ticket[CR_TICKET_LEN];
    RAND_bytes(key, sizeof(key));
    const uint64_t now = uint64_t(time(nullptr));
    cr_ticket_make(key, "CAM-00001042", "relay-eu-1", now + 300, ticket);
    if (cr_ticket_check(key, "CAM-00001042", "relay-eu-1", ticket, sizeof(ticket), now) != 0) {
        state.SkipWithError("ticket does not check");
        return;
    }
    for (auto _ : state) {
        int rc = cr_ticket_check(key, "CAM-00001042", "relay-eu-1", ticket, sizeof(ticket), now);
        benchmark::DoNotOptimize(rc);
    }
    state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_TicketCheck);

// ---- 4. TLS 1.3 record layer ----

// A full TLS 1.3 application record: 16 KiB of data + the inner content type byte, sealed
// with nonce = iv XOR seq and the 5-byte record header as additional data.
constexpr size_t kRecordData = 16384;
constexpr size_t kRecordInner = kRecordData + 1;
constexpr size_t kTls13NonceLen = 12;

using AeadFn = const EVP_AEAD *(*)();

struct RecordCtx {
    EVP_AEAD_CTX ctx;
    uint8_t iv[kTls13NonceLen];
    uint8_t hdr[5];
    size_t tag_len;
    std::vector<uint8_t> inner; // plaintext + content type

    explicit RecordCtx(const EVP_AEAD *aead) : inner(random_bytes(kRecordInner))
    {
        std::vector<uint8_t> key = random_bytes(EVP_AEAD_key_length(aead));
        RAND_bytes(iv, sizeof(iv));
        EVP_AEAD_CTX_zero(&ctx);
        ok = EVP_AEAD_CTX_init(&ctx, aead, key.data(), key.size(), EVP_AEAD_DEFAULT_TAG_LENGTH,
                               nullptr) == 1 &&
             EVP_AEAD_nonce_length(aead) == kTls13NonceLen;
        tag_len = EVP_AEAD_max_overhead(aead);
        const size_t rec_len = kRecordInner + tag_len;
        inner[kRecordData] = 0x17; // application_data
        hdr[0] = 0x17;
        hdr[1] = 0x03;
        hdr[2] = 0x03;
        hdr[3] = uint8_t(rec_len >> 8);
        hdr[4] = uint8_t(rec_len);
    }
    ~RecordCtx() { EVP_AEAD_CTX_cleanup(&ctx); }
    RecordCtx(const RecordCtx &) = delete;
    RecordCtx &operator=(const RecordCtx &) = delete;

    void nonce(uint64_t seq, uint8_t out[kTls13NonceLen]) const
    {
        memcpy(out, iv, kTls13NonceLen);
        for (int i = 0; i < 8; i++)
            out[4 + i] ^= uint8_t(seq >> (56 - 8 * i));
    }
    bool seal(uint64_t seq, uint8_t *out, size_t cap, size_t *out_len)
    {
        uint8_t n[kTls13NonceLen];
        nonce(seq, n);
        return EVP_AEAD_CTX_seal(&ctx, out, out_len, cap, n, sizeof(n), inner.data(),
                                 inner.size(), hdr, sizeof(hdr)) == 1;
    }
    bool open(uint64_t seq, const uint8_t *in, size_t in_len, uint8_t *out, size_t cap,
              size_t *out_len)
    {
        uint8_t n[kTls13NonceLen];
        nonce(seq, n);
        return EVP_AEAD_CTX_open(&ctx, out, out_len, cap, n, sizeof(n), in, in_len, hdr,
                                 sizeof(hdr)) == 1;
    }

    bool ok = false;
};

void BM_RecordSeal(benchmark::State &state, AeadFn aead)
{
    RecordCtx rc(aead());
    std::vector<uint8_t> out(kRecordInner + rc.tag_len);
    size_t out_len = 0;
    uint64_t seq = 0;
    if (!rc.ok) {
        state.SkipWithError("EVP_AEAD_CTX_init failed");
        return;
    }
    for (auto _ : state) {
        if (!rc.seal(seq++, out.data(), out.size(), &out_len)) {
            state.SkipWithError("seal failed");
            break;
        }
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kRecordData));
    state.SetItemsProcessed(int64_t(state.iterations()));
}

void BM_RecordOpen(benchmark::State &state, AeadFn aead)
{
    // A few records sealed in advance with consecutive sequence numbers, opened in turn.
    constexpr unsigned kRing = 8;
    RecordCtx rc(aead());
    const size_t rec = kRecordInner + rc.tag_len;
    std::vector<uint8_t> sealed(kRing * rec), plain(kRecordInner);
    size_t len = 0;
    if (!rc.ok) {
        state.SkipWithError("EVP_AEAD_CTX_init failed");
        return;
    }
    for (unsigned i = 0; i < kRing; i++)
        if (!rc.seal(i, &sealed[i * rec], rec, &len) || len != rec) {
            state.SkipWithError("seal failed");
            return;
        }
    uint64_t seq = 0;
    for (auto _ : state) {
        unsigned i = unsigned(seq++ % kRing);
        if (!rc.open(i, &sealed[i * rec], rec, plain.data(), plain.size(), &len)) {
            state.SkipWithError("open failed: record does not authenticate");
            break;
        }
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kRecordData));
    state.SetItemsProcessed(int64_t(state.iterations()));
}

BENCHMARK_CAPTURE(BM_RecordSeal, aes_128_gcm, EVP_aead_aes_128_gcm);
BENCHMARK_CAPTURE(BM_RecordSeal, chacha20_poly1305, EVP_aead_chacha20_poly1305);
BENCHMARK_CAPTURE(BM_RecordOpen, aes_128_gcm, EVP_aead_aes_128_gcm);
BENCHMARK_CAPTURE(BM_RecordOpen, chacha20_poly1305, EVP_aead_chacha20_poly1305);

// The same work through relay/tls_record.c as the data path calls it: rly_rec_open in place
// on one whole 16 KiB record (header check, AEAD, content type and padding, one span), and
// rly_rec_seal of 16 KiB out of place or in place (in == out + RLY_REC_HEADER). Keys are
// random material in the kernel layout rly_ktls_derive fills.
struct RlyRecordPair {
    rly_ktls_material m{};
    rly_rec rx{}, tx{}; // rx opens what tx seals: the same direction's keys
    bool ok = false;

    explicit RlyRecordPair(uint16_t cipher)
    {
        m.crypto.info.version = TLS_1_3_VERSION;
        m.crypto.info.cipher_type = cipher;
        switch (cipher) {
        case TLS_CIPHER_AES_GCM_128:
            RAND_bytes(m.crypto.aes_gcm_128.key, sizeof(m.crypto.aes_gcm_128.key));
            RAND_bytes(m.crypto.aes_gcm_128.salt, sizeof(m.crypto.aes_gcm_128.salt));
            RAND_bytes(m.crypto.aes_gcm_128.iv, sizeof(m.crypto.aes_gcm_128.iv));
            m.len = sizeof(m.crypto.aes_gcm_128);
            break;
        case TLS_CIPHER_AES_GCM_256:
            RAND_bytes(m.crypto.aes_gcm_256.key, sizeof(m.crypto.aes_gcm_256.key));
            RAND_bytes(m.crypto.aes_gcm_256.salt, sizeof(m.crypto.aes_gcm_256.salt));
            RAND_bytes(m.crypto.aes_gcm_256.iv, sizeof(m.crypto.aes_gcm_256.iv));
            m.len = sizeof(m.crypto.aes_gcm_256);
            break;
        case TLS_CIPHER_CHACHA20_POLY1305:
            RAND_bytes(m.crypto.chacha20_poly1305.key, sizeof(m.crypto.chacha20_poly1305.key));
            RAND_bytes(m.crypto.chacha20_poly1305.iv, sizeof(m.crypto.chacha20_poly1305.iv));
            m.len = sizeof(m.crypto.chacha20_poly1305);
            break;
        }
        ok = rly_rec_init(&tx, &m, nullptr) == 0 && rly_rec_init(&rx, nullptr, &m) == 0;
    }
    ~RlyRecordPair()
    {
        rly_rec_free(&rx);
        rly_rec_free(&tx);
        rly_ktls_material_wipe(&m);
    }
    RlyRecordPair(const RlyRecordPair &) = delete;
    RlyRecordPair &operator=(const RlyRecordPair &) = delete;
};

constexpr size_t kRlyRecordWire = kRecordData + RLY_REC_OVERHEAD;

void BM_RlyRecOpen(benchmark::State &state, uint16_t cipher)
{
    // A ring of records sealed with consecutive sequence numbers and opened in turn; opening
    // destroys them, so the ring is sealed again (untimed) each time round, continuing the
    // sequence. The ring is as large as BM_RecordOpen's, for the same cache footprint.
    constexpr unsigned kRing = 8;
    RlyRecordPair rp(cipher);
    std::vector<uint8_t> ring(kRing * kRlyRecordWire), data = random_bytes(kRecordData);
    if (!rp.ok) {
        state.SkipWithError("rly_rec_init failed");
        return;
    }
    auto refill = [&]() {
        for (unsigned i = 0; i < kRing; i++)
            if (rly_rec_seal(&rp.tx, &ring[i * kRlyRecordWire], data.data(), kRecordData) !=
                int(kRlyRecordWire))
                return false;
        return true;
    };
    if (!refill()) {
        state.SkipWithError("rly_rec_seal failed");
        return;
    }
    unsigned i = 0;
    rly_rec_span span;
    unsigned n_spans = 0;
    int eof = 0;
    for (auto _ : state) {
        if (i == kRing) {
            state.PauseTiming();
            bool refilled = refill();
            state.ResumeTiming();
            if (!refilled) {
                state.SkipWithError("rly_rec_seal failed");
                break;
            }
            i = 0;
        }
        int rc = rly_rec_open(&rp.rx, &ring[i * kRlyRecordWire], kRlyRecordWire, &span, 1,
                              &n_spans, &eof);
        if (rc != int(kRlyRecordWire) || n_spans != 1 || span.len != kRecordData) {
            state.SkipWithError("rly_rec_open failed");
            break;
        }
        benchmark::DoNotOptimize(span);
        i++;
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kRecordData));
    state.SetItemsProcessed(int64_t(state.iterations()));
}

void BM_RlyRecSeal(benchmark::State &state, uint16_t cipher, bool in_place)
{
    RlyRecordPair rp(cipher);
    std::vector<uint8_t> out(kRlyRecordWire), data = random_bytes(kRecordData);
    if (!rp.ok) {
        state.SkipWithError("rly_rec_init failed");
        return;
    }
    // In place the plaintext sits behind the header room and is overwritten each time:
    // what it contains does not change the cost.
    memcpy(out.data() + RLY_REC_HEADER, data.data(), kRecordData);
    const uint8_t *in = in_place ? out.data() + RLY_REC_HEADER : data.data();
    for (auto _ : state) {
        if (rly_rec_seal(&rp.tx, out.data(), in, kRecordData) != int(kRlyRecordWire)) {
            state.SkipWithError("rly_rec_seal failed");
            break;
        }
        benchmark::ClobberMemory();
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kRecordData));
    state.SetItemsProcessed(int64_t(state.iterations()));
}

BENCHMARK_CAPTURE(BM_RlyRecSeal, aes_128_gcm, uint16_t(TLS_CIPHER_AES_GCM_128), false);
BENCHMARK_CAPTURE(BM_RlyRecSeal, aes_128_gcm_in_place, uint16_t(TLS_CIPHER_AES_GCM_128), true);
BENCHMARK_CAPTURE(BM_RlyRecSeal, aes_256_gcm, uint16_t(TLS_CIPHER_AES_GCM_256), false);
BENCHMARK_CAPTURE(BM_RlyRecSeal, chacha20_poly1305, uint16_t(TLS_CIPHER_CHACHA20_POLY1305),
                  false);
BENCHMARK_CAPTURE(BM_RlyRecOpen, aes_128_gcm, uint16_t(TLS_CIPHER_AES_GCM_128));
BENCHMARK_CAPTURE(BM_RlyRecOpen, aes_256_gcm, uint16_t(TLS_CIPHER_AES_GCM_256));
BENCHMARK_CAPTURE(BM_RlyRecOpen, chacha20_poly1305, uint16_t(TLS_CIPHER_CHACHA20_POLY1305));

// A self-signed P-256 certificate made once per process with BoringSSL's X509 API.
struct SelfSigned {
    EVP_PKEY *key = nullptr;
    X509 *cert = nullptr;
    bool ok = false;

    SelfSigned()
    {
        EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
        key = EVP_PKEY_new();
        cert = X509_new();
        if (!ec || !key || !cert || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(key, ec)) {
            EC_KEY_free(ec);
            return;
        }
        X509_NAME *name = X509_get_subject_name(cert);
        ok = X509_set_version(cert, X509_VERSION_3) &&
             ASN1_INTEGER_set(X509_get_serialNumber(cert), 1) &&
             X509_gmtime_adj(X509_getm_notBefore(cert), -60) &&
             X509_gmtime_adj(X509_getm_notAfter(cert), 24 * 3600) &&
             X509_set_pubkey(cert, key) &&
             X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                        reinterpret_cast<const uint8_t *>("camrelay-bench"), -1,
                                        -1, 0) &&
             X509_set_issuer_name(cert, name) && X509_sign(cert, key, EVP_sha256()) > 0;
    }
    ~SelfSigned()
    {
        X509_free(cert);
        EVP_PKEY_free(key);
    }
};

const SelfSigned &self_signed()
{
    static SelfSigned s;
    return s;
}

// A connected TLS 1.3 pair configured like common/tls.c (TLS 1.3 only, no tickets, client
// verifies the server), each side on memory BIOs like the relay's agent connections.
struct TlsPair {
    SSL_CTX *sctx = nullptr, *cctx = nullptr;
    SSL *server = nullptr, *client = nullptr;
    bench_tls_pipe *pipe = nullptr;
    std::string error;

    TlsPair()
    {
        const SelfSigned &ss = self_signed();
        if (!ss.ok) {
            error = "cannot make a self-signed certificate";
            return;
        }
        sctx = SSL_CTX_new(TLS_method());
        cctx = SSL_CTX_new(TLS_method());
        pipe = bench_tls_pipe_new();
        if (!sctx || !cctx || !pipe) {
            error = "out of memory";
            return;
        }
        for (SSL_CTX *c : {sctx, cctx}) {
            SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
            SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
            SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
        }
        SSL_CTX_set_options(sctx, SSL_OP_NO_TICKET);
        if (!SSL_CTX_use_certificate(sctx, ss.cert) || !SSL_CTX_use_PrivateKey(sctx, ss.key) ||
            !X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), ss.cert)) {
            error = "cannot install the certificate";
            return;
        }
        SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, nullptr);
        server = new_ssl(sctx);
        client = new_ssl(cctx);
        if (!server || !client) {
            error = "SSL_new failed";
            return;
        }
        SSL_set_accept_state(server);
        SSL_set_connect_state(client);
        if (!handshake())
            error = "TLS handshake failed";
    }
    ~TlsPair()
    {
        SSL_free(client);
        SSL_free(server);
        SSL_CTX_free(cctx);
        SSL_CTX_free(sctx);
        bench_tls_pipe_free(pipe);
    }
    TlsPair(const TlsPair &) = delete;
    TlsPair &operator=(const TlsPair &) = delete;

    static SSL *new_ssl(SSL_CTX *ctx)
    {
        SSL *ssl = SSL_new(ctx);
        if (!ssl)
            return nullptr;
        SSL_set_bio(ssl, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem())); // ssl owns both
        return ssl;
    }
    static bool step(SSL *ssl, bool *done)
    {
        int rc = SSL_do_handshake(ssl);
        *done = rc == 1;
        return rc == 1 || SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ;
    }
    bool handshake()
    {
        bool c_done = false, s_done = false;
        for (int round = 0; round < 16 && !(c_done && s_done); round++) {
            if (!step(client, &c_done) || bench_tls_pipe_pump(pipe, client, server) < 0 ||
                !step(server, &s_done) || bench_tls_pipe_pump(pipe, server, client) < 0)
                return false;
        }
        return c_done && s_done;
    }
};

// Agent → relay direction of a stream: SSL_write on the agent, ciphertext moved through the
// relay's buffer into its read BIO, SSL_read on the relay.
void BM_SslWriteRead16K(benchmark::State &state)
{
    TlsPair tp;
    if (!tp.error.empty()) {
        state.SkipWithError(tp.error.c_str());
        return;
    }
    std::vector<uint8_t> data = random_bytes(kRecordData), got(kRecordData);
    long wire = 0;
    for (auto _ : state) {
        int w = SSL_write(tp.client, data.data(), int(data.size()));
        long moved = bench_tls_pipe_pump(tp.pipe, tp.client, tp.server);
        int r = SSL_read(tp.server, got.data(), int(got.size()));
        if (w != int(kRecordData) || moved <= 0 || r != int(kRecordData)) {
            state.SkipWithError("record did not go through");
            break;
        }
        wire = moved;
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kRecordData));
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.counters["wire_bytes"] = double(wire);
    state.SetLabel(SSL_CIPHER_get_name(SSL_get_current_cipher(tp.server)));
}
BENCHMARK(BM_SslWriteRead16K);

// ---- 5. RTP packetization (agent side) ----

int emit_count(void *ctx, const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
               size_t payload_len)
{
    *static_cast<size_t *>(ctx) += hdr_len + payload_len + hdr[0] + payload[0];
    return 0;
}

// RTSP interleaved framing into one reserved buffer, as agent/sim.c writes a session's output.
struct InterleavedOut {
    uint8_t *p;
    size_t left;
};

int emit_interleaved(void *ctx, const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                     size_t payload_len)
{
    auto *e = static_cast<InterleavedOut *>(ctx);
    const size_t len = hdr_len + payload_len;
    if (4 + len > e->left)
        return -ENOBUFS;
    e->p[0] = '$';
    e->p[1] = 0;
    e->p[2] = uint8_t(len >> 8);
    e->p[3] = uint8_t(len);
    memcpy(e->p + 4, hdr, hdr_len);
    memcpy(e->p + 4 + hdr_len, payload, payload_len);
    e->p += 4 + len;
    e->left -= 4 + len;
    return 0;
}

// One NAL unit of nal_len bytes (IDR or non-IDR slice) into packets of at most 1400 bytes.
// copy=false: headers only (the emit callback touches nothing); copy=true: the agent's real
// emit, sized first with agt_rtp_au_size and copied into RTSP interleaved framing.
void BM_RtpPacketize(benchmark::State &state, size_t nal_len, bool idr, bool copy)
{
    std::vector<uint8_t> nal = random_bytes(nal_len);
    nal[0] = idr ? 0x65 : 0x41; // NRI 3 / 2, type 5 (IDR) / 1 (slice)
    const agt_nal n = {nal.data(), nal.size()};
    agt_rtp rtp = {};
    rtp.ssrc = 0x1234abcd;
    rtp.payload_type = 96;
    rtp.max_payload = AGT_RTP_DEFAULT_PAYLOAD;
    size_t bytes = 0, packets = 0;
    if (agt_rtp_au_size(&rtp, &n, 1, 4, &bytes, &packets) != 0) {
        state.SkipWithError("agt_rtp_au_size failed");
        return;
    }
    std::vector<uint8_t> out(bytes);
    uint32_t ts = 0;
    for (auto _ : state) {
        int rc;
        if (copy) {
            size_t need = 0, count = 0;
            agt_rtp_au_size(&rtp, &n, 1, 4, &need, &count);
            InterleavedOut e = {out.data(), need};
            rc = agt_rtp_packetize(&rtp, &n, 1, ts, emit_interleaved, &e);
        } else {
            size_t sink = 0;
            rc = agt_rtp_packetize(&rtp, &n, 1, ts, emit_count, &sink);
            benchmark::DoNotOptimize(sink);
        }
        if (rc != int(packets)) {
            state.SkipWithError("agt_rtp_packetize emitted an unexpected packet count");
            break;
        }
        benchmark::ClobberMemory();
        ts += 3000; // 30 fps at 90 kHz
    }
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(nal_len));
    state.SetItemsProcessed(int64_t(state.iterations()) * int64_t(packets));
    state.counters["packets"] = double(packets);
}

BENCHMARK_CAPTURE(BM_RtpPacketize, idr_60KB, size_t(60000), true, false);
BENCHMARK_CAPTURE(BM_RtpPacketize, idr_60KB_interleaved, size_t(60000), true, true);
BENCHMARK_CAPTURE(BM_RtpPacketize, p_5KB, size_t(5000), false, false);
BENCHMARK_CAPTURE(BM_RtpPacketize, p_5KB_interleaved, size_t(5000), false, true);

// ---- 6. io_uring provided-buffer ring ----

constexpr unsigned short kBgid = 0;

// An io_uring set up like the relay worker's (SINGLE_ISSUER + DEFER_TASKRUN + COOP_TASKRUN,
// plain fallback) with a registered provided-buffer ring of the relay's geometry.
// liburing 2.3 has no io_uring_setup_buf_ring: map, init, register, fill.
struct BufRing {
    io_uring ring;
    io_uring_buf_ring *br = nullptr;
    uint8_t *bufs = nullptr;
    unsigned n = bench_relay_ring_bufs();
    size_t size = bench_relay_buf_size();
    size_t ring_bytes = n * sizeof(io_uring_buf);
    bool have_ring = false, registered = false;
    std::string error;

    BufRing()
    {
        io_uring_params p;
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                  IORING_SETUP_COOP_TASKRUN;
        int rc = io_uring_queue_init_params(16, &ring, &p);
        if (rc < 0) {
            memset(&p, 0, sizeof(p));
            rc = io_uring_queue_init_params(16, &ring, &p);
        }
        if (rc < 0) {
            error = std::string("io_uring_queue_init: ") + strerror(-rc);
            return;
        }
        have_ring = true;
        void *mem = mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE,
                         MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        void *data = mmap(nullptr, n * size, PROT_READ | PROT_WRITE,
                          MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (mem == MAP_FAILED || data == MAP_FAILED) {
            if (mem != MAP_FAILED)
                munmap(mem, ring_bytes);
            if (data != MAP_FAILED)
                munmap(data, n * size);
            error = "mmap failed";
            return;
        }
        br = static_cast<io_uring_buf_ring *>(mem);
        bufs = static_cast<uint8_t *>(data);
        io_uring_buf_ring_init(br);
        io_uring_buf_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.ring_addr = reinterpret_cast<unsigned long>(mem);
        reg.ring_entries = n;
        reg.bgid = kBgid;
        rc = io_uring_register_buf_ring(&ring, &reg, 0);
        if (rc < 0) {
            error = std::string("io_uring_register_buf_ring: ") + strerror(-rc);
            return;
        }
        registered = true;
        for (unsigned i = 0; i < n; i++)
            io_uring_buf_ring_add(br, bufs + size_t(i) * size, unsigned(size),
                                  static_cast<unsigned short>(i), io_uring_buf_ring_mask(n),
                                  int(i));
        io_uring_buf_ring_advance(br, int(n));
    }
    ~BufRing()
    {
        if (registered)
            io_uring_unregister_buf_ring(&ring, kBgid);
        if (br)
            munmap(br, ring_bytes);
        if (bufs)
            munmap(bufs, n * size);
        if (have_ring)
            io_uring_queue_exit(&ring);
    }
    BufRing(const BufRing &) = delete;
    BufRing &operator=(const BufRing &) = delete;

    // What the relay does per receive completion: hand buffer bid back to the kernel.
    void recycle(unsigned bid)
    {
        io_uring_buf_ring_add(br, bufs + size_t(bid) * size, unsigned(size),
                              static_cast<unsigned short>(bid), io_uring_buf_ring_mask(n), 0);
        io_uring_buf_ring_advance(br, 1);
    }
    std::string label() const
    {
        return std::to_string(n) + " x " + std::to_string(size) + " B";
    }
};

void BM_BufferRingRecycle(benchmark::State &state)
{
    BufRing r;
    if (!r.error.empty()) {
        state.SkipWithError(r.error.c_str());
        return;
    }
    // No receive is in flight, so the kernel never reads the ring: this is the userspace
    // cost alone (two stores and a release store of the tail).
    unsigned bid = 0;
    for (auto _ : state) {
        r.recycle(bid);
        bid = (bid + 1) % r.n;
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.SetLabel(r.label());
}
BENCHMARK(BM_BufferRingRecycle);

// One 16 KiB message over an AF_UNIX socketpair per iteration: an io_uring send on one end
// and a recv on the other, both in one submit. select=true: the recv picks a buffer from the
// ring (IOSQE_BUFFER_SELECT) and the buffer is recycled; select=false: the recv targets one
// fixed buffer (the recorder side's struct rly_buf) for comparison.
void BM_BufferRingRoundTrip(benchmark::State &state, bool select)
{
    constexpr size_t kMsg = 16384;
    constexpr uint64_t kSendTag = 1, kRecvTag = 2;
    BufRing r;
    int sv[2] = {-1, -1};
    if (!r.error.empty()) {
        state.SkipWithError(r.error.c_str());
        return;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        state.SkipWithError("socketpair failed");
        return;
    }
    std::vector<uint8_t> msg = random_bytes(kMsg), fixed(r.size);
    auto post_recv = [&](size_t want) {
        io_uring_sqe *sqe = io_uring_get_sqe(&r.ring);
        if (select) {
            io_uring_prep_recv(sqe, sv[0], nullptr, unsigned(r.size), 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = kBgid;
        } else {
            io_uring_prep_recv(sqe, sv[0], fixed.data(), want, 0);
        }
        io_uring_sqe_set_data64(sqe, kRecvTag);
    };
    const char *err = nullptr;
    for (auto _ : state) {
        io_uring_sqe *sqe = io_uring_get_sqe(&r.ring);
        io_uring_prep_send(sqe, sv[1], msg.data(), kMsg, 0);
        io_uring_sqe_set_data64(sqe, kSendTag);
        post_recv(kMsg);
        bool sent = false;
        size_t got = 0;
        while (!err && (!sent || got < kMsg)) {
            int rc = io_uring_submit_and_wait(&r.ring, 1);
            if (rc < 0) {
                err = "io_uring_submit_and_wait failed";
                break;
            }
            unsigned head, seen = 0;
            io_uring_cqe *cqe;
            io_uring_for_each_cqe(&r.ring, head, cqe)
            {
                seen++;
                if (io_uring_cqe_get_data64(cqe) == kSendTag) {
                    if (cqe->res != int(kMsg))
                        err = "short or failed send";
                    sent = true;
                    continue;
                }
                if (cqe->res <= 0) {
                    err = cqe->res == -ENOBUFS ? "buffer ring empty" : "recv failed";
                    continue;
                }
                if (cqe->flags & IORING_CQE_F_BUFFER)
                    r.recycle(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                got += size_t(cqe->res);
                if (got < kMsg)
                    post_recv(kMsg - got);
            }
            io_uring_cq_advance(&r.ring, seen);
        }
        if (err) {
            state.SkipWithError(err);
            break;
        }
    }
    close(sv[0]);
    close(sv[1]);
    state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(kMsg));
    state.SetItemsProcessed(int64_t(state.iterations()));
    state.SetLabel(select ? r.label() : "fixed buffer");
}
// Wall time: the kernel's share of the work need not run on this thread's CPU clock.
BENCHMARK_CAPTURE(BM_BufferRingRoundTrip, buffer_select, true)->UseRealTime();
BENCHMARK_CAPTURE(BM_BufferRingRoundTrip, fixed_buffer, false)->UseRealTime();

} // namespace

BENCHMARK_MAIN();
