/* Unit tests for control/sizing.c and sizing_plot.c: the seed's figures, CSV, bench, outputs. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "control/sizing.h"
#include "control/sizing_plot.h"
#include "tests/support/support.h"

/* ---- helpers --------------------------------------------------------------------------------- */

/* The fixtures directory: $FIXTURES, else tests/fixtures next to this file's directory
 * (make compiles it as tests/control/test_sizing.c from the top of the tree). */
static void fixture(const char *name, char *buf, size_t cap)
{
    const char *env = getenv("FIXTURES");
    const char *slash = strrchr(__FILE__, '/');

    if (env && *env)
        snprintf(buf, cap, "%s/%s", env, name);
    else if (slash)
        snprintf(buf, cap, "%.*s/../fixtures/%s", (int)(slash - __FILE__), __FILE__, name);
    else
        snprintf(buf, cap, "../fixtures/%s", name);
}

/* Runs `camrelayctl size ARGS...` with stdout and stderr captured (owned by the caller). */
struct run {
    int status;
    char *out;
    char *err;
};

static struct run run_size(const char *first, ...)
{
    char *argv[32];
    int argc = 0;
    size_t out_len = 0, err_len = 0;
    struct run r = {0};
    FILE *out = open_memstream(&r.out, &out_len);
    FILE *err = open_memstream(&r.err, &err_len);
    va_list ap;

    assert_non_null(out);
    assert_non_null(err);
    argv[argc++] = (char *)"size";
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        assert_true(argc < 31);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    r.status = ctl_size_run(argc, argv, out, err);
    fclose(out);
    fclose(err);
    return r;
}

static void run_free(struct run *r)
{
    free(r->out);
    free(r->err);
}

/* Parses CSV text with ctl_size_parse_csv; error messages into *errs (owned) when not NULL. */
static int parse_text(const char *text, size_t len, struct ctl_size_plan *plan, char **errs)
{
    static char empty[1] = "";
    char *msgs = NULL;
    size_t msgs_len = 0;
    FILE *err = open_memstream(&msgs, &msgs_len);
    FILE *in = fmemopen(len ? (void *)text : empty, len ? len : 1, "r");
    int rc;

    assert_non_null(err);
    assert_non_null(in);
    if (!len)
        fgetc(in); /* fmemopen refuses size 0: start at the end of a 1-byte buffer */
    rc = ctl_size_parse_csv(in, "t.csv", plan, err);
    fclose(in);
    fclose(err);
    if (errs)
        *errs = msgs;
    else
        free(msgs);
    return rc;
}

