/* camrelay-bench's load generator: cameras and recorders on epoll threads (capacity_gen.h). */
#include "bench/capacity_gen.h"

#include <errno.h>
#include <math.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/auth.h"
#include "common/frame.h"
#include "common/net.h"
#include "common/util.h"
#include "relay/relay.h"

#define HDR_LEN 32              /* frame header: magic, stream, seq, send ns, length, lag ns */
#define FRAME_MAGIC 0x46425243u /* "CRBF" */
#define HELLO_MAGIC 0x4c454843u /* first 8 bytes of a direct/haproxy stream: magic, stream */
#define CTRL_BUF 4096           /* control frames in and out before a stream starts */
#define SCRATCH (256 * 1024)
#define SETUP_CONCURRENCY 64    /* streams being set up at once per generator thread */
#define SETUP_TIMEOUT_NS (30 * CAP_NS)
#define MAX_EVENTS 512

enum conn_state {
    CS_IDLE = 0,
    CS_CONNECTING,
    CS_TLS,
    CS_CHALLENGE, /* tunnel: TunnelHello sent, waiting for AuthChallenge */
    CS_WELCOME,   /* tunnel: AuthProof sent, waiting for TunnelWelcome */
    CS_TUNNEL,    /* tunnel: logged in */
    CS_ACCEPTED,  /* data: DataHello sent, waiting for DataAccepted */
    CS_OPEN,      /* stream bytes flow */
};
enum role { R_TUN, R_DATA, R_REC, R_LISTEN, R_PEND, R_WAKE };
enum phase { PH_IDLE = 0, PH_SETUP, PH_READY, PH_FAILED };

/* One socket. obuf holds bytes to send in [ooff, ooff+olen); ibuf assembles control frames. */
struct gconn {
    int fd;
    uint8_t state, role;
    SSL *ssl;
    uint8_t *obuf, *ibuf;
    uint32_t ooff, olen, ocap, ilen;
    uint32_t hdr_have, body_left; /* recorders: parse position within the current frame */
    uint8_t hdr[HDR_LEN];
};

/* A camera and its recorder. tun is the control tunnel (camrelay only); data is the camera's
 * stream connection (to the relay, to haproxy or straight to the recorder); rec the recorder's. */
struct stream {
    struct gconn tun, data, rec;
    uint32_t idx;
    uint8_t phase;
    uint64_t next_due, seq_tx, seq_rx, deadline, stream_id;
    uint8_t token[32], nonce[CR_AUTH_NONCE_LEN];
};

struct gthread {
    _Alignas(64) struct cap_gen *g; /* threads' counters do not share cache lines */
    unsigned id;
    pthread_t th;
    int ep, wake_fd;
    uint32_t *heap, nheap;      /* streams by next_due (min-heap) */
    uint32_t next_idx, in_setup;
    uint8_t *scratch;
    uint8_t *frame;             /* a frame built here is written straight from a hot buffer */
    uint64_t win_gen, t0, t1, t_end;
    int reported;
    struct cap_wstats ws;
    pthread_mutex_t qlock;      /* recorder sockets handed over by thread 0 */
    struct handoff { int fd; uint32_t idx; } *q;
    uint32_t qn, qcap;
    struct pend { int fd; uint8_t have; uint8_t buf[8]; } *pend; /* thread 0: accepted, no hello */
    uint32_t npend;
    _Atomic uint32_t n_ready, n_failed;
    char why[96];               /* first failure */
};

struct cap_gen {
    const struct cap_opts *o;
    int mode, peer;
    struct stream *streams;
    uint32_t cap;
    struct gthread *th;
    unsigned nth;
    SSL_CTX *cli;
    struct cap_peer *pp;
    int listen_fd;              /* recorders' listener (direct, haproxy) */
    uint16_t listen_port;
    uint8_t salt[16], client_key[32];
    uint64_t epoch, period_ns, budget_ns;
    uint32_t frame_len, obuf_cap;
    _Atomic uint32_t target;
    _Atomic int stop;
    _Atomic uint64_t win_gen;
    int started;
    pthread_mutex_t lock;       /* win, acc, n_reported */
    uint64_t win_t0, win_t1, win_end;
    struct cap_wstats acc;
    unsigned n_reported;
};

static uint64_t tag(uint32_t idx, int role)
{
    return ((uint64_t)idx << 3) | (uint64_t)role;
}

static void heap_swap(uint32_t *h, uint32_t a, uint32_t b)
{
    uint32_t x = h[a];
    h[a] = h[b];
    h[b] = x;
}

