/* camrelay-agent configuration: flag table, --services / --secrets-file parsing, checks. */
#include "agent/agent_config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define OPT(name, type, field, def, min, max, help)                                                \
    {name, type, offsetof(struct agt_config, field), def, min, max, 0, 0, help}

const struct cr_opt agt_config_opts[] = {
    OPT("serial", CR_OPT_STR, serial, NULL, 0, 0,
        "camera serial (MAC); with --simulate, the prefix of the simulated serials"),
    OPT("oak", CR_OPT_STR, oak, NULL, 0, 0,
        "Owner Authentication Key (prefer --secrets-file: flags show in ps)"),
    OPT("user", CR_OPT_STR, user, NULL, 0, 0, "the camera's user name"),
    OPT("password", CR_OPT_STR, password, NULL, 0, 0,
        "the camera's password (prefer --secrets-file)"),
    OPT("secrets-file", CR_OPT_STR, secrets_file, NULL, 0, 0,
        "file with oak=, user=, password= lines (flags given as well win)"),
    OPT("dispatcher", CR_OPT_STR, dispatcher, NULL, 0, 0,
        "comma-separated dispatcher host:port, tried in order"),
    OPT("ca", CR_OPT_STR, ca, NULL, 0, 0, "CA to trust for dispatcher and relay"),
    OPT("services", CR_OPT_STR, services, "rtsp=127.0.0.1:554,http=127.0.0.1:80", 0, 0,
        "local services, name=host:port[,...]"),
    OPT("state-dir", CR_OPT_STR, state_dir, "/var/lib/camrelay-agent", 0, 0,
        "where the relay address is cached"),
    OPT("connect", CR_OPT_BOOL, connect, "false", 0, 0,
        "the one-click button: start phoning home at once"),
    OPT("control-socket", CR_OPT_STR, control_socket, NULL, 0, 0,
        "local Unix socket for the button (\"press\") and \"status\""),
    OPT("press", CR_OPT_BOOL, press, "false", 0, 0,
        "client: send the button press to the agent at --control-socket and exit"),
    OPT("data-plain", CR_OPT_BOOL, data_plain, "false", 0, 0,
        "open data connections in plaintext (the control tunnel stays TLS; the relay needs "
        "allow-plain-data): only where the link to the relay is already private (VPN, private "
        "APN)"),
    OPT("simulate", CR_OPT_INT, simulate, "0", 0, AGT_SIMULATE_MAX,
        "simulate N cameras (serials <serial>-0001 ...), each its own tunnel; 0 = real camera"),
    OPT("sim-clip", CR_OPT_STR, sim_clip, NULL, 0, 0,
        "H.264 clip (Annex-B or MP4) the simulator serves"),
    OPT("sim-fps", CR_OPT_INT, sim_fps, "0", 0, 240,
        "frame rate when the clip does not say (0 = 25)"),
    OPT("log-level", CR_OPT_STR, log_level, "info", 0, 0, "error, warn, info or debug"),
    CR_OPT_END,
};

static int is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-' || c == '_';
}

static int is_hex_or_colon(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') ||
           c == ':' || c == '.';
}

int agt_hostport_check(const char *s)
{
    size_t n = strnlen(s, CR_ADDR_STRLEN);
    const char *port;

    if (n == 0 || n >= CR_ADDR_STRLEN)
        return -EINVAL;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end == s + 1 || end[1] != ':')
            return -EINVAL;
        for (const char *p = s + 1; p < end; p++)
            if (!is_hex_or_colon(*p))
                return -EINVAL;
        port = end + 2;
    } else {
        const char *colon = strchr(s, ':');
        if (!colon || colon == s || strchr(colon + 1, ':'))
            return -EINVAL;
        for (const char *p = s; p < colon; p++)
            if (!is_host_char(*p))
                return -EINVAL;
        port = colon + 1;
    }
    size_t pl = strlen(port);
    if (pl == 0 || pl > 5)
        return -EINVAL;
    long v = 0;
    for (const char *p = port; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    return (v >= 1 && v <= 65535) ? 0 : -EINVAL;
}

int agt_serial_check(const char *serial)
{
    size_t n = strnlen(serial, AGT_SERIAL_MAX);
    if (n == 0 || n >= AGT_SERIAL_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = serial[i];
        if (!is_host_char(c) && c != ':')
            return -EINVAL;
    }
    return 0;
}

/* Next comma-separated item of *p: sets item/len and advances past the comma. Returns 0 at
 * the end of the string. */
