/* Tests of relay/ktls.c: derived kTLS material checked against real TLS 1.3 records. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/tls.h"
#include "relay/ktls.h"
#include "tests/support/support.h"
#include "tests/support/tls_pair.h"

#define REC_HDR 5
#define CT_APPLICATION_DATA 23

struct fixture {
    struct test_tls_certs certs;
    SSL_CTX *server;         /* cr_tls_server_ctx: no tickets, keylog installed */
    SSL_CTX *server_tickets; /* the same but issuing session tickets */
    SSL_CTX *client;         /* cr_tls_client_ctx, keylog installed */
    SSL_CTX *client_plain;   /* no keylog: nothing to derive from */
};

static struct fixture fx;

struct pair {
    struct test_tls_end c, s;
};

static int setup(void **state)
{
    char err[256];
    (void)state;
    memset(&fx, 0, sizeof(fx));
    if (test_tls_certs_make(&fx.certs) < 0)
        return -1;
    fx.server = cr_tls_server_ctx(fx.certs.cert, fx.certs.key, err, sizeof(err));
    fx.server_tickets = cr_tls_server_ctx(fx.certs.cert, fx.certs.key, err, sizeof(err));
    fx.client = cr_tls_client_ctx(fx.certs.ca, err, sizeof(err));
    fx.client_plain = cr_tls_client_ctx(fx.certs.ca, err, sizeof(err));
    if (!fx.server || !fx.server_tickets || !fx.client || !fx.client_plain)
        return -1;
    SSL_CTX_clear_options(fx.server_tickets, SSL_OP_NO_TICKET);
    if (rly_ktls_keylog_install(fx.server) < 0 || rly_ktls_keylog_install(fx.server_tickets) < 0 ||
        rly_ktls_keylog_install(fx.client) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    SSL_CTX_free(fx.server);
    SSL_CTX_free(fx.server_tickets);
    SSL_CTX_free(fx.client);
    SSL_CTX_free(fx.client_plain);
    test_rmtree(fx.certs.dir);
    return 0;
}

/* A full TLS 1.3 handshake between a client on cctx and a server on sctx. */
static void pair_open(struct pair *p, SSL_CTX *cctx, SSL_CTX *sctx)
{
    test_tls_pair_handshake(&p->c, &p->s, cctx, sctx);
}

static void pair_close(struct pair *p)
{
    SSL_free(p->c.ssl);
    SSL_free(p->s.ssl);
}

/* Everything ssl wrote since the last call; asserts it is exactly one record. */
static size_t take_record(struct test_tls_end *e, uint8_t *buf, size_t cap)
{
    int n = BIO_read(e->out, buf, (int)cap);
    assert_true(n > REC_HDR);
    assert_int_equal(BIO_ctrl_pending(e->out), 0);
    assert_int_equal(buf[0], CT_APPLICATION_DATA);       /* TLS 1.3 outer type */
    assert_int_equal((size_t)(buf[3] << 8 | buf[4]), (size_t)n - REC_HDR);
    return (size_t)n;
}

/* Opens one raw TLS 1.3 record the way the kernel would with material m, as the nth record
 * after the point m was derived at: nonce = iv12 XOR big-endian (rec_seq + nth) in the last 8
 * bytes, AAD = the record header. Returns the plaintext length and its inner content type, or
 * -1 if the AEAD refused the record. */
static int open_record(const struct rly_ktls_material *m, uint64_t nth, const uint8_t *rec,
                       size_t rec_len, uint8_t *pt, size_t cap, uint8_t *inner_type)
{
    const EVP_AEAD *aead = NULL;
    const uint8_t *key = NULL;
    size_t key_len = 0, out_len;
    uint8_t nonce[12];
    uint64_t seq = 0;
    EVP_AEAD_CTX ctx;

    assert_int_equal(m->crypto.info.version, TLS_1_3_VERSION);
    test_tls_material_parts(m, &aead, &key, &key_len, nonce);
    seq = test_tls_material_seq(m) + nth;
    for (int i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
    assert_int_equal(EVP_AEAD_CTX_init(&ctx, aead, key, key_len, EVP_AEAD_DEFAULT_TAG_LENGTH,
                                       NULL),
                     1);
    int ok = EVP_AEAD_CTX_open(&ctx, pt, &out_len, cap, nonce, sizeof(nonce), rec + REC_HDR,
                               rec_len - REC_HDR, rec, REC_HDR);
    EVP_AEAD_CTX_cleanup(&ctx);
    ERR_clear_error();
    if (ok != 1)
        return -1;
    /* TLSInnerPlaintext: content || type || zero padding. */
    while (out_len > 0 && pt[out_len - 1] == 0)
        out_len--;
    assert_true(out_len > 0);
    *inner_type = pt[out_len - 1];
    return (int)out_len - 1;
}

/* Opens rec with m (as record nth since m) and checks it carries exactly want as
 * application data. */
static void assert_opens(const struct rly_ktls_material *m, uint64_t nth, const uint8_t *rec,
                         size_t rec_len, const char *want)
{
    uint8_t pt[16384 + 256], type = 0;
    int n = open_record(m, nth, rec, rec_len, pt, sizeof(pt), &type);
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(pt, want, strlen(want));
    assert_int_equal(type, CT_APPLICATION_DATA);
}

static void assert_empty(const struct rly_ktls_material *m)
{
    static const struct rly_ktls_material zero;
    assert_memory_equal(m, &zero, sizeof(zero));
}

/* Feeds a raw record to e and checks BoringSSL reads want from it too. */
static void deliver(struct test_tls_end *e, const uint8_t *rec, size_t rec_len, const char *want)
{
    char buf[256];
    assert_int_equal(BIO_write(e->in, rec, (int)rec_len), (int)rec_len);
    int n = SSL_read(e->ssl, buf, sizeof(buf));
    assert_int_equal(n, (int)strlen(want));
    assert_memory_equal(buf, want, strlen(want));
}

static void write_one(SSL *ssl, const char *msg)
{
    assert_int_equal(SSL_write(ssl, msg, (int)strlen(msg)), (int)strlen(msg));
}

static void test_ktls_client_record_opens_with_server_rx(void **state)
{
    struct pair p;
    struct rly_ktls_material s_tx, s_rx, c_tx, c_rx;
    uint8_t rec[512];
    const char *msg = "camera frame 0001";
    (void)state;

    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &s_tx, &s_rx), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &c_tx, &c_rx), 0);
    assert_int_equal(s_rx.crypto.info.cipher_type, TLS_CIPHER_AES_GCM_128);
    assert_int_equal(s_rx.len, sizeof(struct tls12_crypto_info_aes_gcm_128));

    write_one(p.c.ssl, msg);
    size_t n = take_record(&p.c, rec, sizeof(rec));
    assert_opens(&s_rx, 0, rec, n, msg);
    assert_opens(&c_tx, 0, rec, n, msg);
    /* A wrong sequence number must not open it: the nonce really carries rec_seq. */
    uint8_t pt[512], type;
    assert_int_equal(open_record(&s_rx, 1, rec, n, pt, sizeof(pt), &type), -1);
    deliver(&p.s, rec, n, msg);

    rly_ktls_material_wipe(&s_tx);
    rly_ktls_material_wipe(&s_rx);
    rly_ktls_material_wipe(&c_tx);
    rly_ktls_material_wipe(&c_rx);
    assert_empty(&s_rx);
    pair_close(&p);
}

