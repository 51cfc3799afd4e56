/* camrelayd: the relay appliance — tunnel server and media relay (relay/) plus its control
 * plane (registry, management API, dispatcher uplink). */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/auth.h"
#include "common/config.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "control/http.h"
#include "control/mgmt.h"
#include "control/registry.h"
#include "control/relayd.h"
#include "control/uplink.h"
#include "relay/relay.h"

#define EXIT_CONFIG 2
#define TICKET_KEY_META "ticket_key"
#define SAMPLE_INTERVAL_MS 1000 /* per-camera bitrate sampling */

struct relayd_opts {
    char *name;
    char *listen_external;
    char *public_addr;
    char *internal_host;
    char *internal_url_host;
    char *port_range;
    char *services;
    char *db;
    char *cert;
    char *key;
    char *ca;
    char *dispatcher;
    char *account_password_file;
    char *mgmt_socket;
    char *mgmt_listen;
    char *mgmt_token_file;
    char *log_level;
    char *http_listen;
    long keepalive_ms;
    long batch_wait_us;
    long workers;
    int metrics_per_camera;
    int allow_plain_data;
    int kernel_tls;
};

/* reloadable = 1: SIGHUP and `camrelayctl reload` apply a new value without a restart (see
 * reload()); a change to any other setting is logged as needing a restart and ignored. */
#define OPT(n, t, f, d, req, h) {n, t, offsetof(struct relayd_opts, f), d, 0, 0, req, 0, h}
#define ROPT(n, t, f, d, req, h) {n, t, offsetof(struct relayd_opts, f), d, 0, 0, req, 1, h}
static const struct cr_opt opts_table[] = {
    OPT("name", CR_OPT_STR, name, NULL, 1, "this relay's dispatcher account name"),
    OPT("listen-external", CR_OPT_STR, listen_external, "0.0.0.0:8443", 0,
        "agents' TLS port"),
    OPT("public-addr", CR_OPT_STR, public_addr, NULL, 1,
        "comma-separated host:port agents are told to use"),
    OPT("internal-host", CR_OPT_STR, internal_host, "0.0.0.0", 0,
        "address the per-camera endpoint listeners bind"),
    OPT("internal-url-host", CR_OPT_STR, internal_url_host, NULL, 0,
        "host put in endpoint URLs (default: internal-host, or this machine's host name when "
        "that is 0.0.0.0)"),
    OPT("port-range", CR_OPT_STR, port_range, "20000-29999", 0, "endpoint ports, LO-HI"),
    OPT("services", CR_OPT_STR, services, "rtsp,http", 0,
        "services each camera gets an endpoint for"),
    OPT("db", CR_OPT_STR, db, "/var/lib/camrelay/relay.db", 0, "SQLite registry"),
    ROPT("cert", CR_OPT_STR, cert, NULL, 1,
         "server certificate for the external and TCP management side (reloaded for new "
         "connections)"),
    ROPT("key", CR_OPT_STR, key, NULL, 1, "private key of --cert"),
    OPT("ca", CR_OPT_STR, ca, NULL, 0, "CA that signed the dispatcher's certificate"),
    OPT("dispatcher", CR_OPT_STR, dispatcher, NULL, 0,
        "comma-separated dispatcher host:port, tried in order"),
    OPT("account-password-file", CR_OPT_STR, account_password_file, NULL, 0,
        "this relay's dispatcher account password"),
    OPT("mgmt-socket", CR_OPT_STR, mgmt_socket, "/run/camrelay/relay.sock", 0,
        "management Unix socket (\"\" = none; then --mgmt-listen is needed)"),
    OPT("mgmt-listen", CR_OPT_STR, mgmt_listen, NULL, 0,
        "optional TCP+TLS management listener (needs --mgmt-token-file)"),
    ROPT("mgmt-token-file", CR_OPT_STR, mgmt_token_file, NULL, 0,
         "token every TCP management request must carry"),
    ROPT("log-level", CR_OPT_STR, log_level, "info", 0, "error, warn, info or debug"),
    {"keepalive-ms", CR_OPT_INT, offsetof(struct relayd_opts, keepalive_ms), "5000", 100, 600000,
     0, 1, "tunnel ping interval (a reload applies it to tunnels that come up afterwards)"},
    {"batch-wait-us", CR_OPT_INT, offsetof(struct relayd_opts, batch_wait_us), "1000", 0, 100000,
     0, 0, "data path: wait up to this long to handle completions in batches (less CPU under "
           "load, at most this much added latency; 0 = off)"},
    {"workers", CR_OPT_INT, offsetof(struct relayd_opts, workers), "0", 0, 256, 0, 0,
     "data path worker threads, one io_uring each (0 = one per core)"},
    OPT("allow-plain-data", CR_OPT_BOOL, allow_plain_data, "false", 0,
        "accept plaintext data connections from agents (data_plain), relayed without TLS: only "
        "for sites whose link is already private (VPN, private APN); tunnels stay TLS"),
    OPT("kernel-tls", CR_OPT_BOOL, kernel_tls, "true", 0,
        "hand the camera's direction of TLS data connections to the kernel (kTLS) and splice "
        "it, where the kernel has TLS; false keeps them on camrelay's own record layer"),
    OPT("http-listen", CR_OPT_STR, http_listen, "127.0.0.1:9090", 0,
        "internal plain-HTTP port: status page /, /metrics, /api/cameras (\"\" = off; keep it "
        "on a trusted network)"),
    ROPT("metrics-per-camera", CR_OPT_BOOL, metrics_per_camera, "true", 0,
         "per-camera series in /metrics, 3 per camera (--metrics-per-camera=false for large "
         "fleets)"),
    CR_OPT_END,
};

