/* Tests for the internal HTTP port (control/http.c) and what camrelayd serves on it
 * (control/relayd_metrics.c), in-process on a loopback port and a temporary registry without
 * the data path: methods, status codes, headers, and that no secret ever appears. */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "common/net.h"
#include "control/http.h"
#include "control/mgmt_reply.h"
#include "control/registry.h"
#include "control/relayd.h"
#include "tests/support/support.h"

#define OAK "OAK-SECRET-7f3a9c"
#define USER "admin-user-q1"
#define PASSWORD "pa55-word-zz9"

/* Sends a raw request to 127.0.0.1:port and reads the whole response (the server closes
 * after answering). Returns an owned string. */
static char *http_raw(uint16_t port, const char *request)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 5};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(write(fd, request, strlen(request)), (ssize_t)strlen(request));
    struct ctl_text t = {0};
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        ctl_text_put(&t, buf, (size_t)n);
    close(fd);
    ctl_text_put(&t, "", 0);
    return t.buf;
}

static char *http_get(uint16_t port, const char *method, const char *path)
{
    char req[512];
    snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s\r\n",
             method, path, strcmp(method, "POST") == 0 ? "Content-Length: 3\r\n\r\nabc" : "");
    if (strcmp(method, "POST") == 0) /* the body is already in the request */
        req[strlen(req) - 2] = '\0';
    return http_raw(port, req);
}

/* ---- the server ---- */

static int calls;

static int echo_handler(void *ctx, const char *path, struct ctl_http_response *rsp)
{
    (void)ctx;
    calls++;
    if (strcmp(path, "/hello") != 0)
        return -ENOENT;
    rsp->content_type = CTL_HTTP_TEXT;
    ctl_text_puts(&rsp->body, "hello <world>\n");
    return 0;
}

static void test_metrics_http_serves_get_and_head_only(void **state)
{
    (void)state;
    struct ctl_http *h = NULL;
    char err[256];
    struct ctl_http_config cfg = {.listen = "127.0.0.1:0", .handler = echo_handler,
                                  .name = "test"};
    assert_int_equal(ctl_http_start(&cfg, &h, err, sizeof(err)), 0);
    uint16_t port = ctl_http_port(h);
    assert_true(port > 0);

    calls = 0;
    char *r = http_get(port, "GET", "/hello?x=1");
    assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(r, "Content-Type: text/plain; charset=utf-8\r\n"));
    assert_non_null(strstr(r, "Cache-Control: no-store\r\n"));
    assert_non_null(strstr(r, "X-Content-Type-Options: nosniff\r\n"));
    assert_non_null(strstr(r, "\r\n\r\nhello <world>\n"));
    free(r);

    r = http_get(port, "HEAD", "/hello");
    assert_non_null(strstr(r, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(r, "Content-Length: 14\r\n"));
    assert_null(strstr(r, "hello <world>")); /* headers only */
    free(r);

    r = http_get(port, "POST", "/hello");
    assert_non_null(strstr(r, "HTTP/1.1 405 Method Not Allowed\r\n"));
    assert_non_null(strstr(r, "Allow: GET, HEAD\r\n"));
    free(r);
    r = http_get(port, "DELETE", "/hello");
    assert_non_null(strstr(r, " 405 "));
    free(r);
    assert_int_equal(calls, 2); /* the handler never saw the refused methods */

    r = http_get(port, "GET", "/nope");
    assert_non_null(strstr(r, "HTTP/1.1 404 Not Found\r\n"));
    free(r);

    /* Not HTTP at all: refused by libmicrohttpd, the server keeps serving. */
    r = http_raw(port, "\x16\x03\x01\x02\x00garbage\r\n\r\n");
    assert_null(strstr(r, "200 OK"));
    free(r);
    r = http_get(port, "GET", "/hello");
    assert_non_null(strstr(r, "200 OK"));
    free(r);
    ctl_http_stop(h);
    ctl_http_stop(NULL);
}

