/* Streams: a recorder connecting to a camera endpoint, the data connection the agent opens for
 * it, their pairing, the choice of how the stream's bytes move (rly__stream_pair), and the
 * BoringSSL path kept as the fallback. The faster paths live beside this file:
 * stream_inplace.c (our record layer) and stream_splice.c (plaintext or kernel TLS, spliced).
 *
 * On every path each direction holds at most one buffer (or one pipe) in flight: the relay
 * reads a side again only after what it read from it was sent on. A slow peer therefore stops
 * the other side's reads (TCP pushes back to the sender) instead of growing a queue. */
#include "relay/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "common/log.h"
#include "common/util.h"

static void unlink_pending(struct rly_worker *w, struct rly_camera *cam, struct rly_conn *rec)
{
    int32_t me = rly__idx(w, rec), *link = &cam->pending_head;
    while (*link >= 0) {
        if (*link == me) {
            *link = rec->next_pending;
            rec->next_pending = -1;
            return;
        }
        link = &w->conns[*link].next_pending;
    }
}

void rly__recorder_start(struct rly_worker *w, struct rly_conn *rec, struct rly_conn *listener)
{
    struct rly_camera *cam = rly__camera(w, listener->camera);
    if (!cam) {
        rly__conn_close(w, rec, "camera removed");
        return;
    }
    rec->camera = listener->camera;
    rec->service = listener->service;
    const char *service = cam->service[rec->service];
    struct rly_conn *tunnel = rly__conn(w, cam->tunnel);
    if (!tunnel || tunnel->state != RLY_AGENT_TUNNEL) {
        cr_info("recorder %s for %s/%s: camera is offline, closing", rec->addr, cam->serial,
                service);
        rly__conn_close(w, rec, "camera offline");
        return;
    }
    rec->stream_id = ++w->next_stream_id;
    cr_random_bytes(rec->token, sizeof(rec->token));
    rec->deadline_ms = cr_now_ms() + RLY_STREAM_OPEN_TIMEOUT_MS;
    rec->next_pending = cam->pending_head;
    cam->pending_head = rly__idx(w, rec);

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__OpenStream os = CAMRELAY__OPEN_STREAM__INIT;
    os.stream_id = rec->stream_id;
    os.service = (char *)service;
    os.token.data = rec->token;
    os.token.len = sizeof(rec->token);
    f.body_case = CAMRELAY__FRAME__BODY_OPEN_STREAM;
    f.open_stream = &os;
    cr_debug("recorder %s for %s/%s: asking for stream %llu", rec->addr, cam->serial, service,
             (unsigned long long)rec->stream_id);
    if (rly__agent_send_frame(w, tunnel, &f) < 0)
        rly__conn_close(w, rec, "cannot reach the tunnel");
    /* The recorder is not read until its data connection arrives: what it sends first (an
     * RTSP OPTIONS, an HTTP GET) waits in the kernel. */
}

static void count_path(struct rly_worker *w, struct rly_camera *cam, unsigned path)
{
    atomic_fetch_add_explicit(&w->relay->counters.streams_by_path[path], 1, memory_order_relaxed);
    atomic_store_explicit(&cam->last_path, (uint8_t)(path + 1), memory_order_relaxed);
}

