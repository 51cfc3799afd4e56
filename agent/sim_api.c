/* Simulated camera lifecycle: create/destroy, handing sockets to the loop, listeners, stats. */
#include "agent/sim.h"

#include "agent/sim_int.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Same encoding as the loop's (sim.c): op in the top byte. */
#define UD_TIMER ((uint64_t)AGT_SIM__OP_TIMER << 56)
#define UD_WAKE ((uint64_t)AGT_SIM__OP_WAKE << 56)

/* Serials and names go into log lines, SDP, HTML and JSON unescaped: keep them plain. */
static bool valid_label(const char *s, size_t max)
{
    size_t n = 0;

    for (; s[n]; n++) {
        char c = s[n];
        if (n >= max || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
                          c == '-'))
            return false;
    }
    return n > 0;
}

static int enqueue(struct agt_sim *sim, struct agt_sim__pending *p)
{
    uint64_t one = 1;

    pthread_mutex_lock(&sim->lock);
    if (sim->stopping || (p->listener && sim->listeners_requested >= AGT_SIM__MAX_LISTENERS)) {
        int rc = sim->stopping ? -ESHUTDOWN : -ENOSPC;
        pthread_mutex_unlock(&sim->lock);
        return rc;
    }
    if (p->listener)
        sim->listeners_requested++;
    *sim->pending_tail = p;
    sim->pending_tail = &p->next;
    pthread_mutex_unlock(&sim->lock);
    if (write(sim->wakefd, &one, sizeof(one)) < 0)
        cr_err("sim: wake eventfd: %s", strerror(errno));
    return 0;
}

int agt_sim_serve_fd(struct agt_sim *sim, int fd, enum agt_sim_service svc, const char *serial)
{
    struct agt_sim__pending *p;
    int type = 0, one = 1, rc, fl;
    socklen_t tl = sizeof(type);

    if (fd < 0)
        return -EINVAL;
    if (!sim || (svc != AGT_SIM_RTSP && svc != AGT_SIM_HTTP) ||
        (serial && !valid_label(serial, AGT_SIM_SERIAL_MAX))) {
        rc = -EINVAL;
        goto out_close_fd;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0) {
        rc = -errno;
        goto out_close_fd;
    }
    if (type != SOCK_STREAM) {
        rc = -EINVAL;
        goto out_close_fd;
    }
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        rc = -errno;
        goto out_close_fd;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on AF_UNIX: fine */
    p = calloc(1, sizeof(*p));
    if (!p) {
        rc = -ENOMEM;
        goto out_close_fd;
    }
    p->fd = fd;
    p->svc = svc;
    snprintf(p->serial, sizeof(p->serial), "%s", serial ? serial : sim->name);
    rc = enqueue(sim, p);
    if (rc)
        goto out_free_pending;
    return 0;

out_free_pending:
    free(p);
out_close_fd:
    close(fd);
    return rc;
}

/* Splits "host:port" / "[v6]:port" / ":port" into its parts (host "" means any address). */
static int split_host_port(const char *hp, char *host, size_t host_cap, char *port, size_t port_cap)
{
    const char *colon, *h = hp, *hend;

    if (hp[0] == '[') {
        hend = strchr(hp, ']');
        if (!hend || hend[1] != ':')
            return -EINVAL;
        h = hp + 1;
        colon = hend + 1;
    } else {
        colon = strrchr(hp, ':');
        if (!colon)
            return -EINVAL;
        hend = colon;
    }
    size_t hl = (size_t)(hend - h), pl = strlen(colon + 1);
    if (hl >= host_cap || pl == 0 || pl >= port_cap || strspn(colon + 1, "0123456789") != pl ||
        strtoul(colon + 1, NULL, 10) > 65535)
        return -EINVAL;
    memcpy(host, h, hl);
    host[hl] = '\0';
    memcpy(port, colon + 1, pl + 1);
    return 0;
}

