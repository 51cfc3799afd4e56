/* Tests for the relay's management server (control/mgmt.c) and its handler (control/relayd.c),
 * run in-process on a temporary socket and database without the data path (relay = NULL). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
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

#include "common/auth.h"
#include "common/frame.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "control/ctl_client.h"
#include "control/mgmt.h"
#include "control/pki.h"
#include "control/registry.h"
#include "control/relayd.h"
#include "relay/relay.h"
#include "tests/support/support.h"

#define TOKEN "0123456789abcdef-test-token"
#define IDLE_MS 1500

struct fixture {
    char dir[128];
    char sock[256], db[256], ca[256], addr[64];
    uint16_t lo, hi;
    SSL_CTX *server_tls;
    int with_relay; /* run the real data path too */
    struct rly_relay *relay;
    struct ctl_registry *reg;
    struct ctl_relayd *d;
    struct ctl_mgmt *m;
};

static const char *const services[] = {"rtsp", "http"};

static void start_daemon(struct fixture *f)
{
    char err[512];
    struct ctl_relayd_config rc = {
        .name = "relay-t",
        .internal_host = "127.0.0.1",
        .url_host = "relay-internal",
        .services = services,
        .n_services = 2,
        .port_lo = f->lo,
        .port_hi = f->hi,
        .iterations = 1000, /* the minimum: keeps the tests quick */
    };
    assert_int_equal(ctl_registry_open(f->db, &f->reg), 0);
    assert_int_equal(ctl_relayd_new(&rc, f->reg, &f->d), 0);
    if (f->with_relay) {
        struct rly_config dp = {
            .relay_name = "relay-t",
            .listen_external = "127.0.0.1:0",
            .tls = f->server_tls,
            .keepalive_ms = 1000,
            .max_conns = 64,
            .workers = 2,
            .on_event = ctl_relayd_on_event,
            .event_ctx = f->d,
        };
        assert_int_equal(rly_relay_start(&dp, &f->relay), 0);
        ctl_relayd_set_relay(f->d, f->relay);
    }
    assert_true(ctl_relayd_load_cameras(f->d) >= 0);
    struct ctl_mgmt_config mc = {
        .unix_path = f->sock,
        .tcp_listen = "127.0.0.1:0",
        .tls = f->server_tls,
        .token = TOKEN,
        .handler = ctl_relayd_handle,
        .handler_ctx = f->d,
        .idle_ms = IDLE_MS,
    };
    int rc2 = ctl_mgmt_start(&mc, &f->m, err, sizeof(err));
    if (rc2 < 0)
        fprintf(stderr, "ctl_mgmt_start: %s\n", err);
    assert_int_equal(rc2, 0);
    snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%u", ctl_mgmt_tcp_port(f->m));
}

static void stop_daemon(struct fixture *f)
{
    ctl_mgmt_stop(f->m);
    f->m = NULL;
    if (f->relay) {
        rly_relay_stop(f->relay);
        f->relay = NULL;
        ctl_relayd_drain_events(f->d);
    }
    ctl_relayd_free(f->d);
    f->d = NULL;
    ctl_registry_close(f->reg);
    f->reg = NULL;
}

static int setup_common(void **state, int with_relay)
{
    static struct fixture f;
    char err[512], cert[256], key[256], pki[160];

    memset(&f, 0, sizeof(f));
    if (test_tmpdir(f.dir, sizeof(f.dir)) < 0)
        return -1;
    /* The socket's directory does not exist yet: the server creates it. */
    snprintf(f.sock, sizeof(f.sock), "%s/run/relay.sock", f.dir);
    snprintf(f.db, sizeof(f.db), "%s/relay.db", f.dir);
    snprintf(pki, sizeof(pki), "%s/pki", f.dir);
    struct ctl_pki_opts po = {pki, "127.0.0.1", "127.0.0.1", 0};
    if (ctl_pki_init(&po, err, sizeof(err)) < 0) {
        fprintf(stderr, "pki: %s\n", err);
        return -1;
    }
    snprintf(cert, sizeof(cert), "%s/relay.pem", pki);
    snprintf(key, sizeof(key), "%s/relay.key", pki);
    snprintf(f.ca, sizeof(f.ca), "%s/ca.pem", pki);
    f.server_tls = cr_tls_server_ctx(cert, key, err, sizeof(err));
    if (!f.server_tls)
        return -1;
    /* Below the ephemeral range (so no outgoing connection holds one of these ports) and
     * unlikely to collide with another test run on this machine. */
    f.lo = (uint16_t)(21000 + (getpid() % 100) * 100);
    f.hi = (uint16_t)(f.lo + 99);
    f.with_relay = with_relay;
    start_daemon(&f);
    *state = &f;
    return 0;
}

