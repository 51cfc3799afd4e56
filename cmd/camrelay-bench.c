/* camrelay-bench: how many camera streams this machine relays within a latency budget, with the
 * same load through direct TCP and haproxy in the same run, so the results read as ratios.
 *
 * The peer under test (the relay, or haproxy) runs in a child process: its CPU and memory come
 * from /proc/<pid>, apart from the load generator's, which runs here on one or two epoll
 * threads. This file parses the flags and runs the modes; bench/capacity*.h are the parts.
 * docs/benchmark.md has the method and the results. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include "bench/capacity.h"
#include "bench/capacity_gen.h"
#include "bench/capacity_peer.h"
#include "bench/capacity_report.h"
#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"

/* The Makefile links each cmd/<name>.c with build/libcamrelay.a, which does not hold bench/.
 * Until it builds bench/capacity*.c into this program, they are compiled in here. */

#define WARMUP_NS (1 * CAP_NS) /* between a step's setup and its window */

static const char usage[] =
    "usage: camrelay-bench [options]\n"
    "How many camera streams this machine relays, against direct TCP and haproxy as ratios.\n"
    "The relay (or haproxy) runs in a child process, measured from /proc; the load generator\n"
    "(cameras and recorders) runs in this process.\n"
    "\n"
    "  --mode MODE             paced (default): streams of --kbps at --fps, latency and CPU per\n"
    "                          step; bulk: one stream as fast as it goes; idle: --streams logged-\n"
    "                          in idle tunnels, relay RSS per tunnel; handshakes: TLS 1.3\n"
    "                          handshakes + logins per second and per relay core\n"
    "  --peer LIST             comma-separated: camrelay (default), direct (camera to recorder,\n"
    "                          plain TCP: the floor), haproxy (TCP, splice-auto), haproxy-tls\n"
    "                          (TLS terminated by haproxy), camrelay-plain (the relay with\n"
    "                          allow_plain_data, plaintext data connections: against haproxy),\n"
    "                          or all; idle and handshakes: camrelay only\n"
    "  --streams N             streams (paced: one step; idle: tunnels, default 10000)\n"
    "  --ramp START:STEP:MAX   paced: steps of streams, e.g. 100:200:1500, MAX always the last;\n"
    "                          the ramp stops after a step with more than 20%% of frames late\n"
    "  --kbps K                bitrate of each stream, kbit/s (default 500)\n"
    "  --fps F                 frames per second (default 8): frames of kbps*1000/8/fps bytes\n"
    "  --seconds S             measured seconds per step, bulk run and handshakes run (10)\n"
    "  --latency-budget-ms MS  p99 added latency a step may have (200); every frame above it is\n"
    "                          late, and a passing step has none late or lost\n"
    "  --workers N             relay workers and haproxy threads (default: one per core)\n"
    "  --batch-wait-us N       relay: completion batching wait (camrelayd's default 1000)\n"
    "  --gen-threads N         load generator threads, 1 or 2 (default 1: on a small machine a\n"
    "                          second thread competes with the peer for the cores)\n"
    "  --concurrency N         handshakes: logins in flight (default 32)\n"
    "  --json FILE             results as JSON; sections of other modes already in FILE are\n"
    "                          kept, so several runs build one file (camrelayctl size --bench)\n"
    "  --plot FILE.svg         paced: p99 latency and CPU s/GB against streams, per peer\n"
    "  --haproxy-cfg FILE      haproxy config template (default bench/haproxy.cfg.in)\n"
    "  --note TEXT             stored with the machine description in the JSON\n"
    "  --progress              live set-up counts on stderr\n"
    "  -h, --help              this text\n";

static void on_signal(int sig)
{
    cap_peer_cleanup(); /* the child and the temporary directory; best effort */
    _exit(128 + sig);
}

