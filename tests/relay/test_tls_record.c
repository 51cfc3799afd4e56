/* Tests of relay/tls_record.c: our record layer against real TLS 1.3 peers (BoringSSL, and
 * OpenSSL's s_client for the cipher suites BoringSSL will not pick). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/tls.h"
#include "relay/ktls.h"
#include "relay/tls_record.h"
#include "tests/support/support.h"
#include "tests/support/tls_pair.h"

#define CT_CCS 20
#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPDATA 23
#define BIG (256 * 1024)
#define MAX_SPANS 64

/* Set in the environment of the re-executed test binary that runs the BoringSSL-pair tests
 * with AES-NI masked (OPENSSL_ia32cap), where BoringSSL negotiates ChaCha20-Poly1305. */
#define ENV_CHACHA "CAMRELAY_TEST_TLS_RECORD_CHACHA"
/* AES-NI is bit 25 of CPUID.1:ECX, bit 57 of the first word BoringSSL reads. */
#define IA32CAP_NO_AESNI "~0x200000000000000"

struct fixture {
    struct test_tls_certs certs;
    SSL_CTX *server; /* cr_tls_server_ctx (no tickets) with the keylog callback */
    SSL_CTX *client; /* cr_tls_client_ctx */
    uint16_t want_cipher;
};

static struct fixture fx;

/* Scratch buffers, too large for the stack. */
static uint8_t wire[BIG], work[BIG], plain[BIG], data[BIG];

/* A BoringSSL client and server after a handshake and some traffic through SSL, and our
 * record layer set up from the server's derived material (kept, so a test can start over
 * at the same point with rly_rec_init). */
struct pair {
    struct test_tls_end c, s;
    struct rly_ktls_material tx, rx;
    struct rly_rec rec;
};

static int setup(void **state)
{
    char err[256];
    (void)state;
    fx.want_cipher = getenv(ENV_CHACHA) ? 0x1303 : 0x1301;
    if (test_tls_certs_make(&fx.certs) < 0)
        return -1;
    fx.server = cr_tls_server_ctx(fx.certs.cert, fx.certs.key, err, sizeof(err));
    fx.client = cr_tls_client_ctx(fx.certs.ca, err, sizeof(err));
    if (!fx.server || !fx.client || rly_ktls_keylog_install(fx.server) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(fx.server);
    SSL_CTX_free(fx.client);
    test_rmtree(fx.certs.dir);
    return 0;
}

/* Deterministic bytes that change with seed and position and include zeros. */
static void fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)(x >> 24);
    }
}

/* Everything e wrote since the last call, appended at buf; returns its length. */
static size_t take(struct test_tls_end *e, uint8_t *buf, size_t cap)
{
    size_t got = 0;
    int n;
    while (got < cap && (n = BIO_read(e->out, buf + got, (int)(cap - got))) > 0)
        got += (size_t)n;
    assert_int_equal(BIO_ctrl_pending(e->out), 0);
    return got;
}

static void ssl_write_all(SSL *ssl, const uint8_t *buf, size_t len)
{
    assert_int_equal(SSL_write(ssl, buf, (int)len), (int)len);
}

/* Reads exactly len bytes from ssl (everything was fed to its read BIO already). */
static void ssl_read_exact(SSL *ssl, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        int n = SSL_read(ssl, buf + got, (int)(len - got));
        assert_true(n > 0);
        got += (size_t)n;
    }
}

/* Handshake, then three records client -> server and two server -> client through SSL,
 * then the hand-off: the record layer continues both sequences from there. */
static void pair_open(struct pair *p)
{
    uint8_t buf[4096];

    memset(p, 0, sizeof(*p));
    test_tls_pair_handshake(&p->c, &p->s, fx.client, fx.server);
    assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(p->s.ssl)),
                     fx.want_cipher);

    for (uint32_t i = 0; i < 3; i++) {
        fill(buf, 1000 + i, 100 + i);
        ssl_write_all(p->c.ssl, buf, 1000 + i);
    }
    test_tls_move_all(p->c.out, p->s.in);
    for (uint32_t i = 0; i < 3; i++)
        ssl_read_exact(p->s.ssl, work, 1000 + i);
    for (uint32_t i = 0; i < 2; i++) {
        fill(buf, 2000 + i, 200 + i);
        ssl_write_all(p->s.ssl, buf, 2000 + i);
    }
    test_tls_move_all(p->s.out, p->c.in);
    for (uint32_t i = 0; i < 2; i++)
        ssl_read_exact(p->c.ssl, work, 2000 + i);

    assert_int_equal(rly_ktls_derive_keep(p->s.ssl, 1, &p->tx, &p->rx), 0);
    assert_int_equal(SSL_get_read_sequence(p->s.ssl), 3);
    assert_int_equal(SSL_get_write_sequence(p->s.ssl), 2);
    assert_int_equal(rly_rec_init(&p->rec, &p->tx, &p->rx), 0);
}

/* Back to the state right after the hand-off (sequence numbers included). */
static void pair_restart(struct pair *p)
{
    rly_rec_free(&p->rec);
    assert_int_equal(rly_rec_init(&p->rec, &p->tx, &p->rx), 0);
}

static void pair_close(struct pair *p)
{
    rly_rec_free(&p->rec);
    rly_ktls_material_wipe(&p->tx);
    rly_ktls_material_wipe(&p->rx);
    SSL_free(p->c.ssl);
    SSL_free(p->s.ssl);
}

/* rly_rec_open over buf[0, len) expecting every byte consumed and no eof; the plaintext of
 * all spans is appended to out. Returns the plaintext length. */
static size_t open_all(struct rly_rec *r, uint8_t *buf, size_t len, uint8_t *out,
                       unsigned *n_spans)
{
    struct rly_rec_span spans[MAX_SPANS];
    unsigned n = 99;
    int eof = 7;
    size_t got = 0;

    int rc = rly_rec_open(r, buf, len, spans, MAX_SPANS, &n, &eof);
    assert_int_equal(rc, (int)len);
    assert_int_equal(eof, 0);
    assert_true(n <= MAX_SPANS);
    for (unsigned i = 0; i < n; i++) {
        assert_true(spans[i].len > 0);
        assert_true((size_t)spans[i].off + spans[i].len <= len);
        if (i > 0)
            assert_true(spans[i].off >= spans[i - 1].off + spans[i - 1].len + RLY_REC_TAG);
        memcpy(out + got, buf + spans[i].off, spans[i].len);
        got += spans[i].len;
    }
    if (n_spans)
        *n_spans = n;
    return got;
}