static int setup(void **state)
{
    return setup_common(state, 0);
}

static int setup_with_relay(void **state)
{
    return setup_common(state, 1);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->m)
        stop_daemon(f);
    SSL_CTX_free(f->server_tls);
    test_rmtree(f->dir);
    return 0;
}

/* ---- client helpers ---- */

/* One request over a fresh Unix connection; returns the owned reply frame. */
static Camrelay__Frame *call_unix(struct fixture *f, Camrelay__MgmtRequest *req)
{
    struct ctl_client c;
    Camrelay__Frame *rep = NULL;
    assert_int_equal(ctl_client_connect_unix(&c, f->sock), 0);
    assert_int_equal(ctl_client_call(&c, req, &rep), 0);
    ctl_client_close(&c);
    assert_non_null(rep);
    assert_int_equal(rep->body_case, CAMRELAY__FRAME__BODY_MGMT_REPLY);
    return rep;
}

static Camrelay__Frame *do_register(struct fixture *f, const char *serial, const char *oak,
                                    const char *user, const char *password)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraRegister r = CAMRELAY__CAMERA_REGISTER__INIT;
    r.serial = (char *)serial;
    r.oak = (char *)oak;
    r.user = (char *)user;
    r.password = (char *)password;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
    req.camera_register = &r;
    return call_unix(f, &req);
}

static int register_status(struct fixture *f, const char *serial)
{
    Camrelay__Frame *rep = do_register(f, serial, "oak-1", "admin", "secret");
    int st = rep->mgmt_reply->status;
    cr_frame_free(rep);
    return st;
}

static Camrelay__Frame *do_select(struct fixture *f, int op, const char *serial)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    sel.serial = (char *)serial;
    req.op_case = op;
    if (op == CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST)
        req.camera_list = &sel;
    else
        req.camera_remove = &sel;
    return call_unix(f, &req);
}

static Camrelay__Frame *do_attach(struct fixture *f, const char *serial, const char *recorder)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraAttach a = CAMRELAY__CAMERA_ATTACH__INIT;
    a.serial = (char *)serial;
    a.recorder = (char *)recorder;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH;
    req.camera_attach = &a;
    return call_unix(f, &req);
}

static void assert_endpoints_ok(const struct fixture *f, const Camrelay__CameraInfo *ci)
{
    char url[128];
    assert_int_equal(ci->n_endpoints, 2);
    assert_string_equal(ci->endpoints[0]->service, "rtsp");
    assert_string_equal(ci->endpoints[1]->service, "http");
    assert_int_not_equal(ci->endpoints[0]->port, ci->endpoints[1]->port);
    for (int i = 0; i < 2; i++) {
        assert_in_range(ci->endpoints[i]->port, f->lo, f->hi);
        snprintf(url, sizeof(url), "%s://relay-internal:%u/", ci->endpoints[i]->service,
                 ci->endpoints[i]->port);
        assert_string_equal(ci->endpoints[i]->url, url);
    }
}

/* ---- tests ---- */