static int parse_peers(const char *arg, unsigned *out)
{
    char buf[128];
    *out = 0;
    if (strcmp(arg, "all") == 0) {
        *out = (1u << CAP_N_PEERS) - 1;
        return 0;
    }
    if (cr_strlcpy(buf, arg, sizeof(buf)) < 0)
        return -1;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int p = 0;
        while (p < CAP_N_PEERS && strcmp(tok, cap_peer_names[p]) != 0)
            p++;
        if (p == CAP_N_PEERS)
            return -1;
        *out |= 1u << p;
    }
    return *out ? 0 : -1;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_pos(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct cap_opts *o)
{
    static const struct option longs[] = {
        {"mode", 1, NULL, 'm'},         {"peer", 1, NULL, 'p'},
        {"streams", 1, NULL, 'n'},      {"ramp", 1, NULL, 'r'},
        {"kbps", 1, NULL, 'k'},         {"fps", 1, NULL, 'f'},
        {"seconds", 1, NULL, 's'},      {"latency-budget-ms", 1, NULL, 'b'},
        {"workers", 1, NULL, 'w'},      {"gen-threads", 1, NULL, 'g'},
        {"concurrency", 1, NULL, 'c'},  {"json", 1, NULL, 'j'},
        {"plot", 1, NULL, 'P'},         {"haproxy-cfg", 1, NULL, 'H'},
        {"note", 1, NULL, 'N'},         {"progress", 0, NULL, 'v'},
        {"batch-wait-us", 1, NULL, 'B'},
        {"help", 0, NULL, 'h'},         {NULL, 0, NULL, 0}};
    int c, streams_given = 0, bad = 0;
    char *a, *b;
    while ((c = getopt_long(argc, argv, "h", longs, NULL)) != -1) {
        switch (c) {
        case 'm':
            for (o->mode = 0; o->mode < CAP_N_MODES && strcmp(optarg, cap_mode_names[o->mode]); )
                o->mode++;
            bad |= o->mode == CAP_N_MODES;
            break;
        case 'p': bad |= parse_peers(optarg, &o->peers) < 0; break;
        case 'n':
            bad |= parse_u32(optarg, 1, 1000000, &o->ramp_max) < 0;
            o->ramp_start = o->ramp_max;
            o->ramp_step = 0;
            streams_given = 1;
            break;
        case 'r':
            a = strchr(optarg, ':');
            b = a ? strchr(a + 1, ':') : NULL;
            if (!b) {
                bad = 1;
                break;
            }
            *a = *b = 0;
            bad |= parse_u32(optarg, 1, 1000000, &o->ramp_start) < 0 ||
                   parse_u32(a + 1, 1, 1000000, &o->ramp_step) < 0 ||
                   parse_u32(b + 1, 1, 1000000, &o->ramp_max) < 0 || o->ramp_max < o->ramp_start;
            streams_given = 1;
            break;
        case 'k': bad |= parse_pos(optarg, &o->kbps) < 0; break;
        case 'f': bad |= parse_u32(optarg, 1, 1000, &o->fps) < 0; break;
        case 's': bad |= parse_pos(optarg, &o->seconds) < 0; break;
        case 'b': bad |= parse_pos(optarg, &o->budget_ms) < 0; break;
        case 'w': bad |= parse_u32(optarg, 1, 256, &o->workers) < 0; break;
        case 'g': bad |= parse_u32(optarg, 1, 2, &o->gen_threads) < 0; break;
        case 'B': bad |= parse_u32(optarg, 0, 100000, &o->batch_wait_us) < 0; break;
        case 'c': bad |= parse_u32(optarg, 1, 4096, &o->concurrency) < 0; break;
        case 'j': o->json = optarg; break;
        case 'P': o->plot = optarg; break;
        case 'H': o->haproxy_cfg = optarg; break;
        case 'N': o->note = optarg; break;
        case 'v': o->progress = 1; break;
        case 'h': fputs(usage, stdout); exit(0);
        default: bad = 1;
        }
    }
    if (!streams_given && o->mode == CAP_IDLE)
        o->ramp_start = o->ramp_max = 10000;
    if (bad || optind < argc) {
        fprintf(stderr, "camrelay-bench: bad arguments (see --help)\n");
        return -1;
    }
    if ((o->mode == CAP_IDLE || o->mode == CAP_HANDSHAKES) && o->peers != 1u << CAP_CAMRELAY) {
        fprintf(stderr, "camrelay-bench: --mode %s measures the relay only (--peer camrelay)\n",
                cap_mode_names[o->mode]);
        return -1;
    }
    if (o->kbps * 1000.0 / 8.0 / o->fps < 64) {
        fprintf(stderr, "camrelay-bench: frames of %.0f bytes are too small (--kbps, --fps)\n",
                o->kbps * 1000.0 / 8.0 / o->fps);
        return -1;
    }
    return 0;
}

