/* Tests for the agent: --services / secrets / cache / backoff, the control socket, and the
 * phone-home machine against a fake dispatcher and a fake relay run by the test itself. */
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
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/agent.h"
#include "agent/agent_backoff.h"
#include "agent/agent_cache.h"
#include "agent/agent_config.h"
#include "agent/agent_ctl.h"
#include "common/auth.h"
#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "tests/support/support.h"

#include "tests/agent/agent_fixture.h"

/* ---- helpers ---- */

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

static void write_str(const char *path, const char *text)
{
    write_file(path, text, strlen(text), 0600);
}

static void subdir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmpdir, name);
    mkdir(out, 0700);
}

/* Maps two pages, the second inaccessible, and places len bytes so they end right before the
 * guard page: a parser reading one byte too far crashes. Returns the copy (free with
 * guard_free). */
static char *guard_copy(const void *data, size_t len, void **map)
{
    long pg = sysconf(_SC_PAGESIZE);
    assert_true(len <= (size_t)pg);
    uint8_t *m = mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    *map = m;
    char *p = (char *)m + pg - len;
    memcpy(p, data, len);
    return p;
}

static void guard_free(void *map)
{
    munmap(map, (size_t)sysconf(_SC_PAGESIZE) * 2);
}

/* ---- --services and host:port ---- */

static void test_agent_services_parse_good(void **state)
{
    struct agt_service s[AGT_MAX_SERVICES];
    char err[200];
    (void)state;

    assert_int_equal(agt_services_parse("rtsp=127.0.0.1:554,http=127.0.0.1:80", s,
                                        AGT_MAX_SERVICES, err, sizeof(err)),
                     2);
    assert_string_equal(s[0].name, "rtsp");
    assert_string_equal(s[0].addr, "127.0.0.1:554");
    assert_string_equal(s[1].name, "http");
    assert_string_equal(s[1].addr, "127.0.0.1:80");
    assert_int_equal(agt_services_parse("rtsp=[::1]:8554", s, AGT_MAX_SERVICES, err, sizeof(err)),
                     1);
    assert_string_equal(s[0].addr, "[::1]:8554");
    assert_int_equal(agt_services_parse("cam_http-2=camera.local:65535", s, AGT_MAX_SERVICES, err,
                                        sizeof(err)),
                     1);
}

static void test_agent_services_parse_hostile(void **state)
{
    static const char *const bad[] = {
        "",
        ",",
        "rtsp",
        "rtsp=",
        "=127.0.0.1:554",
        "rtsp=127.0.0.1",
        "rtsp=127.0.0.1:",
        "rtsp=127.0.0.1:0",
        "rtsp=127.0.0.1:65536",
        "rtsp=127.0.0.1:-1",
        "rtsp=127.0.0.1:+80",
        "rtsp=127.0.0.1:80x",
        "rtsp=127.0.0.1:0000080",
        "rtsp=:554",
        "rtsp=a:b:554",
        "rtsp=[::1:554",
        "rtsp=[]:554",
        "rtsp=[zz]:554",
        "rtsp=host name:554",
        "rtsp=host/x:554",
        "rtsp=%n%n%s:554",
        "RTSP=127.0.0.1:554",
        "rt sp=127.0.0.1:554",
        "rtsp =127.0.0.1:554",
        "rtsp=127.0.0.1:554,",
        ",rtsp=127.0.0.1:554",
        "rtsp=127.0.0.1:554,,http=127.0.0.1:80",
        "rtsp=127.0.0.1:554,rtsp=127.0.0.1:555",
        "averyveryverylongname=127.0.0.1:554",
        "rtsp=127.0.0.1:554\n",
        "a=h:1,b=h:1,c=h:1,d=h:1,e=h:1,f=h:1,g=h:1,h=h:1,i=h:1",
    };
    struct agt_service s[AGT_MAX_SERVICES];
    char err[200];
    (void)state;

    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        int rc = agt_services_parse(bad[i], s, AGT_MAX_SERVICES, err, sizeof(err));
        if (rc != -EINVAL)
            fail_msg("accepted bad --services \"%s\" (rc %d)", bad[i], rc);
        assert_true(err[0] != '\0');
    }

    /* A host longer than an address can be, and a spec longer than AGT_SPEC_MAX. */
    char longspec[AGT_SPEC_MAX + 64];
    memset(longspec, 'a', sizeof(longspec) - 1);
    longspec[sizeof(longspec) - 1] = '\0';
    memcpy(longspec, "rtsp=", 5);
    assert_int_equal(agt_services_parse(longspec, s, AGT_MAX_SERVICES, err, sizeof(err)), -EINVAL);
    char longhost[200];
    snprintf(longhost, sizeof(longhost), "rtsp=%0100d:554", 1);
    assert_int_equal(agt_services_parse(longhost, s, AGT_MAX_SERVICES, err, sizeof(err)), -EINVAL);

    /* Inputs ending right before a guard page (NUL is the last readable byte). */
    static const char *const edge[] = {"rtsp=127.0.0.1:554", "rtsp=", "rtsp", "r=[::1", "r=h:"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(edge); i++) {
        void *map;
        char *p = guard_copy(edge[i], strlen(edge[i]) + 1, &map);
        int rc = agt_services_parse(p, s, AGT_MAX_SERVICES, err, sizeof(err));
        assert_int_equal(rc, i == 0 ? 1 : -EINVAL);
        guard_free(map);
    }
}

