/* Tests common/auth.c (verifiers, proofs, TLS binding, tickets) and cr_auth_start_check. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/tls.h"
#include "common/util.h"
#include "tests/support/support.h"

#define ITER CR_AUTH_ITERATIONS_MIN /* fast; the count itself is covered separately */

static const struct cr_auth_secret camera = {"OAK-1234-5678", "admin", "s3cret pass"};

/* A complete, valid exchange: verifier on the server, transcript both sides agree on. */
struct exchange {
    uint8_t salt[CR_AUTH_SALT_LEN];
    uint8_t stored[CR_AUTH_KEY_LEN];
    uint8_t cnonce[CR_AUTH_NONCE_LEN];
    uint8_t snonce[CR_AUTH_NONCE_LEN];
    struct cr_auth_transcript t;
};

static void exchange_init(struct exchange *x, const struct cr_auth_secret *secret)
{
    memset(x, 0, sizeof(*x));
    assert_int_equal(cr_auth_make_verifier(secret, ITER, x->salt, x->stored), 0);
    for (int i = 0; i < CR_AUTH_NONCE_LEN; i++) {
        x->cnonce[i] = (uint8_t)(i + 1);
        x->snonce[i] = (uint8_t)(0xa0 + i);
    }
    x->t.identity = "SN-0001";
    x->t.client_nonce = x->cnonce;
    x->t.client_nonce_len = sizeof(x->cnonce);
    x->t.server_nonce = x->snonce;
    x->t.server_nonce_len = sizeof(x->snonce);
    x->t.salt = x->salt;
    x->t.iterations = ITER;
    for (int i = 0; i < CR_AUTH_BINDING_LEN; i++)
        x->t.binding[i] = (uint8_t)(0x55 ^ i);
}

/* The proof a client holding secret makes for transcript t (deriving with t's salt/iterations). */
static void proof_for(const struct cr_auth_secret *secret, const struct cr_auth_transcript *t,
                      uint8_t proof[CR_AUTH_KEY_LEN])
{
    uint8_t ck[CR_AUTH_KEY_LEN];
    assert_int_equal(cr_auth_client_key(secret, t->salt, t->iterations, ck), 0);
    cr_auth_client_proof(ck, t, proof);
}

/* ---- Proofs ---- */

static void test_auth_right_secret_verifies(void **state)
{
    (void)state;
    struct exchange x;
    uint8_t proof[CR_AUTH_KEY_LEN];
    exchange_init(&x, &camera);
    proof_for(&camera, &x.t, proof);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)), 1);

    /* A relay account secret (no OAK, no user) works the same way. */
    const struct cr_auth_secret relay = {NULL, NULL, "relay password"};
    exchange_init(&x, &relay);
    proof_for(&relay, &x.t, proof);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)), 1);
}

static void test_auth_wrong_secret_part_fails(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        struct cr_auth_secret s;
    } wrong[] = {
        {"wrong OAK", {"OAK-1234-5679", "admin", "s3cret pass"}},
        {"no OAK", {NULL, "admin", "s3cret pass"}},
        {"wrong user", {"OAK-1234-5678", "Admin", "s3cret pass"}},
        {"no user", {"OAK-1234-5678", NULL, "s3cret pass"}},
        {"wrong password", {"OAK-1234-5678", "admin", "s3cret pas"}},
        {"password with trailing newline", {"OAK-1234-5678", "admin", "s3cret pass\n"}},
        {"empty password", {"OAK-1234-5678", "admin", ""}},
    };
    struct exchange x;
    uint8_t proof[CR_AUTH_KEY_LEN];
    exchange_init(&x, &camera);
    for (size_t i = 0; i < CR_ARRAY_SIZE(wrong); i++) {
        proof_for(&wrong[i].s, &x.t, proof);
        if (cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)) != 0)
            fail_msg("%s verified", wrong[i].what);
    }
}

