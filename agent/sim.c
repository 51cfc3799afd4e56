/* Simulated camera event loop: one thread, epoll + timerfd, paces RTP for every session. */
#include "agent/sim_int.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* epoll user data: op in bits 56..63, slot generation in 32..55, index in 0..31 */
enum {
    OP_WAKE = AGT_SIM__OP_WAKE,
    OP_TIMER = AGT_SIM__OP_TIMER,
    OP_LISTEN = AGT_SIM__OP_LISTEN,
    OP_SESS = AGT_SIM__OP_SESS,
};

#define NS_PER_S 1000000000ull
#define MAX_BURST 8                  /* overdue frames sent back to back before rebasing */
#define REBASE_NS NS_PER_S           /* further behind than this: restart the clock */
#define STALL_NS (20 * NS_PER_S)     /* output pending without progress: peer is gone */
#define HTTP_TIMEOUT_NS (10 * NS_PER_S)
#define SWEEP_NS NS_PER_S
#define SLACK_NS 500000ull           /* frames due this soon go out now: fewer wakeups */
#define ACCEPT_BATCH 64

static uint64_t ud_make(unsigned op, uint32_t idx, uint32_t gen)
{
    return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffffu) << 32 | idx;
}

static unsigned ud_op(uint64_t ud)
{
    return (unsigned)(ud >> 56);
}

static uint32_t ud_idx(uint64_t ud)
{
    return (uint32_t)ud;
}

