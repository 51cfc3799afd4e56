/* The in-place TLS path: a data connection's records are received into a ring buffer (or,
 * for a record split across reads, a pool buffer), opened where they lie by our record layer
 * (relay/tls_record.h) and sent to the recorder from there with one sendmsg. The camera's
 * bytes are copied once in (recv) and once out (send); BoringSSL's path copies them twice
 * more (into its read BIO, out of it into a plaintext buffer).
 *
 * A ring buffer stays with its stream until its plaintext has been sent. So that slow
 * recorders cannot take every ring buffer from the control tunnels, streams read from a
 * buffer group of their own (worker_t.h); when it is empty a stream receives into a pool
 * buffer.
 *
 * Plaintext data connections use the same reads and sends with nothing to open: a burst that
 * fits a ring buffer (a camera frame) goes on with one send from it; a burst that fills one
 * is handed to splicing (stream_splice.c), which hands the stream back once it has passed. */
#include "relay/worker.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/util.h"
#include "relay/ktls.h"

/* Takes the session's traffic keys over: our record layer seals the recorder's bytes (tx) and,
 * unless kernel_rx, opens the camera's (rx); with kernel_rx the kernel gets rx (TCP_ULP "tls").
 * The captured secrets are wiped on success and kept on failure (a later path may use them).
 * 0, or -errno with data still on BoringSSL's records (or closing, when the kernel failed half
 * way). */
static int take_keys(struct rly_worker *w, struct rly_conn *data, int kernel_rx)
{
    struct rly_ktls_material tx, rx;
    int rc = rly_ktls_derive_keep(data->ssl, 1, &tx, &rx);
    if (rc == 0)
        rc = rly_rec_init(&data->st->tls, &tx, kernel_rx ? NULL : &rx);
    if (rc == 0 && kernel_rx) {
        rc = rly_ktls_enable(data->fd, NULL, &rx);
        if (rc < 0 && rc != -ENOENT && rc != -ENOPROTOOPT && rc != -EINVAL) {
            cr_warn("agent %s: kernel TLS set-up failed half way: %s", data->addr,
                    strerror(-rc));
            rly__conn_close(w, data, "kernel TLS set-up failed");
        }
    }
    rly_ktls_material_wipe(&tx);
    rly_ktls_material_wipe(&rx);
    if (rc == 0)
        rly_ktls_forget(data->ssl);
    else
        rly_rec_free(&data->st->tls);
    return rc;
}

int rly__ktls_start(struct rly_worker *w, struct rly_conn *data)
{
    /* Only the camera's direction goes to the kernel. The recorder's bytes are sealed by our
     * record layer into `out`, behind DataAccepted whose ciphertext may still be queued there:
     * a kernel TX would encrypt those bytes a second time. */
    return take_keys(w, data, 1);
}

int rly__inplace_start(struct rly_worker *w, struct rly_conn *data)
{
    int rc = take_keys(w, data, 0);
    if (rc < 0) {
        cr_debug("agent %s: stream %llu stays on BoringSSL's record layer: %s", data->addr,
                 (unsigned long long)data->stream_id, strerror(-rc));
        rly_ktls_forget(data->ssl); /* the last path that could use them */
    }
    return rc;
}

enum in_kind { IN_NONE = 0, IN_RING, IN_POOL, IN_BIG };

/* A plaintext data connection: its bytes are sent on as they are. */
static int plain(const struct rly_conn *data)
{
    return data->st->path == RLY_PATH_PLAIN;
}

/* Gives the buffer the camera's records were in back: to the ring, or to its pool. */
static void release_in(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    if (st->in_kind == IN_RING) {
        rly__ring_recycle(w, st->in_bid);
    } else if (st->in_kind == IN_POOL) {
        data->frame.len = 0;
        rly__buf_give(w, &data->frame);
    } else if (st->in_kind == IN_BIG) {
        rly__pool_put(&w->big_pool, st->in);
    }
    st->in = NULL;
    st->in_kind = IN_NONE;
    st->in_start = st->in_end = st->in_cap = 0;
}