static void test_ktls_server_record_opens_with_server_tx(void **state)
{
    struct pair p;
    struct rly_ktls_material s_tx, s_rx, c_tx, c_rx;
    uint8_t rec[512];
    const char *msg = "RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n";
    (void)state;

    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &s_tx, &s_rx), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &c_tx, &c_rx), 0);

    write_one(p.s.ssl, msg);
    size_t n = take_record(&p.s, rec, sizeof(rec));
    assert_opens(&s_tx, 0, rec, n, msg);
    assert_opens(&c_rx, 0, rec, n, msg);
    /* The other direction's key must not open it. */
    uint8_t pt[512], type;
    assert_int_equal(open_record(&s_rx, 0, rec, n, pt, sizeof(pt), &type), -1);
    deliver(&p.c, rec, n, msg);

    rly_ktls_material_wipe(&s_tx);
    rly_ktls_material_wipe(&s_rx);
    rly_ktls_material_wipe(&c_tx);
    rly_ktls_material_wipe(&c_rx);
    pair_close(&p);
}

static void test_ktls_client_tx_equals_server_rx(void **state)
{
    struct pair p;
    struct rly_ktls_material s_tx, s_rx, c_tx, c_rx;
    (void)state;

    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &s_tx, &s_rx), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &c_tx, &c_rx), 0);
    assert_int_equal(c_tx.len, s_rx.len);
    assert_memory_equal(&c_tx, &s_rx, sizeof(c_tx));
    assert_memory_equal(&s_tx, &c_rx, sizeof(s_tx));
    assert_int_equal(s_tx.crypto.info.version, TLS_1_3_VERSION);
    /* The two directions have different keys and ivs. */
    assert_memory_not_equal(s_tx.crypto.aes_gcm_128.key, s_rx.crypto.aes_gcm_128.key, 16);
    assert_memory_not_equal(s_tx.crypto.aes_gcm_128.iv, s_rx.crypto.aes_gcm_128.iv, 8);

    rly_ktls_material_wipe(&s_tx);
    rly_ktls_material_wipe(&s_rx);
    rly_ktls_material_wipe(&c_tx);
    rly_ktls_material_wipe(&c_rx);
    pair_close(&p);
}

