/* Tests common/auth_link.c: the challenge-response exchange over real TLS control links
 * (cr_link_connect_tls / cr_link_accept_tls on loopback), both sides. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/auth_link.h"
#include "common/link.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "tests/support/support.h"

#define ITER CR_AUTH_ITERATIONS_MIN

struct env {
    char dir[128];
    SSL_CTX *server;
    SSL_CTX *client;
    int lfd;
    char addr[32];
};
static struct env env;

static const struct cr_auth_secret camera = {"OAK-1", "admin", "pw"};

enum client_mode {
    CLIENT_PROVE = 0,  /* answers the challenge with cr_auth_client_respond */
    CLIENT_SEND_PING,  /* answers with a Ping instead of an AuthProof */
    CLIENT_SILENT,     /* never answers */
};

struct server {
    uint8_t salt[CR_AUTH_SALT_LEN];
    uint32_t iterations;
    uint8_t stored[CR_AUTH_KEY_LEN];
    int timeout_ms;
    int accept_rc;
    int verify_rc;
    int got_start;
};

static void *server_main(void *arg)
{
    struct server *s = arg;
    struct cr_link l;
    char err[256];
    Camrelay__Frame *in = NULL;
    struct pollfd p = {.fd = env.lfd, .events = POLLIN};

    s->accept_rc = -ETIMEDOUT;
    if (poll(&p, 1, 5000) != 1)
        return NULL;
    int fd = accept4(env.lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    s->accept_rc = cr_link_accept_tls(&l, env.server, fd, 5000, err, sizeof(err));
    if (s->accept_rc < 0)
        return NULL;
    int rc = cr_link_read(&l, 5000, &in);
    if (rc == 0 && in->body_case == CAMRELAY__FRAME__BODY_AUTH_START) {
        s->got_start = 1;
        s->verify_rc = cr_auth_server_verify(&l, in->auth_start, s->salt, s->iterations,
                                             s->stored, s->timeout_ms);
    } else {
        s->verify_rc = rc < 0 ? rc : -EBADMSG;
    }
    cr_frame_free(in);
    /* The caller answers: OK or ERR_AUTH, so the client sees the outcome. */
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ack ack = CAMRELAY__ACK__INIT;
    ack.status = s->verify_rc == 0 ? CAMRELAY__STATUS__OK : CAMRELAY__STATUS__ERR_AUTH;
    f.body_case = CAMRELAY__FRAME__BODY_ACK;
    f.ack = &ack;
    cr_link_write(&l, &f, 1000);
    cr_link_close(&l);
    return NULL;
}

struct login {
    const char *identity;
    size_t nonce_len;
    enum client_mode mode;
    int server_timeout_ms;
    /* results */
    int respond_rc;
    int status; /* the server's answer, -1 if none */
    struct server srv;
};

/* A test that needs TLS says "skipped" and why when the certificate could not be made. */
static void tls_require(void)
{
    if (!env.server || !env.client || env.lfd < 0) {
        print_message("skipped: could not make a test certificate with the openssl command "
                      "line (is openssl installed?)\n");
        skip();
    }
}

/* Runs one login: server verifier for `registered`, client proving with c. */
static void run_login(const struct cr_auth_secret *registered, struct cr_auth_client *c,
                      struct login *lg)
{
    struct cr_link l;
    char err[256];
    uint8_t nonce[CR_AUTH_NONCE_MAX + 1];
    pthread_t t;

    tls_require();
    memset(&lg->srv, 0, sizeof(lg->srv));
    assert_int_equal(cr_auth_make_verifier(registered, ITER, lg->srv.salt, lg->srv.stored), 0);
    lg->srv.iterations = ITER;
    lg->srv.timeout_ms = lg->server_timeout_ms ? lg->server_timeout_ms : 5000;
    lg->status = -1;
    lg->respond_rc = 1;
    assert_int_equal(pthread_create(&t, NULL, server_main, &lg->srv), 0);

    int rc = cr_link_connect_tls(&l, env.client, env.addr, 5000, err, sizeof(err));
    if (rc < 0)
        fail_msg("connect: %s", err);
    cr_random_bytes(nonce, sizeof(nonce));
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthStart st = CAMRELAY__AUTH_START__INIT;
    st.identity = (char *)lg->identity;
    st.client_nonce.data = nonce;
    st.client_nonce.len = lg->nonce_len;
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_START;
    f.auth_start = &st;
    assert_int_equal(cr_link_write(&l, &f, 1000), 0);

    Camrelay__Frame *in = NULL;
    rc = cr_link_read(&l, 5000, &in);
    if (rc == 0 && in->body_case == CAMRELAY__FRAME__BODY_AUTH_CHALLENGE) {
        const Camrelay__AuthChallenge *ch = in->auth_challenge;
        assert_int_equal(ch->salt.len, CR_AUTH_SALT_LEN);
        assert_memory_equal(ch->salt.data, lg->srv.salt, CR_AUTH_SALT_LEN);
        assert_int_equal(ch->iterations, ITER);
        assert_int_equal(ch->server_nonce.len, CR_AUTH_NONCE_LEN);
        if (lg->mode == CLIENT_PROVE) {
            lg->respond_rc = cr_auth_client_respond(&l, c, lg->identity, nonce, lg->nonce_len, ch);
        } else if (lg->mode == CLIENT_SEND_PING) {
            Camrelay__Frame pf = CAMRELAY__FRAME__INIT;
            Camrelay__Ping ping = CAMRELAY__PING__INIT;
            pf.body_case = CAMRELAY__FRAME__BODY_PING;
            pf.ping = &ping;
            assert_int_equal(cr_link_write(&l, &pf, 1000), 0);
        }
        cr_frame_free(in);
        in = NULL;
        rc = cr_link_read(&l, 5000, &in);
    }
    if (rc == 0 && in->body_case == CAMRELAY__FRAME__BODY_ACK)
        lg->status = in->ack->status;
    cr_frame_free(in);
    pthread_join(t, NULL);
    cr_link_close(&l);
    assert_int_equal(lg->srv.accept_rc, 0);
}

static void test_auth_link_login_succeeds(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct login lg = {.identity = "SN-0001", .nonce_len = CR_AUTH_NONCE_LEN};
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.respond_rc, 0);
    assert_int_equal(lg.srv.verify_rc, 0);
    assert_int_equal(lg.status, CAMRELAY__STATUS__OK);
    assert_int_equal(c.have_key, 1);
    cr_auth_client_forget(&c);
}