/* Expects rly_rec_open to fail with want on buf[0, len), reporting no spans. */
static void open_fails(struct rly_rec *r, uint8_t *buf, size_t len, int want)
{
    struct rly_rec_span spans[MAX_SPANS];
    unsigned n = 99;
    int eof = 7;
    assert_int_equal(rly_rec_open(r, buf, len, spans, MAX_SPANS, &n, &eof), want);
    assert_int_equal(n, 0);
    assert_int_equal(eof, 0);
    /* Nothing left on the thread's error queue for the next SSL_get_error to trip over. */
    assert_int_equal(ERR_peek_error(), 0);
}

/* A record as the peer would seal it under m at sequence number seq, with any inner
 * plaintext (content || type || padding) and outer type: lets a test send what BoringSSL's
 * API cannot (padding, other alerts, odd types). Returns the record's length. */
static size_t craft(const struct rly_ktls_material *m, uint64_t seq, uint8_t outer,
                    const uint8_t *inner, size_t inner_len, uint8_t *out)
{
    const EVP_AEAD *aead = NULL;
    const uint8_t *key = NULL;
    size_t key_len = 0, out_len = 0;
    uint8_t nonce[12];
    EVP_AEAD_CTX ctx;

    test_tls_material_parts(m, &aead, &key, &key_len, nonce);
    for (int i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
    size_t body = inner_len + 16;
    out[0] = outer;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(body >> 8);
    out[4] = (uint8_t)body;
    assert_int_equal(EVP_AEAD_CTX_init(&ctx, aead, key, key_len, 16, NULL), 1);
    assert_int_equal(EVP_AEAD_CTX_seal(&ctx, out + 5, &out_len, body, nonce, sizeof(nonce),
                                       inner, inner_len, out, 5),
                     1);
    EVP_AEAD_CTX_cleanup(&ctx);
    assert_int_equal(out_len, body);
    return 5 + body;
}

/* ---- Opening what the agent sends ---- */

static void test_tls_record_open_sizes_reproduce_writes(void **state)
{
    static const size_t sizes[] = {1, 7, 812, 7812, 16383, 16384, 16385, 40000};
    struct pair p;
    (void)state;

    pair_open(&p);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        unsigned n_spans;
        fill(data, n, (uint32_t)i);
        ssl_write_all(p.c.ssl, data, n);
        size_t len = take(&p.c, wire, sizeof(wire));
        if (n <= 16384)
            assert_int_equal(rly_rec_need(wire, len), (int)len); /* exactly one record */
        assert_int_equal(len, n + (n + 16383) / 16384 * RLY_REC_OVERHEAD);
        memset(plain, 0xee, n + 1);
        assert_int_equal(open_all(&p.rec, wire, len, plain, &n_spans), n);
        assert_int_equal(n_spans, (n + 16383) / 16384);
        assert_memory_equal(plain, data, n);
    }
    /* Trailing zero bytes are content, not padding. */
    static const uint8_t zeros[] = {'z', 0, 0, 0};
    ssl_write_all(p.c.ssl, zeros, sizeof(zeros));
    size_t len = take(&p.c, wire, sizeof(wire));
    assert_int_equal(open_all(&p.rec, wire, len, plain, NULL), sizeof(zeros));
    assert_memory_equal(plain, zeros, sizeof(zeros));
    assert_int_equal(p.rec.rx.seq, SSL_get_write_sequence(p.c.ssl));
    pair_close(&p);
}

static void test_tls_record_open_many_records_one_buffer(void **state)
{
    static const size_t sizes[] = {5, 16384, 1, 300, 9000, 16384, 2, 777, 4096, 12};
    struct rly_rec_span spans[MAX_SPANS];
    size_t off[10], total = 0;
    unsigned n;
    int eof;
    struct pair p;
    (void)state;

    pair_open(&p);
    for (size_t i = 0; i < 10; i++) {
        off[i] = total;
        fill(data + total, sizes[i], 1000 + (uint32_t)i);
        ssl_write_all(p.c.ssl, data + total, sizes[i]);
        total += sizes[i];
    }
    size_t len = take(&p.c, wire, sizeof(wire));
    assert_int_equal(len, total + 10 * RLY_REC_OVERHEAD);
    assert_int_equal(rly_rec_open(&p.rec, wire, len, spans, MAX_SPANS, &n, &eof), (int)len);
    assert_int_equal(n, 10);
    assert_int_equal(eof, 0);
    size_t rec_off = 0;
    for (size_t i = 0; i < 10; i++) {
        /* Each span is its record's body, right behind the header. */
        assert_int_equal(spans[i].off, rec_off + RLY_REC_HEADER);
        assert_int_equal(spans[i].len, sizes[i]);
        assert_memory_equal(wire + spans[i].off, data + off[i], sizes[i]);
        rec_off += sizes[i] + RLY_REC_OVERHEAD;
    }
    pair_close(&p);
}