void rly__inplace_keep_recv_buffer(struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    /* Only a big buffer is read into while a send is in flight (read_on_while_sending); a
     * ring read's buffer is picked when it completes and recycled by its completion. */
    if (st->in_kind != IN_BIG)
        return;
    data->recv_big = st->in;
    st->in = NULL;
    st->in_kind = IN_NONE;
    st->in_start = st->in_end = st->in_cap = 0;
}

void rly__inplace_release(struct rly_worker *w, struct rly_conn *data)
{
    release_in(w, data);
    if (data->st->sendbuf) {
        rly__pool_put(&w->big_pool, data->st->sendbuf);
        data->st->sendbuf = NULL;
    }
}

/* Gives the stream a buffer of its own to read into: a big one while it is busy (and one is
 * free), else a pool buffer. 0 or -ENOBUFS. */
static int own_buffer(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    struct rly_pool *big = &w->big_pool;
    if (st->busy && (big->n_free || big->n_made < big->limit) &&
        (st->in = rly__pool_get(w, big, RLY_BIG_BUF_SIZE))) {
        st->in_kind = IN_BIG;
        st->in_cap = RLY_BIG_BUF_SIZE;
    } else {
        if (rly__buf_take(w, &data->frame) < 0)
            return -ENOBUFS;
        data->frame.len = 1; /* held: not given back by a stray rly__buf_give */
        st->in = data->frame.mem;
        st->in_kind = IN_POOL;
        st->in_cap = RLY_BUF_SIZE;
    }
    st->in_start = st->in_end = 0;
    return 0;
}

/* Reads into a buffer of the stream's own (the tick retries when there is none). */
static void read_into_own(struct rly_worker *w, struct rly_conn *data)
{
    if (own_buffer(w, data) < 0) {
        data->starved = 1;
        return;
    }
    rly__post_recv_into(w, data, data->st->in, data->st->in_cap);
}

/* A plaintext stream's next burst: read from the ring and copied on while bursts fit a ring
 * buffer; spliced when the last read filled one (more is waiting), or when the streams'
 * buffer group was empty (rly__inplace_on_recv: -ENOBUFS). */
static void plain_next(struct rly_worker *w, struct rly_conn *data)
{
    if (data->st->busy)
        rly__splice_up(w, data);
    else
        rly__post_stream_recv(w, data);
}

void rly__inplace_wait(struct rly_worker *w, struct rly_conn *data)
{
    data->st->busy = 0;
    plain_next(w, data);
}

/* Waits for the camera's next records. A quiet stream holds no buffer meanwhile (the ring
 * picks one when they come); a busy one reads into a buffer of its own, and so does one that
 * found the streams' buffer group empty (rly__inplace_on_recv: -ENOBUFS). */
static void read_more(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    if (plain(data)) {
        plain_next(w, data);
        return;
    }
    if (!st->busy) {
        rly__post_stream_recv(w, data);
        return;
    }
    read_into_own(w, data);
}

/* close_notify came and everything before it was sent: pass the half-close on. */
static void finish_rx(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec)
{
    release_in(w, data);
    data->read_eof = 1;
    shutdown(rec->fd, SHUT_WR);
    rec->eof_sent = 1;
    rly__stream_check_done(w, data, rec);
}

void rly__inplace_on_recv(struct rly_worker *w, struct rly_conn *data, int ring, unsigned bid,
                          int res)
{
    struct rly_stream *st = data->st;
    if (res == -ENOBUFS) { /* the ring ran dry: this stream reads into a buffer of its own */
        atomic_fetch_add_explicit(&w->relay->counters.buffers_exhausted, 1,
                                  memory_order_relaxed);
        if (plain(data))
            rly__splice_up(w, data); /* or is spliced, which needs no buffer */
        else
            read_into_own(w, data);
        return;
    }
    if (res <= 0) {
        if (ring)
            rly__ring_recycle(w, bid);
        if (res == 0 && plain(data)) { /* the camera's half-close: passed on once sent */
            st->rx_eof = 1;
            rly__inplace_pump(w, data);
            return;
        }
        data->read_eof = 1;
        rly__conn_close(w, data, res == 0 ? "data connection closed without close_notify"
                                          : strerror(-res));
        return;
    }
    if (plain(data))
        rly__stat_add(&w->stat_plain_copied, 1);
    if (ring) {
        st->in = rly__ring_buf(w, bid);
        st->in_bid = (uint16_t)bid;
        st->in_kind = IN_RING;
        st->in_cap = RLY_BUF_SIZE;
        st->in_start = 0;
        st->in_end = (uint32_t)res;
        st->busy = res == RLY_BUF_SIZE; /* more was waiting than a ring buffer holds */
    } else {
        st->in_end += (uint32_t)res;
        if (st->in_kind == IN_BIG)
            st->busy = res >= RLY_BUF_SIZE; /* back to the ring once reads are small again */
    }
    rly__inplace_pump(w, data);
}

