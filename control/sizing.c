/* control/sizing.c — `camrelayctl size`: site bandwidth, uplink checks and appliance counts. */
#include "control/sizing.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "common/util.h"
#include "control/sizing_plot.h"

#define BENCH_FILE_MAX (1024 * 1024)
#define CSV_MAX_FIELDS 32
#define MAX_CAMERAS_PER_SITE 100000u
#define MAX_STREAMS_PER_CAMERA 16u
#define MAX_FPS 240u
#define MAX_KBPS 1000000.0            /* one stream: 1 Gbit/s */
#define MAX_UPLINK_KBPS 100000000.0   /* 100 Gbit/s */
#define MAX_PCT 1000.0
/* A shortfall below 1 bit/s is rounding, not a finding. */
#define SHORT_EPSILON_KBPS 0.001

/* ---- small helpers --------------------------------------------------------------------------- */

const char *ctl_size_fmt_rate(double kbps, char *buf, size_t cap)
{
    /* Half-way cases round up: 2675 kbit/s is "2.68", not the "2.67" that 2.675's binary
     * approximation would print, so a need is never understated. */
    const double up = 1e-9;

    if (!(kbps >= 0) || !isfinite(kbps))
        snprintf(buf, cap, "?");
    else if (kbps < 999.95)
        snprintf(buf, cap, kbps == floor(kbps) ? "%.0f kbit/s" : "%.1f kbit/s", kbps + up);
    else if (kbps < 999995.0)
        snprintf(buf, cap, "%.2f Mbit/s", kbps / 1e3 + up);
    else
        snprintf(buf, cap, "%.2f Gbit/s", kbps / 1e6 + up);
    return buf;
}

const char *ctl_size__fmt_bytes(double bytes, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    size_t u = 0;

    while (bytes >= 1024.0 && u + 1 < CR_ARRAY_SIZE(unit)) {
        bytes /= 1024.0;
        u++;
    }
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", bytes, unit[u]);
    return buf;
}

/* Length of the valid UTF-8 sequence at s (1-4, within avail bytes), or 0 when it is not
 * one. Rejects overlong forms, surrogates and code points above U+10FFFF, as JSON requires. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned c = s[0];
    size_t len;
    unsigned cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (len > avail)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* 1 when s is UTF-8 text without control characters (what names and links may hold). */
static int is_clean_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t left = strlen(s);

    while (*p) {
        size_t n = utf8_seq(p, left);
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)))
            return 0;
        p += n;
        left -= n;
    }
    return 1;
}

/* See sizing.h. Reads at most max bytes of s, so s need not be NUL-terminated. */
const char *ctl_size__show(const char *s, size_t max, char *buf, size_t cap)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *end = p + strnlen(s, max);
    size_t o = 0;

    while (p < end) {
        size_t n = utf8_seq(p, (size_t)(end - p));
        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f))) {
            n = 1;
            if (o + 1 + 4 > cap)
                break;
            buf[o++] = '?';
        } else {
            if (o + n + 4 > cap)
                break;
            memcpy(buf + o, p, n);
            o += n;
        }
        p += n;
    }
    if (p < end)
        o += (size_t)snprintf(buf + o, cap - o, "...");
    buf[o] = '\0';
    return buf;
}

