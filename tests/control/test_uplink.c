/* Tests for control/uplink.c against an in-process fake dispatcher: login, full sync, queued
 * changes, refusals, duplicates, keepalive, failover, and registrations made while down. */
#include <errno.h>
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
#include <unistd.h>

#include <cmocka.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "control/pki.h"
#include "control/registry.h"
#include "control/uplink.h"
#include "tests/support/support.h"

#define PASSWORD "relay-account-password"
#define MAX_KNOWN 64

/* ---- the fake dispatcher ---- */

struct fake {
    SSL_CTX *tls;
    int lfd;
    uint16_t port;
    pthread_t th;
    uint8_t salt[16], stored_key[32];
    uint32_t iterations;

    pthread_mutex_t lock; /* guards everything below */
    int stop, refuse, ignore_pings, kick;
    uint32_t keepalive_ms;
    char dup[MAX_KNOWN]; /* first character of serials to refuse as duplicates ('\0' = none) */
    int attempts, logins, full_syncs, partial_syncs, unregisters, pings;
    int violations; /* protocol errors seen (cmocka asserts only work on the test's thread) */
    char hello_name[64];
    char addrs[4][64];
    size_t n_addrs;
    uint8_t ticket_key[32];
    char known[MAX_KNOWN][64];
    int n_known;
};

static int known_idx(struct fake *fk, const char *serial)
{
    for (int i = 0; i < fk->n_known; i++)
        if (strcmp(fk->known[i], serial) == 0)
            return i;
    return -1;
}

static void known_del(struct fake *fk, int i)
{
    memmove(fk->known[i], fk->known[i + 1], (size_t)(fk->n_known - i - 1) * sizeof(fk->known[0]));
    fk->n_known--;
}

static int send_ack(struct cr_link *l, uint64_t seq, int status, const char *msg)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Ack a = CAMRELAY__ACK__INIT;
    a.seq = seq;
    a.status = status;
    a.message = (char *)msg;
    f.body_case = CAMRELAY__FRAME__BODY_ACK;
    f.ack = &a;
    return cr_link_write(l, &f, 2000);
}

static void handle_sync(struct fake *fk, struct cr_link *l, const Camrelay__SyncCameras *s)
{
    int status = CAMRELAY__STATUS__OK;
    char msg[128] = "";
    pthread_mutex_lock(&fk->lock);
    if (s->full) {
        fk->full_syncs++;
        fk->n_known = 0;
    } else {
        fk->partial_syncs++;
    }
    for (size_t i = 0; i < s->n_cameras; i++) {
        const Camrelay__CameraRecord *r = s->cameras[i];
        if (r->salt.len != 16 || r->stored_key.len != 32 || r->iterations < 1000)
            fk->violations++;
        if (strchr(fk->dup, r->serial[0]) && fk->dup[0]) {
            if (status == CAMRELAY__STATUS__OK) {
                status = CAMRELAY__STATUS__ERR_DUPLICATE;
                snprintf(msg, sizeof(msg), "serial %s is registered on relay other", r->serial);
            }
            continue;
        }
        if (known_idx(fk, r->serial) < 0 && fk->n_known < MAX_KNOWN)
            cr_strlcpy(fk->known[fk->n_known++], r->serial, sizeof(fk->known[0]));
    }
    pthread_mutex_unlock(&fk->lock);
    send_ack(l, s->seq, status, msg);
}