static void heap_push(struct gthread *t, uint32_t idx)
{
    const struct stream *s = t->g->streams;
    uint32_t i = t->nheap++;
    t->heap[i] = idx;
    while (i && s[t->heap[(i - 1) / 2]].next_due > s[t->heap[i]].next_due) {
        heap_swap(t->heap, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
}

static uint32_t heap_pop(struct gthread *t)
{
    const struct stream *s = t->g->streams;
    uint32_t top = t->heap[0], i = 0;
    t->heap[0] = t->heap[--t->nheap];
    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        if (l < t->nheap && s[t->heap[l]].next_due < s[t->heap[m]].next_due)
            m = l;
        if (l + 1 < t->nheap && s[t->heap[l + 1]].next_due < s[t->heap[m]].next_due)
            m = l + 1;
        if (m == i)
            return top;
        heap_swap(t->heap, i, m);
        i = m;
    }
}

static void conn_close(struct gconn *c)
{
    if (c->ssl) {
        if (c->state >= CS_CHALLENGE)
            SSL_shutdown(c->ssl); /* close_notify, best effort */
        SSL_free(c->ssl);
        ERR_clear_error();
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = CS_IDLE;
    c->ooff = c->olen = c->ilen = c->hdr_have = c->body_left = 0;
}

static int conn_open(struct gthread *t, struct stream *s, struct gconn *c, int role,
                     const struct sockaddr_in *to, int tls)
{
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)to, sizeof(*to)) < 0 && errno != EINPROGRESS) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    c->fd = fd;
    c->role = (uint8_t)role;
    c->state = CS_CONNECTING;
    if (tls) {
        c->ssl = SSL_new(t->g->cli);
        SSL_set_fd(c->ssl, fd);
        SSL_set_connect_state(c->ssl);
    }
    if (!c->obuf) {
        c->obuf = cr_xmalloc(CTRL_BUF);
        c->ocap = CTRL_BUF;
    }
    if ((tls || (role == R_DATA && t->g->peer == CAP_CAMRELAY_PLAIN)) && !c->ibuf)
        c->ibuf = cr_xmalloc(CTRL_BUF); /* control frames: tunnels, DataAccepted */
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                             .data.u64 = tag(s->idx, role)};
    return epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Writes from buf, one TLS record at most: the bytes taken, 0 when the socket is full (a TLS
 * write that took none must be offered the same bytes again), -1 when the connection failed. */
static ssize_t conn_write(struct gconn *c, const uint8_t *buf, uint32_t len)
{
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, len > 16384 ? 16384 : (int)len);
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        ERR_clear_error();
        return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
    }
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    return n >= 0 ? n : errno == EAGAIN ? 0 : -1;
}

/* Sends what obuf holds. Edge-triggered: a short write means the socket is full and EPOLLOUT
 * will call again. Returns 0, or -1 when the connection failed. */
static int conn_flush(struct gconn *c)
{
    while (c->olen) {
        ssize_t n = conn_write(c, c->obuf + c->ooff, c->olen);
        if (n <= 0)
            return (int)n;
        c->ooff += (uint32_t)n;
        c->olen -= (uint32_t)n;
    }
    c->ooff = 0;
    return 0;
}

/* Room for len more bytes at the end of obuf, or NULL when it is full. */
static uint8_t *conn_reserve(struct gconn *c, uint32_t len)
{
    if (c->ocap - c->ooff - c->olen >= len)
        return c->obuf + c->ooff + c->olen;
    if (c->ocap - c->olen < len)
        return NULL;
    /* SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: a pending TLS write may move with its bytes. */
    memmove(c->obuf, c->obuf + c->ooff, c->olen);
    c->ooff = 0;
    return c->obuf + c->olen;
}

/* Sends one paced frame: header h, then filler up to len. With nothing queued (the usual case)
 * the frame is written from the thread's own buffer, which stays in cache, instead of from the
 * stream's queue, which is cold by the time its next frame is due; what the socket does not
 * take is queued. 0, or -1 when the connection failed. */
static int conn_send_frame(struct gconn *c, uint8_t *hot, const uint32_t h[8], uint32_t len)
{
    if (c->olen) {
        memcpy(c->obuf + c->ooff + c->olen, h, HDR_LEN); /* conn_reserve made room */
        c->olen += len;
        return conn_flush(c);
    }
    memcpy(hot, h, HDR_LEN);
    /* A frame (< 16 KiB) is one TLS record: all of it or none, and then the retry offers the
     * same bytes from obuf (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER). */
    ssize_t n = conn_write(c, hot, len);
    if (n < 0)
        return -1;
    c->ooff = 0;
    c->olen = len - (uint32_t)n;
    memcpy(c->obuf, hot + n, c->olen);
    return 0;
}

static int send_frame(struct gconn *c, const Camrelay__Frame *f)
{
    uint32_t need = (uint32_t)cr_frame_encoded_size(f);
    uint8_t *p = conn_reserve(c, need);
    int n = p ? cr_frame_encode(f, p, need) : -1;
    if (n < 0)
        return -1;
    c->olen += (uint32_t)n;
    return conn_flush(c);
}

static void stream_fail(struct gthread *t, struct stream *s, const char *why)
{
    if (s->phase == PH_SETUP)
        t->in_setup--;
    if (s->phase != PH_FAILED) {
        atomic_fetch_add(&t->n_failed, 1);
        if (!t->why[0])
            snprintf(t->why, sizeof(t->why), "stream %u: %s", s->idx, why);
    }
    s->phase = PH_FAILED;
    conn_close(&s->tun);
    conn_close(&s->data);
    conn_close(&s->rec);
}

