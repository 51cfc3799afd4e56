/* Unit tests for control/registry.c: round trips, port allocation, persistence, hostile input. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/registry.h"
#include "tests/support/support.h"

/* Each test gets its own directory (removed afterwards) and an open registry in it. */
struct fixture {
    char dir[256];
    char path[300];
    struct ctl_registry *reg;
};


static int setup(void **state)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    if (test_tmpdir(fx->dir, sizeof(fx->dir)) < 0) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/registry.db", fx->dir);
    if (ctl_registry_open(fx->path, &fx->reg) != 0) {
        test_rmtree(fx->dir);
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *fx = *state;

    ctl_registry_close(fx->reg);
    test_rmtree(fx->dir);
    free(fx);
    return 0;
}

static void reopen(struct fixture *fx)
{
    ctl_registry_close(fx->reg);
    fx->reg = NULL;
    assert_int_equal(ctl_registry_open(fx->path, &fx->reg), 0);
    assert_non_null(fx->reg);
}

/* A camera whose verifier bytes derive from seed, so records are distinguishable. */
static struct ctl_camera make_cam(const char *serial, const char *relay, uint8_t seed)
{
    struct ctl_camera cam;

    memset(&cam, 0, sizeof(cam));
    snprintf(cam.serial, sizeof(cam.serial), "%s", serial);
    snprintf(cam.relay, sizeof(cam.relay), "%s", relay);
    for (size_t i = 0; i < sizeof(cam.verifier.salt); i++)
        cam.verifier.salt[i] = (uint8_t)(seed + i);
    for (size_t i = 0; i < sizeof(cam.verifier.stored_key); i++)
        cam.verifier.stored_key[i] = (uint8_t)(seed * 7 + i);
    cam.verifier.iterations = 4096;
    cam.created_unix = 1700000000;
    return cam;
}

static void assert_camera_equal(const struct ctl_camera *a, const struct ctl_camera *b)
{
    assert_string_equal(a->serial, b->serial);
    assert_memory_equal(a->verifier.salt, b->verifier.salt, sizeof(a->verifier.salt));
    assert_int_equal(a->verifier.iterations, b->verifier.iterations);
    assert_memory_equal(a->verifier.stored_key, b->verifier.stored_key,
                        sizeof(a->verifier.stored_key));
    assert_string_equal(a->relay, b->relay);
    assert_string_equal(a->recorder, b->recorder);
    assert_true(a->created_unix == b->created_unix);
    assert_true(a->last_seen_unix == b->last_seen_unix);
    assert_string_equal(a->site_addr, b->site_addr);
    assert_true(a->bytes_relayed == b->bytes_relayed);
    assert_int_equal(a->synced, b->synced);
    assert_int_equal(a->n_endpoints, b->n_endpoints);
    for (unsigned i = 0; i < a->n_endpoints; i++) {
        assert_string_equal(a->endpoints[i].service, b->endpoints[i].service);
        assert_int_equal(a->endpoints[i].port, b->endpoints[i].port);
    }
}

static const char *const two_services[] = {"rtsp", "http"};

static int count_cb(const struct ctl_camera *cam, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

static int count_cameras(struct ctl_registry *reg, const char *relay)
{
    int n = 0;

    assert_int_equal(ctl_registry_camera_foreach(reg, relay, count_cb, &n), 0);
    return n;
}

static void test_registry_add_get_round_trip(void **state)
{
    struct fixture *fx = *state;
    struct ctl_camera cam = make_cam("00:40:8c:aa:bb:cc", "relay-1", 3), got;

    snprintf(cam.recorder, sizeof(cam.recorder), "rec-a.example");
    cam.verifier.iterations = UINT32_MAX;
    cam.last_seen_unix = 1700000123;
    snprintf(cam.site_addr, sizeof(cam.site_addr), "[2001:db8::1]:4433");
    cam.bytes_relayed = UINT64_MAX - 15; /* top bit set: stored as int64 bit pattern */
    cam.synced = 1;

    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);
    assert_int_equal(cam.n_endpoints, 2);
    assert_string_equal(cam.endpoints[0].service, "rtsp");
    assert_int_equal(cam.endpoints[0].port, 20000);
    assert_string_equal(cam.endpoints[1].service, "http");
    assert_int_equal(cam.endpoints[1].port, 20001);

    memset(&got, 0xa5, sizeof(got));
    assert_int_equal(ctl_registry_camera_get(fx->reg, cam.serial, &got), 0);
    assert_camera_equal(&cam, &got);

    /* created_unix 0 means "now"; the add reports the value it stored. */
    cam = make_cam("cam-now", "", 4);
    cam.created_unix = 0;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, NULL, 0, 20000, 20099), 0);
    assert_true(cam.created_unix > 1700000000);
    assert_int_equal(cam.n_endpoints, 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-now", &got), 0);
    assert_camera_equal(&cam, &got);

    assert_int_equal(ctl_registry_camera_get(fx->reg, "no-such-camera", &got), -ENOENT);
}