/* Everything start-up builds, torn down in reverse by shutdown_all(). */
struct relayd {
    struct relayd_opts o;
    char *services[CTL_MAX_SERVICES];
    unsigned n_services;
    uint16_t port_lo, port_hi;
    char url_host[256];
    char password[512];
    char token[512];
    uint8_t ticket_key[32];
    SSL_CTX *server_tls, *client_tls;
    struct ctl_registry *reg;
    struct ctl_relayd *ctl;
    struct rly_relay *relay;
    struct ctl_uplink *uplink;
    struct ctl_mgmt *mgmt;
    struct ctl_http *http;
    int argc;                   /* the command line, re-read on every reload */
    char **argv;
    pthread_mutex_t reload_lock; /* SIGHUP and `camrelayctl reload` one at a time; guards o */
};

static int config_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int config_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "camrelayd: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -EINVAL;
}

/* "host:port" or "[v6]:port" with a port 1..65535; the host is not resolved (public names
 * need not resolve here). any_host: ":port" (all addresses) is fine too. */
static int host_port_ok(const char *s, int any_host)
{
    const char *colon;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':' || end == s + 1)
            return 0;
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon || (colon == s && !any_host))
            return 0;
    }
    char *endp;
    long port = strtol(colon + 1, &endp, 10);
    return colon[1] && !*endp && port >= 1 && port <= 65535;
}

/* Checks every item of a comma-separated host:port list. */
static int check_addr_list(const char *flag, const char *list)
{
    char *copy = cr_xstrdup(list), *save = NULL;
    int n = 0, rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (!*t)
            continue;
        if (!host_port_ok(t, 0)) {
            rc = config_error("--%s: \"%s\" is not host:port", flag, t);
            break;
        }
        n++;
    }
    free(copy);
    if (rc == 0 && n == 0)
        rc = config_error("--%s: no address given", flag);
    return rc;
}

static int read_secret_file(const char *flag, const char *path, char *buf, size_t cap)
{
    int n = cr_read_small_file(path, buf, cap);
    if (n == -EFBIG)
        return config_error("--%s %s: file is larger than %zu bytes", flag, path, cap - 1);
    if (n < 0)
        return config_error("--%s: cannot read %s: %s", flag, path, strerror(-n));
    if (n == 0)
        return config_error("--%s %s: file is empty", flag, path);
    if (strlen(buf) != (size_t)n)
        return config_error("--%s %s: file contains a NUL byte", flag, path);
    return 0;
}

