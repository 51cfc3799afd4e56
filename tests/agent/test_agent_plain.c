/* Tests for the agent's plaintext data connections (--data-plain, agent/stream.c): against a
 * fake relay run by the test (TLS tunnel, plain data socket), so they do not depend on the
 * relay's side of the feature. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "agent/agent_cache.h"
#include "agent/agent_config.h"
#include "common/auth.h"
#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "tests/support/support.h"

#include "tests/agent/agent_fixture.h"

/* What the agent must say, word for word, when a relay does not take plaintext. */
#define PLAIN_REFUSED                                                                              \
    "relay refused a plaintext data connection: enable allow_plain_data on the relay or turn "   \
    "data_plain off on the agent"

/* ---- the fake relay: one port, TLS for the tunnel, plain TCP for data connections ---- */

struct plain_env {
    SSL_CTX *ctx;
    int lfd;
    char addr[CR_ADDR_STRLEN];
    char dir[128];
    struct echo echo;
    struct agt_config cfg;
    struct agt_agent *agent;
    struct cr_link tunnel;
};

static int accept_fd(struct plain_env *e, int timeout_ms)
{
    struct pollfd p = {.fd = e->lfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        fail_msg("no connection to the fake relay %s within %d ms", e->addr, timeout_ms);
    int fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    return fd;
}

/* The first byte the agent sent, as the relay tells TLS (0x16) from a frame (0x00). */
static int peek_first_byte(int fd, int timeout_ms)
{
    uint8_t b;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        fail_msg("the agent sent nothing on its data connection within %d ms", timeout_ms);
    assert_int_equal(recv(fd, &b, 1, MSG_PEEK), 1);
    return b;
}

/* Starts the fake relay, the echo service and an agent with --data-plain whose cached relay is
 * the fake one, and logs it in (TLS tunnel, as always). */
static void plain_env_start(struct plain_env *e, const char *name)
{
    struct cr_auth_secret secret = {.oak = "oak-p", .user = "root", .password = "pw-p"};
    uint8_t salt[16], stored[32];
    char err[300], services[128];

    memset(e, 0, sizeof(*e));
    e->ctx = cr_tls_server_ctx(srv_pem, srv_key, err, sizeof(err));
    if (!e->ctx)
        fail_msg("%s", err);
    e->lfd = cr_tcp_listen("127.0.0.1:0", 0, 16);
    assert_true(e->lfd >= 0);
    snprintf(e->addr, sizeof(e->addr), "127.0.0.1:%u", cr_sock_port(e->lfd));
    echo_start(&e->echo);
    snprintf(e->dir, sizeof(e->dir), "%s/%s", tmpdir, name);
    mkdir(e->dir, 0700);
    char cached[1][CR_ADDR_STRLEN];
    cr_strlcpy(cached[0], e->addr, CR_ADDR_STRLEN);
    assert_int_equal(
        agt_cache_store(e->dir, "cam-plain", (const char(*)[CR_ADDR_STRLEN])cached, 1, 0), 0);
    /* Port 1: nothing listens there. The dispatcher is never needed (cached relay); the http
     * service is never opened. */
    snprintf(services, sizeof(services), "rtsp=127.0.0.1:%u,http=127.0.0.1:1", e->echo.port);
    char *argv[] = {"camrelay-agent", "--serial", "cam-plain", "--oak", "oak-p", "--user", "root",
                    "--password", "pw-p", "--dispatcher", "127.0.0.1:1", "--ca", ca_pem,
                    "--services", services, "--state-dir", e->dir, "--data-plain", "--connect",
                    NULL};
    assert_int_equal(agt_config_load(&e->cfg, CR_ARRAY_SIZE(argv) - 1, argv), 0);
    assert_int_equal(e->cfg.data_plain, 1);
    if (agt_agent_create(&e->cfg, &e->agent, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    assert_int_equal(agt_agent_start(e->agent), 0);

    /* The control tunnel stays TLS: the relay side of the login. */
    assert_int_equal(cr_auth_make_verifier(&secret, CR_AUTH_ITERATIONS_MIN, salt, stored), 0);
    int fd = accept_fd(e, 10000);
    assert_int_equal(peek_first_byte(fd, 5000), 0x16);
    if (cr_link_accept_tls(&e->tunnel, e->ctx, fd, 5000, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    Camrelay__Frame *f = expect_frame(&e->tunnel, CAMRELAY__FRAME__BODY_TUNNEL_HELLO);
    assert_string_equal(f->tunnel_hello->auth->identity, "cam-plain");
    assert_int_equal(cr_auth_server_verify(&e->tunnel, f->tunnel_hello->auth, salt,
                                           CR_AUTH_ITERATIONS_MIN, stored, 10000),
                     0);
    cr_frame_free(f);
    Camrelay__Frame out = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelWelcome w = CAMRELAY__TUNNEL_WELCOME__INIT;
    w.keepalive_ms = 10000;
    w.site_addr = "198.51.100.7:40000";
    out.body_case = CAMRELAY__FRAME__BODY_TUNNEL_WELCOME;
    out.tunnel_welcome = &w;
    assert_int_equal(cr_link_write(&e->tunnel, &out, 2000), 0);
    send_ping(&e->tunnel, 1);
    f = expect_frame(&e->tunnel, CAMRELAY__FRAME__BODY_PONG);
    cr_frame_free(f);
}

static void plain_env_stop(struct plain_env *e)
{
    assert_int_equal(agt_agent_stop(e->agent), 0);
    agt_agent_destroy(e->agent);
    agt_config_free(&e->cfg);
    cr_link_close(&e->tunnel);
    /* The echo service may never have been reached: wake it with a connection of our own
     * (after a stream it has already ended, and this one waits in its backlog). */
    char echo_addr[32];
    snprintf(echo_addr, sizeof(echo_addr), "127.0.0.1:%u", e->echo.port);
    int fd = cr_tcp_connect(echo_addr, 2000);
    if (fd >= 0) {
        shutdown(fd, SHUT_WR);
        close(fd);
    }
    pthread_join(e->echo.thread, NULL);
    close(e->echo.lfd);
    close(e->lfd);
    SSL_CTX_free(e->ctx);
}

/* Accepts the agent's data connection for stream id and checks that it opens in the clear
 * with a framed DataHello carrying the token. Returns the plain link (hello consumed). */
static void accept_plain_hello(struct plain_env *e, struct cr_link *d, uint64_t id,
                               const uint8_t token[32])
{
    int fd = accept_fd(e, 10000);
    assert_int_equal(peek_first_byte(fd, 5000), 0x00); /* a frame length, not a ClientHello */
    /* The whole frame, still peeked: the token travels as it is (no TLS around it). */
    uint8_t raw[512];
    ssize_t n = 0;
    for (int i = 0; i < 100; i++) {
        n = recv(fd, raw, sizeof(raw), MSG_PEEK);
        if (n >= 4 && (size_t)n >= 4 + ((size_t)raw[2] << 8 | raw[3]))
            break;
        usleep(10000);
    }
    assert_true(n >= 4);
    size_t body = (size_t)raw[0] << 24 | (size_t)raw[1] << 16 | (size_t)raw[2] << 8 | raw[3];
    assert_true(body > 32 && body < 200);
    assert_int_equal((size_t)n, 4 + body); /* nothing behind the hello before the answer */
    assert_non_null(memmem(raw + 4, body, token, 32));
    assert_non_null(memmem(raw + 4, body, "cam-plain", 9));

    cr_link_init_plain(d, fd);
    Camrelay__Frame *f = expect_frame(d, CAMRELAY__FRAME__BODY_DATA_HELLO);
    assert_string_equal(f->data_hello->serial, "cam-plain");
    assert_int_equal(f->data_hello->stream_id, id);
    assert_int_equal(f->data_hello->token.len, 32);
    assert_memory_equal(f->data_hello->token.data, token, 32);
    cr_frame_free(f);
}

/* Raw bytes from a plain data connection: returns >0, 0 at EOF, <0 on error or -ETIMEDOUT. */
static int raw_read(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    ssize_t n = recv(fd, buf, cap, 0);
    return n < 0 ? -errno : (int)n;
}

static void raw_expect(int fd, const char *want)
{
    char buf[256];
    size_t got = 0, len = strlen(want);
    while (got < len) {
        int n = raw_read(fd, buf + got, len - got, 5000);
        if (n <= 0)
            fail_msg("data connection: wanted \"%s\", got %zu bytes then %d", want, got, n);
        got += (size_t)n;
    }
    assert_memory_equal(buf, want, len);
}

/* Writes total random bytes while reading the echo back, both at once, and compares. */
static void bulk_echo(int fd, size_t total)
{
    uint8_t *src = cr_xmalloc(total), *dst = cr_xmalloc(total);
    size_t sent = 0, got = 0;
    cr_random_bytes(src, total);
    while (got < total) {
        int progress = 0;
        short events = POLLIN;
        if (sent < total) {
            ssize_t w = send(fd, src + sent, total - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0) {
                sent += (size_t)w;
                progress = 1;
            } else if (w < 0 && errno != EAGAIN) {
                fail_msg("bulk write failed after %zu bytes: %s", sent, strerror(errno));
            } else {
                events |= POLLOUT;
            }
        }
        ssize_t r = recv(fd, dst + got, total - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
            progress = 1;
        } else if (r == 0 || errno != EAGAIN) {
            fail_msg("bulk read ended after %zu of %zu bytes (%zd)", got, total, r);
        }
        if (!progress) {
            struct pollfd p = {.fd = fd, .events = events};
            if (poll(&p, 1, 10000) == 0)
                fail_msg("bulk echo stalled: sent %zu, got %zu", sent, got);
        }
    }
    assert_memory_equal(src, dst, total);
    free(src);
    free(dst);
}

/* ---- tests ---- */

/* Off by default; the flag and the INI key both turn it on. */
static void test_agent_plain_config(void **state)
{
    char ini[256];
    (void)state;
    skip_without_certs();
    char *base[] = {"camrelay-agent", "--serial", "cam-plain", "--oak", "k", "--user", "u",
                    "--password", "p", "--dispatcher", "127.0.0.1:1", "--ca", ca_pem,
                    "--connect", NULL};
    struct agt_config cfg = {0};
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(base) - 1, base), 0);
    assert_int_equal(cfg.data_plain, 0);
    agt_config_free(&cfg);

    snprintf(ini, sizeof(ini), "%s/agent.ini", tmpdir);
    FILE *f = fopen(ini, "w");
    assert_non_null(f);
    fputs("[data]\ndata-plain = yes\n", f);
    fclose(f);
    char *with_ini[] = {"camrelay-agent", "--config", ini, "--serial", "cam-plain", "--oak", "k",
                        "--user", "u", "--password", "p", "--dispatcher", "127.0.0.1:1", "--ca",
                        ca_pem, "--connect", NULL};
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(with_ini) - 1, with_ini), 0);
    assert_int_equal(cfg.data_plain, 1);
    agt_config_free(&cfg);

    /* The flag wins over the file. */
    char *off[] = {"camrelay-agent", "--config", ini, "--data-plain=false", "--serial",
                   "cam-plain", "--oak", "k", "--user", "u", "--password", "p", "--dispatcher",
                   "127.0.0.1:1", "--ca", ca_pem, "--connect", NULL};
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(off) - 1, off), 0);
    assert_int_equal(cfg.data_plain, 0);
    agt_config_free(&cfg);
    unlink(ini);
}