static int next_item(const char **p, const char **item, size_t *len)
{
    if (!*p)
        return 0;
    const char *comma = strchr(*p, ',');
    *item = *p;
    *len = comma ? (size_t)(comma - *p) : strlen(*p);
    *p = comma ? comma + 1 : NULL;
    return 1;
}

int agt_hostport_list_parse(const char *spec, char (*out)[CR_ADDR_STRLEN], unsigned cap,
                            char *err, size_t errlen)
{
    const char *p = spec, *item;
    size_t len;
    unsigned n = 0;

    if (!spec || !*spec || strnlen(spec, AGT_SPEC_MAX + 1) > AGT_SPEC_MAX) {
        snprintf(err, errlen, "expected host:port[,host:port...]");
        return -EINVAL;
    }
    while (next_item(&p, &item, &len)) {
        char addr[CR_ADDR_STRLEN];
        if (n == cap) {
            snprintf(err, errlen, "more than %u addresses", cap);
            return -EINVAL;
        }
        if (len == 0 || len >= sizeof(addr)) {
            snprintf(err, errlen, "address %u is %s", n + 1, len ? "too long" : "empty");
            return -EINVAL;
        }
        memcpy(addr, item, len);
        addr[len] = '\0';
        if (agt_hostport_check(addr) < 0) {
            snprintf(err, errlen, "address %u (\"%s\") is not host:port with a port 1-65535",
                     n + 1, addr);
            return -EINVAL;
        }
        memcpy(out[n++], addr, len + 1);
    }
    return (int)n;
}

int agt_services_parse(const char *spec, struct agt_service *out, unsigned cap, char *err,
                       size_t errlen)
{
    const char *p = spec, *item;
    size_t len;
    unsigned n = 0;

    if (!spec || !*spec || strnlen(spec, AGT_SPEC_MAX + 1) > AGT_SPEC_MAX) {
        snprintf(err, errlen, "expected name=host:port[,name=host:port...]");
        return -EINVAL;
    }
    while (next_item(&p, &item, &len)) {
        struct agt_service s;
        const char *eq = memchr(item, '=', len);
        if (n == cap) {
            snprintf(err, errlen, "more than %u services", cap);
            return -EINVAL;
        }
        if (!eq) {
            snprintf(err, errlen, "service %u: expected name=host:port", n + 1);
            return -EINVAL;
        }
        size_t nl = (size_t)(eq - item), al = len - nl - 1;
        if (nl == 0 || nl >= sizeof(s.name)) {
            snprintf(err, errlen, "service %u: name must be 1-%zu characters", n + 1,
                     sizeof(s.name) - 1);
            return -EINVAL;
        }
        for (size_t i = 0; i < nl; i++) {
            char c = item[i];
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
                snprintf(err, errlen, "service %u: name may hold only a-z 0-9 - _", n + 1);
                return -EINVAL;
            }
        }
        memcpy(s.name, item, nl);
        s.name[nl] = '\0';
        if (al == 0 || al >= sizeof(s.addr)) {
            snprintf(err, errlen, "service %s: address is %s", s.name, al ? "too long" : "empty");
            return -EINVAL;
        }
        memcpy(s.addr, eq + 1, al);
        s.addr[al] = '\0';
        if (agt_hostport_check(s.addr) < 0) {
            snprintf(err, errlen, "service %s: \"%s\" is not host:port with a port 1-65535",
                     s.name, s.addr);
            return -EINVAL;
        }
        for (unsigned i = 0; i < n; i++) {
            if (strcmp(out[i].name, s.name) == 0) {
                snprintf(err, errlen, "service %s given twice", s.name);
                return -EINVAL;
            }
        }
        out[n++] = s;
    }
    return (int)n;
}

void agt_secrets_free(struct agt_secrets *s)
{
    char **v[] = {&s->oak, &s->user, &s->password};
    for (size_t i = 0; i < CR_ARRAY_SIZE(v); i++) {
        if (*v[i]) {
            cr_wipe(*v[i], strlen(*v[i]));
            free(*v[i]);
            *v[i] = NULL;
        }
    }
}

