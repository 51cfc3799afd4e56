/* control/ctl_print.c — camrelayctl's tables and JSON. */
#include "control/ctl_print.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *ctl_status_words(int status)
{
    switch (status) {
    case CAMRELAY__STATUS__OK: return "ok";
    case CAMRELAY__STATUS__ERR_AUTH: return "authentication failed";
    case CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL: return "unknown serial";
    case CAMRELAY__STATUS__ERR_DUPLICATE: return "duplicate";
    case CAMRELAY__STATUS__ERR_BAD_REQUEST: return "bad request";
    case CAMRELAY__STATUS__ERR_UNAVAILABLE: return "unavailable";
    case CAMRELAY__STATUS__ERR_RETRY: return "try again later";
    case CAMRELAY__STATUS__ERR_INTERNAL: return "internal error";
    case CAMRELAY__STATUS__ERR_PERMISSION: return "permission denied";
    case CAMRELAY__STATUS__ERR_NOT_CONNECTED: return "not connected";
    default: return "error";
    }
}

const char *ctl_human_bytes(unsigned long long n, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)n;
    int u = 0;
    if (n < 1024) {
        snprintf(buf, cap, "%llu B", n);
        return buf;
    }
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    snprintf(buf, cap, "%.1f %s", v, units[u]);
    return buf;
}

static const char *str(const char *s)
{
    return s && *s ? s : "-";
}

static void fmt_time(long long t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || !gmtime_r(&tt, &tm)) {
        snprintf(buf, cap, "never");
        return;
    }
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* "rtsp:20000,http:20001" into buf. */
static void fmt_endpoints(const Camrelay__CameraInfo *ci, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < ci->n_endpoints && n < cap; i++) {
        int w = snprintf(buf + n, cap - n, "%s%s:%u", i ? "," : "",
                         str(ci->endpoints[i]->service), ci->endpoints[i]->port);
        if (w < 0)
            break;
        n += (size_t)w;
    }
    if (!buf[0])
        snprintf(buf, cap, "-");
}

void ctl_print_cameras_table(FILE *out, const Camrelay__MgmtReply *r, int with_relay)
{
    /* Column widths from the data so that long serials and addresses still line up. */
    int w_serial = 6, w_site = 4, w_eps = 9, w_rec = 8, w_relay = 5;
    char eps[512], seen[32], bytes[32];

    for (size_t i = 0; i < r->n_cameras; i++) {
        const Camrelay__CameraInfo *ci = r->cameras[i];
        fmt_endpoints(ci, eps, sizeof(eps));
        int l;
        if ((l = (int)strlen(str(ci->serial))) > w_serial) w_serial = l;
        if ((l = (int)strlen(str(ci->site_addr))) > w_site) w_site = l;
        if ((l = (int)strlen(eps)) > w_eps) w_eps = l;
        if ((l = (int)strlen(str(ci->recorder))) > w_rec) w_rec = l;
        if ((l = (int)strlen(str(ci->relay))) > w_relay) w_relay = l;
    }
    fprintf(out, "%-*s  %-6s  %-6s  %-20s  %-*s  %-*s  %-*s  %10s  %-*s", w_serial, "SERIAL",
            "STATE", "ONLINE", "LAST-SEEN", w_site, "SITE", w_eps, "ENDPOINTS", w_rec, "RECORDER",
            "BYTES", with_relay ? 12 : 0, "PATH"); /* no trailing blanks when PATH is last */
    if (with_relay)
        fprintf(out, "  %-*s", w_relay, "RELAY");
    fputc('\n', out);
    for (size_t i = 0; i < r->n_cameras; i++) {
        const Camrelay__CameraInfo *ci = r->cameras[i];
        fmt_endpoints(ci, eps, sizeof(eps));
        fmt_time((long long)ci->last_seen_unix, seen, sizeof(seen));
        ctl_human_bytes((unsigned long long)ci->bytes_relayed, bytes, sizeof(bytes));
        /* PATH: how the camera's latest stream moved (tls-inplace, plain, ...). */
        fprintf(out, "%-*s  %-6s  %-6s  %-20s  %-*s  %-*s  %-*s  %10s  %-*s", w_serial,
                str(ci->serial), str(ci->state), ci->online ? "yes" : "no", seen, w_site,
                str(ci->site_addr), w_eps, eps, w_rec, str(ci->recorder), bytes,
                with_relay ? 12 : 0, str(ci->data_path));
        if (with_relay)
            fprintf(out, "  %-*s", w_relay, str(ci->relay));
        fputc('\n', out);
    }
}