static void test_tls_record_open_partial_record_waits(void **state)
{
    static const size_t sizes[] = {100, 16384, 5000};
    static const long cuts[] = {0, 1, 4, 5, 6, 4000, -1}; /* into the third record; -1: end-1 */
    size_t rec_len[3], total = 0, len;
    struct pair p;
    (void)state;

    pair_open(&p);
    for (size_t i = 0; i < 3; i++) {
        fill(data + total, sizes[i], 77 + (uint32_t)i);
        ssl_write_all(p.c.ssl, data + total, sizes[i]);
        rec_len[i] = sizes[i] + RLY_REC_OVERHEAD;
        total += sizes[i];
    }
    len = take(&p.c, wire, sizeof(wire));
    assert_int_equal(len, rec_len[0] + rec_len[1] + rec_len[2]);

    for (size_t k = 0; k < sizeof(cuts) / sizeof(cuts[0]); k++) {
        size_t two = rec_len[0] + rec_len[1];
        size_t cut = cuts[k] < 0 ? len - 1 : two + (size_t)cuts[k];
        unsigned n;

        struct rly_rec_span spans[4];
        int eof;

        pair_restart(&p);
        memcpy(work, wire, len);
        /* Only the whole records are consumed. */
        assert_int_equal(rly_rec_open(&p.rec, work, cut, spans, 4, &n, &eof), (int)two);
        assert_int_equal(n, 2);
        assert_memory_equal(work + spans[0].off, data, sizes[0]);
        assert_memory_equal(work + spans[1].off, data + sizes[0], sizes[1]);
        /* What the caller keeps tells how much the record needs. */
        assert_int_equal(rly_rec_need(work + two, cut - two),
                         cut - two < RLY_REC_HEADER ? 0 : (int)rec_len[2]);
        /* The rest arrives behind what was kept. */
        memmove(work, work + two, cut - two);
        memcpy(work + (cut - two), wire + cut, len - cut);
        assert_int_equal(open_all(&p.rec, work, rec_len[2], plain, &n), sizes[2]);
        assert_int_equal(n, 1);
        assert_memory_equal(plain, data + sizes[0] + sizes[1], sizes[2]);
    }

    /* One byte at a time: nothing is consumed until a record is whole. */
    pair_restart(&p);
    memcpy(work, wire, len);
    size_t start = 0, got = 0, records = 0;
    for (size_t end = 1; end <= len; end++) {
        struct rly_rec_span spans[4];
        unsigned n;
        int eof;
        int rc = rly_rec_open(&p.rec, work + start, end - start, spans, 4, &n, &eof);
        assert_true(rc >= 0);
        if (rc == 0) {
            assert_int_equal(n, 0);
            continue;
        }
        assert_int_equal(rc, rec_len[records]);
        assert_int_equal(end - start, rec_len[records]);
        assert_int_equal(n, 1);
        memcpy(plain + got, work + start + spans[0].off, spans[0].len);
        got += spans[0].len;
        start += (size_t)rc;
        records++;
    }
    assert_int_equal(records, 3);
    assert_int_equal(got, total);
    assert_memory_equal(plain, data, total);
    pair_close(&p);
}

static void test_tls_record_open_stops_at_max_spans(void **state)
{
    struct rly_rec_span spans[3];
    unsigned n;
    int eof;
    struct pair p;
    (void)state;

    pair_open(&p);
    ssl_write_all(p.c.ssl, (const uint8_t *)"one", 3);
    ssl_write_all(p.c.ssl, (const uint8_t *)"two", 3);
    ssl_write_all(p.c.ssl, (const uint8_t *)"three", 5);
    size_t len = take(&p.c, wire, sizeof(wire));
    size_t r1 = 3 + RLY_REC_OVERHEAD, r2 = 3 + RLY_REC_OVERHEAD;

    /* No room for spans: nothing opened, the sequence number has not moved. */
    assert_int_equal(rly_rec_open(&p.rec, wire, len, spans, 0, &n, &eof), 0);
    assert_int_equal(n, 0);
    assert_int_equal(rly_rec_open(&p.rec, wire, len, spans, 1, &n, &eof), (int)r1);
    assert_int_equal(n, 1);
    assert_memory_equal(wire + spans[0].off, "one", 3);
    assert_int_equal(rly_rec_open(&p.rec, wire + r1, len - r1, spans, 3, &n, &eof),
                     (int)(len - r1));
    assert_int_equal(n, 2);
    assert_int_equal(spans[0].len, 3);
    assert_memory_equal(wire + r1 + spans[0].off, "two", 3);
    assert_int_equal(spans[1].len, 5);
    assert_memory_equal(wire + r1 + spans[1].off, "three", 5);
    assert_int_equal(spans[1].off, r2 + RLY_REC_HEADER);
    pair_close(&p);
}

static void test_tls_record_need_checks_header(void **state)
{
    uint8_t h[5] = {0x17, 0x03, 0x03, 0x00, 0x20};
    (void)state;

    assert_int_equal(rly_rec_need(h, 0), 0);
    assert_int_equal(rly_rec_need(h, 4), 0);
    assert_int_equal(rly_rec_need(h, 5), 5 + 0x20);
    h[3] = 0x41; /* 16640 = 2^14 + 256: the largest allowed */
    h[4] = 0x00;
    assert_int_equal(rly_rec_need(h, 5), RLY_REC_MAX_WIRE);
    h[4] = 0x01;
    assert_int_equal(rly_rec_need(h, 5), -EMSGSIZE);
    h[3] = 0xff;
    h[4] = 0xff;
    assert_int_equal(rly_rec_need(h, 5), -EMSGSIZE);
    h[3] = 0;
    h[4] = 1;
    static const uint8_t bad[][3] = {
        {0x14, 0x03, 0x03}, /* change_cipher_spec after the handshake */
        {0x15, 0x03, 0x03}, /* an unprotected alert */
        {0x16, 0x03, 0x03}, /* an unprotected handshake message */
        {0x18, 0x03, 0x03}, {0x17, 0x03, 0x01}, {0x17, 0x03, 0x04}, {0x17, 0x02, 0x03},
        {0x00, 0x00, 0x00},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(h, bad[i], 3);
        assert_int_equal(rly_rec_need(h, 5), -EPROTO);
    }
}

