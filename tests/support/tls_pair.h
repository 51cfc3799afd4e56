/* A BoringSSL TLS 1.3 client and server over memory BIOs, for the tests that need to see
 * every raw record (tests/relay/test_ktls.c, tests/relay/test_tls_record.c). Failures are
 * cmocka assertions. */
#ifndef TEST_TLS_PAIR_H
#define TEST_TLS_PAIR_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/aead.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>

#include "relay/ktls.h"

/* One TLS endpoint over memory BIOs: the test carries the ciphertext, so it sees every raw
 * record. in and out are owned by ssl. */
struct test_tls_end {
    SSL *ssl;
    BIO *in;  /* ciphertext the test feeds to ssl */
    BIO *out; /* ciphertext ssl wrote */
};

/* Throw-away certificates for IP:127.0.0.1 (test_certs_make) in a fresh test_tmpdir. */
struct test_tls_certs {
    char dir[128];
    char cert[256], key[256], ca[256]; /* dir/server.pem, dir/server.key, dir/ca.pem */
};

/* Fills c; returns 0, or -1 if the directory or the certificates could not be made. Remove
 * c->dir with test_rmtree. */
int test_tls_certs_make(struct test_tls_certs *c);

/* Makes e a server (is_server) or a client expecting host 127.0.0.1 on ctx, not yet
 * handshaken; free e->ssl with SSL_free. */
void test_tls_end_init(struct test_tls_end *e, SSL_CTX *ctx, int is_server);

/* Moves every byte buffered in from to to. */
void test_tls_move_all(BIO *from, BIO *to);

/* A full TLS 1.3 handshake between a client c on cctx (expecting host 127.0.0.1) and a server
 * s on sctx; free each end's ssl with SSL_free when done. */
void test_tls_pair_handshake(struct test_tls_end *c, struct test_tls_end *s, SSL_CTX *cctx,
                             SSL_CTX *sctx);

/* Big-endian 64-bit number at b. */
uint64_t test_be64(const uint8_t b[8]);

/* The AEAD, key and 12-byte static IV (salt || iv) in kTLS material m, read independently of
 * the code under test. */
void test_tls_material_parts(const struct rly_ktls_material *m, const EVP_AEAD **aead,
                             const uint8_t **key, size_t *key_len, uint8_t iv12[12]);

/* The first record sequence number in m. */
uint64_t test_tls_material_seq(const struct rly_ktls_material *m);

#endif
