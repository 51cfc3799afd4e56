/* Tests common/net.c (addresses, TCP and Unix sockets), common/link.c over plain sockets and
 * TLS (framing, deadlines, oversized frames, peer close, certificate checks) and
 * cr_read_small_file (common/util.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/link.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "tests/support/support.h"

static char tmpdir[128];

/* ---- cr_addr_parse / cr_addr_format ---- */

static void test_net_addr_parse_good(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int family;
        uint16_t port;
        const char *ip;
    } cases[] = {
        {"127.0.0.1:80", AF_INET, 80, "127.0.0.1"},
        {"10.1.2.3:65535", AF_INET, 65535, "10.1.2.3"},
        {"0.0.0.0:0", AF_INET, 0, "0.0.0.0"},
        {":8080", AF_INET, 8080, "0.0.0.0"},
        {"*:1", AF_INET, 1, "0.0.0.0"},
        {"[::1]:443", AF_INET6, 443, "::1"},
        {"[::]:7443", AF_INET6, 7443, "::"},
        {"[2001:db8::1]:1", AF_INET6, 1, "2001:db8::1"},
        {"[::ffff:127.0.0.1]:9", AF_INET6, 9, "::ffff:127.0.0.1"},
        {"127.0.0.1:00080", AF_INET, 80, "127.0.0.1"},
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(cases); i++) {
        struct sockaddr_storage ss;
        socklen_t len = 0;
        char ip[INET6_ADDRSTRLEN];
        int rc = cr_addr_parse(cases[i].in, &ss, &len);
        if (rc != 0)
            fail_msg("\"%s\": %d", cases[i].in, rc);
        assert_int_equal(ss.ss_family, cases[i].family);
        if (cases[i].family == AF_INET) {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            assert_int_equal(len, sizeof(*in));
            assert_int_equal(ntohs(in->sin_port), cases[i].port);
            inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        } else {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            assert_int_equal(len, sizeof(*in6));
            assert_int_equal(ntohs(in6->sin6_port), cases[i].port);
            inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        }
        assert_string_equal(ip, cases[i].ip);
    }

    /* A host name resolves (to a loopback address of either family). */
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(cr_addr_parse("localhost:22", &ss, &len), 0);
    if (ss.ss_family == AF_INET)
        assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 22);
    else
        assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 22);
}

static void test_net_addr_parse_bad(void **state)
{
    (void)state;
    char long_host[400], long_v6[400];
    memset(long_host, 'a', 300);
    strcpy(long_host + 300, ":80");
    long_v6[0] = '[';
    memset(long_v6 + 1, '1', 300);
    strcpy(long_v6 + 301, "]:80");
    const char *bad[] = {
        "",                    /* empty */
        "127.0.0.1",           /* missing port */
        "127.0.0.1:",          /* empty port */
        "127.0.0.1:65536",     /* out of range */
        "127.0.0.1:-1",
        "127.0.0.1:99999999999999999999",
        "127.0.0.1:80x",
        "127.0.0.1:x",
        "127.0.0.1:0x50",
        "[::1]",               /* brackets, no port */
        "[::1]:",
        "[::1]80",             /* no colon after the bracket */
        "[::1",                /* unclosed bracket */
        "[::1]:65536",
        "[::1]:-5",
        long_host,             /* longer than the host buffer */
        long_v6,
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        struct sockaddr_storage ss;
        socklen_t len;
        int rc = cr_addr_parse(bad[i], &ss, &len);
        if (rc != -EINVAL)
            fail_msg("\"%.40s\": %d, want -EINVAL", bad[i], rc);
    }
    struct sockaddr_storage ss;
    socklen_t len;
    assert_int_equal(cr_addr_parse(NULL, &ss, &len), -EINVAL);
    /* Syntactically fine but unresolvable (.invalid never resolves, RFC 6761). */
    assert_int_equal(cr_addr_parse("camrelay-test.invalid:80", &ss, &len), -EHOSTUNREACH);
}