/* Each tampering fails alone: the same record opens untouched on a fresh start. */
static void test_tls_record_open_tampered_record_fails(void **state)
{
    static const struct {
        long at; /* byte offset; negative: from the end */
        uint8_t mask;
        int want;
    } cases[] = {
        {5, 0x01, -EBADMSG},    /* first ciphertext byte */
        {600, 0x80, -EBADMSG},  /* mid ciphertext */
        {-17, 0x01, -EBADMSG},  /* the encrypted content type */
        {-16, 0x01, -EBADMSG},  /* first tag byte */
        {-1, 0x40, -EBADMSG},   /* last tag byte */
        {0, 0x01, -EPROTO},     /* type 0x17 -> 0x16 */
        {0, 0x03, -EPROTO},     /* type 0x17 -> 0x14 */
        {1, 0x01, -EPROTO},     /* version 0x0303 -> 0x0203 */
        {2, 0x02, -EPROTO},     /* version 0x0303 -> 0x0301 */
    };
    struct pair p;
    (void)state;

    pair_open(&p);
    fill(data, 1000, 5);
    ssl_write_all(p.c.ssl, data, 1000);
    size_t len = take(&p.c, wire, sizeof(wire));

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t at = cases[i].at < 0 ? len - (size_t)(-cases[i].at) : (size_t)cases[i].at;
        pair_restart(&p);
        memcpy(work, wire, len);
        work[at] ^= cases[i].mask;
        open_fails(&p.rec, work, len, cases[i].want);
        /* The direction is dead now, even for a good record. */
        memcpy(work, wire, len);
        open_fails(&p.rec, work, len, -EINVAL);
        pair_restart(&p);
        assert_int_equal(open_all(&p.rec, work, len, plain, NULL), 1000);
        assert_memory_equal(plain, data, 1000);
    }

    /* A length one short (the header is the AAD), or one long with a byte behind it. */
    pair_restart(&p);
    memcpy(work, wire, len);
    work[4]--;
    open_fails(&p.rec, work, len, -EBADMSG);
    pair_restart(&p);
    memcpy(work, wire, len);
    work[4]++;
    work[len] = 0;
    open_fails(&p.rec, work, len + 1, -EBADMSG);
    pair_close(&p);
}

static void test_tls_record_open_replayed_or_skipped_record_fails(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    ssl_write_all(p.c.ssl, (const uint8_t *)"first", 5);
    size_t len1 = take(&p.c, wire, sizeof(wire));
    ssl_write_all(p.c.ssl, (const uint8_t *)"second", 6);
    size_t len2 = take(&p.c, wire + len1, sizeof(wire) - len1);

    memcpy(work, wire, len1 + len2);
    assert_int_equal(open_all(&p.rec, work, len1, plain, NULL), 5);
    assert_memory_equal(plain, "first", 5);
    memcpy(work, wire, len1);
    open_fails(&p.rec, work, len1, -EBADMSG); /* replayed: the sequence number moved on */

    pair_restart(&p);
    memcpy(work, wire + len1, len2);
    open_fails(&p.rec, work, len2, -EBADMSG); /* the first was lost */

    pair_restart(&p);
    memcpy(work, wire, len1 + len2);
    assert_int_equal(open_all(&p.rec, work, len1 + len2, plain, NULL), 11);
    assert_memory_equal(plain, "firstsecond", 11);
    pair_close(&p);
}

static void test_tls_record_open_bad_lengths(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    /* Longer than 2^14 + 256: refused from the header, before the body arrived. */
    memcpy(work, "\x17\x03\x03\x41\x01", 5);
    open_fails(&p.rec, work, 5, -EMSGSIZE);
    pair_restart(&p);
    memset(work + 5, 0xab, 16641);
    open_fails(&p.rec, work, 5 + 16641, -EMSGSIZE);
    /* Too short to hold a content type and a tag. */
    pair_restart(&p);
    memcpy(work, "\x17\x03\x03\x00\x10", 5);
    memset(work + 5, 0, 16);
    open_fails(&p.rec, work, 21, -EPROTO);
    pair_restart(&p);
    memcpy(work, "\x17\x03\x03\x00\x00", 5);
    open_fails(&p.rec, work, 5, -EPROTO);
    /* A legacy change_cipher_spec record after the handshake. */
    pair_restart(&p);
    memcpy(work, "\x14\x03\x03\x00\x01\x01", 6);
    open_fails(&p.rec, work, 6, -EPROTO);
    pair_close(&p);
}

static void test_tls_record_open_close_notify_sets_eof(void **state)
{
    struct rly_rec_span spans[4];
    unsigned n;
    int eof;
    struct pair p;
    (void)state;

    pair_open(&p);
    ssl_write_all(p.c.ssl, (const uint8_t *)"last words", 10);
    size_t len = take(&p.c, wire, sizeof(wire));
    assert_int_equal(SSL_shutdown(p.c.ssl), 0); /* close_notify sent, none received */
    len += take(&p.c, wire + len, sizeof(wire) - len);
    assert_int_equal(len, 10 + RLY_REC_OVERHEAD + 2 + RLY_REC_OVERHEAD);
    memcpy(wire + len, "garbage", 7); /* ignored, and counted as consumed */

    memcpy(work, wire, len + 7);
    assert_int_equal(rly_rec_open(&p.rec, work, len + 7, spans, 4, &n, &eof), (int)len + 7);
    assert_int_equal(eof, 1);
    assert_int_equal(n, 1);
    assert_int_equal(spans[0].len, 10);
    assert_memory_equal(work + spans[0].off, "last words", 10);
    /* Nothing may follow a close_notify. */
    memcpy(work, wire, len);
    open_fails(&p.rec, work, len, -EINVAL);

    /* Alone in its buffer: eof without spans. */
    pair_restart(&p);
    size_t r1 = 10 + RLY_REC_OVERHEAD;
    memcpy(work, wire, len);
    assert_int_equal(open_all(&p.rec, work, r1, plain, NULL), 10);
    n = 9;
    assert_int_equal(rly_rec_open(&p.rec, work + r1, len - r1, spans, 4, &n, &eof),
                     (int)(len - r1));
    assert_int_equal(eof, 1);
    assert_int_equal(n, 0);
    pair_close(&p);
}