static int readable(const char *flag, const char *path)
{
    if (access(path, R_OK) < 0)
        return config_error("--%s: cannot read %s: %s", flag, path, strerror(errno));
    return 0;
}

static int parse_port_range(struct relayd *r)
{
    const char *s = r->o.port_range;
    char *end;
    errno = 0;
    long lo = strtol(s, &end, 10);
    if (end == s || *end != '-' || errno)
        goto bad;
    const char *h = end + 1;
    long hi = strtol(h, &end, 10);
    if (end == h || *end || errno)
        goto bad;
    if (lo < 1 || hi > 65535 || lo > hi)
        goto bad;
    r->port_lo = (uint16_t)lo;
    r->port_hi = (uint16_t)hi;
    if ((unsigned)(hi - lo + 1) < r->n_services)
        return config_error("--port-range %s holds fewer ports than one camera needs (%u)", s,
                            r->n_services);
    return 0;
bad:
    return config_error("--port-range must be LO-HI with 1 <= LO <= HI <= 65535 (got \"%s\")", s);
}

static int parse_services(struct relayd *r)
{
    char *copy = cr_xstrdup(r->o.services), *save = NULL;
    int rc = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        if (!*t)
            continue;
        if (!cr_name_valid(t, 15)) {
            rc = config_error("--services: \"%s\" is not a service name (1 to 15 characters of "
                              "A-Z a-z 0-9 . _ : -)",
                              t);
            break;
        }
        for (unsigned i = 0; i < r->n_services; i++) {
            if (strcmp(r->services[i], t) == 0) {
                rc = config_error("--services: \"%s\" is listed twice", t);
                goto out;
            }
        }
        if (r->n_services == CTL_MAX_SERVICES) {
            rc = config_error("--services: at most %d services", CTL_MAX_SERVICES);
            break;
        }
        r->services[r->n_services++] = cr_xstrdup(t);
    }
    if (rc == 0 && r->n_services == 0)
        rc = config_error("--services: no service given");
out:
    free(copy);
    return rc;
}

static void pick_url_host(struct relayd *r)
{
    const char *h = r->o.internal_url_host;
    if (!h || !*h) {
        h = r->o.internal_host;
        if (strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0 || strcmp(h, "*") == 0 || !*h) {
            if (gethostname(r->url_host, sizeof(r->url_host)) == 0 && r->url_host[0]) {
                r->url_host[sizeof(r->url_host) - 1] = '\0';
                return;
            }
            h = "localhost";
        }
    }
    cr_strlcpy(r->url_host, h, sizeof(r->url_host));
}