/* A busy stream's big buffer goes to the send in flight, and the camera's next bytes are read
 * into another one meanwhile (with the partial record at the end copied over): reading and
 * sending overlap, as they must for one stream to go faster than a round trip per buffer.
 * Only when no whole record is left unopened behind the spans being sent. */
static void read_on_while_sending(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    struct rly_pool *big = &w->big_pool;
    uint32_t tail = st->in_end - st->in_start;
    if (st->in_kind != IN_BIG || st->rx_eof || data->read_eof || st->sendbuf ||
        (tail && rly_rec_need(st->in + st->in_start, tail) <= (int)tail) ||
        !(big->n_free || big->n_made < big->limit))
        return;
    uint8_t *next = rly__pool_get(w, big, RLY_BIG_BUF_SIZE);
    if (!next)
        return;
    memcpy(next, st->in + st->in_start, tail);
    st->sendbuf = st->in; /* given back when the send completes */
    st->in = next;
    st->in_start = 0;
    st->in_end = tail;
    rly__post_recv_into(w, data, st->in + tail, st->in_cap - tail);
}

void rly__inplace_pump(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    struct rly_conn *rec = rly__conn(w, data->peer);
    if (!rec || rec->closing || data->closing || data->read_eof)
        return;
    if (rec->send_busy || rec->out.len)
        return; /* the recorder has not taken the last bytes yet: its completion pumps again */
    if (st->rx_eof) { /* close_notify opened (its direction is closed) and all before it sent */
        finish_rx(w, data, rec);
        return;
    }
    if (data->recv_busy)
        return; /* bytes are still coming in (behind these, if any): the completion pumps */
    if (!st->in) {
        read_more(w, data);
        return;
    }
    struct rly_rec_span spans[RLY_STREAM_IOV];
    unsigned n = 0;
    int eof = 0;
    uint8_t *base = st->in + st->in_start;
    uint32_t avail = st->in_end - st->in_start;
    int used;
    if (plain(data)) { /* nothing to open: the bytes go on as they came */
        spans[0] = (struct rly_rec_span){.off = 0, .len = avail};
        n = avail ? 1 : 0;
        used = (int)avail;
    } else {
        used = rly_rec_open(&st->tls, base, avail, spans, RLY_STREAM_IOV, &n, &eof);
    }
    if (used < 0) {
        cr_warn("agent %s: stream %llu: bad TLS record from the camera (%s): closing",
                data->addr, (unsigned long long)data->stream_id,
                used == -EBADMSG   ? "authentication failed"
                : used == -ENOTSUP ? "post-handshake message"
                : used == -EMSGSIZE ? "record too long"
                                    : "malformed");
        rly__conn_close(w, data, "bad TLS record");
        return;
    }
    st->in_start += (uint32_t)used;
    if (used > 0)
        data->deadline_ms = 0; /* a whole record came: no partial one is waiting */
    if (eof)
        st->rx_eof = 1;
    if (n) {
        uint32_t total = 0;
        for (unsigned i = 0; i < n; i++) {
            st->iov[i].iov_base = base + spans[i].off;
            st->iov[i].iov_len = spans[i].len;
            total += spans[i].len;
        }
        memset(&st->msg, 0, sizeof(st->msg));
        st->msg.msg_iov = st->iov;
        st->msg.msg_iovlen = n;
        st->sending = total;
        rly__post_sendmsg(w, rec, &st->msg);
        read_on_while_sending(w, data);
        return;
    }
    if (st->rx_eof) {
        finish_rx(w, data, rec);
        return;
    }
    uint32_t tail = st->in_end - st->in_start;
    if (tail == 0) {
        release_in(w, data);
        read_more(w, data);
        return;
    }
    int need = rly_rec_need(st->in + st->in_start, tail);
    if (need < 0) {
        cr_warn("agent %s: stream %llu: bad TLS record header from the camera: closing",
                data->addr, (unsigned long long)data->stream_id);
        rly__conn_close(w, data, "bad TLS record");
        return;
    }
    /* A record split across reads: keep its start at the front of a buffer of our own and
     * read the rest behind it (a ring buffer goes back; its next use may be anyone's). */
    if (st->in_kind == IN_RING) {
        uint8_t *ring_part = st->in + st->in_start;
        unsigned bid = st->in_bid;
        if (own_buffer(w, data) < 0) {
            st->in = ring_part - st->in_start; /* still the ring buffer: retried on the tick */
            data->starved = 1;
            return;
        }
        memcpy(st->in, ring_part, tail);
        rly__ring_recycle(w, bid);
    } else if (st->in_start) {
        memmove(st->in, st->in + st->in_start, tail);
    }
    st->in_start = 0;
    st->in_end = tail;
    /* The rest of the record must come within three keepalive intervals, the time after
     * which a silent tunnel counts as dead: a camera that stops half way through a record
     * would otherwise hold this buffer for ever. Set once per record, so a trickle of bytes
     * does not put it off. */
    if (!data->deadline_ms)
        data->deadline_ms =
            cr_now_ms() + 3ull * atomic_load_explicit(&w->relay->keepalive_ms,
                                                      memory_order_relaxed);
    rly__post_recv_into(w, data, st->in + tail, st->in_cap - tail);
}

