/* Tests for control/dispatch*.c: the dispatcher in-process, driven over TLS and its mgmt socket. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "control/dispatch.h"
#include "control/registry.h"
#include "tests/support/support.h"

#define IO_MS 5000
#define RELAY1_ADDRS "relay1.example:8443,10.0.0.1:8443"

static char g_certdir[128];
static char g_ca[256], g_cert[256], g_key[256];
static SSL_CTX *g_cli;

struct fx {
    char dir[128];
    char db[256];
    char sock[256];
    char addr[64];
    struct ctl_dispatch *d;
    struct ctl_dispatch_config cfg;
};

struct cam {
    const char *serial, *oak, *user, *password;
};

static const struct cam CAM1 = {"AC:CC:8E:00:00:01", "OAK-111-222", "root", "camera-pass-1"};
static const struct cam CAM2 = {"AC:CC:8E:00:00:02", "OAK-333-444", "admin", "camera-pass-2"};

/* ---- fixture ---- */

static int dispatcher_start(struct fx *fx)
{
    char err[512];
    int rc = ctl_dispatch_start(&fx->cfg, &fx->d, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "ctl_dispatch_start: %s\n", err);
        return rc;
    }
    snprintf(fx->addr, sizeof(fx->addr), "127.0.0.1:%u", ctl_dispatch_port(fx->d));
    return 0;
}

static void dispatcher_restart(struct fx *fx)
{
    ctl_dispatch_stop(fx->d);
    fx->d = NULL;
    assert_int_equal(dispatcher_start(fx), 0);
}

static int group_setup(void **state)
{
    char err[256];
    (void)state;
    cr_log_set_tag("test-dispatch");
    cr_log_set_level_name(getenv("CR_TEST_LOG") ? getenv("CR_TEST_LOG") : "error");
    if (test_tmpdir(g_certdir, sizeof(g_certdir)) < 0 ||
        test_certs_make(g_certdir, "IP:127.0.0.1") < 0)
        return -1;
    snprintf(g_ca, sizeof(g_ca), "%s/ca.pem", g_certdir);
    snprintf(g_cert, sizeof(g_cert), "%s/server.pem", g_certdir);
    snprintf(g_key, sizeof(g_key), "%s/server.key", g_certdir);
    g_cli = cr_tls_client_ctx(g_ca, err, sizeof(err));
    if (!g_cli) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(g_cli);
    test_rmtree(g_certdir);
    return 0;
}

static int setup(void **state)
{
    struct fx *fx = cr_xcalloc(1, sizeof(*fx));
    if (test_tmpdir(fx->dir, sizeof(fx->dir)) < 0)
        return -1;
    snprintf(fx->db, sizeof(fx->db), "%s/dispatch.db", fx->dir);
    snprintf(fx->sock, sizeof(fx->sock), "%s/dispatch.sock", fx->dir);
    fx->cfg = (struct ctl_dispatch_config){
        .listen = "127.0.0.1:0",
        .cert_file = g_cert,
        .key_file = g_key,
        .db_path = fx->db,
        .mgmt_socket = fx->sock,
        .hold_ms = 30000,
        .ticket_ttl_s = 300,
    };
    if (dispatcher_start(fx) < 0)
        return -1;
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fx *fx = *state;
    ctl_dispatch_stop(fx->d);
    test_rmtree(fx->dir);
    free(fx);
    return 0;
}

/* ---- management client ---- */

/* One request on a fresh connection; returns the reply frame (owned). */
static Camrelay__Frame *mgmt_call(struct fx *fx, Camrelay__MgmtRequest *req)
{
    struct cr_link l;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *out = NULL;
    int fd = cr_unix_connect(fx->sock);
    assert_true(fd >= 0);
    cr_link_init_plain(&l, fd);
    f.body_case = CAMRELAY__FRAME__BODY_MGMT_REQUEST;
    f.mgmt_request = req;
    assert_int_equal(cr_link_write(&l, &f, IO_MS), 0);
    assert_int_equal(cr_link_read(&l, IO_MS, &out), 0);
    assert_int_equal(out->body_case, CAMRELAY__FRAME__BODY_MGMT_REPLY);
    assert_int_equal(out->mgmt_reply->id, req->id);
    cr_link_close(&l);
    return out;
}

static int account_add(struct fx *fx, const char *name, const char *password)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__AccountAdd a = CAMRELAY__ACCOUNT_ADD__INIT;
    a.name = (char *)name;
    a.password = (char *)password;
    req.id = 7;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD;
    req.account_add = &a;
    Camrelay__Frame *r = mgmt_call(fx, &req);
    int st = r->mgmt_reply->status;
    cr_frame_free(r);
    return st;
}

static Camrelay__Frame *list_call(struct fx *fx, int op, const char *filter)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    sel.serial = (char *)filter;
    req.id = 9;
    req.op_case = op;
    if (op == CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST)
        req.relay_list = &sel;
    else
        req.camera_list = &sel;
    return mgmt_call(fx, &req);
}

/* ---- relay client ---- */