int agt_secrets_parse(const char *text, size_t len, struct agt_secrets *out, char *err,
                      size_t errlen)
{
    size_t pos = 0;
    unsigned line = 0;

    memset(out, 0, sizeof(*out));
    if (memchr(text, '\0', len)) {
        snprintf(err, errlen, "contains a NUL byte");
        return -EINVAL;
    }
    while (pos < len) {
        const char *l = text + pos;
        const char *nl = memchr(l, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - l) : len - pos;
        pos += ll + (nl ? 1 : 0);
        line++;
        if (ll > 0 && l[ll - 1] == '\r')
            ll--;
        if (ll > AGT_SECRET_LINE_MAX) {
            snprintf(err, errlen, "line %u is longer than %d characters", line,
                     AGT_SECRET_LINE_MAX);
            goto out_free_secrets;
        }
        if (ll == 0 || l[0] == '#')
            continue;
        const char *eq = memchr(l, '=', ll);
        if (!eq) {
            snprintf(err, errlen, "line %u: expected key=value", line);
            goto out_free_secrets;
        }
        size_t kl = (size_t)(eq - l), vl = ll - kl - 1;
        char **slot = NULL;
        if (kl == 3 && memcmp(l, "oak", 3) == 0)
            slot = &out->oak;
        else if (kl == 4 && memcmp(l, "user", 4) == 0)
            slot = &out->user;
        else if (kl == 8 && memcmp(l, "password", 8) == 0)
            slot = &out->password;
        if (!slot) {
            /* The key is printed only when it looks like a key: a line may be a stray secret. */
            int printable = kl <= 32;
            for (size_t i = 0; i < kl && printable; i++)
                printable = (l[i] >= 'a' && l[i] <= 'z') || l[i] == '-' || l[i] == '_';
            if (printable)
                snprintf(err, errlen,
                         "line %u: unknown key \"%.*s\" (expected oak, user, password)", line,
                         (int)kl, l);
            else
                snprintf(err, errlen, "line %u: unknown key (expected oak, user, password)", line);
            goto out_free_secrets;
        }
        if (*slot) {
            snprintf(err, errlen, "line %u: %.*s given twice", line, (int)kl, l);
            goto out_free_secrets;
        }
        if (vl == 0) {
            snprintf(err, errlen, "line %u: %.*s is empty", line, (int)kl, l);
            goto out_free_secrets;
        }
        *slot = cr_xmalloc(vl + 1);
        memcpy(*slot, eq + 1, vl);
        (*slot)[vl] = '\0';
    }
    return 0;

out_free_secrets:
    agt_secrets_free(out);
    return -EINVAL;
}

int agt_secrets_load(const char *path, struct agt_secrets *out, char *err, size_t errlen)
{
    char *buf = cr_xmalloc(AGT_SECRETS_FILE_MAX + 1);
    int fd = -1, rc;
    size_t n = 0;
    struct stat st;

    memset(out, 0, sizeof(*out));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot read secrets file %s: %s", path, strerror(-rc));
        goto out_free_buf;
    }
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        cr_warn("secrets file %s is readable by group or others (chmod 600 it)", path);
    for (;;) {
        ssize_t r = read(fd, buf + n, AGT_SECRETS_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            snprintf(err, errlen, "cannot read secrets file %s: %s", path, strerror(-rc));
            goto out_close_fd;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > AGT_SECRETS_FILE_MAX) {
            rc = -EFBIG;
            snprintf(err, errlen, "secrets file %s is larger than %d bytes", path,
                     AGT_SECRETS_FILE_MAX);
            goto out_close_fd;
        }
    }
    char perr[160];
    rc = agt_secrets_parse(buf, n, out, perr, sizeof(perr));
    if (rc < 0)
        snprintf(err, errlen, "secrets file %s: %s", path, perr);

out_close_fd:
    close(fd);
out_free_buf:
    cr_wipe(buf, AGT_SECRETS_FILE_MAX + 1);
    free(buf);
    return rc;
}

/* Moves a secret from the file into the config unless a flag already set it. */
static void take_secret(char **flag, char **from_file)
{
    if (*from_file && !*flag) {
        *flag = *from_file;
        *from_file = NULL;
    }
}