static void test_net_addr_format(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[CR_ADDR_STRLEN];

    assert_int_equal(cr_addr_parse("192.0.2.1:7443", &ss, &len), 0);
    assert_int_equal(cr_addr_format((struct sockaddr *)&ss, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "192.0.2.1:7443");
    assert_int_equal(cr_addr_format((struct sockaddr *)&ss, buf, strlen("192.0.2.1:7443") + 1), 0);
    assert_int_equal(cr_addr_format((struct sockaddr *)&ss, buf, strlen("192.0.2.1:7443")),
                     -ENOSPC);

    assert_int_equal(cr_addr_parse("[2001:db8::7]:1", &ss, &len), 0);
    assert_int_equal(cr_addr_format((struct sockaddr *)&ss, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "[2001:db8::7]:1");
    assert_int_equal(cr_addr_format((struct sockaddr *)&ss, buf, 4), -ENOSPC);

    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_int_equal(cr_addr_format((struct sockaddr *)&un, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "unix");
}

/* ---- TCP and Unix sockets ---- */

static int accept_within(int lfd, int timeout_ms)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        return -ETIMEDOUT;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void test_net_tcp_listen_connect(void **state)
{
    (void)state;
    int lfd = cr_tcp_listen("127.0.0.1:0", 0, 16);
    assert_true(lfd >= 0);
    assert_true(fcntl(lfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    uint16_t port = cr_sock_port(lfd);
    assert_true(port > 0);

    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    int cfd = cr_tcp_connect(addr, 2000);
    assert_true(cfd >= 0);
    assert_true(fcntl(cfd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(cfd, F_GETFD) & FD_CLOEXEC);
    int nodelay = 0;
    socklen_t ol = sizeof(nodelay);
    assert_int_equal(getsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &ol), 0);
    assert_true(nodelay);

    int sfd = accept_within(lfd, 2000);
    assert_true(sfd >= 0);
    assert_int_equal(write(cfd, "hello", 5), 5);
    char buf[8] = {0};
    struct pollfd p = {.fd = sfd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_int_equal(read(sfd, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);

    /* The accepted side's peer is the connecting socket's local port. */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    assert_int_equal(getpeername(sfd, (struct sockaddr *)&ss, &sl), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), cr_sock_port(cfd));
    close(sfd);
    close(cfd);
    close(lfd);
}

static void test_net_tcp_listen_ipv6(void **state)
{
    (void)state;
    int lfd = cr_tcp_listen("[::1]:0", 0, 4);
    if (lfd == -EADDRNOTAVAIL || lfd == -EAFNOSUPPORT) {
        print_message("skipped: no IPv6 loopback on this machine (%s)\n", strerror(-lfd));
        skip();
    }
    assert_true(lfd >= 0);
    char addr[48];
    snprintf(addr, sizeof(addr), "[::1]:%u", cr_sock_port(lfd));
    int cfd = cr_tcp_connect(addr, 2000);
    assert_true(cfd >= 0);
    int sfd = accept_within(lfd, 2000);
    assert_true(sfd >= 0);
    close(sfd);
    close(cfd);
    close(lfd);
}

static void test_net_tcp_connect_refused(void **state)
{
    (void)state;
    int lfd = cr_tcp_listen("127.0.0.1:0", 0, 1);
    assert_true(lfd >= 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", cr_sock_port(lfd));
    close(lfd); /* nobody listens there now */
    assert_int_equal(cr_tcp_connect(addr, 2000), -ECONNREFUSED);
    assert_int_equal(cr_tcp_connect("127.0.0.1", 2000), -EINVAL);
    assert_int_equal(cr_tcp_connect("127.0.0.1:70000", 2000), -EINVAL);
}

static void test_net_tcp_listen_errors(void **state)
{
    (void)state;
    assert_int_equal(cr_tcp_listen("nope", 0, 1), -EINVAL);
    assert_int_equal(cr_tcp_listen("127.0.0.1:65536", 0, 1), -EINVAL);

    int a = cr_tcp_listen("127.0.0.1:0", 0, 1);
    assert_true(a >= 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", cr_sock_port(a));
    assert_int_equal(cr_tcp_listen(addr, 0, 1), -EADDRINUSE);
    close(a);

    /* SO_REUSEPORT: several workers may each own a listener on one port. */
    a = cr_tcp_listen("127.0.0.1:0", 1, 1);
    assert_true(a >= 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", cr_sock_port(a));
    int b = cr_tcp_listen(addr, 1, 1);
    assert_true(b >= 0);
    assert_int_equal(cr_sock_port(a), cr_sock_port(b));
    close(a);
    close(b);
}

static void test_net_unix_listen_connect(void **state)
{
    (void)state;
    char path[192];
    struct stat st;
    snprintf(path, sizeof(path), "%s/mgmt.sock", tmpdir);
    int lfd = cr_unix_listen(path, 0660);
    assert_true(lfd >= 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0660);
    int cfd = cr_unix_connect(path);
    assert_true(cfd >= 0);
    int sfd = accept_within(lfd, 2000);
    assert_true(sfd >= 0);
    close(sfd);
    close(cfd);
    close(lfd);

    /* A stale socket file from a previous run is replaced. */
    lfd = cr_unix_listen(path, 0600);
    assert_true(lfd >= 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    close(lfd);
    unlink(path);
    assert_int_equal(cr_unix_connect(path), -ENOENT);

    /* Anything else at the path is left alone: a misconfigured path must not delete a file. */
    char file[192];
    snprintf(file, sizeof(file), "%s/not-a-socket", tmpdir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("precious", f);
    fclose(f);
    assert_int_equal(cr_unix_listen(file, 0600), -EEXIST);
    assert_int_equal(stat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 8);
    unlink(file);

    char long_path[200];
    memset(long_path, 'p', sizeof(long_path) - 1);
    long_path[sizeof(long_path) - 1] = '\0';
    assert_int_equal(cr_unix_listen(long_path, 0600), -ENAMETOOLONG);
    assert_int_equal(cr_unix_connect(long_path), -ENAMETOOLONG);
}

/* ---- cr_link over a plain socketpair ---- */

struct pair {
    struct cr_link a, b;
};

static void pair_open(struct pair *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cr_link_init_plain(&p->a, sv[0]);
    cr_link_init_plain(&p->b, sv[1]);
}

static void pair_close(struct pair *p)
{
    cr_link_close(&p->a);
    cr_link_close(&p->b);
}

static void make_ping(Camrelay__Frame *f, Camrelay__Ping *m, uint64_t seq)
{
    *f = (Camrelay__Frame)CAMRELAY__FRAME__INIT;
    *m = (Camrelay__Ping)CAMRELAY__PING__INIT;
    m->seq = seq;
    f->body_case = CAMRELAY__FRAME__BODY_PING;
    f->ping = m;
}

static void read_ping(struct cr_link *l, uint64_t seq)
{
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(l, 2000, &in), 0);
    assert_non_null(in);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_PING);
    assert_true(in->ping->seq == seq);
    cr_frame_free(in);
}

static void test_link_init_plain(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    assert_true(fcntl(p.a.fd, F_GETFL) & O_NONBLOCK);
    assert_null(p.a.ssl);
    assert_int_equal(p.a.max_frame, CR_FRAME_MAX);
    assert_int_equal(cr_link_pending(&p.a), 0);
    pair_close(&p);
}

static void test_link_frames_arrive(void **state)
{
    (void)state;
    struct pair p;
    pair_open(&p);
    Camrelay__Frame f;
    Camrelay__Ping m;

    for (uint64_t seq = 1; seq <= 5; seq++) {
        make_ping(&f, &m, seq);
        assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    }
    make_ping(&f, &m, UINT64_MAX);
    assert_int_equal(cr_link_write(&p.b, &f, 1000), 0);

    for (uint64_t seq = 1; seq <= 5; seq++) /* in order, each exactly once */
        read_ping(&p.b, seq);
    read_ping(&p.a, UINT64_MAX);

    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&p.b, 0, &in), -ETIMEDOUT);

    /* Other bodies, with strings and bytes. */
    Camrelay__Frame g = CAMRELAY__FRAME__INIT;
    Camrelay__OpenStream os = CAMRELAY__OPEN_STREAM__INIT;
    uint8_t token[32];
    for (int i = 0; i < 32; i++)
        token[i] = (uint8_t)(255 - i);
    os.stream_id = 77;
    os.service = "rtsp";
    os.token.data = token;
    os.token.len = sizeof(token);
    g.body_case = CAMRELAY__FRAME__BODY_OPEN_STREAM;
    g.open_stream = &os;
    assert_int_equal(cr_link_write(&p.a, &g, 1000), 0);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_OPEN_STREAM);
    assert_int_equal(in->open_stream->stream_id, 77);
    assert_string_equal(in->open_stream->service, "rtsp");
    assert_int_equal(in->open_stream->token.len, sizeof(token));
    assert_memory_equal(in->open_stream->token.data, token, sizeof(token));
    cr_frame_free(in);
    pair_close(&p);
}

struct writer {
    struct cr_link *l;
    const Camrelay__Frame *f;
    int delay_ms;   /* before writing */
    const uint8_t *raw; /* or raw bytes, written one at a time with 2 ms pauses */
    size_t raw_len;
    int rc;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    sleep_ms(w->delay_ms);
    if (w->f) {
        w->rc = cr_link_write(w->l, w->f, 5000);
        return NULL;
    }
    w->rc = 0;
    for (size_t i = 0; i < w->raw_len && w->rc == 0; i++) {
        w->rc = cr_link_write_all(w->l, w->raw + i, 1, 1000);
        sleep_ms(2);
    }
    return NULL;
}

/* A frame far larger than the socket buffer: written and read concurrently, in pieces. */
static void test_link_large_frame(void **state)
{
    (void)state;
    struct pair p;
    static uint8_t token[200 * 1024];
    for (size_t i = 0; i < sizeof(token); i++)
        token[i] = (uint8_t)(i * 7 + (i >> 11));
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__DataHello dh = CAMRELAY__DATA_HELLO__INIT;
    dh.serial = "SN1";
    dh.token.data = token;
    dh.token.len = sizeof(token);
    f.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f.data_hello = &dh;

    pair_open(&p);
    struct writer w = {.l = &p.a, .f = &f};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    Camrelay__Frame *in = NULL;
    int rc = cr_link_read(&p.b, 5000, &in);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    assert_int_equal(rc, 0);
    assert_int_equal(in->data_hello->token.len, sizeof(token));
    assert_memory_equal(in->data_hello->token.data, token, sizeof(token));
    cr_frame_free(in);
    pair_close(&p);
}

/* A frame that trickles in a byte at a time (header and body split everywhere). */
static void test_link_frame_in_pieces(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame f;
    Camrelay__Ping m;
    uint8_t raw[32];
    make_ping(&f, &m, 0x123456789ull);
    int n = cr_frame_encode(&f, raw, sizeof(raw));
    assert_true(n > CR_FRAME_HDR);

    pair_open(&p);
    struct writer w = {.l = &p.a, .raw = raw, .raw_len = (size_t)n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    read_ping(&p.b, 0x123456789ull);
    pthread_join(t, NULL);
    assert_int_equal(w.rc, 0);
    pair_close(&p);
}

static void test_link_read_timeout_then_usable(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;
    pair_open(&p);

    uint64_t t0 = cr_now_ms();
    assert_int_equal(cr_link_read(&p.b, 100, &in), -ETIMEDOUT);
    uint64_t waited = cr_now_ms() - t0;
    assert_true(waited >= 90);
    assert_true(waited < 2000);
    assert_null(in);

    t0 = cr_now_ms();
    assert_int_equal(cr_link_read(&p.b, 0, &in), -ETIMEDOUT); /* a poll, not a wait */
    assert_true(cr_now_ms() - t0 < 500);

    /* Still usable: the next frame is read whole. */
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 9);
    assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    read_ping(&p.b, 9);
    assert_int_equal(cr_link_read(&p.b, 10, &in), -ETIMEDOUT);
    make_ping(&f, &m, 10);
    assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    read_ping(&p.b, 10);
    pair_close(&p);
}

static void test_link_read_waits_forever(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 5);
    pair_open(&p);
    struct writer w = {.l = &p.a, .f = &f, .delay_ms = 150};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer_main, &w), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&p.b, -1, &in), 0);
    assert_true(in->ping->seq == 5);
    cr_frame_free(in);
    pthread_join(t, NULL);
    pair_close(&p);
}

static void write_raw(int fd, const void *buf, size_t len)
{
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
}

static void test_link_oversized_header(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;

    pair_open(&p);
    p.b.max_frame = 16 * 1024;
    /* 16 KiB + 1 announced, no body sent: refused at once, without waiting for the body. */
    write_raw(p.a.fd, "\x00\x00\x40\x01", 4);
    uint64_t t0 = cr_now_ms();
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EMSGSIZE);
    assert_true(cr_now_ms() - t0 < 500);
    assert_null(in);
    pair_close(&p);

    pair_open(&p);
    write_raw(p.a.fd, "\xff\xff\xff\xff", 4);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EMSGSIZE);
    pair_close(&p);

    pair_open(&p);
    write_raw(p.a.fd, "\x00\x04\x00\x01", 4); /* CR_FRAME_MAX + 1 */
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EMSGSIZE);
    pair_close(&p);

    /* The link's own limit applies to frames the writer thought fine. */
    pair_open(&p);
    p.b.max_frame = 8;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__StreamFailed sf = CAMRELAY__STREAM_FAILED__INIT;
    sf.reason = "a reason longer than eight bytes";
    f.body_case = CAMRELAY__FRAME__BODY_STREAM_FAILED;
    f.stream_failed = &sf;
    assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EMSGSIZE);
    pair_close(&p);
}