static void fill_key(uint8_t key[32], uint8_t seed)
{
    for (int i = 0; i < 32; i++)
        key[i] = (uint8_t)(seed + i);
}

/* Reads the next frame that is not a keepalive (answers pings). */
static int read_skip_pings(struct cr_link *l, Camrelay__Frame **out)
{
    for (;;) {
        int rc = cr_link_read(l, IO_MS, out);
        if (rc < 0)
            return rc;
        if ((*out)->body_case != CAMRELAY__FRAME__BODY_PING)
            return 0;
        Camrelay__Frame f = CAMRELAY__FRAME__INIT;
        Camrelay__Pong p = CAMRELAY__PONG__INIT;
        p.seq = (*out)->ping->seq;
        f.body_case = CAMRELAY__FRAME__BODY_PONG;
        f.pong = &p;
        cr_frame_free(*out);
        *out = NULL;
        if (cr_link_write(l, &f, IO_MS) < 0)
            return -EPIPE;
    }
}

/* Logs a relay in. Returns CAMRELAY__STATUS__OK with *l open, a refusal status (link closed),
 * or -1 on a link failure. */
static int relay_login(struct fx *fx, struct cr_link *l, const char *name, const char *password,
                       const char *addrs, uint8_t key_seed)
{
    char err[256], list[256];
    uint8_t nonce[CR_AUTH_NONCE_LEN], key[32];
    char *items[4];
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *in = NULL;
    Camrelay__RelayHello h = CAMRELAY__RELAY_HELLO__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    struct cr_auth_client c = {.secret = {.password = password}};
    int st = -1;

    assert_int_equal(cr_link_connect_tls(l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    cr_random_bytes(nonce, sizeof(nonce));
    fill_key(key, key_seed);
    cr_strlcpy(list, addrs, sizeof(list));
    size_t n = 0;
    for (char *s = strtok(list, ","); s && n < 4; s = strtok(NULL, ","))
        items[n++] = s;
    as.identity = (char *)name;
    as.client_nonce.data = nonce;
    as.client_nonce.len = sizeof(nonce);
    h.auth = &as;
    h.n_public_addrs = n;
    h.public_addrs = items;
    h.ticket_key.data = key;
    h.ticket_key.len = sizeof(key);
    f.body_case = CAMRELAY__FRAME__BODY_RELAY_HELLO;
    f.relay_hello = &h;
    assert_int_equal(cr_link_write(l, &f, IO_MS), 0);

    if (cr_link_read(l, IO_MS, &in) < 0)
        goto out_close;
    if (in->body_case == CAMRELAY__FRAME__BODY_REFUSAL) {
        st = in->refusal->status;
        goto out_close;
    }
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_AUTH_CHALLENGE);
    assert_int_equal(cr_auth_client_respond(l, &c, name, nonce, sizeof(nonce), in->auth_challenge),
                     0);
    cr_auth_client_forget(&c);
    cr_frame_free(in);
    in = NULL;
    if (cr_link_read(l, IO_MS, &in) < 0)
        goto out_close;
    if (in->body_case == CAMRELAY__FRAME__BODY_REFUSAL) {
        st = in->refusal->status;
        goto out_close;
    }
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_RELAY_WELCOME);
    assert_true(in->relay_welcome->keepalive_ms > 0);
    cr_frame_free(in);
    return CAMRELAY__STATUS__OK;

out_close:
    cr_frame_free(in);
    cr_link_close(l);
    return st;
}

/* Sends SyncCameras with the given cameras; returns the Ack's status (message into msg). */
static int relay_sync(struct cr_link *l, uint64_t seq, const struct cam *cams, size_t n, int full,
                      char *msg, size_t cap)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *in = NULL;
    Camrelay__SyncCameras s = CAMRELAY__SYNC_CAMERAS__INIT;
    Camrelay__CameraRecord recs[4], *ptrs[4];
    uint8_t salts[4][CR_AUTH_SALT_LEN], keys[4][CR_AUTH_KEY_LEN];

    assert_true(n <= 4);
    for (size_t i = 0; i < n; i++) {
        struct cr_auth_secret sec = {cams[i].oak, cams[i].user, cams[i].password};
        camrelay__camera_record__init(&recs[i]);
        assert_int_equal(cr_auth_make_verifier(&sec, CR_AUTH_ITERATIONS_MIN, salts[i], keys[i]),
                         0);
        recs[i].serial = (char *)cams[i].serial;
        recs[i].salt.data = salts[i];
        recs[i].salt.len = CR_AUTH_SALT_LEN;
        recs[i].iterations = CR_AUTH_ITERATIONS_MIN;
        recs[i].stored_key.data = keys[i];
        recs[i].stored_key.len = CR_AUTH_KEY_LEN;
        ptrs[i] = &recs[i];
    }
    s.seq = seq;
    s.n_cameras = n;
    s.cameras = ptrs;
    s.full = full;
    f.body_case = CAMRELAY__FRAME__BODY_SYNC_CAMERAS;
    f.sync_cameras = &s;
    assert_int_equal(cr_link_write(l, &f, IO_MS), 0);
    assert_int_equal(read_skip_pings(l, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_ACK);
    assert_int_equal(in->ack->seq, seq);
    int st = in->ack->status;
    if (msg)
        cr_strlcpy(msg, in->ack->message, cap);
    cr_frame_free(in);
    return st;
}