static void test_ktls_sequence_numbers_advance(void **state)
{
    struct pair p;
    struct rly_ktls_material s_tx0, s_rx0, s_tx, s_rx, c_tx0, c_rx0, c_tx, c_rx;
    uint8_t rec[512];
    char buf[64];
    (void)state;

    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive_keep(p.s.ssl, 1, &s_tx0, &s_rx0), 0);
    assert_int_equal(rly_ktls_derive_keep(p.c.ssl, 0, &c_tx0, &c_rx0), 0);
    assert_int_equal(test_be64(s_rx0.crypto.aes_gcm_128.rec_seq), 0);
    assert_int_equal(test_be64(c_tx0.crypto.aes_gcm_128.rec_seq), 0);

    /* Two records client -> server, read by the server. */
    write_one(p.c.ssl, "first");
    write_one(p.c.ssl, "second");
    test_tls_move_all(p.c.out, p.s.in);
    assert_int_equal(SSL_read(p.s.ssl, buf, sizeof(buf)), 5);
    assert_int_equal(SSL_read(p.s.ssl, buf, sizeof(buf)), 6);

    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &s_tx, &s_rx), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &c_tx, &c_rx), 0);
    assert_int_equal(test_be64(s_rx.crypto.aes_gcm_128.rec_seq),
                     test_be64(s_rx0.crypto.aes_gcm_128.rec_seq) + 2);
    assert_int_equal(test_be64(c_tx.crypto.aes_gcm_128.rec_seq),
                     test_be64(c_tx0.crypto.aes_gcm_128.rec_seq) + 2);
    /* Nothing went the other way. */
    assert_memory_equal(&s_tx, &s_tx0, sizeof(s_tx));
    assert_memory_equal(&c_rx, &c_rx0, sizeof(c_rx));
    /* Same key and iv, only the sequence moved. */
    assert_memory_equal(s_rx.crypto.aes_gcm_128.key, s_rx0.crypto.aes_gcm_128.key, 16);

    /* The third record opens at the new rec_seq, and as record 2 of the first material. */
    write_one(p.c.ssl, "third");
    size_t n = take_record(&p.c, rec, sizeof(rec));
    assert_opens(&s_rx, 0, rec, n, "third");
    assert_opens(&s_rx0, 2, rec, n, "third");

    rly_ktls_material_wipe(&s_tx0);
    rly_ktls_material_wipe(&s_rx0);
    rly_ktls_material_wipe(&c_tx0);
    rly_ktls_material_wipe(&c_rx0);
    rly_ktls_material_wipe(&s_tx);
    rly_ktls_material_wipe(&s_rx);
    rly_ktls_material_wipe(&c_tx);
    rly_ktls_material_wipe(&c_rx);
    pair_close(&p);
}