/* RLIMIT_NOFILE: raise the soft limit to need, and the hard one too when allowed (root). */
static void raise_nofile(struct cap_results *r, uint64_t need)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    r->nofile_soft0 = (long)rl.rlim_cur;
    r->nofile_hard0 = (long)rl.rlim_max;
    if (rl.rlim_cur < need) {
        struct rlimit want = {need, rl.rlim_max > need ? rl.rlim_max : need};
        if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
            want.rlim_cur = want.rlim_max = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &want);
        }
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    r->nofile_soft = (long)rl.rlim_cur;
    r->nofile_hard = (long)rl.rlim_max;
}

/* Every bench camera has the same secret; the relay stores its verifier for each serial. */
struct verifier {
    uint8_t salt[16], stored_key[32], client_key[32];
};

static void make_verifier(struct verifier *v)
{
    struct cr_auth_secret secret = {.oak = "BENCH-OAK-0000", .user = "bench", .password = "bench"};
    cr_random_bytes(v->salt, sizeof(v->salt));
    cr_auth_client_key(&secret, v->salt, CR_AUTH_ITERATIONS_DEFAULT, v->client_key);
    cr_auth_stored_key(v->client_key, v->stored_key);
}

/* The peer's CPU seconds and RSS; NAN and 0 for direct (no process in the middle). */
static void peer_sample(const struct cap_peer *pp, double *cpu_s, long *rss_kb)
{
    *cpu_s = NAN;
    *rss_kb = 0;
    if (pp->pid > 0 && cap_proc_sample(pp->pid, cpu_s, rss_kb) < 0)
        *cpu_s = NAN;
}

/* Starts the generator and the peer for cap streams. Returns 0 or -1 with err filled. */
static int setup(const struct cap_results *r, const struct verifier *v, int mode, int peer,
                 uint32_t cap, struct cap_gen **g, struct cap_peer *pp, char *err, size_t errlen)
{
    *g = cap_gen_new(r->o, mode, peer, cap, v->salt, v->client_key);
    if (!*g || cap_peer_start(r->o, peer, cap, v->salt, v->stored_key, cap_gen_listen_port(*g),
                              pp) < 0) {
        snprintf(err, errlen, "could not start %s", cap_peer_names[peer]);
        return -1;
    }
    cap_gen_start(*g, pp);
    return 0;
}