static void test_link_malformed_body(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;

    pair_open(&p);
    write_raw(p.a.fd, "\x00\x00\x00\x03\x0a\x05\x01", 7); /* length past the end */
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EBADMSG);
    assert_null(in);
    write_raw(p.a.fd, "\x00\x00\x00\x00", 4); /* empty body: no body set */
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EBADMSG);
    write_raw(p.a.fd, "\x00\x00\x00\x02\xf8\x06", 6); /* field 111 varint, no value */
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -EBADMSG);
    pair_close(&p);
}

static void test_link_peer_close(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;

    /* Orderly close with nothing pending. */
    pair_open(&p);
    cr_link_close(&p.a);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -ECONNRESET);
    assert_null(in);
    pair_close(&p);

    /* A whole frame, then close: the frame is still delivered, then -ECONNRESET. */
    pair_open(&p);
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 3);
    assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    cr_link_close(&p.a);
    read_ping(&p.b, 3);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -ECONNRESET);
    pair_close(&p);

    /* Close in the middle of the header, and in the middle of the body. */
    pair_open(&p);
    write_raw(p.a.fd, "\x00\x00", 2);
    cr_link_close(&p.a);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -ECONNRESET);
    pair_close(&p);

    pair_open(&p);
    write_raw(p.a.fd, "\x00\x00\x00\x0a\x4a\x02", 6);
    cr_link_close(&p.a);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), -ECONNRESET);
    pair_close(&p);
}

