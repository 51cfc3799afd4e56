/* Tests for the Prometheus text rendering and the bitrate sampler (control/metrics.c) and the
 * status page's escaping and rendering of hostile values (control/status_page.c). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/http.h"
#include "control/metrics.h"
#include "control/status_page.h"

/* ---- Prometheus text ---- */

static void test_metrics_renders_families_and_samples(void **state)
{
    (void)state;
    struct ctl_text t = {0};

    ctl_metrics_family(&t, "camrelay_tunnels_online", CTL_METRIC_GAUGE,
                       "Cameras with a live control tunnel.");
    ctl_metrics_u64(&t, "camrelay_tunnels_online", NULL, NULL, 2);
    ctl_metrics_family(&t, "camrelay_bytes_relayed_total", CTL_METRIC_COUNTER, "Bytes relayed.");
    ctl_metrics_u64(&t, "camrelay_bytes_relayed_total", NULL, NULL, 18446744073709551615ull);
    ctl_metrics_family(&t, "camrelay_cameras", CTL_METRIC_GAUGE, "By state.");
    ctl_metrics_u64(&t, "camrelay_cameras", "state", "green", 1);
    ctl_metrics_u64(&t, "camrelay_cameras", "state", "yellow", 0);
    ctl_metrics_family(&t, "camrelay_worker_busy_seconds_total", CTL_METRIC_COUNTER, "Busy.");
    ctl_metrics_f64(&t, "camrelay_worker_busy_seconds_total", "worker", "0", 1.5);

    assert_string_equal(t.buf,
                        "# HELP camrelay_tunnels_online Cameras with a live control tunnel.\n"
                        "# TYPE camrelay_tunnels_online gauge\n"
                        "camrelay_tunnels_online 2\n"
                        "# HELP camrelay_bytes_relayed_total Bytes relayed.\n"
                        "# TYPE camrelay_bytes_relayed_total counter\n"
                        "camrelay_bytes_relayed_total 18446744073709551615\n"
                        "# HELP camrelay_cameras By state.\n"
                        "# TYPE camrelay_cameras gauge\n"
                        "camrelay_cameras{state=\"green\"} 1\n"
                        "camrelay_cameras{state=\"yellow\"} 0\n"
                        "# HELP camrelay_worker_busy_seconds_total Busy.\n"
                        "# TYPE camrelay_worker_busy_seconds_total counter\n"
                        "camrelay_worker_busy_seconds_total{worker=\"0\"} 1.5\n");
    assert_int_equal(t.len, strlen(t.buf));
    ctl_text_free(&t);
}

static void test_metrics_escapes_label_values(void **state)
{
    (void)state;
    struct ctl_text t = {0};

    /* Backslash, double quote and newline are the three the format escapes; anything else
     * (braces, '=', '#', UTF-8) goes through as it is. */
    ctl_metrics_u64(&t, "camrelay_camera_online", "serial", "a\\b\"c\nd}{=#\xc3\xa9", 1);
    assert_string_equal(t.buf, "camrelay_camera_online{serial=\"a\\\\b\\\"c\\nd}{=#\xc3\xa9\"} 1\n");
    ctl_text_free(&t);

    ctl_metrics_u64(&t, "m", "serial", "", 0); /* empty value */
    ctl_metrics_u64(&t, "m", "serial", NULL, 0);
    assert_string_equal(t.buf, "m{serial=\"\"} 0\nm{serial=\"\"} 0\n");
    ctl_text_free(&t);
}

static void test_metrics_escapes_help_text(void **state)
{
    (void)state;
    struct ctl_text t = {0};

    /* HELP escapes backslash and newline but keeps double quotes. */
    ctl_metrics_family(&t, "m", CTL_METRIC_GAUGE, "a \"quoted\" path C:\\x\nsecond line");
    assert_string_equal(t.buf, "# HELP m a \"quoted\" path C:\\\\x\\nsecond line\n"
                               "# TYPE m gauge\n");
    ctl_text_free(&t);
}

static void test_metrics_spells_special_floats(void **state)
{
    (void)state;
    struct ctl_text t = {0};

    ctl_metrics_f64(&t, "m", NULL, NULL, NAN);
    ctl_metrics_f64(&t, "m", NULL, NULL, INFINITY);
    ctl_metrics_f64(&t, "m", NULL, NULL, -INFINITY);
    ctl_metrics_f64(&t, "m", NULL, NULL, 0.0);
    ctl_metrics_f64(&t, "m", NULL, NULL, 1234567.25);
    assert_string_equal(t.buf, "m NaN\nm +Inf\nm -Inf\nm 0\nm 1234567.25\n");
    ctl_text_free(&t);
}