static void serve_conn(struct fake *fk, int fd)
{
    struct cr_link l;
    char err[256];
    Camrelay__Frame *in = NULL;

    if (cr_link_accept_tls(&l, fk->tls, fd, 3000, err, sizeof(err)) < 0)
        return;
    if (cr_link_read(&l, 3000, &in) < 0)
        goto out;
    pthread_mutex_lock(&fk->lock);
    if (in->body_case != CAMRELAY__FRAME__BODY_RELAY_HELLO || !in->relay_hello->auth) {
        fk->violations++;
        pthread_mutex_unlock(&fk->lock);
        goto out;
    }
    const Camrelay__RelayHello *h = in->relay_hello;
    fk->attempts++;
    cr_strlcpy(fk->hello_name, h->auth->identity, sizeof(fk->hello_name));
    fk->n_addrs = h->n_public_addrs < 4 ? h->n_public_addrs : 4;
    for (size_t i = 0; i < fk->n_addrs; i++)
        cr_strlcpy(fk->addrs[i], h->public_addrs[i], sizeof(fk->addrs[i]));
    if (h->ticket_key.len == 32)
        memcpy(fk->ticket_key, h->ticket_key.data, 32);
    int refuse = fk->refuse;
    uint32_t ka = fk->keepalive_ms;
    pthread_mutex_unlock(&fk->lock);

    if (refuse) {
        cr_link_refuse(&l, CAMRELAY__STATUS__ERR_AUTH, "unknown relay account", 0);
        goto out;
    }
    int rc = cr_auth_server_verify(&l, h->auth, fk->salt, fk->iterations, fk->stored_key, 3000);
    if (rc < 0) {
        cr_link_refuse(&l, CAMRELAY__STATUS__ERR_AUTH, "wrong password", 0);
        goto out;
    }
    Camrelay__Frame w = CAMRELAY__FRAME__INIT;
    Camrelay__RelayWelcome rw = CAMRELAY__RELAY_WELCOME__INIT;
    rw.keepalive_ms = ka;
    w.body_case = CAMRELAY__FRAME__BODY_RELAY_WELCOME;
    w.relay_welcome = &rw;
    if (cr_link_write(&l, &w, 2000) < 0)
        goto out;
    pthread_mutex_lock(&fk->lock);
    fk->logins++;
    pthread_mutex_unlock(&fk->lock);

    for (;;) {
        pthread_mutex_lock(&fk->lock);
        int stop = fk->stop || fk->kick;
        fk->kick = 0;
        int ignore = fk->ignore_pings;
        pthread_mutex_unlock(&fk->lock);
        if (stop)
            break;
        Camrelay__Frame *f = NULL;
        rc = cr_link_read(&l, 50, &f);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc < 0)
            break;
        switch (f->body_case) {
        case CAMRELAY__FRAME__BODY_SYNC_CAMERAS:
            handle_sync(fk, &l, f->sync_cameras);
            break;
        case CAMRELAY__FRAME__BODY_UNREGISTER_CAMERA: {
            pthread_mutex_lock(&fk->lock);
            fk->unregisters++;
            int i = known_idx(fk, f->unregister_camera->serial);
            if (i >= 0)
                known_del(fk, i);
            pthread_mutex_unlock(&fk->lock);
            send_ack(&l, f->unregister_camera->seq,
                     i >= 0 ? CAMRELAY__STATUS__OK : CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL, "");
            break;
        }
        case CAMRELAY__FRAME__BODY_PING: {
            pthread_mutex_lock(&fk->lock);
            fk->pings++;
            pthread_mutex_unlock(&fk->lock);
            if (!ignore) {
                Camrelay__Frame p = CAMRELAY__FRAME__INIT;
                Camrelay__Pong pong = CAMRELAY__PONG__INIT;
                pong.seq = f->ping->seq;
                p.body_case = CAMRELAY__FRAME__BODY_PONG;
                p.pong = &pong;
                cr_link_write(&l, &p, 1000);
            }
            break;
        }
        default:
            pthread_mutex_lock(&fk->lock);
            fk->violations++;
            pthread_mutex_unlock(&fk->lock);
        }
        cr_frame_free(f);
    }
out:
    cr_frame_free(in);
    cr_link_close(&l);
}

