/* The relay worker: one io_uring, its connection slots, its cameras, one CQE dispatcher. */
#include "relay/worker.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/frame.h"
#include "common/util.h"
#include "relay/uring_compat.h"

#define RING_ENTRIES 4096
/* A batch worth waking up for: a wait ends after this many completions or batch_wait_us,
 * whichever comes first, so the busier the worker the shorter the wait. 8 kept the CPU of
 * 3,500 paced streams where 32 had it and cut their p99 from 4.6 to 1.3 ms. */
#define RLY_BATCH_CQES 8
#define RLY_BATCH_MIN_STREAMS 32 /* fewer streams (bulk ones) would each pay the wait */
/* Completions per second above which gathering batches pays. Every wake-up of a sleeping
 * worker costs a context switch, which profiles of 1,000 paced camera streams showed to be
 * the largest single cost (a quarter of the relay's CPU); from about 1,000 frames a second a
 * 1 ms batch handles several of them per wake-up. */
#define RLY_BATCH_MIN_RATE 2000

void *rly__pool_get(struct rly_worker *w, struct rly_pool *p, size_t size)
{
    void *mem = NULL;
    if (p->n_free)
        mem = p->free[--p->n_free];
    else if (p->n_made < p->limit && (mem = malloc(size))) /* made once, then recycled */
        p->n_made++;
    if (!mem)
        atomic_fetch_add_explicit(&w->relay->counters.buffers_exhausted, 1,
                                  memory_order_relaxed);
    return mem;
}

void rly__pool_put(struct rly_pool *p, void *mem)
{
    p->free[p->n_free++] = mem; /* free[] holds `limit` entries: never overflows */
}

int rly__buf_take(struct rly_worker *w, struct rly_buf *b)
{
    if (b->mem)
        return 0;
    b->mem = rly__pool_get(w, &w->pool, RLY_BUF_SIZE);
    if (!b->mem)
        return -ENOBUFS;
    b->cap = RLY_BUF_SIZE;
    b->off = b->len = 0;
    return 0;
}

static void buf_release(struct rly_worker *w, struct rly_buf *b)
{
    if (!b->mem)
        return;
    rly__pool_put(&w->pool, b->mem);
    b->mem = NULL;
    b->off = b->len = b->cap = 0;
}

void rly__buf_give(struct rly_worker *w, struct rly_buf *b)
{
    if (b->len == 0)
        buf_release(w, b);
}

/* Gets an SQE, flushing the submission queue when it is full. */
static struct io_uring_sqe *get_sqe(struct rly_worker *w)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (!sqe) {
        io_uring_submit(&w->ring);
        sqe = io_uring_get_sqe(&w->ring);
    }
    return sqe; /* cannot be NULL right after a submit of a full queue */
}

static int is_listener(const struct rly_conn *c)
{
    return c->kind == RLY_CONN_LISTEN_ENDPOINT || c->kind == RLY_CONN_LISTEN_EXTERNAL;
}

/* Before a slot changes hands, or a descriptor is closed that queued SQEs may name: the
 * kernel resolves a file when it issues a request, so whatever is queued is submitted while
 * the slot or descriptor is still its owner's. 0 when nothing is left queued; -1 when the
 * kernel took only part (the slot or descriptor must then stay as it is). This holds as long
 * as no SQE is issued after its submission: no IOSQE_IO_LINK, IOSQE_ASYNC or IOSQE_IO_DRAIN
 * on an SQE that names a connection's file. */
static int submit_queued(struct rly_worker *w)
{
    io_uring_submit(&w->ring);
    return io_uring_sq_ready(&w->ring) == 0 ? 0 : -1;
}

/* A slot for a listener when every slot is taken: one held by a connection. The connection
 * keeps its descriptor and goes on through it; the listener, once registered, closes its own
 * (listener_settle). So when the kernel allows fewer slots than connections (a low hard
 * RLIMIT_NOFILE), the table goes to listeners first: each one there is a descriptor saved,
 * while a connection there only saves a look-up per operation. -1 when only listeners hold
 * slots. */
static int32_t slot_evict(struct rly_worker *w)
{
    if (!w->n_slot_conns || submit_queued(w) < 0)
        return -1;
    for (;;) { /* ends: n_slot_conns says a connection holds a slot */
        uint32_t s = w->slot_scan;
        w->slot_scan = s + 1 < w->n_fixed ? s + 1 : 0;
        int32_t owner = w->slot_conn[s];
        if (owner >= 0 && !is_listener(&w->conns[owner])) {
            w->conns[owner].fixed = 0;
            w->slot_conn[s] = -1;
            w->n_slot_conns--;
            return (int32_t)s;
        }
    }
}

/* Puts c's socket into one of the ring's registered files: operations then name the slot
 * (IOSQE_FIXED_FILE), which spares the kernel a descriptor-table look-up and a reference
 * count per operation. Without a slot (the table is full, or registration failed) c works
 * through its descriptor. Worker thread only: a SINGLE_ISSUER ring takes registrations from
 * its own thread. */
static void conn_register(struct rly_worker *w, struct rly_conn *c)
{
    if (c->fd < 0 || !w->n_fixed)
        return;
    int32_t slot = w->n_slot_free ? (int32_t)w->slot_free[--w->n_slot_free]
                   : is_listener(c) ? slot_evict(w)
                                    : -1;
    if (slot < 0)
        return;
    if (io_uring_register_files_update(&w->ring, (unsigned)slot, &c->fd, 1) != 1) {
        int none = -1; /* an evicted slot may still hold its last owner's socket open */
        io_uring_register_files_update(&w->ring, (unsigned)slot, &none, 1);
        w->slot_free[w->n_slot_free++] = (uint32_t)slot;
        return;
    }
    c->fixed = 1;
    c->slot = (uint32_t)slot;
    w->slot_conn[slot] = rly__idx(w, c);
    w->n_slot_conns += !is_listener(c);
}