/* Validates the flags and reads the files they name. Returns 0 or -EINVAL (message printed). */
static int check_config(struct relayd *r)
{
    struct relayd_opts *o = &r->o;
    char err[512];

    if (cr_log_set_level_name(o->log_level) < 0)
        return config_error("--log-level must be error, warn, info or debug (got \"%s\")",
                            o->log_level);
    if (!cr_name_valid(o->name, 63))
        return config_error("--name must be 1 to 63 characters of A-Z a-z 0-9 . _ : - (got \"%s\")",
                            o->name);
    if (check_addr_list("public-addr", o->public_addr) < 0)
        return -EINVAL;
    if (!host_port_ok(o->listen_external, 1))
        return config_error("--listen-external must be host:port (got \"%s\")",
                            o->listen_external);
    if (!*o->internal_host || strlen(o->internal_host) > 100 || strchr(o->internal_host, '/'))
        return config_error("--internal-host must be an IP address (got \"%s\")", o->internal_host);
    if (o->internal_url_host && strlen(o->internal_url_host) > 200)
        return config_error("--internal-url-host is too long");
    if (parse_services(r) < 0 || parse_port_range(r) < 0)
        return -EINVAL;
    if (!*o->db)
        return config_error("--db must name a file");
    if (readable("cert", o->cert) < 0 || readable("key", o->key) < 0)
        return -EINVAL;
    r->server_tls = cr_tls_server_ctx(o->cert, o->key, err, sizeof(err));
    if (!r->server_tls)
        return config_error("%s", err);

    if (o->dispatcher) {
        if (check_addr_list("dispatcher", o->dispatcher) < 0)
            return -EINVAL;
        if (!o->ca)
            return config_error("--dispatcher needs --ca (the CA that signed the dispatcher's "
                                "certificate)");
        if (!o->account_password_file)
            return config_error("--dispatcher needs --account-password-file");
        if (readable("ca", o->ca) < 0)
            return -EINVAL;
        r->client_tls = cr_tls_client_ctx(o->ca, err, sizeof(err));
        if (!r->client_tls)
            return config_error("%s", err);
        if (read_secret_file("account-password-file", o->account_password_file, r->password,
                             sizeof(r->password)) < 0)
            return -EINVAL;
    }
    if (o->mgmt_listen) {
        if (!host_port_ok(o->mgmt_listen, 1))
            return config_error("--mgmt-listen must be host:port (got \"%s\")", o->mgmt_listen);
        if (!o->mgmt_token_file)
            return config_error("--mgmt-listen needs --mgmt-token-file");
        if (read_secret_file("mgmt-token-file", o->mgmt_token_file, r->token,
                             sizeof(r->token)) < 0)
            return -EINVAL;
        if (strlen(r->token) < 16)
            fprintf(stderr, "camrelayd: warning: the management token in %s is shorter than 16 "
                            "characters\n",
                    o->mgmt_token_file);
    }
    if (!*o->mgmt_socket && !o->mgmt_listen)
        return config_error("no management listener: --mgmt-socket is empty and there is no "
                            "--mgmt-listen");
    if (*o->http_listen && !host_port_ok(o->http_listen, 1))
        return config_error("--http-listen must be host:port, or \"\" to turn it off (got "
                            "\"%s\")",
                            o->http_listen);
    pick_url_host(r);
    return 0;
}

/* Reads the relay's ticket key from the registry, creating it on first start. */
static int ticket_key(struct relayd *r)
{
    size_t len = 0;
    int rc = ctl_registry_meta_get(r->reg, TICKET_KEY_META, r->ticket_key, sizeof(r->ticket_key),
                                   &len);
    if (rc == 0 && len == sizeof(r->ticket_key))
        return 0;
    if (rc == 0 || rc == -ERANGE) {
        cr_err("registry %s: the stored ticket key is %zu bytes, not 32", r->o.db, len);
        return -EIO;
    }
    if (rc != -ENOENT) {
        cr_err("registry %s: cannot read the ticket key: %s", r->o.db, strerror(-rc));
        return rc;
    }
    cr_random_bytes(r->ticket_key, sizeof(r->ticket_key));
    rc = ctl_registry_meta_set(r->reg, TICKET_KEY_META, r->ticket_key, sizeof(r->ticket_key));
    if (rc < 0) {
        cr_err("registry %s: cannot store a new ticket key: %s", r->o.db, strerror(-rc));
        return rc;
    }
    cr_info("created this relay's ticket key");
    return 0;
}

/* ---- reload (SIGHUP, camrelayctl reload) ---- */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* The level cr_log_set_level_name would set, without setting it; -1 if not a level. */
static int log_level_value(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return strcasecmp(name, "warning") == 0 ? CR_LOG_WARN : -1;
}