int agt_sim_listen(struct agt_sim *sim, enum agt_sim_service svc, const char *host_port,
                   uint16_t *bound_port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    struct agt_sim__pending *p;
    char host[256], port[8];
    int fd, one = 1, rc;

    if (!sim || !host_port || (svc != AGT_SIM_RTSP && svc != AGT_SIM_HTTP) ||
        split_host_port(host_port, host, sizeof(host), port, sizeof(port)) < 0) {
        cr_err("sim: bad listen address '%s' (want host:port)", host_port ? host_port : "");
        return -EINVAL;
    }
    rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc) {
        cr_err("sim: cannot resolve listen address %s: %s", host_port, gai_strerror(rc));
        return -EINVAL;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        goto out_free_ai;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        rc = -errno;
        goto out_close_fd;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        rc = -ENOMEM;
        goto out_close_fd;
    }
    p->fd = fd;
    p->svc = svc;
    p->listener = true;
    rc = enqueue(sim, p);
    if (rc) {
        free(p);
        goto out_close_fd;
    }
    if (bound_port)
        *bound_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                     : ((struct sockaddr_in *)&ss)->sin_port);
    cr_info("sim: %s listening on %s (port %u)", svc == AGT_SIM_RTSP ? "rtsp" : "http",
            host_port,
            ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                           : ((struct sockaddr_in *)&ss)->sin_port));
    freeaddrinfo(ai);
    return 0;

out_close_fd:
    close(fd);
out_free_ai:
    cr_err("sim: cannot listen on %s: %s", host_port, strerror(-rc));
    freeaddrinfo(ai);
    return rc;
}

static int sys_fail(const char *what)
{
    int rc = -errno;

    cr_err("sim: %s: %s", what, strerror(-rc));
    return rc;
}

/* Largest AU on the wire, so a clip with huge keyframes still fits the backlog limit. */
static size_t largest_au_bytes(const struct agt_clip *c)
{
    struct agt_rtp rtp = {.payload_type = 96, .max_payload = AGT_RTP_DEFAULT_PAYLOAD};
    size_t max = 0, bytes, packets;

    for (size_t i = 0; i < c->n_aus; i++)
        if (agt_rtp_au_size(&rtp, agt_clip_au_nals(c, &c->aus[i]), c->aus[i].nal_count, 4,
                            &bytes, &packets) == 0 &&
            bytes > max)
            max = bytes;
    return max;
}