/* Takes c's socket out of the registered files. No SQE naming the slot can still be queued:
 * a connection is freed only once its operations have completed, and a closing listener
 * submits what is queued first (rly__conn_close). */
static void conn_unregister(struct rly_worker *w, struct rly_conn *c)
{
    int none = -1;
    if (c->fixed) {
        io_uring_register_files_update(&w->ring, c->slot, &none, 1);
        w->slot_conn[c->slot] = -1;
        w->slot_free[w->n_slot_free++] = c->slot;
        w->n_slot_conns -= !is_listener(c);
    }
    c->fixed = 0;
}

/* An endpoint listener in the registered files keeps only that file: its descriptor goes.
 * One left out (the table was full of listeners) is counted for promote_listeners. */
static void listener_settle(struct rly_worker *w, struct rly_conn *l)
{
    if (l->fixed) {
        close(l->fd);
        l->fd = -1;
    } else if (w->n_fixed) {
        w->n_unslotted++;
    }
}

/* Endpoint listeners that kept their descriptor because the table was full of listeners
 * move into slots that have come free since, and close the descriptor: the table still goes
 * to listeners first once the pressure has passed. Between completion batches. */
static void promote_listeners(struct rly_worker *w)
{
    for (uint32_t seen = 0; seen < w->n_conns && w->n_unslotted && w->n_slot_free; seen++) {
        struct rly_conn *l = &w->conns[w->promote_scan];
        w->promote_scan = w->promote_scan + 1 < w->n_conns ? w->promote_scan + 1 : 0;
        if (l->kind != RLY_CONN_LISTEN_ENDPOINT || l->fixed || l->fd < 0 || l->closing)
            continue;
        if (submit_queued(w) < 0) /* a queued accept may still name the descriptor */
            return;
        w->n_unslotted--; /* listener_settle counts it again if it stays out */
        conn_register(w, l);
        listener_settle(w, l);
        if (!l->fixed)
            return;
    }
}

/* The file an SQE names for c, and the flag that says which kind it is. */
static void sqe_file(struct rly_worker *w, struct io_uring_sqe *sqe, struct rly_conn *c)
{
    if (c->fixed) {
        sqe->fd = (int)c->slot;
        sqe->flags |= IOSQE_FIXED_FILE;
    }
}

int32_t rly__conn_alloc(struct rly_worker *w, int kind, int fd)
{
    int32_t idx = w->free_head;
    if (idx < 0)
        return -1;
    struct rly_conn *c = &w->conns[idx];
    w->free_head = c->peer;
    w->n_used++;
    uint32_t gen = c->gen; /* the generation survives reuse; everything else starts at zero */
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->kind = (uint8_t)kind;
    c->fd = fd;
    c->peer = -1;
    c->camera = -1;
    c->next_pending = -1;
    conn_register(w, c); /* a no-op until the ring has its table (n_fixed 0) */
    return idx;
}

static void conn_free(struct rly_worker *w, struct rly_conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->auth_start) {
        camrelay__auth_start__free_unpacked(c->auth_start, NULL);
        c->auth_start = NULL;
    }
    cr_frame_free(c->held_hello);
    c->held_hello = NULL;
    if (c->st)
        rly__stream_free(w, c);
    if (c->recv_big) { /* its read has completed: freed only after the last completion */
        rly__pool_put(&w->big_pool, c->recv_big);
        c->recv_big = NULL;
    }
    buf_release(w, &c->out);
    buf_release(w, &c->frame);
    if (c->kind == RLY_CONN_LISTEN_ENDPOINT && w->n_fixed && !c->fixed && c->fd >= 0)
        w->n_unslotted--; /* counted by listener_settle */
    conn_unregister(w, c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->kind = RLY_CONN_FREE;
    c->gen = (c->gen + 1) & 0xffffff;
    c->peer = w->free_head;
    w->free_head = rly__idx(w, c);
    w->n_used--;
}

static void maybe_free(struct rly_worker *w, struct rly_conn *c)
{
    if (c->closing && !c->recv_busy && !c->send_busy && !c->accept_armed && !c->poll_in &&
        !c->poll_out)
        conn_free(w, c);
}

void rly__conn_close(struct rly_worker *w, struct rly_conn *c, const char *why)
{
    if (c->closing || c->kind == RLY_CONN_FREE)
        return;
    c->closing = 1;
    if (why)
        cr_debug("closing %s %s: %s", c->kind == RLY_CONN_RECORDER ? "recorder" : "connection",
                 c->addr, why);
    if (c->kind == RLY_CONN_AGENT)
        rly__agent_on_close(w, c);
    if (c->kind == RLY_CONN_AGENT || c->kind == RLY_CONN_RECORDER)
        rly__stream_on_close(w, c);
    if (c->accept_armed) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_cancel64(sqe, rly__ud(RLY_OP_ACCEPT, (uint32_t)rly__idx(w, c), c->gen), 0);
        io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_CANCEL, 0, 0));
        /* A closing listener gives its slot back now, not when its accept's last completion
         * comes: a listener put in the same batch of commands (a camera removed and put
         * again) would otherwise find a table full of closing listeners and keep its
         * descriptor for good. The accept keeps the socket meanwhile (the kernel took the
         * file when it issued the request); a re-arm still queued is submitted first, while
         * the slot still holds it. At a stop no listener comes after. */
        if (c->fixed && !w->stopping && submit_queued(w) == 0)
            conn_unregister(w, c);
    }
    /* Ends in-flight recv/send at once; the fd is closed when the last completion arrives. */
    if (c->fd >= 0 && (c->kind == RLY_CONN_AGENT || c->kind == RLY_CONN_RECORDER))
        shutdown(c->fd, SHUT_RDWR);
    maybe_free(w, c);
}