/* Parses digits only (no sign, no space) into *out when <= max. 0, -EINVAL or -ERANGE. */
static int parse_whole(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!*s)
        return -EINVAL;
    for (; *s; s++) {
        uint64_t d;
        if (*s < '0' || *s > '9')
            return -EINVAL;
        d = (uint64_t)(*s - '0');
        if (v > max / 10 || v * 10 > max - d)
            return -ERANGE;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Parses a plain decimal ("500", "62.5", ".5"; no sign, exponent, hex, inf or nan) into *out
 * when <= max. 0, -EINVAL or -ERANGE. */
static int parse_decimal(const char *s, double max, double *out)
{
    size_t digits = 0, len = 0;
    int dot = 0;
    double v;

    for (const char *p = s; *p; p++, len++) {
        if (*p == '.') {
            if (dot)
                return -EINVAL;
            dot = 1;
        } else if (*p >= '0' && *p <= '9') {
            digits++;
        } else {
            return -EINVAL;
        }
    }
    if (digits == 0 || len > 32)
        return -EINVAL;
    v = strtod(s, NULL);
    if (!(v <= max))
        return -ERANGE;
    *out = v;
    return 0;
}

/* Whole appliances for a fractional need; tiny float noise above an integer does not count. */
static uint64_t ceil_count(double x)
{
    if (!(x > 1e-9))
        return 0;
    if (x > 1e15)
        return (uint64_t)1e15;
    return (uint64_t)ceil(x - 1e-9);
}

/* ---- plans ----------------------------------------------------------------------------------- */

void ctl_size_plan_init(struct ctl_size_plan *plan)
{
    memset(plan, 0, sizeof(*plan));
    plan->overhead_pct = CTL_SIZE_OVERHEAD_PCT_DEFAULT;
    plan->headroom_pct = CTL_SIZE_HEADROOM_PCT_DEFAULT;
}

void ctl_size_plan_free(struct ctl_size_plan *plan)
{
    free(plan->sites);
    ctl_size_plan_init(plan);
}

static void drop_sites(struct ctl_size_plan *plan)
{
    free(plan->sites);
    plan->sites = NULL;
    plan->n_sites = 0;
    plan->uniform = 0;
}

int ctl_size_plan_uniform(struct ctl_size_plan *plan, uint32_t n_sites, uint32_t cameras,
                          uint32_t streams_per_camera, double kbps, uint32_t fps,
                          double uplink_kbps)
{
    struct ctl_size_site *sites;

    if (n_sites < 1 || n_sites > CTL_SIZE_MAX_SITES || cameras > MAX_CAMERAS_PER_SITE ||
        streams_per_camera < 1 || streams_per_camera > MAX_STREAMS_PER_CAMERA ||
        !(kbps > 0 && kbps <= MAX_KBPS) || fps > MAX_FPS || !(uplink_kbps <= MAX_UPLINK_KBPS))
        return -EINVAL;
    sites = cr_xcalloc(n_sites, sizeof(*sites));
    for (uint32_t i = 0; i < n_sites; i++) {
        struct ctl_size_site *s = &sites[i];
        snprintf(s->name, sizeof(s->name), "site-%u", i + 1);
        s->cameras = cameras;
        s->streams_per_camera = streams_per_camera;
        s->kbps = kbps;
        s->fps = fps;
        s->has_uplink = uplink_kbps >= 0;
        s->uplink_kbps = s->has_uplink ? uplink_kbps : 0;
    }
    drop_sites(plan);
    plan->sites = sites;
    plan->n_sites = n_sites;
    plan->uniform = 1;
    return 0;
}

/* ---- CSV ------------------------------------------------------------------------------------- */

enum csv_col {
    COL_NAME = 0,
    COL_CAMERAS,
    COL_KBPS,
    COL_UPLINK,
    COL_FPS,
    COL_STREAMS,
    COL_LINK,
    COL_ADDRESS,
    COL_COUNT,
};

static const struct {
    const char *name;
    int required;
} csv_columns[COL_COUNT] = {
    [COL_NAME] = {"name", 1},
    [COL_CAMERAS] = {"cameras", 1},
    [COL_KBPS] = {"kbps", 1},
    [COL_UPLINK] = {"uplink_kbps", 1},
    [COL_FPS] = {"fps", 0},
    [COL_STREAMS] = {"streams_per_camera", 0},
    [COL_LINK] = {"link", 0},
    [COL_ADDRESS] = {"address", 0},
};

#define CSV_HEADER_HINT "name,cameras,kbps,uplink_kbps[,fps,streams_per_camera,link,address]"

struct csv_ctx {
    const char *label;
    FILE *err;
    uint32_t line;
    int n_errors;
    int idx[COL_COUNT];   /* field index of each column, -1 when absent */
    int n_fields;         /* fields in the header, hence in every row */
};

static void csv_error(struct csv_ctx *c, uint32_t line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void csv_error(struct csv_ctx *c, uint32_t line, const char *fmt, ...)
{
    va_list ap;

    c->n_errors++;
    if (c->n_errors > CTL_SIZE_MAX_ERRORS)
        return;
    fprintf(c->err, "%s:%u: ", c->label, line);
    va_start(ap, fmt);
    vfprintf(c->err, fmt, ap);
    va_end(ap);
    fputc('\n', c->err);
}

/* Reads one line without its end ("\n" or "\r\n") into buf, which holds CTL_SIZE_LINE_MAX + 2
 * bytes. Returns 1 (*len set; *has_nul when it held a NUL byte), 0 at the end of input,
 * -E2BIG for a line over CTL_SIZE_LINE_MAX bytes (consumed, not stored), -EIO. */
static int read_line(FILE *in, char *buf, size_t *len, int *has_nul)
{
    size_t n = 0, seen = 0;

    *has_nul = 0;
    for (;;) {
        int ch = getc_unlocked(in);
        if (ch == EOF) {
            if (ferror(in))
                return -EIO;
            if (seen == 0)
                return 0;
            break;
        }
        seen++;
        if (ch == '\n')
            break;
        if (ch == '\0')
            *has_nul = 1;
        if (n <= CTL_SIZE_LINE_MAX) /* one spare byte for a '\r' before the '\n' */
            buf[n] = (char)ch;
        n++;
    }
    if (n > 0 && n <= CTL_SIZE_LINE_MAX + 1 && buf[n - 1] == '\r')
        n--;
    if (n > CTL_SIZE_LINE_MAX)
        return -E2BIG;
    buf[n] = '\0';
    *len = n;
    return 1;
}

/* Splits line (modified in place) at commas into fields[CSV_MAX_FIELDS]. Unquoted fields are
 * trimmed of spaces and tabs; "quoted" fields keep them and turn "" into ". Returns the field
 * count, or -EINVAL with *why set. */
static int csv_split(char *line, char **fields, const char **why)
{
    char *p = line;
    int n = 0;

    for (;;) {
        char *start, *end, sep;

        if (n == CSV_MAX_FIELDS) {
            *why = "more than 32 fields";
            return -EINVAL;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '"') {
            char *w;
            start = w = ++p;
            for (;;) {
                if (*p == '\0') {
                    *why = "unterminated quoted field";
                    return -EINVAL;
                }
                if (*p == '"' && p[1] == '"') {
                    *w++ = '"';
                    p += 2;
                } else if (*p == '"') {
                    p++;
                    break;
                } else {
                    *w++ = *p++;
                }
            }
            end = w;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p != '\0' && *p != ',') {
                *why = "text after a closing quote";
                return -EINVAL;
            }
        } else {
            start = p;
            while (*p != '\0' && *p != ',') {
                if (*p == '"') {
                    *why = "a quote inside an unquoted field (quote the whole field)";
                    return -EINVAL;
                }
                p++;
            }
            end = p;
            while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
        }
        sep = *p;      /* read before the terminator below may overwrite it */
        *end = '\0';
        fields[n++] = start;
        if (sep == '\0')
            return n;
        p++;
    }
}

static int csv_header(struct csv_ctx *c, char **fields, int nf)
{
    int errors = c->n_errors;
    char v[80];

    for (int k = 0; k < COL_COUNT; k++)
        c->idx[k] = -1;
    for (int i = 0; i < nf; i++) {
        int k;
        for (k = 0; k < COL_COUNT; k++)
            if (strcasecmp(fields[i], csv_columns[k].name) == 0)
                break;
        if (k == COL_COUNT) {
            fprintf(c->err, "%s:%u: warning: ignoring unknown column '%s'\n", c->label, c->line,
                    ctl_size__show(fields[i], CTL_SIZE_LINE_MAX, v, sizeof(v)));
        } else if (c->idx[k] >= 0) {
            csv_error(c, c->line, "column '%s' appears twice", csv_columns[k].name);
        } else {
            c->idx[k] = i;
        }
    }
    for (int k = 0; k < COL_COUNT; k++)
        if (csv_columns[k].required && c->idx[k] < 0)
            csv_error(c, c->line,
                      "missing column '%s': the first line must be a header, " CSV_HEADER_HINT,
                      csv_columns[k].name);
    c->n_fields = nf;
    return c->n_errors == errors ? 0 : -EINVAL;
}

/* Checks a name/link field: UTF-8 text without control characters, shorter than cap. */
static int csv_text(struct csv_ctx *c, const char *col, const char *val, int required,
                    char *dst, size_t cap)
{
    char v[80];

    if (required && *val == '\0') {
        csv_error(c, c->line, "%s is empty", col);
        return -EINVAL;
    }
    if (!is_clean_text(val)) {
        csv_error(c, c->line, "%s must be UTF-8 text without control characters, got '%s'", col,
                  ctl_size__show(val, CTL_SIZE_LINE_MAX, v, sizeof(v)));
        return -EINVAL;
    }
    if (cr_strlcpy(dst, val, cap) != 0) {
        csv_error(c, c->line, "%s is longer than %zu bytes: '%s'", col, cap - 1,
                  ctl_size__show(val, CTL_SIZE_LINE_MAX, v, sizeof(v)));
        return -EINVAL;
    }
    return 0;
}

/* A whole-number column in lo..hi; an empty cell gives dflt when dflt >= 0. */
static int csv_whole(struct csv_ctx *c, const char *col, const char *val, uint64_t lo,
                     uint64_t hi, long dflt, uint32_t *out)
{
    uint64_t x = 0;
    char v[80];
    int rc;

    if (*val == '\0' && dflt >= 0) {
        *out = (uint32_t)dflt;
        return 0;
    }
    rc = parse_whole(val, hi, &x);
    if (rc == 0 && x >= lo) {
        *out = (uint32_t)x;
        return 0;
    }
    ctl_size__show(val, CTL_SIZE_LINE_MAX, v, sizeof(v));
    if (rc == -ERANGE)
        csv_error(c, c->line, "%s must be at most %llu, got '%s'", col, (unsigned long long)hi, v);
    else if (lo == 0)
        csv_error(c, c->line, "%s must be a whole number ≥ 0, got '%s'", col, v);
    else
        csv_error(c, c->line, "%s must be a whole number from %llu to %llu%s, got '%s'", col,
                  (unsigned long long)lo, (unsigned long long)hi, dflt >= 0 ? " or empty" : "",
                  v);
    return -EINVAL;
}

/* A kbit/s column; positive means it must be > 0, optional means an empty cell sets *given 0. */
static int csv_rate(struct csv_ctx *c, const char *col, const char *val, int positive,
                    int optional, double *out, int *given)
{
    char v[80];
    int rc;

    if (*val == '\0' && optional) {
        *out = 0;
        *given = 0;
        return 0;
    }
    rc = parse_decimal(val, positive ? MAX_KBPS : MAX_UPLINK_KBPS, out);
    if (rc == 0 && (!positive || *out > 0)) {
        *given = 1;
        return 0;
    }
    ctl_size__show(val, CTL_SIZE_LINE_MAX, v, sizeof(v));
    if (rc == -ERANGE)
        csv_error(c, c->line, "%s must be at most %.0f kbit/s, got '%s'", col,
                  positive ? MAX_KBPS : MAX_UPLINK_KBPS, v);
    else
        csv_error(c, c->line, "%s must be a number %s (kbit/s)%s, got '%s'", col,
                  positive ? "> 0" : "≥ 0", optional ? " or empty" : "", v);
    return -EINVAL;
}

static const char *col_val(const struct csv_ctx *c, char **fields, enum csv_col k)
{
    return c->idx[k] >= 0 ? fields[c->idx[k]] : "";
}

static int csv_row(struct csv_ctx *c, char **fields, int nf, struct ctl_size_site *s)
{
    int given = 0;

    if (nf != c->n_fields) {
        csv_error(c, c->line, "expected %d fields like the header, got %d", c->n_fields, nf);
        return -EINVAL;
    }
    memset(s, 0, sizeof(*s));
    s->line = c->line;
    if (csv_text(c, "name", col_val(c, fields, COL_NAME), 1, s->name, sizeof(s->name)) ||
        csv_whole(c, "cameras", col_val(c, fields, COL_CAMERAS), 0, MAX_CAMERAS_PER_SITE, -1,
                  &s->cameras) ||
        csv_rate(c, "kbps", col_val(c, fields, COL_KBPS), 1, 0, &s->kbps, &given) ||
        csv_rate(c, "uplink_kbps", col_val(c, fields, COL_UPLINK), 0, 1, &s->uplink_kbps,
                 &s->has_uplink) ||
        csv_whole(c, "fps", col_val(c, fields, COL_FPS), 1, MAX_FPS, 0, &s->fps) ||
        csv_whole(c, "streams_per_camera", col_val(c, fields, COL_STREAMS), 1,
                  MAX_STREAMS_PER_CAMERA, 1, &s->streams_per_camera) ||
        csv_text(c, "link", col_val(c, fields, COL_LINK), 0, s->link, sizeof(s->link)) ||
        csv_text(c, "address", col_val(c, fields, COL_ADDRESS), 0, s->address,
                 sizeof(s->address)))
        return -EINVAL;
    return 0;
}

static int cmp_site_ptr(const void *a, const void *b)
{
    const struct ctl_size_site *x = *(const struct ctl_size_site *const *)a;
    const struct ctl_size_site *y = *(const struct ctl_size_site *const *)b;
    int r = strcmp(x->name, y->name);

    if (r != 0)
        return r;
    return x->line < y->line ? -1 : x->line > y->line;
}

static void csv_duplicates(struct csv_ctx *c, struct ctl_size_site *sites, size_t n)
{
    const struct ctl_size_site **ix;
    char v[80];

    if (n < 2)
        return;
    ix = cr_xmalloc(n * sizeof(*ix));
    for (size_t i = 0; i < n; i++)
        ix[i] = &sites[i];
    qsort(ix, n, sizeof(*ix), cmp_site_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(ix[i - 1]->name, ix[i]->name) == 0)
            csv_error(c, ix[i]->line, "duplicate site name '%s' (first on line %u)",
                      ctl_size__show(ix[i]->name, sizeof(ix[i]->name), v, sizeof(v)),
                      ix[i - 1]->line);
    free(ix);
}

static int is_skippable(const char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    return *line == '\0' || *line == '#';
}

int ctl_size_parse_csv(FILE *in, const char *label, struct ctl_size_plan *plan, FILE *err)
{
    struct csv_ctx c = {.label = label, .err = err};
    char *buf = cr_xmalloc(CTL_SIZE_LINE_MAX + 2);
    char *fields[CSV_MAX_FIELDS];
    struct ctl_size_site *sites = NULL;
    size_t n = 0, cap = 0;
    int have_header = 0, rc = 0;

    for (;;) {
        size_t len = 0;
        int has_nul = 0, nf, r;
        const char *why = NULL;
        char *line = buf;

        if (c.n_errors >= CTL_SIZE_MAX_ERRORS)
            break;
        r = read_line(in, buf, &len, &has_nul);
        if (r == 0)
            break;
        if (r == -EIO) {
            fprintf(err, "%s: read error after line %u\n", label, c.line);
            rc = -EIO;
            goto out_free_sites;
        }
        c.line++;
        if (r == -E2BIG) {
            csv_error(&c, c.line, "line longer than %d bytes", CTL_SIZE_LINE_MAX);
            if (!have_header)
                break;
            continue;
        }
        if (has_nul) {
            csv_error(&c, c.line, "line contains a NUL byte (not a text file?)");
            if (!have_header)
                break;
            continue;
        }
        if (c.line == 1 && strncmp(line, "\xef\xbb\xbf", 3) == 0)
            line += 3; /* byte-order mark from spreadsheet exports */
        if (is_skippable(line))
            continue;
        nf = csv_split(line, fields, &why);
        if (nf < 0) {
            csv_error(&c, c.line, "%s", why);
            if (!have_header)
                break;
            continue;
        }
        if (!have_header) {
            if (csv_header(&c, fields, nf) != 0)
                break;
            have_header = 1;
            continue;
        }
        if (n == CTL_SIZE_MAX_SITES) {
            fprintf(err, "%s:%u: more than %d sites (the limit); split the file\n", label, c.line,
                    CTL_SIZE_MAX_SITES);
            rc = -E2BIG;
            goto out_free_sites;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct ctl_size_site *grown = realloc(sites, ncap * sizeof(*sites));
            if (!grown) {
                fprintf(err, "%s: out of memory at line %u\n", label, c.line);
                rc = -ENOMEM;
                goto out_free_sites;
            }
            sites = grown;
            cap = ncap;
        }
        if (csv_row(&c, fields, nf, &sites[n]) == 0)
            n++;
    }
    if (c.n_errors == 0 && !have_header)
        csv_error(&c, c.line ? c.line : 1, "no header row; expected " CSV_HEADER_HINT);
    else if (c.n_errors == 0 && n == 0)
        csv_error(&c, c.line, "no sites after the header");
    if (c.n_errors < CTL_SIZE_MAX_ERRORS)
        csv_duplicates(&c, sites, n);
    if (c.n_errors > 0) {
        if (c.n_errors > CTL_SIZE_MAX_ERRORS)
            fprintf(err, "%s: %d errors in all; only the first %d shown\n", label, c.n_errors,
                    CTL_SIZE_MAX_ERRORS);
        else if (c.n_errors == CTL_SIZE_MAX_ERRORS)
            fprintf(err, "%s: stopped after %d errors\n", label, CTL_SIZE_MAX_ERRORS);
        else
            fprintf(err, "%s: %d error%s; nothing computed\n", label, c.n_errors,
                    c.n_errors == 1 ? "" : "s");
        rc = -EINVAL;
        goto out_free_sites;
    }
    drop_sites(plan);
    plan->sites = sites;
    plan->n_sites = n;
    free(buf);
    return 0;

out_free_sites:
    free(sites);
    drop_sites(plan);
    free(buf);
    return rc;
}

/* ---- the benchmark's result ------------------------------------------------------------------ */

/* Reads a required or optional number field. Returns 1 found, 0 absent (optional), -EINVAL. */
static int bench_number(json_t *root, const char *key, const char *what, int required,
                        int integral, double lo, double hi, const char *label, FILE *err,
                        double *out)
{
    json_t *v = json_object_get(root, key);
    char *dump;
    double x;

    if (!v || json_is_null(v)) {
        if (!required)
            return 0;
        fprintf(err, "%s: missing field \"%s\" (%s); is this camrelay-bench --json output?\n",
                label, key, what);
        return -EINVAL;
    }
    x = json_is_number(v) ? json_number_value(v) : NAN;
    if (isfinite(x) && x >= lo && x <= hi && (!integral || x == floor(x))) {
        *out = x;
        return 1;
    }
    dump = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
    fprintf(err, "%s: field \"%s\" (%s) must be %s from %g to %g, got %.40s\n", label, key,
            what, integral ? "a whole number" : "a number", lo, hi, dump ? dump : "?");
    free(dump);
    return -EINVAL;
}

int ctl_size_parse_bench(const char *text, size_t len, const char *label,
                         struct ctl_size_bench *out, FILE *err)
{
    json_error_t je;
    json_t *root, *machine;
    double cores = 0, max_streams = 0, kbps = 0, cpu = 0, rss = 0;
    int bad = 0, r;

    memset(out, 0, sizeof(*out));
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fprintf(err, "%s:%d: not valid JSON: %s\n", label, je.line, je.text);
        return -EINVAL;
    }
    if (!json_is_object(root)) {
        fprintf(err, "%s: expected a JSON object (camrelay-bench --json output)\n", label);
        json_decref(root);
        return -EINVAL;
    }
    bad |= bench_number(root, "max_streams", "streams one machine relays", 1, 1, 1, 1e9, label,
                        err, &max_streams) < 0;
    bad |= bench_number(root, "stream_kbps", "bitrate of each benchmarked stream, kbit/s", 1, 0,
                        1e-3, MAX_KBPS, label, err, &kbps) < 0;
    bad |= bench_number(root, "cpu_s_per_gb", "CPU-seconds per GB relayed", 1, 0, 1e-9, 1e6,
                        label, err, &cpu) < 0;
    bad |= bench_number(root, "cores", "cores of the benchmarked machine", 1, 1, 1, 1e6, label,
                        err, &cores) < 0;
    r = bench_number(root, "rss_per_tunnel_bytes", "memory per camera tunnel", 0, 1, 0, 1e12,
                     label, err, &rss);
    bad |= r < 0;
    if (!bad) {
        out->max_streams = (uint64_t)max_streams;
        out->stream_kbps = kbps;
        out->cpu_s_per_gb = cpu;
        out->cores = (uint32_t)cores;
        out->has_rss = r == 1;
        out->rss_per_tunnel_bytes = (uint64_t)rss;
        machine = json_object_get(root, "machine");
        if (machine) {
            char *dump = json_dumps(machine, JSON_ENCODE_ANY | JSON_COMPACT | JSON_ENSURE_ASCII);
            if (dump)
                ctl_size__show(dump, SIZE_MAX, out->machine, sizeof(out->machine));
            free(dump);
        }
    }
    json_decref(root);
    return bad ? -EINVAL : 0;
}

