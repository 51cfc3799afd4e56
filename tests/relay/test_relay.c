/* Tests of relay/: a real relay worker on loopback driven by a scripted agent and recorder. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "relay/ktls.h"
#include "relay/relay.h"
#include "tests/support/support.h"

#define SERIAL "ACCC8E000001"
#define OAK "A1B2-C3D4-E5F6"

struct fixture {
    char dir[128];
    SSL_CTX *server, *client;
    struct rly_relay *relay;
    char ext[64];     /* "127.0.0.1:port" of the external listener */
    const char *serial; /* the camera the helpers log in as and stream from */
    uint16_t rtsp_port; /* its endpoint the helpers' recorders connect to */
    struct cr_auth_secret secret;
};

static struct fixture fx;

/* The fixture's relay with its camera. Unless kernel_tls, its TLS data connections stay on our
 * in-place record layer whatever the kernel has, so that the tests of that path test it on
 * every kernel; with kernel_tls they take kTLS where the kernel has it. Those tests run in an
 * emulated machine (tests/vm/kernel-vm.sh), 10-30 times slower, where the test's tunnel, which
 * answers no ping while a test pumps bytes, would miss three 300 ms keepalives. */
static int relay_start(int kernel_tls)
{
    struct rly_config cfg = {
        .relay_name = "relay-test",
        .listen_external = "127.0.0.1:0",
        .tls = fx.server,
        .keepalive_ms = kernel_tls ? 5000 : 300,
        .max_conns = 256,
        .workers = 2, /* connections land on either worker: exercises the hand-over */
        .allow_plain_data = 1,
        .no_kernel_tls = !kernel_tls,
    };
    if (rly_relay_start(&cfg, &fx.relay) < 0)
        return -1;
    snprintf(fx.ext, sizeof(fx.ext), "127.0.0.1:%u", rly_relay_external_port(fx.relay));

    fx.secret = (struct cr_auth_secret){.oak = OAK, .user = "root", .password = "pass1234"};
    fx.serial = SERIAL;
    struct rly_camera_spec spec = {.n_endpoints = 1};
    cr_strlcpy(spec.serial, SERIAL, sizeof(spec.serial));
    spec.iterations = CR_AUTH_ITERATIONS_MIN;
    cr_auth_make_verifier(&fx.secret, spec.iterations, spec.salt, spec.stored_key);
    cr_strlcpy(spec.endpoints[0].service, "rtsp", sizeof(spec.endpoints[0].service));
    spec.endpoints[0].listen_fd = cr_tcp_listen("127.0.0.1:0", 0, 16);
    fx.rtsp_port = cr_sock_port(spec.endpoints[0].listen_fd);
    int rc = rly_relay_camera_put(fx.relay, &spec);
    rly_relay_set_ready(fx.relay);
    return rc;
}

static int setup(void **state)
{
    char err[256], path[256], key[256];
    (void)state;
    cr_log_set_level_name(getenv("TEST_DEBUG") ? "debug" : "error");
    memset(&fx, 0, sizeof(fx));
    if (test_tmpdir(fx.dir, sizeof(fx.dir)) < 0 || test_certs_make(fx.dir, "IP:127.0.0.1") < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/server.pem", fx.dir);
    snprintf(key, sizeof(key), "%s/server.key", fx.dir);
    fx.server = cr_tls_server_ctx(path, key, err, sizeof(err));
    snprintf(path, sizeof(path), "%s/ca.pem", fx.dir);
    fx.client = cr_tls_client_ctx(path, err, sizeof(err));
    if (!fx.server || !fx.client)
        return -1;
    return relay_start(0);
}

/* A relay that hands TLS data connections to the kernel where it can, in place of the
 * fixture's, and back. */
static int setup_kernel_tls(void **state)
{
    (void)state;
    rly_relay_stop(fx.relay);
    return relay_start(1);
}

static int teardown_kernel_tls(void **state)
{
    (void)state;
    rly_relay_stop(fx.relay);
    return relay_start(0);
}

static int teardown(void **state)
{
    (void)state;
    rly_relay_stop(fx.relay);
    SSL_CTX_free(fx.server);
    SSL_CTX_free(fx.client);
    test_rmtree(fx.dir);
    return 0;
}

/* Opens a control tunnel and logs in with the given secret. Returns the outcome frame. */
static Camrelay__Frame *login(struct cr_link *l, const struct cr_auth_secret *secret,
                              const char *serial)
{
    char err[256];
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    struct cr_auth_client client = {.secret = *secret};
    assert_int_equal(cr_link_connect_tls(l, fx.client, fx.ext, 5000, err, sizeof(err)), 0);
    cr_random_bytes(nonce, sizeof(nonce));

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelHello h = CAMRELAY__TUNNEL_HELLO__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    as.identity = (char *)serial;
    as.client_nonce.data = nonce;
    as.client_nonce.len = sizeof(nonce);
    h.auth = &as;
    f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
    f.tunnel_hello = &h;
    assert_int_equal(cr_link_write(l, &f, 5000), 0);

    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(l, 5000, &in), 0);
    if (in->body_case != CAMRELAY__FRAME__BODY_AUTH_CHALLENGE)
        return in; /* refused before the challenge */
    assert_int_equal(cr_auth_client_respond(l, &client, serial, nonce, sizeof(nonce),
                                            in->auth_challenge),
                     0);
    cr_frame_free(in);
    cr_auth_client_forget(&client);
    in = NULL;
    assert_int_equal(cr_link_read(l, 5000, &in), 0);
    return in;
}

static int wait_online(int want, int timeout_ms)
{
    struct rly_camera_status st;
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    while (cr_now_ms() < deadline) {
        if (rly_relay_camera_status(fx.relay, fx.serial, &st) == 0 && st.online == want)
            return 1;
        usleep(20000);
    }
    return 0;
}

/* Answers pings until an OpenStream arrives; returns it. */
static Camrelay__Frame *wait_open_stream(struct cr_link *tunnel)
{
    for (int i = 0; i < 50; i++) {
        Camrelay__Frame *f = NULL;
        assert_int_equal(cr_link_read(tunnel, 5000, &f), 0);
        if (f->body_case == CAMRELAY__FRAME__BODY_OPEN_STREAM)
            return f;
        if (f->body_case == CAMRELAY__FRAME__BODY_PING) {
            Camrelay__Frame out = CAMRELAY__FRAME__INIT;
            Camrelay__Pong p = CAMRELAY__PONG__INIT;
            p.seq = f->ping->seq;
            out.body_case = CAMRELAY__FRAME__BODY_PONG;
            out.pong = &p;
            assert_int_equal(cr_link_write(tunnel, &out, 2000), 0);
        }
        cr_frame_free(f);
    }
    fail_msg("no OpenStream");
    return NULL;
}

