/* Shared by the tests that run the agent against a fake relay (test_agent.c,
 * test_agent_plain.c): the group fixture with its throw-away certificates, the camera's echo
 * service and the relay's side of a few frames. Include after <cmocka.h>. Every file that
 * includes it gets its own copy of the fixture's state below. */
#ifndef TESTS_AGENT_AGENT_FIXTURE_H
#define TESTS_AGENT_AGENT_FIXTURE_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/link.h"
#include "common/net.h"
#include "tests/support/support.h"

/* The group's temp dir and the certificates made there (have_certs: they could be made). */
static char tmpdir[64];
static int have_certs;
static char ca_pem[128], srv_pem[128], srv_key[128];

static inline int group_setup(void **state)
{
    (void)state;
    if (test_tmpdir(tmpdir, sizeof(tmpdir)) < 0)
        return -1;
    snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", tmpdir);
    snprintf(srv_pem, sizeof(srv_pem), "%s/server.pem", tmpdir);
    snprintf(srv_key, sizeof(srv_key), "%s/server.key", tmpdir);
    have_certs = access("/usr/bin/openssl", X_OK) == 0 &&
                 test_certs_make(tmpdir, "IP:127.0.0.1") == 0;
    if (!have_certs)
        print_message("openssl CLI missing or failed: TLS tests will be skipped "
                      "(apt-get install openssl)\n");
    return 0;
}

static inline int group_teardown(void **state)
{
    (void)state;
    test_rmtree(tmpdir);
    return 0;
}

/* Tests that need TLS certificates say "skipped" (cmocka skip) when none could be made. */
static inline void skip_without_certs(void)
{
    if (!have_certs) {
        print_message("skipped: no openssl CLI to make test certificates\n");
        skip();
    }
}

/* The camera's local service: echoes until EOF, then says "bye\n" and closes. */
struct echo {
    int lfd;
    pthread_t thread;
    uint16_t port;
};

static inline void *echo_main(void *arg)
{
    struct echo *e = arg;
    struct pollfd p = {.fd = e->lfd, .events = POLLIN};
    char buf[4096];
    if (poll(&p, 1, 20000) != 1)
        return NULL;
    int fd = accept4(e->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return NULL;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            break;
        if (write(fd, buf, (size_t)n) != n)
            break;
    }
    ssize_t w = write(fd, "bye\n", 4);
    (void)w;
    close(fd);
    return NULL;
}

static inline void echo_start(struct echo *e)
{
    e->lfd = cr_tcp_listen("127.0.0.1:0", 0, 4);
    assert_true(e->lfd >= 0);
    cr_set_nonblock(e->lfd, 0);
    e->port = cr_sock_port(e->lfd);
    assert_int_equal(pthread_create(&e->thread, NULL, echo_main, e), 0);
}

/* The next frame on l, which must be of body_case. */
static inline Camrelay__Frame *expect_frame(struct cr_link *l, int body_case)
{
    Camrelay__Frame *f = NULL;
    int rc = cr_link_read(l, 10000, &f);
    if (rc < 0)
        fail_msg("expected a frame (%d), got error %s", body_case, strerror(-rc));
    if ((int)f->body_case != body_case)
        fail_msg("expected frame %d, got %s", body_case, cr_frame_body_name(f));
    return f;
}

static inline void send_ping(struct cr_link *l, uint64_t seq)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ping p = CAMRELAY__PING__INIT;
    p.seq = seq;
    f.body_case = CAMRELAY__FRAME__BODY_PING;
    f.ping = &p;
    assert_int_equal(cr_link_write(l, &f, 2000), 0);
}

static inline void send_open_stream(struct cr_link *l, uint64_t id, const char *svc,
                                    uint8_t token[32])
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__OpenStream os = CAMRELAY__OPEN_STREAM__INIT;
    os.stream_id = id;
    os.service = (char *)svc;
    os.token.data = token;
    os.token.len = 32;
    f.body_case = CAMRELAY__FRAME__BODY_OPEN_STREAM;
    f.open_stream = &os;
    assert_int_equal(cr_link_write(l, &f, 2000), 0);
}

#endif