static void test_agent_hostport_check(void **state)
{
    (void)state;
    assert_int_equal(agt_hostport_check("relay.example.com:8443"), 0);
    assert_int_equal(agt_hostport_check("10.0.0.1:1"), 0);
    assert_int_equal(agt_hostport_check("[2001:db8::1]:8443"), 0);
    assert_int_equal(agt_hostport_check("relay"), -EINVAL);
    assert_int_equal(agt_hostport_check(":8443"), -EINVAL);
    assert_int_equal(agt_hostport_check("relay:99999"), -EINVAL);
    assert_int_equal(agt_hostport_check("relay:8443\r"), -EINVAL);
    assert_int_equal(agt_hostport_check("a b:1"), -EINVAL);
    char dispatchers[AGT_MAX_DISPATCHERS][CR_ADDR_STRLEN];
    char err[200];
    assert_int_equal(agt_hostport_list_parse("d1:7443,d2:7443", dispatchers, AGT_MAX_DISPATCHERS,
                                             err, sizeof(err)),
                     2);
    assert_string_equal(dispatchers[1], "d2:7443");
    assert_int_equal(agt_hostport_list_parse("d1:7443,", dispatchers, AGT_MAX_DISPATCHERS, err,
                                             sizeof(err)),
                     -EINVAL);
    assert_int_equal(agt_serial_check("00:11:22:AA:bb-cc.1_2"), 0);
    assert_int_equal(agt_serial_check("../etc"), -EINVAL);
    assert_int_equal(agt_serial_check(""), -EINVAL);
}

/* ---- backoff ---- */

static void test_agent_backoff_schedule(void **state)
{
    struct agt_backoff b = {0};
    (void)state;

    static const uint32_t ceilings[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000};
    for (unsigned i = 0; i < CR_ARRAY_SIZE(ceilings); i++)
        assert_int_equal(agt_backoff_ceiling_ms(i), ceilings[i]);
    for (unsigned i = 8; i < 200; i++)
        assert_int_equal(agt_backoff_ceiling_ms(i), AGT_BACKOFF_MAX_MS);
    assert_int_equal(agt_backoff_ceiling_ms(UINT32_MAX), AGT_BACKOFF_MAX_MS);

    /* Every draw lies within [0, ceiling of its attempt], and the schedule never exceeds 60 s
     * however many failures come. */
    for (unsigned i = 0; i < 1000; i++) {
        uint32_t c = agt_backoff_ceiling_ms(b.attempt);
        uint32_t d = agt_backoff_next_ms(&b);
        assert_true(d <= c);
        assert_true(d <= AGT_BACKOFF_MAX_MS);
    }
    agt_backoff_reset(&b);
    assert_int_equal(b.attempt, 0);

    /* Full jitter really spreads: at the 60 s ceiling, draws cover low and high ends. */
    uint32_t lo = UINT32_MAX, hi = 0;
    for (unsigned i = 0; i < 2000; i++) {
        struct agt_backoff x = {.attempt = 10};
        uint32_t d = agt_backoff_next_ms(&x);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    assert_true(lo < 6000);
    assert_true(hi > 54000);

    for (unsigned i = 0; i < 1000; i++) {
        uint32_t d = agt_jitter_ms(5000, 2500);
        assert_true(d >= 5000 && d <= 7500);
    }
    assert_int_equal(agt_jitter_ms(7, 0), 7);
}

/* ---- relay cache ---- */

static void test_agent_cache_roundtrip(void **state)
{
    char dir[128], path[256], got[AGT_MAX_RELAYS][CR_ADDR_STRLEN];
    const char addrs[2][CR_ADDR_STRLEN] = {"relay1.example:8443", "[2001:db8::7]:8443"};
    struct stat st;
    (void)state;

    subdir(dir, sizeof(dir), "cache");
    assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 0); /* none yet */
    assert_int_equal(agt_cache_store(dir, "cam-1", addrs, 2, 1), 0);
    assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 2);
    assert_string_equal(got[0], addrs[0]);
    assert_string_equal(got[1], addrs[1]);
    snprintf(path, sizeof(path), "%s/cam-1.relay.tmp", dir);
    assert_int_not_equal(stat(path, &st), 0); /* the temp file was renamed away */
    snprintf(path, sizeof(path), "%s/cam-1.relay", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* Replacing keeps only the new address. */
    assert_int_equal(agt_cache_store(dir, "cam-1", addrs + 1, 1, 0), 0);
    assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 1);
    assert_string_equal(got[0], addrs[1]);

    /* Corrupt files are ignored (with a warning), never half-used. */
    static const char *const corrupt[] = {
        "garbage\n",
        "",
        AGT_CACHE_HEADER "\n",
        AGT_CACHE_HEADER "\nrelay=ok.example:1\nrelay=not an address\n",
        AGT_CACHE_HEADER "\nrelay=ok.example:1\nexec=/bin/sh\n",
        "relay=ok.example:1\n",
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(corrupt); i++) {
        write_file(path, corrupt[i], strlen(corrupt[i]), 0600);
        assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 0);
    }
    char nul[] = AGT_CACHE_HEADER "\nrelay=a:1\0relay=b:2\n";
    write_file(path, nul, sizeof(nul) - 1, 0600);
    assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 0);
    char *big = cr_xmalloc(AGT_CACHE_FILE_MAX * 2);
    memset(big, 'x', AGT_CACHE_FILE_MAX * 2);
    write_file(path, big, AGT_CACHE_FILE_MAX * 2, 0600);
    free(big);
    assert_int_equal(agt_cache_load(dir, "cam-1", got, AGT_MAX_RELAYS), 0);

    assert_int_equal(agt_cache_drop(dir, "cam-1"), 0);
    assert_int_not_equal(stat(path, &st), 0);
    assert_int_equal(agt_cache_drop(dir, "cam-1"), 0); /* already gone is fine */

    /* An unwritable directory is an error, not a crash. */
    assert_true(agt_cache_store("/nonexistent-dir/x", "cam-1", addrs, 1, 0) < 0);
}