static void test_registry_add_duplicate_eexist(void **state)
{
    struct fixture *fx = *state;
    struct ctl_camera cam = make_cam("dup", "", 1), again = make_cam("dup", "", 2), before, got;

    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);
    before = again;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &again, two_services, 2, 20000, 20099),
                     -EEXIST);
    assert_memory_equal(&before, &again, sizeof(again)); /* untouched on failure */
    /* The stored record is the first one, and the failed add took no ports. */
    assert_int_equal(ctl_registry_camera_get(fx->reg, "dup", &got), 0);
    assert_camera_equal(&cam, &got);
    again = make_cam("other", "", 3);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &again, two_services, 2, 20000, 20099), 0);
    assert_int_equal(again.endpoints[0].port, 20002);
    assert_int_equal(again.endpoints[1].port, 20003);
}

static void test_registry_ports_lowest_free_and_reused(void **state)
{
    struct fixture *fx = *state;
    static const char *const three[] = {"rtsp", "http", "onvif"};
    struct ctl_camera a = make_cam("cam-a", "", 1), b = make_cam("cam-b", "", 2),
                      c = make_cam("cam-c", "", 3), d = make_cam("cam-d", "", 4), got;

    assert_int_equal(ctl_registry_camera_add(fx->reg, &a, two_services, 2, 30000, 30100), 0);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, two_services, 2, 30000, 30100), 0);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &c, two_services, 2, 30000, 30100), 0);
    assert_int_equal(a.endpoints[0].port, 30000);
    assert_int_equal(a.endpoints[1].port, 30001);
    assert_int_equal(b.endpoints[0].port, 30002);
    assert_int_equal(b.endpoints[1].port, 30003);
    assert_int_equal(c.endpoints[0].port, 30004);
    assert_int_equal(c.endpoints[1].port, 30005);

    /* Removing b frees 30002-30003; the next add fills that gap first, then goes past c. */
    assert_int_equal(ctl_registry_camera_remove(fx->reg, "cam-b"), 0);
    assert_int_equal(ctl_registry_camera_remove(fx->reg, "cam-b"), -ENOENT);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-b", &got), -ENOENT);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &d, three, 3, 30000, 30100), 0);
    assert_int_equal(d.endpoints[0].port, 30002);
    assert_int_equal(d.endpoints[1].port, 30003);
    assert_int_equal(d.endpoints[2].port, 30006);

    /* Ports are unique across ranges too: a range overlapping used ports skips them. */
    b = make_cam("cam-b", "", 2);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, two_services, 2, 30005, 30100), 0);
    assert_int_equal(b.endpoints[0].port, 30007);
    assert_int_equal(b.endpoints[1].port, 30008);
}