int rly__stream_pair(struct rly_worker *w, struct rly_conn *data, const Camrelay__DataHello *h,
                     const char **why)
{
    struct rly_relay *r = w->relay;
    int32_t cam_idx = h->serial ? rly__camera_find(w, h->serial) : -1;
    struct rly_camera *cam = rly__camera(w, cam_idx);
    if (!cam) {
        *why = "unknown serial";
        return -ENOENT;
    }
    struct rly_conn *rec = NULL;
    for (int32_t i = cam->pending_head; i >= 0; i = w->conns[i].next_pending) {
        if (w->conns[i].stream_id == h->stream_id) {
            rec = &w->conns[i];
            break;
        }
    }
    if (!rec) {
        *why = "no such stream waiting (expired or already connected)";
        return -ENOENT;
    }
    if (h->token.len != RLY_TOKEN_LEN || !cr_memeq_ct(h->token.data, rec->token, RLY_TOKEN_LEN)) {
        *why = "stream token does not match";
        return -EACCES;
    }
    unlink_pending(w, cam, rec);
    cr_wipe(rec->token, sizeof(rec->token));
    rec->state = 1;
    rec->deadline_ms = 0;
    rec->peer = rly__idx(w, data);
    data->peer = rly__idx(w, rec);
    data->camera = cam_idx;
    data->stream_id = rec->stream_id;
    data->state = RLY_AGENT_DATA;
    data->deadline_ms = 0;
    atomic_fetch_add_explicit(&cam->open_streams, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->stat_streams, 1, memory_order_relaxed);
    atomic_fetch_add(&r->counters.streams_opened, 1);
    cr_info("stream open serial=%s stream=%llu service=%s recorder=%s", cam->serial,
            (unsigned long long)rec->stream_id, cam->service[rec->service], rec->addr);

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__DataAccepted acc = CAMRELAY__DATA_ACCEPTED__INIT;
    acc.stream_id = rec->stream_id;
    f.body_case = CAMRELAY__FRAME__BODY_DATA_ACCEPTED;
    f.data_accepted = &acc;
    if (rly__agent_send_frame(w, data, &f) < 0)
        return -EPROTO;
    data->st = cr_xcalloc(1, sizeof(*data->st)); /* once per stream, freed with data */
    data->st->pipe_up[0] = data->st->pipe_up[1] = -1;
    data->st->pipe_down[0] = data->st->pipe_down[1] = -1;
    if (data->plain || (w->relay->ktls && rly__ktls_start(w, data) == 0)) {
        data->st->path = data->plain ? RLY_PATH_PLAIN : RLY_PATH_KTLS_SPLICE;
        count_path(w, cam, data->st->path);
        int rc = rly__splice_start(w, data, rec, data->frame.mem, data->frame.len);
        data->frame.len = 0;
        rly__buf_give(w, &data->frame);
        if (rc < 0)
            *why = "cannot set up splicing";
        return rc;
    }
    if (data->closing) {
        *why = "kernel TLS set-up failed half way";
        return -EIO;
    }
    data->st->path = rly__inplace_start(w, data) == 0 ? RLY_PATH_TLS_INPLACE : RLY_PATH_TLS_BIO;
    count_path(w, cam, data->st->path);
    /* Bytes the agent sent right behind its hello are already stream bytes. */
    if (data->frame.len && rly__buf_take(w, &rec->out) < 0) {
        *why = "relay out of buffers";
        return -ENOBUFS;
    }
    if (data->frame.len) {
        memcpy(rec->out.mem, data->frame.mem, data->frame.len);
        rec->out.off = 0;
        rec->out.len = data->frame.len;
        data->frame.len = 0;
        rly__post_send(w, rec);
    }
    rly__buf_give(w, &data->frame); /* raw bytes from here on: no frames to assemble */
    /* The recorder's first bytes go out behind DataAccepted: read it once that has left
     * (rly__stream_agent_drained), so its record never waits for room in `out`. */
    if (!data->send_busy && !data->out.len && !BIO_ctrl_pending(SSL_get_wbio(data->ssl)))
        rly__post_recv(w, rec);
    return 0;
}

void rly__stream_failed(struct rly_worker *w, struct rly_camera *cam, uint64_t stream_id,
                        const char *reason)
{
    if (!cam)
        return;
    for (int32_t i = cam->pending_head; i >= 0; i = w->conns[i].next_pending) {
        struct rly_conn *rec = &w->conns[i];
        if (rec->stream_id == stream_id) {
            cr_warn("camera %s could not open stream %llu (%s): %s", cam->serial,
                    (unsigned long long)stream_id, cam->service[rec->service],
                    reason ? reason : "no reason given");
            rly__conn_close(w, rec, "stream failed at the camera");
            return;
        }
    }
}