/* Sends a DataHello on a connected link (TLS or plaintext) and returns the answer. */
static Camrelay__Frame *send_data_hello(struct cr_link *data, const char *serial, uint64_t id,
                                        const uint8_t *token, size_t token_len)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__DataHello h = CAMRELAY__DATA_HELLO__INIT;
    h.serial = (char *)serial;
    h.stream_id = id;
    h.token.data = (uint8_t *)token;
    h.token.len = token_len;
    f.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f.data_hello = &h;
    assert_int_equal(cr_link_write(data, &f, 5000), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(data, 5000, &in), 0);
    return in;
}

static Camrelay__Frame *data_hello(struct cr_link *data, const char *serial, uint64_t id,
                                   const uint8_t *token, size_t token_len)
{
    char err[256];
    assert_int_equal(cr_link_connect_tls(data, fx.client, fx.ext, 5000, err, sizeof(err)), 0);
    return send_data_hello(data, serial, id, token, token_len);
}

/* Reads exactly len raw bytes from a link (TLS data connection). */
static void link_read_exact(struct cr_link *l, uint8_t *buf, size_t len)
{
    size_t got = 0;
    uint64_t deadline = cr_now_ms() + 10000;
    while (got < len) {
        int n = cr_link_read_some(l, buf + got, len - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        assert_int_equal(n, -EAGAIN);
        assert_true(cr_now_ms() < deadline);
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        poll(&p, 1, 100);
    }
}

static void fd_read_exact(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    uint64_t deadline = cr_now_ms() + 10000;
    while (got < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        poll(&p, 1, 100);
        ssize_t n = read(fd, buf + got, len - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            fail_msg("unexpected EOF after %zu of %zu bytes", got, len);
        assert_true(cr_now_ms() < deadline);
    }
}

static void fd_write_all(int fd, const uint8_t *buf, size_t len)
{
    size_t done = 0;
    while (done < len) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        poll(&p, 1, 1000);
        ssize_t n = send(fd, buf + done, len - done, MSG_NOSIGNAL);
        if (n > 0)
            done += (size_t)n;
        else
            assert_true(n < 0 && errno == EAGAIN);
    }
}

static void test_relay_tunnel_login_and_stream_bytes_intact(void **state)
{
    struct cr_link tunnel, data;
    char port[32];
    (void)state;

    Camrelay__Frame *f = login(&tunnel, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    assert_int_equal(f->tunnel_welcome->keepalive_ms, 300);
    assert_non_null(strstr(f->tunnel_welcome->site_addr, "127.0.0.1:"));
    cr_frame_free(f);
    assert_true(wait_online(1, 2000));
    unsigned tunnels = 0, cameras = 0;
    for (unsigned i = 0; i < rly_relay_worker_count(fx.relay); i++) {
        struct rly_worker_stats ws;
        rly_relay_worker_stats(fx.relay, i, &ws);
        tunnels += ws.tunnels;
        cameras += ws.cameras;
    }
    assert_int_equal(tunnels, 1);
    assert_int_equal(cameras, 1);

    /* A recorder connects and speaks first, as RTSP clients do. */
    snprintf(port, sizeof(port), "127.0.0.1:%u", fx.rtsp_port);
    int rec = cr_tcp_connect(port, 2000);
    assert_true(rec >= 0);
    static const char request[] = "OPTIONS rtsp://relay/ RTSP/1.0\r\nCSeq: 1\r\n\r\n";
    fd_write_all(rec, (const uint8_t *)request, sizeof(request) - 1);

    Camrelay__Frame *os = wait_open_stream(&tunnel);
    assert_string_equal(os->open_stream->service, "rtsp");
    f = data_hello(&data, SERIAL, os->open_stream->stream_id, os->open_stream->token.data,
                   os->open_stream->token.len);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_DATA_ACCEPTED);
    cr_frame_free(f);
    cr_frame_free(os);

    uint8_t got[sizeof(request) - 1];
    link_read_exact(&data, got, sizeof(got));
    assert_memory_equal(got, request, sizeof(got));

    /* 3 MiB of random bytes camera -> recorder must arrive intact and in order. */
    size_t big = 3 << 20;
    uint8_t *payload = cr_xmalloc(big), *back = cr_xmalloc(big);
    cr_random_bytes(payload, big);
    size_t sent = 0, recvd = 0;
    while (recvd < big) {
        if (sent < big) {
            size_t chunk = big - sent < 65536 ? big - sent : 65536;
            int rc = cr_link_write_all(&data, payload + sent, chunk, 5000);
            assert_int_equal(rc, 0);
            sent += chunk;
        }
        struct pollfd p = {.fd = rec, .events = POLLIN};
        poll(&p, 1, sent < big ? 0 : 1000);
        ssize_t n = read(rec, back + recvd, big - recvd);
        if (n > 0)
            recvd += (size_t)n;
        else if (n == 0)
            fail_msg("recorder saw EOF early");
    }
    assert_memory_equal(back, payload, big);

    /* Half-close: the recorder stops sending; the camera side sees it and still answers. */
    shutdown(rec, SHUT_WR);
    uint8_t b;
    int n;
    uint64_t deadline = cr_now_ms() + 5000;
    while ((n = cr_link_read_some(&data, &b, 1)) == -EAGAIN && cr_now_ms() < deadline)
        usleep(10000);
    assert_int_equal(n, 0); /* close_notify from the relay */
    static const char tail[] = "last words after the recorder's half-close";
    assert_int_equal(cr_link_write_all(&data, tail, sizeof(tail) - 1, 2000), 0);
    cr_link_close(&data); /* close_notify: the stream ends */
    uint8_t tail_got[sizeof(tail) - 1];
    fd_read_exact(rec, tail_got, sizeof(tail_got));
    assert_memory_equal(tail_got, tail, sizeof(tail_got));
    struct pollfd p = {.fd = rec, .events = POLLIN};
    poll(&p, 1, 3000);
    assert_int_equal(read(rec, &b, 1), 0); /* and then EOF */
    close(rec);

    struct rly_camera_status st;
    assert_int_equal(rly_relay_camera_status(fx.relay, SERIAL, &st), 0);
    assert_true(st.bytes_relayed >= big + sizeof(request) - 1 + sizeof(tail) - 1);
    free(payload);
    free(back);
    cr_link_close(&tunnel);
    assert_true(wait_online(0, 3000));
}

static void test_relay_wrong_password_refused_and_relay_keeps_serving(void **state)
{
    struct cr_link l;
    (void)state;
    struct cr_auth_secret wrong = fx.secret;
    wrong.password = "wrong-password";
    Camrelay__Frame *f = login(&l, &wrong, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    assert_int_equal(f->refusal->status, CAMRELAY__STATUS__ERR_AUTH);
    assert_non_null(strstr(f->refusal->message, "authentication failed"));
    cr_frame_free(f);
    cr_link_close(&l);

    struct cr_auth_secret wrong_oak = fx.secret;
    wrong_oak.oak = "A1B2-C3D4-E5F7";
    f = login(&l, &wrong_oak, SERIAL);
    assert_int_equal(f->refusal->status, CAMRELAY__STATUS__ERR_AUTH);
    cr_frame_free(f);
    cr_link_close(&l);

    f = login(&l, &fx.secret, "ACCC8E999999");
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    assert_int_equal(f->refusal->status, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(f);
    cr_link_close(&l);

    f = login(&l, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    cr_link_close(&l);
}

static void test_relay_wrong_stream_token_refused(void **state)
{
    struct cr_link tunnel, data;
    char port[32];
    (void)state;
    Camrelay__Frame *f = login(&tunnel, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    snprintf(port, sizeof(port), "127.0.0.1:%u", fx.rtsp_port);
    int rec = cr_tcp_connect(port, 2000);
    Camrelay__Frame *os = wait_open_stream(&tunnel);
    uint8_t bad[32];
    memcpy(bad, os->open_stream->token.data, 32);
    bad[0] ^= 1;
    f = data_hello(&data, SERIAL, os->open_stream->stream_id, bad, sizeof(bad));
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    assert_int_equal(f->refusal->status, CAMRELAY__STATUS__ERR_AUTH);
    cr_frame_free(f);
    cr_link_close(&data);
    /* The right token still works afterwards: a wrong guess does not burn the stream. */
    f = data_hello(&data, SERIAL, os->open_stream->stream_id, os->open_stream->token.data, 32);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_DATA_ACCEPTED);
    cr_frame_free(f);
    /* Used once: the same token again is refused. */
    struct cr_link again;
    f = data_hello(&again, SERIAL, os->open_stream->stream_id, os->open_stream->token.data, 32);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    cr_frame_free(f);
    cr_frame_free(os);
    cr_link_close(&again);
    cr_link_close(&data);
    close(rec);
    cr_link_close(&tunnel);
}

static void test_relay_oversized_frame_closes_link(void **state)
{
    struct cr_link l;
    char err[256];
    (void)state;
    assert_int_equal(cr_link_connect_tls(&l, fx.client, fx.ext, 5000, err, sizeof(err)), 0);
    uint8_t hdr[4] = {0x00, 0x10, 0x00, 0x00}; /* announces 1 MiB */
    assert_int_equal(cr_link_write_all(&l, hdr, sizeof(hdr), 2000), 0);
    Camrelay__Frame *f = NULL;
    int rc = cr_link_read(&l, 5000, &f);
    if (rc == 0) {
        assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
        assert_non_null(strstr(f->refusal->message, "too large"));
        cr_frame_free(f);
        rc = cr_link_read(&l, 5000, &f);
    }
    assert_int_equal(rc, -ECONNRESET);
    cr_link_close(&l);

    /* A frame that is not a hello is refused too, and the relay still serves. */
    f = login(&l, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    cr_link_close(&l);
}

static void test_relay_dead_tunnel_noticed_and_replacement(void **state)
{
    struct cr_link a, b;
    (void)state;
    Camrelay__Frame *f = login(&a, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    assert_true(wait_online(1, 2000));
    /* A second tunnel for the same serial replaces the first at once. */
    f = login(&b, &fx.secret, SERIAL);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    int rc;
    uint64_t deadline = cr_now_ms() + 3000;
    do {
        rc = cr_link_read(&a, 100, &f);
        if (rc == 0)
            cr_frame_free(f);
    } while ((rc == 0 || rc == -ETIMEDOUT) && cr_now_ms() < deadline);
    assert_int_equal(rc, -ECONNRESET);
    cr_link_close(&a);
    assert_true(wait_online(1, 100));
    /* b never answers pings: with a 300 ms keepalive the relay drops it in about a second. */
    uint64_t t0 = cr_now_ms();
    assert_true(wait_online(0, 5000));
    uint64_t took = cr_now_ms() - t0;
    assert_true(took < 3000);
    cr_link_close(&b);
}

/* The path a camera's latest stream took, as the control plane sees it. */
static const char *camera_path(void)
{
    static struct rly_camera_status st;
    assert_int_equal(rly_relay_camera_status(fx.relay, fx.serial, &st), 0);
    return st.data_path;
}

/* Closes a stream's three connections and waits for the camera to go offline. */
static void end_stream(struct cr_link *tunnel, struct cr_link *data, int rec)
{
    close(rec);
    cr_link_close(data);
    cr_link_close(tunnel);
    assert_true(wait_online(0, 3000));
}

/* Logs in and connects a recorder; returns the OpenStream the relay sent for it (owned). */
static Camrelay__Frame *ask_for_stream(struct cr_link *tunnel, int *rec)
{
    char port[32];
    Camrelay__Frame *f = login(tunnel, &fx.secret, fx.serial);
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_TUNNEL_WELCOME);
    cr_frame_free(f);
    snprintf(port, sizeof(port), "127.0.0.1:%u", fx.rtsp_port);
    *rec = cr_tcp_connect(port, 2000);
    assert_true(*rec >= 0);
    return wait_open_stream(tunnel);
}

/* Logs in, connects a recorder, answers its OpenStream with a data connection (TLS, or
 * plaintext when plain) and returns the three. */
static void open_stream(struct cr_link *tunnel, struct cr_link *data, int *rec, int plain)
{
    Camrelay__Frame *f, *os = ask_for_stream(tunnel, rec);
    if (plain) {
        int fd = cr_tcp_connect(fx.ext, 2000);
        assert_true(fd >= 0);
        cr_link_init_plain(data, fd);
        f = send_data_hello(data, fx.serial, os->open_stream->stream_id,
                            os->open_stream->token.data, os->open_stream->token.len);
    } else {
        f = data_hello(data, fx.serial, os->open_stream->stream_id, os->open_stream->token.data,
                       os->open_stream->token.len);
    }
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_DATA_ACCEPTED);
    cr_frame_free(f);
    cr_frame_free(os);
}

/* Sends big bytes camera -> recorder and half as many back, reading both sides as it goes,
 * and checks that every byte arrived intact and in order. */
static void relay_both_ways(struct cr_link *data, int rec, size_t big)
{
    size_t small = big / 2;
    uint8_t *up = cr_xmalloc(big), *up_got = cr_xmalloc(big);
    uint8_t *down = cr_xmalloc(small), *down_got = cr_xmalloc(small);
    cr_random_bytes(up, big);
    cr_random_bytes(down, small);
    size_t up_sent = 0, up_recvd = 0, down_sent = 0, down_recvd = 0;
    uint64_t deadline = cr_now_ms() + 20000;
    while (up_recvd < big || down_recvd < small) {
        assert_true(cr_now_ms() < deadline);
        if (up_sent < big) {
            size_t chunk = big - up_sent < 40000 ? big - up_sent : 40000;
            assert_int_equal(cr_link_write_all(data, up + up_sent, chunk, 5000), 0);
            up_sent += chunk;
        }
        if (down_sent < small) {
            size_t chunk = small - down_sent < 20000 ? small - down_sent : 20000;
            fd_write_all(rec, down + down_sent, chunk);
            down_sent += chunk;
        }
        struct pollfd p[2] = {{.fd = rec, .events = POLLIN}, {.fd = data->fd, .events = POLLIN}};
        poll(p, 2, up_sent < big ? 0 : 100);
        if (up_recvd < big) { /* a read of 0 bytes would look like EOF */
            ssize_t n = read(rec, up_got + up_recvd, big - up_recvd);
            if (n > 0)
                up_recvd += (size_t)n;
            else if (n == 0)
                fail_msg("recorder saw EOF early");
        }
        int m;
        while ((m = cr_link_read_some(data, down_got + down_recvd, small - down_recvd)) > 0)
            down_recvd += (size_t)m;
        assert_true(m == -EAGAIN || down_recvd == small);
    }
    assert_memory_equal(up_got, up, big);
    assert_memory_equal(down_got, down, small);
    free(up);
    free(up_got);
    free(down);
    free(down_got);
}

/* streams_by_path's index of the path named name. */
static unsigned path_index(const char *name)
{
    for (unsigned i = 0; i < RLY_PATHS; i++)
        if (strcmp(rly_path_name(i), name) == 0)
            return i;
    fail_msg("no path named %s", name);
    return 0;
}

/* A TLS stream on the path want (the relay's path for TLS data connections): 2 MiB intact both ways; records split anywhere across TCP reads and many
 * tiny records in one read arrive intact; a record whose ciphertext was changed ends the
 * stream with nothing of it delivered, and the camera's tunnel stays up. */
static void tls_stream_records_intact(const char *want)
{
    unsigned want_index = path_index(want);
    struct cr_link tunnel, data;
    int rec;
    struct rly_counters before, after;
    rly_relay_counters(fx.relay, &before);
    open_stream(&tunnel, &data, &rec, 0);
    relay_both_ways(&data, rec, 2 << 20);
    assert_string_equal(camera_path(), want);
    rly_relay_counters(fx.relay, &after);
    assert_int_equal(after.streams_by_path[want_index] - before.streams_by_path[want_index], 1);

    /* Records split anywhere across TCP reads, and many tiny records in one read: the
     * ciphertext is produced into memory and dripped onto the socket in odd pieces. */
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(data.ssl, mem); /* the SSL now owns mem; the socket keeps being the rbio */
    uint8_t plain[20000];
    size_t plain_len = 0;
    for (int i = 0; i < 300; i++) { /* 300 records of 1..40 bytes */
        size_t n = 1 + (size_t)(i * 7) % 40;
        cr_random_bytes(plain + plain_len, n);
        assert_int_equal(SSL_write(data.ssl, plain + plain_len, (int)n), (int)n);
        plain_len += n;
    }
    cr_random_bytes(plain + plain_len, 9000); /* and one large record */
    assert_int_equal(SSL_write(data.ssl, plain + plain_len, 9000), 9000);
    plain_len += 9000;
    const uint8_t *wire;
    size_t wire_len;
    assert_int_equal(BIO_mem_contents(mem, &wire, &wire_len), 1);
    for (size_t off = 0; off < wire_len;) {
        size_t piece = off < 4000 ? 7 : off < wire_len / 2 ? 4999 : wire_len - off;
        if (piece > wire_len - off)
            piece = wire_len - off;
        fd_write_all(data.fd, wire + off, piece);
        off += piece;
        if (off < 4000 && off % 70 == 0)
            usleep(1000); /* let the relay read the partial record on its own */
    }
    uint8_t *got = cr_xmalloc(plain_len);
    fd_read_exact(rec, got, plain_len);
    assert_memory_equal(got, plain, plain_len);
    free(got);

    /* A record whose ciphertext was changed is refused: the stream ends, nothing of it goes
     * to the recorder, and the camera's tunnel stays up. */
    BIO_reset(mem);
    assert_int_equal(SSL_write(data.ssl, "tampered", 8), 8);
    assert_int_equal(BIO_mem_contents(mem, &wire, &wire_len), 1);
    uint8_t bad[64];
    assert_true(wire_len <= sizeof(bad));
    memcpy(bad, wire, wire_len);
    bad[7] ^= 0x01;
    fd_write_all(data.fd, bad, wire_len);
    struct pollfd p = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    uint8_t b;
    assert_true(read(rec, &b, 1) <= 0);
    close(rec);
    cr_link_close(&data);
    assert_true(wait_online(1, 1000));
    cr_link_close(&tunnel);
    assert_true(wait_online(0, 3000));
}

static void test_relay_tls_stream_opens_records_in_place(void **state)
{
    (void)state;
    tls_stream_records_intact("tls-inplace");
}

/* Runs check on the fixture's relay with kernel TLS (setup_kernel_tls): the camera's
 * direction goes to the kernel and is spliced. Skipped on kernels without the TLS ULP (this
 * machine's); tests/e2e/test_kernel_tls.sh runs it under Debian's kernel, which has it. */
static void through_kernel_tls(void (*check)(void))
{
    if (!rly_ktls_available())
        skip();
    assert_string_equal(rly_relay_data_path(fx.relay), "ktls-splice");
    check();
}

static void ktls_stream_records_intact(void)
{
    tls_stream_records_intact("ktls-splice");
}

static void test_relay_ktls_stream_records_intact(void **state)
{
    (void)state;
    through_kernel_tls(ktls_stream_records_intact);
}

/* The last frame and close_notify in one read: the frame arrives, then a clean half-close,
 * and the recorder's direction works until it closes too, which reaches the camera as
 * close_notify. */
static void tls_last_bytes_and_close_notify(void)
{
    struct cr_link tunnel, data;
    int rec;
    open_stream(&tunnel, &data, &rec, 0);
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(data.ssl, mem);
    static const char last[] = "the last frame, and close_notify right behind it";
    assert_int_equal(SSL_write(data.ssl, last, sizeof(last) - 1), (int)sizeof(last) - 1);
    SSL_shutdown(data.ssl);
    const uint8_t *wire;
    size_t wire_len;
    assert_int_equal(BIO_mem_contents(mem, &wire, &wire_len), 1);
    fd_write_all(data.fd, wire, wire_len); /* one write: the relay reads both records at once */
    uint8_t got[sizeof(last) - 1], b;
    fd_read_exact(rec, got, sizeof(got));
    assert_memory_equal(got, last, sizeof(got));
    struct pollfd p = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    assert_int_equal(read(rec, &b, 1), 0); /* a clean half-close, not a reset */
    /* The other direction still works until the recorder closes too. */
    static const char reply[] = "TEARDOWN";
    fd_write_all(rec, (const uint8_t *)reply, sizeof(reply) - 1);
    SSL_set_fd(data.ssl, data.fd); /* back to the socket for reading */
    uint8_t reply_got[sizeof(reply) - 1];
    link_read_exact(&data, reply_got, sizeof(reply_got));
    assert_memory_equal(reply_got, reply, sizeof(reply_got));
    /* The recorder finishes too: the camera gets close_notify, not a bare TCP close. */
    shutdown(rec, SHUT_WR);
    int n, e = SSL_ERROR_WANT_READ;
    uint64_t deadline = cr_now_ms() + 5000;
    while (e == SSL_ERROR_WANT_READ && cr_now_ms() < deadline) {
        p = (struct pollfd){.fd = data.fd, .events = POLLIN};
        poll(&p, 1, 100);
        n = SSL_read(data.ssl, &b, 1);
        e = n > 0 ? SSL_ERROR_SSL : SSL_get_error(data.ssl, n);
    }
    ERR_clear_error();
    assert_int_equal(e, SSL_ERROR_ZERO_RETURN);
    end_stream(&tunnel, &data, rec);
}

static void test_relay_tls_last_bytes_and_close_notify_in_one_read(void **state)
{
    (void)state;
    tls_last_bytes_and_close_notify();
}

/* Through kTLS close_notify is a control record, which the kernel will not splice: the relay
 * reads it and half-closes. */
static void test_relay_ktls_last_bytes_and_close_notify_in_one_read(void **state)
{
    (void)state;
    through_kernel_tls(tls_last_bytes_and_close_notify);
}

struct upload {
    int fd;
    const uint8_t *buf;
    size_t len;
};

/* The recorder's side of an upload: writes everything, then half-closes at once. */
static void *upload_then_eof(void *arg)
{
    struct upload *u = arg;
    for (size_t off = 0; off < u->len;) {
        ssize_t n = write(u->fd, u->buf + off, u->len - off);
        if (n > 0) {
            off += (size_t)n;
        } else if (n < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = u->fd, .events = POLLOUT};
            poll(&p, 1, 1000);
        } else {
            break; /* the reader's checks report what arrived */
        }
    }
    shutdown(u->fd, SHUT_WR);
    return NULL;
}

/* A recorder uploading in bulk (a firmware image through the camera's web API) that closes
 * right behind its last byte, to a camera that reads slowly: the relay's socket towards the
 * camera is full most of the time, and the camera still gets every byte, then close_notify.
 * tests/e2e/test_kernel_tls.sh also runs it with small TCP send buffers, where a kernel TX
 * spliced into stalled for good. */
static void upload_reaches_slow_camera(void)
{
    struct cr_link tunnel, data;
    int rec;
    open_stream(&tunnel, &data, &rec, 0);
    size_t big = 300000, have = 0;
    uint8_t *up = cr_xmalloc(big), *got = cr_xmalloc(big);
    cr_random_bytes(up, big);
    struct upload u = {.fd = rec, .buf = up, .len = big};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, upload_then_eof, &u), 0);
    usleep(200000); /* the camera is busy: the relay fills its socket */
    int e = SSL_ERROR_WANT_READ;
    uint64_t deadline = cr_now_ms() + 20000;
    while (e == SSL_ERROR_WANT_READ && cr_now_ms() < deadline) {
        int n = SSL_read(data.ssl, got + have, (int)(big - have < 4096 ? big - have : 4096));
        if (n > 0) {
            have += (size_t)n;
            usleep(300);
            if (have < big)
                continue;
            n = SSL_read(data.ssl, &(uint8_t){0}, 1); /* what comes after: close_notify */
        }
        e = n > 0 ? SSL_ERROR_SSL : SSL_get_error(data.ssl, n);
        if (e == SSL_ERROR_WANT_READ) {
            struct pollfd p = {.fd = data.fd, .events = POLLIN};
            poll(&p, 1, 100);
        }
    }
    ERR_clear_error();
    pthread_join(t, NULL);
    assert_int_equal(have, big);
    assert_memory_equal(got, up, big);
    assert_int_equal(e, SSL_ERROR_ZERO_RETURN);
    free(up);
    free(got);
    end_stream(&tunnel, &data, rec);
}

static void test_relay_tls_upload_reaches_slow_camera(void **state)
{
    (void)state;
    upload_reaches_slow_camera();
}

static void test_relay_ktls_upload_reaches_slow_camera(void **state)
{
    (void)state;
    through_kernel_tls(upload_reaches_slow_camera);
}

/* A camera that stops half way through a TLS record does not hold the relay's buffer for
 * ever: the data connection and its recorder are closed once three keepalive intervals have
 * passed without the rest of the record (the fixture's keepalive is 300 ms). */
static void test_relay_tls_partial_record_times_out(void **state)
{
    struct cr_link tunnel, data;
    int rec;
    (void)state;
    open_stream(&tunnel, &data, &rec, 0);
    static const char first[] = "a whole record first: the stream is on the in-place path";
    assert_int_equal(cr_link_write_all(&data, first, sizeof(first) - 1, 2000), 0);
    uint8_t got[sizeof(first) - 1];
    fd_read_exact(rec, got, sizeof(got));
    assert_memory_equal(got, first, sizeof(got));
    assert_string_equal(camera_path(), "tls-inplace");

    /* A real record of 4,000 bytes, cut after 1,000: the rest never comes. */
    BIO *mem = BIO_new(BIO_s_mem());
    SSL_set0_wbio(data.ssl, mem);
    static uint8_t frame[4000];
    cr_random_bytes(frame, sizeof(frame));
    assert_int_equal(SSL_write(data.ssl, frame, sizeof(frame)), (int)sizeof(frame));
    const uint8_t *wire;
    size_t wire_len;
    assert_int_equal(BIO_mem_contents(mem, &wire, &wire_len), 1);
    assert_true(wire_len > 1000);
    uint64_t t0 = cr_now_ms();
    fd_write_all(data.fd, wire, 1000);

    /* The recorder is closed (the stream ends) within the deadline plus a tick or two. */
    struct pollfd p = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    uint8_t b;
    assert_true(read(rec, &b, 1) <= 0);
    uint64_t took = cr_now_ms() - t0;
    assert_true(took >= 900);  /* not before 3 x 300 ms */
    assert_true(took < 3000);
    p.fd = data.fd;
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_true(read(data.fd, &b, 1) <= 0);
    close(rec);
    cr_link_close(&data);
    cr_link_close(&tunnel);
    assert_true(wait_online(0, 3000));
}

/* An agent that sends stream bytes right behind its DataHello, before DataAccepted: the
 * records behind the hello are already in BoringSSL's buffers, so the stream stays on the
 * BoringSSL path (tls-bio, the fallback), and nothing is lost or reordered. */
static void test_relay_bytes_behind_the_hello_arrive_intact(void **state)
{
    struct cr_link tunnel, data;
    char err[256];
    int rec;
    (void)state;
    Camrelay__Frame *os = ask_for_stream(&tunnel, &rec);
    assert_int_equal(cr_link_connect_tls(&data, fx.client, fx.ext, 5000, err, sizeof(err)), 0);
    /* Hello and 64 KiB of stream in one go, into memory, then onto the socket at once. */
    BIO *mem = BIO_new(BIO_s_mem());
    BIO *sock = SSL_get_wbio(data.ssl);
    BIO_up_ref(sock);
    SSL_set0_wbio(data.ssl, mem);
    Camrelay__Frame hf = CAMRELAY__FRAME__INIT;
    Camrelay__DataHello h = CAMRELAY__DATA_HELLO__INIT;
    h.serial = SERIAL;
    h.stream_id = os->open_stream->stream_id;
    h.token = os->open_stream->token;
    hf.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    hf.data_hello = &h;
    uint8_t frame[256];
    int n = cr_frame_encode(&hf, frame, sizeof(frame));
    assert_true(n > 0);
    assert_int_equal(SSL_write(data.ssl, frame, n), n);
    size_t big = 64 * 1024;
    uint8_t *payload = cr_xmalloc(big), *got = cr_xmalloc(big);
    cr_random_bytes(payload, big);
    assert_int_equal(SSL_write(data.ssl, payload, (int)big), (int)big);
    const uint8_t *wire;
    size_t wire_len;
    assert_int_equal(BIO_mem_contents(mem, &wire, &wire_len), 1);
    fd_write_all(data.fd, wire, wire_len);
    SSL_set0_wbio(data.ssl, sock); /* back to the socket */
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&data, 5000, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_DATA_ACCEPTED);
    cr_frame_free(in);
    cr_frame_free(os);
    fd_read_exact(rec, got, big);
    assert_memory_equal(got, payload, big);
    /* The relay's first read held the hello and ciphertext behind it: keys cannot be taken
     * over with records still in BoringSSL's read buffer. */
    assert_string_equal(camera_path(), "tls-bio");
    relay_both_ways(&data, rec, 256 * 1024); /* and the stream goes on, both ways */
    free(payload);
    free(got);
    end_stream(&tunnel, &data, rec);
}