static uint32_t ud_gen(uint64_t ud)
{
    return (uint32_t)(ud >> 32) & 0xffffffu;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

uint64_t agt_sim__rand(struct agt_sim *sim)
{
    uint64_t z = (sim->rng += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* ---- output buffer ---- */

size_t agt_sim__header_end(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (p[i] != '\n')
            continue;
        if (i + 1 < len && p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < len && p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
    }
    return 0;
}

static void out_compact(struct agt_sim__obuf *o)
{
    memmove(o->data, o->data + o->head, o->tail - o->head);
    o->tail -= o->head;
    o->head = 0;
}

/* Makes n contiguous bytes available at out.tail while keeping the backlog within limit.
 * Returns where to write, or NULL. Compacts only when the tail would run off the end. */
static uint8_t *out_reserve(struct agt_sim__sess *s, size_t n, size_t limit)
{
    struct agt_sim__obuf *o = &s->out;
    size_t pending = o->tail - o->head;

    if (limit > o->cap)
        limit = o->cap;
    if (n > limit || pending > limit - n)
        return NULL;
    if (o->cap - o->tail < n)
        out_compact(o);
    return o->data + o->tail;
}

static void out_commit(struct agt_sim__sess *s, size_t n)
{
    s->out.tail += n;
    s->queued += n;
}

int agt_sim__append(struct agt_sim__sess *s, const void *p, size_t n)
{
    uint8_t *dst = out_reserve(s, n, s->out.cap);

    if (!dst)
        return -ENOBUFS;
    memcpy(dst, p, n);
    out_commit(s, n);
    return 0;
}

int agt_sim__reply(struct agt_sim__sess *s, const char *fmt, ...)
{
    struct agt_sim__obuf *o = &s->out;
    va_list ap;
    int n;

    if (o->head > 0) /* replies are rare: give them all the room there is */
        out_compact(o);
    va_start(ap, fmt);
    n = vsnprintf((char *)o->data + o->tail, o->cap - o->tail, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->tail)
        return -ENOBUFS;
    out_commit(s, (size_t)n);
    return 0;
}

/* ---- pacing heap (min on due_ns) ---- */

static void heap_set(struct agt_sim *sim, size_t i, struct agt_sim__sess *s)
{
    sim->heap[i] = s;
    s->heap_idx = i;
}

static void heap_up(struct agt_sim *sim, size_t i)
{
    struct agt_sim__sess *s = sim->heap[i];

    while (i > 0 && s->due_ns < sim->heap[(i - 1) / 2]->due_ns) {
        heap_set(sim, i, sim->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(sim, i, s);
}

static void heap_down(struct agt_sim *sim, size_t i)
{
    struct agt_sim__sess *s = sim->heap[i];

    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= sim->heap_len)
            break;
        if (l + 1 < sim->heap_len && sim->heap[l + 1]->due_ns < sim->heap[l]->due_ns)
            m = l + 1;
        if (sim->heap[m]->due_ns >= s->due_ns)
            break;
        heap_set(sim, i, sim->heap[m]);
        i = m;
    }
    heap_set(sim, i, s);
}

static void heap_remove(struct agt_sim *sim, struct agt_sim__sess *s)
{
    size_t i = s->heap_idx;

    if (i == SIZE_MAX)
        return;
    struct agt_sim__sess *last = sim->heap[--sim->heap_len];
    if (i != sim->heap_len) {
        heap_set(sim, i, last);
        heap_up(sim, i);
        heap_down(sim, last->heap_idx);
    }
    s->heap_idx = SIZE_MAX;
}

/* ---- sessions ---- */

static void sess_set_events(struct agt_sim *sim, struct agt_sim__sess *s)
{
    uint32_t ev = (s->rd_shut ? 0 : EPOLLIN | EPOLLRDHUP) |
                  (s->out.tail > s->out.head ? EPOLLOUT : 0);
    struct epoll_event e = {.events = ev, .data.u64 = ud_make(OP_SESS, s->slot, s->gen)};

    if (ev != s->events && epoll_ctl(sim->epfd, EPOLL_CTL_MOD, s->fd, &e) == 0)
        s->events = ev;
}

static void sess_close(struct agt_sim *sim, struct agt_sim__sess *s, const char *why)
{
    struct agt_sim__slot *slot = &sim->slots[s->slot];

    if (s->svc == AGT_SIM_RTSP)
        cr_info("sim: rtsp session ended serial=%s frames_sent=%llu frames_dropped=%llu "
                "bytes=%llu",
                s->serial, (unsigned long long)s->frames_sent,
                (unsigned long long)s->frames_dropped, (unsigned long long)s->written);
    else
        cr_info("sim: http session ended serial=%s status=%d bytes=%llu", s->serial,
                s->http_status, (unsigned long long)s->written);
    cr_debug("sim: session serial=%s closed: %s", s->serial, why);
    heap_remove(sim, s);
    epoll_ctl(sim->epfd, EPOLL_CTL_DEL, s->fd, NULL);
    close(s->fd);
    munmap(s->out.data, s->out.cap);
    slot->s = NULL;
    slot->gen++;
    slot->next_free = sim->free_head;
    sim->free_head = s->slot;
    atomic_fetch_sub(&sim->sessions, 1);
    free(s);
}

/* Writes pending output. Returns 0 (all written or the socket is full) or -errno. */
static int sess_flush(struct agt_sim *sim, struct agt_sim__sess *s)
{
    struct agt_sim__obuf *o = &s->out;

    while (o->head < o->tail) {
        ssize_t n = send(s->fd, o->data + o->head, o->tail - o->head,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        o->head += (size_t)n;
        s->written += (uint64_t)n;
        s->last_tx_ns = sim->now_ns;
        atomic_fetch_add(&sim->bytes_sent, (uint64_t)n);
        while (s->au_count > 0 && s->au_end[s->au_head] <= s->written) {
            s->au_head = (s->au_head + 1) % AGT_SIM__AU_QUEUE;
            s->au_count--;
            s->frames_sent++;
            atomic_fetch_add(&sim->frames_sent, 1);
        }
    }
    if (o->head == o->tail) {
        o->head = o->tail = 0;
        s->last_tx_ns = sim->now_ns;
    }
    sess_set_events(sim, s);
    return 0;
}

static bool sess_finished(const struct agt_sim__sess *s)
{
    return s->close_after_flush && s->out.head == s->out.tail;
}

struct emit_ctx {
    uint8_t channel;
    uint8_t *p;
    size_t left;
};

/* Writes one packet in RTSP interleaved framing: '$', channel, 16-bit length, packet. */
static int emit_interleaved(void *ctx, const uint8_t *hdr, size_t hdr_len, const uint8_t *payload,
                            size_t payload_len)
{
    struct emit_ctx *e = ctx;
    size_t len = hdr_len + payload_len;

    if (4 + len > e->left)
        return -ENOBUFS;
    e->p[0] = '$';
    e->p[1] = e->channel;
    e->p[2] = (uint8_t)(len >> 8);
    e->p[3] = (uint8_t)len;
    memcpy(e->p + 4, hdr, hdr_len);
    memcpy(e->p + 4 + hdr_len, payload, payload_len);
    e->p += 4 + len;
    e->left -= 4 + len;
    return 0;
}

uint32_t agt_sim__next_rtptime(const struct agt_sim *sim, const struct agt_sim__sess *s)
{
    return s->ts_base + (uint32_t)s->ticks + (uint32_t)sim->clip->aus[s->au_idx].cts_offset;
}

/* Queues the due AU whole, or drops it (and everything up to the next keyframe) when the
 * backlog is full: a receiver can decode from a keyframe, not from half a frame. */
static void send_au(struct agt_sim *sim, struct agt_sim__sess *s)
{
    const struct agt_clip *c = sim->clip;
    const struct agt_au *au = &c->aus[s->au_idx];
    const struct agt_nal *nals = agt_clip_au_nals(c, au);
    size_t bytes = 0, packets;
    bool sent = false;

    if ((!s->want_keyframe || au->keyframe) && s->au_count < AGT_SIM__AU_QUEUE &&
        agt_rtp_au_size(&s->rtp, nals, au->nal_count, 4, &bytes, &packets) == 0) {
        struct emit_ctx e = {.channel = s->rtp_channel, .left = bytes};
        e.p = out_reserve(s, bytes, sim->frame_limit);
        if (e.p && agt_rtp_packetize(&s->rtp, nals, au->nal_count,
                                     agt_sim__next_rtptime(sim, s), emit_interleaved, &e) > 0) {
            out_commit(s, bytes);
            s->au_end[(s->au_head + s->au_count) % AGT_SIM__AU_QUEUE] = s->queued;
            s->au_count++;
            s->want_keyframe = false;
            sent = true;
        }
    }
    if (!sent) {
        s->want_keyframe = true;
        s->frames_dropped++;
        atomic_fetch_add(&sim->frames_dropped, 1);
    }
    s->ticks += au->duration;
    if (++s->au_idx == c->n_aus)
        s->au_idx = c->first_keyframe;
    s->due_ns = s->play_ns + s->ticks * 100000 / 9; /* 90 kHz ticks to ns, exact */
}

int agt_sim__play(struct agt_sim *sim, struct agt_sim__sess *s)
{
    if (s->heap_idx != SIZE_MAX)
        return 0;
    if (sim->heap_len == sim->heap_cap) {
        size_t cap = sim->heap_cap ? sim->heap_cap * 2 : 64;
        struct agt_sim__sess **h = realloc(sim->heap, cap * sizeof(*h));
        if (!h)
            return -ENOMEM;
        sim->heap = h;
        sim->heap_cap = cap;
    }
    s->state = AGT_SIM__PLAYING;
    s->play_ns = sim->now_ns - s->ticks * 100000 / 9;
    s->due_ns = sim->now_ns;
    heap_set(sim, sim->heap_len++, s);
    heap_up(sim, s->heap_idx);
    return 0;
}

void agt_sim__stop(struct agt_sim *sim, struct agt_sim__sess *s)
{
    heap_remove(sim, s);
    if (s->state == AGT_SIM__PLAYING)
        s->state = AGT_SIM__READY;
}

static void run_timers(struct agt_sim *sim)
{
    uint64_t horizon = sim->now_ns + SLACK_NS;

    while (sim->heap_len > 0 && sim->heap[0]->due_ns <= horizon) {
        struct agt_sim__sess *s = sim->heap[0];
        for (int i = 0; i < MAX_BURST && s->due_ns <= horizon; i++)
            send_au(sim, s);
        if (s->due_ns + REBASE_NS < sim->now_ns) { /* the loop was starved: resume from now */
            s->play_ns += sim->now_ns - s->due_ns;
            s->due_ns = horizon + 1;
        }
        heap_down(sim, 0);
        int rc = sess_flush(sim, s);
        if (rc < 0)
            sess_close(sim, s, strerror(-rc));
    }
}

static void sess_create(struct agt_sim *sim, int fd, enum agt_sim_service svc, const char *serial)
{
    struct agt_sim__sess *s;
    uint32_t idx;

    if (atomic_load(&sim->sessions) >= AGT_SIM_MAX_SESSIONS) {
        cr_warn("sim: refusing session serial=%s: %u sessions open", serial,
                AGT_SIM_MAX_SESSIONS);
        goto out_close_fd;
    }
    if (sim->free_head == UINT32_MAX && sim->n_slots == sim->cap_slots) {
        uint32_t cap = sim->cap_slots ? sim->cap_slots * 2 : 64;
        struct agt_sim__slot *sl = realloc(sim->slots, cap * sizeof(*sl));
        if (!sl)
            goto out_nomem;
        sim->slots = sl;
        sim->cap_slots = cap;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        goto out_nomem;
    s->out.cap = svc == AGT_SIM_RTSP ? sim->frame_limit + AGT_SIM__CTRL_SLACK : AGT_SIM__HTTP_BUF;
    s->out.data = mmap(NULL, s->out.cap, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s->out.data == MAP_FAILED)
        goto out_free_sess;
    if (sim->free_head != UINT32_MAX) {
        idx = sim->free_head;
        sim->free_head = sim->slots[idx].next_free;
    } else {
        idx = sim->n_slots++;
        sim->slots[idx].gen = 0;
    }
    sim->slots[idx].s = s;
    s->fd = fd;
    s->svc = svc;
    s->slot = idx;
    s->gen = sim->slots[idx].gen;
    s->heap_idx = SIZE_MAX;
    s->au_idx = sim->clip->first_keyframe;
    s->last_rx_ns = s->last_tx_ns = sim->now_ns;
    s->rtp.ssrc = (uint32_t)agt_sim__rand(sim);
    s->rtp.seq = (uint16_t)agt_sim__rand(sim);
    s->rtp.payload_type = 96;
    s->rtp.max_payload = AGT_RTP_DEFAULT_PAYLOAD;
    s->ts_base = (uint32_t)agt_sim__rand(sim);
    snprintf(s->session_id, sizeof(s->session_id), "%016llx",
             (unsigned long long)agt_sim__rand(sim));
    snprintf(s->serial, sizeof(s->serial), "%s", serial);
    s->events = EPOLLIN | EPOLLRDHUP;
    struct epoll_event e = {.events = s->events, .data.u64 = ud_make(OP_SESS, idx, s->gen)};
    if (epoll_ctl(sim->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        cr_err("sim: session serial=%s: epoll_ctl: %s", serial, strerror(errno));
        sim->slots[idx].s = NULL;
        sim->slots[idx].gen++;
        sim->slots[idx].next_free = sim->free_head;
        sim->free_head = idx;
        goto out_unmap;
    }
    atomic_fetch_add(&sim->sessions, 1);
    return;

out_unmap:
    munmap(s->out.data, s->out.cap);
out_free_sess:
    free(s);
out_nomem:
    cr_err("sim: out of memory for session serial=%s", serial);
out_close_fd:
    close(fd);
}

/* Reads what the socket has and lets the protocol handler consume it. */
static int sess_read(struct agt_sim *sim, struct agt_sim__sess *s)
{
    if (s->close_after_flush)
        s->in_len = 0; /* final reply queued: whatever else the peer says is moot */
    if (s->in_len == sizeof(s->in))
        return -EMSGSIZE;
    ssize_t n = recv(s->fd, s->in + s->in_len, sizeof(s->in) - s->in_len, MSG_DONTWAIT);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
    if (n == 0) {
        if (!s->close_after_flush)
            return -ECONNRESET;
        s->rd_shut = true; /* e.g. an HTTP client that half-closed after its request */
        return 0;
    }
    s->in_len += (size_t)n;
    return s->svc == AGT_SIM_RTSP ? agt_sim__rtsp_input(sim, s) : agt_sim__http_input(sim, s);
}

static void sess_io(struct agt_sim *sim, struct agt_sim__sess *s, uint32_t events)
{
    int rc = 0;

    if (events & EPOLLERR) {
        sess_close(sim, s, "socket error");
        return;
    }
    if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) && !s->rd_shut)
        rc = sess_read(sim, s);
    if (rc == 0)
        rc = sess_flush(sim, s);
    if (rc < 0)
        sess_close(sim, s, strerror(-rc));
    else if (sess_finished(s))
        sess_close(sim, s, "reply sent");
    else if ((events & EPOLLHUP) && s->rd_shut)
        sess_close(sim, s, "peer hung up");
}

/* Idle, stalled and half-open sessions are closed; paused listeners are re-armed. */
static void sweep(struct agt_sim *sim)
{
    uint64_t now = sim->now_ns;

    for (uint32_t i = 0; i < sim->n_slots; i++) {
        struct agt_sim__sess *s = sim->slots[i].s;
        if (!s)
            continue;
        if (s->out.tail > s->out.head && now - s->last_tx_ns > STALL_NS)
            sess_close(sim, s, "peer stopped reading");
        else if (s->svc == AGT_SIM_HTTP && now - s->last_rx_ns > HTTP_TIMEOUT_NS)
            sess_close(sim, s, "http request timeout");
        else if (s->svc == AGT_SIM_RTSP && s->state != AGT_SIM__PLAYING &&
                 now - s->last_rx_ns > AGT_SIM__SESSION_TIMEOUT_S * NS_PER_S)
            sess_close(sim, s, "rtsp session timeout");
    }
    for (unsigned i = 0; i < sim->n_listeners; i++) {
        struct agt_sim__listener *l = &sim->listeners[i];
        struct epoll_event e = {.events = EPOLLIN, .data.u64 = ud_make(OP_LISTEN, i, 0)};
        if (l->paused && epoll_ctl(sim->epfd, EPOLL_CTL_MOD, l->fd, &e) == 0)
            l->paused = false;
    }
}

static void accept_batch(struct agt_sim *sim, uint32_t idx)
{
    struct agt_sim__listener *l = &sim->listeners[idx];

    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int one = 1, fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                struct epoll_event e = {.events = 0, .data.u64 = ud_make(OP_LISTEN, idx, 0)};
                cr_warn("sim: accept: %s; pausing the listener for a second", strerror(errno));
                if (epoll_ctl(sim->epfd, EPOLL_CTL_MOD, l->fd, &e) == 0)
                    l->paused = true;
            } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
                cr_err("sim: accept: %s", strerror(errno));
            }
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        sess_create(sim, fd, l->svc, sim->name);
    }
}

/* Picks up sockets handed over by other threads. Returns true when the sim is stopping. */
static bool take_pending(struct agt_sim *sim)
{
    struct agt_sim__pending *p, *next;
    uint64_t v;
    bool stopping;

    if (read(sim->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
        cr_err("sim: wake eventfd: %s", strerror(errno));
    pthread_mutex_lock(&sim->lock);
    p = sim->pending;
    sim->pending = NULL;
    sim->pending_tail = &sim->pending;
    stopping = sim->stopping;
    pthread_mutex_unlock(&sim->lock);
    for (; p; p = next) {
        next = p->next;
        if (stopping) {
            close(p->fd);
        } else if (!p->listener) {
            sess_create(sim, p->fd, p->svc, p->serial);
        } else {
            uint32_t i = sim->n_listeners;
            struct epoll_event e = {.events = EPOLLIN, .data.u64 = ud_make(OP_LISTEN, i, 0)};
            if (i < AGT_SIM__MAX_LISTENERS && epoll_ctl(sim->epfd, EPOLL_CTL_ADD, p->fd, &e) == 0) {
                sim->listeners[i] = (struct agt_sim__listener){.fd = p->fd, .svc = p->svc};
                sim->n_listeners++;
            } else {
                cr_err("sim: cannot watch listener: %s", strerror(errno));
                close(p->fd);
            }
        }
        free(p);
    }
    return stopping;
}

static void arm_timer(struct agt_sim *sim)
{
    uint64_t next = sim->next_sweep_ns;

    if (sim->heap_len > 0 && sim->heap[0]->due_ns < next)
        next = sim->heap[0]->due_ns;
    if (next == sim->armed_ns)
        return;
    struct itimerspec its = {.it_value = {.tv_sec = (time_t)(next / NS_PER_S),
                                          .tv_nsec = (long)(next % NS_PER_S)}};
    if (timerfd_settime(sim->timerfd, TFD_TIMER_ABSTIME, &its, NULL) == 0)
        sim->armed_ns = next;
}

void *agt_sim__loop(void *arg)
{
    struct agt_sim *sim = arg;
    struct epoll_event evs[128];
    bool stopping = false;

    sim->now_ns = mono_ns();
    sim->next_sweep_ns = sim->now_ns + SWEEP_NS;
    arm_timer(sim);
    while (!stopping) {
        int n = epoll_wait(sim->epfd, evs, 128, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cr_err("sim: epoll_wait: %s; simulator stops", strerror(errno));
            break;
        }
        sim->now_ns = mono_ns();
        for (int i = 0; i < n; i++) {
            uint64_t ud = evs[i].data.u64, v;
            struct agt_sim__sess *s;

            switch (ud_op(ud)) {
            case OP_WAKE:
                stopping |= take_pending(sim);
                break;
            case OP_TIMER:
                if (read(sim->timerfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                    cr_err("sim: timerfd: %s", strerror(errno));
                sim->armed_ns = 0;
                break;
            case OP_LISTEN:
                if (ud_idx(ud) < sim->n_listeners)
                    accept_batch(sim, ud_idx(ud));
                break;
            case OP_SESS:
                if (ud_idx(ud) >= sim->n_slots)
                    break;
                s = sim->slots[ud_idx(ud)].s;
                if (s && (sim->slots[ud_idx(ud)].gen & 0xffffffu) == ud_gen(ud))
                    sess_io(sim, s, evs[i].events);
                break;
            }
        }
        if (stopping)
            break;
        sim->now_ns = mono_ns();
        run_timers(sim);
        if (sim->now_ns >= sim->next_sweep_ns) {
            sweep(sim);
            sim->next_sweep_ns = sim->now_ns + SWEEP_NS;
        }
        arm_timer(sim);
    }
    for (uint32_t i = 0; i < sim->n_slots; i++)
        if (sim->slots[i].s)
            sess_close(sim, sim->slots[i].s, "simulator stopping");
    for (unsigned i = 0; i < sim->n_listeners; i++)
        close(sim->listeners[i].fd);
    sim->n_listeners = 0;
    return NULL;
}