int agt_sim_create(const struct agt_sim_config *cfg, struct agt_sim **out)
{
    struct agt_sim *sim;
    sigset_t all, old;
    int rc;

    if (!cfg || !out || !cfg->clip_path ||
        (cfg->name && !valid_label(cfg->name, AGT_SIM_NAME_MAX))) {
        cr_err("sim: bad configuration (clip path missing or name not 1..%d of [A-Za-z0-9._:-])",
               AGT_SIM_NAME_MAX);
        return -EINVAL;
    }
    *out = NULL;
    sim = calloc(1, sizeof(*sim));
    if (!sim) {
        cr_err("sim: out of memory");
        return -ENOMEM;
    }
    snprintf(sim->name, sizeof(sim->name), "%s", cfg->name ? cfg->name : "camrelay-sim");
    if (getrandom(&sim->rng, sizeof(sim->rng), GRND_NONBLOCK) != sizeof(sim->rng))
        sim->rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)sim;
    rc = agt_clip_load(cfg->clip_path, cfg->fps, &sim->clip);
    if (rc)
        goto out_free_sim;
    rc = agt_sim__rtsp_build_sdp(sim, agt_sim__rand(sim) >> 1);
    if (rc) {
        cr_err("sim: clip %s: cannot describe it in SDP: %s", cfg->clip_path, strerror(-rc));
        goto out_free_clip;
    }
    sim->frame_limit = largest_au_bytes(sim->clip) + (64u << 10);
    if (sim->frame_limit < AGT_SIM__FRAME_BUF)
        sim->frame_limit = AGT_SIM__FRAME_BUF;
    sim->free_head = UINT32_MAX;
    sim->pending_tail = &sim->pending;
    sim->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sim->epfd < 0) {
        rc = sys_fail("epoll_create1");
        goto out_free_sdp;
    }
    sim->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (sim->timerfd < 0) {
        rc = sys_fail("timerfd_create");
        goto out_close_epfd;
    }
    sim->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (sim->wakefd < 0) {
        rc = sys_fail("eventfd");
        goto out_close_timerfd;
    }
    struct epoll_event te = {.events = EPOLLIN, .data.u64 = UD_TIMER};
    struct epoll_event we = {.events = EPOLLIN, .data.u64 = UD_WAKE};
    if (epoll_ctl(sim->epfd, EPOLL_CTL_ADD, sim->timerfd, &te) < 0 ||
        epoll_ctl(sim->epfd, EPOLL_CTL_ADD, sim->wakefd, &we) < 0) {
        rc = sys_fail("epoll_ctl");
        goto out_close_wakefd;
    }
    rc = -pthread_mutex_init(&sim->lock, NULL);
    if (rc) {
        cr_err("sim: pthread_mutex_init: %s", strerror(-rc));
        goto out_close_wakefd;
    }
    /* signals stay with the application's threads, never this one */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = -pthread_create(&sim->thread, NULL, agt_sim__loop, sim);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        cr_err("sim: pthread_create: %s", strerror(-rc));
        goto out_destroy_lock;
    }
    cr_info("sim: clip %s: %ux%u H.264 %.3f fps, %zu frames, %.1f s", cfg->clip_path,
            sim->clip->info.width, sim->clip->info.height, sim->clip->fps, sim->clip->n_aus,
            (double)sim->clip->duration_90k / 90000.0);
    *out = sim;
    return 0;

out_destroy_lock:
    pthread_mutex_destroy(&sim->lock);
out_close_wakefd:
    close(sim->wakefd);
out_close_timerfd:
    close(sim->timerfd);
out_close_epfd:
    close(sim->epfd);
out_free_sdp:
    free(sim->sdp);
out_free_clip:
    agt_clip_free(sim->clip);
out_free_sim:
    free(sim);
    return rc;
}

void agt_sim_destroy(struct agt_sim *sim)
{
    struct agt_sim__pending *p, *next;
    uint64_t one = 1;

    if (!sim)
        return;
    pthread_mutex_lock(&sim->lock);
    sim->stopping = true;
    pthread_mutex_unlock(&sim->lock);
    if (write(sim->wakefd, &one, sizeof(one)) < 0)
        cr_err("sim: wake eventfd: %s", strerror(errno));
    pthread_join(sim->thread, NULL);
    for (p = sim->pending; p; p = next) { /* handed over after the loop's last look */
        next = p->next;
        close(p->fd);
        free(p);
    }
    close(sim->wakefd);
    close(sim->timerfd);
    close(sim->epfd);
    pthread_mutex_destroy(&sim->lock);
    free(sim->heap);
    free(sim->slots);
    free(sim->sdp);
    agt_clip_free(sim->clip);
    free(sim);
}

uint64_t agt_sim_frames_sent_total(const struct agt_sim *sim)
{
    return sim ? atomic_load(&sim->frames_sent) : 0;
}

void agt_sim_get_stats(const struct agt_sim *sim, struct agt_sim_stats *out)
{
    out->frames_sent = atomic_load(&sim->frames_sent);
    out->frames_dropped = atomic_load(&sim->frames_dropped);
    out->bytes_sent = atomic_load(&sim->bytes_sent);
    out->sessions = atomic_load(&sim->sessions);
}

const struct agt_clip *agt_sim_clip(const struct agt_sim *sim)
{
    return sim->clip;
}