/* The server checks the proof against its own view of the transcript; any difference fails. */
static void test_auth_transcript_mismatch_fails(void **state)
{
    (void)state;
    struct exchange x;
    uint8_t proof[CR_AUTH_KEY_LEN];
    uint8_t other_salt[CR_AUTH_SALT_LEN];
    uint8_t nonce_plus[CR_AUTH_NONCE_LEN + 1];
    exchange_init(&x, &camera);
    proof_for(&camera, &x.t, proof);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)), 1);

    struct cr_auth_transcript t;

    t = x.t; /* wrong identity */
    t.identity = "SN-0002";
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);
    t.identity = "SN-000";
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* different client nonce: one bit, and one byte shorter */
    uint8_t cn[CR_AUTH_NONCE_LEN];
    memcpy(cn, x.cnonce, sizeof(cn));
    cn[CR_AUTH_NONCE_LEN - 1] ^= 1;
    t.client_nonce = cn;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);
    t.client_nonce = x.cnonce;
    t.client_nonce_len--;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* different server nonce */
    uint8_t sn[CR_AUTH_NONCE_LEN];
    memcpy(sn, x.snonce, sizeof(sn));
    sn[0] ^= 0x80;
    t.server_nonce = sn;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* client and server nonce swapped */
    t.client_nonce = x.snonce;
    t.server_nonce = x.cnonce;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* the replay: same proof, another TLS session's binding */
    t.binding[CR_AUTH_BINDING_LEN - 1] ^= 1;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);
    memset(t.binding, 0, sizeof(t.binding));
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* different salt in the transcript */
    memcpy(other_salt, x.salt, sizeof(other_salt));
    other_salt[3] ^= 4;
    t.salt = other_salt;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    t = x.t; /* different iterations in the transcript */
    t.iterations = ITER + 1;
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);

    /* Field boundaries are length-prefixed: bytes moved from the identity into the client
     * nonce give a different transcript. */
    t = x.t;
    t.identity = "SN-000";
    nonce_plus[0] = '1';
    memcpy(nonce_plus + 1, x.cnonce, sizeof(x.cnonce));
    t.client_nonce = nonce_plus;
    t.client_nonce_len = sizeof(nonce_plus);
    assert_int_equal(cr_auth_verify(x.stored, &t, proof, sizeof(proof)), 0);
}

/* The client derives its key from the salt/iterations the server sent: a client that uses
 * another salt or count (while the transcript matches) cannot produce a valid proof. */
static void test_auth_wrong_salt_or_iterations_fails(void **state)
{
    (void)state;
    struct exchange x;
    uint8_t ck[CR_AUTH_KEY_LEN], proof[CR_AUTH_KEY_LEN], salt2[CR_AUTH_SALT_LEN];
    exchange_init(&x, &camera);

    memcpy(salt2, x.salt, sizeof(salt2));
    salt2[0] ^= 1;
    assert_int_equal(cr_auth_client_key(&camera, salt2, ITER, ck), 0);
    cr_auth_client_proof(ck, &x.t, proof);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)), 0);

    assert_int_equal(cr_auth_client_key(&camera, x.salt, ITER + 1, ck), 0);
    cr_auth_client_proof(ck, &x.t, proof);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, sizeof(proof)), 0);

    /* Both verifiers of one secret (two registrations) differ: fresh random salt each time. */
    uint8_t salt_a[CR_AUTH_SALT_LEN], salt_b[CR_AUTH_SALT_LEN];
    uint8_t sk_a[CR_AUTH_KEY_LEN], sk_b[CR_AUTH_KEY_LEN];
    assert_int_equal(cr_auth_make_verifier(&camera, ITER, salt_a, sk_a), 0);
    assert_int_equal(cr_auth_make_verifier(&camera, ITER, salt_b, sk_b), 0);
    assert_memory_not_equal(salt_a, salt_b, sizeof(salt_a));
    assert_memory_not_equal(sk_a, sk_b, sizeof(sk_a));
}