/* A read into a buffer the kernel picks from group bgid when bytes come. */
static void post_ring_recv(struct rly_worker *w, struct rly_conn *c, unsigned bgid)
{
    if (c->recv_busy || c->closing || c->read_eof)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    /* A recorder's read becomes one TLS record towards the agent: at most 16 KiB. */
    io_uring_prep_recv(sqe, c->fd, NULL,
                       c->kind == RLY_CONN_RECORDER ? RLY_PLAIN_CAP : RLY_BUF_SIZE, 0);
    sqe_file(w, sqe, c);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = (uint16_t)bgid;
    /* A ring-buffer read is for a connection that has just been drained and waits for its
     * next frame: arm the poll at once instead of trying a read that finds nothing first
     * (a poll that finds bytes already there issues the read straight away). */
    sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_RECV, (uint32_t)rly__idx(w, c), c->gen));
    c->recv_busy = 1;
}

void rly__post_recv(struct rly_worker *w, struct rly_conn *c)
{
    /* Every connection receives into the provided-buffer ring: a connection waiting for
     * bytes holds no buffer, the kernel picks one when they come. */
    post_ring_recv(w, c, RLY_RING_BGID);
}

void rly__post_stream_recv(struct rly_worker *w, struct rly_conn *data)
{
    post_ring_recv(w, data, RLY_RING_BGID_STREAM);
}

void rly__post_recv_into(struct rly_worker *w, struct rly_conn *c, uint8_t *mem, uint32_t len)
{
    if (c->recv_busy || c->closing || c->read_eof)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv(sqe, c->fd, mem, len, 0);
    sqe_file(w, sqe, c);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_RECV, (uint32_t)rly__idx(w, c), c->gen));
    c->recv_busy = 1;
}

void rly__post_sendmsg(struct rly_worker *w, struct rly_conn *c, struct msghdr *msg)
{
    if (c->send_busy || c->closing)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_sendmsg(sqe, c->fd, msg, MSG_NOSIGNAL);
    sqe_file(w, sqe, c);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_SEND, (uint32_t)rly__idx(w, c), c->gen));
    c->send_busy = 1;
    c->send_iov = 1;
}

void rly__post_poll(struct rly_worker *w, struct rly_conn *c, int out)
{
    uint8_t *armed = out ? &c->poll_out : &c->poll_in;
    if (*armed || c->closing)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_poll_add(sqe, c->fd, out ? POLLOUT : POLLIN);
    sqe_file(w, sqe, c);
    io_uring_sqe_set_data64(sqe, rly__ud(out ? RLY_OP_POLL_OUT : RLY_OP_POLL_IN,
                                         (uint32_t)rly__idx(w, c), c->gen));
    *armed = 1;
}

void rly__post_send(struct rly_worker *w, struct rly_conn *c)
{
    if (c->send_busy || c->closing || c->out.len == 0)
        return;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, c->fd, c->out.mem + c->out.off, c->out.len, MSG_NOSIGNAL);
    sqe_file(w, sqe, c);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_SEND, (uint32_t)rly__idx(w, c), c->gen));
    c->send_busy = 1;
}

static void arm_accept(struct rly_worker *w, struct rly_conn *c)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_multishot_accept(sqe, c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    sqe_file(w, sqe, c);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_ACCEPT, (uint32_t)rly__idx(w, c), c->gen));
    c->accept_armed = 1;
}

static void arm_event(struct rly_worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_read(sqe, w->event_fd, &w->event_val, sizeof(w->event_val), 0);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_EVENT, 0, 0));
}

static void arm_tick(struct rly_worker *w)
{
    struct io_uring_sqe *sqe = get_sqe(w);
    w->tick.tv_sec = 0;
    w->tick.tv_nsec = RLY_TICK_MS * 1000000L;
    io_uring_prep_timeout(sqe, &w->tick, 0, 0);
    io_uring_sqe_set_data64(sqe, rly__ud(RLY_OP_TICK, 0, 0));
}

struct rly_camera *rly__camera(struct rly_worker *w, int32_t idx)
{
    if (idx < 0 || (uint32_t)idx >= w->n_cameras || !w->cameras[idx].in_use)
        return NULL;
    return &w->cameras[idx];
}

int32_t rly__camera_find(struct rly_worker *w, const char *serial)
{
    for (uint32_t i = 0; i < w->n_cameras; i++)
        if (w->cameras[i].in_use && strcmp(w->cameras[i].serial, serial) == 0)
            return (int32_t)i;
    return -1;
}

void rly__camera_set_online(struct rly_worker *w, struct rly_camera *cam, int32_t tunnel,
                            const char *site_addr)
{
    struct rly_relay *r = w->relay;
    int online = tunnel >= 0;
    if ((cam->tunnel >= 0) != online)
        atomic_fetch_add_explicit(&w->stat_tunnels, online ? 1u : (uint32_t)-1,
                                  memory_order_relaxed);
    pthread_mutex_lock(&r->lock);
    cam->tunnel = tunnel;
    cam->last_seen_unix = cr_unix_now();
    if (site_addr)
        cr_strlcpy(cam->site_addr, site_addr, sizeof(cam->site_addr));
    pthread_mutex_unlock(&r->lock);
    if (r->cfg.on_event)
        r->cfg.on_event(r->cfg.event_ctx, cam->serial, online, cam->site_addr,
                        atomic_load_explicit(&cam->bytes_relayed, memory_order_relaxed));
}