static int parse_str(const char *text, struct ctl_size_plan *plan, char **errs)
{
    return parse_text(text, strlen(text), plan, errs);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

#define assert_contains(hay, needle)                                                       \
    do {                                                                                   \
        if (!strstr((hay), (needle)))                                                      \
            fail_msg("expected to find \"%s\" in:\n%s", (needle), (hay));                   \
    } while (0)

static const char bench_json[] =
    "{\"machine\": {\"cpu\": \"test-cpu\", \"kernel\": \"6.1\"},\n"
    " \"cores\": 8, \"max_streams\": 1000, \"stream_kbps\": 2000, \"cpu_s_per_gb\": 2.0,\n"
    " \"rss_per_tunnel_bytes\": 262144, \"latency_p99_ms\": 4.1}\n";

/* ---- the seed's example ---------------------------------------------------------------------- */

static void test_sizing_seed_example(void **state)
{
    struct ctl_size_plan plan;
    struct run r;

    ctl_size_plan_init(&plan);
    assert_int_equal(ctl_size_plan_uniform(&plan, 50, 4, 1, 500, 8, -1), 0);
    ctl_size_compute(&plan);
    /* 50 sites × 4 cameras × 500 kbit/s: 2 Mbit/s up per site, 100 Mbit/s down centrally. */
    assert_true(plan.sites[0].up_payload_kbps == 2000.0);
    assert_true(plan.sites[49].up_payload_kbps == 2000.0);
    assert_true(plan.central_payload_kbps == 100000.0);
    assert_int_equal(plan.cameras, 200);
    assert_int_equal(plan.streams, 200);
    /* Overhead and headroom are shown separately, on top of the payload. */
    assert_true(fabs(plan.sites[0].up_wire_kbps - 2000.0 * 1.07) < 1e-9);
    assert_true(fabs(plan.central_wire_kbps - 107000.0) < 1e-6);
    assert_true(fabs(plan.central_need_kbps - 133750.0) < 1e-6);
    assert_int_equal(plan.n_unchecked, 50);
    assert_int_equal(plan.n_short, 0);
    ctl_size_plan_free(&plan);

    r = run_size("--sites", "50", "--cameras-per-site", "4", "--kbps", "500", "--fps", "8", NULL);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    assert_contains(r.out, "Plan: 50 sites × 4 cameras × 1 stream × 500 kbit/s at 8 fps");
    assert_contains(r.out,
                    "upstream per site           2.00 Mbit/s      2.14 Mbit/s      2.68 Mbit/s");
    assert_contains(r.out,
                    "central downstream        100.00 Mbit/s    107.00 Mbit/s    133.75 Mbit/s");
    assert_contains(r.out, "overhead 7%");
    run_free(&r);
}

static void test_sizing_seed_json_has_the_figures(void **state)
{
    struct run r = run_size("--sites", "50", "--cameras-per-site", "4", "--kbps", "500", "--fps",
                            "8", "--json", NULL);
    json_error_t je;
    json_t *root, *totals, *sites, *site;

    assert_int_equal(r.status, 0);
    root = json_loads(r.out, 0, &je);
    if (!root)
        fail_msg("JSON output does not parse: %s (line %d)", je.text, je.line);
    totals = json_object_get(root, "totals");
    assert_non_null(totals);
    assert_int_equal(json_integer_value(json_object_get(totals, "sites")), 50);
    assert_int_equal(json_integer_value(json_object_get(totals, "cameras")), 200);
    assert_int_equal(json_integer_value(json_object_get(totals, "streams")), 200);
    assert_true(json_number_value(json_object_get(totals, "central_payload_kbps")) == 100000.0);
    assert_true(json_number_value(json_object_get(totals, "site_max_upstream_payload_kbps")) ==
                2000.0);
    assert_true(json_number_value(json_object_get(totals, "central_wire_kbps")) == 107000.0);
    assert_true(json_number_value(json_object_get(totals, "central_need_kbps")) == 133750.0);
    assert_true(json_number_value(json_object_get(root, "overhead_pct")) == 7.0);
    assert_true(json_number_value(json_object_get(root, "headroom_pct")) == 25.0);
    assert_true(json_is_null(json_object_get(root, "appliances")));
    sites = json_object_get(root, "sites");
    assert_int_equal(json_array_size(sites), 50);
    site = json_array_get(sites, 49);
    assert_string_equal(json_string_value(json_object_get(site, "name")), "site-50");
    assert_true(json_number_value(json_object_get(site, "upstream_payload_kbps")) == 2000.0);
    assert_int_equal(json_integer_value(json_object_get(site, "fps")), 8);
    assert_string_equal(json_string_value(json_object_get(site, "status")), "unchecked");
    json_decref(root);
    run_free(&r);
}

/* ---- CSV ------------------------------------------------------------------------------------- */

static void test_sizing_csv_flags_short_adsl_uplink(void **state)
{
    struct ctl_size_plan plan;
    char path[512];
    struct run r;
    FILE *in;

    fixture("sites.csv", path, sizeof(path));
    in = fopen(path, "r");
    if (!in)
        fail_msg("%s: cannot open (run from the top of the tree or set FIXTURES)", path);
    ctl_size_plan_init(&plan);
    assert_int_equal(ctl_size_parse_csv(in, path, &plan, stderr), 0);
    fclose(in);
    ctl_size_compute(&plan);
    assert_int_equal(plan.n_sites, 5);
    assert_int_equal(plan.n_short, 1);
    assert_int_equal(plan.n_unchecked, 1);
    /* shop-17: 4 × 500 kbit/s × 1.07 × 1.25 = 2675 kbit/s over a 1000 kbit/s ADSL uplink. */
    assert_string_equal(plan.sites[2].name, "shop-17");
    assert_string_equal(plan.sites[2].link, "ADSL");
    assert_int_equal(plan.sites[2].line, 8);
    assert_true(fabs(plan.sites[2].need_kbps - 2675.0) < 1e-9);
    assert_true(fabs(plan.sites[2].short_kbps - 1675.0) < 1e-9);
    /* The quoted name keeps its comma; 12 cameras × 2 streams × 1000 kbit/s. */
    assert_string_equal(plan.sites[3].name, "warehouse, north");
    assert_true(plan.sites[3].up_payload_kbps == 24000.0);
    assert_true(plan.sites[3].short_kbps == 0);
    /* Empty optional cells: no uplink, fps unknown, one stream. */
    assert_int_equal(plan.sites[4].has_uplink, 0);
    assert_int_equal(plan.sites[4].fps, 0);
    assert_int_equal(plan.sites[4].streams_per_camera, 1);
    assert_true(plan.central_payload_kbps == 2000 + 3000 + 2000 + 24000 + 250);
    ctl_size_plan_free(&plan);

    r = run_size("--csv", path, NULL);
    assert_int_equal(r.status, 1); /* computed, but a site's uplink is too small */
    assert_contains(r.out, "Sites whose uplink is too small (1 of 5):\n"
                           "  site shop-17: needs 2.68 Mbit/s with 25% headroom, uplink "
                           "1.00 Mbit/s (ADSL): short by 1.68 Mbit/s\n");
    assert_contains(r.out, "1 too small, 1 unchecked");
    assert_int_equal(count(r.out, "SHORT by"), 1);
    run_free(&r);

    /* With 60% less headroom the same uplink still lacks 1.14 Mbit/s... */
    r = run_size("--csv", path, "--headroom", "0", NULL);
    assert_int_equal(r.status, 1);
    assert_contains(r.out, "needs 2.14 Mbit/s with 0% headroom, uplink 1.00 Mbit/s (ADSL): "
                           "short by 1.14 Mbit/s");
    run_free(&r);
}

static void test_sizing_csv_line_numbered_errors(void **state)
{
    static const char *const expect[] = {
        ":7: cameras must be a whole number ≥ 0, got '-1'\n",
        ":8: kbps must be a number > 0 (kbit/s), got 'fast'\n",
        ":9: expected 5 fields like the header, got 4\n",
        ":10: kbps must be a number > 0 (kbit/s), got '0'\n",
        ":11: name is empty\n",
        ":12: uplink_kbps must be a number ≥ 0 (kbit/s) or empty, got '1e3'\n",
        ":13: unterminated quoted field\n",
        ":14: cameras must be a whole number ≥ 0, got 'four'\n",
        ":15: duplicate site name 'shop-01' (first on line 3)\n",
        ": 9 errors; nothing computed\n",
    };
    char path[512], line[700];
    struct run r;

    fixture("sites-bad.csv", path, sizeof(path));
    r = run_size("--csv", path, NULL);
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, ""); /* the whole run fails: no partial report */
    for (size_t i = 0; i < sizeof(expect) / sizeof(expect[0]); i++) {
        snprintf(line, sizeof(line), "%s%s", path, expect[i]);
        assert_contains(r.err, line);
    }
    assert_int_equal(count(r.err, path), 10);
    run_free(&r);
}