static void test_relay_plain_data_connection_is_spliced(void **state)
{
    struct cr_link tunnel, data;
    int rec;
    (void)state;
    open_stream(&tunnel, &data, &rec, 1);
    relay_both_ways(&data, rec, 3 << 20);
    assert_string_equal(camera_path(), "plain");

    /* Half-close both ways, in turn, with bytes after the first. */
    shutdown(rec, SHUT_WR);
    uint8_t b;
    struct pollfd p = {.fd = data.fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    assert_int_equal(read(data.fd, &b, 1), 0);
    static const char tail[] = "after the recorder's half-close";
    assert_int_equal(cr_link_write_all(&data, tail, sizeof(tail) - 1, 2000), 0);
    shutdown(data.fd, SHUT_WR);
    uint8_t tail_got[sizeof(tail) - 1];
    fd_read_exact(rec, tail_got, sizeof(tail_got));
    assert_memory_equal(tail_got, tail, sizeof(tail_got));
    p.fd = rec;
    assert_int_equal(poll(&p, 1, 3000), 1);
    assert_int_equal(read(rec, &b, 1), 0);
    end_stream(&tunnel, &data, rec);
}

/* Sends n camera frames of len bytes one at a time, each read whole by the recorder before
 * the next is written, and checks them byte for byte. */
static void frames_one_by_one(struct cr_link *data, int rec, unsigned n, size_t len)
{
    uint8_t *frame = cr_xmalloc(len), *got = cr_xmalloc(len);
    for (unsigned i = 0; i < n; i++) {
        cr_random_bytes(frame, len);
        assert_int_equal(cr_link_write_all(data, frame, len, 2000), 0);
        fd_read_exact(rec, got, len);
        assert_memory_equal(got, frame, len);
    }
    free(frame);
    free(got);
}

/* A plaintext stream copies camera frames through the receive ring (one read and one send
 * each), splices bursts bigger than a ring buffer, and goes back to copying after them. */
static void test_relay_plain_frames_copied_bursts_spliced(void **state)
{
    struct cr_link tunnel, data;
    int rec;
    struct rly_counters c0, c1, c2, c3;
    (void)state;
    open_stream(&tunnel, &data, &rec, 1);
    rly_relay_counters(fx.relay, &c0);

    frames_one_by_one(&data, rec, 30, 7812); /* 500 kbit/s at 8 fps */
    rly_relay_counters(fx.relay, &c1);
    assert_true(c1.plain_reads_copied - c0.plain_reads_copied >= 30);
    assert_int_equal(c1.plain_reads_spliced, c0.plain_reads_spliced);

    relay_both_ways(&data, rec, 2 << 20); /* 40 KB writes: bursts over a ring buffer */
    rly_relay_counters(fx.relay, &c2);
    assert_true(c2.plain_reads_spliced > c1.plain_reads_spliced);

    frames_one_by_one(&data, rec, 10, 7812);
    rly_relay_counters(fx.relay, &c3);
    assert_true(c3.plain_reads_copied - c2.plain_reads_copied >= 10);
    assert_string_equal(camera_path(), "plain");

    /* The camera's half-close reaches the recorder after its last copied frame. */
    shutdown(data.fd, SHUT_WR);
    uint8_t b;
    struct pollfd p = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    assert_int_equal(read(rec, &b, 1), 0);
    end_stream(&tunnel, &data, rec);
}

static void test_relay_plain_tunnel_refused(void **state)
{
    struct cr_link l;
    (void)state;
    int fd = cr_tcp_connect(fx.ext, 2000);
    assert_true(fd >= 0);
    cr_link_init_plain(&l, fd);
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelHello h = CAMRELAY__TUNNEL_HELLO__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    as.identity = SERIAL;
    h.auth = &as;
    f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
    f.tunnel_hello = &h;
    assert_int_equal(cr_link_write(&l, &f, 2000), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&l, 3000, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    cr_frame_free(in);
    cr_link_close(&l);
    assert_true(wait_online(0, 1000));
}

static void test_relay_plain_data_refused_unless_allowed(void **state)
{
    (void)state;
    struct rly_config cfg = {.relay_name = "relay-strict", .listen_external = "127.0.0.1:0",
                             .tls = fx.server, .max_conns = 64, .workers = 1};
    struct rly_relay *strict;
    assert_int_equal(rly_relay_start(&cfg, &strict), 0);
    char ext[64];
    snprintf(ext, sizeof(ext), "127.0.0.1:%u", rly_relay_external_port(strict));
    int fd = cr_tcp_connect(ext, 2000);
    assert_true(fd >= 0);
    struct cr_link l;
    cr_link_init_plain(&l, fd);
    uint8_t token[32] = {0};
    Camrelay__Frame *in = send_data_hello(&l, SERIAL, 1, token, sizeof(token));
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    assert_non_null(strstr(in->refusal->message, "plaintext"));
    cr_frame_free(in);
    cr_link_close(&l);

    /* Neither TLS nor a frame: closed without an answer. */
    fd = cr_tcp_connect(ext, 2000);
    assert_true(fd >= 0);
    fd_write_all(fd, (const uint8_t *)"GET / HTTP/1.0\r\n\r\n", 18);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    uint8_t b;
    assert_true(read(fd, &b, 1) <= 0);
    close(fd);
    struct rly_counters cnt;
    rly_relay_counters(strict, &cnt);
    assert_int_equal(cnt.data_conns_refused, 1);
    rly_relay_stop(strict);
}

/* Open descriptors of this process (entries of /proc/self/fd), or -1 when the directory
 * cannot be opened (no descriptor left for it). */
static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d))
            n++;
    closedir(d);
    return n;
}

