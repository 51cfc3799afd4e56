/* The relay worker's internal interface, shared by worker.c (the event loop), agent_conn.c
 * (TLS, hellos, tunnels) and stream.c (pairing and relaying). Only relay/ includes this. */
#ifndef RLY_WORKER_H
#define RLY_WORKER_H

#include "relay/worker_t.h"

/* Operations packed into io_uring user_data with the slot index and its generation. */
enum rly_op {
    RLY_OP_ACCEPT = 1,
    RLY_OP_RECV,
    RLY_OP_SEND,
    RLY_OP_EVENT,
    RLY_OP_TICK,
    RLY_OP_CANCEL,
    RLY_OP_HANDOVER,      /* target side: user_data carries the struct rly_handover pointer */
    RLY_OP_HANDOVER_SENT, /* source side: the same pointer, to reclaim it if sending failed */
    RLY_OP_POLL_IN,       /* splice: the connection's fd is readable (or hung up) */
    RLY_OP_POLL_OUT,      /* splice: the connection's fd is writable again */
};

/* A hand-over message packs its pointer with the op in the top byte: x86-64 user-space
 * pointers fit in 48 bits, and the message owns the object until it is adopted. */
static inline uint64_t rly__ud_ptr(enum rly_op op, void *p)
{
    return (uint64_t)op << 56 | (uint64_t)(uintptr_t)p;
}
static inline void *rly__ud_to_ptr(uint64_t ud)
{
    return (void *)(uintptr_t)(ud & ((1ull << 56) - 1));
}

static inline uint64_t rly__ud(enum rly_op op, uint32_t idx, uint32_t gen)
{
    return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | idx;
}
static inline enum rly_op rly__ud_op(uint64_t ud) { return (enum rly_op)(ud >> 56); }
static inline uint32_t rly__ud_idx(uint64_t ud) { return (uint32_t)ud; }
static inline uint32_t rly__ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }

/* Adds n to a statistic only this worker writes: a plain load and store, no locked
 * read-modify-write on the data path. */