static void test_mgmt_register_then_list_shows_red(void **state)
{
    struct fixture *f = *state;
    struct stat st;

    /* The socket exists with mode 0660 in a directory the server created. */
    assert_int_equal(stat(f->sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0660);

    Camrelay__Frame *rep = do_register(f, "AXIS-00408C123456", "oak-1", "root", "pass");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    assert_int_equal(rep->mgmt_reply->n_cameras, 1);
    assert_string_equal(rep->mgmt_reply->cameras[0]->state, "red");
    assert_endpoints_ok(f, rep->mgmt_reply->cameras[0]);
    cr_frame_free(rep);

    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    const Camrelay__MgmtReply *r = rep->mgmt_reply;
    assert_int_equal(r->status, CAMRELAY__STATUS__OK);
    assert_int_equal(r->n_cameras, 1);
    const Camrelay__CameraInfo *ci = r->cameras[0];
    assert_string_equal(ci->serial, "AXIS-00408C123456");
    assert_string_equal(ci->state, "red");
    assert_false(ci->online);
    assert_int_equal(ci->last_seen_unix, 0);
    assert_string_equal(ci->relay, "relay-t");
    assert_false(ci->synced); /* no dispatcher here */
    assert_string_equal(ci->recorder, "");
    assert_endpoints_ok(f, ci);
    cr_frame_free(rep);

    /* The stored verifier is not the secret, and is what the secret derives. */
    struct ctl_camera cam;
    assert_int_equal(ctl_registry_camera_get(f->reg, "AXIS-00408C123456", &cam), 0);
    assert_int_equal(cam.verifier.iterations, 1000);
    uint8_t ck[32], sk[32];
    struct cr_auth_secret s = {"oak-1", "root", "pass"};
    assert_int_equal(cr_auth_client_key(&s, cam.verifier.salt, 1000, ck), 0);
    cr_auth_stored_key(ck, sk);
    assert_memory_equal(sk, cam.verifier.stored_key, 32);
}

static void test_mgmt_register_duplicate_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(register_status(f, "CAM-1"), CAMRELAY__STATUS__OK);
    Camrelay__Frame *rep = do_register(f, "CAM-1", "other", "other", "other");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_DUPLICATE);
    assert_string_equal(rep->mgmt_reply->message,
                        "camera CAM-1 is already registered on this relay");
    cr_frame_free(rep);
}

static void test_mgmt_register_validates_input(void **state)
{
    struct fixture *f = *state;
    char long_secret[300];
    memset(long_secret, 'x', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';
    char max_secret[257];
    memset(max_secret, 'y', 256);
    max_secret[256] = '\0';

    struct {
        const char *serial, *oak, *user, *pw;
        int status;
    } cases[] = {
        {"", "k", "u", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"bad serial", "k", "u", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM/1", "k", "u", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", "", "u", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", "k", "", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", "k", "u", "", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", long_secret, "u", "p", CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", "k", "u", long_secret, CAMRELAY__STATUS__ERR_BAD_REQUEST},
        {"CAM-2", max_secret, max_secret, max_secret, CAMRELAY__STATUS__OK},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Camrelay__Frame *rep = do_register(f, cases[i].serial, cases[i].oak, cases[i].user,
                                           cases[i].pw);
        assert_int_equal(rep->mgmt_reply->status, cases[i].status);
        cr_frame_free(rep);
    }
    /* A serial of 64 characters is one too many. */
    char serial[65];
    memset(serial, 'S', 64);
    serial[64] = '\0';
    assert_int_equal(register_status(f, serial), CAMRELAY__STATUS__ERR_BAD_REQUEST);
    serial[63] = '\0';
    assert_int_equal(register_status(f, serial), CAMRELAY__STATUS__OK);
}

static void test_mgmt_attach(void **state)
{
    struct fixture *f = *state;

    Camrelay__Frame *rep = do_attach(f, "NOPE", "rec-1");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(rep);

    assert_int_equal(register_status(f, "CAM-A"), CAMRELAY__STATUS__OK);
    rep = do_attach(f, "CAM-A", "rec-1");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    assert_string_equal(rep->mgmt_reply->message, "attached; camera is offline");
    assert_string_equal(rep->mgmt_reply->cameras[0]->recorder, "rec-1");
    assert_string_equal(rep->mgmt_reply->cameras[0]->state, "red"); /* green needs a tunnel */
    cr_frame_free(rep);

    rep = do_attach(f, "CAM-A", "bad recorder!");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_BAD_REQUEST);
    cr_frame_free(rep);

    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-A");
    assert_int_equal(rep->mgmt_reply->n_cameras, 1);
    assert_string_equal(rep->mgmt_reply->cameras[0]->recorder, "rec-1");
    cr_frame_free(rep);

    rep = do_attach(f, "CAM-A", ""); /* detach */
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    assert_string_equal(rep->mgmt_reply->cameras[0]->recorder, "");
    cr_frame_free(rep);
}

static void test_mgmt_remove_frees_ports(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(register_status(f, "CAM-R"), CAMRELAY__STATUS__OK);
    Camrelay__Frame *rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-R");
    uint32_t port0 = rep->mgmt_reply->cameras[0]->endpoints[0]->port;
    cr_frame_free(rep);

    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE, "CAM-R");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    cr_frame_free(rep);
    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE, "CAM-R");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(rep);
    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-R");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(rep);

    assert_int_equal(register_status(f, "CAM-S"), CAMRELAY__STATUS__OK);
    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-S");
    assert_int_equal(rep->mgmt_reply->cameras[0]->endpoints[0]->port, port0);
    cr_frame_free(rep);
}