/* Both directions finished and everything sent: the stream is over. */
void rly__stream_check_done(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec)
{
    if (!rec->eof_sent || !data->eof_sent)
        return;
    if (rec->out.len || rec->send_busy || data->out.len || data->send_busy ||
        (data->ssl && BIO_ctrl_pending(SSL_get_wbio(data->ssl))))
        return;
    rly__conn_close(w, rec, "stream finished");
}

void rly__stream_count(struct rly_worker *w, struct rly_conn *rec, uint64_t n)
{
    struct rly_camera *cam = rly__camera(w, rec->camera);
    rec->bytes += n;
    if (cam)
        atomic_fetch_add_explicit(&cam->bytes_relayed, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->relay->counters.bytes_relayed, n, memory_order_relaxed);
}

static int path_of(const struct rly_conn *data)
{
    return data->st ? data->st->path : RLY_PATH_TLS_BIO;
}

void rly__stream_agent_readable(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_conn *rec = rly__conn(w, data->peer);
    if (!rec || rec->closing)
        return;
    if (path_of(data) == RLY_PATH_TLS_INPLACE) {
        rly__inplace_pump(w, data);
        return;
    }
    if (path_of(data) != RLY_PATH_TLS_BIO)
        return; /* spliced: the pipes move the bytes */
    if (rec->out.len || rec->send_busy || rec->eof_sent)
        return; /* backpressure: the recorder has not taken the last buffer yet */
    if (rly__buf_take(w, &rec->out) < 0) {
        data->starved = 1; /* the tick tries again; the agent's bytes wait in TCP meanwhile */
        return;
    }
    int n = SSL_read(data->ssl, rec->out.mem, RLY_PLAIN_CAP);
    if (n > 0) {
        rec->out.off = 0;
        rec->out.len = (uint32_t)n;
        rly__post_send(w, rec);
        return;
    }
    int e = SSL_get_error(data->ssl, n);
    ERR_clear_error();
    rly__buf_give(w, &rec->out); /* nothing decrypted: a quiet stream holds no buffer */
    if (e == SSL_ERROR_WANT_READ && !data->read_eof) {
        rly__post_recv(w, data);
        return;
    }
    if (e == SSL_ERROR_ZERO_RETURN) {
        /* The camera side finished sending (close_notify): pass the half-close on. */
        shutdown(rec->fd, SHUT_WR);
        rec->eof_sent = 1;
        data->read_eof = 1;
        rly__stream_check_done(w, data, rec);
        return;
    }
    rly__conn_close(w, data, e == SSL_ERROR_WANT_READ || e == SSL_ERROR_SYSCALL
                                 ? "data connection closed without close_notify"
                                 : "TLS error on data connection");
}

void rly__stream_agent_drained(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_conn *rec = rly__conn(w, data->peer);
    if (!rec || rec->closing)
        return;
    if (path_of(data) == RLY_PATH_PLAIN)
        rly__splice_on_poll(w, data, 1, 0); /* DataAccepted has left: splice towards it */
    else if (!rec->read_eof)
        rly__post_recv(w, rec); /* the recorder's last bytes have left: read it again */
    rly__stream_check_done(w, data, rec);
}