static int relay_unregister(struct cr_link *l, uint64_t seq, const char *serial)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *in = NULL;
    Camrelay__UnregisterCamera u = CAMRELAY__UNREGISTER_CAMERA__INIT;
    u.seq = seq;
    u.serial = (char *)serial;
    f.body_case = CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA;
    f.unregister_camera = &u;
    assert_int_equal(cr_link_write(l, &f, IO_MS), 0);
    assert_int_equal(read_skip_pings(l, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_ACK);
    assert_int_equal(in->ack->seq, seq);
    int st = in->ack->status;
    cr_frame_free(in);
    return st;
}

/* account + login + sync of CAM1, the common start of most tests. */
static void relay1_with_cam1(struct fx *fx, struct cr_link *relay)
{
    assert_int_equal(account_add(fx, "relay1", "relay1-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_login(fx, relay, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    assert_int_equal(relay_sync(relay, 1, &CAM1, 1, 1, NULL, 0), CAMRELAY__STATUS__OK);
}

/* ---- agent client ---- */

static void agent_hello(struct fx *fx, struct cr_link *l, const char *serial, uint8_t *nonce)
{
    char err[256];
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    assert_int_equal(cr_link_connect_tls(l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    as.identity = (char *)serial;
    as.client_nonce.data = nonce;
    as.client_nonce.len = CR_AUTH_NONCE_LEN;
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_START;
    f.auth_start = &as;
    assert_int_equal(cr_link_write(l, &f, IO_MS), 0);
}

static void send_proof(struct cr_link *l, const uint8_t proof[CR_AUTH_KEY_LEN])
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthProof p = CAMRELAY__AUTH_PROOF__INIT;
    p.client_proof.data = (uint8_t *)proof;
    p.client_proof.len = CR_AUTH_KEY_LEN;
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_PROOF;
    f.auth_proof = &p;
    assert_int_equal(cr_link_write(l, &f, IO_MS), 0);
}

/* Computes this session's proof the way cr_auth_client_respond does, so a test can keep it. */
static void make_proof(struct cr_link *l, const struct cam *cam, const uint8_t *nonce,
                       const Camrelay__AuthChallenge *ch, uint8_t proof[CR_AUTH_KEY_LEN])
{
    struct cr_auth_secret sec = {cam->oak, cam->user, cam->password};
    struct cr_auth_transcript t = {0};
    uint8_t ck[CR_AUTH_KEY_LEN];
    assert_int_equal(cr_auth_client_key(&sec, ch->salt.data, ch->iterations, ck), 0);
    t.identity = cam->serial;
    t.client_nonce = nonce;
    t.client_nonce_len = CR_AUTH_NONCE_LEN;
    t.server_nonce = ch->server_nonce.data;
    t.server_nonce_len = ch->server_nonce.len;
    t.salt = ch->salt.data;
    t.iterations = ch->iterations;
    assert_int_equal(cr_auth_tls_binding(l->ssl, t.binding), 0);
    cr_auth_client_proof(ck, &t, proof);
}

/* Runs a whole agent login and returns the dispatcher's last frame (owned): DispatchResult or
 * Refusal. Pending frames are skipped. If proof_out is set, the proof sent is copied there. */
static Camrelay__Frame *agent_login(struct fx *fx, const struct cam *cam,
                                    uint8_t proof_out[CR_AUTH_KEY_LEN])
{
    struct cr_link l;
    uint8_t nonce[CR_AUTH_NONCE_LEN], proof[CR_AUTH_KEY_LEN];
    Camrelay__Frame *in = NULL;

    cr_random_bytes(nonce, sizeof(nonce));
    agent_hello(fx, &l, cam->serial, nonce);
    do {
        cr_frame_free(in);
        in = NULL;
        assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    } while (in->body_case == CAMRELAY__FRAME__BODY_PENDING);
    if (in->body_case == CAMRELAY__FRAME__BODY_AUTH_CHALLENGE) {
        make_proof(&l, cam, nonce, in->auth_challenge, proof);
        send_proof(&l, proof);
        if (proof_out)
            memcpy(proof_out, proof, sizeof(proof));
        cr_frame_free(in);
        in = NULL;
        assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    }
    cr_link_close(&l);
    return in;
}

static int refusal_status(Camrelay__Frame *f)
{
    assert_int_equal(f->body_case, CAMRELAY__FRAME__BODY_REFUSAL);
    return f->refusal->status;
}

/* The camera's state in the dispatcher's camera list (owned), polled until it is want or
 * timeout_ms have passed. */
static char *camera_state_within(struct fx *fx, const char *serial, const char *want,
                                 int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        Camrelay__Frame *r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, serial);
        assert_int_equal(r->mgmt_reply->n_cameras, 1);
        char *state = cr_xstrdup(r->mgmt_reply->cameras[0]->state);
        cr_frame_free(r);
        if (strcmp(state, want) == 0 || cr_now_ms() >= deadline)
            return state;
        free(state);
        usleep(20 * 1000);
    }
}

/* 1 once the relay list shows relay name with online == want, within timeout_ms. */
static int relay_online_within(struct fx *fx, const char *name, int want, int timeout_ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        Camrelay__Frame *r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST, name);
        assert_int_equal(r->mgmt_reply->n_relays, 1);
        int online = r->mgmt_reply->relays[0]->online;
        cr_frame_free(r);
        if (!online == !want)
            return 1;
        if (cr_now_ms() >= deadline)
            return 0;
        usleep(20 * 1000);
    }
}