/* Waits until at most want descriptors are open; returns how many are. */
static int wait_fds_at_most(int want, int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    int n;
    while ((n = count_fds()) > want && cr_now_ms() < deadline)
        usleep(1000);
    return n;
}

/* A recorder connecting to an offline camera's endpoint port is accepted, then closed. */
static void assert_offline_endpoint_accepts(uint16_t port_no)
{
    char port[32];
    uint8_t b;
    snprintf(port, sizeof(port), "127.0.0.1:%u", port_no);
    int rec = cr_tcp_connect(port, 2000);
    assert_true(rec >= 0);
    struct pollfd p = {.fd = rec, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 3000), 1);
    assert_true(read(rec, &b, 1) <= 0);
    close(rec);
}

/* What the low-limit tests change, restored by their teardown on every path (a failed
 * assertion included): the descriptor limit and the fixture they point elsewhere. The hard
 * limit, once lowered, cannot be raised again: a test that lowers it runs last. */
struct low_limit {
    struct rlimit saved_limit;
    struct fixture saved_fx;
    rlim_t limit;      /* the lowered soft limit (and hard, with lower_hard) */
    int lower_hard;
    int fds_started;   /* descriptors open once the low-limit relay runs, before any camera */
    char serial[RLY_NAME_MAX];
};