static void test_auth_proof_length_and_bits(void **state)
{
    (void)state;
    struct exchange x;
    uint8_t proof[CR_AUTH_KEY_LEN + 1];
    exchange_init(&x, &camera);
    proof_for(&camera, &x.t, proof);
    proof[CR_AUTH_KEY_LEN] = 0;
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, CR_AUTH_KEY_LEN), 1);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, CR_AUTH_KEY_LEN - 1), 0);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, CR_AUTH_KEY_LEN + 1), 0);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, proof, 0), 0);
    assert_int_equal(cr_auth_verify(x.stored, &x.t, NULL, 0), 0);
    for (int bit = 0; bit < CR_AUTH_KEY_LEN * 8; bit++) {
        proof[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (cr_auth_verify(x.stored, &x.t, proof, CR_AUTH_KEY_LEN) != 0)
            fail_msg("proof with bit %d flipped verified", bit);
        proof[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    uint8_t zero[CR_AUTH_KEY_LEN] = {0};
    assert_int_equal(cr_auth_verify(x.stored, &x.t, zero, sizeof(zero)), 0);
    /* The stored key itself is not a proof (a server-side leak must not let one log in). */
    assert_int_equal(cr_auth_verify(x.stored, &x.t, x.stored, sizeof(x.stored)), 0);
}

/* ---- Keys ---- */

static void test_auth_secret_parts_separated(void **state)
{
    (void)state;
    static const struct {
        struct cr_auth_secret a, b;
    } pairs[] = {
        {{"ab", "c", "p"}, {"a", "bc", "p"}},
        {{"a", "bc", "p"}, {"a", "b", "cp"}},
        {{"", "ab", "p"}, {"ab", "", "p"}},
        {{"x", "", "yz"}, {"x", "y", "z"}},
        {{NULL, "u", "p"}, {"u", NULL, "p"}},
    };
    uint8_t salt[CR_AUTH_SALT_LEN] = {1, 2, 3};
    for (size_t i = 0; i < CR_ARRAY_SIZE(pairs); i++) {
        uint8_t ka[CR_AUTH_KEY_LEN], kb[CR_AUTH_KEY_LEN];
        assert_int_equal(cr_auth_client_key(&pairs[i].a, salt, ITER, ka), 0);
        assert_int_equal(cr_auth_client_key(&pairs[i].b, salt, ITER, kb), 0);
        if (memcmp(ka, kb, sizeof(ka)) == 0)
            fail_msg("pair %zu: (%s,%s,%s) and (%s,%s,%s) give the same key", i,
                     pairs[i].a.oak, pairs[i].a.user, pairs[i].a.password, pairs[i].b.oak,
                     pairs[i].b.user, pairs[i].b.password);
    }
}

static void test_auth_client_key_deterministic(void **state)
{
    (void)state;
    uint8_t salt[CR_AUTH_SALT_LEN] = {9, 8, 7};
    uint8_t k1[CR_AUTH_KEY_LEN], k2[CR_AUTH_KEY_LEN], sk[CR_AUTH_KEY_LEN];
    assert_int_equal(cr_auth_client_key(&camera, salt, ITER, k1), 0);
    assert_int_equal(cr_auth_client_key(&camera, salt, ITER, k2), 0);
    assert_memory_equal(k1, k2, sizeof(k1));
    cr_auth_stored_key(k1, sk);
    assert_memory_not_equal(k1, sk, sizeof(k1));
}

static void test_auth_iterations_out_of_range(void **state)
{
    (void)state;
    static const uint32_t bad[] = {0, 1, CR_AUTH_ITERATIONS_MIN - 1, CR_AUTH_ITERATIONS_MAX + 1,
                                   UINT32_MAX};
    uint8_t salt[CR_AUTH_SALT_LEN] = {0}, key[CR_AUTH_KEY_LEN];
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        assert_int_equal(cr_auth_client_key(&camera, salt, bad[i], key), -EINVAL);
        assert_int_equal(cr_auth_make_verifier(&camera, bad[i], salt, key), -EINVAL);
    }
    assert_int_equal(cr_auth_client_key(&camera, salt, CR_AUTH_ITERATIONS_MIN, key), 0);
    assert_int_equal(cr_auth_client_key(&camera, salt, CR_AUTH_ITERATIONS_MAX, key), 0);
}

static void test_auth_bad_secret_rejected(void **state)
{
    (void)state;
    uint8_t salt[CR_AUTH_SALT_LEN] = {0}, key[CR_AUTH_KEY_LEN];
    const struct cr_auth_secret no_password = {"oak", "user", NULL};
    assert_int_equal(cr_auth_client_key(NULL, salt, ITER, key), -EINVAL);
    assert_int_equal(cr_auth_client_key(&no_password, salt, ITER, key), -EINVAL);
    assert_int_equal(cr_auth_make_verifier(&no_password, ITER, salt, key), -EINVAL);

    /* Each part may be up to 1024 bytes; longer is refused rather than truncated. */
    char *long_part = malloc(1026);
    assert_non_null(long_part);
    memset(long_part, 'x', 1025);
    long_part[1025] = '\0';
    const struct cr_auth_secret too_long = {NULL, NULL, long_part};
    assert_int_equal(cr_auth_client_key(&too_long, salt, ITER, key), -EINVAL);
    const struct cr_auth_secret oak_too_long = {long_part, "u", "p"};
    assert_int_equal(cr_auth_client_key(&oak_too_long, salt, ITER, key), -EINVAL);
    long_part[1024] = '\0';
    const struct cr_auth_secret at_limit = {long_part, long_part, long_part};
    assert_int_equal(cr_auth_client_key(&at_limit, salt, ITER, key), 0);
    free(long_part);
}

static void test_auth_stored_key_never_client_key(void **state)
{
    (void)state;
    uint8_t salt[CR_AUTH_SALT_LEN], stored[CR_AUTH_KEY_LEN], ck[CR_AUTH_KEY_LEN],
        again[CR_AUTH_KEY_LEN];
    for (int i = 0; i < 8; i++) {
        char pw[16];
        snprintf(pw, sizeof(pw), "pw%d", i);
        const struct cr_auth_secret s = {"oak", "user", pw};
        assert_int_equal(cr_auth_make_verifier(&s, ITER, salt, stored), 0);
        assert_int_equal(cr_auth_client_key(&s, salt, ITER, ck), 0);
        assert_memory_not_equal(stored, ck, sizeof(ck));
        cr_auth_stored_key(ck, again); /* StoredKey = SHA-256(ClientKey) */
        assert_memory_equal(stored, again, sizeof(stored));
    }
}

/* ---- Tickets ---- */

static const uint8_t ticket_key[32] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe};
#define NOW 1764000000ull