static void test_metrics_text_grows_past_small_buffer(void **state)
{
    (void)state;
    struct ctl_text t = {0};
    char big[3000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    for (int i = 0; i < 100; i++)
        ctl_text_printf(&t, "%d:%s\n", i, big);
    assert_int_equal(t.len, 100 * (sizeof(big) - 1 + 1) + 10 * 2 + 90 * 3);
    assert_int_equal(strlen(t.buf), t.len);
    assert_memory_equal(t.buf, "0:xxx", 5);
    ctl_text_free(&t);
    assert_null(t.buf);
    assert_int_equal(t.len, 0);
}

/* ---- the bitrate sampler ---- */

static void test_metrics_rate_first_sample_only_primes(void **state)
{
    (void)state;
    struct ctl_rate r = {0};
    assert_true(ctl_rate_bps(&r) == 0.0);
    ctl_rate_update(&r, 1000, 5000000);
    assert_true(ctl_rate_bps(&r) == 0.0); /* bytes relayed before the first sample do not count */
}

static void test_metrics_rate_converges_on_a_steady_stream(void **state)
{
    (void)state;
    struct ctl_rate r = {0};
    uint64_t bytes = 0;
    /* 1 Mbit/s = 125,000 bytes per second, sampled every second for a minute. */
    for (uint64_t t = 0; t <= 60000; t += 1000) {
        ctl_rate_update(&r, 10000 + t, bytes);
        bytes += 125000;
    }
    assert_true(fabs(ctl_rate_bps(&r) - 1e6) < 1e6 * 0.001);
}

static void test_metrics_rate_step_follows_the_time_constant(void **state)
{
    (void)state;
    struct ctl_rate r = {0};
    uint64_t bytes = 0, t = 0;

    for (; t <= 10000; t += 1000) /* idle */
        ctl_rate_update(&r, t, bytes);
    assert_true(ctl_rate_bps(&r) == 0.0);
    /* From t = 10 s on, 800 kbit/s: one time constant later the average shows 1 - 1/e of it. */
    for (t = 11000; t <= 10000 + CTL_RATE_TAU_MS; t += 1000) {
        bytes += 100000;
        ctl_rate_update(&r, t, bytes);
    }
    double want = 800000.0 * (1.0 - exp(-1.0));
    assert_true(fabs(ctl_rate_bps(&r) - want) < 800000.0 * 0.01);
}

static void test_metrics_rate_is_independent_of_the_sampling_interval(void **state)
{
    (void)state;
    struct ctl_rate a = {0}, b = {0};
    /* The same 2 Mbit/s stream, sampled every 250 ms and at irregular intervals: after the
     * same time both show the same smoothed rate. */
    static const uint64_t steps[] = {700, 1300, 400, 2100, 900, 1600, 1000, 800, 1200};
    uint64_t t = 0;
    for (; t <= 20000; t += 250)
        ctl_rate_update(&a, t, t * 250); /* 250 bytes per ms = 2 Mbit/s */
    t = 0;
    ctl_rate_update(&b, t, 0);
    for (size_t i = 0; t < 20000; i++) {
        t += steps[i % (sizeof(steps) / sizeof(steps[0]))];
        if (t > 20000)
            t = 20000;
        ctl_rate_update(&b, t, t * 250);
    }
    assert_true(fabs(ctl_rate_bps(&a) - 2e6) < 2e6 * 0.02);
    assert_true(fabs(ctl_rate_bps(&b) - ctl_rate_bps(&a)) < 2e6 * 0.001);
}

static void test_metrics_rate_decays_to_zero_when_idle(void **state)
{
    (void)state;
    struct ctl_rate r = {0};
    uint64_t t = 0, bytes = 0;
    for (; t <= 30000; t += 1000, bytes += 62500)
        ctl_rate_update(&r, t, bytes);
    assert_true(ctl_rate_bps(&r) > 400000);
    for (uint64_t end = t + 30 * CTL_RATE_TAU_MS; t <= end; t += 1000)
        ctl_rate_update(&r, t, bytes);
    assert_true(ctl_rate_bps(&r) == 0.0);
}

static void test_metrics_rate_survives_a_counter_reset(void **state)
{
    (void)state;
    struct ctl_rate r = {0};
    ctl_rate_update(&r, 0, 0);
    ctl_rate_update(&r, 1000, 125000);
    double before = ctl_rate_bps(&r);
    assert_true(before > 0);
    /* The camera was removed and registered again: its live counter starts from 0. */
    ctl_rate_update(&r, 2000, 10);
    assert_true(ctl_rate_bps(&r) == before); /* no negative or huge spike */
    ctl_rate_update(&r, 2000, 1000000);      /* no time passed: ignored */
    assert_true(ctl_rate_bps(&r) == before);
    ctl_rate_update(&r, 3000, 10 + 125000);
    assert_true(ctl_rate_bps(&r) > before); /* measured from the new base */
    assert_true(ctl_rate_bps(&r) < 1e6);
}

/* ---- the status page ---- */

static void test_status_page_escapes_hostile_values(void **state)
{
    (void)state;
    struct ctl_text t = {0};
    ctl_status_page_escape(&t, "<script>alert('x')</script>&amp;\"onload=\"");
    assert_string_equal(t.buf, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;"
                               "&quot;onload=&quot;");
    ctl_text_free(&t);
    ctl_status_page_escape(&t, NULL);
    ctl_status_page_escape(&t, "plain-SERIAL_0001:a.b");
    assert_string_equal(t.buf, "plain-SERIAL_0001:a.b");
    ctl_text_free(&t);
}

static Camrelay__Endpoint *endpoint(const char *service, uint32_t port, const char *url)
{
    Camrelay__Endpoint *ep = calloc(1, sizeof(*ep));
    camrelay__endpoint__init(ep);
    ep->service = (char *)service;
    ep->port = port;
    ep->url = (char *)url;
    return ep;
}

static void test_status_page_renders_hostile_camera_inert(void **state)
{
    (void)state;
    Camrelay__CameraInfo hostile = CAMRELAY__CAMERA_INFO__INIT, good = CAMRELAY__CAMERA_INFO__INIT;
    Camrelay__Endpoint *eps[2] = {
        endpoint("rtsp", 20000, "rtsp://x/\"><script>alert(1)</script>"),
        endpoint("http", 20001, "javascript:alert(document.cookie)"),
    };
    Camrelay__Endpoint *good_eps[1] = {endpoint("http", 20003, "http://relay:20003/?a=1&b=2")};

    hostile.serial = "<img src=x onerror=alert(1)>";
    hostile.state = "green\" onmouseover=\"alert(1)";
    hostile.online = 1;
    hostile.last_seen_unix = 1700000000;
    hostile.site_addr = "</td><script>x</script>";
    hostile.recorder = "rec'1\"<b>";
    hostile.n_endpoints = 2;
    hostile.endpoints = eps;
    hostile.bytes_relayed = 1536;
    good.serial = "CAM-0001";
    good.state = "yellow";
    good.last_seen_unix = 1700000000 - 600;
    good.site_addr = "";
    good.recorder = "";
    good.n_endpoints = 1;
    good.endpoints = good_eps;

    struct ctl_status_camera rows[2] = {{&hostile, 4.2e6}, {&good, 0}};
    struct ctl_status_summary sum = {
        .relay_name = "relay<1>",
        .now_unix = 1700000000,
        .cameras = 2,
        .by_state = {0, 1, 0},
        .tunnels_online = 1,
        .data_path = "tls-inplace",
        .have_dispatcher = 1,
        .dispatcher_connected = 1,
    };
    struct ctl_text t = {0};
    ctl_status_page_render(&t, &sum, rows, 2);
    const char *p = t.buf;

    /* Nothing the values carried became markup. */
    assert_null(strstr(p, "<script"));
    assert_null(strstr(p, "<img"));
    assert_null(strstr(p, "<b>"));
    assert_null(strstr(p, "onmouseover=\""));
    assert_null(strstr(p, "href=\"javascript:"));
    assert_non_null(strstr(p, "&lt;img src=x onerror=alert(1)&gt;"));
    assert_non_null(strstr(p, "&lt;/td&gt;&lt;script&gt;x&lt;/script&gt;"));
    assert_non_null(strstr(p, "rec&#39;1&quot;&lt;b&gt;"));
    assert_non_null(strstr(p, "<code>javascript:alert(document.cookie)</code>"));
    assert_non_null(strstr(p, "camrelay relay relay&lt;1&gt;"));
    /* An unknown state gets the neutral badge; the known ones their colour. */
    assert_non_null(strstr(p, "<span class=\"badge badge-unknown\">green&quot; onmouseover="));
    assert_non_null(strstr(p, "<span class=\"badge badge-yellow\">yellow</span>"));
    /* Plain http endpoints are links, escaped inside the attribute too. */
    assert_non_null(strstr(p, "<a class=\"url\" href=\"http://relay:20003/?a=1&amp;b=2\">"));
    /* What a person reads. */
    assert_non_null(strstr(p, "<meta http-equiv=\"refresh\" content=\"5\">"));
    assert_non_null(strstr(p, "4.20 Mbit/s"));
    assert_non_null(strstr(p, "1.5 KiB"));
    assert_non_null(strstr(p, "10 min ago"));
    assert_non_null(strstr(p, "2023-11-14 22:13:20Z"));
    assert_non_null(strstr(p, ">online<"));
    assert_non_null(strstr(p, ">offline<"));
    assert_non_null(strstr(p, "</html>\n"));

    ctl_text_free(&t);
    free(eps[0]);
    free(eps[1]);
    free(good_eps[0]);
}

static void test_status_page_says_when_there_are_no_cameras(void **state)
{
    (void)state;
    struct ctl_status_summary sum = {.relay_name = "r", .now_unix = 1700000000};
    struct ctl_text t = {0};
    ctl_status_page_render(&t, &sum, NULL, 0);
    assert_non_null(strstr(t.buf, "No cameras registered"));
    assert_non_null(strstr(t.buf, "no --dispatcher configured"));
    ctl_text_free(&t);
}

static void test_status_page_formats_rates_and_ages(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(ctl_status_page_bitrate(0, buf, sizeof(buf)), "0 bit/s");
    assert_string_equal(ctl_status_page_bitrate(999, buf, sizeof(buf)), "999 bit/s");
    assert_string_equal(ctl_status_page_bitrate(512300, buf, sizeof(buf)), "512.3 kbit/s");
    assert_string_equal(ctl_status_page_bitrate(4.2e6, buf, sizeof(buf)), "4.20 Mbit/s");
    assert_string_equal(ctl_status_page_bitrate(2.5e9, buf, sizeof(buf)), "2.50 Gbit/s");
    assert_string_equal(ctl_status_page_bitrate(NAN, buf, sizeof(buf)), "0 bit/s");
    assert_string_equal(ctl_status_page_ago(1000, 0, buf, sizeof(buf)), "never");
    assert_string_equal(ctl_status_page_ago(1000, 1000, buf, sizeof(buf)), "just now");
    assert_string_equal(ctl_status_page_ago(1000, 958, buf, sizeof(buf)), "42 s ago");
    assert_string_equal(ctl_status_page_ago(10000, 10000 - 300, buf, sizeof(buf)), "5 min ago");
    assert_string_equal(ctl_status_page_ago(100000, 100000 - 3 * 3600, buf, sizeof(buf)),
                        "3 h ago");
    assert_string_equal(ctl_status_page_ago(1000000, 1000000 - 2 * 86400, buf, sizeof(buf)),
                        "2 d ago");
    assert_int_equal(ctl_status_state("green"), CTL_CAM_GREEN);
    assert_int_equal(ctl_status_state("red"), CTL_CAM_RED);
    assert_int_equal(ctl_status_state("Green"), -1);
    assert_int_equal(ctl_status_state(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_renders_families_and_samples),
        cmocka_unit_test(test_metrics_escapes_label_values),
        cmocka_unit_test(test_metrics_escapes_help_text),
        cmocka_unit_test(test_metrics_spells_special_floats),
        cmocka_unit_test(test_metrics_text_grows_past_small_buffer),
        cmocka_unit_test(test_metrics_rate_first_sample_only_primes),
        cmocka_unit_test(test_metrics_rate_converges_on_a_steady_stream),
        cmocka_unit_test(test_metrics_rate_step_follows_the_time_constant),
        cmocka_unit_test(test_metrics_rate_is_independent_of_the_sampling_interval),
        cmocka_unit_test(test_metrics_rate_decays_to_zero_when_idle),
        cmocka_unit_test(test_metrics_rate_survives_a_counter_reset),
        cmocka_unit_test(test_status_page_escapes_hostile_values),
        cmocka_unit_test(test_status_page_renders_hostile_camera_inert),
        cmocka_unit_test(test_status_page_says_when_there_are_no_cameras),
        cmocka_unit_test(test_status_page_formats_rates_and_ages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