static void test_sizing_csv_header_and_format(void **state)
{
    struct ctl_size_plan plan;
    char *errs = NULL;
    static const char crlf_bom[] = "\xef\xbb\xbf"
                                   "# exported\r\n"
                                   "\r\n"
                                   "  UPLINK_KBPS , kbps,Name,cameras,notes\r\n"
                                   "5000, 62.5 ,\"caf\xc3\xa9 \"\"Le Nord\"\"\",3,\"x, y\"\r\n"
                                   "\t# indented comment\n"
                                   "7000,500,b,0,\n"
                                   "8000,500,c,2,";  /* no final newline */

    ctl_size_plan_init(&plan);
    assert_int_equal(parse_text(crlf_bom, sizeof(crlf_bom) - 1, &plan, &errs), 0);
    assert_contains(errs, "t.csv:3: warning: ignoring unknown column 'notes'");
    free(errs);
    assert_int_equal(plan.n_sites, 3);
    assert_string_equal(plan.sites[0].name, "caf\xc3\xa9 \"Le Nord\"");
    assert_true(plan.sites[0].kbps == 62.5);
    assert_true(plan.sites[0].uplink_kbps == 5000.0);
    assert_int_equal(plan.sites[0].line, 4);
    assert_int_equal(plan.sites[1].cameras, 0);
    assert_int_equal(plan.sites[2].line, 7);
    ctl_size_compute(&plan);
    assert_true(plan.central_payload_kbps == 3 * 62.5 + 1000);

    /* No header, only data: the first line is taken as the header and found wanting. */
    assert_int_equal(parse_str("a,4,500,1000\n", &plan, &errs), -EINVAL);
    assert_contains(errs, "t.csv:1: missing column 'name': the first line must be a header");
    assert_int_equal(plan.n_sites, 0);
    free(errs);
    assert_int_equal(parse_str("# only a comment\n\n", &plan, &errs), -EINVAL);
    assert_contains(errs, "no header row");
    free(errs);
    assert_int_equal(parse_text("", 0, &plan, &errs), -EINVAL);
    assert_contains(errs, "t.csv:1: no header row");
    free(errs);
    assert_int_equal(parse_str("name,cameras,kbps,uplink_kbps\n", &plan, &errs), -EINVAL);
    assert_contains(errs, "no sites after the header");
    free(errs);
    assert_int_equal(parse_str("name,cameras,kbps,uplink_kbps,NAME\n", &plan, &errs),
                     -EINVAL);
    assert_contains(errs, "t.csv:1: column 'name' appears twice");
    free(errs);
    /* Control characters and broken UTF-8 in names are refused, and echoed harmlessly. */
    {
        static const char esc[] = "name,cameras,kbps,uplink_kbps\n\x1b[2Jevil,1,500,\n"
                                  "bad\xff,1,500,\n";
        assert_int_equal(parse_text(esc, sizeof(esc) - 1, &plan, &errs), -EINVAL);
        assert_contains(errs, "t.csv:2: name must be UTF-8 text without control characters, "
                              "got '?[2Jevil'");
        assert_contains(errs, "t.csv:3: name must be UTF-8 text without control characters, "
                              "got 'bad?'");
        assert_null(strchr(errs, '\x1b'));
        free(errs);
    }
    ctl_size_plan_free(&plan);
}

static void test_sizing_csv_limits(void **state)
{
    struct ctl_size_plan plan;
    char *errs = NULL, *text;
    size_t cap = 8 * 1024 * 1024, len;
    char name[80];

    ctl_size_plan_init(&plan);
    text = malloc(cap);
    assert_non_null(text);

    /* Names: 63 bytes fit, 64 do not. */
    memset(name, 'n', 63);
    name[63] = '\0';
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps\n%s,1,500,\n", name);
    assert_int_equal(parse_text(text, len, &plan, NULL), 0);
    assert_int_equal(strlen(plan.sites[0].name), 63);
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps\n%sn,1,500,\n", name);
    assert_int_equal(parse_text(text, len, &plan, &errs), -EINVAL);
    assert_contains(errs, "t.csv:2: name is longer than 63 bytes");
    free(errs);

    /* Lines: 4096 bytes (plus CRLF) fit, 4097 do not; the next line still gets its number. */
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps,link\nx,1,500,,");
    memset(text + len, 'l', CTL_SIZE_LINE_MAX - 9); /* exactly CTL_SIZE_LINE_MAX bytes */
    len += CTL_SIZE_LINE_MAX - 9;
    len += (size_t)snprintf(text + len, cap - len, "\r\n");
    assert_int_equal(parse_text(text, len, &plan, &errs), -EINVAL); /* the link is too long */
    assert_contains(errs, "t.csv:2: link is longer than 63 bytes");
    assert_null(strstr(errs, "line longer"));
    free(errs);
    len -= 2;
    len += (size_t)snprintf(text + len, cap - len, "l\nshop,four,1,1,x\n");
    assert_int_equal(parse_text(text, len, &plan, &errs), -EINVAL);
    assert_contains(errs, "t.csv:2: line longer than 4096 bytes");
    assert_contains(errs, "t.csv:3: cameras must be a whole number ≥ 0, got 'four'");
    free(errs);

    /* Numbers out of range. */
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps,fps,streams_per_camera\n"
                                      "a,100001,500,,,\nb,1,2000000,,,\nc,1,5,,0,\nd,1,5,,,17\n"
                                      "e,99999999999999999999999,5,,,\n");
    assert_int_equal(parse_text(text, len, &plan, &errs), -EINVAL);
    assert_contains(errs, "t.csv:2: cameras must be at most 100000, got '100001'");
    assert_contains(errs, "t.csv:3: kbps must be at most 1000000 kbit/s");
    assert_contains(errs, "t.csv:4: fps must be a whole number from 1 to 240 or empty, got '0'");
    assert_contains(errs, "t.csv:5: streams_per_camera must be at most 16, got '17'");
    assert_contains(errs, "t.csv:6: cameras must be at most 100000");
    free(errs);

    /* Rows: 100,000 sites are fine, one more is refused. */
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps\n");
    for (int i = 0; i < CTL_SIZE_MAX_SITES; i++)
        len += (size_t)snprintf(text + len, cap - len, "s%d,1,500,1000\n", i);
    assert_true(len < cap - 64);
    assert_int_equal(parse_text(text, len, &plan, NULL), 0);
    assert_int_equal(plan.n_sites, CTL_SIZE_MAX_SITES);
    ctl_size_compute(&plan);
    assert_true(plan.central_payload_kbps == 500.0 * CTL_SIZE_MAX_SITES);
    len += (size_t)snprintf(text + len, cap - len, "one-too-many,1,500,1000\n");
    assert_int_equal(parse_text(text, len, &plan, &errs), -E2BIG);
    assert_contains(errs, "t.csv:100002: more than 100000 sites");
    assert_int_equal(plan.n_sites, 0);
    free(errs);

    /* A flood of bad rows stops after CTL_SIZE_MAX_ERRORS messages. */
    len = (size_t)snprintf(text, cap, "name,cameras,kbps,uplink_kbps\n");
    for (int i = 0; i < 1000; i++)
        len += (size_t)snprintf(text + len, cap - len, "s%d,x,500,1000\n", i);
    assert_int_equal(parse_text(text, len, &plan, &errs), -EINVAL);
    assert_int_equal(count(errs, "cameras must be"), CTL_SIZE_MAX_ERRORS);
    assert_contains(errs, "stopped after 20 errors");
    free(errs);

    free(text);
    ctl_size_plan_free(&plan);
}