static void on_accept(struct rly_worker *w, struct rly_conn *l, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        l->accept_armed = 0;
        if (l->closing) {
            maybe_free(w, l);
            return;
        }
        if (cqe->res != -ECANCELED)
            arm_accept(w, l);
    }
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED)
            cr_warn("accept on %s failed: %s", l->addr, strerror(-cqe->res));
        return;
    }
    int fd = cqe->res;
    int32_t idx = rly__conn_alloc(w, l->kind == RLY_CONN_LISTEN_EXTERNAL ? RLY_CONN_AGENT
                                                                         : RLY_CONN_RECORDER, fd);
    if (idx < 0) {
        cr_warn("connection pool full (%u slots): refusing a connection", w->n_conns);
        close(fd);
        return;
    }
    struct rly_conn *c = &w->conns[idx];
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
        cr_addr_format((struct sockaddr *)&ss, c->addr, sizeof(c->addr));
    cr_tcp_tune(fd);
    if (c->kind == RLY_CONN_AGENT) {
        if (rly__agent_start(w, c) < 0)
            rly__conn_close(w, c, "cannot set up TLS");
    } else {
        rly__recorder_start(w, c, l);
    }
}

void rly__ring_recycle(struct rly_worker *w, unsigned bid)
{
    struct io_uring_buf_ring *br = w->buf_ring[bid / RLY_RING_GROUP_BUFS];
    io_uring_buf_ring_add(br, rly__ring_buf(w, bid), RLY_BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(RLY_RING_GROUP_BUFS), 0);
    io_uring_buf_ring_advance(br, 1);
}

static void on_recv(struct rly_worker *w, struct rly_conn *c, struct io_uring_cqe *cqe)
{
    int res = cqe->res;
    const uint8_t *data = NULL;
    unsigned bid = 0;
    int has_buf = (cqe->flags & IORING_CQE_F_BUFFER) != 0;

    c->recv_busy = 0;
    if (has_buf) {
        bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        data = w->ring_bufs + (size_t)bid * RLY_BUF_SIZE;
    }
    if (c->closing) {
        if (has_buf)
            rly__ring_recycle(w, bid);
        maybe_free(w, c);
        return;
    }
    if (c->st && (c->st->path == RLY_PATH_TLS_INPLACE || c->st->path == RLY_PATH_PLAIN)) {
        /* These paths keep the ring buffer until its bytes have been sent on. */
        rly__inplace_on_recv(w, c, has_buf, bid, res);
        return;
    }
    if (res == -ENOBUFS) { /* every ring buffer is in use: try again on the next tick */
        atomic_fetch_add_explicit(&w->relay->counters.buffers_exhausted, 1,
                                  memory_order_relaxed);
        c->starved = 1;
        return;
    }
    if (res < 0) {
        if (has_buf)
            rly__ring_recycle(w, bid);
        rly__conn_close(w, c, strerror(-res));
        return;
    }
    if (c->kind == RLY_CONN_RECORDER) {
        /* Encrypted into the data connection's TLS output at once: the buffer goes back. */
        rly__recorder_on_recv(w, c, data, res);
    } else {
        if (res == 0)
            c->read_eof = 1;
        /* The TLS layer copies the bytes in, so the ring buffer goes back at once. */
        rly__agent_on_recv(w, c, data, res);
    }
    if (has_buf)
        rly__ring_recycle(w, bid);
}

static void on_send(struct rly_worker *w, struct rly_conn *c, int res)
{
    c->send_busy = 0;
    if (c->closing) {
        c->send_iov = 0;
        maybe_free(w, c);
        return;
    }
    if (c->send_iov) {
        c->send_iov = 0;
        rly__inplace_sent(w, c, res);
        return;
    }
    if (res < 0) {
        rly__conn_close(w, c, strerror(-res));
        return;
    }
    c->out.off += (uint32_t)res;
    c->out.len -= (uint32_t)res;
    if (c->kind == RLY_CONN_RECORDER)
        rly__stream_count(w, c, (uint64_t)res);
    if (c->out.len) {
        rly__post_send(w, c); /* short send: the rest goes next */
        return;
    }
    c->out.off = 0;
    if (c->kind == RLY_CONN_RECORDER)
        rly__recorder_on_sent(w, c);
    else
        rly__agent_on_sent(w, c);
}

static void on_tick(struct rly_worker *w)
{
    uint64_t now = cr_now_ms();
    uint64_t done = atomic_load_explicit(&w->stat_completions, memory_order_relaxed);
    /* Batch when completions come fast and from many streams: a few busy streams' round
     * trips would each pay the wait (one bulk stream fell from 6.9 to 2.5 Gbit/s). */
    w->batching = (done - w->tick_completions) * (1000 / RLY_TICK_MS) >= RLY_BATCH_MIN_RATE &&
                  atomic_load_explicit(&w->stat_streams, memory_order_relaxed) >=
                      RLY_BATCH_MIN_STREAMS;
    w->tick_completions = done;
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct rly_conn *c = &w->conns[i];
        if (c->closing)
            continue;
        if (c->starved) {
            c->starved = 0;
            if (c->st && c->st->path == RLY_PATH_TLS_INPLACE) {
                rly__agent_flush(w, c); /* DataAccepted may be what waited for a buffer */
                rly__inplace_pump(w, c);
            } else if (c->kind == RLY_CONN_AGENT) {
                rly__agent_continue(w, c);
                rly__post_recv(w, c);
            } else if (c->kind == RLY_CONN_RECORDER && c->state) {
                rly__post_recv(w, c);
            }
        }
        if (c->kind == RLY_CONN_AGENT)
            rly__agent_tick(w, c, now);
        else if (c->kind == RLY_CONN_RECORDER)
            rly__recorder_tick(w, c, now);
    }
    if (!w->stopping)
        arm_tick(w);
}