int agt_config_check(struct agt_config *cfg, char *err, size_t errlen)
{
    char perr[200];
    int rc;

    if (cfg->press) {
        if (!cfg->control_socket || !*cfg->control_socket) {
            snprintf(err, errlen, "--press needs --control-socket PATH");
            return -EINVAL;
        }
        return 0;
    }
    if (cfg->log_level && cr_log_set_level_name(cfg->log_level) < 0) {
        snprintf(err, errlen, "--log-level must be error, warn, info or debug (got \"%s\")",
                 cfg->log_level);
        return -EINVAL;
    }
    if (cfg->secrets_file) {
        struct agt_secrets s;
        rc = agt_secrets_load(cfg->secrets_file, &s, err, errlen);
        if (rc < 0)
            return -EINVAL;
        take_secret(&cfg->oak, &s.oak);
        take_secret(&cfg->user, &s.user);
        take_secret(&cfg->password, &s.password);
        agt_secrets_free(&s);
    }
    if (!cfg->serial || !*cfg->serial) {
        snprintf(err, errlen, "missing --serial (the camera's serial/MAC)");
        return -EINVAL;
    }
    /* Simulated serials get "-0001" (or wider) appended. */
    size_t room = AGT_SERIAL_MAX - 1 - (cfg->simulate > 0 ? 1 + (cfg->simulate > 9999 ? 6 : 4) : 0);
    if (agt_serial_check(cfg->serial) < 0 || strlen(cfg->serial) > room) {
        snprintf(err, errlen, "--serial must be 1-%zu characters of A-Z a-z 0-9 . _ : -", room);
        return -EINVAL;
    }
    if (!cfg->oak || !*cfg->oak) {
        snprintf(err, errlen, "missing --oak (or oak= in --secrets-file)");
        return -EINVAL;
    }
    if (!cfg->user || !*cfg->user) {
        snprintf(err, errlen, "missing --user (or user= in --secrets-file)");
        return -EINVAL;
    }
    if (!cfg->password || !*cfg->password) {
        snprintf(err, errlen, "missing --password (or password= in --secrets-file)");
        return -EINVAL;
    }
    if (!cfg->dispatcher) {
        snprintf(err, errlen, "missing --dispatcher host:port[,host:port...]");
        return -EINVAL;
    }
    rc = agt_hostport_list_parse(cfg->dispatcher, cfg->disp, AGT_MAX_DISPATCHERS, perr,
                                 sizeof(perr));
    if (rc < 0) {
        snprintf(err, errlen, "bad --dispatcher: %s", perr);
        return -EINVAL;
    }
    cfg->n_disp = (unsigned)rc;
    if (!cfg->ca || !*cfg->ca) {
        snprintf(err, errlen, "missing --ca FILE (the camrelay CA certificate)");
        return -EINVAL;
    }
    if (access(cfg->ca, R_OK) < 0) {
        snprintf(err, errlen, "cannot read --ca %s: %s", cfg->ca, strerror(errno));
        return -EINVAL;
    }
    if (cfg->simulate > 0) {
        static const struct agt_service sim_svc[] = {{"rtsp", "sim"}, {"http", "sim"}};
        if (!cfg->sim_clip || !*cfg->sim_clip) {
            snprintf(err, errlen, "--simulate needs --sim-clip FILE (an H.264 clip)");
            return -EINVAL;
        }
        if (access(cfg->sim_clip, R_OK) < 0) {
            snprintf(err, errlen, "cannot read --sim-clip %s: %s", cfg->sim_clip,
                     strerror(errno));
            return -EINVAL;
        }
        memcpy(cfg->svc, sim_svc, sizeof(sim_svc));
        cfg->n_svc = CR_ARRAY_SIZE(sim_svc);
    } else {
        rc = agt_services_parse(cfg->services, cfg->svc, AGT_MAX_SERVICES, perr, sizeof(perr));
        if (rc < 0) {
            snprintf(err, errlen, "bad --services: %s", perr);
            return -EINVAL;
        }
        cfg->n_svc = (unsigned)rc;
    }
    if (!cfg->state_dir || !*cfg->state_dir) {
        snprintf(err, errlen, "--state-dir must not be empty");
        return -EINVAL;
    }
    if (!cfg->connect && !cfg->control_socket) {
        snprintf(err, errlen,
                 "nothing would start phoning home: give --connect or --control-socket PATH");
        return -EINVAL;
    }
    return 0;
}

int agt_config_load(struct agt_config *cfg, int argc, char **argv)
{
    char err[512];
    int rc = cr_config_load(agt_config_opts, cfg, argc, argv,
                            "--serial S --dispatcher LIST --ca FILE [options]", NULL);
    if (rc != 0)
        return rc;
    if (agt_config_check(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s: %s\n", argc > 0 ? argv[0] : "camrelay-agent", err);
        return -EINVAL;
    }
    return 0;
}

void agt_config_free(struct agt_config *cfg)
{
    char *secrets[] = {cfg->oak, cfg->user, cfg->password};
    for (size_t i = 0; i < CR_ARRAY_SIZE(secrets); i++)
        if (secrets[i])
            cr_wipe(secrets[i], strlen(secrets[i]));
    cr_config_free(agt_config_opts, cfg);
}