/* Parsers read to the last byte of their input and never past it: the input ends right before
 * a page that faults on access. */
static void test_sizing_parsers_stop_at_guard_page(void **state)
{
    long page = sysconf(_SC_PAGESIZE);
    static const char csv[] = "name,cameras,kbps,uplink_kbps\nx,1,500,\"unterminated";
    static const char csv_ok[] = "name,cameras,kbps,uplink_kbps\nx,4,500,1000";
    struct ctl_size_bench bench;
    struct ctl_size_plan plan;
    char *map, *end;
    char *errs = NULL;
    size_t blen = sizeof(bench_json) - 2; /* drop the final newline too: ends at '}' */

    map = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
               0);
    assert_true(map != MAP_FAILED);
    assert_int_equal(mprotect(map + page, (size_t)page, PROT_NONE), 0);
    end = map + page;

    memcpy(end - blen, bench_json, blen);
    assert_int_equal(ctl_size_parse_bench(end - blen, blen, "b.json", &bench, stderr), 0);
    assert_int_equal(bench.max_streams, 1000);
    /* Cut anywhere: an error, never a read past the end. */
    for (size_t cut = 0; cut < blen; cut++) {
        FILE *devnull = fopen("/dev/null", "w");
        assert_non_null(devnull);
        memmove(end - cut, bench_json, cut);
        assert_int_equal(ctl_size_parse_bench(end - cut, cut, "b.json", &bench, devnull),
                         -EINVAL);
        fclose(devnull);
    }

    ctl_size_plan_init(&plan);
    memcpy(end - (sizeof(csv) - 1), csv, sizeof(csv) - 1);
    assert_int_equal(parse_text(end - (sizeof(csv) - 1), sizeof(csv) - 1, &plan, &errs),
                     -EINVAL);
    assert_contains(errs, "t.csv:2: unterminated quoted field");
    free(errs);
    memcpy(end - (sizeof(csv_ok) - 1), csv_ok, sizeof(csv_ok) - 1);
    assert_int_equal(parse_text(end - (sizeof(csv_ok) - 1), sizeof(csv_ok) - 1, &plan, NULL), 0);
    assert_true(plan.sites[0].uplink_kbps == 1000.0);
    ctl_size_plan_free(&plan);
    munmap(map, (size_t)page * 2);
}

/* ---- the benchmark --------------------------------------------------------------------------- */