static void test_ktls_secrets_gone_after_derive(void **state)
{
    struct pair p;
    struct rly_ktls_material tx, rx;
    (void)state;

    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 1);
    assert_int_equal(rly_ktls_secrets_held(p.c.ssl), 1);

    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), 0);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 0);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), -ENOKEY);
    assert_empty(&tx);
    assert_empty(&rx);
    assert_int_equal(rly_ktls_derive_keep(p.s.ssl, 1, &tx, &rx), -ENOKEY);

    /* A connection staying in userspace drops its secrets explicitly. */
    rly_ktls_forget(p.c.ssl);
    assert_int_equal(rly_ktls_secrets_held(p.c.ssl), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &tx, &rx), -ENOKEY);
    rly_ktls_forget(p.c.ssl); /* idempotent */

    /* The session itself still works in userspace. */
    uint8_t rec[256];
    write_one(p.c.ssl, "still here");
    size_t n = take_record(&p.c, rec, sizeof(rec));
    deliver(&p.s, rec, n, "still here");
    pair_close(&p);
}

/* Secrets never consumed are wiped and freed by SSL_free (LeakSanitizer checks the free). */
static void test_ktls_secrets_freed_with_ssl(void **state)
{
    struct pair p;
    (void)state;
    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 1);
    pair_close(&p);
}

static void test_ktls_busy_while_ciphertext_unread(void **state)
{
    struct pair p;
    struct rly_ktls_material tx, rx;
    char buf[64];
    (void)state;

    pair_open(&p, fx.client, fx.server);
    write_one(p.c.ssl, "in flight");
    test_tls_move_all(p.c.out, p.s.in); /* in the server's read BIO, not yet read */
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), -EBUSY);
    assert_empty(&tx);
    assert_empty(&rx);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 1);

    assert_int_equal(SSL_read(p.s.ssl, buf, sizeof(buf)), 9);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), 0);
    assert_int_equal(test_be64(rx.crypto.aes_gcm_128.rec_seq), 1);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    pair_close(&p);
}

static void test_ktls_busy_while_plaintext_buffered(void **state)
{
    struct pair p;
    struct rly_ktls_material tx, rx;
    char buf[64];
    (void)state;

    pair_open(&p, fx.client, fx.server);
    write_one(p.c.ssl, "0123456789abcdefghij");
    test_tls_move_all(p.c.out, p.s.in);
    assert_int_equal(SSL_read(p.s.ssl, buf, 5), 5);
    assert_true(SSL_pending(p.s.ssl) > 0);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), -EBUSY);

    assert_int_equal(SSL_read(p.s.ssl, buf, sizeof(buf)), 15);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), 0);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    pair_close(&p);
}

/* A ticket-issuing server queues its NewSessionTicket flight and seals it with its first
 * write: deriving before that would give the kernel a sequence number one behind. */
static void test_ktls_busy_until_tickets_flushed(void **state)
{
    struct pair p;
    struct rly_ktls_material tx, rx, c_tx, c_rx;
    uint8_t raw[4096];
    char buf[64];
    (void)state;

    pair_open(&p, fx.client, fx.server_tickets);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), -EBUSY);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 1);

    write_one(p.s.ssl, "hello"); /* tickets record, then this one */
    assert_int_equal(SSL_get_write_sequence(p.s.ssl), 2);
    test_tls_move_all(p.s.out, p.c.in);
    assert_int_equal(SSL_read(p.c.ssl, buf, sizeof(buf)), 5);

    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &c_tx, &c_rx), 0);
    assert_int_equal(test_be64(tx.crypto.aes_gcm_128.rec_seq), 2);
    assert_memory_equal(&tx, &c_rx, sizeof(tx));
    write_one(p.s.ssl, "after tickets");
    size_t n = take_record(&p.s, raw, sizeof(raw));
    assert_opens(&tx, 0, raw, n, "after tickets");

    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    rly_ktls_material_wipe(&c_tx);
    rly_ktls_material_wipe(&c_rx);
    pair_close(&p);
}

/* Stands for an SSLKEYLOGFILE debugging hook. */
static void debug_keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    (void)line;
}