static void test_auth_ticket_valid(void **state)
{
    (void)state;
    uint8_t t[CR_TICKET_LEN];
    cr_ticket_make(ticket_key, "SN-0001", "relay-1", NOW + 60, t);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW), 0);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW + 60), 0);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), 0), 0);
    /* Layout: 8-byte big-endian expiry, then the MAC. */
    uint64_t exp = 0;
    for (int i = 0; i < 8; i++)
        exp = exp << 8 | t[i];
    assert_true(exp == NOW + 60);
    /* Deterministic. */
    uint8_t t2[CR_TICKET_LEN];
    cr_ticket_make(ticket_key, "SN-0001", "relay-1", NOW + 60, t2);
    assert_memory_equal(t, t2, sizeof(t));
}

static void test_auth_ticket_expired(void **state)
{
    (void)state;
    uint8_t t[CR_TICKET_LEN];
    cr_ticket_make(ticket_key, "SN-0001", "relay-1", NOW, t);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW + 1),
                     -EKEYEXPIRED);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), UINT64_MAX),
                     -EKEYEXPIRED);
    /* Moving the expiry forward breaks the MAC: forgery beats expiry. */
    t[7]++;
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW + 1),
                     -EKEYREJECTED);
}

static void test_auth_ticket_rejected(void **state)
{
    (void)state;
    uint8_t t[CR_TICKET_LEN], other_key[32];
    cr_ticket_make(ticket_key, "SN-0001", "relay-1", NOW + 60, t);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0002", "relay-1", t, sizeof(t), NOW),
                     -EKEYREJECTED);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-000", "relay-1", t, sizeof(t), NOW),
                     -EKEYREJECTED);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-2", t, sizeof(t), NOW),
                     -EKEYREJECTED);
    assert_int_equal(cr_ticket_check(ticket_key, "", "", t, sizeof(t), NOW), -EKEYREJECTED);
    memcpy(other_key, ticket_key, sizeof(other_key));
    other_key[31] ^= 1;
    assert_int_equal(cr_ticket_check(other_key, "SN-0001", "relay-1", t, sizeof(t), NOW),
                     -EKEYREJECTED);
    /* Serial and relay are separated: ("SN-0001r", "elay-1") is another statement. */
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001r", "elay-1", t, sizeof(t), NOW),
                     -EKEYREJECTED);
    /* Every single bit flipped, expiry included. */
    for (int bit = 0; bit < CR_TICKET_LEN * 8; bit++) {
        t[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        int rc = cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW);
        if (rc != -EKEYREJECTED)
            fail_msg("bit %d flipped: %d", bit, rc);
        t[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, sizeof(t), NOW), 0);
}