static int in_window(const struct gthread *t, uint64_t sched)
{
    return t->win_gen && sched >= t->t0 && sched < t->t1;
}

static void stream_ready(struct gthread *t, struct stream *s, uint64_t now)
{
    struct cap_gen *g = t->g;
    s->phase = PH_READY;
    t->in_setup--;
    atomic_fetch_add(&t->n_ready, 1);
    if (g->mode != CAP_PACED)
        return;
    /* The stream's send queue: obuf_cap bytes, more frames are dropped at the camera. */
    uint8_t *q = cr_xmalloc(g->obuf_cap);
    memcpy(q, s->data.obuf + s->data.ooff, s->data.olen); /* nothing, or a hello's tail */
    free(s->data.obuf);
    s->data.obuf = q;
    s->data.ocap = g->obuf_cap;
    s->data.ooff = 0;
    /* Start offsets spread evenly (golden ratio) whatever the number of streams. */
    double frac = fmod((double)s->idx * 0.6180339887498949, 1.0);
    uint64_t base = g->epoch + (uint64_t)(frac * (double)g->period_ns);
    s->next_due = now <= base ? base : base + ((now - base) / g->period_ns + 1) * g->period_ns;
    heap_push(t, s->idx);
}

/* A frame is due: header {magic, stream, seq, send time, length, lateness}, then filler. The
 * send time is when the camera made the frame: a frame queued behind a full socket (the peer
 * pushing back) counts its wait; the generator's own lateness (lag) is measured apart. The
 * receiver gets the scheduled time back as send time - lag, to count frames by window. */
static void send_due(struct gthread *t, struct stream *s)
{
    struct cap_gen *g = t->g;
    uint64_t now = cap_now_ns(), lag = now - s->next_due;
    int counted = in_window(t, s->next_due);
    uint8_t *p = conn_reserve(&s->data, g->frame_len);
    if (counted) {
        t->ws.sched++;
        t->ws.lag[cap_hbin(lag / 1000)]++;
        if (lag / 1000 > t->ws.lag_max_us)
            t->ws.lag_max_us = lag / 1000;
    }
    if (p) {
        uint32_t h[8] = {FRAME_MAGIC, s->idx, (uint32_t)s->seq_tx, (uint32_t)(s->seq_tx >> 32),
                         (uint32_t)now, (uint32_t)(now >> 32), g->frame_len,
                         lag < UINT32_MAX ? (uint32_t)lag : UINT32_MAX};
        if (conn_send_frame(&s->data, t->frame, h, g->frame_len) < 0)
            stream_fail(t, s, "camera connection failed while streaming");
    } else if (counted) {
        t->ws.src_drop++; /* a second of frames already queued: this one is lost at the camera */
    }
    s->seq_tx++;
    s->next_due += g->period_ns;
}

static void frame_received(struct gthread *t, struct stream *s, const uint8_t *hdr, uint64_t now)
{
    uint32_t h[8];
    memcpy(h, hdr, sizeof(h));
    uint64_t seq = h[2] | (uint64_t)h[3] << 32, sent = h[4] | (uint64_t)h[5] << 32;
    uint64_t sched = sent - h[7], expected = s->seq_rx;
    s->seq_rx = seq + 1;
    if (!in_window(t, sched) || now > t->t_end)
        return;
    if (seq > expected)
        t->ws.gaps += seq - expected; /* frames dropped at the camera (src_drop) */
    else if (seq < expected)
        t->ws.ooo++;
    uint64_t us = now > sent ? (now - sent) / 1000 : 0;
    t->ws.recv++;
    t->ws.bytes += h[6];
    t->ws.hist[cap_hbin(us)]++;
    if (us > t->ws.max_us)
        t->ws.max_us = us;
    if (us * 1000 > t->g->budget_ns)
        t->ws.late++;
}

/* Recorder side: parses frames out of the byte stream without copying their bodies. */
static int rec_read(struct gthread *t, struct stream *s, struct gconn *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, t->scratch, SCRATCH, 0);
        if (n <= 0)
            return n < 0 && errno == EAGAIN ? 0 : -1;
        uint64_t now = cap_now_ns();
        for (ssize_t pos = 0; pos < n;) {
            if (c->body_left == 0) {
                uint32_t k = HDR_LEN - c->hdr_have;
                k = (ssize_t)k < n - pos ? k : (uint32_t)(n - pos);
                memcpy(c->hdr + c->hdr_have, t->scratch + pos, k);
                c->hdr_have += k;
                pos += k;
                if (c->hdr_have < HDR_LEN)
                    break;
                uint32_t h[8];
                memcpy(h, c->hdr, sizeof(h));
                if (h[0] != FRAME_MAGIC || h[1] != s->idx || h[6] < HDR_LEN)
                    return -1;
                c->body_left = h[6] - HDR_LEN;
                if (c->body_left == 0) {
                    c->hdr_have = 0;
                    frame_received(t, s, c->hdr, now);
                }
                continue;
            }
            uint32_t k = (ssize_t)c->body_left < n - pos ? c->body_left : (uint32_t)(n - pos);
            pos += k;
            if ((c->body_left -= k) == 0) {
                c->hdr_have = 0;
                frame_received(t, s, c->hdr, now);
            }
        }
        if (n < SCRATCH)
            return 0; /* drained; edge-triggered epoll reports the next bytes */
    }
}