/* Lowers RLIMIT_NOFILE to 64 above the descriptors open (the soft limit, or both with
 * lower_hard), then starts a relay of its own under it: a worker sizes its registered-file
 * table when it starts (relay/worker.c: register_files, which looks past the soft limit up to
 * the hard one), so the fixture's relay, started under the usual limit, would not show what a
 * relay started under a low one does. Its pool has 4 connections per descriptor allowed. The
 * helpers use this relay while the test runs. */
static int start_low_limit(void **state, int lower_hard, unsigned workers, uint32_t keepalive_ms)
{
    static struct low_limit ll;
    memset(&ll, 0, sizeof(ll));
    int open = count_fds();
    if (open < 0 || getrlimit(RLIMIT_NOFILE, &ll.saved_limit) < 0)
        return -1;
    ll.limit = (rlim_t)open + 64;
    if (ll.saved_limit.rlim_cur < ll.limit) /* already lower: keep it */
        ll.limit = ll.saved_limit.rlim_cur;
    ll.lower_hard = lower_hard;
    ll.saved_fx = fx;
    struct rlimit low = {.rlim_cur = ll.limit,
                         .rlim_max = lower_hard ? ll.limit : ll.saved_limit.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &low) < 0)
        return -1;
    struct rly_config cfg = {
        .relay_name = "relay-low-limit",
        .listen_external = "127.0.0.1:0",
        .tls = fx.server,
        .keepalive_ms = keepalive_ms,
        .max_conns = (uint32_t)ll.limit * 4,
        .workers = workers,
        .no_kernel_tls = 1, /* the descriptor counts leave out kTLS streams' splice pipes */
    };
    if (rly_relay_start(&cfg, &fx.relay) < 0) {
        fx = ll.saved_fx;
        if (!lower_hard)
            setrlimit(RLIMIT_NOFILE, &ll.saved_limit);
        return -1;
    }
    rly_relay_set_ready(fx.relay);
    snprintf(fx.ext, sizeof(fx.ext), "127.0.0.1:%u", rly_relay_external_port(fx.relay));
    fx.serial = NULL;
    fx.rtsp_port = 0;
    /* A worker makes its ring in its own thread: its first completions (at the latest its
     * first tick) say the ring and its file table exist, and with them all its descriptors. */
    uint64_t deadline = cr_now_ms() + 2000;
    for (unsigned i = 0; i < rly_relay_worker_count(fx.relay); i++) {
        struct rly_worker_stats ws;
        rly_relay_worker_stats(fx.relay, i, &ws);
        while (ws.completions == 0 && cr_now_ms() < deadline) {
            usleep(1000);
            rly_relay_worker_stats(fx.relay, i, &ws);
        }
    }
    ll.fds_started = count_fds();
    *state = &ll;
    return 0;
}