static void test_registry_restart_persistence(void **state)
{
    struct fixture *fx = *state;
    struct ctl_camera a = make_cam("aa:bb:cc:00:00:01", "relay-7", 1);
    struct ctl_camera b = make_cam("aa:bb:cc:00:00:02", "relay-7", 2), got;
    struct ctl_relay_account acct = {.name = "relay-7"}, racct;
    uint8_t key[32], buf[64];
    size_t len = 0;

    memset(key, 0x42, sizeof(key));
    acct.verifier.iterations = 10000;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &a, two_services, 2, 20000, 20099), 0);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, two_services, 2, 20000, 20099), 0);
    assert_int_equal(ctl_registry_camera_set_recorder(fx->reg, a.serial, "rec-1"), 0);
    assert_int_equal(ctl_registry_camera_seen(fx->reg, a.serial, 1700000999, "198.51.100.7:55123",
                                              123456789),
                     0);
    assert_int_equal(ctl_registry_camera_set_synced(fx->reg, a.serial, 1), 0);
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), 0);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "ticket_key", key, sizeof(key)), 0);
    snprintf(a.recorder, sizeof(a.recorder), "rec-1");
    a.last_seen_unix = 1700000999;
    snprintf(a.site_addr, sizeof(a.site_addr), "198.51.100.7:55123");
    a.bytes_relayed = 123456789;
    a.synced = 1;

    reopen(fx);

    assert_int_equal(ctl_registry_camera_get(fx->reg, a.serial, &got), 0);
    assert_camera_equal(&a, &got);
    assert_int_equal(ctl_registry_camera_get(fx->reg, b.serial, &got), 0);
    assert_camera_equal(&b, &got);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-7", &racct), 0);
    assert_int_equal(racct.verifier.iterations, 10000);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, sizeof(key));
    assert_memory_equal(buf, key, sizeof(key));

    /* Ports allocated before the restart stay taken. */
    got = make_cam("aa:bb:cc:00:00:03", "relay-7", 3);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &got, two_services, 2, 20000, 20099), 0);
    assert_int_equal(got.endpoints[0].port, 20004);
    assert_int_equal(got.endpoints[1].port, 20005);
}

static void test_registry_range_exhausted_enospc(void **state)
{
    struct fixture *fx = *state;
    static const char *const one[] = {"rtsp"};
    struct ctl_camera a = make_cam("a", "", 1), b = make_cam("b", "", 2), got;
    struct ctl_camera before;

    assert_int_equal(ctl_registry_camera_add(fx->reg, &a, two_services, 2, 40000, 40002), 0);
    before = b;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, two_services, 2, 40000, 40002), -ENOSPC);
    assert_memory_equal(&before, &b, sizeof(b));
    /* All or nothing: the camera row was rolled back with the ports. */
    assert_int_equal(ctl_registry_camera_get(fx->reg, "b", &got), -ENOENT);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, one, 1, 40000, 40002), 0);
    assert_int_equal(b.endpoints[0].port, 40002);

    /* The top of the port space: no wrap-around past 65535. */
    a = make_cam("top-1", "", 3);
    b = make_cam("top-2", "", 4);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &a, two_services, 2, 65534, 65535), 0);
    assert_int_equal(a.endpoints[0].port, 65534);
    assert_int_equal(a.endpoints[1].port, 65535);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, one, 1, 65534, 65535), -ENOSPC);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &b, one, 1, 65535, 65535), -ENOSPC);
    assert_int_equal(count_cameras(fx->reg, NULL), 3);
}

/* Copies s into a struct field; one that does not fit fills the field with no NUL at all. */
static void set_field(char *dst, size_t cap, const char *s)
{
    if (strlen(s) >= cap)
        memset(dst, 'A', cap);
    else
        memcpy(dst, s, strlen(s) + 1);
}