static void test_auth_link_wrong_secret_refused(void **state)
{
    (void)state;
    static const struct cr_auth_secret wrong[] = {
        {"OAK-2", "admin", "pw"},
        {"OAK-1", "root", "pw"},
        {"OAK-1", "admin", "pw2"},
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(wrong); i++) {
        struct cr_auth_client c = {.secret = wrong[i]};
        struct login lg = {.identity = "SN-0001", .nonce_len = CR_AUTH_NONCE_MIN};
        run_login(&camera, &c, &lg);
        assert_int_equal(lg.respond_rc, 0); /* the client cannot tell; the server can */
        assert_int_equal(lg.srv.verify_rc, -EACCES);
        assert_int_equal(lg.status, CAMRELAY__STATUS__ERR_AUTH);
        cr_auth_client_forget(&c);
    }
}

/* The key is derived once per (salt, iterations) and reused; a new salt re-derives it. */
static void test_auth_link_client_key_cache(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct login lg = {.identity = "SN-0001", .nonce_len = CR_AUTH_NONCE_MAX};
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.status, CAMRELAY__STATUS__OK);
    uint8_t first_salt[CR_AUTH_SALT_LEN], first_key[CR_AUTH_KEY_LEN];
    memcpy(first_salt, c.salt, sizeof(first_salt));
    memcpy(first_key, c.client_key, sizeof(first_key));

    /* Every run_login registers afresh (new random salt): the cache must follow it. */
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.status, CAMRELAY__STATUS__OK);
    assert_memory_not_equal(first_salt, c.salt, sizeof(first_salt));
    assert_memory_not_equal(first_key, c.client_key, sizeof(first_key));

    cr_auth_client_forget(&c);
    assert_int_equal(c.have_key, 0);
    static const uint8_t zero[CR_AUTH_KEY_LEN];
    assert_memory_equal(c.client_key, zero, sizeof(zero));
}

static void test_auth_link_unexpected_frame(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct login lg = {.identity = "SN-0001", .nonce_len = 32, .mode = CLIENT_SEND_PING};
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.srv.verify_rc, -EBADMSG);
    assert_int_equal(lg.status, CAMRELAY__STATUS__ERR_AUTH);
}