/* The soft limit only, two workers: the pool has room for every endpoint on either worker,
 * and the table is as large as the pool (the hard limit allows it). */
static int setup_low_limit(void **state)
{
    return start_low_limit(state, 0, 2, 300);
}

/* Soft and hard limit, one worker: the kernel bounds the table by the hard limit, so the
 * table has a quarter of the pool's slots. Keepalives far apart: the test's tunnel, which
 * answers no ping, must outlive the cameras registered after it. */
static int setup_small_table(void **state)
{
    return start_low_limit(state, 1, 1, 60000);
}

static int teardown_low_limit(void **state)
{
    struct low_limit *ll = *state;
    rly_relay_stop(fx.relay);
    fx = ll->saved_fx;
    if (ll->lower_hard)
        return 0; /* the soft limit is the hard one already */
    return setrlimit(RLIMIT_NOFILE, &ll->saved_limit) < 0 ? -1 : 0;
}

/* Registers camera i of the low-limit relay with n endpoints and waits until the worker has
 * it; with removed, removes that camera first, back to back (a control plane re-registering a
 * camera). The last endpoint of the camera named last becomes the helpers' (fx.serial,
 * fx.rtsp_port). Then checks that the process holds want descriptors: endpoint listeners in
 * the ring's table hold none. */