void rly__recorder_on_recv(struct rly_worker *w, struct rly_conn *rec, const uint8_t *data,
                           int len)
{
    struct rly_conn *dc = rly__conn(w, rec->peer);
    if (len < 0) {
        rly__conn_close(w, rec, strerror(-len));
        return;
    }
    if (!dc || dc->closing) {
        rly__conn_close(w, rec, "no data connection");
        return;
    }
    /* Our record layer seals this direction on the in-place and the kernel-TLS paths. */
    int inplace = path_of(dc) == RLY_PATH_TLS_INPLACE || path_of(dc) == RLY_PATH_KTLS_SPLICE;
    if (len == 0) {
        /* The recorder finished sending: close_notify to the agent, keep the other way. */
        rec->read_eof = 1;
        if (inplace) {
            if (rly__inplace_close_notify(w, dc) < 0) {
                rly__conn_close(w, rec, "cannot seal close_notify");
                return;
            }
        } else {
            SSL_shutdown(dc->ssl);
            ERR_clear_error();
        }
        dc->eof_sent = 1;
        rly__agent_flush(w, dc);
        rly__stream_check_done(w, dc, rec);
        return;
    }
    if (inplace ? rly__inplace_seal(w, dc, data, len) < 0 : SSL_write(dc->ssl, data, len) != len) {
        ERR_clear_error();
        rly__conn_close(w, rec, "TLS write to the data connection failed");
        return;
    }
    rly__stream_count(w, rec, (uint64_t)len);
    rly__agent_flush(w, dc); /* the next recorder read waits for this to leave */
}

void rly__recorder_on_sent(struct rly_worker *w, struct rly_conn *rec)
{
    rly__buf_give(w, &rec->out); /* sent: taken again when the agent's next bytes come */
    struct rly_conn *data = rly__conn(w, rec->peer);
    if (!data)
        return;
    rly__stream_agent_readable(w, data);
    if (!rec->closing && !data->closing)
        rly__stream_check_done(w, data, rec);
}

void rly__recorder_tick(struct rly_worker *w, struct rly_conn *rec, uint64_t now)
{
    if (rec->state || !rec->deadline_ms || now <= rec->deadline_ms)
        return;
    struct rly_camera *cam = rly__camera(w, rec->camera);
    cr_warn("camera %s did not open stream %llu within %d ms: closing recorder %s",
            cam ? cam->serial : "?", (unsigned long long)rec->stream_id,
            RLY_STREAM_OPEN_TIMEOUT_MS, rec->addr);
    rly__conn_close(w, rec, "stream open timeout");
}

void rly__stream_on_close(struct rly_worker *w, struct rly_conn *c)
{
    struct rly_camera *cam = rly__camera(w, c->camera);
    if (c->kind == RLY_CONN_RECORDER && !c->state && cam)
        unlink_pending(w, cam, c);
    struct rly_conn *p = rly__conn(w, c->peer);
    if (!p)
        return;
    struct rly_conn *rec = c->kind == RLY_CONN_RECORDER ? c : p;
    struct rly_conn *data = c->kind == RLY_CONN_RECORDER ? p : c;
    if (data->st && rec->send_busy && rec->send_iov) {
        /* The recorder's sendmsg in flight still reads the stream's msghdr and buffers: they
         * stay with the recorder until its completion frees it. A read in flight on the data
         * connection may be landing in the stream's next big buffer (read on while sending):
         * that one stays with the data connection until the read completes. */
        if (data->recv_busy)
            rly__inplace_keep_recv_buffer(data);
        rec->st = data->st;
        data->st = NULL;
        rec->frame = data->frame; /* a pool buffer the records may be in */
        data->frame = (struct rly_buf){0};
    }
    c->peer = -1;
    p->peer = -1;
    if (cam)
        atomic_fetch_sub_explicit(&cam->open_streams, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->stat_streams, 1, memory_order_relaxed);
    atomic_fetch_add(&w->relay->counters.streams_closed, 1);
    cr_info("stream closed serial=%s stream=%llu bytes=%llu", cam ? cam->serial : "?",
            (unsigned long long)rec->stream_id, (unsigned long long)rec->bytes);
    rly__conn_close(w, p, "the other side closed");
}

void rly__stream_free(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    if (!st)
        return;
    rly__inplace_release(w, data); /* a ring or big buffer it still held */
    rly_rec_free(&st->tls);
    rly__splice_release(w, data); /* pipes it still held */
    free(st);
    data->st = NULL;
}