static void test_link_write_to_closed_peer(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 1);
    pair_open(&p);
    cr_link_close(&p.b);
    /* -EPIPE, and no SIGPIPE (which would kill this test binary). */
    assert_int_equal(cr_link_write(&p.a, &f, 1000), -EPIPE);
    pair_close(&p);
}

static void test_link_write_timeout(void **state)
{
    (void)state;
    struct pair p;
    static uint8_t junk[64 * 1024];
    pair_open(&p);
    /* Nobody reads b: a's send buffer fills and the write gives up at its deadline. */
    int rc = 0;
    for (int i = 0; i < 256 && rc == 0; i++)
        rc = cr_link_write_all(&p.a, junk, sizeof(junk), 50);
    assert_int_equal(rc, -ETIMEDOUT);
    pair_close(&p);
}

static void test_link_close_twice(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 1);
    pair_open(&p);
    cr_link_close(&p.a);
    cr_link_close(&p.a);
    assert_int_equal(p.a.fd, -1);
    assert_int_equal(cr_link_read(&p.a, 0, &in), -EBADF);
    assert_int_equal(cr_link_write(&p.a, &f, 100), -EBADF);
    pair_close(&p);
}

static void test_link_refuse(void **state)
{
    (void)state;
    struct pair p;
    Camrelay__Frame *in = NULL;
    pair_open(&p);
    cr_link_refuse(&p.a, CAMRELAY__STATUS__ERR_RETRY, "relay starting", 1500);
    assert_int_equal(cr_link_read(&p.b, 1000, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    assert_int_equal(in->refusal->status, CAMRELAY__STATUS__ERR_RETRY);
    assert_string_equal(in->refusal->message, "relay starting");
    assert_int_equal(in->refusal->retry_after_ms, 1500);
    cr_frame_free(in);
    pair_close(&p);
}

static void test_link_raw_bytes(void **state)
{
    (void)state;
    struct pair p;
    char buf[16];
    pair_open(&p);
    assert_int_equal(cr_link_read_some(&p.b, buf, sizeof(buf)), -EAGAIN);
    assert_int_equal(cr_link_write_all(&p.a, "stream!", 7, 1000), 0);
    assert_int_equal(cr_link_read_some(&p.b, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "stream!", 7);
    cr_link_close(&p.a);
    assert_int_equal(cr_link_read_some(&p.b, buf, sizeof(buf)), 0); /* orderly close */
    pair_close(&p);
}

/* A link over real TCP sockets from cr_tcp_listen/cr_tcp_connect. */
static void test_link_over_tcp(void **state)
{
    (void)state;
    int lfd = cr_tcp_listen("127.0.0.1:0", 0, 4);
    assert_true(lfd >= 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", cr_sock_port(lfd));
    int cfd = cr_tcp_connect(addr, 2000);
    assert_true(cfd >= 0);
    int sfd = accept_within(lfd, 2000);
    assert_true(sfd >= 0);
    struct pair p;
    cr_link_init_plain(&p.a, cfd);
    cr_link_init_plain(&p.b, sfd);
    Camrelay__Frame f;
    Camrelay__Ping m;
    make_ping(&f, &m, 12);
    assert_int_equal(cr_link_write(&p.a, &f, 1000), 0);
    read_ping(&p.b, 12);
    cr_link_close(&p.a);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&p.b, 2000, &in), -ECONNRESET);
    pair_close(&p);
    close(lfd);
}

/* ---- cr_read_small_file ---- */

static const char *write_file(const char *name, const void *data, size_t len)
{
    static char path[192];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
    return path;
}

static void test_util_read_small_file(void **state)
{
    (void)state;
    char buf[16];
    const char *path;

    memset(buf, 'X', sizeof(buf));
    path = write_file("plain", "secret", 6);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 6);
    assert_string_equal(buf, "secret");

    path = write_file("lf", "secret\n", 7);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 6);
    assert_string_equal(buf, "secret");

    path = write_file("crlf", "secret\r\n", 8);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 6);
    assert_string_equal(buf, "secret");

    path = write_file("inner", "sec\nret\n", 8); /* only the end is stripped */
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "sec\nret");

    memset(buf, 'X', sizeof(buf));
    path = write_file("empty", "", 0);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");

    path = write_file("only-newline", "\n", 1);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void test_util_read_small_file_limits(void **state)
{
    (void)state;
    char buf[16];
    const char *path;

    /* cap - 1 bytes fit exactly; cap bytes do not. */
    path = write_file("fifteen", "0123456789abcde", 15);
    memset(buf, 'X', sizeof(buf));
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), 15);
    assert_string_equal(buf, "0123456789abcde");

    path = write_file("sixteen", "0123456789abcdef", 16);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), -EFBIG);

    path = write_file("big", "0123456789abcdef0123456789", 26);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), -EFBIG);

    /* The limit is on the file, before the newline is stripped. */
    path = write_file("fifteen-lf", "0123456789abcde\n", 16);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), -EFBIG);

    /* cap 1: room for the NUL only; a non-empty file is too big, an empty one fits. */
    path = write_file("one", "x", 1);
    assert_int_equal(cr_read_small_file(path, buf, 1), -EFBIG);
    path = write_file("none", "", 0);
    buf[0] = 'X';
    assert_int_equal(cr_read_small_file(path, buf, 1), 0);
    assert_int_equal(buf[0], '\0');

    /* cap 0: no room at all, and nothing written. */
    buf[0] = 'X';
    assert_int_equal(cr_read_small_file(path, buf, 0), -EINVAL);
    assert_int_equal(buf[0], 'X');
}