static void test_sizing_bench_appliance_count(void **state)
{
    struct ctl_size_bench bench;
    struct ctl_size_fleet f;
    struct ctl_size_plan plan;
    char dir[256], path[300], bad[300];
    struct run r;

    assert_int_equal(ctl_size_parse_bench(bench_json, sizeof(bench_json) - 1, "b", &bench, stderr),
                     0);
    assert_int_equal(bench.cores, 8);
    assert_int_equal(bench.max_streams, 1000);
    assert_true(bench.stream_kbps == 2000.0);
    assert_true(bench.cpu_s_per_gb == 2.0);
    assert_int_equal(bench.has_rss, 1);
    assert_int_equal(bench.rss_per_tunnel_bytes, 262144);
    assert_contains(bench.machine, "test-cpu");

    /* 500 sites × 8 cameras × 2 Mbit/s = 4000 bench-size streams; +25% = 5000 → 5 machines.
     * CPU: 8 Gbit/s × 1.07 = 1.07 GB/s × 2 CPU-s/GB × 1.25 = 2.675 cores → 1 machine. */
    ctl_size_plan_init(&plan);
    plan.bench = bench;
    plan.has_bench = 1;
    assert_int_equal(ctl_size_plan_uniform(&plan, 500, 8, 1, 2000, 15, -1), 0);
    ctl_size_compute(&plan);
    assert_true(fabs(plan.fleet.load_streams - 4000.0) < 1e-9);
    assert_int_equal(plan.fleet.appliances_by_streams, 5);
    assert_true(fabs(plan.fleet.gb_per_s - 1.07) < 1e-12);
    assert_true(fabs(plan.fleet.cores_need - 2.675) < 1e-9);
    assert_int_equal(plan.fleet.appliances_by_cpu, 1);
    assert_int_equal(plan.fleet.appliances, 5);
    assert_int_equal(plan.fleet.memory_need_bytes, 4000ull * 262144 * 5 / 4);

    /* Twice the bench's bitrate: each stream counts double (bitrate ratio). */
    assert_int_equal(ctl_size_plan_uniform(&plan, 500, 8, 1, 4000, 15, -1), 0);
    ctl_size_compute(&plan);
    assert_true(fabs(plan.fleet.load_streams - 8000.0) < 1e-9);
    assert_int_equal(plan.fleet.appliances, 10);
    /* Half of it: half the load, 2000 × 1.25 = 2500 → 3 machines. */
    assert_int_equal(ctl_size_plan_uniform(&plan, 500, 8, 1, 1000, 15, -1), 0);
    ctl_size_compute(&plan);
    assert_int_equal(plan.fleet.appliances, 3);
    ctl_size_plan_free(&plan);

    /* CPU-bound: 40 CPU-s/GB makes 1.07 GB/s need 53.5 cores → 7 machines of 8 cores. */
    bench.cpu_s_per_gb = 40;
    ctl_size_fleet_for(&bench, 8e6, 8.56e6, 4000, 25, &f);
    assert_true(fabs(f.cores_need - 53.5) < 1e-9);
    assert_int_equal(f.appliances_by_streams, 5);
    assert_int_equal(f.appliances_by_cpu, 7);
    assert_int_equal(f.appliances, 7);
    /* Exactly full is enough; a little more needs the next machine. */
    bench.cpu_s_per_gb = 2;
    ctl_size_fleet_for(&bench, 1600000, 1600000, 800, 25, &f);
    assert_true(f.load_need == 1000.0);
    assert_int_equal(f.appliances_by_streams, 1);
    ctl_size_fleet_for(&bench, 1600002, 1600002, 800, 25, &f);
    assert_int_equal(f.appliances_by_streams, 2);

    /* Through the command line. */
    assert_int_equal(test_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/bench.json", dir);
    snprintf(bad, sizeof(bad), "%s/bad.json", dir);
    write_file(path, bench_json);
    r = run_size("--sites", "500", "--cameras-per-site", "8", "--kbps", "2000", "--bench", path,
                 NULL);
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "→ 5 appliances (1000 streams at 2.00 Mbit/s each)");
    assert_contains(r.out, "appliances needed  5 (40 cores in all)");
    assert_contains(r.out, "2.68 cores with headroom");
    assert_contains(r.out,
                    "4000 streams × 256.0 KiB = 1.2 GiB with headroom, 250.0 MiB per appliance");
    run_free(&r);
    r = run_size("--sites", "500", "--cameras-per-site", "8", "--kbps", "2000", "--bench", path,
                 "--json", NULL);
    {
        json_t *root = json_loads(r.out, 0, NULL), *a;
        assert_non_null(root);
        a = json_object_get(root, "appliances");
        assert_int_equal(json_integer_value(json_object_get(a, "appliances")), 5);
        assert_int_equal(json_integer_value(json_object_get(a, "appliances_by_streams")), 5);
        assert_int_equal(json_integer_value(json_object_get(a, "appliances_by_cpu")), 1);
        assert_int_equal(json_integer_value(json_object_get(a, "cores_total")), 40);
        assert_true(fabs(json_number_value(json_object_get(a, "cores_need")) - 2.675) < 1e-9);
        json_decref(root);
    }
    run_free(&r);

    /* Missing fields: every one named, exit 2, no report. */
    write_file(bad, "{\"cores\": 8, \"max_streams\": 1000, \"machine\": {}}");
    r = run_size("--sites", "5", "--cameras-per-site", "8", "--kbps", "2000", "--bench", bad,
                 NULL);
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");
    assert_contains(r.err, "bad.json: missing field \"stream_kbps\"");
    assert_contains(r.err, "bad.json: missing field \"cpu_s_per_gb\"");
    run_free(&r);
    write_file(bad, "{\"cores\": 0.5, \"max_streams\": 1000, \"stream_kbps\": 2000, "
                    "\"cpu_s_per_gb\": \"fast\"}");
    r = run_size("--sites", "5", "--cameras-per-site", "8", "--kbps", "2000", "--bench", bad,
                 NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err,
                    "field \"cpu_s_per_gb\" (CPU-seconds per GB relayed) must be a number");
    assert_contains(r.err,
                    "field \"cores\" (cores of the benchmarked machine) must be a whole number");
    run_free(&r);
    write_file(bad, "[1, 2");
    r = run_size("--sites", "5", "--cameras-per-site", "8", "--kbps", "2000", "--bench", bad,
                 NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "not valid JSON");
    run_free(&r);
    test_rmtree(dir);
}

/* ---- plots ----------------------------------------------------------------------------------- */