static void test_mgmt_port_conflict_rolls_back(void **state)
{
    struct fixture *f = *state;
    char addr[64];

    /* Someone else holds the port the next registration would get. */
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", f->lo + 1);
    int blocker = cr_tcp_listen(addr, 0, 1);
    assert_true(blocker >= 0);

    Camrelay__Frame *rep = do_register(f, "CAM-X", "k", "u", "p");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_INTERNAL);
    assert_non_null(strstr(rep->mgmt_reply->message, "cannot listen"));
    assert_non_null(strstr(rep->mgmt_reply->message, "rolled back"));
    cr_frame_free(rep);

    struct ctl_camera cam;
    assert_int_equal(ctl_registry_camera_get(f->reg, "CAM-X", &cam), -ENOENT);
    /* The first port, bound then released on the way back, is free again. */
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", f->lo);
    int probe = cr_tcp_listen(addr, 0, 1);
    assert_true(probe >= 0);
    close(probe);

    close(blocker);
    assert_int_equal(register_status(f, "CAM-X"), CAMRELAY__STATUS__OK);
}

static void test_mgmt_unknown_op_is_bad_request(void **state)
{
    struct fixture *f = *state;
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__Frame *rep = call_unix(f, &req); /* no op at all */
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_BAD_REQUEST);
    cr_frame_free(rep);

    Camrelay__AccountAdd add = CAMRELAY__ACCOUNT_ADD__INIT;
    add.name = "r";
    add.password = "p";
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD;
    req.account_add = &add;
    rep = call_unix(f, &req);
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__ERR_BAD_REQUEST);
    cr_frame_free(rep);
}