int ctl_size_load_bench(const char *path, struct ctl_size_bench *out, FILE *err)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *text;
    size_t got;
    int rc;

    if (!f) {
        rc = -errno;
        fprintf(err, "%s: %s\n", path, strerror(-rc));
        return rc;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > BENCH_FILE_MAX) {
        fprintf(err, "%s: not a regular file of at most %d bytes\n", path, BENCH_FILE_MAX);
        fclose(f);
        return -EFBIG;
    }
    text = cr_xmalloc((size_t)st.st_size + 1);
    got = fread(text, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        fprintf(err, "%s: read error\n", path);
        rc = -EIO;
        goto out_free;
    }
    rc = ctl_size_parse_bench(text, got, path, out, err);
out_free:
    free(text);
    fclose(f);
    return rc;
}

/* ---- the arithmetic -------------------------------------------------------------------------- */

void ctl_size_fleet_for(const struct ctl_size_bench *bench, double payload_kbps,
                        double wire_kbps, uint64_t streams, double headroom_pct,
                        struct ctl_size_fleet *out)
{
    double hr = 1.0 + headroom_pct / 100.0;

    memset(out, 0, sizeof(*out));
    if (bench->stream_kbps <= 0 || bench->max_streams == 0 || bench->cores == 0)
        return;
    /* Relay cost is per packet, and packets scale with bitrate: a plan stream at twice the
     * bench's bitrate counts as two bench streams. */
    out->load_streams = payload_kbps / bench->stream_kbps;
    out->load_need = out->load_streams * hr;
    out->appliances_by_streams = ceil_count(out->load_need / (double)bench->max_streams);
    out->gb_per_s = wire_kbps * 1000.0 / 8.0 / 1e9;
    out->cores_need = bench->cpu_s_per_gb * out->gb_per_s * hr;
    out->appliances_by_cpu = ceil_count(out->cores_need / bench->cores);
    if (bench->has_rss)
        out->memory_need_bytes = (uint64_t)ceil((double)streams *
                                                (double)bench->rss_per_tunnel_bytes * hr);
    out->appliances = out->appliances_by_streams > out->appliances_by_cpu
                          ? out->appliances_by_streams
                          : out->appliances_by_cpu;
    if (out->appliances == 0 && streams > 0)
        out->appliances = 1;
}