static void replace_low_limit_camera(struct low_limit *ll, const char *removed, unsigned i,
                                     unsigned n, int want)
{
    static const char *const services[2] = {"rtsp", "http"};
    struct rly_camera_spec spec = {.n_endpoints = n, .iterations = CR_AUTH_ITERATIONS_MIN};
    cr_auth_make_verifier(&fx.secret, spec.iterations, spec.salt, spec.stored_key);
    snprintf(spec.serial, sizeof(spec.serial), "ACCC8E1%05u", i);
    for (unsigned k = 0; k < n; k++) {
        cr_strlcpy(spec.endpoints[k].service, services[k], sizeof(spec.endpoints[k].service));
        int fd = cr_tcp_listen("127.0.0.1:0", 0, 16);
        if (fd < 0)
            fail_msg("camera %u: no socket for its %s endpoint (%s) under a limit of %lu "
                     "descriptors", i, services[k], strerror(-fd), (unsigned long)ll->limit);
        spec.endpoints[k].listen_fd = fd;
        spec.endpoints[k].port = cr_sock_port(fd);
    }
    cr_strlcpy(ll->serial, spec.serial, sizeof(ll->serial));
    fx.serial = ll->serial;
    fx.rtsp_port = spec.endpoints[n - 1].port;
    if (removed)
        assert_int_equal(rly_relay_camera_del(fx.relay, removed), 0);
    assert_int_equal(rly_relay_camera_put(fx.relay, &spec), 0);
    struct rly_camera_status st;
    uint64_t deadline = cr_now_ms() + 2000;
    while (rly_relay_camera_status(fx.relay, spec.serial, &st) != 0) {
        assert_true(cr_now_ms() < deadline);
        usleep(200);
    }
    /* The worker closes the listeners' descriptors right after adding the camera (the status
     * shows it a moment before). */
    int open = wait_fds_at_most(want, 2000);
    if (open != want)
        fail_msg("after camera %u (limit %lu): %d descriptors open, %d expected", i,
                 (unsigned long)ll->limit, open, want);
}

