/* Spliced streams: the kernel moves the bytes from socket to pipe to socket and they never
 * enter userspace. Used for plaintext data connections (both directions) and, where the
 * kernel has the TLS ULP, for the camera's direction of a kernel-TLS data connection (the
 * kernel decrypts; the few bytes a recorder sends the camera are sealed by our record layer,
 * as on the in-place path, so they queue behind DataAccepted in the same send buffer).
 *
 * A plaintext stream splices only bursts bigger than a ring buffer: a camera frame that fits
 * one is cheaper copied through the receive ring with io_uring alone (stream_inplace.c) than
 * spliced with a poll and two splice(2) calls -- measured 10 against 16 us of relay CPU per
 * 7.8 KB frame at 1,000 paced streams.
 *
 * Why poll + splice(2) rather than IORING_OP_SPLICE: io_uring executes every splice request
 * in an io-wq worker thread (io_uring/splice.c refuses the non-blocking inline issue), and a
 * socket -> pipe splice there blocks that kernel thread until the camera sends. Thousands of
 * mostly idle streams would park thousands of kernel threads and pay a thread hand-off per
 * frame. A one-shot IORING_OP_POLL_ADD per wait plus non-blocking splice(2) calls from the
 * worker costs one completion and two system calls per burst, with no thread in between.
 *
 * Backpressure: a direction moves at most one pipe's worth (64 KiB) at a time; while its
 * pipe holds bytes the destination is polled for POLLOUT and the source is not read.
 *
 * Pipes are lent per burst from a per-worker pool: a direction holds one only while bytes are
 * in it. A camera frame passes through in one go, so thousands of paced streams share a few
 * pipes instead of holding four descriptors and two pipe buffers each. */
#include "relay/worker.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tls.h>

#include "common/log.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

#define SPLICE_CHUNK (64 * 1024)
#define ROUNDS_PER_EVENT 8 /* then yield to other streams (a poll that fires at once) */

/* After a kernel-TLS socket refused to splice (a record that is not application data), reads
 * that record: 1 for close_notify, -errno otherwise. */
static int ktls_read_control(int fd)
{
    uint8_t buf[64];
    char cbuf[CMSG_SPACE(sizeof(unsigned char))];
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof(cbuf)};
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0)
        return -errno;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    if (cm && cm->cmsg_level == SOL_TLS && cm->cmsg_type == TLS_GET_RECORD_TYPE &&
        *CMSG_DATA(cm) == 21 /* alert */ && n >= 2 && buf[1] == 0 /* close_notify */)
        return 1;
    return -EPROTO;
}

/* A pipe from the worker's pool, or a new one. 0 or -errno. */
static int pipe_take(struct rly_worker *w, int p[2])
{
    if (w->n_pipes) {
        w->n_pipes--;
        p[0] = w->pipes[w->n_pipes][0];
        p[1] = w->pipes[w->n_pipes][1];
        return 0;
    }
    return pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0 ? -errno : 0;
}

/* Gives an empty pipe back to the pool (closed when the pool is full). */
static void pipe_give(struct rly_worker *w, int p[2])
{
    if (p[0] < 0)
        return;
    if (w->n_pipes < RLY_PIPE_POOL) {
        w->pipes[w->n_pipes][0] = p[0];
        w->pipes[w->n_pipes][1] = p[1];
        w->n_pipes++;
    } else {
        close(p[0]);
        close(p[1]);
    }
    p[0] = p[1] = -1;
}

void rly__splice_release(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_stream *st = data->st;
    int *pipes[] = {st->pipe_up, st->pipe_down};
    uint32_t held[] = {st->in_pipe_up, st->in_pipe_down};
    for (unsigned i = 0; i < 2; i++) {
        if (pipes[i][0] < 0)
            continue;
        if (held[i]) { /* bytes nobody will read: the pipe cannot be lent again */
            close(pipes[i][0]);
            close(pipes[i][1]);
            pipes[i][0] = pipes[i][1] = -1;
        } else {
            pipe_give(w, pipes[i]);
        }
    }
    st->in_pipe_up = st->in_pipe_down = 0;
}

/* Waits for a direction's next burst. The camera's bytes on a plaintext stream wait in the
 * receive ring (relay/stream_inplace.c copies a burst that fits one ring buffer with a single
 * send, and hands a bigger one back here); everything else waits for a poll. */
static void wait_burst(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec, int up)
{
    if (up && data->st->path == RLY_PATH_PLAIN)
        rly__inplace_wait(w, data);
    else
        rly__post_poll(w, up ? data : rec, 0);
}

/* Moves one direction's bytes until a side would block, the source ends, or the round limit.
 * up: camera (data connection) -> recorder; else recorder -> camera. */