/* ---- secrets ---- */

static void test_agent_secrets_parse(void **state)
{
    struct agt_secrets s;
    char err[200];
    (void)state;

    const char good[] =
        "# camera secrets\r\noak=OAK-123 with space \r\nuser=root\n\npassword=p=w#1";
    assert_int_equal(agt_secrets_parse(good, sizeof(good) - 1, &s, err, sizeof(err)), 0);
    assert_string_equal(s.oak, "OAK-123 with space ");
    assert_string_equal(s.user, "root");
    assert_string_equal(s.password, "p=w#1");
    agt_secrets_free(&s);
    assert_null(s.oak);

    /* Missing keys are not a parse error: the config check reports them (below). */
    assert_int_equal(agt_secrets_parse("user=root\n", 10, &s, err, sizeof(err)), 0);
    assert_null(s.oak);
    assert_null(s.password);
    agt_secrets_free(&s);

    static const char *const bad[] = {
        "oak=a\noak=b\n",            /* repeated */
        "oak=\n",                    /* empty */
        "serial=x\n",                /* unknown key */
        "oakTOPSECRETVALUE\n",       /* no '=' */
        "OAK=x\n",                   /* keys are lower case */
        " oak=x\n",                  /* no leading blanks */
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        assert_int_equal(agt_secrets_parse(bad[i], strlen(bad[i]), &s, err, sizeof(err)), -EINVAL);
        assert_null(s.oak);
        assert_null(s.user);
        assert_null(s.password);
        assert_true(err[0] != '\0');
        assert_null(strstr(err, "TOPSECRET"));
    }

    /* A line of exactly AGT_SECRET_LINE_MAX is fine, one more is rejected; the message never
     * repeats the value. */
    char line[AGT_SECRET_LINE_MAX + 2];
    memcpy(line, "password=", 9);
    memset(line + 9, 'S', AGT_SECRET_LINE_MAX - 9);
    assert_int_equal(agt_secrets_parse(line, AGT_SECRET_LINE_MAX, &s, err, sizeof(err)), 0);
    agt_secrets_free(&s);
    line[AGT_SECRET_LINE_MAX] = 'S';
    assert_int_equal(agt_secrets_parse(line, AGT_SECRET_LINE_MAX + 1, &s, err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "longer"));
    assert_null(strstr(err, "SSSS"));

    const char withnul[] = "oak=a\0b\nuser=u\n";
    assert_int_equal(agt_secrets_parse(withnul, sizeof(withnul) - 1, &s, err, sizeof(err)),
                     -EINVAL);

    /* Text ending right before a guard page, with no NUL and no final newline. */
    const char edge[] = "oak=k\nuser=u\npassword=p";
    void *map;
    char *p = guard_copy(edge, sizeof(edge) - 1, &map);
    assert_int_equal(agt_secrets_parse(p, sizeof(edge) - 1, &s, err, sizeof(err)), 0);
    assert_string_equal(s.password, "p");
    agt_secrets_free(&s);
    guard_free(map);
    p = guard_copy("password", 8, &map);
    assert_int_equal(agt_secrets_parse(p, 8, &s, err, sizeof(err)), -EINVAL);
    guard_free(map);
}