static void test_util_read_small_file_errors(void **state)
{
    (void)state;
    char buf[64], path[192];
    snprintf(path, sizeof(path), "%s/does-not-exist", tmpdir);
    assert_int_equal(cr_read_small_file(path, buf, sizeof(buf)), -ENOENT);
    assert_int_equal(cr_read_small_file(tmpdir, buf, sizeof(buf)), -EISDIR);

    /* Files whose size stat() does not know (procfs) are read to the end. */
    int n = cr_read_small_file("/proc/sys/kernel/ostype", buf, sizeof(buf));
    assert_int_equal(n, 5);
    assert_string_equal(buf, "Linux");

    /* Embedded NUL bytes are kept and counted. */
    const char *p = write_file("nul", "a\0b", 3);
    assert_int_equal(cr_read_small_file(p, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "a\0b", 4);
}

/* ---- cr_link over TLS (loopback TCP, throw-away PKI from tests/support) ---- */

struct tls_env {
    char dir[128];       /* certificate for IP:127.0.0.1 */
    char other_dir[128]; /* another CA, and a certificate for IP:127.0.0.2 */
    SSL_CTX *server;
    SSL_CTX *server_wrong_name;
    SSL_CTX *client;
    SSL_CTX *client_other_ca;
};
static struct tls_env tls;

static SSL_CTX *server_ctx_from(const char *dir)
{
    char cert[192], key[192], err[256];
    snprintf(cert, sizeof(cert), "%s/server.pem", dir);
    snprintf(key, sizeof(key), "%s/server.key", dir);
    SSL_CTX *ctx = cr_tls_server_ctx(cert, key, err, sizeof(err));
    if (!ctx)
        fprintf(stderr, "%s\n", err);
    return ctx;
}

static SSL_CTX *client_ctx_from(const char *dir)
{
    char ca[192], err[256];
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    SSL_CTX *ctx = cr_tls_client_ctx(ca, err, sizeof(err));
    if (!ctx)
        fprintf(stderr, "%s\n", err);
    return ctx;
}

static int tls_group_setup(void **state)
{
    (void)state;
    memset(&tls, 0, sizeof(tls));
    if (test_tmpdir(tls.dir, sizeof(tls.dir)) < 0 ||
        test_tmpdir(tls.other_dir, sizeof(tls.other_dir)) < 0)
        return -1;
    if (test_certs_make(tls.dir, "IP:127.0.0.1") < 0 ||
        test_certs_make(tls.other_dir, "IP:127.0.0.2") < 0)
        return 0; /* each test reports the skip */
    tls.server = server_ctx_from(tls.dir);
    tls.server_wrong_name = server_ctx_from(tls.other_dir);
    tls.client = client_ctx_from(tls.dir);
    tls.client_other_ca = client_ctx_from(tls.other_dir);
    return 0;
}

static int tls_group_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(tls.server);
    SSL_CTX_free(tls.server_wrong_name);
    SSL_CTX_free(tls.client);
    SSL_CTX_free(tls.client_other_ca);
    test_rmtree(tls.dir);
    test_rmtree(tls.other_dir);
    return 0;
}