static void pump(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec, int up)
{
    struct rly_stream *st = data->st;
    struct rly_conn *src = up ? data : rec, *dst = up ? rec : data;
    int *pipe = up ? st->pipe_up : st->pipe_down;
    uint32_t *held = up ? &st->in_pipe_up : &st->in_pipe_down;
    uint8_t *eof = up ? &st->eof_up : &st->eof_down;
    int ktls_src = up && st->path == RLY_PATH_KTLS_SPLICE;

    if (!up && (data->send_busy || data->out.len))
        return; /* DataAccepted first: the agent's drain resumes this direction */
    int drained = 0; /* the last read took less than it asked for: the socket is likely empty */
    for (int round = 0; round < ROUNDS_PER_EVENT; round++) {
        if (src->closing || dst->closing)
            return;
        if (*held) {
            ssize_t n = splice(pipe[0], NULL, dst->fd, NULL, *held,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0) {
                *held -= (uint32_t)n;
                rly__stream_count(w, rec, (uint64_t)n);
                if (!*held)
                    pipe_give(w, pipe); /* empty: lend it to the next burst */
                continue;
            }
            if (n < 0 && errno == EAGAIN) {
                rly__post_poll(w, dst, 1);
                return;
            }
            rly__conn_close(w, dst, n < 0 ? strerror(errno) : "splice wrote nothing");
            return;
        }
        if (drained && !*eof) {
            /* Wait for the next burst instead of a read that would only say EAGAIN: one
             * system call less per camera frame (a poll fires at once if bytes came). */
            wait_burst(w, data, rec, up);
            return;
        }
        if (*eof) {
            if (!dst->eof_sent) {
                shutdown(dst->fd, SHUT_WR);
                dst->eof_sent = 1;
                src->read_eof = 1;
            }
            rly__stream_check_done(w, data, rec);
            return;
        }
        if (pipe[0] < 0 && pipe_take(w, pipe) < 0) {
            rly__conn_close(w, src, "out of pipes");
            return;
        }
        ssize_t n = splice(src->fd, NULL, pipe[1], NULL, SPLICE_CHUNK,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            *held += (uint32_t)n;
            drained = n < SPLICE_CHUNK;
            if (up && st->path == RLY_PATH_PLAIN)
                rly__stat_add(&w->stat_plain_spliced, 1);
            continue;
        }
        if (n == 0) {
            *eof = 1;
            continue;
        }
        if (errno == EAGAIN) {
            wait_burst(w, data, rec, up);
            return;
        }
        if (ktls_src && (errno == EINVAL || errno == EIO)) {
            int rc = ktls_read_control(src->fd);
            if (rc == 1) {
                *eof = 1;
                continue;
            }
        }
        rly__conn_close(w, src, strerror(errno));
        return;
    }
    /* Still busy: let the other streams have their turn; the poll fires again at once. */
    rly__post_poll(w, *held ? dst : src, *held ? 1 : 0);
}

void rly__splice_up(struct rly_worker *w, struct rly_conn *data)
{
    struct rly_conn *rec = rly__conn(w, data->peer);
    if (rec && !rec->closing && !data->closing)
        pump(w, data, rec, 1);
}

int rly__splice_start(struct rly_worker *w, struct rly_conn *data, struct rly_conn *rec,
                      const uint8_t *leftover, uint32_t leftover_len)
{
    struct rly_stream *st = data->st;
    if (leftover_len) { /* stream bytes that came right behind the hello: an empty pipe
                           takes them whole (64 KiB > one hello buffer) */
        int rc = pipe_take(w, st->pipe_up);
        if (rc < 0)
            return rc;
        ssize_t n = write(st->pipe_up[1], leftover, leftover_len);
        if (n != (ssize_t)leftover_len)
            return n < 0 ? -errno : -EIO;
        st->in_pipe_up = leftover_len;
    }
    pump(w, data, rec, 1);
    if (st->path == RLY_PATH_PLAIN)
        pump(w, data, rec, 0);
    else if (!data->send_busy && !data->out.len)
        rly__post_recv(w, rec); /* kernel TLS: the recorder's bytes are sealed by us */
    return 0;
}

void rly__splice_on_poll(struct rly_worker *w, struct rly_conn *c, int out, int res)
{
    struct rly_conn *peer = rly__conn(w, c->peer);
    if (!peer || peer->closing)
        return;
    struct rly_conn *data = c->kind == RLY_CONN_AGENT ? c : peer;
    struct rly_conn *rec = c->kind == RLY_CONN_AGENT ? peer : c;
    if (!data->st)
        return;
    if (res < 0 && res != -ECANCELED) {
        rly__conn_close(w, c, strerror(-res));
        return;
    }
    /* POLLIN on the camera's side or POLLOUT on the recorder's moves the camera's bytes. */
    int up = (c == data) != out;
    if (!up && data->st->path != RLY_PATH_PLAIN)
        return;
    pump(w, data, rec, up);
}