static void *fake_main(void *arg)
{
    struct fake *fk = arg;
    for (;;) {
        pthread_mutex_lock(&fk->lock);
        int stop = fk->stop;
        pthread_mutex_unlock(&fk->lock);
        if (stop)
            break;
        struct pollfd p = {.fd = fk->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept4(fk->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            serve_conn(fk, fd);
    }
    return NULL;
}

/* Starts a fake dispatcher on port (0 = any) whose account password is password. */
static void fake_start(struct fake *fk, SSL_CTX *tls, uint16_t port, const char *password)
{
    char addr[64];
    memset(fk, 0, sizeof(*fk));
    pthread_mutex_init(&fk->lock, NULL);
    fk->tls = tls;
    fk->keepalive_ms = 5000;
    fk->iterations = 1000;
    struct cr_auth_secret s = {.password = password};
    assert_int_equal(cr_auth_make_verifier(&s, fk->iterations, fk->salt, fk->stored_key), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    fk->lfd = cr_tcp_listen(addr, 0, 8);
    assert_true(fk->lfd >= 0);
    fk->port = cr_sock_port(fk->lfd);
    assert_int_equal(pthread_create(&fk->th, NULL, fake_main, fk), 0);
}

static void fake_stop(struct fake *fk)
{
    pthread_mutex_lock(&fk->lock);
    fk->stop = 1;
    pthread_mutex_unlock(&fk->lock);
    pthread_join(fk->th, NULL);
    close(fk->lfd);
    pthread_mutex_destroy(&fk->lock);
}

/* ---- fixture ---- */

struct fixture {
    char dir[128];
    SSL_CTX *server_tls, *client_tls;
    struct ctl_registry *reg;
    struct ctl_uplink *up;
    struct fake fk;
    int fake_running;
    uint8_t ticket_key[32];
};

static int setup(void **state)
{
    static struct fixture f;
    char err[512], pki[200], a[256], b[256];

    memset(&f, 0, sizeof(f));
    if (test_tmpdir(f.dir, sizeof(f.dir)) < 0)
        return -1;
    snprintf(pki, sizeof(pki), "%s/pki", f.dir);
    struct ctl_pki_opts po = {pki, "127.0.0.1", "127.0.0.1", 0};
    if (ctl_pki_init(&po, err, sizeof(err)) < 0)
        return -1;
    snprintf(a, sizeof(a), "%s/dispatch.pem", pki);
    snprintf(b, sizeof(b), "%s/dispatch.key", pki);
    f.server_tls = cr_tls_server_ctx(a, b, err, sizeof(err));
    snprintf(a, sizeof(a), "%s/ca.pem", pki);
    f.client_tls = cr_tls_client_ctx(a, err, sizeof(err));
    snprintf(a, sizeof(a), "%s/relay.db", f.dir);
    if (!f.server_tls || !f.client_tls || ctl_registry_open(a, &f.reg) < 0)
        return -1;
    cr_random_bytes(f.ticket_key, sizeof(f.ticket_key));
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ctl_uplink_stop(f->up);
    f->up = NULL;
    if (f->fake_running) {
        fake_stop(&f->fk);
        f->fake_running = 0;
        assert_int_equal(f->fk.violations, 0);
    }
    ctl_registry_close(f->reg);
    SSL_CTX_free(f->client_tls);
    SSL_CTX_free(f->server_tls);
    test_rmtree(f->dir);
    return 0;
}

static void add_camera(struct fixture *f, const char *serial)
{
    struct ctl_camera cam;
    memset(&cam, 0, sizeof(cam));
    cr_strlcpy(cam.serial, serial, sizeof(cam.serial));
    cr_strlcpy(cam.relay, "relay-1", sizeof(cam.relay));
    struct cr_auth_secret s = {"oak", "user", "pw"};
    assert_int_equal(cr_auth_make_verifier(&s, 1000, cam.verifier.salt, cam.verifier.stored_key),
                     0);
    cam.verifier.iterations = 1000;
    assert_int_equal(ctl_registry_camera_add(f->reg, &cam, NULL, 0, 1, 1), 0);
}

static int synced(struct fixture *f, const char *serial)
{
    struct ctl_camera cam;
    assert_int_equal(ctl_registry_camera_get(f->reg, serial, &cam), 0);
    return cam.synced;
}

static void start_uplink(struct fixture *f, const char *dispatchers, const char *password)
{
    struct ctl_uplink_config c = {
        .name = "relay-1",
        .public_addrs = "relay.example:8443, 198.51.100.1:8443",
        .dispatchers = dispatchers,
        .tls = f->client_tls,
        .password = password,
        .ticket_key = f->ticket_key,
        .keepalive_ms = 5000,
        .backoff_min_ms = 50,
        .backoff_max_ms = 200,
    };
    assert_int_equal(ctl_uplink_start(&c, f->reg, &f->up), 0);
}

static void start_fake(struct fixture *f, uint16_t port, const char *password)
{
    fake_start(&f->fk, f->server_tls, port, password);
    f->fake_running = 1;
}

static char *fake_addr(struct fixture *f, char *buf, size_t cap)
{
    snprintf(buf, cap, "127.0.0.1:%u", f->fk.port);
    return buf;
}

/* Polls cond(f) every 10 ms for up to ms; returns its last value. */
static int wait_for(struct fixture *f, int (*cond)(struct fixture *), int ms)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)ms;
    int v;
    while (!(v = cond(f)) && cr_now_ms() < deadline)
        usleep(10000);
    return v;
}

static int fk_get(struct fixture *f, int *field)
{
    pthread_mutex_lock(&f->fk.lock);
    int v = *field;
    pthread_mutex_unlock(&f->fk.lock);
    return v;
}

static int fk_known(struct fixture *f, const char *serial)
{
    pthread_mutex_lock(&f->fk.lock);
    int v = known_idx(&f->fk, serial) >= 0;
    pthread_mutex_unlock(&f->fk.lock);
    return v;
}

static int cond_logged_in(struct fixture *f) { return ctl_uplink_connected(f->up); }
static int cond_full_synced(struct fixture *f) { return fk_get(f, &f->fk.full_syncs) > 0; }
static int cond_two_logins(struct fixture *f) { return fk_get(f, &f->fk.logins) >= 2; }
static int cond_two_full_syncs(struct fixture *f) { return fk_get(f, &f->fk.full_syncs) >= 2; }
static int cond_c3_known(struct fixture *f) { return fk_known(f, "CAM-3"); }
static int cond_c1_synced(struct fixture *f) { return synced(f, "CAM-1"); }
static int cond_c2_synced(struct fixture *f) { return synced(f, "CAM-2"); }
static int cond_c3_synced(struct fixture *f) { return synced(f, "CAM-3"); }
static int cond_c1_gone(struct fixture *f) { return !fk_known(f, "CAM-1"); }
static int cond_late_synced(struct fixture *f) { return synced(f, "LATE-1"); }
static int cond_dup_acked(struct fixture *f) { return fk_get(f, &f->fk.partial_syncs) >= 1; }
static int cond_three_partial(struct fixture *f) { return fk_get(f, &f->fk.partial_syncs) >= 3; }
static int cond_four_pings(struct fixture *f) { return fk_get(f, &f->fk.pings) >= 4; }
static int cond_three_attempts(struct fixture *f) { return fk_get(f, &f->fk.attempts) >= 3; }

/* ---- tests ---- */

static void test_uplink_login_and_full_sync(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    add_camera(f, "CAM-1");
    add_camera(f, "CAM-2");
    start_fake(f, 0, PASSWORD);
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);

    assert_true(wait_for(f, cond_full_synced, 5000));
    assert_true(wait_for(f, cond_logged_in, 1000));
    pthread_mutex_lock(&f->fk.lock);
    assert_string_equal(f->fk.hello_name, "relay-1");
    assert_int_equal(f->fk.n_addrs, 2);
    assert_string_equal(f->fk.addrs[0], "relay.example:8443");
    assert_string_equal(f->fk.addrs[1], "198.51.100.1:8443");
    assert_memory_equal(f->fk.ticket_key, f->ticket_key, 32);
    assert_int_equal(f->fk.n_known, 2);
    pthread_mutex_unlock(&f->fk.lock);
    /* Marked synced once the uplink has read the Ack, which the fake sends after counting the
     * sync: wait for it. */
    assert_true(wait_for(f, cond_c1_synced, 5000));
    assert_true(wait_for(f, cond_c2_synced, 5000));
}