/* Over TCP+TLS: a request's token decides. Returns the status. */
static int tcp_list_status(struct fixture *f, const char *token)
{
    struct ctl_client c;
    Camrelay__Frame *rep = NULL;
    char err[512];
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST;
    req.camera_list = &sel;

    int rc = ctl_client_connect_tls(&c, f->addr, f->ca, token, err, sizeof(err));
    if (rc < 0)
        fprintf(stderr, "connect: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(ctl_client_call(&c, &req, &rep), 0);
    int st = rep->mgmt_reply->status;
    if (st == CAMRELAY__STATUS__ERR_PERMISSION)
        assert_string_equal(rep->mgmt_reply->message, "management token missing or wrong");
    cr_frame_free(rep);
    ctl_client_close(&c);
    return st;
}

static void test_mgmt_tcp_needs_the_token(void **state)
{
    struct fixture *f = *state;
    char same_len[sizeof(TOKEN)];
    memcpy(same_len, TOKEN, sizeof(TOKEN));
    same_len[5] ^= 1;

    assert_int_equal(tcp_list_status(f, ""), CAMRELAY__STATUS__ERR_PERMISSION);
    assert_int_equal(tcp_list_status(f, "wrong"), CAMRELAY__STATUS__ERR_PERMISSION);
    assert_int_equal(tcp_list_status(f, same_len), CAMRELAY__STATUS__ERR_PERMISSION);
    assert_int_equal(tcp_list_status(f, TOKEN "x"), CAMRELAY__STATUS__ERR_PERMISSION);
    assert_int_equal(tcp_list_status(f, TOKEN), CAMRELAY__STATUS__OK);

    /* Several requests on one authenticated connection. */
    struct ctl_client c;
    char err[512];
    assert_int_equal(ctl_client_connect_tls(&c, f->addr, f->ca, TOKEN, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++) {
        Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
        Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
        Camrelay__Frame *rep = NULL;
        req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST;
        req.camera_list = &sel;
        assert_int_equal(ctl_client_call(&c, &req, &rep), 0);
        assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
        assert_int_equal(rep->mgmt_reply->id, req.id);
        cr_frame_free(rep);
    }
    ctl_client_close(&c);
}

/* Reads until the peer closes; 1 if it did within timeout_ms. */
static int closed_by_peer(int fd, int timeout_ms)
{
    char buf[256];
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    cr_set_nonblock(fd, 1);
    while (cr_now_ms() < deadline) {
        ssize_t r = read(fd, buf, sizeof(buf));
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
        if (r < 0 && errno != EAGAIN)
            return 0;
        usleep(10000);
    }
    return 0;
}

static void test_mgmt_oversized_frame_closes_only_that_client(void **state)
{
    struct fixture *f = *state;
    int fd = cr_unix_connect(f->sock);
    assert_true(fd >= 0);
    uint32_t len = CTL_MGMT_MAX_REQUEST + 1;
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    assert_int_equal(write(fd, hdr, 4), 4);
    assert_true(closed_by_peer(fd, 3000));
    close(fd);

    /* The server still answers the next client. */
    assert_int_equal(register_status(f, "CAM-AFTER"), CAMRELAY__STATUS__OK);
}

static void test_mgmt_garbage_and_wrong_frames_close(void **state)
{
    struct fixture *f = *state;

    /* A frame that does not unpack. */
    int fd = cr_unix_connect(f->sock);
    assert_true(fd >= 0);
    uint8_t junk[4 + 8] = {0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    assert_true(closed_by_peer(fd, 3000));
    close(fd);

    /* A well-formed frame that is not a MgmtRequest. */
    struct cr_link l;
    fd = cr_unix_connect(f->sock);
    assert_true(fd >= 0);
    cr_link_init_plain(&l, fd);
    Camrelay__Frame fr = CAMRELAY__FRAME__INIT;
    Camrelay__Ping p = CAMRELAY__PING__INIT;
    fr.body_case = CAMRELAY__FRAME__BODY_PING;
    fr.ping = &p;
    assert_int_equal(cr_link_write(&l, &fr, 1000), 0);
    Camrelay__Frame *in = NULL;
    assert_int_equal(cr_link_read(&l, 3000, &in), -ECONNRESET);
    cr_link_close(&l);

    /* A header, then silence mid-frame: closed (10 s body deadline would be long for a
     * unit test, so check the idle rule instead: nothing at all for IDLE_MS). */
    fd = cr_unix_connect(f->sock);
    assert_true(fd >= 0);
    uint64_t t0 = cr_now_ms();
    assert_true(closed_by_peer(fd, IDLE_MS + 3000));
    assert_true(cr_now_ms() - t0 >= IDLE_MS - 100);
    close(fd);

    assert_int_equal(register_status(f, "CAM-STILL"), CAMRELAY__STATUS__OK);
}

static void test_mgmt_tcp_flood_does_not_lock_out_unix(void **state)
{
    struct fixture *f = *state;
    int fds[CTL_MGMT_MAX_CONNS + 1];

    /* Fill every TCP slot with a peer that never even starts its TLS handshake. */
    for (int i = 0; i < CTL_MGMT_MAX_CONNS; i++) {
        fds[i] = cr_tcp_connect(f->addr, 2000);
        assert_true(fds[i] >= 0);
    }
    usleep(200000);
    /* One more is turned away at once... */
    fds[CTL_MGMT_MAX_CONNS] = cr_tcp_connect(f->addr, 2000);
    assert_true(fds[CTL_MGMT_MAX_CONNS] >= 0);
    assert_true(closed_by_peer(fds[CTL_MGMT_MAX_CONNS], 2000));
    /* ...while the local admin still gets answers. */
    assert_int_equal(register_status(f, "CAM-LOCAL"), CAMRELAY__STATUS__OK);
    for (int i = 0; i <= CTL_MGMT_MAX_CONNS; i++)
        close(fds[i]);
}

static void test_mgmt_second_server_on_same_socket_refused(void **state)
{
    struct fixture *f = *state;
    struct ctl_mgmt *m2 = NULL;
    char err[512];
    struct ctl_mgmt_config mc = {
        .unix_path = f->sock,
        .handler = ctl_relayd_handle,
        .handler_ctx = f->d,
    };
    assert_int_equal(ctl_mgmt_start(&mc, &m2, err, sizeof(err)), -EADDRINUSE);
    assert_null(m2);
    /* The first one is untouched. */
    assert_int_equal(register_status(f, "CAM-1"), CAMRELAY__STATUS__OK);
}

static void test_mgmt_restart_keeps_cameras_and_ports(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(register_status(f, "CAM-P1"), CAMRELAY__STATUS__OK);
    assert_int_equal(register_status(f, "CAM-P2"), CAMRELAY__STATUS__OK);
    Camrelay__Frame *rep = do_attach(f, "CAM-P2", "rec-9");
    cr_frame_free(rep);
    Camrelay__Frame *before = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(before->mgmt_reply->n_cameras, 2);

    stop_daemon(f);
    start_daemon(f);

    Camrelay__Frame *after = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(after->mgmt_reply->n_cameras, 2);
    for (size_t i = 0; i < 2; i++) {
        const Camrelay__CameraInfo *a = before->mgmt_reply->cameras[i];
        const Camrelay__CameraInfo *b = after->mgmt_reply->cameras[i];
        assert_string_equal(a->serial, b->serial);
        assert_string_equal(a->recorder, b->recorder);
        assert_int_equal(a->n_endpoints, b->n_endpoints);
        for (size_t j = 0; j < a->n_endpoints; j++) {
            assert_int_equal(a->endpoints[j]->port, b->endpoints[j]->port);
            assert_string_equal(a->endpoints[j]->url, b->endpoints[j]->url);
        }
    }
    assert_string_equal(after->mgmt_reply->cameras[1]->recorder, "rec-9");
    cr_frame_free(after);
    cr_frame_free(before);
}

static void test_mgmt_events_are_persisted_off_thread(void **state)
{
    struct fixture *f = *state;
    struct ctl_camera cam;
    assert_int_equal(register_status(f, "CAM-E"), CAMRELAY__STATUS__OK);

    ctl_relayd_on_event(f->d, "CAM-E", 1, "203.0.113.7:40123", 0);
    /* Queued, not yet written: the callback never touches the database. */
    assert_int_equal(ctl_registry_camera_get(f->reg, "CAM-E", &cam), 0);
    assert_int_equal(cam.last_seen_unix, 0);
    ctl_relayd_on_event(f->d, "CAM-E", 0, "203.0.113.7:40123", 4096);
    ctl_relayd_on_event(f->d, "GONE", 0, "", 1); /* removed meanwhile: ignored */

    ctl_relayd_drain_events(f->d);
    assert_int_equal(ctl_registry_camera_get(f->reg, "CAM-E", &cam), 0);
    assert_true(cam.last_seen_unix > 0);
    assert_string_equal(cam.site_addr, "203.0.113.7:40123");
    assert_int_equal(cam.bytes_relayed, 4096);

    Camrelay__Frame *rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-E");
    const Camrelay__CameraInfo *ci = rep->mgmt_reply->cameras[0];
    assert_string_equal(ci->site_addr, "203.0.113.7:40123");
    assert_int_equal(ci->last_seen_unix, cam.last_seen_unix);
    assert_int_equal(ci->bytes_relayed, 4096);
    assert_string_equal(ci->state, "red");
    cr_frame_free(rep);

    /* A flood beyond the queue drops events instead of blocking. */
    for (int i = 0; i < CTL_RELAYD_EVENTS_MAX + 100; i++)
        ctl_relayd_on_event(f->d, "CAM-E", i & 1, "203.0.113.7:1", (uint64_t)i);
    ctl_relayd_drain_events(f->d);
}

struct reg_thread {
    struct fixture *f;
    int idx;
    int status;
};

static void *register_thread(void *arg)
{
    struct reg_thread *t = arg;
    char serial[32];
    snprintf(serial, sizeof(serial), "CONC-%02d", t->idx);
    struct ctl_client c;
    Camrelay__Frame *rep = NULL;
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraRegister r = CAMRELAY__CAMERA_REGISTER__INIT;
    r.serial = serial;
    r.oak = "k";
    r.user = "u";
    r.password = "p";
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
    req.camera_register = &r;
    t->status = -1;
    if (ctl_client_connect_unix(&c, t->f->sock) == 0) {
        if (ctl_client_call(&c, &req, &rep) == 0)
            t->status = rep->mgmt_reply->status;
        cr_frame_free(rep);
        ctl_client_close(&c);
    }
    return NULL;
}

static void test_mgmt_concurrent_registrations_get_distinct_ports(void **state)
{
    struct fixture *f = *state;
    enum { N = 12 };
    pthread_t th[N];
    struct reg_thread t[N];
    for (int i = 0; i < N; i++) {
        t[i] = (struct reg_thread){f, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, register_thread, &t[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].status, CAMRELAY__STATUS__OK);
    }
    Camrelay__Frame *rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(rep->mgmt_reply->n_cameras, N);
    uint8_t used[100] = {0};
    for (size_t i = 0; i < rep->mgmt_reply->n_cameras; i++) {
        for (size_t j = 0; j < 2; j++) {
            uint32_t p = rep->mgmt_reply->cameras[i]->endpoints[j]->port;
            assert_in_range(p, f->lo, f->hi);
            assert_int_equal(used[p - f->lo], 0);
            used[p - f->lo] = 1;
        }
    }
    cr_frame_free(rep);
}

static void test_mgmt_stop_with_clients_connected(void **state)
{
    struct fixture *f = *state;
    struct cr_link l;
    char err[512];
    SSL_CTX *client = cr_tls_client_ctx(f->ca, err, sizeof(err));
    assert_non_null(client);

    /* An idle Unix client and an idle TLS client: stop must not wait for their timeouts. */
    int fd = cr_unix_connect(f->sock);
    assert_true(fd >= 0);
    assert_int_equal(cr_link_connect_tls(&l, client, f->addr, 3000, err, sizeof(err)), 0);
    usleep(50000);
    uint64_t t0 = cr_now_ms();
    stop_daemon(f);
    assert_true(cr_now_ms() - t0 < 1000);
    close(fd);
    cr_link_close(&l);
    SSL_CTX_free(client);

    struct stat st;
    assert_int_not_equal(stat(f->sock, &st), 0); /* socket file removed */
}

/* 1 if something accepts TCP connections on 127.0.0.1:port. */
static int port_accepts(uint16_t port)
{
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    int fd = cr_tcp_connect(addr, 1000);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* 1 once nothing accepts on 127.0.0.1:port any more, within timeout_ms. */
static int port_closed_within(uint16_t port, int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (!port_accepts(port))
            return 1;
        if (cr_now_ms() >= deadline)
            return 0;
        usleep(20000);
    }
}

/* Registers serial, which must succeed; its two endpoint ports go to p0 and p1. Returns the
 * reply (the caller frees it). */
static Camrelay__Frame *register_ok(struct fixture *f, const char *serial, uint16_t *p0,
                                    uint16_t *p1)
{
    Camrelay__Frame *rep = do_register(f, serial, "oak", "user", "pw");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    *p0 = (uint16_t)rep->mgmt_reply->cameras[0]->endpoints[0]->port;
    *p1 = (uint16_t)rep->mgmt_reply->cameras[0]->endpoints[1]->port;
    return rep;
}

static void test_mgmt_with_data_path_endpoints_follow_registrations(void **state)
{
    struct fixture *f = *state;
    uint16_t p0, p1;
    Camrelay__Frame *rep = register_ok(f, "CAM-DP", &p0, &p1);
    /* The data path's worker takes the camera asynchronously (rly_relay_camera_put queues
     * it), yet the reply already names the path its streams will take. */
    assert_true(strlen(rep->mgmt_reply->cameras[0]->data_path) > 0);
    cr_frame_free(rep);
    /* The data path owns the listeners now. */
    assert_true(port_accepts(p0));
    assert_true(port_accepts(p1));

    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "CAM-DP");
    const Camrelay__CameraInfo *ci = rep->mgmt_reply->cameras[0];
    assert_string_equal(ci->state, "red");
    assert_false(ci->online);
    assert_int_equal(ci->open_streams, 0);
    assert_true(strlen(ci->data_path) > 0);
    cr_frame_free(rep);

    /* A restart brings the same listeners back. */
    stop_daemon(f);
    assert_false(port_accepts(p0));
    start_daemon(f);
    assert_true(port_accepts(p0));
    assert_true(port_accepts(p1));

    rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE, "CAM-DP");
    assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
    cr_frame_free(rep);
    /* The worker closes them asynchronously. */
    assert_true(port_closed_within(p0, 5000));
    assert_true(port_closed_within(p1, 5000));

    /* Register, remove, register at once: the second camera gets the freed ports even though
     * the data path closes the first one's listeners asynchronously. */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(register_status(f, "CAM-Q1"), CAMRELAY__STATUS__OK);
        rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE, "CAM-Q1");
        assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
        cr_frame_free(rep);
        rep = do_register(f, "CAM-Q2", "oak", "user", "pw");
        assert_int_equal(rep->mgmt_reply->status, CAMRELAY__STATUS__OK);
        assert_int_equal(rep->mgmt_reply->cameras[0]->endpoints[0]->port, p0);
        cr_frame_free(rep);
        assert_true(port_accepts(p0));
        rep = do_select(f, CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE, "CAM-Q2");
        cr_frame_free(rep);
    }
}

