/* camrelay-agent life cycle: build the cameras, start and stop the threads, report status. */
#include "agent/agent.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_t.h"
#include "agent/sim.h"
#include "agent/tunnel.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/util.h"

#define MAX_LOOPS 4
#define CAMS_PER_LOOP_MIN 64
#define MAX_DIALERS 16

struct spawn {
    struct agt_agent *a;
    void *(*fn)(void *);
    void *arg;
};

static void *spawn_main(void *p)
{
    struct spawn s = *(struct spawn *)p;
    free(p);
    s.fn(s.arg);
    pthread_mutex_lock(&s.a->life_mu);
    if (--s.a->threads_alive == 0)
        pthread_cond_broadcast(&s.a->life_cv);
    pthread_mutex_unlock(&s.a->life_mu);
    return NULL;
}

int agt__spawn(struct agt_agent *a, void *(*fn)(void *), void *arg)
{
    struct spawn *s = cr_xmalloc(sizeof(*s));
    pthread_t t;

    s->a = a;
    s->fn = fn;
    s->arg = arg;
    pthread_mutex_lock(&a->life_mu);
    a->threads_alive++;
    pthread_mutex_unlock(&a->life_mu);
    int rc = pthread_create(&t, &a->detached_attr, spawn_main, s);
    if (rc != 0) {
        pthread_mutex_lock(&a->life_mu);
        a->threads_alive--;
        pthread_mutex_unlock(&a->life_mu);
        free(s);
        return -rc;
    }
    return 0;
}

/* The state directory is created if missing (one level); a failure only costs the cache. */
static void prepare_state_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0) {
        if (!S_ISDIR(st.st_mode))
            cr_warn("--state-dir %s is not a directory: relay addresses will not be cached", dir);
        return;
    }
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        cr_warn("cannot create --state-dir %s: %s: relay addresses will not be cached", dir,
                strerror(errno));
}

static unsigned count_loops(unsigned n_cams)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned n = n_cams / CAMS_PER_LOOP_MIN + 1;
    if (cpus > 0 && n > (unsigned long)cpus)
        n = (unsigned)cpus;
    if (n > MAX_LOOPS)
        n = MAX_LOOPS;
    return n ? n : 1;
}

int agt_agent_create(const struct agt_config *cfg, struct agt_agent **out, char *err,
                     size_t errlen)
{
    struct agt_agent *a = cr_xcalloc(1, sizeof(*a));
    int rc;

    a->cfg = cfg;
    a->stop_fd = -1;
    pthread_mutex_init(&a->life_mu, NULL);
    pthread_cond_init(&a->life_cv, NULL);
    pthread_attr_init(&a->detached_attr);
    pthread_attr_setstacksize(&a->detached_attr, AGT_THREAD_STACK);
    pthread_attr_setdetachstate(&a->detached_attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_init(&a->joinable_attr);
    pthread_attr_setstacksize(&a->joinable_attr, AGT_THREAD_STACK);

    a->tls = cr_tls_client_ctx(cfg->ca, err, errlen);
    if (!a->tls) {
        rc = -EINVAL;
        goto out_destroy;
    }
    a->secret.oak = cfg->oak;
    a->secret.user = cfg->user;
    a->secret.password = cfg->password;
    a->n_svc = cfg->n_svc;
    for (unsigned i = 0; i < cfg->n_svc; i++)
        a->svc_names[i] = cfg->svc[i].name;
    a->durable_cache = cfg->simulate == 0; /* simulated cameras need no fsync per camera */
    prepare_state_dir(cfg->state_dir);

    a->n_cams = cfg->simulate > 0 ? (unsigned)cfg->simulate : 1;
    a->cams = cr_xcalloc(a->n_cams, sizeof(*a->cams));
    int width = cfg->simulate > 9999 ? 6 : 4;
    for (unsigned i = 0; i < a->n_cams; i++) {
        struct agt_cam *c = &a->cams[i];
        if (cfg->simulate > 0)
            snprintf(c->serial, sizeof(c->serial), "%s-%0*u", cfg->serial, width, i + 1);
        else
            cr_strlcpy(c->serial, cfg->serial, sizeof(c->serial));
        c->index = i;
        c->agent = a;
        c->link.fd = -1;
        c->auth.secret = a->secret;
        int n = agt_cache_load(cfg->state_dir, c->serial, c->relays, AGT_MAX_RELAYS);
        c->n_relays = n > 0 ? (unsigned)n : 0;
        if (c->n_relays)
            cr_strlcpy(c->shown_relay, c->relays[0], sizeof(c->shown_relay));
    }

    if (cfg->simulate > 0) {
        struct agt_sim_config sc = {
            .clip_path = cfg->sim_clip,
            .fps = (double)cfg->sim_fps,
            .name = "camrelay-sim",
        };
        rc = agt_sim_create(&sc, &a->sim);
        if (rc < 0) {
            snprintf(err, errlen, "cannot start the camera simulator with %s: %s",
                     cfg->sim_clip, strerror(-rc));
            goto out_destroy;
        }
    }
    a->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (a->stop_fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "eventfd: %s", strerror(-rc));
        goto out_destroy;
    }
    rc = agt_tunnel_init(a, count_loops(a->n_cams));
    if (rc < 0) {
        snprintf(err, errlen, "cannot set up the tunnel loops: %s", strerror(-rc));
        goto out_destroy;
    }
    *out = a;
    return 0;

out_destroy:
    agt_agent_destroy(a);
    return rc;
}