void ctl_size_compute(struct ctl_size_plan *plan)
{
    double ovh = 1.0 + plan->overhead_pct / 100.0;
    double hr = 1.0 + plan->headroom_pct / 100.0;

    plan->cameras = plan->streams = 0;
    plan->central_payload_kbps = plan->central_wire_kbps = plan->central_need_kbps = 0;
    plan->largest_site = 0;
    plan->n_short = plan->n_unchecked = 0;
    for (size_t i = 0; i < plan->n_sites; i++) {
        struct ctl_size_site *s = &plan->sites[i];

        s->streams = (uint64_t)s->cameras * s->streams_per_camera;
        s->up_payload_kbps = (double)s->streams * s->kbps;
        s->up_wire_kbps = s->up_payload_kbps * ovh;
        s->need_kbps = s->up_wire_kbps * hr;
        s->short_kbps = 0;
        if (!s->has_uplink)
            plan->n_unchecked++;
        else if (s->need_kbps > s->uplink_kbps + SHORT_EPSILON_KBPS) {
            s->short_kbps = s->need_kbps - s->uplink_kbps;
            plan->n_short++;
        }
        plan->cameras += s->cameras;
        plan->streams += s->streams;
        plan->central_payload_kbps += s->up_payload_kbps;
        if (s->up_payload_kbps > plan->sites[plan->largest_site].up_payload_kbps)
            plan->largest_site = i;
    }
    plan->central_wire_kbps = plan->central_payload_kbps * ovh;
    plan->central_need_kbps = plan->central_wire_kbps * hr;
    plan->streams_need = ceil_count((double)plan->streams * hr);
    if (plan->has_bench)
        ctl_size_fleet_for(&plan->bench, plan->central_payload_kbps, plan->central_wire_kbps,
                           plan->streams, plan->headroom_pct, &plan->fleet);
}