/* Opens the endpoint listeners of a camera (consumes the spec's fds). */
static void camera_listen(struct rly_worker *w, struct rly_camera *cam, int32_t cam_idx,
                          struct rly_camera_spec *spec)
{
    cam->n_endpoints = spec->n_endpoints;
    for (unsigned i = 0; i < spec->n_endpoints; i++) {
        struct rly_endpoint_spec *ep = &spec->endpoints[i];
        cr_strlcpy(cam->service[i], ep->service, sizeof(cam->service[i]));
        int32_t idx = rly__conn_alloc(w, RLY_CONN_LISTEN_ENDPOINT, ep->listen_fd);
        ep->listen_fd = -1;
        cam->listener[i] = idx;
        if (idx < 0) {
            cr_err("camera %s: no connection slot for its %s endpoint", cam->serial, ep->service);
            continue;
        }
        struct rly_conn *l = &w->conns[idx];
        l->camera = cam_idx;
        l->service = (uint8_t)i;
        snprintf(l->addr, sizeof(l->addr), "endpoint %s/%s", cam->serial, ep->service);
        listener_settle(w, l);
        arm_accept(w, l);
    }
}

static void camera_put(struct rly_worker *w, struct rly_camera_spec *spec)
{
    struct rly_relay *r = w->relay;
    int32_t idx = rly__camera_find(w, spec->serial);
    if (idx >= 0) {
        struct rly_camera *cam = &w->cameras[idx];
        pthread_mutex_lock(&r->lock);
        memcpy(cam->salt, spec->salt, sizeof(cam->salt));
        cam->iterations = spec->iterations;
        memcpy(cam->stored_key, spec->stored_key, sizeof(cam->stored_key));
        pthread_mutex_unlock(&r->lock);
        for (unsigned i = 0; i < spec->n_endpoints; i++)
            if (spec->endpoints[i].listen_fd >= 0)
                close(spec->endpoints[i].listen_fd);
        return;
    }
    for (uint32_t i = 0; i < w->n_cameras; i++) {
        struct rly_camera *cam = &w->cameras[i];
        if (cam->in_use)
            continue;
        pthread_mutex_lock(&r->lock);
        uint32_t gen = cam->gen;
        memset(cam, 0, sizeof(*cam));
        cam->gen = gen + 1;
        cr_strlcpy(cam->serial, spec->serial, sizeof(cam->serial));
        memcpy(cam->salt, spec->salt, sizeof(cam->salt));
        cam->iterations = spec->iterations;
        memcpy(cam->stored_key, spec->stored_key, sizeof(cam->stored_key));
        cam->tunnel = -1;
        cam->pending_head = -1;
        cam->in_use = 1;
        pthread_mutex_unlock(&r->lock);
        atomic_fetch_add_explicit(&w->stat_cameras, 1, memory_order_relaxed);
        camera_listen(w, cam, (int32_t)i, spec);
        cr_debug("camera %s added with %u endpoints", cam->serial, cam->n_endpoints);
        return;
    }
    cr_err("camera table full (%u): cannot add %s", w->n_cameras, spec->serial);
    for (unsigned i = 0; i < spec->n_endpoints; i++)
        if (spec->endpoints[i].listen_fd >= 0)
            close(spec->endpoints[i].listen_fd);
}

static void camera_del(struct rly_worker *w, const char *serial)
{
    struct rly_relay *r = w->relay;
    int32_t idx = rly__camera_find(w, serial);
    if (idx < 0)
        return;
    struct rly_camera *cam = &w->cameras[idx];
    /* Every connection of the camera goes: listeners, tunnel, recorders, data connections. */
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct rly_conn *c = &w->conns[i];
        if (c->kind != RLY_CONN_FREE && c->camera == idx)
            rly__conn_close(w, c, "camera removed");
    }
    atomic_fetch_sub_explicit(&w->stat_cameras, 1, memory_order_relaxed);
    pthread_mutex_lock(&r->lock);
    cam->in_use = 0;
    cam->tunnel = -1;
    cr_wipe(cam->stored_key, sizeof(cam->stored_key));
    pthread_mutex_unlock(&r->lock);
    cr_info("camera %s removed", serial);
}

static void on_event(struct rly_worker *w)
{
    struct rly_relay *r = w->relay;
    pthread_mutex_lock(&r->lock);
    struct rly_cmd *list = w->cmd_head;
    w->cmd_head = NULL;
    w->cmd_tail = &w->cmd_head;
    pthread_mutex_unlock(&r->lock);
    while (list) {
        struct rly_cmd *cmd = list;
        list = cmd->next;
        if (cmd->kind == RLY_CMD_CAMERA_PUT)
            camera_put(w, &cmd->spec);
        else if (cmd->kind == RLY_CMD_CAMERA_DEL)
            camera_del(w, cmd->spec.serial);
        else if (cmd->kind == RLY_CMD_STOP)
            w->stopping = 1;
        cr_wipe(&cmd->spec, sizeof(cmd->spec));
        free(cmd);
    }
    if (!w->stopping)
        arm_event(w);
}