/* Stands in for the listener of a relay that was killed: the kernel lets it go only when it
 * has torn that relay's io_uring down, seconds later on older kernels. */
struct held_port {
    int fd;
    unsigned hold_ms;
};

static void *release_port_later(void *arg)
{
    struct held_port *h = arg;
    usleep(h->hold_ms * 1000);
    close(h->fd);
    return NULL;
}

/* A restart whose endpoint ports are still held for a moment waits for them rather than
 * leaving those endpoints closed until the next restart. */
static void test_mgmt_restart_waits_for_ports_still_held(void **state)
{
    struct fixture *f = *state;
    uint16_t p0, p1;
    cr_frame_free(register_ok(f, "CAM-HELD", &p0, &p1));
    stop_daemon(f);

    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", p0);
    struct held_port h = {.fd = cr_tcp_listen(addr, 0, 4), .hold_ms = 700};
    assert_true(h.fd >= 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, release_port_later, &h), 0);
    start_daemon(f); /* loads the camera while p0 is still held */
    pthread_join(t, NULL);
    assert_true(port_accepts(p0)); /* the relay's listener: ours is closed */
    assert_true(port_accepts(p1));
}

/* A reply too big for one frame is trimmed and says so. */
static void test_mgmt_reply_fit_trims_big_lists(void **state)
{
    (void)state;
    struct ctl_mgmt_reply r;
    ctl_mgmt_reply_init(&r, 7);
    for (int i = 0; i < 5000; i++) {
        char serial[32], url[64];
        snprintf(serial, sizeof(serial), "CAMERA-SERIAL-%06d", i);
        Camrelay__CameraInfo *ci = ctl_mgmt_reply_add_camera(&r);
        ctl_mgmt_str(&ci->serial, serial);
        ctl_mgmt_str(&ci->state, "red");
        snprintf(url, sizeof(url), "rtsp://relay-internal.example:%d/", 20000 + i);
        ctl_mgmt_camera_add_endpoint(ci, "rtsp", (uint32_t)(20000 + i), url);
    }
    size_t dropped = ctl_mgmt_reply_fit(&r, 64 * 1024);
    assert_true(dropped > 0);
    assert_int_equal(r.msg.n_cameras + dropped, 5000);
    assert_non_null(strstr(r.msg.message, "of 5000 cameras"));
    Camrelay__Frame fr = CAMRELAY__FRAME__INIT;
    fr.body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    fr.mgmt_reply = &r.msg;
    size_t sz = cr_frame_encoded_size(&fr);
    assert_true(sz <= 64 * 1024);
    assert_true(sz > 60 * 1024); /* and not trimmed much more than needed */
    ctl_mgmt_reply_free(&r);
}