/* DataHello in the clear, DataAccepted, then raw bytes both ways with half-close by FIN. */
static void test_agent_plain_stream_relays_bytes(void **state)
{
    struct plain_env e;
    struct cr_link d;
    uint8_t token[32];
    (void)state;
    skip_without_certs();
    plain_env_start(&e, "state-plain-stream");

    cr_random_bytes(token, sizeof(token));
    send_open_stream(&e.tunnel, 7, "rtsp", token);
    accept_plain_hello(&e, &d, 7, token);
    /* DataAccepted in the clear, with the recorder's first bytes right behind it in the same
     * segment: the agent must not swallow them with the frame. */
    {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__DataAccepted da = CAMRELAY__DATA_ACCEPTED__INIT;
        uint8_t buf[64];
        da.stream_id = 7;
        out.body_case = CAMRELAY__FRAME__BODY_DATA_ACCEPTED;
        out.data_accepted = &da;
        int n = cr_frame_encode(&out, buf, sizeof(buf) - 13);
        assert_true(n > 0);
        memcpy(buf + n, "hello camera\n", 13);
        assert_int_equal(send(d.fd, buf, (size_t)n + 13, MSG_NOSIGNAL), n + 13);
    }
    raw_expect(d.fd, "hello camera\n");
    send_ping(&e.tunnel, 2);
    bulk_echo(d.fd, 4u << 20);
    /* Recorder EOF: a plain FIN reaches the camera's service as EOF; its last words still come
     * back, then the agent's own FIN. */
    assert_int_equal(shutdown(d.fd, SHUT_WR), 0);
    raw_expect(d.fd, "bye\n");
    char tail[16];
    assert_int_equal(raw_read(d.fd, tail, sizeof(tail), 5000), 0);
    cr_link_close(&d);
    Camrelay__Frame *f = expect_frame(&e.tunnel, CAMRELAY__FRAME__BODY_PONG);
    assert_int_equal(f->pong->seq, 2);
    cr_frame_free(f);
    /* No StreamFailed for a stream that worked: the next frame is the answer to this ping. */
    send_ping(&e.tunnel, 3);
    f = expect_frame(&e.tunnel, CAMRELAY__FRAME__BODY_PONG);
    assert_int_equal(f->pong->seq, 3);
    cr_frame_free(f);
    plain_env_stop(&e);
}