static void test_tls_record_open_key_update_refused(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    ssl_write_all(p.c.ssl, (const uint8_t *)"before", 6);
    size_t r1 = take(&p.c, wire, sizeof(wire));
    assert_int_equal(SSL_key_update(p.c.ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
    ssl_write_all(p.c.ssl, (const uint8_t *)"after", 5);
    size_t len = r1 + take(&p.c, wire + r1, sizeof(wire) - r1);
    assert_true(len > r1 + 5 + 2 * RLY_REC_OVERHEAD); /* the KeyUpdate, then "after" */

    memcpy(work, wire, len);
    open_fails(&p.rec, work, len, -ENOTSUP);
    /* What came before it opens; the KeyUpdate record itself is the one refused. */
    pair_restart(&p);
    memcpy(work, wire, len);
    assert_int_equal(open_all(&p.rec, work, r1, plain, NULL), 6);
    assert_memory_equal(plain, "before", 6);
    open_fails(&p.rec, work + r1, len - r1, -ENOTSUP);
    pair_close(&p);
}

/* Inner plaintexts BoringSSL does not send but a TLS 1.3 peer may (padding, empty records)
 * or must not (other alerts, types), sealed with the agent's key at the right sequence. */
static void test_tls_record_open_inner_plaintexts(void **state)
{
    static const struct {
        const char *inner;
        size_t len;
        int want;
    } fatal[] = {
        {"\0\0\0\0", 4, -EPROTO},              /* all padding: no content type */
        {"\x02\x28\x15", 3, -EPROTO},          /* fatal handshake_failure alert */
        {"\x01\x5a\x15", 3, -EPROTO},          /* user_canceled */
        {"\x01\x00\x00\x15", 4, -EPROTO},      /* close_notify, three bytes long */
        {"\x01\x15", 2, -EPROTO},              /* alert of one byte */
        {"x\x18", 2, -EPROTO},                 /* heartbeat (24) */
        {"\x01\x14", 2, -EPROTO},              /* change_cipher_spec inside */
        {"\x18\0\0\0\x16", 5, -ENOTSUP},       /* a handshake message (KeyUpdate header) */
    };
    struct pair p;
    uint8_t inner[512];
    (void)state;

    pair_open(&p);
    uint64_t seq = SSL_get_write_sequence(p.c.ssl); /* the agent's next record */
    size_t len = 0;

    /* Padded application data: BoringSSL as the server reads it too. */
    memcpy(inner, "padded\x17", 7);
    memset(inner + 7, 0, 300);
    size_t r = craft(&p.rx, seq, 0x17, inner, 307, wire);
    assert_int_equal(BIO_write(p.s.in, wire, (int)r), (int)r);
    assert_int_equal(SSL_read(p.s.ssl, plain, sizeof(plain)), 6);
    assert_memory_equal(plain, "padded", 6);
    len += r;
    /* An empty application data record adds no span. */
    len += craft(&p.rx, seq + 1, 0x17, (const uint8_t *)"\x17", 1, wire + len);
    /* Content ending in zeros, then padding. */
    len += craft(&p.rx, seq + 2, 0x17, (const uint8_t *)"z\0\0\x17\0\0", 6, wire + len);
    /* A padded close_notify, at level fatal: the level is not looked at. */
    len += craft(&p.rx, seq + 3, 0x17, (const uint8_t *)"\x02\x00\x15\0\0\0\0", 7,
                 wire + len);

    struct rly_rec_span spans[8];
    unsigned n;
    int eof;
    assert_int_equal(rly_rec_open(&p.rec, wire, len, spans, 8, &n, &eof), (int)len);
    assert_int_equal(eof, 1);
    assert_int_equal(n, 2);
    assert_int_equal(spans[0].len, 6);
    assert_memory_equal(wire + spans[0].off, "padded", 6);
    assert_int_equal(spans[1].len, 3);
    assert_memory_equal(wire + spans[1].off, "z\0\0", 3);

    for (size_t i = 0; i < sizeof(fatal) / sizeof(fatal[0]); i++) {
        pair_restart(&p);
        /* A good record first: the bad one is refused after it. */
        len = craft(&p.rx, seq, 0x17, (const uint8_t *)"ok\x17", 3, wire);
        assert_int_equal(open_all(&p.rec, wire, len, plain, NULL), 2);
        len = craft(&p.rx, seq + 1, 0x17, (const uint8_t *)fatal[i].inner, fatal[i].len, wire);
        open_fails(&p.rec, wire, len, fatal[i].want);
    }
    pair_close(&p);
}

/* A parser's input ending right before an unmapped page. */
static void test_tls_record_open_ends_at_guard_page(void **state)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t map = 8 * (size_t)page;
    struct rly_rec_span spans[4];
    unsigned n;
    int eof;
    struct pair p;
    (void)state;

    uint8_t *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + map - (size_t)page, (size_t)page, PROT_NONE), 0);
    uint8_t *edge = m + map - (size_t)page;

    pair_open(&p);
    fill(data, 5000, 9);
    ssl_write_all(p.c.ssl, data, 5000);
    size_t len = take(&p.c, wire, sizeof(wire));
    for (size_t part = 0; part < RLY_REC_HEADER; part++) {
        memcpy(edge - part, wire, part);
        assert_int_equal(rly_rec_need(edge - part, part), 0);
        assert_int_equal(rly_rec_open(&p.rec, edge - part, part, spans, 4, &n, &eof), 0);
    }
    memcpy(edge - (len - 1), wire, len - 1);
    assert_int_equal(rly_rec_open(&p.rec, edge - (len - 1), len - 1, spans, 4, &n, &eof), 0);
    memcpy(edge - len, wire, len);
    assert_int_equal(rly_rec_open(&p.rec, edge - len, len, spans, 4, &n, &eof), (int)len);
    assert_int_equal(n, 1);
    assert_memory_equal(edge - len + spans[0].off, data, 5000);
    pair_close(&p);
    munmap(m, map);
}

/* ---- Sealing what goes to the agent ---- */