static void test_uplink_sends_queued_changes(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    add_camera(f, "CAM-1");
    start_fake(f, 0, PASSWORD);
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_full_synced, 5000));

    add_camera(f, "CAM-3");
    ctl_uplink_camera_changed(f->up, "CAM-3", 0);
    assert_true(wait_for(f, cond_c3_known, 3000));
    assert_true(wait_for(f, cond_c3_synced, 3000));
    assert_int_equal(fk_get(f, &f->fk.partial_syncs), 1);

    assert_int_equal(ctl_registry_camera_remove(f->reg, "CAM-1"), 0);
    ctl_uplink_camera_changed(f->up, "CAM-1", 1);
    assert_true(wait_for(f, cond_c1_gone, 3000));
    assert_int_equal(fk_get(f, &f->fk.unregisters), 1);
    assert_int_equal(fk_get(f, &f->fk.logins), 1); /* all on one link */
}

static void test_uplink_duplicate_is_left_unsynced(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    add_camera(f, "CAM-1");
    start_fake(f, 0, PASSWORD);
    f->fk.dup[0] = 'D';
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_full_synced, 5000));

    add_camera(f, "DUP-1");
    ctl_uplink_camera_changed(f->up, "DUP-1", 0);
    /* Changes go out one at a time, each after the previous one's Ack was handled: once the
     * camera queued behind DUP-1 is synced, the uplink has acted on DUP-1's refusal. */
    add_camera(f, "CAM-3");
    ctl_uplink_camera_changed(f->up, "CAM-3", 0);
    assert_true(wait_for(f, cond_dup_acked, 5000));
    assert_true(wait_for(f, cond_c3_synced, 5000));
    assert_false(synced(f, "DUP-1"));
    assert_true(wait_for(f, cond_c1_synced, 5000));
    assert_true(ctl_uplink_connected(f->up)); /* a refused camera does not drop the link */
    assert_int_equal(fk_get(f, &f->fk.logins), 1);
}