void ctl_print_relays_table(FILE *out, const Camrelay__MgmtReply *r)
{
    int w_name = 4;
    for (size_t i = 0; i < r->n_relays; i++) {
        int l = (int)strlen(str(r->relays[i]->name));
        if (l > w_name)
            w_name = l;
    }
    fprintf(out, "%-*s  %-6s  %7s  %s\n", w_name, "NAME", "ONLINE", "CAMERAS", "PUBLIC-ADDRS");
    for (size_t i = 0; i < r->n_relays; i++) {
        const Camrelay__RelayInfo *ri = r->relays[i];
        fprintf(out, "%-*s  %-6s  %7u  ", w_name, str(ri->name), ri->online ? "yes" : "no",
                ri->cameras);
        if (ri->n_public_addrs == 0)
            fputc('-', out);
        for (size_t j = 0; j < ri->n_public_addrs; j++)
            fprintf(out, "%s%s", j ? "," : "", ri->public_addrs[j]);
        fputc('\n', out);
    }
}

/* Adds a value to obj, consuming it; returns -ENOMEM if either is NULL or the set fails. */
static int put(json_t *obj, const char *key, json_t *v)
{
    if (!v)
        return -ENOMEM;
    return json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

static json_t *camera_json(const Camrelay__CameraInfo *ci)
{
    json_t *o = json_object(), *eps = json_array();
    int rc = 0;
    if (!o || !eps) {
        json_decref(o);
        json_decref(eps);
        return NULL;
    }
    for (size_t i = 0; i < ci->n_endpoints && rc == 0; i++) {
        json_t *e = json_object();
        if (!e) {
            rc = -ENOMEM;
            break;
        }
        rc |= put(e, "service", json_string(ci->endpoints[i]->service));
        rc |= put(e, "port", json_integer(ci->endpoints[i]->port));
        rc |= put(e, "url", json_string(ci->endpoints[i]->url));
        if (json_array_append_new(eps, e) < 0)
            rc = -ENOMEM;
    }
    rc |= put(o, "serial", json_string(ci->serial));
    rc |= put(o, "state", json_string(ci->state));
    rc |= put(o, "online", json_boolean(ci->online));
    rc |= put(o, "last_seen_unix", json_integer((json_int_t)ci->last_seen_unix));
    rc |= put(o, "site_addr", json_string(ci->site_addr));
    rc |= put(o, "endpoints", eps);
    rc |= put(o, "recorder", json_string(ci->recorder));
    rc |= put(o, "bytes_relayed", json_integer((json_int_t)ci->bytes_relayed));
    rc |= put(o, "bitrate_bps", json_real(ci->bitrate_bps));
    rc |= put(o, "open_streams", json_integer(ci->open_streams));
    rc |= put(o, "relay", json_string(ci->relay));
    rc |= put(o, "synced", json_boolean(ci->synced));
    rc |= put(o, "data_path", json_string(ci->data_path));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *relay_json(const Camrelay__RelayInfo *ri)
{
    json_t *o = json_object(), *addrs = json_array();
    int rc = 0;
    if (!o || !addrs) {
        json_decref(o);
        json_decref(addrs);
        return NULL;
    }
    for (size_t i = 0; i < ri->n_public_addrs; i++)
        if (json_array_append_new(addrs, json_string(ri->public_addrs[i])) < 0)
            rc = -ENOMEM;
    rc |= put(o, "name", json_string(ri->name));
    rc |= put(o, "public_addrs", addrs);
    rc |= put(o, "online", json_boolean(ri->online));
    rc |= put(o, "cameras", json_integer(ri->cameras));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int dump(FILE *out, json_t *arr)
{
    int rc = json_dumpf(arr, out, JSON_INDENT(2) | JSON_PRESERVE_ORDER) < 0 ? -ENOMEM : 0;
    fputc('\n', out);
    json_decref(arr);
    return rc;
}

int ctl_print_cameras_json(FILE *out, const Camrelay__MgmtReply *r)
{
    json_t *arr = json_array();
    if (!arr)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_cameras; i++) {
        if (json_array_append_new(arr, camera_json(r->cameras[i])) < 0) {
            json_decref(arr);
            return -ENOMEM;
        }
    }
    return dump(out, arr);
}

int ctl_print_relays_json(FILE *out, const Camrelay__MgmtReply *r)
{
    json_t *arr = json_array();
    if (!arr)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_relays; i++) {
        if (json_array_append_new(arr, relay_json(r->relays[i])) < 0) {
            json_decref(arr);
            return -ENOMEM;
        }
    }
    return dump(out, arr);
}