static void test_agent_secrets_file_and_config(void **state)
{
    char dir[128], path[256], big_path[256], err[300];
    struct agt_secrets s;
    (void)state;

    subdir(dir, sizeof(dir), "secrets");
    snprintf(path, sizeof(path), "%s/camera.secrets", dir);
    write_str(path, "oak=OAK1\nuser=admin\npassword=pw1\n");
    assert_int_equal(agt_secrets_load(path, &s, err, sizeof(err)), 0);
    assert_string_equal(s.oak, "OAK1");
    agt_secrets_free(&s);

    snprintf(big_path, sizeof(big_path), "%s/big.secrets", dir);
    char *big = cr_xmalloc(AGT_SECRETS_FILE_MAX + 10);
    memset(big, '#', AGT_SECRETS_FILE_MAX + 10);
    write_file(big_path, big, AGT_SECRETS_FILE_MAX + 10, 0600);
    free(big);
    assert_int_equal(agt_secrets_load(big_path, &s, err, sizeof(err)), -EFBIG);

    /* The whole configuration: secrets from the file, a flag overriding one of them. */
    char *argv[] = {"camrelay-agent", "--serial", "cam-9", "--secrets-file", path,
                    "--password", "flagpw", "--dispatcher", "127.0.0.1:7443", "--ca", path,
                    "--connect", "--state-dir", dir, NULL};
    struct agt_config cfg = {0};
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(argv) - 1, argv), 0);
    assert_string_equal(cfg.oak, "OAK1");
    assert_string_equal(cfg.user, "admin");
    assert_string_equal(cfg.password, "flagpw");
    assert_int_equal(cfg.n_svc, 2); /* the default rtsp/http */
    assert_int_equal(cfg.n_disp, 1);
    agt_config_free(&cfg);

    /* Missing keys: a clear message naming the key, not a value. */
    write_str(path, "oak=OAK1\nuser=admin\n");
    char *argv2[] = {"camrelay-agent", "--serial", "cam-9", "--secrets-file", path,
                     "--dispatcher", "127.0.0.1:7443", "--ca", path, "--connect", NULL};
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(cr_config_load(agt_config_opts, &cfg, CR_ARRAY_SIZE(argv2) - 1, argv2, NULL,
                                    NULL),
                     0);
    assert_int_equal(agt_config_check(&cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "password"));
    assert_null(strstr(err, "OAK1"));
    agt_config_free(&cfg);

    /* Bad --services and a serial too long for --simulate's suffix are configuration errors. */
    char *argv3[] = {"camrelay-agent", "--serial", "cam-9", "--oak", "k", "--user", "u",
                     "--password", "p", "--dispatcher", "127.0.0.1:7443", "--ca", path,
                     "--services", "rtsp=127.0.0.1", "--connect", NULL};
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(argv3) - 1, argv3), -EINVAL);
    agt_config_free(&cfg);
    char *argv4[] = {"camrelay-agent", "--press", NULL};
    memset(&cfg, 0, sizeof(cfg));
    assert_int_equal(agt_config_load(&cfg, 2, argv4), -EINVAL); /* --press needs a socket */
    agt_config_free(&cfg);
}

/* ---- control socket client ---- */

static void *serve_one(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    char line[64] = "";
    if (fd < 0)
        return NULL;
    ssize_t n = read(fd, line, sizeof(line) - 1);
    const char *answer = n > 0 && strncmp(line, "press\n", 6) == 0 ? "ok phoning home\n" : "no\n";
    ssize_t w = write(fd, answer, strlen(answer));
    (void)w;
    close(fd);
    return NULL;
}

static void test_agent_ctl_client(void **state)
{
    char path[128];
    pthread_t t;
    (void)state;

    snprintf(path, sizeof(path), "%s/agent.sock", tmpdir);
    FILE *out = fopen("/dev/null", "w");
    assert_non_null(out);
    assert_int_equal(agt_ctl_client(path, "press", out), 2); /* nobody listens */
    int lfd = agt_ctl_listen(path);
    assert_true(lfd >= 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);
    assert_int_equal(pthread_create(&t, NULL, serve_one, &lfd), 0);
    assert_int_equal(agt_ctl_client(path, "press", out), 0);
    pthread_join(t, NULL);
    assert_int_equal(pthread_create(&t, NULL, serve_one, &lfd), 0);
    assert_int_equal(agt_ctl_client(path, "status", out), 1); /* answer is not "ok" */
    pthread_join(t, NULL);
    close(lfd);
    unlink(path);
    fclose(out);
}

/* ---- fake servers ---- */

struct fake {
    SSL_CTX *ctx;
    int lfd;
    char addr[CR_ADDR_STRLEN];
};