static void put_low_limit_camera(struct low_limit *ll, unsigned i, unsigned n, int want)
{
    replace_low_limit_camera(ll, NULL, i, n, want);
}

/* A relay whose descriptor limit is smaller than its cameras' endpoints serves every camera:
 * an endpoint listener keeps only its registered file, so registering cameras costs no
 * descriptor. Three times the limit in endpoints are registered one camera at a time; then
 * the last camera streams through its second endpoint. */
static void test_relay_endpoints_hold_no_descriptor(void **state)
{
    struct low_limit *ll = *state;
    unsigned n_cameras = (unsigned)ll->limit * 3 / 2;
    for (unsigned i = 0; i < n_cameras; i++)
        put_low_limit_camera(ll, i, 2, ll->fds_started);

    struct cr_link tunnel, data;
    int rec;
    open_stream(&tunnel, &data, &rec, 0);
    assert_true(wait_online(1, 2000));
    relay_both_ways(&data, rec, 1 << 20);
    end_stream(&tunnel, &data, rec);
}

/* When the kernel allows fewer registered files than the relay has connection slots (a low
 * hard limit), the table goes to listeners first: a listener that finds it full takes the
 * slot of a connection, which goes on through its descriptor. Here the table (the hard limit,
 * L slots) is filled with the external listener, L - 4 cameras' endpoints and a stream's
 * three connections; two more cameras must still cost no descriptor, the stream whose
 * connections lost their slots must carry 1 MiB intact both ways, and a new camera's
 * endpoint must still take recorders. Then, with the table full of listeners, a camera
 * removed and another put at once must cost no descriptor either. */
static void test_relay_listeners_take_slots_from_connections(void **state)
{
    struct low_limit *ll = *state;
    unsigned table = (unsigned)ll->limit, i = 0;
    for (; i < table - 4; i++)
        put_low_limit_camera(ll, i, 1, ll->fds_started);

    struct cr_link tunnel, data;
    int rec;
    open_stream(&tunnel, &data, &rec, 0); /* the last free slots; 3 descriptors each side */
    assert_true(wait_online(1, 2000));
    struct cr_link *streaming = &data;
    char serial[RLY_NAME_MAX];
    cr_strlcpy(serial, ll->serial, sizeof(serial));
    for (unsigned k = 0; k < 2; k++, i++)
        put_low_limit_camera(ll, i, 1, ll->fds_started + 6);
    struct rly_camera_status st;
    assert_int_equal(rly_relay_camera_status(fx.relay, serial, &st), 0);
    assert_int_equal(st.online, 1); /* the stream's three connections are all still there */

    relay_both_ways(streaming, rec, 1 << 20);

    assert_offline_endpoint_accepts(fx.rtsp_port); /* the last camera's */

    fx.serial = serial; /* end_stream waits for the streaming camera */
    end_stream(&tunnel, &data, rec);

    /* One more camera fills the table with listeners. A camera removed and another put right
     * after it must still cost no descriptor: the removed camera's listener gives its slot back
     * at once, not when its accept's cancellation has completed (by then the put has been
     * handled, and its listener would keep its descriptor for good). */
    put_low_limit_camera(ll, i++, 1, ll->fds_started);
    char removed[RLY_NAME_MAX];
    snprintf(removed, sizeof(removed), "ACCC8E1%05u", 0u);
    replace_low_limit_camera(ll, removed, i++, 1, ll->fds_started);

    /* With only listeners in the table, one more camera's listener has no slot to take and
     * keeps its descriptor; once another camera is removed, it moves into the freed slot and
     * gives the descriptor up, and its endpoint still takes recorders. */
    put_low_limit_camera(ll, i++, 1, ll->fds_started + 1);
    snprintf(removed, sizeof(removed), "ACCC8E1%05u", 1u);
    assert_int_equal(rly_relay_camera_del(fx.relay, removed), 0);
    int open = wait_fds_at_most(ll->fds_started, 2000);
    if (open != ll->fds_started)
        fail_msg("after a camera was removed from a table full of listeners: %d descriptors "
                 "open, %d expected", open, ll->fds_started);
    assert_offline_endpoint_accepts(fx.rtsp_port);
}

static void test_relay_recorder_for_offline_camera_closed(void **state)
{
    (void)state;
    assert_true(wait_online(0, 3000));
    assert_offline_endpoint_accepts(fx.rtsp_port);

    /* Over this file's dozens of connections on two workers, some landed on the worker that
     * does not own the camera and were handed over; all the tests above passed through it. */
    struct rly_counters cnt;
    rly_relay_counters(fx.relay, &cnt);
    assert_true(cnt.handovers > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relay_tunnel_login_and_stream_bytes_intact),
        cmocka_unit_test(test_relay_wrong_password_refused_and_relay_keeps_serving),
        cmocka_unit_test(test_relay_wrong_stream_token_refused),
        cmocka_unit_test(test_relay_oversized_frame_closes_link),
        cmocka_unit_test(test_relay_dead_tunnel_noticed_and_replacement),
        cmocka_unit_test(test_relay_tls_stream_opens_records_in_place),
        cmocka_unit_test(test_relay_tls_last_bytes_and_close_notify_in_one_read),
        cmocka_unit_test(test_relay_tls_partial_record_times_out),
        cmocka_unit_test(test_relay_tls_upload_reaches_slow_camera),
        cmocka_unit_test(test_relay_bytes_behind_the_hello_arrive_intact),
        cmocka_unit_test(test_relay_plain_data_connection_is_spliced),
        cmocka_unit_test(test_relay_plain_frames_copied_bursts_spliced),
        cmocka_unit_test(test_relay_plain_tunnel_refused),
        cmocka_unit_test(test_relay_plain_data_refused_unless_allowed),
        cmocka_unit_test_setup_teardown(test_relay_endpoints_hold_no_descriptor, setup_low_limit,
                                        teardown_low_limit),
        cmocka_unit_test(test_relay_recorder_for_offline_camera_closed),
        /* After it: their relay replaces the fixture's, whose counters it checks. */
        cmocka_unit_test_setup_teardown(test_relay_ktls_stream_records_intact,
                                        setup_kernel_tls, teardown_kernel_tls),
        cmocka_unit_test_setup_teardown(test_relay_ktls_last_bytes_and_close_notify_in_one_read,
                                        setup_kernel_tls, teardown_kernel_tls),
        cmocka_unit_test_setup_teardown(test_relay_ktls_upload_reaches_slow_camera,
                                        setup_kernel_tls, teardown_kernel_tls),
        /* Last: it lowers the hard descriptor limit, which cannot be raised again. */
        cmocka_unit_test_setup_teardown(test_relay_listeners_take_slots_from_connections,
                                        setup_small_table, teardown_low_limit),
    };
    /* TEST_FILTER=PATTERN runs only the matching tests ('*' and '?' wildcards): the kTLS ones
     * under small send buffers in tests/e2e/test_kernel_tls.sh, where the fixture's 300 ms
     * keepalive is too short for the emulated machine to move 2 MiB. */
    if (getenv("TEST_FILTER"))
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, setup, teardown);
}