static void run_paced(struct cap_results *r, const struct verifier *v, int peer, int *header)
{
    const struct cap_opts *o = r->o;
    struct cap_paced *res = &r->paced[peer];
    struct cap_peer pp = {.pid = -1, .cmd_fd = -1, .rep_fd = -1};
    struct cap_gen *g = NULL;
    /* Frames of a window may arrive until 3 budgets (at least 1 s) after it. */
    uint64_t drain = (uint64_t)(o->budget_ms * 3e6);
    drain = drain > CAP_NS ? drain : CAP_NS;

    res->ran = 1;
    if (setup(r, v, CAP_PACED, peer, o->ramp_max, &g, &pp, res->error, sizeof(res->error)) < 0)
        goto out;
    int held = 1; /* every step so far passed */
    /* The last step is MAX itself, also when the steps do not land on it (a ramp capped by
     * the descriptor limit): 2500:250:6496 ends with 6,250 and 6,496. */
    for (uint32_t n = o->ramp_start; n <= o->ramp_max && res->n_steps < CAP_MAX_STEPS;
         n = n < o->ramp_max && n + o->ramp_step > o->ramp_max ? o->ramp_max : n + o->ramp_step) {
        if (cap_peer_is_relay(peer) && cap_peer_add_cameras(&pp, n - pp.n_cams, 1) < 0) {
            snprintf(res->error, sizeof(res->error), "the relay child stopped answering");
            break;
        }
        if (cap_gen_grow(g, n, o->progress) < 0) {
            snprintf(res->error, sizeof(res->error), "streams failed to set up at %u", n);
            break;
        }
        struct cap_step *st = &res->steps[res->n_steps++];
        struct cap_wstats w;
        double c0, c1, g0, g1, m0, m1;
        long rss0, rss1;
        uint64_t t0 = cap_now_ns() + WARMUP_NS, t1 = t0 + (uint64_t)(o->seconds * 1e9);
        st->streams = n;
        cap_gen_window(g, t0, t1, t1 + drain);
        uint64_t b0 = cap_peer_buffers_exhausted(&pp);
        cap_sleep_until(t0);
        peer_sample(&pp, &c0, &rss0);
        g0 = cap_self_cpu_s();
        m0 = cap_machine_busy_s();
        cap_sleep_until(t1);
        peer_sample(&pp, &c1, &rss1);
        g1 = cap_self_cpu_s();
        m1 = cap_machine_busy_s();
        st->buffers_exhausted = cap_peer_buffers_exhausted(&pp) - b0;
        cap_gen_window_wait(g, &w);
        cap_step_fill(st, &w, o->budget_ms, o->seconds, c1 - c0, g1 - g0, m1 - m0, rss1,
                      pp.rss_base_kb);
        cap_report_step(stdout, peer, st, *header);
        *header = 0;
        held &= st->pass;
        if (held)
            res->max_streams = n;
        if (st->pass)
            res->max_pass_any = n;
        if (st->late_pct > 20.0) {
            snprintf(res->error, sizeof(res->error), "saturated at %u streams (%.0f%% late): "
                     "ramp stopped", n, st->late_pct);
            break;
        }
        if (o->ramp_step == 0)
            break;
    }
    cr_strlcpy(res->path, cap_peer_stream_path(&pp), sizeof(res->path));
out:
    cap_gen_free(g);
    cap_peer_stop(&pp);
}

struct bulk_writer {
    int fd;
    SSL *ssl;
    _Atomic int stop, done;
};

static void *bulk_write_main(void *arg)
{
    static uint8_t buf[256 * 1024];
    struct bulk_writer *w = arg;
    while (!atomic_load(&w->stop)) {
        int n = w->ssl ? SSL_write(w->ssl, buf, 64 * 1024)
                       : (int)send(w->fd, buf, sizeof(buf), MSG_NOSIGNAL);
        if (n <= 0)
            break;
    }
    atomic_store(&w->done, 1);
    return NULL;
}