static void fake_start(struct fake *f)
{
    char err[300];
    f->ctx = cr_tls_server_ctx(srv_pem, srv_key, err, sizeof(err));
    if (!f->ctx)
        fail_msg("%s", err);
    f->lfd = cr_tcp_listen("127.0.0.1:0", 0, 16);
    assert_true(f->lfd >= 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", cr_sock_port(f->lfd));
}

static void fake_stop(struct fake *f)
{
    close(f->lfd);
    SSL_CTX_free(f->ctx);
}

static void fake_accept(struct fake *f, struct cr_link *l, int timeout_ms)
{
    char err[300];
    struct pollfd p = {.fd = f->lfd, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) != 1)
        fail_msg("no connection to the fake server %s within %d ms", f->addr, timeout_ms);
    int fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    if (cr_link_accept_tls(l, f->ctx, fd, 5000, err, sizeof(err)) < 0)
        fail_msg("%s", err);
}

/* The relay side of a login: TunnelHello checked, proof verified, TunnelWelcome sent. */
static void relay_login(struct cr_link *l, const char *serial, const uint8_t *want_ticket,
                        size_t want_ticket_len, const uint8_t salt[16], uint32_t iters,
                        const uint8_t stored[32], uint32_t keepalive_ms)
{
    Camrelay__Frame *f = expect_frame(l, CAMRELAY__FRAME__BODY_TUNNEL_HELLO);
    Camrelay__TunnelHello *th = f->tunnel_hello;
    assert_non_null(th->auth);
    assert_string_equal(th->auth->identity, serial);
    assert_int_equal(th->auth->client_nonce.len, CR_AUTH_NONCE_LEN);
    assert_int_equal(th->ticket.len, want_ticket_len);
    if (want_ticket_len)
        assert_memory_equal(th->ticket.data, want_ticket, want_ticket_len);
    assert_non_null(strstr(th->agent_version, "camrelay-agent"));
    assert_int_equal(th->n_services, 2);
    assert_string_equal(th->services[0], "rtsp");
    assert_string_equal(th->services[1], "http");
    assert_int_equal(cr_auth_server_verify(l, th->auth, salt, iters, stored, 10000), 0);
    cr_frame_free(f);

    Camrelay__Frame out = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelWelcome w = CAMRELAY__TUNNEL_WELCOME__INIT;
    w.keepalive_ms = keepalive_ms;
    w.site_addr = "198.51.100.7:40000";
    out.body_case = CAMRELAY__FRAME__BODY_TUNNEL_WELCOME;
    out.tunnel_welcome = &w;
    assert_int_equal(cr_link_write(l, &out, 2000), 0);
}

/* Raw bytes from a data connection: returns >0, 0 at EOF, or -ETIMEDOUT. */
static int raw_read(struct cr_link *l, void *buf, size_t cap, int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int n = cr_link_read_some(l, buf, cap);
        if (n != -EAGAIN)
            return n;
        uint64_t now = cr_now_ms();
        if (now >= deadline)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = l->fd, .events = POLLIN};
        poll(&p, 1, (int)(deadline - now));
    }
}

static void raw_expect(struct cr_link *l, const char *want)
{
    char buf[256];
    size_t got = 0, len = strlen(want);
    while (got < len) {
        int n = raw_read(l, buf + got, len - got, 5000);
        if (n <= 0)
            fail_msg("data connection: wanted \"%s\", got %zu bytes then %d", want, got, n);
        got += (size_t)n;
    }
    assert_memory_equal(buf, want, len);
}

/* Writes total random bytes into a data connection while reading the echo back, both at
 * once (the echo service stops reading when nobody drains it), and compares. */
static void bulk_echo(struct cr_link *d, size_t total)
{
    uint8_t *src = cr_xmalloc(total), *dst = cr_xmalloc(total);
    size_t sent = 0, got = 0, pending = 0;
    cr_random_bytes(src, total);
    while (got < total) {
        int progress = 0;
        short events = POLLIN;
        if (sent < total) {
            size_t n = pending ? pending : (total - sent < 16384 ? total - sent : 16384);
            int w = SSL_write(d->ssl, src + sent, (int)n);
            if (w > 0) {
                sent += (size_t)w;
                pending = 0;
                progress = 1;
            } else {
                int e = SSL_get_error(d->ssl, w);
                if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ)
                    fail_msg("bulk write failed after %zu bytes", sent);
                pending = n;
                events |= POLLOUT;
            }
        }
        int r = cr_link_read_some(d, dst + got, total - got);
        if (r > 0) {
            got += (size_t)r;
            progress = 1;
        } else if (r != -EAGAIN) {
            fail_msg("bulk read ended after %zu of %zu bytes (%d)", got, total, r);
        }
        if (!progress) {
            struct pollfd p = {.fd = d->fd, .events = events};
            if (poll(&p, 1, 10000) == 0)
                fail_msg("bulk echo stalled: sent %zu, got %zu", sent, got);
        }
    }
    assert_memory_equal(src, dst, total);
    free(src);
    free(dst);
}