static void tls_require(void)
{
    if (!tls.server || !tls.server_wrong_name || !tls.client || !tls.client_other_ca) {
        print_message("skipped: could not make test certificates with the openssl command "
                      "line (is openssl installed?)\n");
        skip();
    }
}

/* A TLS server for one connection: handshakes, then echoes frames until the link fails. */
struct echo_server {
    int lfd;
    SSL_CTX *ctx;
    int accept_rc;
    int last_rc; /* what ended the echo loop */
    char err[256];
};

static void *echo_server_main(void *arg)
{
    struct echo_server *s = arg;
    struct cr_link l;
    s->accept_rc = -ETIMEDOUT;
    int fd = accept_within(s->lfd, 5000);
    if (fd < 0)
        return NULL;
    s->accept_rc = cr_link_accept_tls(&l, s->ctx, fd, 5000, s->err, sizeof(s->err));
    if (s->accept_rc < 0)
        return NULL;
    for (;;) {
        Camrelay__Frame *in = NULL;
        s->last_rc = cr_link_read(&l, 5000, &in);
        if (s->last_rc < 0)
            break;
        s->last_rc = cr_link_write(&l, in, 5000);
        cr_frame_free(in);
        if (s->last_rc < 0)
            break;
    }
    cr_link_close(&l);
    return NULL;
}