/* "serial 0A1B, SHA-256 3f2a…, valid until Nov 24 05:30:00 2027 GMT" of ctx's certificate. */
static void cert_identity(SSL_CTX *ctx, char *buf, size_t cap)
{
    X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
    uint8_t md[EVP_MAX_MD_SIZE];
    unsigned md_len = 0;
    char fp[2 * 8 + 1] = "?", until[64] = "?";

    if (!x) {
        snprintf(buf, cap, "no certificate");
        return;
    }
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), NULL);
    char *serial = bn ? BN_bn2hex(bn) : NULL;
    if (X509_digest(x, EVP_sha256(), md, &md_len) && md_len >= 8)
        cr_hex_encode(md, 8, fp);
    BIO *b = BIO_new(BIO_s_mem());
    if (b && ASN1_TIME_print(b, X509_get0_notAfter(x))) {
        int n = BIO_read(b, until, (int)sizeof(until) - 1);
        until[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    snprintf(buf, cap, "serial %s, SHA-256 %s..., valid until %s", serial ? serial : "?", fp,
             until);
    OPENSSL_free(serial);
    BN_free(bn);
}

/* A setting's value for a log line (never a secret: secrets live in files, the table holds
 * their paths). */
static void opt_text(const struct cr_opt *o, const struct relayd_opts *v, char *buf, size_t cap)
{
    const char *field = (const char *)v + o->offset;
    switch (o->type) {
    case CR_OPT_STR: {
        const char *s = *(char *const *)(const void *)field;
        snprintf(buf, cap, "\"%s\"", s ? s : "");
        break;
    }
    case CR_OPT_INT:
        snprintf(buf, cap, "%ld", *(const long *)(const void *)field);
        break;
    case CR_OPT_BOOL:
        snprintf(buf, cap, "%s", *(const int *)(const void *)field ? "true" : "false");
        break;
    }
}

/* Appends "; " and a formatted note to the reload summary in msg. */
static void note(char *msg, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void note(char *msg, size_t cap, const char *fmt, ...)
{
    size_t n = strlen(msg);
    va_list ap;
    if (n && n + 2 < cap) {
        memcpy(msg + n, "; ", 3);
        n += 2;
    }
    if (n >= cap - 1)
        return;
    va_start(ap, fmt);
    vsnprintf(msg + n, cap - n, fmt, ap);
    va_end(ap);
}

/* Replaces a string setting with the new one (taken from n). */
static void take_str(char **cur, char **fresh)
{
    free(*cur);
    *cur = *fresh;
    *fresh = NULL;
}

/*
 * Re-reads --config and the command line and applies what can change while tunnels and
 * streams stay up: the log level, the TLS certificate and key (a new server context for
 * connections from now on), the keepalive interval for new tunnels, the per-camera metrics,
 * the management token. Any other changed setting is logged ("listen-external changed:
 * restart needed") and ignored. A configuration that does not load changes nothing; a
 * certificate or token that cannot be read keeps the old one. Returns 0, or -EINVAL / -EIO
 * (msg says why). Any thread (ctl_relayd_reload_fn).
 */
static int reload(void *ctx, const char *why, char *msg, size_t cap)
{
    struct relayd *r = ctx;
    struct relayd_opts n;
    char err[512], a[300], b[300];
    int rc = 0;

    msg[0] = '\0';
    pthread_mutex_lock(&r->reload_lock);
    memset(&n, 0, sizeof(n));
    if (cr_config_load(opts_table, &n, r->argc, r->argv, NULL, NULL) != 0) {
        snprintf(msg, cap, "the configuration does not load (the relay's log says why); "
                           "nothing changed");
        cr_err("reload (%s): %s", why, msg);
        rc = -EINVAL;
        goto out_unlock;
    }
    int level = log_level_value(n.log_level);
    if (level < 0) {
        snprintf(msg, cap, "log-level must be error, warn, info or debug (got \"%s\"); nothing "
                           "changed", n.log_level);
        cr_err("reload (%s): %s", why, msg);
        rc = -EINVAL;
        goto out_unlock;
    }

    for (const struct cr_opt *o = opts_table; o->name; o++) {
        if (o->reloadable)
            continue;
        opt_text(o, &r->o, a, sizeof(a));
        opt_text(o, &n, b, sizeof(b));
        if (strcmp(a, b) == 0)
            continue;
        cr_warn("reload (%s): %s changed: restart needed (keeping %s, not %s)", why, o->name, a,
                b);
        note(msg, cap, "%s changed: restart needed", o->name);
    }

    /* The certificate is read again even under the same file names: renewal replaces the
     * files in place. */
    SSL_CTX *tls = cr_tls_server_ctx(n.cert, n.key, err, sizeof(err));
    if (!tls) {
        cr_err("reload (%s): %s; keeping the current certificate", why, err);
        note(msg, cap, "certificate not reloaded: %s", err);
        rc = -EIO;
    } else {
        cert_identity(r->server_tls, a, sizeof(a));
        cert_identity(tls, b, sizeof(b));
        rly_relay_set_tls(r->relay, tls);
        if (r->o.mgmt_listen)
            ctl_mgmt_set_tls(r->mgmt, tls);
        SSL_CTX_free(r->server_tls); /* the relay and the management server hold their own */
        r->server_tls = tls;
        if (strcmp(a, b) != 0) {
            cr_info("reload (%s): TLS certificate for new connections: %s (was %s)", why, b, a);
            note(msg, cap, "certificate replaced for new connections (%s)", b);
        }
        take_str(&r->o.cert, &n.cert);
        take_str(&r->o.key, &n.key);
    }

    if (r->o.mgmt_listen) {
        char token[512];
        int t = n.mgmt_token_file ? cr_read_small_file(n.mgmt_token_file, token, sizeof(token))
                                  : -ENOENT;
        if (t <= 0 || strlen(token) != (size_t)t) {
            snprintf(err, sizeof(err), "%s: %s", n.mgmt_token_file ? n.mgmt_token_file : "(none)",
                     t == 0 ? "empty" : t > 0 ? "contains a NUL byte"
                                      : t == -EFBIG ? "too large" : strerror(-t));
            cr_err("reload (%s): cannot read the management token %s; keeping the current one",
                   why, err);
            note(msg, cap, "management token not reloaded: %s", err);
            rc = -EIO;
        } else {
            if (ctl_mgmt_set_token(r->mgmt, token) == 1)
                note(msg, cap, "management token replaced");
            take_str(&r->o.mgmt_token_file, &n.mgmt_token_file);
        }
        cr_wipe(token, sizeof(token));
    } else {
        take_str(&r->o.mgmt_token_file, &n.mgmt_token_file); /* unused without --mgmt-listen */
    }

    if (n.keepalive_ms != r->o.keepalive_ms) {
        rly_relay_set_keepalive(r->relay, (uint32_t)n.keepalive_ms);
        note(msg, cap, "keepalive-ms %ld -> %ld for new tunnels", r->o.keepalive_ms,
             n.keepalive_ms);
        r->o.keepalive_ms = n.keepalive_ms;
    }
    if (n.metrics_per_camera != r->o.metrics_per_camera) {
        ctl_relayd_set_metrics_per_camera(r->ctl, n.metrics_per_camera);
        note(msg, cap, "metrics-per-camera %s", n.metrics_per_camera ? "on" : "off");
        r->o.metrics_per_camera = n.metrics_per_camera;
    }

    /* The summary is logged at info under whichever of the two levels shows more, so a
     * change to or from a quiet level still leaves a trace. */
    int old_level = cr_log_level; /* always one of the four: set through a name */
    if (level != old_level)
        note(msg, cap, "log-level %s -> %s", level_names[old_level & 3], level_names[level]);
    take_str(&r->o.log_level, &n.log_level);
    if (level > old_level)
        cr_log_level = level;
    if (!msg[0])
        snprintf(msg, cap, "nothing changed");
    cr_info("reload (%s): %s%s", why, rc < 0 ? "partly applied: " : "", msg);
    cr_log_level = level;

out_unlock:
    pthread_mutex_unlock(&r->reload_lock);
    cr_config_free(opts_table, &n);
    return rc;
}

static void shutdown_all(struct relayd *r)
{
    ctl_http_stop(r->http); /* its handler reads the control plane and the data path */
    ctl_mgmt_stop(r->mgmt); /* no new operations from here on */
    ctl_uplink_stop(r->uplink);
    if (r->relay)
        rly_relay_stop(r->relay);
    if (r->ctl) {
        ctl_relayd_drain_events(r->ctl); /* offline events from the stop */
        ctl_relayd_free(r->ctl);
    }
    ctl_registry_close(r->reg);
    SSL_CTX_free(r->client_tls);
    SSL_CTX_free(r->server_tls);
    cr_wipe(r->password, sizeof(r->password));
    cr_wipe(r->token, sizeof(r->token));
    cr_wipe(r->ticket_key, sizeof(r->ticket_key));
    for (unsigned i = 0; i < r->n_services; i++)
        free(r->services[i]);
    cr_config_free(opts_table, &r->o);
}

/* Waits for SIGINT/SIGTERM, persisting data-path events, sampling the cameras' bitrates every
 * second and reloading on SIGHUP meanwhile. */
static void main_loop(struct relayd *r, int sig_fd)
{
    struct pollfd p[2] = {{.fd = sig_fd, .events = POLLIN},
                          {.fd = ctl_relayd_event_fd(r->ctl), .events = POLLIN}};
    uint64_t next_sample = cr_now_ms();
    for (;;) {
        uint64_t now = cr_now_ms();
        if (now >= next_sample) {
            ctl_relayd_sample(r->ctl, now);
            next_sample = now + SAMPLE_INTERVAL_MS;
        }
        if (poll(p, 2, (int)(next_sample - now)) < 0) {
            if (errno == EINTR)
                continue;
            cr_err("poll failed: %s", strerror(errno));
            return;
        }
        if (p[1].revents)
            ctl_relayd_drain_events(r->ctl);
        if (p[0].revents) {
            struct signalfd_siginfo si;
            char msg[1024];
            if (read(sig_fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
                continue;
            if (si.ssi_signo == SIGHUP) {
                reload(r, "SIGHUP", msg, sizeof(msg)); /* logs its own summary */
                continue;
            }
            cr_info("%s: shutting down", strsignal((int)si.ssi_signo));
            return;
        }
    }
}

int main(int argc, char **argv)
{
    struct relayd r;
    char err[512];
    sigset_t sigs;
    int rc, sig_fd, status = 0;

    memset(&r, 0, sizeof(r));
    r.argc = argc;
    r.argv = argv;
    pthread_mutex_init(&r.reload_lock, NULL);
    cr_log_set_tag("relay");
    rc = cr_config_load(opts_table, &r.o, argc, argv,
                        "--name NAME --public-addr LIST --cert FILE --key FILE [options]", NULL);
    if (rc == 1) {
        cr_config_free(opts_table, &r.o);
        return 0;
    }
    if (rc < 0 || check_config(&r) < 0) {
        shutdown_all(&r);
        return EXIT_CONFIG;
    }

    cr_raise_fd_limit(); /* a descriptor per online camera and two per stream */

    /* Signals: the main thread takes them through a signalfd; every thread started below
     * inherits the blocked mask, so none is interrupted. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC);
    if (sig_fd < 0) {
        cr_err("signalfd: %s", strerror(errno));
        shutdown_all(&r);
        return 1;
    }

    rc = cr_mkdir_parents(r.o.db, 0750);
    if (rc == 0)
        rc = ctl_registry_open(r.o.db, &r.reg);
    if (rc < 0) {
        fprintf(stderr, "camrelayd: cannot open the registry %s: %s\n", r.o.db, strerror(-rc));
        status = EXIT_CONFIG;
        goto out;
    }
    if (ticket_key(&r) < 0) {
        status = 1;
        goto out;
    }

    struct ctl_relayd_config cc = {
        .name = r.o.name,
        .internal_host = r.o.internal_host,
        .url_host = r.url_host,
        .services = (const char *const *)r.services,
        .n_services = r.n_services,
        .port_lo = r.port_lo,
        .port_hi = r.port_hi,
        .iterations = CR_AUTH_ITERATIONS_DEFAULT,
    };
    rc = ctl_relayd_new(&cc, r.reg, &r.ctl);
    if (rc < 0) {
        cr_err("cannot set up the control plane: %s", strerror(-rc));
        status = 1;
        goto out;
    }
    ctl_relayd_set_metrics_per_camera(r.ctl, r.o.metrics_per_camera);
    ctl_relayd_set_reload(r.ctl, reload, &r);

    struct rly_config rc_cfg = {
        .relay_name = r.o.name,
        .listen_external = r.o.listen_external,
        .tls = r.server_tls,
        .keepalive_ms = (uint32_t)r.o.keepalive_ms,
        .max_conns = 0, /* the data path's default pool size per worker */
        .workers = (uint32_t)r.o.workers,
        .batch_wait_us = (uint32_t)r.o.batch_wait_us,
        .allow_plain_data = r.o.allow_plain_data,
        .no_kernel_tls = !r.o.kernel_tls,
        .on_event = ctl_relayd_on_event,
        .event_ctx = r.ctl,
    };
    rc = rly_relay_start(&rc_cfg, &r.relay);
    if (rc < 0) {
        cr_err("cannot start the data path on %s: %s", r.o.listen_external, strerror(-rc));
        r.relay = NULL;
        status = 1;
        goto out;
    }
    rly_relay_set_ticket_key(r.relay, r.ticket_key);
    ctl_relayd_set_relay(r.ctl, r.relay);
    rc = ctl_relayd_load_cameras(r.ctl);
    if (rc < 0) {
        status = 1;
        goto out;
    }

    if (r.o.dispatcher) {
        struct ctl_uplink_config uc = {
            .name = r.o.name,
            .public_addrs = r.o.public_addr,
            .dispatchers = r.o.dispatcher,
            .tls = r.client_tls,
            .password = r.password,
            .ticket_key = r.ticket_key,
            .keepalive_ms = (uint32_t)r.o.keepalive_ms,
        };
        rc = ctl_uplink_start(&uc, r.reg, &r.uplink);
        if (rc < 0) {
            cr_err("cannot start the dispatcher uplink: %s", strerror(-rc));
            status = 1;
            goto out;
        }
        cr_wipe(r.password, sizeof(r.password)); /* the uplink holds its own copy */
        ctl_relayd_set_uplink(r.ctl, r.uplink);
    } else {
        cr_warn("no --dispatcher: registrations stay on this relay and agents must be given "
                "its address directly");
    }

    struct ctl_mgmt_config mc = {
        .unix_path = *r.o.mgmt_socket ? r.o.mgmt_socket : NULL,
        .tcp_listen = r.o.mgmt_listen,
        .tls = r.server_tls,
        .token = r.o.mgmt_listen ? r.token : NULL,
        .handler = ctl_relayd_handle,
        .handler_ctx = r.ctl,
    };
    rc = ctl_mgmt_start(&mc, &r.mgmt, err, sizeof(err));
    if (rc < 0) {
        cr_err("%s", err);
        status = 1;
        goto out;
    }
    cr_wipe(r.token, sizeof(r.token));

    if (*r.o.http_listen) {
        struct ctl_http_config hc = {
            .listen = r.o.http_listen,
            .handler = ctl_relayd_http,
            .handler_ctx = r.ctl,
            .name = "status page and metrics",
        };
        /* A busy port costs the status page and metrics, not the relay: cameras keep being
         * served, and the log says so. */
        if (ctl_http_start(&hc, &r.http, err, sizeof(err)) < 0)
            cr_err("%s; running without the status page and metrics", err);
    }

    cr_info("relay %s up: agents on %s (public %s), endpoints on %s ports %u-%u, URLs use %s",
            r.o.name, r.o.listen_external, r.o.public_addr, r.o.internal_host, r.port_lo,
            r.port_hi, r.url_host);
    main_loop(&r, sig_fd);

out:
    shutdown_all(&r);
    pthread_mutex_destroy(&r.reload_lock);
    close(sig_fd);
    if (status == 0)
        cr_info("stopped");
    return status;
}