static void expect_plain_refused(struct plain_env *e, uint64_t id)
{
    Camrelay__Frame *f = expect_frame(&e->tunnel, CAMRELAY__FRAME__BODY_STREAM_FAILED);
    assert_int_equal(f->stream_failed->stream_id, id);
    assert_string_equal(f->stream_failed->reason, PLAIN_REFUSED);
    cr_frame_free(f);
}

/* A relay without allow_plain_data: a Refusal, a bare close, or a relay that only speaks TLS
 * (its alert is no frame). Each ends in StreamFailed with the reason that says what to fix. */
static void test_agent_plain_refused_stream_failed(void **state)
{
    struct plain_env e;
    struct cr_link d;
    uint8_t token[32];
    (void)state;
    skip_without_certs();
    plain_env_start(&e, "state-plain-refused");

    /* The relay's Refusal, as relay/agent_conn.c sends it, then its close. */
    cr_random_bytes(token, sizeof(token));
    send_open_stream(&e.tunnel, 21, "rtsp", token);
    accept_plain_hello(&e, &d, 21, token);
    cr_link_refuse(&d, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                   "plaintext data connections are not enabled on this relay", 0);
    cr_link_close(&d);
    expect_plain_refused(&e, 21);

    /* Closed at once, before reading anything. */
    send_open_stream(&e.tunnel, 22, "rtsp", token);
    close(accept_fd(&e, 10000));
    expect_plain_refused(&e, 22);

    /* A relay that takes every connection for TLS: a handshake_failure alert, then close. */
    send_open_stream(&e.tunnel, 23, "rtsp", token);
    accept_plain_hello(&e, &d, 23, token);
    static const uint8_t alert[] = {0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28};
    assert_int_equal(send(d.fd, alert, sizeof(alert), MSG_NOSIGNAL), (ssize_t)sizeof(alert));
    cr_link_close(&d);
    expect_plain_refused(&e, 23);

    /* Any other refusal keeps its own reason (a stale token is not a configuration issue). */
    send_open_stream(&e.tunnel, 24, "rtsp", token);
    accept_plain_hello(&e, &d, 24, token);
    cr_link_refuse(&d, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                   "no such stream waiting (expired or already connected)", 0);
    cr_link_close(&d);
    Camrelay__Frame *f = expect_frame(&e.tunnel, CAMRELAY__FRAME__BODY_STREAM_FAILED);
    assert_int_equal(f->stream_failed->stream_id, 24);
    assert_null(strstr(f->stream_failed->reason, "plaintext"));
    assert_non_null(strstr(f->stream_failed->reason, "no such stream waiting"));
    cr_frame_free(f);

    /* The tunnel is still up. */
    send_ping(&e.tunnel, 9);
    f = expect_frame(&e.tunnel, CAMRELAY__FRAME__BODY_PONG);
    assert_int_equal(f->pong->seq, 9);
    cr_frame_free(f);
    plain_env_stop(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_plain_config),
        cmocka_unit_test(test_agent_plain_stream_relays_bytes),
        cmocka_unit_test(test_agent_plain_refused_stream_failed),
    };
    signal(SIGPIPE, SIG_IGN);
    alarm(300); /* a hung test fails instead of blocking the build */
    cr_log_set_tag("agent-plain-test");
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