static void test_registry_invalid_input_einval(void **state)
{
    struct fixture *fx = *state;
    static const char *const bad[] = {
        "",
        "has space",
        "quote'",
        "dquote\"",
        "x'; DROP TABLE cameras; --",
        "new\nline",
        "percent%s",
        "slash/",
        "cam\xc3\xa9ra",
        /* 64 bytes: one too many */
        "0123456789012345678901234567890123456789012345678901234567890123",
    };
    static const char *const dup_services[] = {"rtsp", "rtsp"};
    static const char *const long_service[] = {"0123456789abcdef"};
    static const char *const bad_service[] = {"rt sp"};
    struct ctl_camera cam, got;
    uint8_t v = 1;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cam = make_cam("ok", "", 1);
        set_field(cam.serial, sizeof(cam.serial), bad[i]);
        assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099),
                         -EINVAL);
        assert_int_equal(ctl_registry_camera_upsert(fx->reg, &cam), -EINVAL);
        assert_int_equal(ctl_registry_camera_get(fx->reg, bad[i], &got), -EINVAL);
        assert_int_equal(ctl_registry_camera_remove(fx->reg, bad[i]), -EINVAL);
        assert_int_equal(
            ctl_registry_camera_set_recorder(fx->reg, "ok", bad[i][0] ? bad[i] : "x y"), -EINVAL);
        assert_int_equal(ctl_registry_meta_set(fx->reg, bad[i], &v, 1), -EINVAL);

        cam = make_cam("ok", "", 1);
        set_field(cam.relay, sizeof(cam.relay), bad[i][0] ? bad[i] : "a b");
        assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099),
                         -EINVAL);
    }

    /* 63 bytes is the longest serial. */
    cam = make_cam("012345678901234567890123456789012345678901234567890123456789012", "", 1);
    assert_int_equal(strlen(cam.serial), 63);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, NULL, 0, 20000, 20099), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, cam.serial, &got), 0);

    cam = make_cam("cam-x", "", 1);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, dup_services, 2, 20000, 20099),
                     -EINVAL);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, long_service, 1, 20000, 20099),
                     -EINVAL);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, bad_service, 1, 20000, 20099), -EINVAL);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 5, 20000, 20099),
                     -EINVAL);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 0, 20099), -EINVAL);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20099, 20000),
                     -EINVAL);
    cam.verifier.iterations = 0;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099),
                     -EINVAL);
    cam = make_cam("cam-x", "", 1);
    snprintf(cam.site_addr, sizeof(cam.site_addr), "1.2.3.4:5 ; rm");
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099),
                     -EINVAL);
    assert_int_equal(ctl_registry_camera_seen(fx->reg, "ok", 1, "a b", 0), -EINVAL);

    /* Nothing but the one valid camera got in. */
    assert_int_equal(count_cameras(fx->reg, NULL), 1);
}