/* A port that refuses connections for as long as *fd stays open (close it at the end). */
static uint16_t closed_port(int *fd)
{
    uint16_t port;
    *fd = test_port_reserve(&port);
    assert_true(*fd >= 0);
    return port;
}

static int status_has(struct agt_agent *a, const char *needle, int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    do {
        size_t len;
        char *s = agt_agent_status(a, &len);
        int found = strstr(s, needle) != NULL;
        free(s);
        if (found)
            return 1;
        usleep(20000);
    } while (cr_now_ms() < deadline);
    return 0;
}

/* ---- the agent against a fake relay ---- */

static void test_agent_tunnel_fake_relay(void **state)
{
    struct cr_auth_secret secret = {.oak = "oak-1", .user = "root", .password = "pw-1"};
    uint8_t salt[16], stored[32], token[32];
    char dir[128], services[128], cache_file[256], err[300];
    struct fake relay;
    struct echo echo;
    struct cr_link l, d;
    struct agt_agent *a = NULL;
    Camrelay__Frame *f;
    int closed_svc, closed_disp;
    (void)state;

    skip_without_certs();
    assert_int_equal(cr_auth_make_verifier(&secret, CR_AUTH_ITERATIONS_MIN, salt, stored), 0);
    fake_start(&relay);
    echo_start(&echo);
    subdir(dir, sizeof(dir), "state-relay");
    /* A cached relay: the agent goes there first and never needs the (dead) dispatcher. */
    char cached[1][CR_ADDR_STRLEN];
    cr_strlcpy(cached[0], relay.addr, CR_ADDR_STRLEN);
    assert_int_equal(
        agt_cache_store(dir, "cam-test", (const char(*)[CR_ADDR_STRLEN])cached, 1, 0), 0);
    snprintf(cache_file, sizeof(cache_file), "%s/cam-test.relay", dir);
    snprintf(services, sizeof(services), "rtsp=127.0.0.1:%u,http=127.0.0.1:%u", echo.port,
             closed_port(&closed_svc));
    char disp[64];
    snprintf(disp, sizeof(disp), "127.0.0.1:%u", closed_port(&closed_disp));

    char *argv[] = {"camrelay-agent", "--serial", "cam-test", "--oak", "oak-1", "--user", "root",
                    "--password", "pw-1", "--dispatcher", disp, "--ca", ca_pem,
                    "--services", services, "--state-dir", dir, "--connect", NULL};
    struct agt_config cfg = {0};
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(argv) - 1, argv), 0);
    if (agt_agent_create(&cfg, &a, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    assert_int_equal(agt_agent_start(a), 0);

    /* Login, welcome, keepalive. */
    fake_accept(&relay, &l, 10000);
    relay_login(&l, "cam-test", NULL, 0, salt, CR_AUTH_ITERATIONS_MIN, stored, 1000);
    send_ping(&l, 42);
    f = expect_frame(&l, CAMRELAY__FRAME__BODY_PONG);
    assert_int_equal(f->pong->seq, 42);
    cr_frame_free(f);
    assert_true(status_has(a, "cam-test online 127.0.0.1:", 2000));

    /* The control socket's status and press (already pressed by --connect). */
    int sv[2];
    char answer[512] = "";
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "status\n", 7), 7);
    assert_int_equal(agt_ctl_serve(a, sv[0]), 0);
    close(sv[0]);
    assert_true(read(sv[1], answer, sizeof(answer) - 1) > 0);
    close(sv[1]);
    assert_non_null(strstr(answer, "cam-test online "));
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "press\n", 6), 6);
    assert_int_equal(agt_ctl_serve(a, sv[0]), 0);
    close(sv[0]);
    memset(answer, 0, sizeof(answer));
    assert_true(read(sv[1], answer, sizeof(answer) - 1) > 0);
    close(sv[1]);
    assert_memory_equal(answer, "ok already", 10);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(write(sv[1], "reboot\n", 7), 7);
    assert_int_equal(agt_ctl_serve(a, sv[0]), -EINVAL);
    close(sv[0]);
    memset(answer, 0, sizeof(answer));
    assert_true(read(sv[1], answer, sizeof(answer) - 1) > 0);
    close(sv[1]);
    assert_memory_equal(answer, "error", 5);

    /* A stream to the echo service: data connection with the right token, bytes both ways,
     * then half-close: our close_notify reaches the service as EOF, its last words still
     * come back, then the agent's close_notify. */
    cr_random_bytes(token, sizeof(token));
    send_open_stream(&l, 7, "rtsp", token);
    fake_accept(&relay, &d, 10000);
    f = expect_frame(&d, CAMRELAY__FRAME__BODY_DATA_HELLO);
    assert_string_equal(f->data_hello->serial, "cam-test");
    assert_int_equal(f->data_hello->stream_id, 7);
    assert_int_equal(f->data_hello->token.len, 32);
    assert_memory_equal(f->data_hello->token.data, token, 32);
    cr_frame_free(f);
    {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__DataAccepted da = CAMRELAY__DATA_ACCEPTED__INIT;
        da.stream_id = 7;
        out.body_case = CAMRELAY__FRAME__BODY_DATA_ACCEPTED;
        out.data_accepted = &da;
        assert_int_equal(cr_link_write(&d, &out, 2000), 0);
    }
    assert_int_equal(cr_link_write_all(&d, "hello camera\n", 13, 2000), 0);
    raw_expect(&d, "hello camera\n");
    send_ping(&l, 43);
    bulk_echo(&d, 4u << 20);
    send_ping(&l, 44);
    assert_true(SSL_shutdown(d.ssl) >= 0);
    raw_expect(&d, "bye\n");
    char tail[16];
    assert_int_equal(raw_read(&d, tail, sizeof(tail), 5000), 0);
    cr_link_close(&d);
    pthread_join(echo.thread, NULL);
    close(echo.lfd);
    for (uint64_t seq = 43; seq <= 44; seq++) {
        f = expect_frame(&l, CAMRELAY__FRAME__BODY_PONG);
        assert_int_equal(f->pong->seq, seq);
        cr_frame_free(f);
    }

    /* A stream whose local service is down: StreamFailed on the tunnel, data conn closed. */
    cr_random_bytes(token, sizeof(token));
    send_open_stream(&l, 8, "http", token);
    fake_accept(&relay, &d, 10000);
    f = expect_frame(&d, CAMRELAY__FRAME__BODY_DATA_HELLO);
    assert_int_equal(f->data_hello->stream_id, 8);
    cr_frame_free(f);
    {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__DataAccepted da = CAMRELAY__DATA_ACCEPTED__INIT;
        da.stream_id = 8;
        out.body_case = CAMRELAY__FRAME__BODY_DATA_ACCEPTED;
        out.data_accepted = &da;
        assert_int_equal(cr_link_write(&d, &out, 2000), 0);
    }
    f = expect_frame(&l, CAMRELAY__FRAME__BODY_STREAM_FAILED);
    assert_int_equal(f->stream_failed->stream_id, 8);
    assert_non_null(strstr(f->stream_failed->reason, "unreachable"));
    cr_frame_free(f);
    assert_true(raw_read(&d, tail, sizeof(tail), 5000) <= 0);
    cr_link_close(&d);

    /* A service the agent does not offer: refused at once, no data connection. */
    send_open_stream(&l, 9, "ftp", token);
    f = expect_frame(&l, CAMRELAY__FRAME__BODY_STREAM_FAILED);
    assert_int_equal(f->stream_failed->stream_id, 9);
    cr_frame_free(f);

    /* Silence: after 3 x keepalive the agent declares the tunnel dead and comes back to the
     * cached relay. */
    uint64_t t0 = cr_now_ms();
    int rc = cr_link_read(&l, 10000, &f);
    assert_int_equal(rc, -ECONNRESET);
    uint64_t waited = cr_now_ms() - t0;
    assert_true(waited >= 2000 && waited < 8000);
    cr_link_close(&l);
    fake_accept(&relay, &l, 10000);
    f = expect_frame(&l, CAMRELAY__FRAME__BODY_TUNNEL_HELLO);
    assert_string_equal(f->tunnel_hello->auth->identity, "cam-test");
    cr_frame_free(f);

    /* ERR_AUTH from the relay: the agent forgets the cached relay (and asks a dispatcher). */
    cr_link_refuse(&l, CAMRELAY__STATUS__ERR_AUTH, "unknown camera or wrong secret", 0);
    cr_link_close(&l);
    struct stat st;
    uint64_t deadline = cr_now_ms() + 3000;
    while (stat(cache_file, &st) == 0 && cr_now_ms() < deadline)
        usleep(20000);
    assert_int_not_equal(stat(cache_file, &st), 0);
    assert_true(status_has(a, "cam-test dispatching", 3000));

    assert_int_equal(agt_agent_stop(a), 0);
    agt_agent_destroy(a);
    agt_config_free(&cfg);
    fake_stop(&relay);
    close(closed_svc);
    close(closed_disp);
}