/* Asserts the dispatcher closes l without answering. */
static void assert_closed(struct cr_link *l)
{
    Camrelay__Frame *in = NULL;
    int rc = cr_link_read(l, IO_MS, &in);
    if (rc == 0)
        fail_msg("expected the link closed, got %s", cr_frame_body_name(in));
    assert_int_not_equal(rc, -ETIMEDOUT);
}

/* ---- tests ---- */

/* (1) relay account, relay login + sync, agent dispatched with a ticket the relay accepts. */
static void test_dispatch_register_and_dispatch(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    uint8_t key[32];

    relay1_with_cam1(fx, &relay);
    Camrelay__Frame *r = agent_login(fx, &CAM1, NULL);
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    Camrelay__DispatchResult *dr = r->dispatch_result;
    assert_string_equal(dr->relay_name, "relay1");
    assert_int_equal(dr->n_relay_addrs, 2);
    assert_string_equal(dr->relay_addrs[0], "relay1.example:8443");
    assert_string_equal(dr->relay_addrs[1], "10.0.0.1:8443");
    fill_key(key, 1);
    uint64_t now = (uint64_t)cr_unix_now();
    assert_true(dr->ticket_expires_unix >= now + 290 && dr->ticket_expires_unix <= now + 310);
    assert_int_equal(cr_ticket_check(key, CAM1.serial, "relay1", dr->ticket.data, dr->ticket.len,
                                     now),
                     0);
    assert_int_equal(cr_ticket_check(key, CAM2.serial, "relay1", dr->ticket.data, dr->ticket.len,
                                     now),
                     -EKEYREJECTED);
    assert_int_equal(cr_ticket_check(key, CAM1.serial, "relay1", dr->ticket.data, dr->ticket.len,
                                     dr->ticket_expires_unix + 1),
                     -EKEYEXPIRED);
    cr_frame_free(r);

    /* The management views. The dispatcher records the dispatch after sending the result, so
     * the agent can have it before the camera list shows it: wait for the state first. */
    char *cam_state = camera_state_within(fx, CAM1.serial, "dispatched", 5000);
    assert_string_equal(cam_state, "dispatched");
    free(cam_state);
    r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST, "");
    assert_int_equal(r->mgmt_reply->status, CAMRELAY__STATUS__OK);
    assert_int_equal(r->mgmt_reply->n_relays, 1);
    Camrelay__RelayInfo *ri = r->mgmt_reply->relays[0];
    assert_string_equal(ri->name, "relay1");
    assert_true(ri->online);
    assert_int_equal(ri->cameras, 1);
    assert_int_equal(ri->n_public_addrs, 2);
    cr_frame_free(r);
    r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(r->mgmt_reply->n_cameras, 1);
    Camrelay__CameraInfo *ci = r->mgmt_reply->cameras[0];
    assert_string_equal(ci->serial, CAM1.serial);
    assert_string_equal(ci->relay, "relay1");
    assert_true(ci->last_seen_unix >= (int64_t)now - 5);
    assert_string_equal(ci->site_addr, "127.0.0.1");
    assert_string_equal(ci->state, "dispatched");
    cr_frame_free(r);

    /* Relay gone: offline in the list, camera red, agents still dispatched (stored addrs). */
    cr_link_close(&relay);
    assert_true(relay_online_within(fx, "relay1", 0, 5000));
    r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, CAM1.serial);
    assert_int_equal(r->mgmt_reply->n_cameras, 1);
    assert_string_equal(r->mgmt_reply->cameras[0]->state, "red");
    cr_frame_free(r);
}

/* (2) a wrong OAK, user or password is refused with ERR_AUTH. */
static void test_dispatch_wrong_credentials(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    relay1_with_cam1(fx, &relay);

    struct cam bad = CAM1;
    bad.oak = "OAK-000-000";
    Camrelay__Frame *r = agent_login(fx, &bad, NULL);
    assert_int_equal(refusal_status(r), CAMRELAY__STATUS__ERR_AUTH);
    assert_non_null(strstr(r->refusal->message, CAM1.serial));
    assert_null(strstr(r->refusal->message, CAM1.oak));
    cr_frame_free(r);

    bad = CAM1;
    bad.password = "wrong-password";
    r = agent_login(fx, &bad, NULL);
    assert_int_equal(refusal_status(r), CAMRELAY__STATUS__ERR_AUTH);
    cr_frame_free(r);

    bad = CAM1;
    bad.user = "nobody";
    r = agent_login(fx, &bad, NULL);
    assert_int_equal(refusal_status(r), CAMRELAY__STATUS__ERR_AUTH);
    cr_frame_free(r);

    r = agent_login(fx, &CAM1, NULL); /* and the right one still works */
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    cr_frame_free(r);
    cr_link_close(&relay);
}