uint32_t rly__owner(const struct rly_relay *r, const char *serial)
{
    uint32_t h = 2166136261u; /* FNV-1a: cheap, stable, spreads serials that differ at the end */
    for (const unsigned char *p = (const unsigned char *)serial; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % r->n_workers;
}

static void handover_drop(struct rly_handover *ho, const char *why)
{
    cr_warn("agent %s: hand-over to the camera's worker failed: %s", ho->addr, why);
    SSL_free(ho->ssl);
    close(ho->fd);
    cr_frame_free(ho->hello);
    free(ho);
}

void rly__handover(struct rly_worker *w, struct rly_conn *c, uint32_t owner,
                   Camrelay__Frame *hello)
{
    if (c->send_busy) { /* the SSL and fd move only when nothing is in flight on them */
        c->handover_to = (int32_t)owner + 1;
        c->held_hello = hello;
        return;
    }
    struct rly_handover *ho = malloc(sizeof(*ho)); /* once per connection, at set-up */
    if (!ho) {
        cr_frame_free(hello);
        rly__conn_close(w, c, "no memory for hand-over");
        return;
    }
    ho->fd = c->fd;
    ho->plain = c->plain;
    ho->ssl = c->ssl;
    ho->hello = hello;
    memcpy(ho->addr, c->addr, sizeof(ho->addr));
    ho->leftover_len = c->frame.len;
    memcpy(ho->leftover, c->frame.mem, c->frame.len);
    c->fd = -1;
    c->ssl = NULL;
    c->frame.len = 0;
    rly__conn_close(w, c, NULL);

    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_msg_ring(sqe, w->relay->workers[owner].ring.ring_fd, 0,
                           rly__ud_ptr(RLY_OP_HANDOVER, ho), 0);
    io_uring_sqe_set_data64(sqe, rly__ud_ptr(RLY_OP_HANDOVER_SENT, ho));
    atomic_fetch_add_explicit(&w->relay->counters.handovers, 1, memory_order_relaxed);
}

static void dispatch(struct rly_worker *w, struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    enum rly_op op = rly__ud_op(ud);
    if (op == RLY_OP_EVENT) {
        on_event(w);
        return;
    }
    if (op == RLY_OP_TICK) {
        on_tick(w);
        return;
    }
    if (op == RLY_OP_CANCEL)
        return;
    if (op == RLY_OP_HANDOVER) {
        rly__agent_adopt(w, rly__ud_to_ptr(ud));
        return;
    }
    if (op == RLY_OP_HANDOVER_SENT) {
        if (cqe->res < 0) /* not delivered: the connection is ours to drop */
            handover_drop(rly__ud_to_ptr(ud), strerror(-cqe->res));
        return;
    }
    struct rly_conn *c = rly__conn(w, (int32_t)rly__ud_idx(ud));
    if (!c || c->gen != rly__ud_gen(ud) || c->kind == RLY_CONN_FREE) {
        /* A completion for a slot that has been reused cannot happen (we free only after the
         * last completion), but an accept of a listener closed meanwhile may: drop its fd. */
        if (op == RLY_OP_ACCEPT && cqe->res >= 0)
            close(cqe->res);
        return;
    }
    switch (op) {
    case RLY_OP_ACCEPT:
        on_accept(w, c, cqe);
        break;
    case RLY_OP_RECV:
        on_recv(w, c, cqe);
        break;
    case RLY_OP_SEND:
        on_send(w, c, cqe->res);
        break;
    case RLY_OP_POLL_IN:
    case RLY_OP_POLL_OUT:
        if (op == RLY_OP_POLL_IN)
            c->poll_in = 0;
        else
            c->poll_out = 0;
        if (c->closing)
            maybe_free(w, c);
        else
            rly__splice_on_poll(w, c, op == RLY_OP_POLL_OUT, cqe->res);
        break;
    default:
        break;
    }
}

/* The provided-buffer rings connections receive into, one per group (worker_t.h). liburing
 * 2.3 has no io_uring_setup_buf_ring: map each ring, initialise it, register it, then hand
 * it its buffers. */
static int setup_buf_ring(struct rly_worker *w)
{
    /* Pages are touched only when the kernel first fills a buffer: RSS follows real use. */
    w->ring_bufs = mmap(NULL, (size_t)RLY_RING_BUFS * RLY_BUF_SIZE, PROT_READ | PROT_WRITE,
                        MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (w->ring_bufs == MAP_FAILED) {
        w->ring_bufs = NULL;
        return -errno;
    }
    size_t ring_size = RLY_RING_GROUP_BUFS * sizeof(struct io_uring_buf);
    for (unsigned g = 0; g < RLY_RING_GROUPS; g++) {
        void *mem = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
                         -1, 0);
        if (mem == MAP_FAILED)
            return -errno;
        w->buf_ring[g] = mem;
        io_uring_buf_ring_init(mem);
        struct io_uring_buf_reg reg = {.ring_addr = (unsigned long)mem,
                                       .ring_entries = RLY_RING_GROUP_BUFS,
                                       .bgid = (uint16_t)g};
        int rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
        if (rc < 0)
            return rc;
        for (unsigned i = 0; i < RLY_RING_GROUP_BUFS; i++) {
            unsigned bid = g * RLY_RING_GROUP_BUFS + i;
            io_uring_buf_ring_add(mem, rly__ring_buf(w, bid), RLY_BUF_SIZE, (unsigned short)bid,
                                  io_uring_buf_ring_mask(RLY_RING_GROUP_BUFS), (int)i);
        }
        io_uring_buf_ring_advance(mem, RLY_RING_GROUP_BUFS);
    }
    return 0;
}

/* The kernel bounds a registered-file table by the soft RLIMIT_NOFILE at the moment it is
 * registered, but the table's slots are not descriptors: the soft limit is lifted towards the
 * hard one for that one call. The limit is the process's, shared by every relay and thread in
 * it, hence one lock for the whole process. */
static pthread_mutex_t rlimit_lock = PTHREAD_MUTEX_INITIALIZER;

static int register_sparse_table(struct rly_worker *w, uint32_t *n)
{
    struct rlimit rl, lifted;
    pthread_mutex_lock(&rlimit_lock);
    int have = getrlimit(RLIMIT_NOFILE, &rl) == 0;
    if (have && rl.rlim_max != RLIM_INFINITY && rl.rlim_max < *n)
        *n = (uint32_t)rl.rlim_max;
    lifted = rl;
    int lift = have && rl.rlim_cur < *n;
    if (lift) {
        lifted.rlim_cur = *n;
        if (setrlimit(RLIMIT_NOFILE, &lifted) < 0)
            lift = 0;
    }
    if (!lift && have && rl.rlim_cur < *n)
        *n = (uint32_t)rl.rlim_cur;
    int rc = io_uring_register_files_sparse(&w->ring, *n);
    struct rlimit now;
    /* Put the soft limit back, unless someone (the program embedding the relay) changed it
     * meanwhile: their value stands. */
    if (lift && getrlimit(RLIMIT_NOFILE, &now) == 0 && now.rlim_cur == lifted.rlim_cur)
        setrlimit(RLIMIT_NOFILE, &rl);
    pthread_mutex_unlock(&rlimit_lock);
    return rc;
}

/* A sparse registered-file table with a slot per connection, as far as RLIMIT_NOFILE allows.
 * Without one every connection uses its descriptor. */
static void register_files(struct rly_worker *w)
{
    uint32_t n = w->n_conns;
    int rc = register_sparse_table(w, &n);
    if (rc < 0) {
        cr_warn("worker %u: no registered files (%s): connections use descriptors", w->id,
                strerror(-rc));
        return;
    }
    w->slot_conn = cr_xmalloc(n * sizeof(*w->slot_conn));
    w->slot_free = cr_xmalloc(n * sizeof(*w->slot_free));
    for (uint32_t i = 0; i < n; i++) {
        w->slot_conn[i] = -1;
        w->slot_free[i] = n - 1 - i; /* popped from the end: slot 0 first */
    }
    w->n_slot_free = n;
    w->n_fixed = n;
    for (uint32_t i = 0; i < w->n_conns; i++) /* the external listener, made before the ring */
        if (w->conns[i].kind != RLY_CONN_FREE)
            conn_register(w, &w->conns[i]);
}

static void *worker_main(void *arg)
{
    struct rly_worker *w = arg;
    struct io_uring_params p = {0};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN;
    /* SINGLE_ISSUER binds the ring to the thread that creates it: create it here. */
    int rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
    if (rc < 0) {
        p.flags = 0;
        rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
    }
    pthread_barrier_wait(&w->relay->ready); /* every ring fd is known from here on */
    if (rc < 0) {
        cr_err("io_uring setup failed: %s", strerror(-rc));
        w->stopping = 2;
        return NULL;
    }
    rc = setup_buf_ring(w);
    if (rc < 0) {
        cr_err("cannot register the receive buffer ring: %s", strerror(-rc));
        w->stopping = 2;
        io_uring_queue_exit(&w->ring);
        return NULL;
    }
    register_files(w);
    arm_event(w);
    arm_tick(w);
    arm_accept(w, &w->conns[w->external_listener]);

    uint32_t wait_us = w->relay->cfg.batch_wait_us > 100000 ? 100000 : w->relay->cfg.batch_wait_us;
    struct __kernel_timespec batch_wait = {.tv_sec = 0, .tv_nsec = (long long)wait_us * 1000};
    struct __kernel_timespec quiet_wait = {.tv_sec = 1, .tv_nsec = 0}; /* the tick ends it first */
    int min_wait = (p.features & IORING_FEAT_MIN_TIMEOUT) != 0;
    while (!w->stopping) {
        struct io_uring_cqe *cqe;
        /* Sleep until there is work. When completions come fast (w->batching, judged every
         * tick), gather a batch so one wake-up handles several: each sleep and wake-up costs
         * the worker a context switch, the largest single cost in profiles of paced streams.
         * With the kernel's min-wait (6.12) that is one sleep per batch: woken after
         * RLY_BATCH_CQES completions, or after batch_wait_us with at least one, or -- nothing
         * came by then -- by the next one. Older kernels sleep twice: until the first
         * completion, then up to batch_wait_us for the rest. At low rates every completion is
         * handled at once: there a batch would only add latency. */
        if (batch_wait.tv_nsec && w->batching && min_wait) {
            rc = rly__uring_submit_and_wait_min(&w->ring, RLY_BATCH_CQES, wait_us, &quiet_wait);
            if (rc == -ETIME)
                rc = 0;
        } else {
            rc = io_uring_submit_and_wait(&w->ring, 1);
            if (rc >= 0 && batch_wait.tv_nsec && w->batching &&
                io_uring_cq_ready(&w->ring) < RLY_BATCH_CQES) {
                struct io_uring_cqe *first;
                rc = io_uring_submit_and_wait_timeout(&w->ring, &first, RLY_BATCH_CQES,
                                                      &batch_wait, NULL);
                if (rc == -ETIME)
                    rc = 0;
            }
        }
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            cr_err("io_uring wait failed: %s", strerror(-rc));
            break;
        }
        unsigned head, n = 0;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
        if (w->n_unslotted && w->n_slot_free)
            promote_listeners(w);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        rly__stat_add(&w->stat_completions, n);
        rly__stat_add(&w->stat_busy_ns, (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000LL +
                                                   (t1.tv_nsec - t0.tv_nsec)));
        atomic_store_explicit(&w->stat_conns, w->n_used, memory_order_relaxed);
    }

    /* Orderly stop: close every connection, then drain completions until all slots are free. */
    for (uint32_t i = 0; i < w->n_conns; i++)
        if (w->conns[i].kind != RLY_CONN_FREE)
            rly__conn_close(w, &w->conns[i], NULL);
    uint64_t deadline = cr_now_ms() + 2000;
    while (w->n_used > 0 && cr_now_ms() < deadline) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 100000000};
        io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL);
        unsigned head, n = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe)
        {
            uint64_t ud = io_uring_cqe_get_data64(cqe);
            if (rly__ud_op(ud) == RLY_OP_HANDOVER)
                handover_drop(rly__ud_to_ptr(ud), "relay stopping");
            else if (rly__ud_op(ud) != RLY_OP_EVENT && rly__ud_op(ud) != RLY_OP_TICK)
                dispatch(w, cqe);
            n++;
        }
        io_uring_cq_advance(&w->ring, n);
    }
    /* Endpoint listeners live on in the ring's file table. Freeing the ring lets them go only
     * when the kernel's teardown of it gets round to it, which on older kernels (6.1) is
     * seconds later, after the process has gone: a relay restarted at once would find its own
     * ports still listening. Unregistering waits until the kernel has released them -- and
     * for every request still holding a registered file, so only once all are done. */
    if (w->n_used == 0) {
        int urc = io_uring_unregister_files(&w->ring);
        if (urc < 0 && urc != -ENXIO)
            cr_warn("worker %u: releasing its registered files: %s", w->id, strerror(-urc));
    }
    io_uring_queue_exit(&w->ring);
    return NULL;
}