static void run_bulk(struct cap_results *r, const struct verifier *v, int peer)
{
    const struct cap_opts *o = r->o;
    struct cap_bulk *res = &r->bulk[peer];
    struct cap_peer pp = {.pid = -1, .cmd_fd = -1, .rep_fd = -1};
    struct cap_gen *g = NULL;
    struct bulk_writer w = {0};
    pthread_t th;
    int rec_fd = -1, started = 0;
    double c0 = 0, c1 = 0, g0 = 0, g1 = 0;
    long rss;
    uint64_t ta = 0, tb = 0;
    static uint8_t buf[256 * 1024];

    res->ran = 1;
    if (setup(r, v, CAP_BULK, peer, 1, &g, &pp, res->error, sizeof(res->error)) < 0)
        goto out;
    if ((cap_peer_is_relay(peer) && cap_peer_add_cameras(&pp, 1, 1) < 0) ||
        cap_gen_grow(g, 1, o->progress) < 0) {
        snprintf(res->error, sizeof(res->error), "the stream did not come up");
        goto out;
    }
    cap_gen_join(g); /* the sockets are ours now: blocking I/O on two threads */
    if (cap_gen_stream_sockets(g, 0, &w.fd, &w.ssl, &rec_fd) < 0)
        goto out;
    fcntl(w.fd, F_SETFL, fcntl(w.fd, F_GETFL) & ~O_NONBLOCK);
    fcntl(rec_fd, F_SETFL, fcntl(rec_fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = 2};
    setsockopt(rec_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (w.ssl)
        cr_strlcpy(res->cipher, SSL_CIPHER_standard_name(SSL_get_current_cipher(w.ssl)),
                   sizeof(res->cipher));
    pthread_create(&th, NULL, bulk_write_main, &w);
    started = 1;
    uint64_t t0 = cap_now_ns() + WARMUP_NS, t1 = t0 + (uint64_t)(o->seconds * 1e9);
    for (;;) {
        ssize_t n = recv(rec_fd, buf, sizeof(buf), 0);
        uint64_t now = cap_now_ns();
        if (n <= 0) {
            snprintf(res->error, sizeof(res->error), "the stream stalled or closed");
            break;
        }
        if (ta && now < t1)
            res->bytes += (uint64_t)n;
        if (!ta && now >= t0) {
            peer_sample(&pp, &c0, &rss);
            g0 = cap_self_cpu_s();
            ta = now;
        } else if (ta && now >= t1) {
            peer_sample(&pp, &c1, &rss);
            g1 = cap_self_cpu_s();
            tb = now;
            break;
        }
    }
    atomic_store(&w.stop, 1);
    while (!atomic_load(&w.done) && recv(rec_fd, buf, sizeof(buf), 0) > 0)
        ; /* keep reading so that a blocked write returns */
    cr_strlcpy(res->path, cap_peer_stream_path(&pp), sizeof(res->path));
    if (tb > ta) {
        res->seconds = (double)(tb - ta) / 1e9;
        res->gbps = (double)res->bytes * 8.0 / res->seconds / 1e9;
        res->peer_cpu_pct = 100.0 * (c1 - c0) / res->seconds;
        res->gen_cpu_pct = 100.0 * (g1 - g0) / res->seconds;
        res->cpu_s_per_gb = res->bytes ? (c1 - c0) / ((double)res->bytes / 1e9) : NAN;
    }
    printf("bulk %-14s %8.2f Gbit/s  peer CPU %5.1f%%  %.3f CPU s/GB  generator CPU %5.1f%%%s%s\n",
           cap_peer_names[peer], res->gbps, isfinite(res->peer_cpu_pct) ? res->peer_cpu_pct : 0,
           isfinite(res->cpu_s_per_gb) ? res->cpu_s_per_gb : 0, res->gen_cpu_pct,
           res->error[0] ? "  " : "", res->error);
    fflush(stdout);
out:
    if (started) {
        shutdown(rec_fd, SHUT_RDWR); /* unblocks a writer stuck on a dead peer */
        pthread_join(th, NULL);
        fcntl(w.fd, F_SETFL, fcntl(w.fd, F_GETFL) | O_NONBLOCK); /* close_notify must not block */
    }
    cap_gen_free(g);
    cap_peer_stop(&pp);
}

static void run_idle(struct cap_results *r, const struct verifier *v)
{
    const struct cap_opts *o = r->o;
    struct cap_idle *res = &r->idle;
    struct cap_peer pp = {.pid = -1, .cmd_fd = -1, .rep_fd = -1};
    struct cap_gen *g = NULL;
    double cpu;
    uint32_t n = o->ramp_max;

    res->ran = 1;
    res->requested = n;
    if ((long)n + 512 > r->nofile_soft) { /* one fd per tunnel here, one in the relay */
        n = r->nofile_soft > 1024 ? (uint32_t)(r->nofile_soft - 512) : 100;
        snprintf(res->error, sizeof(res->error), "RLIMIT_NOFILE %ld allows %u tunnels",
                 r->nofile_soft, n);
    }
    if (setup(r, v, CAP_IDLE, CAP_CAMRELAY, n, &g, &pp, res->error, sizeof(res->error)) < 0 ||
        cap_peer_add_cameras(&pp, n, 0) < 0)
        goto out;
    usleep(500000);
    cap_proc_sample(pp.pid, &cpu, &res->rss_base_kb);
    uint64_t t = cap_now_ns();
    if (cap_gen_grow(g, n / 2, o->progress) < 0)
        goto fail;
    res->setup_s = (double)(cap_now_ns() - t) / 1e9;
    sleep(2);
    cap_proc_sample(pp.pid, &cpu, &res->rss_half_kb);
    t = cap_now_ns();
    if (cap_gen_grow(g, n, o->progress) < 0)
        goto fail;
    res->setup_s += (double)(cap_now_ns() - t) / 1e9;
    sleep(2);
    cap_proc_sample(pp.pid, &cpu, &res->rss_full_kb);
    res->tunnels = n;
    res->per_tunnel = (double)(res->rss_full_kb - res->rss_base_kb) * 1024.0 / n;
    res->marginal = (double)(res->rss_full_kb - res->rss_half_kb) * 1024.0 / (n - n / 2);
    printf("idle %u tunnels: relay RSS %.2f KiB per tunnel (%.2f KiB marginal), set up at %.0f/s\n",
           n, res->per_tunnel / 1024.0, res->marginal / 1024.0, n / res->setup_s);
    goto out;
fail:
    snprintf(res->error, sizeof(res->error), "tunnels failed to log in");
out:
    cap_gen_free(g);
    cap_peer_stop(&pp);
}

static void run_handshakes(struct cap_results *r, const struct verifier *v)
{
    const struct cap_opts *o = r->o;
    struct cap_hs *res = &r->hs;
    struct cap_peer pp = {.pid = -1, .cmd_fd = -1, .rep_fd = -1};
    struct cap_gen *g = NULL;
    struct cap_wstats w = {0};
    double c0, c1, g0, g1;
    long rss;
    uint32_t k = o->concurrency, ready, failed;

    res->ran = 1;
    res->concurrency = k;
    if (setup(r, v, CAP_HANDSHAKES, CAP_CAMRELAY, k, &g, &pp, res->error, sizeof(res->error)) < 0 ||
        cap_peer_add_cameras(&pp, k, 0) < 0)
        goto out;
    cap_gen_grow(g, k, 0);
    uint64_t t0 = cap_now_ns() + WARMUP_NS, t1 = t0 + (uint64_t)(o->seconds * 1e9);
    cap_gen_window(g, t0, t1, t1);
    cap_sleep_until(t0);
    peer_sample(&pp, &c0, &rss);
    g0 = cap_self_cpu_s();
    cap_sleep_until(t1);
    peer_sample(&pp, &c1, &rss);
    g1 = cap_self_cpu_s();
    cap_gen_window_wait(g, &w);
    cap_gen_counts(g, &ready, &failed);
    if (failed)
        snprintf(res->error, sizeof(res->error), "%u of %u login loops failed", failed, k);
    res->logins = w.logins;
    res->seconds = o->seconds;
    res->per_s = (double)w.logins / o->seconds;
    res->relay_cpu_s = c1 - c0;
    res->relay_cpu_pct = 100.0 * res->relay_cpu_s / o->seconds;
    res->per_core_s = res->relay_cpu_s > 0 ? (double)w.logins / res->relay_cpu_s : 0;
    res->gen_cpu_pct = 100.0 * (g1 - g0) / o->seconds;
    printf("handshakes: %.0f logins/s, %.0f per relay core-second\n", res->per_s, res->per_core_s);
out:
    cap_gen_free(g);
    cap_peer_stop(&pp);
}

static char *join_args(int argc, char **argv)
{
    size_t len = 1;
    for (int i = 0; i < argc; i++)
        len += strlen(argv[i]) + 1;
    char *s = cr_xcalloc(1, len);
    for (int i = 0; i < argc; i++) {
        strcat(s, argv[i]);
        if (i + 1 < argc)
            strcat(s, " ");
    }
    return s;
}

int main(int argc, char **argv)
{
    struct cap_opts o = {.mode = CAP_PACED, .peers = 1u << CAP_CAMRELAY, .ramp_start = 100,
                         .ramp_max = 100, .fps = 8, .gen_threads = 1, .concurrency = 32,
                         .batch_wait_us = 1000,
                         .kbps = 500, .seconds = 10, .budget_ms = 200};
    struct verifier v;
    int header = 1, rc = 0;

    char *command = join_args(argc, argv); /* before getopt: --ramp is parsed in place */
    if (parse_args(argc, argv, &o) < 0) {
        free(command);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    cr_log_set_level_name("error");
    struct cap_results *r = cr_xcalloc(1, sizeof(*r));
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    r->o = &o;
    r->workers = o.workers ? o.workers : (unsigned)cores;
    r->command = command;
    raise_nofile(r, o.mode == CAP_IDLE ? (uint64_t)o.ramp_max + 1024
                                       : 3 * (uint64_t)o.ramp_max + 1024);
    /* Per stream the relay holds 3 descriptors (tunnel, data connection, recorder; its
     * endpoint listener is a registered file, not a descriptor) and this generator 3 (camera
     * tunnel and data connection, recorder). */
    if (o.mode == CAP_PACED && 3 * (uint64_t)o.ramp_max + 512 > (uint64_t)r->nofile_soft) {
        uint32_t fit = r->nofile_soft > 1024 ? (uint32_t)((r->nofile_soft - 512) / 3) : 64;
        fprintf(stderr, "camrelay-bench: RLIMIT_NOFILE %ld (hard %ld) allows %u streams, not %u: "
                "ramp capped\n", r->nofile_soft, r->nofile_hard, fit, o.ramp_max);
        o.ramp_max = fit;
        o.ramp_start = o.ramp_start < fit ? o.ramp_start : fit;
    }
    printf("camrelay-bench %s: %ld cores, %u relay workers, %u generator threads, "
           "RLIMIT_NOFILE %ld (hard %ld; was %ld/%ld)\n", cap_mode_names[o.mode], cores,
           r->workers, o.gen_threads, r->nofile_soft, r->nofile_hard, r->nofile_soft0,
           r->nofile_hard0);
    fflush(stdout);
    if (cap_peer_certs() < 0) {
        cap_peer_cleanup();
        return 1;
    }
    make_verifier(&v);
    for (int p = 0; p < CAP_N_PEERS; p++) {
        if (!(o.peers & (1u << p)))
            continue;
        if (o.mode == CAP_PACED)
            run_paced(r, &v, p, &header);
        else if (o.mode == CAP_BULK)
            run_bulk(r, &v, p);
        else if (o.mode == CAP_IDLE)
            run_idle(r, &v);
        else
            run_handshakes(r, &v);
        if (r->paced[p].error[0] || r->bulk[p].error[0])
            rc = 1;
    }
    if (r->idle.error[0] || r->hs.error[0])
        rc = 1;
    cap_report_summary(stdout, r);
    if (o.json && cap_report_json(o.json, r) < 0)
        rc = 1;
    if (o.plot && cap_report_svg(o.plot, r) < 0)
        rc = 1;
    cap_peer_cleanup();
    cr_wipe(&v, sizeof(v));
    free(command);
    free(r);
    return rc;
}
