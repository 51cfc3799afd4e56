/* camrelay-bench: the peer under test in a child process, its certificates, /proc figures. */
#include "bench/capacity_peer.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "relay/relay.h"

static int read_full(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, (uint8_t *)buf + got, len - got);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            return -1;
        got += n > 0 ? (size_t)n : 0;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = write(fd, (const uint8_t *)buf + done, len - done);
        if (n <= 0 && !(n < 0 && errno == EINTR))
            return -1;
        done += n > 0 ? (size_t)n : 0;
    }
    return 0;
}


int cap_proc_sample(pid_t pid, double *cpu_s, long *rss_kb)
{
    char path[64], line[1024];
    unsigned long ut = 0, st = 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char *p = fgets(line, sizeof(line), f) ? strrchr(line, ')') : NULL;
    fclose(f);
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (!(f = fopen(path, "r")))
        return -1;
    *rss_kb = -1;
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss_kb = atol(line + 6);
    fclose(f);
    return *rss_kb < 0 ? -1 : 0;
}

double cap_self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}


double cap_machine_busy_s(void)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    int n = f ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7])
              : 0;
    if (f)
        fclose(f);
    if (n < 8)
        return 0;
    /* user nice system idle iowait irq softirq steal */
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static char g_tmpdir[128];
static volatile pid_t g_child = -1; /* for cap_peer_cleanup */

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void cleanup_tmpdir(void)
{
    if (g_tmpdir[0] && strstr(g_tmpdir, "/camrelay-bench-"))
        nftw(g_tmpdir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    g_tmpdir[0] = 0;
}

static void child_kill_wait(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

void cap_peer_cleanup(void)
{
    if (g_child > 0)
        kill(g_child, SIGKILL);
    cleanup_tmpdir();
}

int cap_peer_certs(void)
{
    char cmd[2048];
    snprintf(g_tmpdir, sizeof(g_tmpdir), "%s/camrelay-bench-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(g_tmpdir)) {
        fprintf(stderr, "camrelay-bench: cannot make a temporary directory: %s\n", strerror(errno));
        g_tmpdir[0] = 0;
        return -1;
    }
    snprintf(cmd, sizeof(cmd),
             "(cd '%s' && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=camrelay-bench-ca "
             "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout server.key -out server.csr -subj /CN=camrelay-bench && "
             "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' > ext.cnf && "
             "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out server.pem -days 2 -extfile ext.cnf && cat server.pem server.key > both.pem) "
             ">/dev/null 2>&1",
             g_tmpdir);
    if (system(cmd) != 0) {
        fprintf(stderr, "camrelay-bench: openssl could not make the test certificates\n");
        return -1;
    }
    return 0;
}

struct relay_cmd {
    uint32_t op, count, endpoints; /* op 1: add cameras, 2: counters */
};

/* The child: a relay on 127.0.0.1:0 that registers cameras when told, until its pipe closes.
 * kind CAP_CAMRELAY_PLAIN: it also accepts plaintext data connections. */
static void relay_child(const struct cap_opts *o, int kind, uint32_t max_conns,
                        const uint8_t salt[16], const uint8_t stored_key[32], int cmd_fd,
                        int rep_fd)
{
    char cert[200], key[200], err[256];
    uint32_t have = 0;
    struct relay_cmd c;
    struct rly_relay *r;

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    cr_log_set_level_name("error");
    snprintf(cert, sizeof(cert), "%s/server.pem", g_tmpdir);
    snprintf(key, sizeof(key), "%s/server.key", g_tmpdir);
    SSL_CTX *ctx = cr_tls_server_ctx(cert, key, err, sizeof(err));
    struct rly_config cfg = {.relay_name = "bench", .listen_external = "127.0.0.1:0", .tls = ctx,
                             .keepalive_ms = 600000, .max_conns = max_conns, .workers = o->workers,
                             .batch_wait_us = o->batch_wait_us,
                             .allow_plain_data = kind == CAP_CAMRELAY_PLAIN};
    if (!ctx || rly_relay_start(&cfg, &r) < 0)
        _exit(2);
    uint16_t port = rly_relay_external_port(r);
    write_full(rep_fd, &port, sizeof(port));
    while (read_full(cmd_fd, &c, sizeof(c)) == 0) {
        if (c.op == 2) {
            struct rly_counters k;
            rly_relay_counters(r, &k);
            write_full(rep_fd, &k, sizeof(k));
            continue;
        }
        uint16_t *ports = cr_xcalloc(c.count + 1, sizeof(uint16_t));
        for (uint32_t i = 0; i < c.count; i++) {
            struct rly_camera_spec spec = {.iterations = CR_AUTH_ITERATIONS_DEFAULT};
            snprintf(spec.serial, sizeof(spec.serial), CAP_SERIAL_FMT, have + i);
            memcpy(spec.salt, salt, 16);
            memcpy(spec.stored_key, stored_key, 32);
            if (c.endpoints) {
                spec.n_endpoints = 1;
                cr_strlcpy(spec.endpoints[0].service, "rtsp", sizeof(spec.endpoints[0].service));
                spec.endpoints[0].listen_fd = cr_tcp_listen("127.0.0.1:0", 0, 16);
                if (spec.endpoints[0].listen_fd < 0)
                    _exit(3);
                ports[i] = cr_sock_port(spec.endpoints[0].listen_fd);
            }
            if (rly_relay_camera_put(r, &spec) < 0)
                _exit(3);
        }
        for (uint32_t i = 0; i < c.count; i++) { /* the workers apply puts asynchronously */
            struct rly_camera_status st;
            char serial[RLY_NAME_MAX];
            snprintf(serial, sizeof(serial), CAP_SERIAL_FMT, have + i);
            while (rly_relay_camera_status(r, serial, &st) < 0)
                usleep(1000);
        }
        have += c.count;
        write_full(rep_fd, ports, c.count * sizeof(uint16_t));
        free(ports);
    }
    rly_relay_stop(r);
    SSL_CTX_free(ctx);
    _exit(0);
}

int cap_peer_add_cameras(struct cap_peer *p, uint32_t count, int endpoints)
{
    struct relay_cmd c = {.op = 1, .count = count, .endpoints = (uint32_t)endpoints};
    if (count == 0)
        return 0;
    if (write_full(p->cmd_fd, &c, sizeof(c)) < 0 ||
        read_full(p->rep_fd, p->ep_ports + p->n_cams, count * sizeof(uint16_t)) < 0)
        return -1;
    p->n_cams += count;
    return 0;
}

/* The relay child's counters. Returns 0 or -1 (not a relay, or it is gone). */
static int relay_counters(struct cap_peer *p, struct rly_counters *k)
{
    struct relay_cmd c = {.op = 2};
    memset(k, 0, sizeof(*k));
    if (!cap_peer_is_relay(p->kind) || write_full(p->cmd_fd, &c, sizeof(c)) < 0 ||
        read_full(p->rep_fd, k, sizeof(*k)) < 0)
        return -1;
    return 0;
}

uint64_t cap_peer_buffers_exhausted(struct cap_peer *p)
{
    struct rly_counters k;
    return relay_counters(p, &k) < 0 ? 0 : k.buffers_exhausted;
}

const char *cap_peer_stream_path(struct cap_peer *p)
{
    struct rly_counters k;
    unsigned best = 0;
    if (relay_counters(p, &k) < 0)
        return "";
    for (unsigned i = 1; i < RLY_PATHS; i++)
        if (k.streams_by_path[i] > k.streams_by_path[best])
            best = i;
    return k.streams_by_path[best] ? rly_path_name(best) : "";
}

static int free_port(void)
{
    int fd = cr_tcp_listen("127.0.0.1:0", 0, 1);
    int port = fd >= 0 ? cr_sock_port(fd) : -1;
    if (fd >= 0)
        close(fd);
    return port;
}

/* Writes haproxy.cfg from the template, substituting @NAMES@. Returns 0 or -1. */
static int haproxy_config(const char *tmpl_path, const char *out_path, const char *const kv[][2],
                          unsigned nkv)
{
    FILE *in = fopen(tmpl_path, "r"), *out = in ? fopen(out_path, "w") : NULL;
    char line[512];
    if (!out) {
        fprintf(stderr, "camrelay-bench: cannot read %s (--haproxy-cfg)\n", tmpl_path);
        if (in)
            fclose(in);
        return -1;
    }
    while (fgets(line, sizeof(line), in)) {
        for (char *p = line; *p; p++) {
            unsigned k = 0;
            while (k < nkv && strncmp(p, kv[k][0], strlen(kv[k][0])) != 0)
                k++;
            if (k < nkv && line[0] != '#') {
                fputs(kv[k][1], out);
                p += strlen(kv[k][0]) - 1;
            } else {
                fputc(*p, out);
            }
        }
    }
    fclose(in);
    return fclose(out) == 0 ? 0 : -1;
}

static const char *haproxy_template(const struct cap_opts *o)
{
    static char path[600];
    char exe[512];
    if (o->haproxy_cfg)
        return o->haproxy_cfg;
    if (access("bench/haproxy.cfg.in", R_OK) == 0)
        return "bench/haproxy.cfg.in";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    exe[n > 0 ? n : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash)
        *slash = 0; /* build/bin -> ../../bench */
    snprintf(path, sizeof(path), "%s/../../bench/haproxy.cfg.in", exe);
    return path;
}

/* Copies the start of haproxy's log to stderr: why it did not start. */
static void show_log(const char *path)
{
    char buf[2048];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    fprintf(stderr, "camrelay-bench: haproxy did not start (is it installed? "
            "scripts/install-deps.sh)%s%s", n ? "; its log:\n" : "\n", buf);
}

int cap_peer_start(const struct cap_opts *o, int kind, uint32_t streams, const uint8_t salt[16],
                   const uint8_t stored_key[32], uint16_t rec_port, struct cap_peer *p)
{
    /* Per stream the relay holds an endpoint listener, a tunnel, a data connection and a
     * recorder (any worker may own them all); haproxy counts one session per stream. */
    uint32_t max_conns = 4 * streams + 256, haproxy_maxconn = streams + 256;
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->pid = -1;
    p->cmd_fd = p->rep_fd = -1;
    p->cam_addr.sin_family = AF_INET;
    p->cam_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (kind == CAP_DIRECT) {
        p->cam_addr.sin_port = htons(rec_port);
        return 0;
    }
    if (cap_peer_is_relay(kind)) {
        int cmd[2], rep[2];
        uint16_t port;
        if (pipe2(cmd, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0)
            return -1;
        fflush(NULL);
        p->pid = fork();
        if (p->pid == 0) {
            close(cmd[1]);
            close(rep[0]);
            relay_child(o, kind, max_conns, salt, stored_key, cmd[0], rep[1]);
        }
        close(cmd[0]);
        close(rep[1]);
        p->cmd_fd = cmd[1];
        p->rep_fd = rep[0];
        if (p->pid < 0 || read_full(p->rep_fd, &port, sizeof(port)) < 0) {
            fprintf(stderr, "camrelay-bench: the relay did not start\n");
            return -1;
        }
        g_child = p->pid;
        p->cam_addr.sin_port = htons(port);
        p->ep_ports = cr_xcalloc(streams, sizeof(uint16_t));
    } else {
        char cfg[200], log[200], bind[300], server[64], nbt[16], maxconn[16];
        int fport = free_port();
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(nbt, sizeof(nbt), "%u", o->workers ? o->workers : (unsigned)cores);
        snprintf(maxconn, sizeof(maxconn), "%u", haproxy_maxconn);
        snprintf(bind, sizeof(bind), "127.0.0.1:%d%s%s%s", fport,
                 kind == CAP_HAPROXY_TLS ? " ssl crt " : "",
                 kind == CAP_HAPROXY_TLS ? g_tmpdir : "",
                 kind == CAP_HAPROXY_TLS ? "/both.pem" : "");
        snprintf(server, sizeof(server), "127.0.0.1:%u", rec_port);
        const char *const kv[][2] = {{"@NBTHREAD@", nbt}, {"@MAXCONN@", maxconn},
                                     {"@BIND@", bind}, {"@SERVER@", server}};
        snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", g_tmpdir);
        snprintf(log, sizeof(log), "%s/haproxy.log", g_tmpdir);
        if (fport < 0 || haproxy_config(haproxy_template(o), cfg, kv, 4) < 0)
            return -1;
        fflush(NULL);
        p->pid = fork();
        if (p->pid == 0) {
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            dup2(fd, 1);
            dup2(fd, 2);
            execlp("haproxy", "haproxy", "-db", "-f", cfg, (char *)NULL);
            _exit(127);
        }
        g_child = p->pid;
        p->cam_addr.sin_port = htons((uint16_t)fport);
        char where[32];
        snprintf(where, sizeof(where), "127.0.0.1:%d", fport);
        int fd = -1;
        for (int i = 0; i < 100 && fd < 0 && p->pid > 0; i++) {
            if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
                p->pid = -1;
            else if ((fd = cr_tcp_connect(where, 200)) < 0)
                usleep(50000);
        }
        if (fd < 0) {
            show_log(log);
            return -1;
        }
        close(fd); /* the probe: the recorder side sees a connection without a hello and drops it */
    }
    usleep(300000);
    double cpu;
    if (cap_proc_sample(p->pid, &cpu, &p->rss_base_kb) < 0)
        return -1;
    return 0;
}

void cap_peer_stop(struct cap_peer *p)
{
    if (p->cmd_fd >= 0)
        close(p->cmd_fd); /* the relay child stops its relay and exits */
    for (int i = 0; i < 100 && p->pid > 0 && cap_peer_is_relay(p->kind); i++) {
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid)
            p->pid = -1; /* exited by itself: reaped, never signal a recycled pid */
        else
            usleep(20000);
    }
    child_kill_wait(p->pid);
    if (p->rep_fd >= 0)
        close(p->rep_fd);
    free(p->ep_ports);
    g_child = -1;
    p->pid = -1;
    p->cmd_fd = p->rep_fd = -1;
    p->ep_ports = NULL;
}