static void test_tls_record_seal_reaches_client(void **state)
{
    static const size_t sizes[] = {1, 7812, 16384, 0, 3, 16000};
    size_t total = 0, len = 0;
    struct pair p;
    (void)state;

    pair_open(&p);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(data + total, sizes[i], 300 + (uint32_t)i);
        memcpy(work, data + total, sizes[i]);
        int rc = rly_rec_seal(&p.rec, wire + len, work, sizes[i]);
        assert_int_equal(rc, sizes[i] + RLY_REC_OVERHEAD);
        assert_memory_equal(wire + len, "\x17\x03\x03", 3);
        assert_int_equal(wire[len + 3] << 8 | wire[len + 4], sizes[i] + 1 + RLY_REC_TAG);
        assert_memory_equal(work, data + total, sizes[i]); /* in is not written */
        total += sizes[i];
        len += (size_t)rc;
    }
    assert_int_equal(BIO_write(p.c.in, wire, (int)len), (int)len);
    ssl_read_exact(p.c.ssl, plain, total);
    assert_memory_equal(plain, data, total);
    assert_int_equal(SSL_read(p.c.ssl, plain, 1), -1);
    assert_int_equal(SSL_get_error(p.c.ssl, -1), SSL_ERROR_WANT_READ);
    pair_close(&p);
}

static void test_tls_record_seal_in_place_matches_out_of_place(void **state)
{
    struct rly_rec twin;
    struct pair p;
    (void)state;

    pair_open(&p);
    assert_int_equal(rly_rec_init(&twin, &p.tx, NULL), 0);
    for (uint32_t i = 0; i < 3; i++) {
        size_t n = i == 0 ? 7812 : i == 1 ? 16384 : 1;
        fill(data, n, 400 + i);
        memset(wire, 0x5a, n + RLY_REC_OVERHEAD + 1);
        int rc = rly_rec_seal(&p.rec, wire, data, n);
        assert_int_equal(rc, n + RLY_REC_OVERHEAD);
        assert_int_equal(wire[n + RLY_REC_OVERHEAD], 0x5a); /* nothing written past it */

        memset(work, 0xa5, n + RLY_REC_OVERHEAD + 1);
        memcpy(work + RLY_REC_HEADER, data, n);
        assert_int_equal(rly_rec_seal(&twin, work, work + RLY_REC_HEADER, n), rc);
        assert_memory_equal(work, wire, (size_t)rc);
        assert_int_equal(work[n + RLY_REC_OVERHEAD], 0xa5);

        assert_int_equal(BIO_write(p.c.in, work, rc), rc);
        memset(plain, 0, n);
        ssl_read_exact(p.c.ssl, plain, n);
        assert_memory_equal(plain, data, n);
    }
    rly_rec_free(&twin);
    pair_close(&p);
}

static void test_tls_record_seal_refuses_oversized(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    memset(wire, 0x33, 64);
    assert_int_equal(rly_rec_seal(&p.rec, wire, data, 16385), -EMSGSIZE);
    assert_int_equal(wire[0], 0x33); /* nothing written */
    /* The sequence number did not move: the next record still reaches the client. */
    int rc = rly_rec_seal(&p.rec, wire, (const uint8_t *)"fine", 4);
    assert_int_equal(rc, 4 + RLY_REC_OVERHEAD);
    assert_int_equal(BIO_write(p.c.in, wire, rc), rc);
    assert_int_equal(SSL_read(p.c.ssl, plain, sizeof(plain)), 4);
    assert_memory_equal(plain, "fine", 4);
    pair_close(&p);
}

static void test_tls_record_seal_close_notify_ends_client_read(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    int r1 = rly_rec_seal(&p.rec, wire, (const uint8_t *)"bye", 3);
    assert_int_equal(r1, 3 + RLY_REC_OVERHEAD);
    int r2 = rly_rec_seal_close_notify(&p.rec, wire + r1);
    assert_int_equal(r2, 2 + RLY_REC_OVERHEAD);
    assert_memory_equal(wire + r1, "\x17\x03\x03\x00\x13", 5);
    assert_int_equal(BIO_write(p.c.in, wire, r1 + r2), r1 + r2);
    assert_int_equal(SSL_read(p.c.ssl, plain, sizeof(plain)), 3);
    assert_memory_equal(plain, "bye", 3);
    int rc = SSL_read(p.c.ssl, plain, sizeof(plain));
    assert_int_equal(rc, 0);
    assert_int_equal(SSL_get_error(p.c.ssl, rc), SSL_ERROR_ZERO_RETURN);
    /* Nothing may follow it. */
    assert_int_equal(rly_rec_seal(&p.rec, wire, (const uint8_t *)"x", 1), -EINVAL);
    assert_int_equal(rly_rec_seal_close_notify(&p.rec, wire), -EINVAL);
    pair_close(&p);
}

/* Records through SSL before the hand-off (pair_open), then through our layer in both
 * directions, interleaved: each side's sequence continues where SSL left it. */
static void test_tls_record_sequence_continues_from_ssl(void **state)
{
    struct pair p;
    (void)state;

    pair_open(&p);
    assert_int_equal(test_tls_material_seq(&p.rx), 3);
    assert_int_equal(test_tls_material_seq(&p.tx), 2);
    assert_int_equal(p.rec.rx.seq, 3);
    assert_int_equal(p.rec.tx.seq, 2);
    for (uint32_t i = 0; i < 5; i++) {
        size_t n = 100 + 3000 * i;
        fill(data, n, 500 + i);
        ssl_write_all(p.c.ssl, data, n);
        size_t len = take(&p.c, wire, sizeof(wire));
        assert_int_equal(open_all(&p.rec, wire, len, plain, NULL), n);
        assert_memory_equal(plain, data, n);

        fill(data, n + 1, 600 + i);
        int rc = rly_rec_seal(&p.rec, wire, data, n + 1);
        assert_int_equal(rc, n + 1 + RLY_REC_OVERHEAD);
        assert_int_equal(BIO_write(p.c.in, wire, rc), rc);
        ssl_read_exact(p.c.ssl, plain, n + 1);
        assert_memory_equal(plain, data, n + 1);
    }
    /* The client's own counters agree with ours. */
    assert_int_equal(SSL_get_write_sequence(p.c.ssl), 3 + 5);
    assert_int_equal(SSL_get_read_sequence(p.c.ssl), 2 + 5);
    assert_int_equal(p.rec.rx.seq, 3 + 5);
    assert_int_equal(p.rec.tx.seq, 2 + 5);
    pair_close(&p);
}