static void test_sizing_svg_plot_has_the_series(void **state)
{
    char dir[256], svg[300], bench[300], txt[300];
    struct run r;
    char *doc;
    size_t len;

    assert_int_equal(test_tmpdir(dir, sizeof(dir)), 0);
    snprintf(svg, sizeof(svg), "%s/plan.svg", dir);
    snprintf(bench, sizeof(bench), "%s/bench.json", dir);
    snprintf(txt, sizeof(txt), "%s/plan.txt", dir);
    write_file(bench, bench_json);

    r = run_size("--sites", "50", "--cameras-per-site", "4", "--kbps", "500", "--bench", bench,
                 "--plot", svg, NULL);
    assert_int_equal(r.status, 0);
    run_free(&r);
    doc = read_all(svg, &len);
    assert_true(strncmp(doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ", 44) == 0);
    assert_true(len > 8 && strcmp(doc + len - 7, "</svg>\n") == 0);
    assert_int_equal(count(doc, "<svg"), 1);
    assert_int_equal(count(doc, "<g "), count(doc, "</g>"));
    assert_contains(doc, "xmlns=\"http://www.w3.org/2000/svg\"");
    /* the series, each with its value at N in its title */
    assert_contains(doc, "<g id=\"downstream-payload\" class=\"series\">\n"
                         "<title>central downstream, payload: 100 Mbit/s at 50 sites</title>");
    assert_contains(doc, "<g id=\"downstream-need\" class=\"series\">\n"
                         "<title>with 7% overhead and 25% headroom: 133.75 Mbit/s at 50 sites");
    assert_contains(doc, "<title>relay streams: 200 streams at 50 sites</title>");
    assert_contains(doc, "<title>relay appliances: 1 appliances at 50 sites</title>");
    /* axes, labels and legends */
    assert_int_equal(count(doc, ">Number of sites</text>"), 2);
    assert_contains(doc, ">Mbit/s</text>");
    assert_contains(doc, ">streams</text>");
    assert_contains(doc, ">appliances</text>");
    assert_int_equal(count(doc, "class=\"legend\""), 2);
    assert_contains(doc, ">central downstream, payload (Mbit/s)</text>");
    /* one point per site, 50 of them, the first at (1 site, 2 Mbit/s) */
    assert_int_equal(count(doc, "<circle"), 4 * 50);
    free(doc);

    /* Without a bench there is no appliance series; CSV plans plot the first k sites. */
    fixture("sites.csv", txt, sizeof(txt));
    r = run_size("--csv", txt, "--plot", svg, "--json", NULL);
    assert_int_equal(r.status, 1);
    run_free(&r);
    doc = read_all(svg, NULL);
    assert_null(strstr(doc, "relay-appliances"));
    assert_contains(doc, "<title>central downstream, payload: 31.25 Mbit/s at 5 sites</title>");
    free(doc);

    /* Large plans are sampled, not drawn point by point. */
    r = run_size("--sites", "100000", "--cameras-per-site", "1", "--kbps", "500", "--plot", svg,
                 NULL);
    assert_int_equal(r.status, 0);
    run_free(&r);
    doc = read_all(svg, &len);
    assert_true(len < 200 * 1024);
    assert_contains(doc, "<title>relay streams: 100000 streams at 100000 sites</title>");
    free(doc);

    snprintf(txt, sizeof(txt), "%s/plan.txt", dir);
    r = run_size("--sites", "5", "--cameras-per-site", "1", "--kbps", "500", "--plot", txt, NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "must end in .svg or .png");
    run_free(&r);
    test_rmtree(dir);
}

static void test_sizing_png_plot_through_gnuplot(void **state)
{
    char dir[256], png[300];
    struct run r;
    char *doc;
    size_t len;

    if (system("command -v gnuplot >/dev/null 2>&1") != 0) {
        printf("skipped: gnuplot is not installed (apt-get install gnuplot-nox)\n");
        skip();
    }
    assert_int_equal(test_tmpdir(dir, sizeof(dir)), 0);
    snprintf(png, sizeof(png), "%s/plan.png", dir);
    r = run_size("--sites", "50", "--cameras-per-site", "4", "--kbps", "500", "--plot", png, NULL);
    assert_int_equal(r.status, 0);
    run_free(&r);
    doc = read_all(png, &len);
    assert_true(len > 1000);
    assert_memory_equal(doc, "\x89PNG\r\n\x1a\n", 8);
    free(doc);
    test_rmtree(dir);
}

/* ---- the --live hook ------------------------------------------------------------------------- */

static void test_sizing_live_flags_cameras_over_plan(void **state)
{
    static const char csv[] = "name,cameras,kbps,uplink_kbps,streams_per_camera\n"
                              "shop-1,2,500,2000,1\nshop-2,1,1000,1000,2\n";
    const struct ctl_size_measured m[] = {
        {"shop-1", "CAM-A", 600},   /* +20% exactly: within tolerance */
        {"shop-1", "CAM-B", 601},   /* just over */
        {"shop-2", "CAM-C", 2300},  /* 2 streams × 1000 planned: +15% */
        {"shop-9", "CAM-D", 100},   /* not in the plan */
        {"", "CAM-E", 100},         /* no site, and sites differ: cannot tell */
    };
    struct ctl_size_plan plan;
    char *text = NULL;
    size_t len = 0;
    FILE *out;

    ctl_size_plan_init(&plan);
    assert_int_equal(parse_text(csv, sizeof(csv) - 1, &plan, NULL), 0);
    ctl_size_compute(&plan);
    out = open_memstream(&text, &len);
    assert_int_equal(ctl_size_compare_live(&plan, m, sizeof(m) / sizeof(m[0]), out), 3);
    fclose(out);
    assert_contains(text, "camera CAM-B (site shop-1): measured 601 kbit/s, plan 500 kbit/s: "
                          "20.2% over plan (limit 20%)\n");
    assert_null(strstr(text, "CAM-A"));
    assert_null(strstr(text, "CAM-C"));
    assert_contains(text, "camera CAM-D: site 'shop-9' is not in the plan\n");
    assert_contains(text, "camera CAM-E: no site given, and the plan's sites differ\n");
    /* shop-2 measured 2.3 Mbit/s × 1.07 × 1.25 = 3.08 Mbit/s through a 1 Mbit/s uplink. */
    assert_contains(text, "site shop-2: measured 2.30 Mbit/s needs 3.08 Mbit/s with overhead and "
                          "25% headroom, uplink 1.00 Mbit/s: short by 2.08 Mbit/s\n");
    /* shop-1 measured 1.2 Mbit/s → 1.6 with headroom, within its 2 Mbit/s. */
    assert_null(strstr(text, "site shop-1:"));
    free(text);
    ctl_size_plan_free(&plan);

    /* A uniform plan matches cameras without a site name. */
    ctl_size_plan_init(&plan);
    assert_int_equal(ctl_size_plan_uniform(&plan, 3, 4, 1, 500, 8, -1), 0);
    ctl_size_compute(&plan);
    {
        const struct ctl_size_measured u[] = {{"", "CAM-F", 700}, {"site-2", "CAM-G", 400}};
        text = NULL;
        out = open_memstream(&text, &len);
        assert_int_equal(ctl_size_compare_live(&plan, u, 2, out), 1);
        fclose(out);
        assert_contains(text, "camera CAM-F (site site-1): measured 700 kbit/s, plan 500 kbit/s: "
                              "40.0% over plan");
        free(text);
    }
    assert_int_equal(ctl_size_compare_live(&plan, NULL, 0, stderr), 0);
    assert_int_equal(ctl_size_compare_live(NULL, NULL, 0, stderr), -EINVAL);
    /* Names that fill their arrays without a NUL are read within them. */
    {
        struct ctl_size_measured full;
        memset(full.site, 'S', sizeof(full.site));
        memset(full.camera, 'C', sizeof(full.camera));
        full.kbps = 1;
        text = NULL;
        out = open_memstream(&text, &len);
        assert_int_equal(ctl_size_compare_live(&plan, &full, 1, out), 1);
        fclose(out);
        assert_contains(text, "is not in the plan");
        free(text);
    }
    ctl_size_plan_free(&plan);
}

/* ---- the command line ------------------------------------------------------------------------ */

static void test_sizing_usage_errors(void **state)
{
    struct run r;
    char path[512];

    r = run_size("--help", NULL);
    assert_int_equal(r.status, 0);
    assert_contains(r.out, "usage: camrelayctl size (--sites N --cameras-per-site N --kbps N | "
                           "--csv FILE)");
    run_free(&r);

    r = run_size(NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "give --sites, --cameras-per-site and --kbps, or --csv FILE");
    run_free(&r);

    fixture("sites.csv", path, sizeof(path));
    r = run_size("--csv", path, "--sites", "4", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "are alternatives");
    run_free(&r);

    r = run_size("--sites", "0", "--cameras-per-site", "4", "--kbps", "500", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "--sites must be a whole number from 1 to 100000, got '0'");
    run_free(&r);

    r = run_size("--sites", "5", "--cameras-per-site", "4", "--kbps", "-500", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "--kbps must be a number > 0");
    run_free(&r);

    r = run_size("--sites", "5", "--cameras-per-site", "4", "--kbps", "500", "--frobnicate", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "unknown option or missing value: '--frobnicate'");
    run_free(&r);

    r = run_size("--sites", "5", "--cameras-per-site", "4", "--kbps", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "unknown option or missing value: '--kbps'");
    run_free(&r);

    r = run_size("--sites", "5", "--cameras-per-site", "4", "--kbps", "500", "extra", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "unexpected argument 'extra'");
    run_free(&r);

    r = run_size("--csv", "/nonexistent/sites.csv", NULL);
    assert_int_equal(r.status, 2);
    assert_contains(r.err, "/nonexistent/sites.csv: No such file or directory");
    run_free(&r);

    /* Uplink check from flags: every site is short, reported once. */
    r = run_size("--sites", "50", "--cameras-per-site", "4", "--kbps", "500", "--uplink-kbps",
                 "2048", "--overhead", "3", NULL);
    assert_int_equal(r.status, 1);
    assert_contains(r.out, "every site (50): needs 2.58 Mbit/s with 25% headroom, uplink "
                           "2.05 Mbit/s: short by 527 kbit/s");
    assert_contains(r.out, "overhead 3% (--overhead");
    run_free(&r);
}

/* ---- fuzzing --------------------------------------------------------------------------------- */

/* xorshift64*: reproducible without touching the C library's rand state. */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

static void test_sizing_fuzz_csv(void **state)
{
    static const char alphabet[] = "name,cameras,kbps,uplink_kbps,fps,streams_per_camera,link"
                                   "0123456789.,,,\"\"\n\n\r# \t-e\xc3\xa9\xff\x00\x1b";
    static const char seed[] = "name,cameras,kbps,uplink_kbps,fps,streams_per_camera,link\n"
                               "shop-1,4,500,1000,8,1,adsl\n\"a,b\",2,62.5,,,,\n# c\n"
                               "x,0,1,0,240,16,\"q\"\"\"\n";
    const char *env = getenv("SIZING_FUZZ_ITERS"); /* longer runs by hand */
    long iters = env && atol(env) > 0 ? atol(env) : 4000;
    uint64_t rng = 0x5eed5eed1234ULL;
    char buf[2048];
    size_t accepted = 0;

    for (long iter = 0; iter < iters; iter++) {
        struct ctl_size_plan plan;
        size_t len;
        int rc;

        if (iter % 2 == 0) {
            /* random bytes, half of them from CSV's own vocabulary */
            len = rng_next(&rng) % sizeof(buf);
            for (size_t i = 0; i < len; i++) {
                uint64_t x = rng_next(&rng);
                buf[i] = (x & 1) ? (char)(x >> 8) : alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
            }
        } else {
            /* a valid file with a few bytes flipped, inserted or cut */
            len = sizeof(seed) - 1;
            memcpy(buf, seed, len);
            for (int k = (int)(rng_next(&rng) % 4); k >= 0 && len > 0; k--) {
                uint64_t x = rng_next(&rng);
                size_t at = (x >> 16) % len;
                if ((x & 3) == 0)
                    buf[at] = alphabet[(x >> 8) % (sizeof(alphabet) - 1)];
                else if ((x & 3) == 1 && len + 1 < sizeof(buf)) {
                    memmove(buf + at + 1, buf + at, len - at);
                    buf[at] = (char)(x >> 8);
                    len++;
                } else if ((x & 3) == 2) {
                    len = at;
                } else {
                    buf[at] = (char)(x >> 8);
                }
            }
        }
        ctl_size_plan_init(&plan);
        rc = parse_text(buf, len, &plan, NULL);
        assert_true(rc == 0 || rc == -EINVAL);
        if (rc == 0) {
            char *out = NULL;
            size_t out_len = 0;
            FILE *f;
            json_t *root;

            accepted++;
            assert_true(plan.n_sites >= 1);
            ctl_size_compute(&plan);
            f = open_memstream(&out, &out_len);
            ctl_size_print(&plan, 1, f);
            assert_int_equal(ctl_size_plot_svg(&plan, f), 0);
            fclose(f);
            free(out);
            out = NULL;
            f = open_memstream(&out, &out_len);
            assert_int_equal(ctl_size_print_json(&plan, f), 0);
            fclose(f);
            root = json_loads(out, 0, NULL); /* whatever the names held, the JSON is valid */
            assert_non_null(root);
            json_decref(root);
            free(out);
        } else {
            assert_int_equal(plan.n_sites, 0);
            assert_null(plan.sites);
        }
        ctl_size_plan_free(&plan);
    }
    /* The mutations must leave some files valid, or the printers were never exercised. */
    assert_true(accepted > 50);
}

static void test_sizing_fuzz_bench_json(void **state)
{
    uint64_t rng = 0xbe9c4f00dULL;
    FILE *devnull = fopen("/dev/null", "w");
    char buf[sizeof(bench_json) + 16];

    assert_non_null(devnull);
    for (int iter = 0; iter < 4000; iter++) {
        struct ctl_size_bench b;
        size_t len = sizeof(bench_json) - 1;
        int rc;

        memcpy(buf, bench_json, len);
        for (int k = (int)(rng_next(&rng) % 3); k >= 0; k--) {
            uint64_t x = rng_next(&rng);
            buf[(x >> 16) % len] = (x & 1) ? (char)(x >> 8) : "0-.e\"{}[]:,9"[(x >> 8) % 13];
        }
        if (iter % 3 == 0)
            len = rng_next(&rng) % len;
        rc = ctl_size_parse_bench(buf, len, "b.json", &b, devnull);
        assert_true(rc == 0 || rc == -EINVAL);
        if (rc == 0) {
            assert_true(b.max_streams >= 1 && b.cores >= 1 && b.stream_kbps > 0 &&
                        b.cpu_s_per_gb > 0);
            assert_non_null(memchr(b.machine, '\0', sizeof(b.machine)));
        }
    }
    fclose(devnull);
}

/* What a relay would report: two cameras at shop-1 (198.51.100.7), one of them 40% over its
 * plan, and one camera from an address no site of the plan has. */
static int fake_fetch(void *ctx, struct ctl_size_measured **m, size_t *n, FILE *err)
{
    (void)ctx;
    (void)err;
    static const struct { const char *site, *camera; double kbps; } rows[] = {
        {"198.51.100.7", "CAM-A", 480},
        {"198.51.100.7", "CAM-B", 700},
        {"203.0.113.9", "CAM-X", 300},
    };
    *m = calloc(3, sizeof(**m));
    assert_non_null(*m);
    for (size_t i = 0; i < 3; i++) {
        snprintf((*m)[i].site, sizeof((*m)[i].site), "%s", rows[i].site);
        snprintf((*m)[i].camera, sizeof((*m)[i].camera), "%s", rows[i].camera);
        (*m)[i].kbps = rows[i].kbps;
    }
    *n = 3;
    return 0;
}

static void test_sizing_live_matches_cameras_to_sites_by_address(void **state)
{
    (void)state;
    char dir[128], path[192];
    assert_int_equal(test_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/sites.csv", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("name,cameras,kbps,uplink_kbps,address\nshop-1,2,500,4000,198.51.100.7\n"
          "shop-2,2,500,4000,198.51.100.8\n",
          f);
    fclose(f);

    char *outp = NULL, *errp = NULL;
    size_t ol = 0, el = 0;
    FILE *out = open_memstream(&outp, &ol), *err = open_memstream(&errp, &el);
    struct ctl_size_live_source src = {.fetch = fake_fetch};
    char *argv[] = {"size", "--csv", path, "--live", NULL};
    int status = ctl_size_run_live(4, argv, out, err, &src);
    fclose(out);
    fclose(err);
    assert_int_equal(status, 1); /* two cameras flagged */
    assert_non_null(strstr(outp, "live: 3 cameras measured"));
    assert_non_null(strstr(outp, "CAM-B (site shop-1)"));
    assert_null(strstr(outp, "CAM-A ("));                 /* within plan: not flagged */
    assert_non_null(strstr(outp, "CAM-X: site '203.0.113.9' is not in the plan"));

    /* Without a relay to ask, --live is a usage error. */
    free(outp);
    free(errp);
    out = open_memstream(&outp, &ol);
    err = open_memstream(&errp, &el);
    status = ctl_size_run_live(4, argv, out, err, NULL);
    fclose(out);
    fclose(err);
    assert_int_equal(status, 2);
    assert_non_null(strstr(errp, "--live needs a relay"));
    free(outp);
    free(errp);
    test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sizing_seed_example),
        cmocka_unit_test(test_sizing_seed_json_has_the_figures),
        cmocka_unit_test(test_sizing_csv_flags_short_adsl_uplink),
        cmocka_unit_test(test_sizing_csv_line_numbered_errors),
        cmocka_unit_test(test_sizing_csv_header_and_format),
        cmocka_unit_test(test_sizing_csv_limits),
        cmocka_unit_test(test_sizing_parsers_stop_at_guard_page),
        cmocka_unit_test(test_sizing_bench_appliance_count),
        cmocka_unit_test(test_sizing_svg_plot_has_the_series),
        cmocka_unit_test(test_sizing_png_plot_through_gnuplot),
        cmocka_unit_test(test_sizing_live_flags_cameras_over_plan),
        cmocka_unit_test(test_sizing_usage_errors),
        cmocka_unit_test(test_sizing_fuzz_csv),
        cmocka_unit_test(test_sizing_fuzz_bench_json),
        cmocka_unit_test(test_sizing_live_matches_cameras_to_sites_by_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