static void test_metrics_http_reports_bad_or_busy_addresses(void **state)
{
    (void)state;
    struct ctl_http *h = NULL, *h2 = NULL;
    char err[256];
    struct ctl_http_config cfg = {.listen = "no-port-here", .handler = echo_handler,
                                  .name = "metrics"};
    assert_int_equal(ctl_http_start(&cfg, &h, err, sizeof(err)), -EINVAL);
    assert_null(h);
    assert_non_null(strstr(err, "no-port-here"));

    cfg.listen = "127.0.0.1:0";
    assert_int_equal(ctl_http_start(&cfg, &h, err, sizeof(err)), 0);
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", ctl_http_port(h));
    cfg.listen = addr;
    assert_int_equal(ctl_http_start(&cfg, &h2, err, sizeof(err)), -EADDRINUSE);
    assert_non_null(strstr(err, addr));
    assert_non_null(strstr(err, "metrics"));
    ctl_http_stop(h);
}

/* ---- camrelayd's pages, without a data path ---- */

struct fixture {
    char dir[128], db[256];
    struct ctl_registry *reg;
    struct ctl_relayd *d;
};

static const char *const services[] = {"rtsp", "http"};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(test_tmpdir(f->dir, sizeof(f->dir)), 0);
    snprintf(f->db, sizeof(f->db), "%s/relay.db", f->dir);
    struct ctl_relayd_config rc = {
        .name = "relay-t",
        .internal_host = "127.0.0.1",
        .url_host = "relay-internal",
        .services = services,
        .n_services = 2,
        /* Below the ephemeral range, where outgoing connections cannot be holding them. */
        .port_lo = (uint16_t)(14000 + (getpid() % 60) * 100),
        .port_hi = (uint16_t)(14000 + (getpid() % 60) * 100 + 99),
        .iterations = 1000,
    };
    assert_int_equal(ctl_registry_open(f->db, &f->reg), 0);
    assert_int_equal(ctl_relayd_new(&rc, f->reg, &f->d), 0);
    assert_true(ctl_relayd_load_cameras(f->d) >= 0);

    /* Two cameras registered through the management handler, secrets and all. */
    for (int i = 1; i <= 2; i++) {
        char serial[32];
        struct ctl_mgmt_reply rep;
        Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
        Camrelay__CameraRegister reg = CAMRELAY__CAMERA_REGISTER__INIT;
        snprintf(serial, sizeof(serial), "CAM-%04d", i);
        reg.serial = serial;
        reg.oak = OAK;
        reg.user = USER;
        reg.password = PASSWORD;
        req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
        req.camera_register = &reg;
        ctl_mgmt_reply_init(&rep, 1);
        ctl_relayd_handle(f->d, &req, &rep);
        assert_int_equal(rep.msg.status, CAMRELAY__STATUS__OK);
        ctl_mgmt_reply_free(&rep);
    }
    ctl_relayd_sample(f->d, 1000); /* no data path: a no-op, must not crash */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ctl_relayd_free(f->d);
    ctl_registry_close(f->reg);
    test_rmtree(f->dir);
    free(f);
    return 0;
}

static char *page(struct fixture *f, const char *path, const char **ctype)
{
    struct ctl_http_response rsp = {.status = 200};
    int rc = ctl_relayd_http(f->d, path, &rsp);
    if (rc < 0) {
        ctl_text_free(&rsp.body);
        return NULL;
    }
    assert_int_equal(rsp.status, 200);
    *ctype = rsp.content_type;
    ctl_text_put(&rsp.body, "", 0);
    return rsp.body.buf;
}

static void assert_no_secret(const char *s)
{
    assert_null(strstr(s, OAK));
    assert_null(strstr(s, USER));
    assert_null(strstr(s, PASSWORD));
}