/* ---- the --live hook ------------------------------------------------------------------------- */

static int cmp_name_to_site(const void *key, const void *elem)
{
    const struct ctl_size_site *s = *(const struct ctl_size_site *const *)elem;
    return strcmp(key, s->name);
}

int ctl_size_compare_live(const struct ctl_size_plan *plan, const struct ctl_size_measured *m,
                          size_t n, FILE *out)
{
    double ovh, hr;
    const struct ctl_size_site **ix;
    double *sum;
    int flagged = 0, same = 1;

    if (!plan || (!m && n) || !out)
        return -EINVAL;
    ovh = 1.0 + plan->overhead_pct / 100.0;
    hr = 1.0 + plan->headroom_pct / 100.0;
    ix = cr_xmalloc((plan->n_sites ? plan->n_sites : 1) * sizeof(*ix));
    sum = cr_xcalloc(plan->n_sites ? plan->n_sites : 1, sizeof(*sum));
    for (size_t i = 0; i < plan->n_sites; i++) {
        ix[i] = &plan->sites[i];
        if (plan->sites[i].kbps * plan->sites[i].streams_per_camera !=
            plan->sites[0].kbps * plan->sites[0].streams_per_camera)
            same = 0;
    }
    qsort(ix, plan->n_sites, sizeof(*ix), cmp_site_ptr);

    for (size_t i = 0; i < n; i++) {
        const struct ctl_size_measured *c = &m[i];
        const struct ctl_size_site *const *hit = NULL;
        const struct ctl_size_site *s = NULL;
        char site[CTL_SIZE_NAME_MAX], cam[80], sname[80], r1[32], r2[32];
        double planned;

        ctl_size__show(c->camera, sizeof(c->camera), cam, sizeof(cam));
        memcpy(site, c->site, sizeof(site));
        site[sizeof(site) - 1] = '\0';
        if (site[0] != '\0' && plan->n_sites)
            hit = bsearch(site, ix, plan->n_sites, sizeof(*ix), cmp_name_to_site);
        if (hit)
            s = *hit;
        else if (site[0] == '\0' && same && plan->n_sites)
            s = &plan->sites[0];
        if (!s && site[0] == '\0') {
            fprintf(out, "camera %s: no site given, and the plan's sites differ\n", cam);
            flagged++;
            continue;
        }
        if (!s) {
            fprintf(out, "camera %s: site '%s' is not in the plan\n", cam,
                    ctl_size__show(site, sizeof(site), sname, sizeof(sname)));
            flagged++;
            continue;
        }
        if (!(c->kbps >= 0) || !isfinite(c->kbps)) {
            fprintf(out, "camera %s: no valid measurement, skipped\n", cam);
            continue;
        }
        if (hit) /* a camera matched by the uniform figure could be at any site */
            sum[s - plan->sites] += c->kbps;
        planned = s->kbps * s->streams_per_camera;
        /* in this form exactly +20% (600 of 500) stays exact and is not flagged */
        if (c->kbps > planned + planned * CTL_SIZE_LIVE_TOLERANCE_PCT / 100.0) {
            fprintf(out,
                    "camera %s (site %s): measured %s, plan %s: %.1f%% over plan (limit %g%%)\n",
                    cam, ctl_size__show(s->name, sizeof(s->name), sname, sizeof(sname)),
                    ctl_size_fmt_rate(c->kbps, r1, sizeof(r1)),
                    ctl_size_fmt_rate(planned, r2, sizeof(r2)), (c->kbps / planned - 1) * 100,
                    CTL_SIZE_LIVE_TOLERANCE_PCT);
            flagged++;
        }
    }
    for (size_t i = 0; i < plan->n_sites; i++) {
        const struct ctl_size_site *s = &plan->sites[i];
        double need = sum[i] * ovh * hr;
        char sname[80], r1[32], r2[32], r3[32], r4[32];

        if (sum[i] <= 0 || !s->has_uplink || need <= s->uplink_kbps + SHORT_EPSILON_KBPS)
            continue;
        fprintf(out, "site %s: measured %s needs %s with overhead and %g%% headroom, uplink %s: "
                     "short by %s\n",
                ctl_size__show(s->name, sizeof(s->name), sname, sizeof(sname)),
                ctl_size_fmt_rate(sum[i], r1, sizeof(r1)), ctl_size_fmt_rate(need, r2, sizeof(r2)),
                plan->headroom_pct, ctl_size_fmt_rate(s->uplink_kbps, r3, sizeof(r3)),
                ctl_size_fmt_rate(need - s->uplink_kbps, r4, sizeof(r4)));
    }
    free(sum);
    free(ix);
    return flagged;
}