static void echo_start(struct echo_server *s, SSL_CTX *ctx, pthread_t *t, char *addr, size_t cap)
{
    memset(s, 0, sizeof(*s));
    s->ctx = ctx;
    s->lfd = cr_tcp_listen("127.0.0.1:0", 0, 4);
    assert_true(s->lfd >= 0);
    snprintf(addr, cap, "127.0.0.1:%u", cr_sock_port(s->lfd));
    assert_int_equal(pthread_create(t, NULL, echo_server_main, s), 0);
}

static void echo_stop(struct echo_server *s, pthread_t t)
{
    pthread_join(t, NULL);
    close(s->lfd);
}

static void test_link_tls_frames_echo(void **state)
{
    (void)state;
    struct echo_server s;
    pthread_t t;
    char addr[32], err[256];
    struct cr_link l;
    tls_require();
    echo_start(&s, tls.server, &t, addr, sizeof(addr));
    int rc = cr_link_connect_tls(&l, tls.client, addr, 5000, err, sizeof(err));
    if (rc < 0)
        fail_msg("connect: %s", err);
    assert_non_null(l.ssl);
    assert_string_equal(l.peer, addr);

    Camrelay__Frame f;
    Camrelay__Ping m;
    for (uint64_t seq = 1; seq <= 3; seq++) {
        make_ping(&f, &m, seq);
        assert_int_equal(cr_link_write(&l, &f, 1000), 0);
    }
    for (uint64_t seq = 1; seq <= 3; seq++)
        read_ping(&l, seq);

    /* Larger than a TLS record and the socket buffers: partial SSL writes and reads. */
    static uint8_t token[150 * 1024];
    for (size_t i = 0; i < sizeof(token); i++)
        token[i] = (uint8_t)(i * 13 + (i >> 9));
    Camrelay__Frame g = CAMRELAY__FRAME__INIT;
    Camrelay__DataHello dh = CAMRELAY__DATA_HELLO__INIT;
    dh.serial = "SN1";
    dh.token.data = token;
    dh.token.len = sizeof(token);
    g.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    g.data_hello = &dh;
    assert_int_equal(cr_link_write(&l, &g, 5000), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&l, 5000, &in), 0);
    assert_int_equal(in->data_hello->token.len, sizeof(token));
    assert_memory_equal(in->data_hello->token.data, token, sizeof(token));
    cr_frame_free(in);

    /* Nothing pending: times out and stays usable. */
    assert_int_equal(cr_link_read(&l, 50, &in), -ETIMEDOUT);
    make_ping(&f, &m, 4);
    assert_int_equal(cr_link_write(&l, &f, 1000), 0);
    read_ping(&l, 4);

    cr_link_close(&l); /* close_notify: the server sees an orderly close */
    echo_stop(&s, t);
    assert_int_equal(s.accept_rc, 0);
    assert_int_equal(s.last_rc, -ECONNRESET);
}

static void test_link_tls_peer_close(void **state)
{
    (void)state;
    struct echo_server s;
    pthread_t t;
    char addr[32], err[256];
    struct cr_link l;
    tls_require();
    echo_start(&s, tls.server, &t, addr, sizeof(addr));
    assert_int_equal(cr_link_connect_tls(&l, tls.client, addr, 5000, err, sizeof(err)), 0);
    /* A frame the server cannot accept makes it close; the client then sees -ECONNRESET. */
    static const uint8_t junk[] = {0, 0, 0, 2, 0xf8, 0x06};
    assert_int_equal(cr_link_write_all(&l, junk, sizeof(junk), 1000), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&l, 5000, &in), -ECONNRESET);
    cr_link_close(&l);
    echo_stop(&s, t);
    assert_int_equal(s.last_rc, -EBADMSG);
}