static int send_tunnel_hello(struct stream *s)
{
    char serial[RLY_NAME_MAX];
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelHello h = CAMRELAY__TUNNEL_HELLO__INIT;
    Camrelay__AuthStart as = CAMRELAY__AUTH_START__INIT;
    snprintf(serial, sizeof(serial), CAP_SERIAL_FMT, s->idx);
    cr_random_bytes(s->nonce, sizeof(s->nonce));
    as.identity = serial;
    as.client_nonce.data = s->nonce;
    as.client_nonce.len = sizeof(s->nonce);
    h.auth = &as;
    h.agent_version = "camrelay-bench";
    f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_HELLO;
    f.tunnel_hello = &h;
    s->tun.state = CS_CHALLENGE;
    return send_frame(&s->tun, &f);
}

static int send_proof(struct cap_gen *g, struct stream *s, const Camrelay__AuthChallenge *ch)
{
    char serial[RLY_NAME_MAX];
    uint8_t proof[CR_AUTH_KEY_LEN];
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthProof p = CAMRELAY__AUTH_PROOF__INIT;
    snprintf(serial, sizeof(serial), CAP_SERIAL_FMT, s->idx);
    struct cr_auth_transcript tr = {
        .identity = serial, .client_nonce = s->nonce, .client_nonce_len = sizeof(s->nonce),
        .server_nonce = ch->server_nonce.data, .server_nonce_len = ch->server_nonce.len,
        .salt = ch->salt.data, .iterations = ch->iterations};
    /* Every bench camera has the same secret: ClientKey was derived once, at start. */
    if (ch->salt.len != 16 || memcmp(ch->salt.data, g->salt, 16) != 0 ||
        ch->iterations != CR_AUTH_ITERATIONS_DEFAULT ||
        cr_auth_tls_binding(s->tun.ssl, tr.binding) < 0)
        return -1;
    cr_auth_client_proof(g->client_key, &tr, proof);
    p.client_proof.data = proof;
    p.client_proof.len = sizeof(proof);
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_PROOF;
    f.auth_proof = &p;
    s->tun.state = CS_WELCOME;
    return send_frame(&s->tun, &f);
}

/* The socket connected (and finished its TLS handshake): say the first thing. */
static int on_connected(struct gthread *t, struct stream *s, struct gconn *c, uint64_t now)
{
    struct cap_gen *g = t->g;
    if (c->role == R_TUN)
        return send_tunnel_hello(s);
    if (c->role == R_REC) {
        c->state = CS_OPEN;
        return 0;
    }
    if (cap_peer_is_relay(g->peer)) { /* over TLS, or in the clear for camrelay-plain */
        char serial[RLY_NAME_MAX];
        Camrelay__Frame f = CAMRELAY__FRAME__INIT;
        Camrelay__DataHello h = CAMRELAY__DATA_HELLO__INIT;
        snprintf(serial, sizeof(serial), CAP_SERIAL_FMT, s->idx);
        h.serial = serial;
        h.stream_id = s->stream_id;
        h.token.data = s->token;
        h.token.len = sizeof(s->token);
        f.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
        f.data_hello = &h;
        c->state = CS_ACCEPTED;
        return send_frame(c, &f);
    }
    /* direct, haproxy: the recorder learns which stream this is from an 8-byte hello. */
    uint32_t hello[2] = {HELLO_MAGIC, s->idx};
    memcpy(c->obuf, hello, sizeof(hello));
    c->olen = sizeof(hello);
    c->state = CS_OPEN;
    (void)now;
    return conn_flush(c);
}