static void test_registry_upsert_replaces_verifier(void **state)
{
    struct fixture *fx = *state;
    struct ctl_camera cam = make_cam("cam-u", "relay-a", 1), up = make_cam("cam-u", "relay-b", 9);
    struct ctl_camera got, fresh = make_cam("cam-new", "relay-b", 5);

    snprintf(cam.recorder, sizeof(cam.recorder), "rec");
    cam.last_seen_unix = 1700000500;
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);

    up.verifier.iterations = 8192;
    up.created_unix = 1;             /* other fields are not replaced */
    snprintf(up.recorder, sizeof(up.recorder), "other");
    assert_int_equal(ctl_registry_camera_upsert(fx->reg, &up), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-u", &got), 0);
    assert_memory_equal(got.verifier.salt, up.verifier.salt, sizeof(up.verifier.salt));
    assert_memory_equal(got.verifier.stored_key, up.verifier.stored_key,
                        sizeof(up.verifier.stored_key));
    assert_int_equal(got.verifier.iterations, 8192);
    assert_string_equal(got.relay, "relay-b");
    /* Everything else is the original record, ports included. */
    cam.verifier = up.verifier;
    snprintf(cam.relay, sizeof(cam.relay), "relay-b");
    assert_camera_equal(&cam, &got);

    /* A new serial is inserted. */
    assert_int_equal(ctl_registry_camera_upsert(fx->reg, &fresh), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-new", &got), 0);
    assert_camera_equal(&fresh, &got);
}

struct walk {
    int calls;
    int stop_at;
    char last[CTL_NAME_MAX];
    const char *want_relay;
    int ordered;
    int relay_ok;
};

static int walk_cb(const struct ctl_camera *cam, void *ctx)
{
    struct walk *w = ctx;

    if (w->calls > 0 && strcmp(w->last, cam->serial) >= 0)
        w->ordered = 0;
    if (w->want_relay && strcmp(cam->relay, w->want_relay) != 0)
        w->relay_ok = 0;
    snprintf(w->last, sizeof(w->last), "%s", cam->serial);
    w->calls++;
    return w->calls == w->stop_at ? 7 : 0;
}

static int remove_cb(const struct ctl_camera *cam, void *ctx)
{
    /* The callback runs unlocked: calling back into the registry must not deadlock. */
    return ctl_registry_camera_remove(ctx, cam->serial);
}

static void test_registry_foreach_filter_and_early_stop(void **state)
{
    struct fixture *fx = *state;
    struct walk w;
    char serial[32];

    /* 70 cameras: more than two foreach pages. Inserted out of order. */
    for (int i = 69; i >= 0; i--) {
        struct ctl_camera cam;

        snprintf(serial, sizeof(serial), "cam-%03d", i);
        cam = make_cam(serial, i % 2 ? "relay-odd" : "relay-even", (uint8_t)i);
        assert_int_equal(ctl_registry_camera_upsert(fx->reg, &cam), 0);
    }

    memset(&w, 0, sizeof(w));
    w.ordered = w.relay_ok = 1;
    assert_int_equal(ctl_registry_camera_foreach(fx->reg, NULL, walk_cb, &w), 0);
    assert_int_equal(w.calls, 70);
    assert_true(w.ordered);
    assert_string_equal(w.last, "cam-069");

    memset(&w, 0, sizeof(w));
    w.ordered = w.relay_ok = 1;
    w.want_relay = "relay-odd";
    assert_int_equal(ctl_registry_camera_foreach(fx->reg, "relay-odd", walk_cb, &w), 0);
    assert_int_equal(w.calls, 35);
    assert_true(w.ordered);
    assert_true(w.relay_ok);
    assert_int_equal(count_cameras(fx->reg, "no-such-relay"), 0);
    assert_int_equal(count_cameras(fx->reg, ""), 0);

    /* Early stop: fn's non-zero value comes back and no more calls are made. */
    memset(&w, 0, sizeof(w));
    w.ordered = w.relay_ok = 1;
    w.stop_at = 40;
    assert_int_equal(ctl_registry_camera_foreach(fx->reg, NULL, walk_cb, &w), 7);
    assert_int_equal(w.calls, 40);
    assert_string_equal(w.last, "cam-039");

    assert_int_equal(ctl_registry_camera_foreach(fx->reg, "bad relay", walk_cb, &w), -EINVAL);

    assert_int_equal(ctl_registry_camera_foreach(fx->reg, "relay-even", remove_cb, fx->reg), 0);
    assert_int_equal(count_cameras(fx->reg, NULL), 35);
    assert_int_equal(count_cameras(fx->reg, "relay-even"), 0);
}

static void test_registry_prune_relay_keeps_listed(void **state)
{
    struct fixture *fx = *state;
    static const char *const keep[] = {"b", "d", "e", "unknown", "b"};
    static const char *const bad_keep[] = {"b", "x y"};
    const char *serials[] = {"a", "b", "c", "d"};
    struct ctl_camera cam, got;

    for (int i = 0; i < 4; i++) {
        cam = make_cam(serials[i], "r1", (uint8_t)i);
        assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);
    }
    cam = make_cam("e", "r2", 9);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);

    assert_int_equal(ctl_registry_camera_prune_relay(fx->reg, "r1", bad_keep, 2), -EINVAL);
    assert_int_equal(count_cameras(fx->reg, NULL), 5);

    assert_int_equal(ctl_registry_camera_prune_relay(fx->reg, "r1", keep, 5), 2);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "a", &got), -ENOENT);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "c", &got), -ENOENT);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "b", &got), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "d", &got), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "e", &got), 0);

    /* The pruned cameras' ports (20000-20001, 20004-20005) are free again. */
    cam = make_cam("f", "r1", 10);
    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);
    assert_int_equal(cam.endpoints[0].port, 20000);
    assert_int_equal(cam.endpoints[1].port, 20001);

    /* Nothing listed: all of r1 goes, r2 stays. The keep list does not leak between calls. */
    assert_int_equal(ctl_registry_camera_prune_relay(fx->reg, "r1", NULL, 0), 3);
    assert_int_equal(count_cameras(fx->reg, "r1"), 0);
    assert_int_equal(count_cameras(fx->reg, "r2"), 1);
    assert_int_equal(ctl_registry_camera_prune_relay(fx->reg, "r1", NULL, 0), 0);
}