/* ---- the command ----------------------------------------------------------------------------- */

void ctl_size_usage(FILE *f)
{
    fputs(
        "usage: camrelayctl size (--sites N --cameras-per-site N --kbps N | --csv FILE)\n"
        "                        [options]\n"
        "Bandwidth and relay-appliance sizing for many camera sites (docs/sizing.md).\n"
        "\n"
        "Plan from flags (every site alike):\n"
        "  --sites N                number of sites, 1-100000\n"
        "  --cameras-per-site N     cameras at each site, 0-100000\n"
        "  --kbps N                 bitrate of one camera stream, kbit/s\n"
        "  --fps N                  frame rate, 1-240 (shown, not used in the arithmetic)\n"
        "  --streams-per-camera N   streams pulled from each camera, 1-16 (default 1)\n"
        "  --uplink-kbps N          each site's usable upstream, kbit/s (checked if given)\n"
        "Plan from a file:\n"
        "  --csv FILE               one site per row after a header row:\n"
        "                           name,cameras,kbps,uplink_kbps[,fps,streams_per_camera,link,\n"
        "                           address]  (address: the site's public IP, for --live)\n"
        "                           columns in any order; '#' lines skipped; - reads stdin\n"
        "Figures:\n"
        "  --headroom PCT           spare capacity on top of the traffic (default 25)\n"
        "  --overhead PCT           TLS+TCP/IP+RTP overhead on the payload (default 7)\n"
        "  --bench FILE             camrelay-bench JSON result: appliances, cores, memory\n"
        "Output:\n"
        "  --json                   one JSON document instead of the table (rates in kbit/s)\n"
        "  --plot FILE              central downstream and relay load against sites 1..N:\n"
        "                           FILE.svg written directly, FILE.png through gnuplot\n"
        "  --all                    list every site (default: the first 20)\n"
        "  --live                   then compare with what the relay measures per camera\n"
        "                           (camrelayctl asks the relay: --relay-socket/--relay)\n"
        "  -h, --help               this text\n"
        "\n"
        "Exit status: 0 every site fits, 1 some site's uplink is too small (or, with\n"
        "--live, some camera sends more than planned),\n"
        "2 usage or input error.\n",
        f);
}