/* Returns 0, 1 when the connection was closed and reopened (stop reading it), -1 failure. */
static int on_frame(struct gthread *t, struct stream *s, struct gconn *c, Camrelay__Frame *f,
                    uint64_t now)
{
    struct cap_gen *g = t->g;
    switch (f->body_case) {
    case CAMRELAY__FRAME__BODY_AUTH_CHALLENGE:
        return c->role == R_TUN && c->state == CS_CHALLENGE ? send_proof(g, s, f->auth_challenge)
                                                            : -1;
    case CAMRELAY__FRAME__BODY_TUNNEL_WELCOME:
        if (c->role != R_TUN || c->state != CS_WELCOME)
            return -1;
        c->state = CS_TUNNEL;
        if (g->mode == CAP_HANDSHAKES) { /* count it, then log in again on a new connection */
            if (now >= t->t0 && now < t->t1 && t->win_gen)
                t->ws.logins++;
            conn_close(c);
            s->deadline = now + SETUP_TIMEOUT_NS;
            return conn_open(t, s, c, R_TUN, &g->pp->cam_addr, 1) < 0 ? -1 : 1;
        }
        if (g->mode == CAP_IDLE) {
            stream_ready(t, s, now);
            return 0;
        }
        struct sockaddr_in ep = g->pp->cam_addr; /* the recorder dials the camera's endpoint */
        ep.sin_port = htons(g->pp->ep_ports[s->idx]);
        return conn_open(t, s, &s->rec, R_REC, &ep, 0) < 0 ? -1 : 0;
    case CAMRELAY__FRAME__BODY_PING: {
        Camrelay__Frame out = CAMRELAY__FRAME__INIT;
        Camrelay__Pong pong = CAMRELAY__PONG__INIT;
        pong.seq = f->ping->seq;
        out.body_case = CAMRELAY__FRAME__BODY_PONG;
        out.pong = &pong;
        return send_frame(c, &out);
    }
    case CAMRELAY__FRAME__BODY_OPEN_STREAM:
        if (c->role != R_TUN || f->open_stream->token.len != sizeof(s->token) || s->data.fd >= 0)
            return -1;
        s->stream_id = f->open_stream->stream_id;
        memcpy(s->token, f->open_stream->token.data, sizeof(s->token));
        return conn_open(t, s, &s->data, R_DATA, &g->pp->cam_addr,
                         g->peer != CAP_CAMRELAY_PLAIN) < 0 ? -1 : 0;
    case CAMRELAY__FRAME__BODY_DATA_ACCEPTED:
        if (c->role != R_DATA || c->state != CS_ACCEPTED)
            return -1;
        c->state = CS_OPEN;
        stream_ready(t, s, now);
        return 0;
    default: /* a Refusal, or anything unexpected */
        return -1;
    }
}

/* Reads and handles control frames on a TLS connection, or on a plaintext data connection
 * waiting for DataAccepted. Returns 0 or -1 (failed). */
static int read_frames(struct gthread *t, struct stream *s, struct gconn *c, uint64_t now)
{
    for (;;) {
        if (c->ilen == CTRL_BUF)
            return -1;
        int r;
        if (c->ssl) {
            r = SSL_read(c->ssl, c->ibuf + c->ilen, (int)(CTRL_BUF - c->ilen));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                ERR_clear_error();
                return e == SSL_ERROR_WANT_READ ? 0 : -1;
            }
        } else {
            /* The relay sends nothing behind DataAccepted until the recorder does, and bench
             * recorders never send: whatever is read here is frames. */
            ssize_t n = recv(c->fd, c->ibuf + c->ilen, CTRL_BUF - c->ilen, 0);
            if (n <= 0)
                return n < 0 && errno == EAGAIN ? 0 : -1;
            r = (int)n;
        }
        c->ilen += (uint32_t)r;
        for (;;) {
            Camrelay__Frame *f = NULL;
            int n = cr_frame_decode(c->ibuf, c->ilen, CTRL_BUF, &f);
            if (n <= 0)
                return n < 0 ? -1 : 0;
            c->ilen -= (uint32_t)n;
            memmove(c->ibuf, c->ibuf + n, c->ilen);
            int rc = on_frame(t, s, c, f, now);
            cr_frame_free(f);
            if (rc != 0)
                return rc < 0 ? -1 : 0;
        }
    }
}