static void test_registry_seen_recorder_synced(void **state)
{
    struct fixture *fx = *state;
    struct ctl_camera cam = make_cam("cam-s", "", 1), got;

    assert_int_equal(ctl_registry_camera_add(fx->reg, &cam, two_services, 2, 20000, 20099), 0);
    assert_int_equal(ctl_registry_camera_seen(fx->reg, "cam-s", 1700001000, "203.0.113.9:41000",
                                              1000),
                     0);
    assert_int_equal(ctl_registry_camera_seen(fx->reg, "cam-s", 1700001060, NULL, 5000), 0);
    assert_int_equal(ctl_registry_camera_set_recorder(fx->reg, "cam-s", "vms-1"), 0);
    assert_int_equal(ctl_registry_camera_set_synced(fx->reg, "cam-s", 42), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-s", &got), 0);
    assert_true(got.last_seen_unix == 1700001060);
    assert_string_equal(got.site_addr, "203.0.113.9:41000"); /* NULL kept it */
    assert_true(got.bytes_relayed == 5000);
    assert_string_equal(got.recorder, "vms-1");
    assert_int_equal(got.synced, 1);

    assert_int_equal(ctl_registry_camera_set_recorder(fx->reg, "cam-s", NULL), 0);
    assert_int_equal(ctl_registry_camera_set_synced(fx->reg, "cam-s", 0), 0);
    assert_int_equal(ctl_registry_camera_get(fx->reg, "cam-s", &got), 0);
    assert_string_equal(got.recorder, "");
    assert_int_equal(got.synced, 0);

    assert_int_equal(ctl_registry_camera_seen(fx->reg, "nope", 1, NULL, 0), -ENOENT);
    assert_int_equal(ctl_registry_camera_set_recorder(fx->reg, "nope", "vms-1"), -ENOENT);
    assert_int_equal(ctl_registry_camera_set_synced(fx->reg, "nope", 1), -ENOENT);
}

static int relay_count_cb(const struct ctl_relay_account *acct, void *ctx)
{
    (*(int *)ctx)++;
    return 0;
}

static void test_registry_relay_account_put_get_set_addrs(void **state)
{
    struct fixture *fx = *state;
    struct ctl_relay_account acct, got;
    uint8_t key[32], key2[32];
    int n = 0;

    memset(&acct, 0, sizeof(acct));
    snprintf(acct.name, sizeof(acct.name), "relay-east");
    memset(acct.verifier.salt, 1, sizeof(acct.verifier.salt));
    memset(acct.verifier.stored_key, 2, sizeof(acct.verifier.stored_key));
    acct.verifier.iterations = 4096;
    memset(key, 0x5a, sizeof(key));
    memset(key2, 0x3c, sizeof(key2));

    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), -ENOENT);
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), 0);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), 0);
    assert_string_equal(got.name, "relay-east");
    assert_memory_equal(&got.verifier, &acct.verifier, sizeof(acct.verifier));
    assert_string_equal(got.public_addrs, "");
    assert_int_equal(got.has_ticket_key, 0);

    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-east",
                                                  "relay.example.com:4433,[2001:db8::2]:4433", key),
                     0);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), 0);
    assert_string_equal(got.public_addrs, "relay.example.com:4433,[2001:db8::2]:4433");
    assert_int_equal(got.has_ticket_key, 1);
    assert_memory_equal(got.ticket_key, key, sizeof(key));

    /* A new verifier without addrs or key keeps the stored ones. */
    memset(acct.verifier.stored_key, 7, sizeof(acct.verifier.stored_key));
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), 0);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), 0);
    assert_memory_equal(&got.verifier, &acct.verifier, sizeof(acct.verifier));
    assert_string_equal(got.public_addrs, "relay.example.com:4433,[2001:db8::2]:4433");
    assert_memory_equal(got.ticket_key, key, sizeof(key));

    /* Given ones replace them; set_addrs with NULLs keeps both. */
    snprintf(acct.public_addrs, sizeof(acct.public_addrs), "10.0.0.1:4433");
    memcpy(acct.ticket_key, key2, sizeof(key2));
    acct.has_ticket_key = 1;
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), 0);
    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-east", NULL, NULL), 0);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), 0);
    assert_string_equal(got.public_addrs, "10.0.0.1:4433");
    assert_memory_equal(got.ticket_key, key2, sizeof(key2));
    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-east", "", NULL), 0);
    assert_int_equal(ctl_registry_relay_get(fx->reg, "relay-east", &got), 0);
    assert_string_equal(got.public_addrs, "");

    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-west", "1.2.3.4:1", key),
                     -ENOENT);
    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-east", "1.2.3.4:1;x", key),
                     -EINVAL);
    assert_int_equal(ctl_registry_relay_set_addrs(fx->reg, "relay-east", "1.2.3.4:1 ", key),
                     -EINVAL);
    snprintf(acct.name, sizeof(acct.name), "relay west");
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), -EINVAL);

    snprintf(acct.name, sizeof(acct.name), "relay-west");
    assert_int_equal(ctl_registry_relay_put(fx->reg, &acct), 0);
    assert_int_equal(ctl_registry_relay_foreach(fx->reg, relay_count_cb, &n), 0);
    assert_int_equal(n, 2);
}