static void test_ktls_refuses_misuse(void **state)
{
    struct pair p;
    struct test_tls_end half;
    struct rly_ktls_material tx, rx;
    (void)state;

    /* Handshake not finished. */
    test_tls_end_init(&half, fx.client, 0);
    assert_int_equal(SSL_do_handshake(half.ssl), -1);
    assert_int_equal(rly_ktls_derive(half.ssl, 0, &tx, &rx), -EINVAL);
    SSL_free(half.ssl);

    /* Wrong role: refused, secrets kept. */
    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 0, &tx, &rx), -EINVAL);
    assert_int_equal(rly_ktls_secrets_held(p.s.ssl), 1);
    assert_int_equal(rly_ktls_derive(NULL, 0, &tx, &rx), -EINVAL);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, NULL, &rx), -EINVAL);
    pair_close(&p);

    /* A context without the keylog callback has nothing to derive from. */
    pair_open(&p, fx.client_plain, fx.server);
    assert_int_equal(rly_ktls_secrets_held(p.c.ssl), 0);
    assert_int_equal(rly_ktls_derive(p.c.ssl, 0, &tx, &rx), -ENOKEY);
    pair_close(&p);

    /* Installing twice is fine; replacing someone else's keylog callback is not. */
    assert_int_equal(rly_ktls_keylog_install(fx.server), 0);
    SSL_CTX *other = SSL_CTX_new(TLS_method());
    SSL_CTX_set_keylog_callback(other, debug_keylog);
    assert_int_equal(rly_ktls_keylog_install(other), -EEXIST);
    SSL_CTX_set_keylog_callback(other, NULL);
    SSL_CTX_free(other);

    /* Malformed material never reaches the socket. */
    memset(&tx, 0, sizeof(tx));
    assert_int_equal(rly_ktls_enable(-1, &tx, NULL), -EINVAL);
    assert_int_equal(rly_ktls_enable(-1, NULL, NULL), -EINVAL);
    tx.crypto.info.version = TLS_1_3_VERSION;
    tx.crypto.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    tx.len = sizeof(tx.crypto.aes_gcm_256);
    assert_int_equal(rly_ktls_enable(-1, &tx, NULL), -EINVAL);
}

/* An established TCP connection on 127.0.0.1: fds[0] the client end, fds[1] the server end. */
static void tcp_pair(int fds[2])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fds[0] >= 0);
    assert_int_equal(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
    fds[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fds[1] >= 0);
    close(l);
}

static void test_ktls_available_agrees_with_kernel(void **state)
{
    int fds[2], raw;
    struct pair p;
    struct rly_ktls_material tx, rx;
    char c = 0;
    (void)state;

    /* Ask the kernel directly, independently of the module's cached probe. */
    tcp_pair(fds);
    raw = setsockopt(fds[0], SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 ? 0 : errno;
    close(fds[0]);
    close(fds[1]);

    assert_int_equal(rly_ktls_available(), raw == 0);
    assert_int_equal(rly_ktls_available(), raw == 0); /* cached, same answer */
    if (raw == 0) {
        assert_null(rly_ktls_unavailable_reason());
        return;
    }
    const char *why = rly_ktls_unavailable_reason();
    assert_non_null(why);
    assert_true(strlen(why) > 10);
    print_message("kTLS unavailable: %s\n", why);

    /* enable reports the kernel's refusal as -errno and leaves the socket plain TCP, so the
     * caller carries on in userspace TLS over it. */
    pair_open(&p, fx.client, fx.server);
    assert_int_equal(rly_ktls_derive(p.s.ssl, 1, &tx, &rx), 0);
    tcp_pair(fds);
    assert_int_equal(rly_ktls_enable(fds[1], &tx, &rx), -raw);
    if (raw == ENOENT || raw == ENOPROTOOPT)
        assert_true(rly_ktls_enable(fds[1], &tx, NULL) == -raw);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(c, 'x');
    close(fds[0]);
    close(fds[1]);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    pair_close(&p);
}

static void set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK), 0);
}

/* SSL_read on a non-blocking socket, waiting up to 5 s for the bytes. */
static int ssl_read_wait(SSL *ssl, int fd, char *buf, int cap)
{
    for (int i = 0; i < 500; i++) {
        int n = SSL_read(ssl, buf, cap);
        if (n > 0 || SSL_get_error(ssl, n) != SSL_ERROR_WANT_READ)
            return n;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        poll(&pfd, 1, 10);
    }
    return -1;
}

/* The hand-off on a real TCP connection: BoringSSL handshake over the socket, derive, enable,
 * then the kernel's records must interoperate with BoringSSL on the other end. */