static int conn_progress(struct gthread *t, struct stream *s, struct gconn *c, uint32_t ev)
{
    uint64_t now = cap_now_ns();
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (!(ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return 0;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err)
            return -1;
        c->state = c->ssl ? CS_TLS : CS_OPEN;
        if (!c->ssl && on_connected(t, s, c, now) < 0)
            return -1;
    }
    if (c->state == CS_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            ERR_clear_error();
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
        }
        if (on_connected(t, s, c, now) < 0)
            return -1;
    }
    if ((ev & EPOLLOUT) && c->olen && conn_flush(c) < 0)
        return -1;
    if (!(ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        return 0;
    if (c->role == R_REC)
        return rec_read(t, s, c);
    if (c->ssl || c->state == CS_ACCEPTED)
        return read_frames(t, s, c, now);
    uint8_t b[64]; /* a plain camera connection never receives: EOF means it is gone */
    ssize_t n;
    while ((n = recv(c->fd, b, sizeof(b), 0)) > 0)
        ;
    return n < 0 && errno == EAGAIN ? 0 : -1;
}

/* A recorder socket whose hello named stream idx joins that stream (owner thread only). */
static void rec_attach(struct gthread *t, uint32_t idx, int fd)
{
    struct stream *s = &t->g->streams[idx];
    int one = 1;
    if (s->phase != PH_SETUP || s->rec.fd >= 0) {
        close(fd);
        return;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->rec.fd = fd;
    s->rec.role = R_REC;
    s->rec.state = CS_OPEN;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.u64 = tag(idx, R_REC)};
    epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
    if (s->data.state == CS_OPEN)
        stream_ready(t, s, cap_now_ns());
}

static void pend_read(struct gthread *t, uint32_t slot)
{
    struct cap_gen *g = t->g;
    struct pend *p = &t->pend[slot];
    ssize_t n = recv(p->fd, p->buf + p->have, sizeof(p->buf) - p->have, 0);
    if (n < 0 && errno == EAGAIN)
        return;
    if (n > 0 && (p->have += (uint8_t)n) < sizeof(p->buf))
        return;
    uint32_t hello[2];
    memcpy(hello, p->buf, sizeof(hello));
    int fd = p->fd;
    p->fd = -1;
    epoll_ctl(t->ep, EPOLL_CTL_DEL, fd, NULL);
    if (n <= 0 || hello[0] != HELLO_MAGIC || hello[1] >= g->cap) {
        close(fd); /* a probe or a stray connection */
        return;
    }
    struct gthread *owner = &g->th[hello[1] % g->nth];
    if (owner == t) {
        rec_attach(t, hello[1], fd);
        return;
    }
    pthread_mutex_lock(&owner->qlock);
    if (owner->qn == owner->qcap) {
        owner->qcap = owner->qcap ? 2 * owner->qcap : 64;
        owner->q = realloc(owner->q, owner->qcap * sizeof(*owner->q));
        if (!owner->q)
            abort();
    }
    owner->q[owner->qn++] = (struct handoff){fd, hello[1]};
    pthread_mutex_unlock(&owner->qlock);
    eventfd_write(owner->wake_fd, 1); /* cannot fail: the counter would have to reach 2^64-1 */
}

static void listen_accept(struct gthread *t)
{
    int fd;
    while ((fd = accept4(t->g->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        uint32_t slot = 0;
        while (slot < t->npend && t->pend[slot].fd >= 0)
            slot++;
        if (slot == t->npend) {
            t->pend = realloc(t->pend, (t->npend + 64) * sizeof(*t->pend));
            if (!t->pend)
                abort();
            for (uint32_t i = t->npend; i < t->npend + 64; i++)
                t->pend[i].fd = -1;
            t->npend += 64;
        }
        t->pend[slot] = (struct pend){.fd = fd};
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET,
                                 .data.u64 = tag(slot, R_PEND)};
        epoll_ctl(t->ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void on_event(struct gthread *t, uint64_t tagv, uint32_t ev)
{
    uint32_t idx = (uint32_t)(tagv >> 3);
    int role = (int)(tagv & 7);
    if (role == R_LISTEN) {
        listen_accept(t);
    } else if (role == R_PEND) {
        pend_read(t, idx);
    } else if (role == R_WAKE) {
        eventfd_t v;
        eventfd_read(t->wake_fd, &v); /* resets the counter; the queue says what to do */
        pthread_mutex_lock(&t->qlock);
        for (uint32_t i = 0; i < t->qn; i++)
            rec_attach(t, t->q[i].idx, t->q[i].fd);
        t->qn = 0;
        pthread_mutex_unlock(&t->qlock);
    } else {
        struct stream *s = &t->g->streams[idx];
        struct gconn *c = role == R_TUN ? &s->tun : role == R_DATA ? &s->data : &s->rec;
        if (c->fd >= 0 && conn_progress(t, s, c, ev) < 0)
            stream_fail(t, s, role == R_TUN    ? "control tunnel failed or refused"
                              : role == R_DATA ? "camera connection failed"
                                               : "recorder connection failed");
    }
}

static void stream_start(struct gthread *t, struct stream *s, uint64_t now)
{
    struct cap_gen *g = t->g;
    int rc;
    s->phase = PH_SETUP;
    s->deadline = now + SETUP_TIMEOUT_NS;
    t->in_setup++;
    if (cap_peer_is_relay(g->peer))
        rc = conn_open(t, s, &s->tun, R_TUN, &g->pp->cam_addr, 1);
    else
        rc = conn_open(t, s, &s->data, R_DATA, &g->pp->cam_addr, g->peer == CAP_HAPROXY_TLS);
    if (rc < 0)
        stream_fail(t, s, strerror(-rc));
}

/* Picks up a new measurement window; hands the finished one to the main thread. */
static void window_sync(struct gthread *t, uint64_t now)
{
    struct cap_gen *g = t->g;
    if (atomic_load(&g->win_gen) != t->win_gen) {
        pthread_mutex_lock(&g->lock);
        t->win_gen = atomic_load(&g->win_gen);
        t->t0 = g->win_t0;
        t->t1 = g->win_t1;
        t->t_end = g->win_end;
        pthread_mutex_unlock(&g->lock);
        memset(&t->ws, 0, sizeof(t->ws));
        t->reported = 0;
    }
    if (t->win_gen && !t->reported && now >= t->t_end) {
        struct cap_wstats *a = &g->acc, *w = &t->ws;
        pthread_mutex_lock(&g->lock);
        a->sched += w->sched, a->recv += w->recv, a->bytes += w->bytes, a->late += w->late;
        a->gaps += w->gaps, a->ooo += w->ooo, a->src_drop += w->src_drop, a->logins += w->logins;
        a->max_us = a->max_us > w->max_us ? a->max_us : w->max_us;
        a->lag_max_us = a->lag_max_us > w->lag_max_us ? a->lag_max_us : w->lag_max_us;
        for (unsigned i = 0; i < CAP_HBINS; i++)
            a->hist[i] += w->hist[i], a->lag[i] += w->lag[i];
        g->n_reported++;
        pthread_mutex_unlock(&g->lock);
        t->reported = 1;
    }
}

static void *gen_thread_main(void *arg)
{
    struct gthread *t = arg;
    struct cap_gen *g = t->g;
    struct epoll_event evs[MAX_EVENTS];
    uint64_t next_scan = 0;
    uint32_t limit = g->mode == CAP_HANDSHAKES ? UINT32_MAX : SETUP_CONCURRENCY;
    while (!atomic_load(&g->stop)) {
        uint64_t now = cap_now_ns(), wait = 10 * 1000000ull;
        window_sync(t, now);
        uint32_t target = atomic_load(&g->target);
        while (t->in_setup < limit && t->next_idx < target) {
            stream_start(t, &g->streams[t->next_idx], now);
            t->next_idx += g->nth;
        }
        if (now >= next_scan) {
            for (uint32_t i = t->id; i < t->next_idx; i += g->nth)
                if (g->streams[i].phase == PH_SETUP && now > g->streams[i].deadline)
                    stream_fail(t, &g->streams[i], "not set up within 30 s");
            next_scan = now + CAP_NS / 2;
        }
        if (t->nheap) {
            uint64_t due = g->streams[t->heap[0]].next_due;
            wait = due <= now ? 0 : due - now < wait ? due - now : wait;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
        int n = epoll_pwait2(t->ep, evs, MAX_EVENTS, &ts, NULL);
        for (int i = 0; i < n; i++)
            on_event(t, evs[i].data.u64, evs[i].events);
        now = cap_now_ns();
        while (t->nheap && g->streams[t->heap[0]].next_due <= now) {
            struct stream *s = &g->streams[heap_pop(t)];
            if (s->phase != PH_READY)
                continue; /* failed since: drop it from the schedule */
            send_due(t, s);
            if (s->phase == PH_READY)
                heap_push(t, s->idx);
        }
    }
    return NULL;
}

static SSL_CTX *client_ctx(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx)
        return NULL;
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    /* The generator trusts its own relay: skipping chain verification keeps its CPU for load. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    return ctx;
}

struct cap_gen *cap_gen_new(const struct cap_opts *o, int mode, int peer, uint32_t cap,
                            const uint8_t salt[16], const uint8_t client_key[32])
{
    struct cap_gen *g = cr_xcalloc(1, sizeof(*g));
    memcpy(g->salt, salt, sizeof(g->salt));
    memcpy(g->client_key, client_key, sizeof(g->client_key));
    g->o = o;
    g->mode = mode;
    g->peer = peer;
    g->cap = cap;
    g->listen_fd = -1;
    g->nth = o->gen_threads;
    g->period_ns = CAP_NS / o->fps;
    g->budget_ns = (uint64_t)(o->budget_ms * 1e6);
    g->frame_len = (uint32_t)(o->kbps * 1000.0 / 8.0 / o->fps);
    g->frame_len = g->frame_len < HDR_LEN ? HDR_LEN : g->frame_len;
    /* A camera queues at most a second of frames (two at least) before dropping. */
    g->obuf_cap = g->frame_len * (o->fps > 2 ? o->fps : 2);
    g->epoch = cap_now_ns();
    g->cli = client_ctx();
    pthread_mutex_init(&g->lock, NULL);
    g->streams = cr_xcalloc(cap, sizeof(*g->streams));
    for (uint32_t i = 0; i < cap; i++) {
        struct stream *s = &g->streams[i];
        s->idx = i;
        s->tun.fd = s->data.fd = s->rec.fd = -1;
    }
    if (!cap_peer_is_relay(peer)) {
        g->listen_fd = cr_tcp_listen("127.0.0.1:0", 0, 4096);
        g->listen_port = g->listen_fd >= 0 ? cr_sock_port(g->listen_fd) : 0;
    }
    g->th = cr_xcalloc(g->nth, sizeof(*g->th));
    for (unsigned i = 0; i < g->nth; i++) {
        struct gthread *t = &g->th[i];
        t->g = g;
        t->id = i;
        t->next_idx = i;
        t->ep = epoll_create1(EPOLL_CLOEXEC);
        t->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        t->heap = cr_xcalloc(cap / g->nth + 2, sizeof(uint32_t));
        t->scratch = cr_xmalloc(SCRATCH);
        t->frame = cr_xcalloc(1, g->frame_len);
        pthread_mutex_init(&t->qlock, NULL);
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag(0, R_WAKE)};
        epoll_ctl(t->ep, EPOLL_CTL_ADD, t->wake_fd, &ev);
        if (i == 0 && g->listen_fd >= 0) {
            ev = (struct epoll_event){.events = EPOLLIN | EPOLLET, .data.u64 = tag(0, R_LISTEN)};
            epoll_ctl(t->ep, EPOLL_CTL_ADD, g->listen_fd, &ev);
        }
    }
    if (!g->cli || (!cap_peer_is_relay(peer) && g->listen_fd < 0)) {
        fprintf(stderr, "camrelay-bench: cannot set up the load generator\n");
        cap_gen_free(g);
        return NULL;
    }
    return g;
}

uint16_t cap_gen_listen_port(const struct cap_gen *g)
{
    return g->listen_port;
}

void cap_gen_start(struct cap_gen *g, struct cap_peer *pp)
{
    g->pp = pp;
    for (unsigned i = 0; i < g->nth; i++)
        pthread_create(&g->th[i].th, NULL, gen_thread_main, &g->th[i]);
    g->started = 1;
}

void cap_gen_join(struct cap_gen *g)
{
    if (atomic_exchange(&g->stop, 1) || !g->started)
        return;
    for (unsigned i = 0; i < g->nth; i++)
        pthread_join(g->th[i].th, NULL);
}

int cap_gen_stream_sockets(struct cap_gen *g, uint32_t idx, int *cam_fd, SSL **cam_ssl,
                           int *rec_fd)
{
    if (idx >= g->cap || g->streams[idx].phase != PH_READY)
        return -1;
    *cam_fd = g->streams[idx].data.fd;
    *cam_ssl = g->streams[idx].data.ssl;
    *rec_fd = g->streams[idx].rec.fd;
    return 0;
}

void cap_gen_free(struct cap_gen *g)
{
    if (!g)
        return;
    cap_gen_join(g);
    for (uint32_t i = 0; i < g->cap; i++) {
        struct gconn *cs[3] = {&g->streams[i].tun, &g->streams[i].data, &g->streams[i].rec};
        for (int k = 0; k < 3; k++) {
            conn_close(cs[k]);
            free(cs[k]->obuf);
            free(cs[k]->ibuf);
        }
    }
    for (unsigned i = 0; i < g->nth; i++) {
        struct gthread *t = &g->th[i];
        for (uint32_t k = 0; k < t->npend; k++)
            if (t->pend[k].fd >= 0)
                close(t->pend[k].fd);
        for (uint32_t k = 0; k < t->qn; k++)
            close(t->q[k].fd);
        close(t->ep);
        close(t->wake_fd);
        free(t->heap);
        free(t->scratch);
        free(t->frame);
        free(t->q);
        free(t->pend);
        pthread_mutex_destroy(&t->qlock);
    }
    if (g->listen_fd >= 0)
        close(g->listen_fd);
    free(g->th);
    free(g->streams);
    SSL_CTX_free(g->cli);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

void cap_gen_counts(struct cap_gen *g, uint32_t *ready, uint32_t *failed)
{
    *ready = *failed = 0;
    for (unsigned i = 0; i < g->nth; i++) {
        *ready += atomic_load(&g->th[i].n_ready);
        *failed += atomic_load(&g->th[i].n_failed);
    }
}

int cap_gen_grow(struct cap_gen *g, uint32_t n, int progress)
{
    uint32_t ready = 0, failed = 0;
    const char *why = "";
    uint64_t deadline = cap_now_ns() + 120 * CAP_NS, next_print = 0;
    if (n > g->cap)
        n = g->cap;
    atomic_store(&g->target, n);
    for (;;) {
        cap_gen_counts(g, &ready, &failed);
        uint64_t now = cap_now_ns();
        if (progress && now >= next_print) {
            fprintf(stderr, "\r  setting up: %u/%u ready, %u failed ", ready, n, failed);
            next_print = now + CAP_NS;
        }
        if (failed || ready >= n || now > deadline || (g->mode == CAP_HANDSHAKES))
            break;
        usleep(5000);
    }
    if (progress)
        fprintf(stderr, "\r%60s\r", "");
    if (failed || (ready < n && g->mode != CAP_HANDSHAKES)) {
        usleep(100000); /* let the thread write down why */
        for (unsigned i = 0; i < g->nth; i++)
            if (g->th[i].why[0])
                why = g->th[i].why;
        fprintf(stderr, "camrelay-bench: %s: %u of %u up, %u failed%s%s\n",
                cap_peer_names[g->peer], ready, n, failed, why[0] ? ": " : "", why);
        return -1;
    }
    return 0;
}

void cap_gen_window(struct cap_gen *g, uint64_t t0, uint64_t t1, uint64_t t_end)
{
    pthread_mutex_lock(&g->lock);
    g->win_t0 = t0;
    g->win_t1 = t1;
    g->win_end = t_end;
    memset(&g->acc, 0, sizeof(g->acc));
    g->n_reported = 0;
    atomic_fetch_add(&g->win_gen, 1);
    pthread_mutex_unlock(&g->lock);
}

void cap_gen_window_wait(struct cap_gen *g, struct cap_wstats *out)
{
    for (;;) {
        pthread_mutex_lock(&g->lock);
        unsigned n = g->n_reported;
        if (n == g->nth)
            *out = g->acc;
        pthread_mutex_unlock(&g->lock);
        if (n == g->nth)
            return;
        usleep(5000);
    }
}