enum {
    OPT_SITES = 256,
    OPT_CAMERAS,
    OPT_KBPS,
    OPT_FPS,
    OPT_STREAMS,
    OPT_UPLINK,
    OPT_HEADROOM,
    OPT_OVERHEAD,
    OPT_CSV,
    OPT_BENCH,
    OPT_JSON,
    OPT_PLOT,
    OPT_ALL,
    OPT_LIVE,
};

struct size_args {
    uint64_t sites, cameras, streams, fps;
    double kbps, uplink, headroom, overhead;
    int have_sites, have_cameras, have_kbps, have_flags;
    const char *csv, *bench, *plot;
    int json, all, live;
};

static int arg_whole(const char *opt, const char *val, uint64_t lo, uint64_t hi, uint64_t *out,
                     FILE *err)
{
    char v[80];

    if (parse_whole(val, hi, out) == 0 && *out >= lo)
        return 0;
    fprintf(err, "camrelayctl size: %s must be a whole number from %llu to %llu, got '%s'\n", opt,
            (unsigned long long)lo, (unsigned long long)hi, ctl_size__show(val, 256, v, sizeof(v)));
    return -EINVAL;
}

static int arg_number(const char *opt, const char *val, double max, int positive, double *out,
                      FILE *err)
{
    char v[80];

    if (parse_decimal(val, max, out) == 0 && (!positive || *out > 0))
        return 0;
    fprintf(err, "camrelayctl size: %s must be a number %s, at most %g, got '%s'\n", opt,
            positive ? "> 0" : "≥ 0", max, ctl_size__show(val, 256, v, sizeof(v)));
    return -EINVAL;
}

/* Parses argv into a; 0, or -EINVAL after a message (usage error). 1 for --help. */
static int parse_args(int argc, char **argv, struct size_args *a, FILE *err)
{
    static const struct option opts[] = {
        {"sites", required_argument, NULL, OPT_SITES},
        {"cameras-per-site", required_argument, NULL, OPT_CAMERAS},
        {"kbps", required_argument, NULL, OPT_KBPS},
        {"fps", required_argument, NULL, OPT_FPS},
        {"streams-per-camera", required_argument, NULL, OPT_STREAMS},
        {"uplink-kbps", required_argument, NULL, OPT_UPLINK},
        {"headroom", required_argument, NULL, OPT_HEADROOM},
        {"overhead", required_argument, NULL, OPT_OVERHEAD},
        {"csv", required_argument, NULL, OPT_CSV},
        {"bench", required_argument, NULL, OPT_BENCH},
        {"json", no_argument, NULL, OPT_JSON},
        {"plot", required_argument, NULL, OPT_PLOT},
        {"all", no_argument, NULL, OPT_ALL},
        {"live", no_argument, NULL, OPT_LIVE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int rc = 0;

    memset(a, 0, sizeof(*a));
    a->streams = 1;
    a->uplink = -1;
    a->headroom = CTL_SIZE_HEADROOM_PCT_DEFAULT;
    a->overhead = CTL_SIZE_OVERHEAD_PCT_DEFAULT;
    optind = 0; /* glibc: full re-initialisation, camrelayctl has run getopt already */
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "+h", opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case OPT_SITES:
            rc = arg_whole("--sites", optarg, 1, CTL_SIZE_MAX_SITES, &a->sites, err);
            a->have_sites = a->have_flags = 1;
            break;
        case OPT_CAMERAS:
            rc = arg_whole("--cameras-per-site", optarg, 0, MAX_CAMERAS_PER_SITE, &a->cameras,
                           err);
            a->have_cameras = a->have_flags = 1;
            break;
        case OPT_KBPS:
            rc = arg_number("--kbps", optarg, MAX_KBPS, 1, &a->kbps, err);
            a->have_kbps = a->have_flags = 1;
            break;
        case OPT_FPS:
            rc = arg_whole("--fps", optarg, 1, MAX_FPS, &a->fps, err);
            a->have_flags = 1;
            break;
        case OPT_STREAMS:
            rc = arg_whole("--streams-per-camera", optarg, 1, MAX_STREAMS_PER_CAMERA,
                           &a->streams, err);
            a->have_flags = 1;
            break;
        case OPT_UPLINK:
            rc = arg_number("--uplink-kbps", optarg, MAX_UPLINK_KBPS, 0, &a->uplink, err);
            a->have_flags = 1;
            break;
        case OPT_HEADROOM:
            rc = arg_number("--headroom", optarg, MAX_PCT, 0, &a->headroom, err);
            break;
        case OPT_OVERHEAD:
            rc = arg_number("--overhead", optarg, 100, 0, &a->overhead, err);
            break;
        case OPT_CSV:
            a->csv = optarg;
            break;
        case OPT_BENCH:
            a->bench = optarg;
            break;
        case OPT_JSON:
            a->json = 1;
            break;
        case OPT_PLOT:
            a->plot = optarg;
            break;
        case OPT_ALL:
            a->all = 1;
            break;
        case OPT_LIVE:
            a->live = 1;
            break;
        case 'h':
            return 1;
        default: {
            /* '?': an unknown option, or one missing its value (getopt has moved past it). */
            int at = optind - 1 < argc ? optind - 1 : argc - 1;
            char v[80];
            fprintf(err, "camrelayctl size: unknown option or missing value: '%s'\n",
                    ctl_size__show(argv[at], 256, v, sizeof(v)));
            rc = -EINVAL;
            break;
        }
        }
        if (rc != 0)
            return rc;
    }
    if (optind < argc) {
        char v[80];
        fprintf(err, "camrelayctl size: unexpected argument '%s'\n",
                ctl_size__show(argv[optind], 256, v, sizeof(v)));
        return -EINVAL;
    }
    if (a->csv && a->have_flags) {
        fprintf(err, "camrelayctl size: --csv and the per-site flags (--sites, --kbps, ...) are "
                     "alternatives; the CSV carries them per site\n");
        return -EINVAL;
    }
    if (!a->csv && !(a->have_sites && a->have_cameras && a->have_kbps)) {
        fprintf(err, "camrelayctl size: give --sites, --cameras-per-site and --kbps, or --csv "
                     "FILE\n");
        return -EINVAL;
    }
    return 0;
}