/* ---- the agent held at a fake dispatcher, then sent to the fake relay ---- */

static void test_agent_dispatch_then_relay(void **state)
{
    struct cr_auth_secret secret = {.oak = "oak-2", .user = "admin", .password = "pw-2"};
    uint8_t salt[16], stored[32], ticket[CR_TICKET_LEN];
    char dir[128], disp_list[128], secrets[256], err[300];
    struct fake dispatcher, relay;
    struct cr_link dl, l;
    struct agt_agent *a = NULL;
    Camrelay__Frame *f;
    (void)state;

    skip_without_certs();
    assert_int_equal(cr_auth_make_verifier(&secret, CR_AUTH_ITERATIONS_MIN, salt, stored), 0);
    fake_start(&dispatcher);
    fake_start(&relay);
    subdir(dir, sizeof(dir), "state-dispatch");
    snprintf(secrets, sizeof(secrets), "%s/cam.secrets", dir);
    write_str(secrets, "oak=oak-2\nuser=admin\npassword=pw-2\n");
    /* The first dispatcher is down: the agent moves on to the second at once. */
    int closed_disp;
    snprintf(disp_list, sizeof(disp_list), "127.0.0.1:%u,%s", closed_port(&closed_disp),
             dispatcher.addr);

    char *argv[] = {"camrelay-agent", "--serial", "cam-disp", "--secrets-file", secrets,
                    "--dispatcher", disp_list, "--ca", ca_pem, "--services",
                    "rtsp=127.0.0.1:1,http=127.0.0.1:2", "--state-dir", dir, "--connect", NULL};
    struct agt_config cfg = {0};
    assert_int_equal(agt_config_load(&cfg, CR_ARRAY_SIZE(argv) - 1, argv), 0);
    if (agt_agent_create(&cfg, &a, err, sizeof(err)) < 0)
        fail_msg("%s", err);
    assert_int_equal(agt_agent_start(a), 0);

    fake_accept(&dispatcher, &dl, 10000);
    f = expect_frame(&dl, CAMRELAY__FRAME__BODY_AUTH_START);
    Camrelay__AuthStart *as = f->auth_start;
    assert_string_equal(as->identity, "cam-disp");
    assert_int_equal(cr_auth_start_check(as), 0);
    for (int i = 0; i < 2; i++) {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__Pending p = CAMRELAY__PENDING__INIT;
        p.hold_ms = 30000;
        out.body_case = CAMRELAY__FRAME__BODY_PENDING;
        out.pending = &p;
        assert_int_equal(cr_link_write(&dl, &out, 2000), 0);
    }
    assert_true(status_has(a, "cam-disp waiting-registration", 3000));
    /* "The registration arrives": challenge, proof, result with a ticket. */
    assert_int_equal(cr_auth_server_verify(&dl, as, salt, CR_AUTH_ITERATIONS_MIN, stored, 10000),
                     0);
    cr_frame_free(f);
    cr_random_bytes(ticket, sizeof(ticket));
    {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__DispatchResult dr = CAMRELAY__DISPATCH_RESULT__INIT;
        char *addrs[] = {relay.addr};
        dr.relay_name = "relay-1";
        dr.relay_addrs = addrs;
        dr.n_relay_addrs = 1;
        dr.ticket.data = ticket;
        dr.ticket.len = sizeof(ticket);
        dr.ticket_expires_unix = (uint64_t)cr_unix_now() + 300;
        out.body_case = CAMRELAY__FRAME__BODY_DISPATCH_RESULT;
        out.dispatch_result = &dr;
        assert_int_equal(cr_link_write(&dl, &out, 2000), 0);
    }
    cr_link_close(&dl);

    /* The relay gets the fresh ticket; the relay address is cached. */
    fake_accept(&relay, &l, 10000);
    relay_login(&l, "cam-disp", ticket, sizeof(ticket), salt, CR_AUTH_ITERATIONS_MIN, stored,
                5000);
    send_ping(&l, 1);
    f = expect_frame(&l, CAMRELAY__FRAME__BODY_PONG);
    cr_frame_free(f);
    char got[AGT_MAX_RELAYS][CR_ADDR_STRLEN];
    assert_int_equal(agt_cache_load(dir, "cam-disp", got, AGT_MAX_RELAYS), 1);
    assert_string_equal(got[0], relay.addr);
    assert_true(status_has(a, "cam-disp online", 2000));

    /* Stop: the tunnel is closed. */
    assert_int_equal(agt_agent_stop(a), 0);
    assert_int_equal(cr_link_read(&l, 5000, &f), -ECONNRESET);
    cr_link_close(&l);
    agt_agent_destroy(a);
    agt_config_free(&cfg);
    fake_stop(&dispatcher);
    fake_stop(&relay);
    close(closed_disp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agent_services_parse_good),
        cmocka_unit_test(test_agent_services_parse_hostile),
        cmocka_unit_test(test_agent_hostport_check),
        cmocka_unit_test(test_agent_backoff_schedule),
        cmocka_unit_test(test_agent_cache_roundtrip),
        cmocka_unit_test(test_agent_secrets_parse),
        cmocka_unit_test(test_agent_secrets_file_and_config),
        cmocka_unit_test(test_agent_ctl_client),
        cmocka_unit_test(test_agent_tunnel_fake_relay),
        cmocka_unit_test(test_agent_dispatch_then_relay),
    };
    signal(SIGPIPE, SIG_IGN);
    alarm(300); /* a hung test fails instead of blocking the build */
    cr_log_set_tag("agent-test");
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