static void test_registry_meta_get_set(void **state)
{
    struct fixture *fx = *state;
    uint8_t val[CTL_META_VALUE_MAX + 1], buf[CTL_META_VALUE_MAX];
    size_t len = 99;

    for (size_t i = 0; i < sizeof(val); i++)
        val[i] = (uint8_t)(i * 31 + 7);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", buf, sizeof(buf), &len), -ENOENT);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "ticket_key", val, 48), 0);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 48);
    assert_memory_equal(buf, val, 48);

    /* Too small a buffer: nothing copied, the size reported. */
    memset(buf, 0, sizeof(buf));
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", buf, 10, &len), -ERANGE);
    assert_int_equal(len, 48);
    assert_int_equal(buf[0], 0);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", NULL, 0, &len), -ERANGE);

    /* Replace, empty, and the 4 KiB bound. */
    assert_int_equal(ctl_registry_meta_set(fx->reg, "ticket_key", val + 1, 16), 0);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "ticket_key", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 16);
    assert_memory_equal(buf, val + 1, 16);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "empty", NULL, 0), 0);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "empty", NULL, 0, &len), 0);
    assert_int_equal(len, 0);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "big", val, CTL_META_VALUE_MAX), 0);
    assert_int_equal(ctl_registry_meta_get(fx->reg, "big", buf, sizeof(buf), &len), 0);
    assert_int_equal(len, CTL_META_VALUE_MAX);
    assert_memory_equal(buf, val, CTL_META_VALUE_MAX);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "big", val, CTL_META_VALUE_MAX + 1), -EINVAL);
    assert_int_equal(ctl_registry_meta_set(fx->reg, "k", NULL, 3), -EINVAL);
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");

    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_registry_open_garbage_file_fails_cleanly(void **state)
{
    struct fixture *fx = *state;
    struct ctl_registry *reg = (struct ctl_registry *)&reg;
    char path[400];
    uint8_t junk[8192], back[8192 + 1];
    uint32_t x = 2463534242u;
    FILE *f;
    size_t n;

    for (size_t i = 0; i < sizeof(junk); i++) { /* xorshift: deterministic garbage */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        junk[i] = (uint8_t)x;
    }
    snprintf(path, sizeof(path), "%s/garbage.db", fx->dir);
    write_file(path, junk, sizeof(junk));
    assert_int_equal(ctl_registry_open(path, &reg), -EIO);
    assert_null(reg);
    /* And the file was left as it was. */
    f = fopen(path, "rb");
    assert_non_null(f);
    n = fread(back, 1, sizeof(back), f);
    fclose(f);
    assert_int_equal(n, sizeof(junk));
    assert_memory_equal(back, junk, sizeof(junk));

    /* Text that is not a database either, and a short file. */
    write_file(path, "not a database, just some text\n", 31);
    assert_true(ctl_registry_open(path, &reg) < 0);
    assert_null(reg);

    snprintf(path, sizeof(path), "%s/no-such-dir/registry.db", fx->dir);
    assert_int_equal(ctl_registry_open(path, &reg), -ENOENT);
    assert_int_equal(ctl_registry_open(fx->dir, &reg), -EISDIR);
    assert_int_equal(ctl_registry_open("", &reg), -EINVAL);
    assert_int_equal(ctl_registry_open(NULL, &reg), -EINVAL);
}