static void test_link_tls_wrong_name_refused(void **state)
{
    (void)state;
    struct echo_server s;
    pthread_t t;
    char addr[32], err[256] = "";
    struct cr_link l;
    tls_require();
    /* Certificate for 127.0.0.2 from a CA the client trusts, served on 127.0.0.1. */
    SSL_CTX *client = client_ctx_from(tls.other_dir);
    assert_non_null(client);
    echo_start(&s, tls.server_wrong_name, &t, addr, sizeof(addr));
    int rc = cr_link_connect_tls(&l, client, addr, 5000, err, sizeof(err));
    assert_int_equal(rc, -EPROTO);
    assert_non_null(strstr(err, "certificate not trusted"));
    assert_int_equal(l.fd, -1);
    assert_null(l.ssl);
    echo_stop(&s, t);
    assert_true(s.accept_rc < 0);
    SSL_CTX_free(client);
}

static void test_link_tls_untrusted_ca_refused(void **state)
{
    (void)state;
    struct echo_server s;
    pthread_t t;
    char addr[32], err[256] = "";
    struct cr_link l;
    tls_require();
    echo_start(&s, tls.server, &t, addr, sizeof(addr));
    int rc = cr_link_connect_tls(&l, tls.client_other_ca, addr, 5000, err, sizeof(err));
    assert_int_equal(rc, -EPROTO);
    assert_non_null(strstr(err, "certificate not trusted"));
    echo_stop(&s, t);
    assert_true(s.accept_rc < 0);
}

/* A server that accepts TCP but never speaks TLS: the handshake gives up at its deadline. */
static void test_link_tls_handshake_timeout(void **state)
{
    (void)state;
    char addr[32], err[256] = "";
    struct cr_link l;
    tls_require();
    int lfd = cr_tcp_listen("127.0.0.1:0", 0, 4); /* the kernel completes the TCP handshake */
    assert_true(lfd >= 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", cr_sock_port(lfd));
    uint64_t t0 = cr_now_ms();
    int rc = cr_link_connect_tls(&l, tls.client, addr, 200, err, sizeof(err));
    uint64_t waited = cr_now_ms() - t0;
    assert_int_equal(rc, -ETIMEDOUT);
    assert_non_null(strstr(err, "timed out"));
    assert_true(waited >= 150 && waited < 3000);
    close(lfd);

    assert_int_equal(cr_link_connect_tls(&l, tls.client, "127.0.0.1", 200, err, sizeof(err)),
                     -EINVAL);
}

static int group_setup(void **state)
{
    (void)state;
    return test_tmpdir(tmpdir, sizeof(tmpdir)) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    test_rmtree(tmpdir);
    return 0;
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_net_addr_parse_good),
        cmocka_unit_test(test_net_addr_parse_bad),
        cmocka_unit_test(test_net_addr_format),
        cmocka_unit_test(test_net_tcp_listen_connect),
        cmocka_unit_test(test_net_tcp_listen_ipv6),
        cmocka_unit_test(test_net_tcp_connect_refused),
        cmocka_unit_test(test_net_tcp_listen_errors),
        cmocka_unit_test(test_net_unix_listen_connect),
        cmocka_unit_test(test_link_init_plain),
        cmocka_unit_test(test_link_frames_arrive),
        cmocka_unit_test(test_link_large_frame),
        cmocka_unit_test(test_link_frame_in_pieces),
        cmocka_unit_test(test_link_read_timeout_then_usable),
        cmocka_unit_test(test_link_read_waits_forever),
        cmocka_unit_test(test_link_oversized_header),
        cmocka_unit_test(test_link_malformed_body),
        cmocka_unit_test(test_link_peer_close),
        cmocka_unit_test(test_link_write_to_closed_peer),
        cmocka_unit_test(test_link_write_timeout),
        cmocka_unit_test(test_link_close_twice),
        cmocka_unit_test(test_link_refuse),
        cmocka_unit_test(test_link_raw_bytes),
        cmocka_unit_test(test_link_over_tcp),
        cmocka_unit_test(test_util_read_small_file),
        cmocka_unit_test(test_util_read_small_file_limits),
        cmocka_unit_test(test_util_read_small_file_errors),
    };
    static const struct CMUnitTest tls_tests[] = {
        cmocka_unit_test(test_link_tls_frames_echo),
        cmocka_unit_test(test_link_tls_peer_close),
        cmocka_unit_test(test_link_tls_wrong_name_refused),
        cmocka_unit_test(test_link_tls_untrusted_ca_refused),
        cmocka_unit_test(test_link_tls_handshake_timeout),
    };
    int failed = cmocka_run_group_tests_name("test_net_link", tests, group_setup, group_teardown);
    failed += cmocka_run_group_tests_name("test_net_link_tls", tls_tests, tls_group_setup,
                                          tls_group_teardown);
    return failed;
}