/* ---- Set-up and teardown ---- */

static void test_tls_record_init_refuses_bad_material(void **state)
{
    static const struct rly_rec zero;
    struct rly_ktls_material m;
    struct rly_rec r;
    struct pair p;
    unsigned n;
    int eof;
    (void)state;

    /* Neither direction: everything is refused, nothing to free. */
    memset(&r, 0xff, sizeof(r));
    assert_int_equal(rly_rec_init(&r, NULL, NULL), 0);
    assert_int_equal(rly_rec_open(&r, wire, 0, NULL, 0, &n, &eof), -EINVAL);
    assert_int_equal(rly_rec_seal(&r, wire, data, 1), -EINVAL);
    assert_int_equal(rly_rec_seal_close_notify(&r, wire), -EINVAL);
    rly_rec_free(&r);

    pair_open(&p);
    /* One direction only. */
    assert_int_equal(rly_rec_init(&r, NULL, &p.rx), 0);
    assert_int_equal(rly_rec_seal(&r, wire, data, 1), -EINVAL);
    rly_rec_free(&r);

    m = p.tx;
    m.crypto.info.version = TLS_1_2_VERSION;
    assert_int_equal(rly_rec_init(&r, &p.tx, &m), -EINVAL);
    assert_memory_equal(&r, &zero, sizeof(r));
    m = p.tx;
    m.crypto.info.cipher_type = 99;
    assert_int_equal(rly_rec_init(&r, &m, &p.rx), -EOPNOTSUPP);
    assert_memory_equal(&r, &zero, sizeof(r));
    m = p.tx;
    m.len = sizeof(m.crypto.aes_gcm_256) + 1; /* no member is that long */
    assert_int_equal(rly_rec_init(&r, &m, NULL), -EINVAL);
    m.len = 0;
    assert_int_equal(rly_rec_init(&r, &m, NULL), -EINVAL);
    rly_ktls_material_wipe(&m);
    pair_close(&p);
}

static void test_tls_record_free_wipes_keys(void **state)
{
    static const struct rly_rec zero;
    struct rly_rec r;
    struct pair p;
    uint8_t iv[12];
    const EVP_AEAD *aead;
    const uint8_t *key;
    size_t key_len;
    (void)state;

    pair_open(&p);
    assert_int_equal(rly_rec_init(&r, &p.tx, &p.rx), 0);
    test_tls_material_parts(&p.tx, &aead, &key, &key_len, iv);
    assert_memory_equal(r.tx.iv, iv, 12);
    rly_rec_free(&r);
    assert_memory_equal(&r, &zero, sizeof(r));
    rly_rec_free(&r); /* twice is fine */
    memset(&r, 0, sizeof(r));
    rly_rec_free(&r); /* so is a zeroed struct */
    assert_memory_equal(&r, &zero, sizeof(r));
    pair_close(&p);
}

/* ---- Other ciphers ---- */

/* The BoringSSL-pair tests again in a child process whose BoringSSL believes the CPU has no
 * AES-NI: there it negotiates TLS_CHACHA20_POLY1305_SHA256 (pair_open checks it). */
static void test_tls_record_boringssl_pair_chacha20_poly1305(void **state)
{
    char out_path[256], line[512];
    pid_t pid;
    int status;
    (void)state;

    snprintf(out_path, sizeof(out_path), "%s/chacha.log", fx.certs.dir);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    char *argv[] = {"test_tls_record", NULL};
    assert_int_equal(setenv(ENV_CHACHA, "1", 1), 0);
    assert_int_equal(setenv("OPENSSL_ia32cap", IA32CAP_NO_AESNI, 1), 0);
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    unsetenv(ENV_CHACHA);
    unsetenv("OPENSSL_ia32cap");
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        /* Its output, marked so that a summary counter does not count its lines. */
        FILE *f = fopen(out_path, "r");
        while (f && fgets(line, sizeof(line), f))
            print_message("  chacha20 child| %s", line);
        if (f)
            fclose(f);
        fail_msg("ChaCha20-Poly1305 run failed (status 0x%x)", status);
    }
}

/* Bytes from a socket, opened with our record layer as they come. */
static size_t peer_open_stream(struct rly_rec *r, int fd, uint8_t *out, size_t want)
{
    static uint8_t buf[65536];
    size_t have = 0, got = 0;

    while (got < want) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        ssize_t n = read(fd, buf + have, sizeof(buf) - have);
        assert_true(n > 0);
        have += (size_t)n;
        struct rly_rec_span spans[MAX_SPANS];
        unsigned n_spans;
        int eof;
        int rc = rly_rec_open(r, buf, have, spans, MAX_SPANS, &n_spans, &eof);
        assert_true(rc >= 0);
        assert_int_equal(eof, 0);
        for (unsigned i = 0; i < n_spans; i++) {
            assert_true(got + spans[i].len <= want);
            memcpy(out + got, buf + spans[i].off, spans[i].len);
            got += spans[i].len;
        }
        memmove(buf, buf + rc, have - (size_t)rc);
        have -= (size_t)rc;
    }
    assert_int_equal(have, 0);
    return got;
}

static void read_exact_fd(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        assert_int_equal(poll(&pfd, 1, 5000), 1);
        ssize_t n = read(fd, buf + got, len - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
}

static void write_all_fd(int fd, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        assert_true(n > 0);
        buf += n;
        len -= (size_t)n;
    }
}

/* OpenSSL's s_client as the agent, with the cipher suite it is told to use: what it reads on
 * stdin it sends, what it receives it prints on stdout. The relay side is BoringSSL until the
 * handshake is done, then our record layer on the same socket. */