static void test_auth_link_bad_start_no_challenge(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct login lg = {.identity = "bad identity", .nonce_len = 32};
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.srv.got_start, 1);
    assert_int_equal(lg.srv.verify_rc, -EBADMSG);
    assert_int_equal(lg.respond_rc, 1); /* no challenge came, so the client never answered */
    assert_int_equal(lg.status, CAMRELAY__STATUS__ERR_AUTH);

    struct login short_nonce = {.identity = "SN-0001", .nonce_len = CR_AUTH_NONCE_MIN - 1};
    run_login(&camera, &c, &short_nonce);
    assert_int_equal(short_nonce.srv.verify_rc, -EBADMSG);
}

static void test_auth_link_server_times_out(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct login lg = {.identity = "SN-0001", .nonce_len = 32, .mode = CLIENT_SILENT,
                       .server_timeout_ms = 200};
    uint64_t t0 = cr_now_ms();
    run_login(&camera, &c, &lg);
    assert_int_equal(lg.srv.verify_rc, -ETIMEDOUT);
    assert_true(cr_now_ms() - t0 < 3000);
}

/* Challenges a client must refuse before doing any work (no link I/O happens). */
static void test_auth_link_client_rejects_bad_challenge(void **state)
{
    (void)state;
    struct cr_auth_client c = {.secret = camera};
    struct cr_link l = {.fd = -1};
    uint8_t salt[CR_AUTH_SALT_LEN + 1] = {0}, nonce[CR_AUTH_NONCE_MAX + 1] = {0};
    static const struct {
        size_t salt_len, nonce_len;
        uint32_t iterations;
    } bad[] = {
        {CR_AUTH_SALT_LEN - 1, 32, ITER},
        {CR_AUTH_SALT_LEN + 1, 32, ITER},
        {0, 32, ITER},
        {CR_AUTH_SALT_LEN, CR_AUTH_NONCE_MIN - 1, ITER},
        {CR_AUTH_SALT_LEN, CR_AUTH_NONCE_MAX + 1, ITER},
        {CR_AUTH_SALT_LEN, 0, ITER},
        {CR_AUTH_SALT_LEN, 32, CR_AUTH_ITERATIONS_MIN - 1},
        {CR_AUTH_SALT_LEN, 32, CR_AUTH_ITERATIONS_MAX + 1},
        {CR_AUTH_SALT_LEN, 32, 0},
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        Camrelay__AuthChallenge ch = CAMRELAY__AUTH_CHALLENGE__INIT;
        ch.salt.data = salt;
        ch.salt.len = bad[i].salt_len;
        ch.server_nonce.data = nonce;
        ch.server_nonce.len = bad[i].nonce_len;
        ch.iterations = bad[i].iterations;
        if (cr_auth_client_respond(&l, &c, "SN-0001", nonce, 32, &ch) != -EINVAL)
            fail_msg("challenge %zu accepted", i);
        assert_int_equal(c.have_key, 0);
    }
}

static int group_setup(void **state)
{
    char err[256], cert[192], key[192], ca[192];
    (void)state;
    memset(&env, 0, sizeof(env));
    env.lfd = -1;
    if (test_tmpdir(env.dir, sizeof(env.dir)) < 0 || test_certs_make(env.dir, "IP:127.0.0.1") < 0)
        return 0; /* each test reports the skip */
    snprintf(cert, sizeof(cert), "%s/server.pem", env.dir);
    snprintf(key, sizeof(key), "%s/server.key", env.dir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", env.dir);
    env.server = cr_tls_server_ctx(cert, key, err, sizeof(err));
    if (!env.server)
        fprintf(stderr, "server ctx: %s\n", err);
    env.client = cr_tls_client_ctx(ca, err, sizeof(err));
    if (!env.client)
        fprintf(stderr, "client ctx: %s\n", err);
    env.lfd = cr_tcp_listen("127.0.0.1:0", 0, 8);
    if (env.lfd < 0)
        return -1;
    snprintf(env.addr, sizeof(env.addr), "127.0.0.1:%u", cr_sock_port(env.lfd));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(env.server);
    SSL_CTX_free(env.client);
    if (env.lfd >= 0)
        close(env.lfd);
    if (env.dir[0])
        test_rmtree(env.dir);
    return 0;
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auth_link_login_succeeds),
        cmocka_unit_test(test_auth_link_wrong_secret_refused),
        cmocka_unit_test(test_auth_link_client_key_cache),
        cmocka_unit_test(test_auth_link_unexpected_frame),
        cmocka_unit_test(test_auth_link_bad_start_no_challenge),
        cmocka_unit_test(test_auth_link_server_times_out),
        cmocka_unit_test(test_auth_link_client_rejects_bad_challenge),
    };
    return cmocka_run_group_tests_name("test_auth_link", tests, group_setup, group_teardown);
}