static void test_uplink_full_sync_with_a_duplicate_syncs_the_rest(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    add_camera(f, "CAM-1");
    add_camera(f, "DUP-1");
    add_camera(f, "CAM-2");
    start_fake(f, 0, PASSWORD);
    f->fk.dup[0] = 'D';
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_full_synced, 5000));
    assert_true(wait_for(f, cond_three_partial, 5000)); /* the camera-by-camera retry */
    /* The full sync has begun, so the queue was cleared before it: a change queued now goes
     * out after the retry, and once it is synced every retry's Ack has been handled. */
    add_camera(f, "CAM-3");
    ctl_uplink_camera_changed(f->up, "CAM-3", 0);
    assert_true(wait_for(f, cond_c3_synced, 5000));
    assert_true(synced(f, "CAM-1"));
    assert_true(synced(f, "CAM-2"));
    assert_false(synced(f, "DUP-1"));
}

static void test_uplink_registration_while_down_goes_out_on_connect(void **state)
{
    struct fixture *f = *state;
    char addr[64];

    /* A port with nothing behind it (yet), kept from anyone else until the fake takes it. */
    uint16_t port;
    int reserved = test_port_reserve(&port);
    assert_true(reserved >= 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    start_uplink(f, addr, PASSWORD);

    add_camera(f, "LATE-1");
    ctl_uplink_camera_changed(f->up, "LATE-1", 0);
    usleep(300000);
    assert_false(ctl_uplink_connected(f->up));
    assert_false(synced(f, "LATE-1"));

    close(reserved);
    start_fake(f, port, PASSWORD);
    assert_true(wait_for(f, cond_late_synced, 5000));
    assert_true(fk_known(f, "LATE-1"));
}

static void test_uplink_refusal_backs_off_then_recovers(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    start_fake(f, 0, PASSWORD);
    f->fk.refuse = 1;
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_three_attempts, 5000));
    usleep(500000);
    /* Backoff (50 ms doubling to 200 ms, with jitter): a handful of attempts, not a storm. */
    int attempts = fk_get(f, &f->fk.attempts);
    assert_in_range(attempts, 3, 15);
    assert_false(ctl_uplink_connected(f->up));

    pthread_mutex_lock(&f->fk.lock);
    f->fk.refuse = 0;
    pthread_mutex_unlock(&f->fk.lock);
    assert_true(wait_for(f, cond_logged_in, 3000));
}