static int load_plan(const struct size_args *a, struct ctl_size_plan *plan, FILE *err)
{
    FILE *in;
    int rc;

    if (!a->csv)
        return ctl_size_plan_uniform(plan, (uint32_t)a->sites, (uint32_t)a->cameras,
                                     (uint32_t)a->streams, a->kbps, (uint32_t)a->fps,
                                     a->uplink);
    if (strcmp(a->csv, "-") == 0)
        return ctl_size_parse_csv(stdin, "stdin", plan, err);
    in = fopen(a->csv, "r");
    if (!in) {
        rc = -errno;
        fprintf(err, "camrelayctl size: %s: %s\n", a->csv, strerror(-rc));
        return rc;
    }
    rc = ctl_size_parse_csv(in, a->csv, plan, err);
    fclose(in);
    return rc;
}

/* --live: what the relay measures now against the plan. Cameras are matched to the plan's
 * sites by their public address (the CSV's `address` column); a plan from flags has one
 * per-camera figure for all. Returns the number of flagged cameras, or -1 after a message. */
static int live_check(struct ctl_size_plan *plan, const struct ctl_size_live_source *src,
                      int from_csv, FILE *out, FILE *err)
{
    struct ctl_size_measured *m = NULL;
    size_t n = 0;
    if (!src || !src->fetch) {
        fprintf(err, "camrelayctl size: --live needs a relay to ask (camrelayctl's "
                     "--relay-socket or --relay)\n");
        return -1;
    }
    if (src->fetch(src->ctx, &m, &n, err) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (!from_csv) {
            m[i].site[0] = '\0';
            continue;
        }
        for (size_t k = 0; k < plan->n_sites; k++) {
            if (plan->sites[k].address[0] && strcmp(plan->sites[k].address, m[i].site) == 0) {
                snprintf(m[i].site, sizeof(m[i].site), "%s", plan->sites[k].name);
                break;
            }
        }
    }
    fprintf(out, "\nlive: %zu camera%s measured by the relay\n", n, n == 1 ? "" : "s");
    int flagged = ctl_size_compare_live(plan, m, n, out);
    if (flagged == 0)
        fprintf(out, "live: every camera within %g%% of its plan\n", CTL_SIZE_LIVE_TOLERANCE_PCT);
    free(m);
    return flagged;
}

int ctl_size_run(int argc, char **argv, FILE *out, FILE *err)
{
    return ctl_size_run_live(argc, argv, out, err, NULL);
}

int ctl_size_run_live(int argc, char **argv, FILE *out, FILE *err,
                      const struct ctl_size_live_source *src)
{
    struct ctl_size_plan plan;
    struct size_args a;
    int rc, status = 2;

    rc = parse_args(argc, argv, &a, err);
    if (rc == 1) {
        ctl_size_usage(out);
        return 0;
    }
    if (rc != 0) {
        fprintf(err, "(camrelayctl size --help shows the usage)\n");
        return 2;
    }
    ctl_size_plan_init(&plan);
    plan.headroom_pct = a.headroom;
    plan.overhead_pct = a.overhead;
    if (load_plan(&a, &plan, err) != 0)
        goto out_free_plan;
    if (a.bench) {
        if (ctl_size_load_bench(a.bench, &plan.bench, err) != 0)
            goto out_free_plan;
        plan.has_bench = 1;
    }
    ctl_size_compute(&plan);
    if (a.plot && ctl_size_plot(&plan, a.plot, err) != 0)
        goto out_free_plan;
    if (a.json) {
        if (ctl_size_print_json(&plan, out) != 0) {
            fprintf(err, "camrelayctl size: could not write the JSON report\n");
            goto out_free_plan;
        }
    } else {
        ctl_size_print(&plan, a.all, out);
    }
    if (fflush(out) != 0 || ferror(out)) {
        fprintf(err, "camrelayctl size: error writing the report\n");
        goto out_free_plan;
    }
    status = plan.n_short ? 1 : 0;
    if (a.live) {
        int flagged = live_check(&plan, src, a.csv != NULL, out, err);
        if (flagged < 0)
            status = 2;
        else if (flagged > 0)
            status = 1;
    }
out_free_plan:
    ctl_size_plan_free(&plan);
    return status;
}

int ctl_size_main(int argc, char **argv, const struct ctl_size_live_source *src)
{
    return ctl_size_run_live(argc, argv, stdout, stderr, src);
}