int rly__worker_init(struct rly_worker *w, struct rly_relay *r, uint32_t id, int listen_fd)
{
    w->relay = r;
    w->id = id;
    w->cmd_tail = &w->cmd_head;
    w->n_conns = r->cfg.max_conns ? r->cfg.max_conns : 16384;
    w->conns = cr_xcalloc(w->n_conns, sizeof(*w->conns));
    for (uint32_t i = 0; i < w->n_conns; i++) {
        w->conns[i].fd = -1;
        w->conns[i].peer = (int32_t)i + 1 < (int32_t)w->n_conns ? (int32_t)i + 1 : -1;
    }
    w->free_head = 0;
    w->pool.limit = 2 * w->n_conns;
    w->pool.free = cr_xcalloc(w->pool.limit, sizeof(void *));
    w->big_pool.limit = RLY_BIG_BUFS;
    w->big_pool.free = cr_xcalloc(w->big_pool.limit, sizeof(void *));
    w->pipes = cr_xcalloc(RLY_PIPE_POOL, sizeof(*w->pipes));
    w->n_cameras = w->n_conns / 2 > 4 ? w->n_conns / 2 : 4;
    w->cameras = cr_xcalloc(w->n_cameras, sizeof(*w->cameras));
    w->event_fd = eventfd(0, EFD_CLOEXEC);
    if (w->event_fd < 0)
        return -errno;
    w->external_listener = rly__conn_alloc(w, RLY_CONN_LISTEN_EXTERNAL, listen_fd);
    snprintf(w->conns[w->external_listener].addr, sizeof(w->conns[0].addr), "external listener");
    return 0;
}