int agt_agent_start(struct agt_agent *a)
{
    unsigned dialers = a->n_cams < MAX_DIALERS ? a->n_cams : MAX_DIALERS;
    int rc = agt_tunnel_start(a, dialers);
    if (rc < 0) {
        cr_err("cannot start the agent's threads: %s", strerror(-rc));
        return rc;
    }
    cr_info("%s: %u camera%s, %u loop thread%s, %u dialer%s; %s", AGT_VERSION, a->n_cams,
            a->n_cams == 1 ? "" : "s", a->n_loops, a->n_loops == 1 ? "" : "s", dialers,
            dialers == 1 ? "" : "s",
            a->cfg->connect ? "phoning home now (--connect)" : "waiting for the button");
    if (a->cfg->data_plain)
        cr_info("data connections are plaintext (data-plain): the relay must allow them "
                "(allow-plain-data); stream bytes are then as private as the link to the relay");
    if (a->cfg->connect)
        agt_agent_press(a);
    return 0;
}

int agt_agent_press(struct agt_agent *a)
{
    if (atomic_exchange(&a->pressed, 1))
        return 0;
    cr_info("button pressed: %u camera%s phoning home", a->n_cams, a->n_cams == 1 ? "" : "s");
    agt_tunnel_press(a);
    return 1;
}

unsigned agt_agent_n_cameras(const struct agt_agent *a)
{
    return a->n_cams;
}

char *agt_agent_status(struct agt_agent *a, size_t *len)
{
    size_t line = AGT_SERIAL_MAX + CR_ADDR_STRLEN + AGT_ERR_MAX + 32;
    size_t cap = (size_t)a->n_cams * line + 1, n = 0;
    char *buf = cr_xmalloc(cap);

    buf[0] = '\0';
    for (unsigned i = 0; i < a->n_cams; i++) {
        struct agt_cam *c = &a->cams[i];
        char relay[CR_ADDR_STRLEN], err[AGT_ERR_MAX];
        enum agt_cam_state st;
        pthread_mutex_lock(&c->loop->mu);
        st = c->state;
        memcpy(relay, c->shown_relay, sizeof(relay));
        memcpy(err, c->last_error, sizeof(err));
        pthread_mutex_unlock(&c->loop->mu);
        int w = snprintf(buf + n, cap - n, "%s %s %s %s\n", c->serial, agt_cam_state_name(st),
                         relay[0] ? relay : "-", err[0] ? err : "-");
        if (w > 0)
            n += (size_t)w < cap - n ? (size_t)w : cap - n - 1;
    }
    *len = n;
    return buf;
}

int agt_agent_stop(struct agt_agent *a)
{
    uint64_t one = 1;
    struct timespec deadline;
    int rc = 0;

    atomic_store(&a->stopping, 1);
    ssize_t w = write(a->stop_fd, &one, sizeof(one));
    (void)w;
    agt_tunnel_stop(a);

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += AGT_STOP_WAIT_MS / 1000;
    deadline.tv_nsec += (AGT_STOP_WAIT_MS % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&a->life_mu);
    while (a->threads_alive > 0 && rc == 0)
        rc = -pthread_cond_timedwait(&a->life_cv, &a->life_mu, &deadline);
    unsigned left = a->threads_alive;
    pthread_mutex_unlock(&a->life_mu);
    if (left) {
        cr_info("stopping with %u connect%s or stream%s still finishing", left,
                left == 1 ? "" : "s", left == 1 ? "" : "s");
        return -ETIMEDOUT;
    }
    return 0;
}

void agt_agent_destroy(struct agt_agent *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->life_mu);
    unsigned left = a->threads_alive;
    pthread_mutex_unlock(&a->life_mu);
    if (left)
        return; /* threads still use it: the process exit reclaims everything */
    if (a->loops)
        agt_tunnel_fini(a);
    for (unsigned i = 0; a->cams && i < a->n_cams; i++)
        cr_auth_client_forget(&a->cams[i].auth);
    agt_sim_destroy(a->sim);
    if (a->tls)
        SSL_CTX_free(a->tls);
    if (a->stop_fd >= 0)
        close(a->stop_fd);
    pthread_attr_destroy(&a->detached_attr);
    pthread_attr_destroy(&a->joinable_attr);
    pthread_mutex_destroy(&a->life_mu);
    pthread_cond_destroy(&a->life_cv);
    free(a->cams);
    free(a);
}