static void openssl_peer(const char *suite, uint16_t want_id)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    struct rly_ktls_material tx, rx;
    struct rly_rec rec;
    struct test_tls_end s;
    char connect_to[64];
    int in[2], out[2], l, fd, status;
    pid_t pid;

    l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%u", ntohs(a.sin_port));

    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {"openssl", "s_client", "-connect", connect_to, "-tls1_3", "-ciphersuites",
                    (char *)suite, "-quiet", "-nocommands", NULL};
    assert_int_equal(posix_spawnp(&pid, "openssl", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);

    struct pollfd pfd = {.fd = l, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    close(l);

    /* Handshake one record at a time, so that nothing after the client's Finished reaches
     * BoringSSL: from there on, every byte on the socket is ours. */
    test_tls_end_init(&s, fx.server, 1);
    static uint8_t hs[65536];
    size_t have = 0;
    while (SSL_do_handshake(s.ssl) != 1) {
        assert_int_equal(SSL_get_error(s.ssl, -1), SSL_ERROR_WANT_READ);
        size_t n = take(&s, hs, sizeof(hs));
        write_all_fd(fd, hs, n);
        for (;;) {
            if (have >= 5 && have >= 5 + ((size_t)hs[3] << 8 | hs[4]))
                break;
            read_exact_fd(fd, hs + have, 1);
            have++;
        }
        size_t one = 5 + ((size_t)hs[3] << 8 | hs[4]);
        assert_int_equal(BIO_write(s.in, hs, (int)one), (int)one);
        memmove(hs, hs + one, have - one);
        have -= one;
    }
    assert_int_equal(have, 0);
    size_t n = take(&s, hs, sizeof(hs));
    write_all_fd(fd, hs, n);
    assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(s.ssl)), want_id);
    assert_int_equal(rly_ktls_derive(s.ssl, 1, &tx, &rx), 0);
    assert_int_equal(rly_rec_init(&rec, &tx, &rx), 0);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);

    /* Agent -> relay: 40,000 printable bytes in however many records s_client makes. */
    for (size_t i = 0; i < 40000; i++)
        data[i] = (uint8_t)('a' + (i * 7 + i / 26) % 26);
    write_all_fd(in[1], data, 40000);
    assert_int_equal(peer_open_stream(&rec, fd, plain, 40000), 40000);
    assert_memory_equal(plain, data, 40000);

    /* Relay -> agent: out of place and in place. */
    size_t total = 0;
    static const size_t sizes[] = {1, 7812, 16384, 500};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(data + total, sizes[i], 700 + (uint32_t)i);
        int rc;
        if (i % 2 == 0) {
            rc = rly_rec_seal(&rec, wire, data + total, sizes[i]);
        } else {
            memcpy(wire + RLY_REC_HEADER, data + total, sizes[i]);
            rc = rly_rec_seal(&rec, wire, wire + RLY_REC_HEADER, sizes[i]);
        }
        assert_int_equal(rc, sizes[i] + RLY_REC_OVERHEAD);
        write_all_fd(fd, wire, (size_t)rc);
        total += sizes[i];
    }
    read_exact_fd(out[0], plain, total);
    assert_memory_equal(plain, data, total);

    /* close_notify: s_client stops. */
    int rc = rly_rec_seal_close_notify(&rec, wire);
    assert_int_equal(rc, 2 + RLY_REC_OVERHEAD);
    write_all_fd(fd, wire, (size_t)rc);
    pfd = (struct pollfd){.fd = out[0], .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 5000), 1);
    assert_int_equal(read(out[0], plain, 1), 0); /* stdout closed: it exited */
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));

    rly_rec_free(&rec);
    SSL_free(s.ssl);
    close(in[1]);
    close(out[0]);
    close(fd);
}

static void test_tls_record_openssl_peer_aes_128_gcm(void **state)
{
    (void)state;
    openssl_peer("TLS_AES_128_GCM_SHA256", 0x1301);
}

static void test_tls_record_openssl_peer_aes_256_gcm(void **state)
{
    (void)state;
    openssl_peer("TLS_AES_256_GCM_SHA384", 0x1302);
}

static void test_tls_record_openssl_peer_chacha20_poly1305(void **state)
{
    (void)state;
    openssl_peer("TLS_CHACHA20_POLY1305_SHA256", 0x1303);
}

int main(void)
{
    const struct CMUnitTest pair_tests[] = {
        cmocka_unit_test(test_tls_record_open_sizes_reproduce_writes),
        cmocka_unit_test(test_tls_record_open_many_records_one_buffer),
        cmocka_unit_test(test_tls_record_open_partial_record_waits),
        cmocka_unit_test(test_tls_record_open_stops_at_max_spans),
        cmocka_unit_test(test_tls_record_need_checks_header),
        cmocka_unit_test(test_tls_record_open_tampered_record_fails),
        cmocka_unit_test(test_tls_record_open_replayed_or_skipped_record_fails),
        cmocka_unit_test(test_tls_record_open_bad_lengths),
        cmocka_unit_test(test_tls_record_open_close_notify_sets_eof),
        cmocka_unit_test(test_tls_record_open_key_update_refused),
        cmocka_unit_test(test_tls_record_open_inner_plaintexts),
        cmocka_unit_test(test_tls_record_open_ends_at_guard_page),
        cmocka_unit_test(test_tls_record_seal_reaches_client),
        cmocka_unit_test(test_tls_record_seal_in_place_matches_out_of_place),
        cmocka_unit_test(test_tls_record_seal_refuses_oversized),
        cmocka_unit_test(test_tls_record_seal_close_notify_ends_client_read),
        cmocka_unit_test(test_tls_record_sequence_continues_from_ssl),
        cmocka_unit_test(test_tls_record_init_refuses_bad_material),
        cmocka_unit_test(test_tls_record_free_wipes_keys),
    };
    const struct CMUnitTest cipher_tests[] = {
        cmocka_unit_test(test_tls_record_boringssl_pair_chacha20_poly1305),
        cmocka_unit_test(test_tls_record_openssl_peer_aes_128_gcm),
        cmocka_unit_test(test_tls_record_openssl_peer_aes_256_gcm),
        cmocka_unit_test(test_tls_record_openssl_peer_chacha20_poly1305),
    };
    int failed = cmocka_run_group_tests_name("tls_record", pair_tests, setup, teardown);
    if (getenv(ENV_CHACHA))
        return failed;
    return failed + cmocka_run_group_tests_name("tls_record_ciphers", cipher_tests, setup,
                                                teardown);
}