static void test_auth_ticket_wrong_length(void **state)
{
    (void)state;
    uint8_t t[CR_TICKET_LEN + 1] = {0};
    cr_ticket_make(ticket_key, "SN-0001", "relay-1", NOW + 60, t);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, 0, NOW), -EINVAL);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, CR_TICKET_LEN - 1, NOW),
                     -EINVAL);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", t, CR_TICKET_LEN + 1, NOW),
                     -EINVAL);
    assert_int_equal(cr_ticket_check(ticket_key, "SN-0001", "relay-1", NULL, 0, NOW), -EINVAL);
}

/* ---- cr_auth_start_check ---- */

static int start_check(const char *identity, size_t nonce_len)
{
    static uint8_t nonce[CR_AUTH_NONCE_MAX + 8];
    Camrelay__AuthStart s = CAMRELAY__AUTH_START__INIT;
    s.identity = (char *)identity;
    s.client_nonce.data = nonce;
    s.client_nonce.len = nonce_len;
    return cr_auth_start_check(&s);
}

static void test_auth_start_check_identity(void **state)
{
    (void)state;
    char id[80];
    assert_int_equal(start_check("SN-0001", 32), 0);
    assert_int_equal(start_check("a", 32), 0);
    assert_int_equal(start_check("azAZ09._:-", 32), 0);
    memset(id, 'x', 63);
    id[63] = '\0';
    assert_int_equal(start_check(id, 32), 0);
    memset(id, 'x', 64);
    id[64] = '\0';
    assert_int_equal(start_check(id, 32), -EBADMSG);
    assert_int_equal(start_check("", 32), -EBADMSG);
    assert_int_equal(start_check(NULL, 32), -EBADMSG);
    static const char *const bad[] = {"SN 1", "SN/1", "SN\\1", "SN@1", "SN\n", "\tSN",
                                      "caf\xc3\xa9", "SN%00", "SN*", "../etc", "a,b", "SN'",
                                      "SN\"", "SN\x7f"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++)
        if (start_check(bad[i], 32) != -EBADMSG)
            fail_msg("identity \"%s\" accepted", bad[i]);
    /* Every byte outside the charset, alone. */
    for (int c = 1; c < 256; c++) {
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '-';
        char one[2] = {(char)c, 0};
        assert_int_equal(start_check(one, 32), ok ? 0 : -EBADMSG);
    }
    assert_int_equal(cr_auth_start_check(NULL), -EBADMSG);
}

static void test_auth_start_check_nonce_length(void **state)
{
    (void)state;
    assert_int_equal(start_check("SN", 0), -EBADMSG);
    assert_int_equal(start_check("SN", CR_AUTH_NONCE_MIN - 1), -EBADMSG);
    assert_int_equal(start_check("SN", CR_AUTH_NONCE_MIN), 0);
    assert_int_equal(start_check("SN", CR_AUTH_NONCE_LEN), 0);
    assert_int_equal(start_check("SN", CR_AUTH_NONCE_MAX), 0);
    assert_int_equal(start_check("SN", CR_AUTH_NONCE_MAX + 1), -EBADMSG);
}