int rly__worker_start(struct rly_worker *w)
{
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    return rc ? -rc : 0;
}

void rly__worker_wake(struct rly_worker *w)
{
    uint64_t one = 1;
    ssize_t n = write(w->event_fd, &one, sizeof(one));
    (void)n;
}

void rly__worker_free(struct rly_worker *w)
{
    for (uint32_t i = 0; i < w->n_conns; i++) {
        struct rly_conn *c = &w->conns[i];
        if (c->kind != RLY_CONN_FREE) {
            if (c->ssl)
                SSL_free(c->ssl);
            if (c->fd >= 0)
                close(c->fd);
            if (c->auth_start)
                camrelay__auth_start__free_unpacked(c->auth_start, NULL);
            cr_frame_free(c->held_hello);
            if (c->st)
                rly__stream_free(w, c);
        }
        free(c->recv_big); /* left by a stop that timed out before the read completed */
        c->recv_big = NULL;
        buf_release(w, &c->out);
        buf_release(w, &c->frame);
    }
    for (uint32_t i = 0; i < w->pool.n_free; i++)
        free(w->pool.free[i]);
    free(w->pool.free);
    for (uint32_t i = 0; i < w->big_pool.n_free; i++)
        free(w->big_pool.free[i]);
    free(w->big_pool.free);
    for (uint32_t i = 0; i < w->n_pipes; i++) {
        close(w->pipes[i][0]);
        close(w->pipes[i][1]);
    }
    free(w->pipes);
    if (w->ring_bufs)
        munmap(w->ring_bufs, (size_t)RLY_RING_BUFS * RLY_BUF_SIZE);
    for (unsigned g = 0; g < RLY_RING_GROUPS; g++)
        if (w->buf_ring[g])
            munmap(w->buf_ring[g], RLY_RING_GROUP_BUFS * sizeof(struct io_uring_buf));
    free(w->conns);
    free(w->slot_conn);
    free(w->slot_free);
    free(w->cameras);
    close(w->event_fd);
}