/* Makes an SQLite file with the given user_version and (optionally) a table of its own. */
static void make_foreign_db(const char *path, int user_version, int with_table)
{
    sqlite3 *db;
    char sql[64];

    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (with_table)
        assert_int_equal(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", user_version);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static void test_registry_open_refuses_foreign_schema(void **state)
{
    struct fixture *fx = *state;
    struct ctl_registry *reg = NULL;
    char path[400];

    snprintf(path, sizeof(path), "%s/future.db", fx->dir);
    make_foreign_db(path, 99, 0);
    assert_int_equal(ctl_registry_open(path, &reg), -ENOTSUP);
    assert_null(reg);

    snprintf(path, sizeof(path), "%s/other-app.db", fx->dir);
    make_foreign_db(path, 0, 1);
    assert_int_equal(ctl_registry_open(path, &reg), -ENOTSUP);
    assert_null(reg);
}

static void test_registry_new_file_private_and_wal(void **state)
{
    struct fixture *fx = *state;
    struct stat st;
    sqlite3 *db;
    sqlite3_stmt *q;
    sqlite3_int64 version;

    assert_int_equal(stat(fx->path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    /* A second connection sees the persistent settings the registry set up. */
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    version = sqlite3_column_int64(q, 0);
    assert_true(version >= 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* ---- concurrency ---- */

#define N_THREADS 4
#define PER_THREAD 40

struct worker {
    struct ctl_registry *reg; /* shared, or this thread's own handle */
    const char *path;         /* if non-NULL, open a handle of its own */
    int id;
    int failures;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct ctl_registry *reg = w->reg;

    if (w->path && ctl_registry_open(w->path, &reg) != 0) {
        w->failures++;
        return NULL;
    }
    for (int i = 0; i < PER_THREAD; i++) {
        struct ctl_camera cam, got;
        char serial[32];

        snprintf(serial, sizeof(serial), "t%d-cam-%03d", w->id, i);
        cam = make_cam(serial, "relay-c", (uint8_t)(w->id * 50 + i));
        if (ctl_registry_camera_add(reg, &cam, two_services, 2, 20000, 29999) != 0) {
            w->failures++;
            continue;
        }
        if (ctl_registry_camera_get(reg, serial, &got) != 0 || got.n_endpoints != 2 ||
            got.endpoints[0].port != cam.endpoints[0].port ||
            got.endpoints[1].port != cam.endpoints[1].port ||
            memcmp(&got.verifier, &cam.verifier, sizeof(cam.verifier)) != 0)
            w->failures++;
    }
    if (w->path)
        ctl_registry_close(reg);
    return NULL;
}

struct port_check {
    uint8_t used[65536];
    int dups;
    int count;
};

static int port_check_cb(const struct ctl_camera *cam, void *ctx)
{
    struct port_check *pc = ctx;

    pc->count++;
    for (unsigned i = 0; i < cam->n_endpoints; i++) {
        if (pc->used[cam->endpoints[i].port]++)
            pc->dups++;
    }
    return 0;
}

static void run_threads(struct fixture *fx, int own_handles)
{
    pthread_t th[N_THREADS];
    struct worker w[N_THREADS];
    struct port_check *pc = calloc(1, sizeof(*pc));

    assert_non_null(pc);
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.reg = fx->reg, .path = own_handles ? fx->path : NULL, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(ctl_registry_camera_foreach(fx->reg, NULL, port_check_cb, pc), 0);
    assert_int_equal(pc->count, N_THREADS * PER_THREAD);
    assert_int_equal(pc->dups, 0);
    /* Lowest-free allocation packs them: exactly the first 2 * count ports are used. */
    for (int p = 20000; p < 20000 + 2 * N_THREADS * PER_THREAD; p++)
        assert_int_equal(pc->used[p], 1);
    free(pc);
}

static void test_registry_concurrent_threads_shared_handle(void **state)
{
    run_threads(*state, 0);
}

static void test_registry_concurrent_threads_own_handles(void **state)
{
    run_threads(*state, 1);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_registry_add_get_round_trip),
        T(test_registry_add_duplicate_eexist),
        T(test_registry_ports_lowest_free_and_reused),
        T(test_registry_restart_persistence),
        T(test_registry_range_exhausted_enospc),
        T(test_registry_invalid_input_einval),
        T(test_registry_upsert_replaces_verifier),
        T(test_registry_foreach_filter_and_early_stop),
        T(test_registry_prune_relay_keeps_listed),
        T(test_registry_seen_recorder_synced),
        T(test_registry_relay_account_put_get_set_addrs),
        T(test_registry_meta_get_set),
        T(test_registry_open_garbage_file_fails_cleanly),
        T(test_registry_open_refuses_foreign_schema),
        T(test_registry_new_file_private_and_wal),
        T(test_registry_concurrent_threads_shared_handle),
        T(test_registry_concurrent_threads_own_handles),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