void rly__inplace_sent(struct rly_worker *w, struct rly_conn *rec, int res)
{
    struct rly_conn *data = rly__conn(w, rec->peer);
    if (res < 0) {
        rly__conn_close(w, rec, strerror(-res));
        return;
    }
    if (!data || !data->st)
        return;
    struct rly_stream *st = data->st;
    rly__stream_count(w, rec, (uint64_t)res);
    if ((uint32_t)res < st->sending) { /* short send: skip what left, send the rest */
        st->sending -= (uint32_t)res;
        size_t left = (size_t)res;
        while (left && st->msg.msg_iovlen) {
            struct iovec *v = st->msg.msg_iov;
            if (left < v->iov_len) {
                v->iov_base = (uint8_t *)v->iov_base + left;
                v->iov_len -= left;
                break;
            }
            left -= v->iov_len;
            st->msg.msg_iov++;
            st->msg.msg_iovlen--;
        }
        rly__post_sendmsg(w, rec, &st->msg);
        return;
    }
    st->sending = 0;
    if (st->sendbuf) {
        rly__pool_put(&w->big_pool, st->sendbuf);
        st->sendbuf = NULL;
    }
    rly__inplace_pump(w, data);
}

/* Where a record of up to need bytes goes behind what data->out holds, or NULL. */
static uint8_t *out_room(struct rly_worker *w, struct rly_conn *data, uint32_t need)
{
    if (rly__buf_take(w, &data->out) < 0)
        return NULL;
    uint32_t at = data->out.off + data->out.len;
    /* Always room: the recorder is read only once `out` has drained. */
    return at + need <= data->out.cap ? data->out.mem + at : NULL;
}

int rly__inplace_seal(struct rly_worker *w, struct rly_conn *data, const uint8_t *p, int len)
{
    uint8_t *at = len <= RLY_PLAIN_CAP ? out_room(w, data, (uint32_t)len + RLY_REC_OVERHEAD)
                                       : NULL;
    int n = at ? rly_rec_seal(&data->st->tls, at, p, (size_t)len) : -ENOBUFS;
    if (n > 0)
        data->out.len += (uint32_t)n;
    return n < 0 ? n : 0;
}

int rly__inplace_close_notify(struct rly_worker *w, struct rly_conn *data)
{
    uint8_t *at = out_room(w, data, 2 + RLY_REC_OVERHEAD);
    int n = at ? rly_rec_seal_close_notify(&data->st->tls, at) : -ENOBUFS;
    if (n > 0)
        data->out.len += (uint32_t)n;
    return n < 0 ? n : 0;
}