static void test_ktls_kernel_offload_round_trip(void **state)
{
    int fds[2], done_c = 0, done_s = 0, rc;
    struct rly_ktls_material tx, rx;
    char buf[64];
    (void)state;

    tcp_pair(fds);
    set_nonblock(fds[0], 1);
    set_nonblock(fds[1], 1);
    SSL *c = SSL_new(fx.client), *s = SSL_new(fx.server);
    assert_true(c && s);
    assert_int_equal(SSL_set_fd(c, fds[0]), 1);
    assert_int_equal(SSL_set_fd(s, fds[1]), 1);
    assert_int_equal(cr_tls_expect_host(c, "127.0.0.1:0"), 0);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    for (int i = 0; i < 500 && !(done_c && done_s); i++) {
        if (!done_c)
            done_c = SSL_do_handshake(c) == 1;
        if (!done_s)
            done_s = SSL_do_handshake(s) == 1;
        if (!(done_c && done_s))
            poll(NULL, 0, 5);
    }
    assert_true(done_c && done_s);

    assert_int_equal(rly_ktls_derive(s, 1, &tx, &rx), 0);
    rc = rly_ktls_enable(fds[1], &tx, &rx);
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);

    if (rc == -ENOENT || rc == -ENOPROTOOPT) {
        assert_int_equal(rly_ktls_available(), 0);
        /* Fallback: the same connection carries on in userspace TLS. */
        write_one(s, "userspace after refusal");
        assert_int_equal(ssl_read_wait(c, fds[0], buf, sizeof(buf)), 23);
        assert_memory_equal(buf, "userspace after refusal", 23);
        SSL_free(c);
        SSL_free(s);
        close(fds[0]);
        close(fds[1]);
        print_message("kTLS not in this kernel: enable path skipped (%s)\n",
                      rc == -ENOENT ? "ENOENT" : "ENOPROTOOPT");
        skip();
    }
    assert_int_equal(rc, 0);
    assert_int_equal(rly_ktls_available(), 1);

    /* Kernel seals, BoringSSL opens. */
    set_nonblock(fds[1], 0);
    assert_int_equal(write(fds[1], "sealed by the kernel", 20), 20);
    assert_int_equal(ssl_read_wait(c, fds[0], buf, sizeof(buf)), 20);
    assert_memory_equal(buf, "sealed by the kernel", 20);
    /* BoringSSL seals, the kernel opens. */
    write_one(c, "opened by the kernel");
    size_t got = 0;
    while (got < 20) {
        ssize_t n = read(fds[1], buf + got, sizeof(buf) - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    assert_memory_equal(buf, "opened by the kernel", 20);
    SSL_free(c);
    SSL_free(s);
    close(fds[0]);
    close(fds[1]);
}

/* ---- Another implementation as the peer: OpenSSL's s_client picks the cipher suite. ---- */

/* Bytes from a socket, handed out one whole TLS record at a time. */
struct stream {
    int fd;
    size_t len;
    uint8_t buf[65536];
};

/* Waits (5 s) until st->buf starts with a whole record; returns its length, 0 on EOF/timeout. */
static size_t stream_record(struct stream *st)
{
    for (;;) {
        if (st->len >= REC_HDR) {
            size_t rec = REC_HDR + ((size_t)st->buf[3] << 8 | st->buf[4]);
            if (st->len >= rec)
                return rec;
        }
        struct pollfd pfd = {.fd = st->fd, .events = POLLIN};
        if (poll(&pfd, 1, 5000) != 1)
            return 0;
        ssize_t n = read(st->fd, st->buf + st->len, sizeof(st->buf) - st->len);
        if (n <= 0)
            return 0;
        st->len += (size_t)n;
    }
}

static void stream_consume(struct stream *st, size_t n)
{
    memmove(st->buf, st->buf + n, st->len - n);
    st->len -= n;
}

static void flush_to_fd(struct test_tls_end *e, int fd)
{
    uint8_t buf[16384];
    int n;
    while ((n = BIO_read(e->out, buf, sizeof(buf))) > 0)
        assert_int_equal(write(fd, buf, (size_t)n), n);
}

static void openssl_peer(const char *suite, uint16_t want_id, uint16_t want_kernel)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    struct rly_ktls_material tx, rx;
    struct test_tls_end s;
    static struct stream st;
    char connect_to[64], buf[64];
    int in[2], l;
    pid_t pid;
    const char *hello = "hello from openssl\n";

    l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%u", ntohs(a.sin_port));

    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    char *argv[] = {"openssl", "s_client", "-connect", connect_to, "-tls1_3", "-ciphersuites",
                    (char *)suite, "-quiet", "-nocommands", NULL};
    assert_int_equal(posix_spawnp(&pid, "openssl", &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);

    struct pollfd pfd = {.fd = l, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    memset(&st, 0, sizeof(st));
    st.fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(st.fd >= 0);
    close(l);

    /* Handshake, one record at a time, so that nothing after the client's Finished reaches
     * BoringSSL: what follows stays "in the socket", as for a real hand-off. */
    test_tls_end_init(&s, fx.server, 1);
    while (SSL_do_handshake(s.ssl) != 1) {
        assert_int_equal(SSL_get_error(s.ssl, -1), SSL_ERROR_WANT_READ);
        flush_to_fd(&s, st.fd);
        size_t n = stream_record(&st);
        assert_true(n > 0);
        assert_int_equal(BIO_write(s.in, st.buf, (int)n), (int)n);
        stream_consume(&st, n);
    }
    flush_to_fd(&s, st.fd);
    assert_int_equal(SSL_CIPHER_get_protocol_id(SSL_get_current_cipher(s.ssl)), want_id);

    assert_int_equal(rly_ktls_derive(s.ssl, 1, &tx, &rx), 0);
    assert_int_equal(tx.crypto.info.cipher_type, want_kernel);
    assert_int_equal(rx.crypto.info.cipher_type, want_kernel);

    /* Client -> server: OpenSSL sealed it, our rx material opens it. */
    assert_int_equal(write(in[1], hello, strlen(hello)), (ssize_t)strlen(hello));
    size_t n = stream_record(&st);
    assert_true(n > 0);
    assert_opens(&rx, 0, st.buf, n, hello);
    deliver(&s, st.buf, n, hello);
    stream_consume(&st, n);

    /* Server -> client: BoringSSL sealed it, our tx material opens it. */
    write_one(s.ssl, "pong");
    n = (size_t)BIO_read(s.out, buf, sizeof(buf));
    assert_opens(&tx, 0, (uint8_t *)buf, n, "pong");

    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    SSL_free(s.ssl);
    close(in[1]);
    close(st.fd);
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
}

static void test_ktls_openssl_peer_aes_128_gcm(void **state)
{
    (void)state;
    openssl_peer("TLS_AES_128_GCM_SHA256", 0x1301, TLS_CIPHER_AES_GCM_128);
}

static void test_ktls_openssl_peer_aes_256_gcm(void **state)
{
    (void)state;
    openssl_peer("TLS_AES_256_GCM_SHA384", 0x1302, TLS_CIPHER_AES_GCM_256);
}

static void test_ktls_openssl_peer_chacha20_poly1305(void **state)
{
    (void)state;
    openssl_peer("TLS_CHACHA20_POLY1305_SHA256", 0x1303, TLS_CIPHER_CHACHA20_POLY1305);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ktls_client_record_opens_with_server_rx),
        cmocka_unit_test(test_ktls_server_record_opens_with_server_tx),
        cmocka_unit_test(test_ktls_client_tx_equals_server_rx),
        cmocka_unit_test(test_ktls_sequence_numbers_advance),
        cmocka_unit_test(test_ktls_secrets_gone_after_derive),
        cmocka_unit_test(test_ktls_secrets_freed_with_ssl),
        cmocka_unit_test(test_ktls_busy_while_ciphertext_unread),
        cmocka_unit_test(test_ktls_busy_while_plaintext_buffered),
        cmocka_unit_test(test_ktls_busy_until_tickets_flushed),
        cmocka_unit_test(test_ktls_refuses_misuse),
        cmocka_unit_test(test_ktls_available_agrees_with_kernel),
        cmocka_unit_test(test_ktls_kernel_offload_round_trip),
        cmocka_unit_test(test_ktls_openssl_peer_aes_128_gcm),
        cmocka_unit_test(test_ktls_openssl_peer_aes_256_gcm),
        cmocka_unit_test(test_ktls_openssl_peer_chacha20_poly1305),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