/* (3) a proof recorded on one TLS session is refused on another, same nonce and all. */
static void test_dispatch_replayed_proof(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay, l;
    uint8_t nonce[CR_AUTH_NONCE_LEN], proof[CR_AUTH_KEY_LEN];
    Camrelay__Frame *in = NULL;
    relay1_with_cam1(fx, &relay);

    cr_random_bytes(nonce, sizeof(nonce));
    agent_hello(fx, &l, CAM1.serial, nonce);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_AUTH_CHALLENGE);
    make_proof(&l, &CAM1, nonce, in->auth_challenge, proof);
    send_proof(&l, proof);
    cr_frame_free(in);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    cr_frame_free(in);
    cr_link_close(&l);

    agent_hello(fx, &l, CAM1.serial, nonce); /* the replay: same hello, same proof */
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_AUTH_CHALLENGE);
    cr_frame_free(in);
    send_proof(&l, proof);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_AUTH);
    cr_frame_free(in);
    cr_link_close(&l);
    cr_link_close(&relay);
}

/* (4) scenario C/D: the agent waits at the dispatcher, the registration arrives, the agent
 * completes within a second of it. */
static void test_dispatch_held_until_registered(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay, l;
    uint8_t nonce[CR_AUTH_NONCE_LEN], proof[CR_AUTH_KEY_LEN];
    Camrelay__Frame *in = NULL;

    assert_int_equal(account_add(fx, "relay1", "relay1-password"), CAMRELAY__STATUS__OK);
    cr_random_bytes(nonce, sizeof(nonce));
    agent_hello(fx, &l, CAM2.serial, nonce);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_PENDING);
    assert_true(in->pending->hold_ms > 25000 && in->pending->hold_ms <= 30000);
    cr_frame_free(in);

    assert_int_equal(relay_login(fx, &relay, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    assert_int_equal(relay_sync(&relay, 1, &CAM1, 1, 1, NULL, 0), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_sync(&relay, 2, &CAM2, 1, 0, NULL, 0), CAMRELAY__STATUS__OK);
    uint64_t registered = cr_now_ms();

    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_AUTH_CHALLENGE);
    assert_true(cr_now_ms() - registered < 1000);
    make_proof(&l, &CAM2, nonce, in->auth_challenge, proof);
    send_proof(&l, proof);
    cr_frame_free(in);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    assert_string_equal(in->dispatch_result->relay_name, "relay1");
    cr_frame_free(in);
    cr_link_close(&l);
    cr_link_close(&relay);
}

/* (4) no registration within the hold: Pending, then ERR_UNKNOWN_SERIAL; hold 0: at once. */
static void test_dispatch_hold_expires(void **state)
{
    struct fx *fx = *state;
    struct cr_link l;
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    Camrelay__Frame *in = NULL;

    /* Pending every 150 ms for a second: at least two even if this machine stalls the
     * dispatcher's thread for most of the hold. */
    fx->cfg.hold_ms = 1000;
    fx->cfg.pending_interval_ms = 150;
    dispatcher_restart(fx);
    cr_random_bytes(nonce, sizeof(nonce));
    uint64_t t0 = cr_now_ms();
    agent_hello(fx, &l, CAM1.serial, nonce);
    int pendings = 0;
    for (;;) {
        assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
        if (in->body_case != CAMRELAY__FRAME__BODY_PENDING)
            break;
        pendings++;
        cr_frame_free(in);
    }
    assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    assert_true(in->refusal->retry_after_ms > 0);
    assert_true(pendings >= 2); /* repeated while held */
    assert_true(cr_now_ms() - t0 >= 1000);
    cr_frame_free(in);
    cr_link_close(&l);

    fx->cfg.hold_ms = 0;
    dispatcher_restart(fx);
    in = agent_login(fx, &CAM1, NULL);
    assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(in);
}