/* ---- TLS session binding over real TLS (socketpair, two SSL objects) ---- */

struct tls_env {
    char dir[128];
    SSL_CTX *server;
    SSL_CTX *client;
};

static int tls_setup(void **state)
{
    static struct tls_env env;
    char err[256], cert[192], key[192], ca[192];
    memset(&env, 0, sizeof(env));
    *state = &env;
    if (test_tmpdir(env.dir, sizeof(env.dir)) < 0 || test_certs_make(env.dir, "IP:127.0.0.1") < 0)
        return 0; /* tests report the skip */
    snprintf(cert, sizeof(cert), "%s/server.pem", env.dir);
    snprintf(key, sizeof(key), "%s/server.key", env.dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", env.dir);
    env.server = cr_tls_server_ctx(cert, key, err, sizeof(err));
    if (!env.server)
        fprintf(stderr, "server ctx: %s\n", err);
    env.client = cr_tls_client_ctx(ca, err, sizeof(err));
    if (!env.client)
        fprintf(stderr, "client ctx: %s\n", err);
    return 0;
}

static int tls_teardown(void **state)
{
    struct tls_env *env = *state;
    SSL_CTX_free(env->server);
    SSL_CTX_free(env->client);
    if (env->dir[0])
        test_rmtree(env->dir);
    return 0;
}

static void tls_require(const struct tls_env *env)
{
    if (!env->server || !env->client) {
        print_message("skipped: could not make a test certificate with the openssl command "
                      "line (is openssl installed?)\n");
        skip();
    }
}

struct tls_pair {
    int fd[2];
    SSL *c, *s;
};

/* Handshakes a client and a server SSL over a non-blocking socketpair in one thread. */
static void tls_pair_open(const struct tls_env *env, struct tls_pair *p)
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fd), 0);
    p->c = SSL_new(env->client);
    p->s = SSL_new(env->server);
    assert_non_null(p->c);
    assert_non_null(p->s);
    assert_int_equal(cr_tls_expect_host(p->c, "127.0.0.1:7443"), 0);
    SSL_set_fd(p->c, p->fd[0]);
    SSL_set_fd(p->s, p->fd[1]);
    SSL_set_connect_state(p->c);
    SSL_set_accept_state(p->s);
    int c_done = 0, s_done = 0;
    for (int round = 0; round < 100 && !(c_done && s_done); round++) {
        if (!c_done) {
            int r = SSL_do_handshake(p->c);
            if (r == 1)
                c_done = 1;
            else if (SSL_get_error(p->c, r) != SSL_ERROR_WANT_READ)
                fail_msg("client handshake failed: %d", SSL_get_error(p->c, r));
        }
        if (!s_done) {
            int r = SSL_do_handshake(p->s);
            if (r == 1)
                s_done = 1;
            else if (SSL_get_error(p->s, r) != SSL_ERROR_WANT_READ)
                fail_msg("server handshake failed: %d", SSL_get_error(p->s, r));
        }
    }
    assert_true(c_done && s_done);
    assert_int_equal(SSL_get_verify_result(p->c), X509_V_OK);
    assert_int_equal(SSL_version(p->c), TLS1_3_VERSION);
}

static void tls_pair_close(struct tls_pair *p)
{
    SSL_free(p->c);
    SSL_free(p->s);
    close(p->fd[0]);
    close(p->fd[1]);
}

