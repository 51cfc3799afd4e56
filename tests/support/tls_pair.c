/* A BoringSSL TLS 1.3 client/server pair over memory BIOs; see tls_pair.h. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/tls.h"
#include "tests/support/support.h"
#include "tests/support/tls_pair.h"

int test_tls_certs_make(struct test_tls_certs *c)
{
    if (test_tmpdir(c->dir, sizeof(c->dir)) < 0 || test_certs_make(c->dir, "IP:127.0.0.1") < 0)
        return -1;
    snprintf(c->cert, sizeof(c->cert), "%s/server.pem", c->dir);
    snprintf(c->key, sizeof(c->key), "%s/server.key", c->dir);
    snprintf(c->ca, sizeof(c->ca), "%s/ca.pem", c->dir);
    return 0;
}

void test_tls_end_init(struct test_tls_end *e, SSL_CTX *ctx, int is_server)
{
    e->ssl = SSL_new(ctx);
    assert_non_null(e->ssl);
    e->in = BIO_new(BIO_s_mem());
    e->out = BIO_new(BIO_s_mem());
    assert_true(e->in && e->out);
    SSL_set_bio(e->ssl, e->in, e->out);
    if (is_server) {
        SSL_set_accept_state(e->ssl);
    } else {
        assert_int_equal(cr_tls_expect_host(e->ssl, "127.0.0.1:0"), 0);
        SSL_set_connect_state(e->ssl);
    }
}

void test_tls_move_all(BIO *from, BIO *to)
{
    uint8_t buf[16384];
    int n;
    while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(to, buf, n), n);
}

void test_tls_pair_handshake(struct test_tls_end *c, struct test_tls_end *s, SSL_CTX *cctx,
                             SSL_CTX *sctx)
{
    int rc_c = 0, rc_s = 0;
    test_tls_end_init(c, cctx, 0);
    test_tls_end_init(s, sctx, 1);
    for (int round = 0; round < 16 && (rc_c != 1 || rc_s != 1); round++) {
        if (rc_c != 1)
            rc_c = SSL_do_handshake(c->ssl);
        test_tls_move_all(c->out, s->in);
        if (rc_s != 1)
            rc_s = SSL_do_handshake(s->ssl);
        test_tls_move_all(s->out, c->in);
    }
    assert_int_equal(rc_c, 1);
    assert_int_equal(rc_s, 1);
    assert_int_equal(SSL_version(s->ssl), TLS1_3_VERSION);
}

uint64_t test_be64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

void test_tls_material_parts(const struct rly_ktls_material *m, const EVP_AEAD **aead,
                             const uint8_t **key, size_t *key_len, uint8_t iv12[12])
{
    switch (m->crypto.info.cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        *aead = EVP_aead_aes_128_gcm();
        *key = m->crypto.aes_gcm_128.key;
        *key_len = sizeof(m->crypto.aes_gcm_128.key);
        memcpy(iv12, m->crypto.aes_gcm_128.salt, 4);
        memcpy(iv12 + 4, m->crypto.aes_gcm_128.iv, 8);
        break;
    case TLS_CIPHER_AES_GCM_256:
        *aead = EVP_aead_aes_256_gcm();
        *key = m->crypto.aes_gcm_256.key;
        *key_len = sizeof(m->crypto.aes_gcm_256.key);
        memcpy(iv12, m->crypto.aes_gcm_256.salt, 4);
        memcpy(iv12 + 4, m->crypto.aes_gcm_256.iv, 8);
        break;
    case TLS_CIPHER_CHACHA20_POLY1305:
        *aead = EVP_aead_chacha20_poly1305();
        *key = m->crypto.chacha20_poly1305.key;
        *key_len = sizeof(m->crypto.chacha20_poly1305.key);
        memcpy(iv12, m->crypto.chacha20_poly1305.iv, 12);
        break;
    default:
        fail_msg("unexpected cipher type %u", m->crypto.info.cipher_type);
    }
}

uint64_t test_tls_material_seq(const struct rly_ktls_material *m)
{
    switch (m->crypto.info.cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        return test_be64(m->crypto.aes_gcm_128.rec_seq);
    case TLS_CIPHER_AES_GCM_256:
        return test_be64(m->crypto.aes_gcm_256.rec_seq);
    case TLS_CIPHER_CHACHA20_POLY1305:
        return test_be64(m->crypto.chacha20_poly1305.rec_seq);
    }
    fail_msg("unexpected cipher type %u", m->crypto.info.cipher_type);
    return 0;
}