int main(void)
{
    /* The tests provoke errors on purpose: quiet unless TEST_LOG is set. */
    cr_log_level = getenv("TEST_LOG") ? CR_LOG_DEBUG : -1;
    signal(SIGPIPE, SIG_IGN); /* as in the programs: a closed peer is an error, not a kill */
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_mgmt_register_then_list_shows_red),
        T(test_mgmt_register_duplicate_refused),
        T(test_mgmt_register_validates_input),
        T(test_mgmt_attach),
        T(test_mgmt_remove_frees_ports),
        T(test_mgmt_port_conflict_rolls_back),
        T(test_mgmt_unknown_op_is_bad_request),
        T(test_mgmt_tcp_needs_the_token),
        T(test_mgmt_oversized_frame_closes_only_that_client),
        T(test_mgmt_garbage_and_wrong_frames_close),
        T(test_mgmt_tcp_flood_does_not_lock_out_unix),
        T(test_mgmt_second_server_on_same_socket_refused),
        T(test_mgmt_restart_keeps_cameras_and_ports),
        T(test_mgmt_events_are_persisted_off_thread),
        T(test_mgmt_concurrent_registrations_get_distinct_ports),
        T(test_mgmt_stop_with_clients_connected),
        cmocka_unit_test_setup_teardown(test_mgmt_with_data_path_endpoints_follow_registrations,
                                        setup_with_relay, teardown),
        cmocka_unit_test_setup_teardown(test_mgmt_restart_waits_for_ports_still_held,
                                        setup_with_relay, teardown),
        cmocka_unit_test(test_mgmt_reply_fit_trims_big_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