static void test_auth_tls_binding_same_on_both_ends(void **state)
{
    struct tls_env *env = *state;
    struct tls_pair a, b;
    uint8_t ca[CR_AUTH_BINDING_LEN], sa[CR_AUTH_BINDING_LEN];
    uint8_t cb[CR_AUTH_BINDING_LEN], sb[CR_AUTH_BINDING_LEN];
    static const uint8_t zero[CR_AUTH_BINDING_LEN];
    tls_require(env);

    tls_pair_open(env, &a);
    assert_int_equal(cr_auth_tls_binding(a.c, ca), 0);
    assert_int_equal(cr_auth_tls_binding(a.s, sa), 0);
    assert_memory_equal(ca, sa, sizeof(ca));
    assert_memory_not_equal(ca, zero, sizeof(ca));

    tls_pair_open(env, &b);
    assert_int_equal(cr_auth_tls_binding(b.c, cb), 0);
    assert_int_equal(cr_auth_tls_binding(b.s, sb), 0);
    assert_memory_equal(cb, sb, sizeof(cb));
    assert_memory_not_equal(ca, cb, sizeof(ca)); /* another connection, another value */

    /* Stable over the life of a connection. */
    uint8_t again[CR_AUTH_BINDING_LEN];
    assert_int_equal(cr_auth_tls_binding(a.c, again), 0);
    assert_memory_equal(again, ca, sizeof(ca));

    tls_pair_close(&a);
    tls_pair_close(&b);
}

/* A proof captured on connection A and replayed on connection B does not verify. */
static void test_auth_tls_replay_on_other_connection_fails(void **state)
{
    struct tls_env *env = *state;
    struct tls_pair a, b;
    struct exchange x;
    uint8_t proof[CR_AUTH_KEY_LEN];
    tls_require(env);

    exchange_init(&x, &camera);
    tls_pair_open(env, &a);
    tls_pair_open(env, &b);

    struct cr_auth_transcript client_a = x.t, server_a = x.t, server_b = x.t;
    assert_int_equal(cr_auth_tls_binding(a.c, client_a.binding), 0);
    assert_int_equal(cr_auth_tls_binding(a.s, server_a.binding), 0);
    assert_int_equal(cr_auth_tls_binding(b.s, server_b.binding), 0);
    proof_for(&camera, &client_a, proof);
    assert_int_equal(cr_auth_verify(x.stored, &server_a, proof, sizeof(proof)), 1);
    assert_int_equal(cr_auth_verify(x.stored, &server_b, proof, sizeof(proof)), 0);

    tls_pair_close(&a);
    tls_pair_close(&b);
}

static void test_auth_tls_binding_before_handshake(void **state)
{
    struct tls_env *env = *state;
    uint8_t out[CR_AUTH_BINDING_LEN];
    tls_require(env);
    SSL *ssl = SSL_new(env->client);
    assert_non_null(ssl);
    assert_int_equal(cr_auth_tls_binding(ssl, out), -EPROTO);
    SSL_free(ssl);
    ERR_clear_error();
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_right_secret_verifies),
        cmocka_unit_test(test_auth_wrong_secret_part_fails),
        cmocka_unit_test(test_auth_transcript_mismatch_fails),
        cmocka_unit_test(test_auth_wrong_salt_or_iterations_fails),
        cmocka_unit_test(test_auth_proof_length_and_bits),
        cmocka_unit_test(test_auth_secret_parts_separated),
        cmocka_unit_test(test_auth_client_key_deterministic),
        cmocka_unit_test(test_auth_iterations_out_of_range),
        cmocka_unit_test(test_auth_bad_secret_rejected),
        cmocka_unit_test(test_auth_stored_key_never_client_key),
        cmocka_unit_test(test_auth_ticket_valid),
        cmocka_unit_test(test_auth_ticket_expired),
        cmocka_unit_test(test_auth_ticket_rejected),
        cmocka_unit_test(test_auth_ticket_wrong_length),
        cmocka_unit_test(test_auth_start_check_identity),
        cmocka_unit_test(test_auth_start_check_nonce_length),
    };
    static const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_auth_tls_binding_same_on_both_ends),
        cmocka_unit_test(test_auth_tls_replay_on_other_connection_fails),
        cmocka_unit_test(test_auth_tls_binding_before_handshake),
    };
    int failed = cmocka_run_group_tests_name("test_auth", tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("test_auth_tls", tls_tests, tls_setup, tls_teardown);
    return failed;
}