static inline void rly__stat_add(_Atomic uint64_t *stat, uint64_t n)
{
    atomic_store_explicit(stat, atomic_load_explicit(stat, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline struct rly_conn *rly__conn(struct rly_worker *w, int32_t idx)
{
    return (idx >= 0 && (uint32_t)idx < w->n_conns) ? &w->conns[idx] : NULL;
}
static inline int32_t rly__idx(struct rly_worker *w, struct rly_conn *c)
{
    return (int32_t)(c - w->conns);
}

/* worker.c */
int rly__worker_init(struct rly_worker *w, struct rly_relay *r, uint32_t id, int listen_fd);
/* The worker that owns a camera: a hash of its serial, so every worker agrees. */
uint32_t rly__owner(const struct rly_relay *r, const char *serial);
/* Moves an agent connection whose hello named a camera of another worker to that worker. */
void rly__handover(struct rly_worker *w, struct rly_conn *c, uint32_t owner, Camrelay__Frame *hello);
void rly__agent_adopt(struct rly_worker *w, struct rly_handover *ho);
int rly__worker_start(struct rly_worker *w);
void rly__worker_wake(struct rly_worker *w);
void rly__worker_free(struct rly_worker *w); /* after its thread was joined */
int32_t rly__conn_alloc(struct rly_worker *w, int kind, int fd); /* -1 when the pool is full */
void rly__conn_close(struct rly_worker *w, struct rly_conn *c, const char *why);
/* Gives b a pool buffer if it has none. Returns 0, or -ENOBUFS when the pool is exhausted
 * (the caller sets conn->starved and retries on the next tick). */
int rly__buf_take(struct rly_worker *w, struct rly_buf *b);
/* A buffer of `size` from pool p (made on first use, up to p->limit), or NULL (counted in
 * buffers_exhausted). rly__pool_put gives it back. */
void *rly__pool_get(struct rly_worker *w, struct rly_pool *p, size_t size);
void rly__pool_put(struct rly_pool *p, void *mem);
/* Returns b's buffer to the pool when b is empty. */
void rly__buf_give(struct rly_worker *w, struct rly_buf *b);
void rly__post_recv(struct rly_worker *w, struct rly_conn *c);
/* The same for a paired stream's camera bytes, from the streams' buffer group (worker_t.h):
 * the buffer stays with the stream until its bytes have been sent on. */
void rly__post_stream_recv(struct rly_worker *w, struct rly_conn *data);
/* A recv into mem[0, len) the caller holds (not the ring): completes without a ring buffer. */
void rly__post_recv_into(struct rly_worker *w, struct rly_conn *c, uint8_t *mem, uint32_t len);
void rly__post_send(struct rly_worker *w, struct rly_conn *c);
/* Sends msg (which must live until completion) as a stream sendmsg (conn->send_iov): its
 * completion goes to rly__inplace_sent. */
void rly__post_sendmsg(struct rly_worker *w, struct rly_conn *c, struct msghdr *msg);
/* Arms a one-shot poll for POLLIN (out = 0) or POLLOUT (out = 1) on c->fd, once. */
void rly__post_poll(struct rly_worker *w, struct rly_conn *c, int out);
/* Gives ring buffer bid back to the kernel. */
void rly__ring_recycle(struct rly_worker *w, unsigned bid);
static inline uint8_t *rly__ring_buf(struct rly_worker *w, unsigned bid)
{
    return w->ring_bufs + (size_t)bid * RLY_BUF_SIZE;
}
struct rly_camera *rly__camera(struct rly_worker *w, int32_t idx);
int32_t rly__camera_find(struct rly_worker *w, const char *serial);
void rly__camera_set_online(struct rly_worker *w, struct rly_camera *cam, int32_t tunnel,
                            const char *site_addr);

/* agent_conn.c: TLS connections from agents (tunnels and data connections) */
int rly__agent_start(struct rly_worker *w, struct rly_conn *c);
/* data/len: bytes just received (borrowed ring buffer; NULL/0 at end of stream). */
void rly__agent_on_recv(struct rly_worker *w, struct rly_conn *c, const uint8_t *data, int len);
void rly__agent_on_sent(struct rly_worker *w, struct rly_conn *c);
void rly__agent_flush(struct rly_worker *w, struct rly_conn *c);
void rly__agent_tick(struct rly_worker *w, struct rly_conn *c, uint64_t now);
void rly__agent_on_close(struct rly_worker *w, struct rly_conn *c);
int rly__agent_send_frame(struct rly_worker *w, struct rly_conn *c, const Camrelay__Frame *f);
void rly__agent_continue(struct rly_worker *w, struct rly_conn *c);

/* stream.c: recorder connections, their pairing with data connections, and the relaying */
void rly__recorder_start(struct rly_worker *w, struct rly_conn *rec, struct rly_conn *listener);
int rly__stream_pair(struct rly_worker *w, struct rly_conn *data, const Camrelay__DataHello *h,
                     const char **why);
void rly__stream_failed(struct rly_worker *w, struct rly_camera *cam, uint64_t stream_id,
                        const char *reason);
void rly__stream_agent_readable(struct rly_worker *w, struct rly_conn *data);
void rly__stream_agent_drained(struct rly_worker *w, struct rly_conn *data);
/* data/len: the recorder's bytes (borrowed ring buffer), or len <= 0: EOF or -errno. */
void rly__recorder_on_recv(struct rly_worker *w, struct rly_conn *rec, const uint8_t *data,
                           int len);
void rly__recorder_on_sent(struct rly_worker *w, struct rly_conn *rec);
void rly__recorder_tick(struct rly_worker *w, struct rly_conn *rec, uint64_t now);
void rly__stream_on_close(struct rly_worker *w, struct rly_conn *c);
/* Ends both connections' part in a stream (check_done's test, shared by the paths). */
void rly__stream_check_done(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec);
/* Counts bytes relayed to either side (recorder connection, camera, relay). */
void rly__stream_count(struct rly_worker *w, struct rly_conn *rec, uint64_t n);
/* Frees the stream state a connection holds (pipes, keys, buffers): the data connection
 * normally, the recorder when its sendmsg outlived the pair. */
void rly__stream_free(struct rly_worker *w, struct rly_conn *data);

/* stream_inplace.c: TLS records opened in place, plaintext sent from where it was received */
/* Takes over data's TLS session (keys derived from it). 0, or -errno: stay on the BIO path. */
int rly__inplace_start(struct rly_worker *w, struct rly_conn *data);
/* Moves the camera's direction of data's session into the kernel (kTLS RX); our record layer
 * seals the other. 0, or -errno: a userspace path instead (or data is closing). */
int rly__ktls_start(struct rly_worker *w, struct rly_conn *data);
/* A recv on data completed: into ring buffer bid (ring = 1) or into st->in (ring = 0). */
void rly__inplace_on_recv(struct rly_worker *w, struct rly_conn *data, int ring, unsigned bid,
                          int res);
/* Opens what data's buffer holds and sends it on, or reads more. */
void rly__inplace_pump(struct rly_worker *w, struct rly_conn *data);
/* The recorder's sendmsg completed with res. */
void rly__inplace_sent(struct rly_worker *w, struct rly_conn *rec, int res);
/* Seals the recorder's bytes into data->out. 0 or -errno. */
int rly__inplace_seal(struct rly_worker *w, struct rly_conn *data, const uint8_t *p, int len);
/* data's stream is going to the recorder while a read on data is in flight: the buffer that
 * read lands in moves to data->recv_big, given back when data is freed. */
void rly__inplace_keep_recv_buffer(struct rly_conn *data);
/* Gives back the buffer data's camera records are in (ring, pool or big), if any. */
void rly__inplace_release(struct rly_worker *w, struct rly_conn *data);
/* Queues a close_notify to the agent. 0 or -errno. */
int rly__inplace_close_notify(struct rly_worker *w, struct rly_conn *data);
/* Plaintext streams: the camera's next burst is read from the receive ring and copied on
 * (splicing handed it back: the last burst has passed). */
void rly__inplace_wait(struct rly_worker *w, struct rly_conn *data);

/* stream_splice.c: plaintext (or kernel-TLS) data connections spliced through pipes */
/* Sets up the pipes (and kTLS when ktls) and starts both directions. 0 or -errno. */
int rly__splice_start(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec,
                      const uint8_t *leftover, uint32_t leftover_len);
/* Gives data's pipes back to the worker's pool (or closes those with bytes left in them). */
void rly__splice_release(struct rly_worker *w, struct rly_conn *data);
/* Plaintext streams: the camera's burst did not fit a ring buffer: splice the rest. */
void rly__splice_up(struct rly_worker *w, struct rly_conn *data);
/* A poll armed by the splice path completed on c. */
void rly__splice_on_poll(struct rly_worker *w, struct rly_conn *c, int out, int res);

#endif