static void test_uplink_wrong_password_is_refused(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    start_fake(f, 0, PASSWORD);
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), "not-the-password");
    assert_true(wait_for(f, cond_three_attempts, 5000));
    assert_int_equal(fk_get(f, &f->fk.logins), 0);
    assert_false(ctl_uplink_connected(f->up));
}

static void test_uplink_missed_pings_reconnect(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    start_fake(f, 0, PASSWORD);
    f->fk.keepalive_ms = 100;
    f->fk.ignore_pings = 1;
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    /* 3 unanswered pings at 100 ms: a new login within a second or so. */
    assert_true(wait_for(f, cond_two_logins, 3000));
    assert_true(fk_get(f, &f->fk.pings) >= 3);
}

static void test_uplink_answered_pings_keep_the_link(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    start_fake(f, 0, PASSWORD);
    f->fk.keepalive_ms = 100;
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_logged_in, 3000));
    /* Three unanswered pings would end the link: four pings on one login prove the answers
     * count. (Wait for them rather than sleeping a fixed time a loaded machine may not get.) */
    assert_true(wait_for(f, cond_four_pings, 5000));
    assert_int_equal(fk_get(f, &f->fk.logins), 1);
}

static void test_uplink_reconnects_after_the_link_drops(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    add_camera(f, "CAM-1");
    start_fake(f, 0, PASSWORD);
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_logged_in, 3000));
    pthread_mutex_lock(&f->fk.lock);
    f->fk.kick = 1;
    pthread_mutex_unlock(&f->fk.lock);
    assert_true(wait_for(f, cond_two_logins, 3000));
    /* The login is counted before the sync frame that follows it arrives: wait for it. */
    assert_true(wait_for(f, cond_two_full_syncs, 3000)); /* a full sync on every connect */
}

static void test_uplink_tries_dispatchers_in_order(void **state)
{
    struct fixture *f = *state;
    char list[128];
    uint16_t dead;
    int reserved = test_port_reserve(&dead); /* refuses connections for the whole test */
    assert_true(reserved >= 0);
    start_fake(f, 0, PASSWORD);
    snprintf(list, sizeof(list), "127.0.0.1:%u,127.0.0.1:%u", dead, f->fk.port);
    start_uplink(f, list, PASSWORD);
    assert_true(wait_for(f, cond_logged_in, 5000));
    close(reserved);
}

static void test_uplink_stop_is_prompt(void **state)
{
    struct fixture *f = *state;
    char addr[64];
    start_fake(f, 0, PASSWORD);
    start_uplink(f, fake_addr(f, addr, sizeof(addr)), PASSWORD);
    assert_true(wait_for(f, cond_logged_in, 3000));
    uint64_t t0 = cr_now_ms();
    ctl_uplink_stop(f->up);
    f->up = NULL;
    assert_true(cr_now_ms() - t0 < 1000);

    /* And while backing off with nothing to connect to. */
    start_uplink(f, "127.0.0.1:1", PASSWORD);
    usleep(150000);
    t0 = cr_now_ms();
    ctl_uplink_stop(f->up);
    f->up = NULL;
    assert_true(cr_now_ms() - t0 < 1000);
}

int main(void)
{
    cr_log_level = getenv("TEST_LOG") ? CR_LOG_DEBUG : -1;
    signal(SIGPIPE, SIG_IGN);
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_uplink_login_and_full_sync),
        T(test_uplink_sends_queued_changes),
        T(test_uplink_duplicate_is_left_unsynced),
        T(test_uplink_full_sync_with_a_duplicate_syncs_the_rest),
        T(test_uplink_registration_while_down_goes_out_on_connect),
        T(test_uplink_refusal_backs_off_then_recovers),
        T(test_uplink_wrong_password_is_refused),
        T(test_uplink_missed_pings_reconnect),
        T(test_uplink_answered_pings_keep_the_link),
        T(test_uplink_reconnects_after_the_link_drops),
        T(test_uplink_tries_dispatchers_in_order),
        T(test_uplink_stop_is_prompt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