/* (5) relay logins: wrong password and unknown account are ERR_AUTH. */
static void test_dispatch_relay_auth(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    assert_int_equal(account_add(fx, "relay1", "relay1-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_login(fx, &relay, "relay1", "not-the-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__ERR_AUTH);
    assert_int_equal(relay_login(fx, &relay, "relay9", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__ERR_AUTH);
    /* account_add on an existing account replaces its password. */
    assert_int_equal(account_add(fx, "relay1", "second-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_login(fx, &relay, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__ERR_AUTH);
    assert_int_equal(relay_login(fx, &relay, "relay1", "second-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    cr_link_close(&relay);
}

/* (5) a serial owned by one relay is never taken over by another. */
static void test_dispatch_duplicate_serial(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay1, relay2;
    char msg[200];
    relay1_with_cam1(fx, &relay1);
    assert_int_equal(account_add(fx, "relay2", "relay2-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_login(fx, &relay2, "relay2", "relay2-password", "relay2.example:8443",
                                 2),
                     CAMRELAY__STATUS__OK);

    assert_int_equal(relay_sync(&relay2, 5, &CAM1, 1, 0, msg, sizeof(msg)),
                     CAMRELAY__STATUS__ERR_DUPLICATE);
    assert_string_equal(msg, "serial AC:CC:8E:00:00:01 is registered on relay relay1");
    assert_int_equal(relay_unregister(&relay2, 6, CAM1.serial), CAMRELAY__STATUS__ERR_DUPLICATE);
    /* A full sync by relay2 naming CAM1 neither takes nor prunes it. */
    assert_int_equal(relay_sync(&relay2, 7, &CAM1, 1, 1, NULL, 0),
                     CAMRELAY__STATUS__ERR_DUPLICATE);

    Camrelay__Frame *r = agent_login(fx, &CAM1, NULL);
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    assert_string_equal(r->dispatch_result->relay_name, "relay1");
    cr_frame_free(r);

    /* The owner unregisters it; then relay2 may have it. */
    assert_int_equal(relay_unregister(&relay1, 2, CAM1.serial), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_unregister(&relay1, 3, CAM1.serial), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_sync(&relay2, 8, &CAM1, 1, 0, NULL, 0), CAMRELAY__STATUS__OK);
    r = agent_login(fx, &CAM1, NULL);
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    assert_string_equal(r->dispatch_result->relay_name, "relay2");
    cr_frame_free(r);
    cr_link_close(&relay1);
    cr_link_close(&relay2);
}

/* A full sync prunes the relay's cameras it no longer lists. */
static void test_dispatch_full_sync_prunes(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    const struct cam both[2] = {CAM1, CAM2};
    relay1_with_cam1(fx, &relay);
    assert_int_equal(relay_sync(&relay, 2, both, 2, 1, NULL, 0), CAMRELAY__STATUS__OK);
    Camrelay__Frame *r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(r->mgmt_reply->n_cameras, 2);
    cr_frame_free(r);
    assert_int_equal(relay_sync(&relay, 3, &CAM2, 1, 1, NULL, 0), CAMRELAY__STATUS__OK);
    r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, "");
    assert_int_equal(r->mgmt_reply->n_cameras, 1);
    assert_string_equal(r->mgmt_reply->cameras[0]->serial, CAM2.serial);
    cr_frame_free(r);
    r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST, CAM1.serial);
    assert_int_equal(r->mgmt_reply->status, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL);
    cr_frame_free(r);
    cr_link_close(&relay);
}

/* A second link of the same account replaces the first; the relay stays online. */
static void test_dispatch_relay_replaced(void **state)
{
    struct fx *fx = *state;
    struct cr_link first, second;
    relay1_with_cam1(fx, &first);
    assert_int_equal(relay_login(fx, &second, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    assert_closed(&first);
    cr_link_close(&first);
    assert_int_equal(relay_sync(&second, 1, &CAM1, 1, 1, NULL, 0), CAMRELAY__STATUS__OK);
    Camrelay__Frame *r = list_call(fx, CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST, "relay1");
    assert_true(r->mgmt_reply->relays[0]->online);
    cr_frame_free(r);
    cr_link_close(&second);
}

/* A relay link silent for 3 x keepalive is dropped (the dispatcher pings it meanwhile). */
static void test_dispatch_relay_silent_dropped(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    Camrelay__Frame *in = NULL;
    fx->cfg.relay_keepalive_ms = 100;
    dispatcher_restart(fx);
    assert_int_equal(account_add(fx, "relay1", "relay1-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(relay_login(fx, &relay, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    /* The silence counts from the last frame the dispatcher read: the sync below (or a pong
     * sent while waiting for its Ack), so it cannot start before t0 however long the sync
     * takes to be stored and acked. */
    uint64_t t0 = cr_now_ms();
    assert_int_equal(relay_sync(&relay, 1, &CAM1, 1, 1, NULL, 0), CAMRELAY__STATUS__OK);
    int pings = 0, rc;
    while ((rc = cr_link_read(&relay, IO_MS, &in)) == 0) {
        if (in->body_case == CAMRELAY__FRAME__BODY_PING)
            pings++;
        cr_frame_free(in);
        in = NULL;
    }
    assert_int_not_equal(rc, -ETIMEDOUT);
    assert_true(pings >= 2);
    uint64_t took = cr_now_ms() - t0;
    assert_true(took >= 250 && took < 2000);
    cr_link_close(&relay);
}

/* A camera whose relay never connected: ERR_RETRY after a good proof. */
static void test_dispatch_relay_never_connected(void **state)
{
    struct fx *fx = *state;
    struct ctl_registry *reg;
    struct ctl_camera cam = {0};
    struct cr_auth_secret sec = {CAM2.oak, CAM2.user, CAM2.password};

    assert_int_equal(account_add(fx, "relay3", "relay3-password"), CAMRELAY__STATUS__OK);
    assert_int_equal(ctl_registry_open(fx->db, &reg), 0); /* a second handle on the file */
    cr_strlcpy(cam.serial, CAM2.serial, sizeof(cam.serial));
    cr_strlcpy(cam.relay, "relay3", sizeof(cam.relay));
    cam.verifier.iterations = CR_AUTH_ITERATIONS_MIN;
    assert_int_equal(cr_auth_make_verifier(&sec, CR_AUTH_ITERATIONS_MIN, cam.verifier.salt,
                                           cam.verifier.stored_key),
                     0);
    assert_int_equal(ctl_registry_camera_upsert(reg, &cam), 0);
    ctl_registry_close(reg);

    Camrelay__Frame *r = agent_login(fx, &CAM2, NULL);
    assert_int_equal(refusal_status(r), CAMRELAY__STATUS__ERR_RETRY);
    assert_int_equal(r->refusal->retry_after_ms, 5000);
    cr_frame_free(r);
}

/* (6) an oversized frame from an unauthenticated peer closes its link; the dispatcher keeps
 * serving. */
static void test_dispatch_oversized_frame(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay, l;
    char err[256];
    const uint8_t hdr[4] = {0x00, 0x10, 0x00, 0x00}; /* 1 MiB announced */
    relay1_with_cam1(fx, &relay);

    assert_int_equal(cr_link_connect_tls(&l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_int_equal(cr_link_write_all(&l, hdr, sizeof(hdr), IO_MS), 0);
    assert_closed(&l);
    cr_link_close(&l);

    /* 16 KiB + 1 is already too much before authentication. */
    const uint8_t hdr2[4] = {0x00, 0x00, 0x40, 0x01};
    assert_int_equal(cr_link_connect_tls(&l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_int_equal(cr_link_write_all(&l, hdr2, sizeof(hdr2), IO_MS), 0);
    assert_closed(&l);
    cr_link_close(&l);

    Camrelay__Frame *r = agent_login(fx, &CAM1, NULL);
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    cr_frame_free(r);
    cr_link_close(&relay);
}

/* (6) garbage and unexpected first frames. */
static void test_dispatch_bad_first_frame(void **state)
{
    struct fx *fx = *state;
    struct cr_link l;
    char err[256];
    Camrelay__Frame *in = NULL;
    const uint8_t garbage[9] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff};

    assert_int_equal(cr_link_connect_tls(&l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_int_equal(cr_link_write_all(&l, garbage, sizeof(garbage), IO_MS), 0);
    assert_closed(&l);
    cr_link_close(&l);

    /* A well-formed frame that is not a hello: Refusal ERR_BAD_REQUEST, then closed. */
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ping p = CAMRELAY__PING__INIT;
    f.body_case = CAMRELAY__FRAME__BODY_PING;
    f.ping = &p;
    assert_int_equal(cr_link_connect_tls(&l, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_int_equal(cr_link_write(&l, &f, IO_MS), 0);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_BAD_REQUEST);
    assert_non_null(strstr(in->refusal->message, "ping"));
    cr_frame_free(in);
    assert_closed(&l);
    cr_link_close(&l);

    /* A malformed AuthStart (bad serial characters). */
    uint8_t nonce[CR_AUTH_NONCE_LEN] = {0};
    agent_hello(fx, &l, "bad serial!", nonce);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_BAD_REQUEST);
    cr_frame_free(in);
    cr_link_close(&l);
}

/* Management: validation, relay-only operations, garbage closes only that connection. */
static void test_dispatch_mgmt(void **state)
{
    struct fx *fx = *state;
    assert_int_equal(account_add(fx, "relay1", "short"), CAMRELAY__STATUS__ERR_BAD_REQUEST);
    assert_int_equal(account_add(fx, "bad name", "long-enough-password"),
                     CAMRELAY__STATUS__ERR_BAD_REQUEST);
    assert_int_equal(account_add(fx, "", "long-enough-password"),
                     CAMRELAY__STATUS__ERR_BAD_REQUEST);

    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraRegister reg = CAMRELAY__CAMERA_REGISTER__INIT;
    reg.serial = (char *)CAM1.serial;
    reg.oak = (char *)CAM1.oak;
    reg.user = (char *)CAM1.user;
    reg.password = (char *)CAM1.password;
    req.id = 42;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
    req.camera_register = &reg;
    Camrelay__Frame *r = mgmt_call(fx, &req);
    assert_int_equal(r->mgmt_reply->status, CAMRELAY__STATUS__ERR_BAD_REQUEST);
    assert_string_equal(r->mgmt_reply->message,
                        "use the relay's management socket for camera registration");
    cr_frame_free(r);

    /* Several requests on one connection. */
    struct cr_link l;
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *in = NULL;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    int fd = cr_unix_connect(fx->sock);
    assert_true(fd >= 0);
    cr_link_init_plain(&l, fd);
    req = (Camrelay__MgmtRequest)CAMRELAY__MGMT_REQUEST__INIT;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST;
    req.relay_list = &sel;
    f.body_case = CAMRELAY__FRAME__BODY_MGMT_REQUEST;
    f.mgmt_request = &req;
    for (uint64_t id = 1; id <= 3; id++) {
        req.id = id;
        assert_int_equal(cr_link_write(&l, &f, IO_MS), 0);
        assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
        assert_int_equal(in->mgmt_reply->id, id);
        assert_int_equal(in->mgmt_reply->status, CAMRELAY__STATUS__OK);
        cr_frame_free(in);
    }
    /* An oversized request closes this connection... */
    const uint8_t big[4] = {0x00, 0x10, 0x00, 0x00};
    assert_int_equal(cr_link_write_all(&l, big, sizeof(big), IO_MS), 0);
    assert_closed(&l);
    cr_link_close(&l);
    /* ...and garbage another one... */
    fd = cr_unix_connect(fx->sock);
    assert_true(fd >= 0);
    cr_link_init_plain(&l, fd);
    const uint8_t garbage[7] = {0, 0, 0, 3, 0xff, 0xfe, 0xfd};
    assert_int_equal(cr_link_write_all(&l, garbage, sizeof(garbage), IO_MS), 0);
    assert_closed(&l);
    cr_link_close(&l);
    /* ...while the daemon keeps serving. */
    assert_int_equal(account_add(fx, "relay1", "long-enough-password"), CAMRELAY__STATUS__OK);
}

/* Connections above max_conns are closed at once; capacity returns when they end. */
static void test_dispatch_connection_limit(void **state)
{
    struct fx *fx = *state;
    struct cr_link a, b, c;
    char err[256];
    fx->cfg.max_conns = 2;
    dispatcher_restart(fx);
    assert_int_equal(cr_link_connect_tls(&a, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_int_equal(cr_link_connect_tls(&b, g_cli, fx->addr, IO_MS, err, sizeof(err)), 0);
    assert_true(cr_link_connect_tls(&c, g_cli, fx->addr, IO_MS, err, sizeof(err)) < 0);
    cr_link_close(&a);
    cr_link_close(&b);
    /* The dispatcher notices the closes on its own time: retry for a while. */
    int ok = 0;
    uint64_t deadline = cr_now_ms() + IO_MS;
    while (!(ok = cr_link_connect_tls(&c, g_cli, fx->addr, IO_MS, err, sizeof(err)) == 0) &&
           cr_now_ms() < deadline)
        usleep(20 * 1000);
    assert_true(ok);
    cr_link_close(&c);
}

/* (7) everything the dispatcher needs survives a restart on the same database. */
static void test_dispatch_restart_persistence(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay;
    uint8_t key[32];
    relay1_with_cam1(fx, &relay);
    cr_link_close(&relay);
    dispatcher_restart(fx);

    Camrelay__Frame *r = agent_login(fx, &CAM1, NULL);
    assert_int_equal(r->body_case, CAMRELAY__FRAME__BODY_DISPATCH_RESULT);
    assert_string_equal(r->dispatch_result->relay_name, "relay1");
    assert_int_equal(r->dispatch_result->n_relay_addrs, 2);
    fill_key(key, 1);
    assert_int_equal(cr_ticket_check(key, CAM1.serial, "relay1", r->dispatch_result->ticket.data,
                                     r->dispatch_result->ticket.len, (uint64_t)cr_unix_now()),
                     0);
    cr_frame_free(r);
    /* The relay account too. */
    assert_int_equal(relay_login(fx, &relay, "relay1", "relay1-password", RELAY1_ADDRS, 1),
                     CAMRELAY__STATUS__OK);
    cr_link_close(&relay);
}

/* Stopping releases a held agent and a connected relay promptly. */
static void test_dispatch_stop_releases(void **state)
{
    struct fx *fx = *state;
    struct cr_link relay, l;
    uint8_t nonce[CR_AUTH_NONCE_LEN];
    Camrelay__Frame *in = NULL;
    relay1_with_cam1(fx, &relay);
    cr_random_bytes(nonce, sizeof(nonce));
    agent_hello(fx, &l, CAM2.serial, nonce);
    assert_int_equal(cr_link_read(&l, IO_MS, &in), 0);
    assert_int_equal(in->body_case, CAMRELAY__FRAME__BODY_PENDING);
    cr_frame_free(in);

    uint64_t t0 = cr_now_ms();
    ctl_dispatch_stop(fx->d);
    fx->d = NULL;
    assert_true(cr_now_ms() - t0 < 2000);
    assert_closed(&relay);
    cr_link_close(&relay);
    /* The held agent gets a Refusal or a closed link. */
    int rc = cr_link_read(&l, IO_MS, &in);
    if (rc == 0) {
        assert_int_equal(refusal_status(in), CAMRELAY__STATUS__ERR_RETRY);
        cr_frame_free(in);
    } else {
        assert_int_not_equal(rc, -ETIMEDOUT);
    }
    cr_link_close(&l);
    assert_int_equal(dispatcher_start(fx), 0); /* for teardown */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dispatch_register_and_dispatch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_wrong_credentials, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_replayed_proof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_held_until_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_hold_expires, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_relay_auth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_duplicate_serial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_full_sync_prunes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_relay_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_relay_silent_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_relay_never_connected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_oversized_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_bad_first_frame, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_mgmt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_connection_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_restart_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dispatch_stop_releases, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