static void test_metrics_relayd_serves_metrics_without_secrets(void **state)
{
    struct fixture *f = *state;
    const char *ct;
    char *m = page(f, "/metrics", &ct);
    assert_string_equal(ct, CTL_HTTP_PROMETHEUS);
    assert_no_secret(m);
    assert_non_null(strstr(m, "# TYPE camrelay_cameras gauge\n"));
    assert_non_null(strstr(m, "camrelay_cameras{state=\"red\"} 2\n"));
    assert_non_null(strstr(m, "camrelay_cameras{state=\"green\"} 0\n"));
    assert_non_null(strstr(m, "camrelay_dispatcher_connected 0\n"));
    assert_non_null(strstr(m, "camrelay_cameras_unsynced 2\n"));
    assert_non_null(strstr(m, "camrelay_camera_online{serial=\"CAM-0001\"} 0\n"));
    assert_non_null(strstr(m, "camrelay_camera_bitrate_bps{serial=\"CAM-0002\"} 0\n"));
    assert_non_null(strstr(m, "# TYPE camrelay_camera_bytes_relayed_total counter\n"));
    /* Every sample line belongs to a family announced with HELP and TYPE before it. */
    char *copy = strdup(m), *save = NULL, last_type[128] = "";
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# TYPE ", 7) == 0) {
            sscanf(line + 7, "%127s", last_type);
            continue;
        }
        if (line[0] == '#')
            continue;
        size_t n = strlen(last_type);
        assert_true(n > 0 && strncmp(line, last_type, n) == 0 &&
                    (line[n] == ' ' || line[n] == '{'));
    }
    free(copy);
    free(m);

    ctl_relayd_set_metrics_per_camera(f->d, 0);
    m = page(f, "/metrics", &ct);
    assert_null(strstr(m, "serial="));
    assert_non_null(strstr(m, "camrelay_cameras{state=\"red\"} 2\n"));
    free(m);
}

static void test_metrics_relayd_status_page_and_api(void **state)
{
    struct fixture *f = *state;
    const char *ct;
    char *html = page(f, "/", &ct);
    assert_string_equal(ct, CTL_HTTP_HTML);
    assert_no_secret(html);
    assert_non_null(strstr(html, "CAM-0001"));
    assert_non_null(strstr(html, "CAM-0002"));
    assert_non_null(strstr(html, "<span class=\"badge badge-red\">red</span>"));
    char want[128];
    unsigned lo = 14000 + (unsigned)(getpid() % 60) * 100;
    snprintf(want, sizeof(want), "<code>rtsp://relay-internal:%u/</code>", lo);
    assert_non_null(strstr(html, want));
    snprintf(want, sizeof(want), "href=\"http://relay-internal:%u/\"", lo + 1);
    assert_non_null(strstr(html, want));
    free(html);

    char *js = page(f, "/api/cameras", &ct);
    assert_string_equal(ct, CTL_HTTP_JSON);
    assert_no_secret(js);
    json_error_t jerr;
    json_t *arr = json_loads(js, 0, &jerr);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), 2);
    json_t *cam = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(cam, "serial")), "CAM-0001");
    assert_string_equal(json_string_value(json_object_get(cam, "state")), "red");
    assert_true(json_is_false(json_object_get(cam, "online")));
    assert_int_equal(json_array_size(json_object_get(cam, "endpoints")), 2);
    json_decref(arr);
    free(js);

    assert_null(page(f, "/secret", &ct));
}

/* ---- the reload operation ---- */

static int reload_calls;
static int fake_reload(void *ctx, const char *why, char *msg, size_t cap)
{
    (void)ctx;
    reload_calls++;
    snprintf(msg, cap, "log-level info -> debug (%s)", why);
    return 0;
}

static void test_metrics_relayd_reload_operation(void **state)
{
    struct fixture *f = *state;
    struct ctl_mgmt_reply rep;
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_RELOAD;
    req.reload = &sel;

    ctl_mgmt_reply_init(&rep, 7);
    ctl_relayd_handle(f->d, &req, &rep);
    assert_int_equal(rep.msg.status, CAMRELAY__STATUS__ERR_UNAVAILABLE);
    ctl_mgmt_reply_free(&rep);

    ctl_relayd_set_reload(f->d, fake_reload, NULL);
    ctl_mgmt_reply_init(&rep, 8);
    ctl_relayd_handle(f->d, &req, &rep);
    assert_int_equal(rep.msg.status, CAMRELAY__STATUS__OK);
    assert_string_equal(rep.msg.message, "log-level info -> debug (camrelayctl reload)");
    assert_int_equal(reload_calls, 1);
    ctl_mgmt_reply_free(&rep);
}

int main(void)
{
    cr_log_set_level_name("warn");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_http_serves_get_and_head_only),
        cmocka_unit_test(test_metrics_http_reports_bad_or_busy_addresses),
        cmocka_unit_test_setup_teardown(test_metrics_relayd_serves_metrics_without_secrets, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_metrics_relayd_status_page_and_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics_relayd_reload_operation, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
