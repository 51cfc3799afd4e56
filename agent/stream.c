/* One stream: data connection to the relay joined to the local service, pumped both ways. */
#include "agent/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/sim.h"
#include "agent/tunnel.h"
#include "common/log.h"
#include "common/util.h"

/* One direction of the pump. Invariant: head <= tail <= AGT_PUMP_BUF; bytes [head, tail) are
 * waiting to be written to the destination. */
struct pump_dir {
    uint8_t *buf;
    size_t head, tail;
    int eof;  /* the source has closed its sending side */
    int shut; /* ... and that EOF has been passed on to the destination */
    uint64_t bytes;
};

int agt_stream_pump(struct cr_link *l, int local, int stop_fd, uint64_t *bytes_in,
                    uint64_t *bytes_out)
{
    struct pump_dir in = {0}, out = {0}; /* in: relay -> local, out: local -> relay */
    int ssl_write_pending = 0; /* SSL_write wants a retry with the same bytes */
    int rc = 0;

    in.buf = cr_xmalloc(AGT_PUMP_BUF);
    out.buf = cr_xmalloc(AGT_PUMP_BUF);
    for (;;) {
        short rev = 0, lev = 0;
        int progress = 0;

        /* relay -> local */
        if (!in.eof && in.tail < AGT_PUMP_BUF) {
            int n = cr_link_read_some(l, in.buf + in.tail, AGT_PUMP_BUF - in.tail);
            if (n > 0) {
                in.tail += (size_t)n;
                progress = 1;
            } else if (n == 0) {
                in.eof = 1;
                progress = 1;
            } else if (n == -EAGAIN) {
                rev |= l->ssl && SSL_want_write(l->ssl) ? POLLOUT : POLLIN;
            } else {
                rc = n;
                break;
            }
        }
        if (in.head < in.tail) {
            ssize_t w = send(local, in.buf + in.head, in.tail - in.head, MSG_NOSIGNAL);
            if (w > 0) {
                in.head += (size_t)w;
                in.bytes += (uint64_t)w;
                progress = 1;
                if (in.head == in.tail) {
                    in.head = in.tail = 0;
                } else if (in.tail == AGT_PUMP_BUF) {
                    memmove(in.buf, in.buf + in.head, in.tail - in.head);
                    in.tail -= in.head;
                    in.head = 0;
                }
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                lev |= POLLOUT;
            } else {
                rc = w < 0 ? -errno : -EPIPE;
                break;
            }
        }
        if (in.eof && in.head == in.tail && !in.shut) {
            shutdown(local, SHUT_WR);
            in.shut = 1;
            progress = 1;
        }

        /* local -> relay. While an SSL_write waits for a retry the buffer must not change,
         * so nothing is read into it then; a successful SSL_write takes everything. A
         * plaintext data connection takes what send() takes. */
        if (!out.eof && !ssl_write_pending && out.tail < AGT_PUMP_BUF) {
            ssize_t n = recv(local, out.buf + out.tail, AGT_PUMP_BUF - out.tail, 0);
            if (n > 0) {
                out.tail += (size_t)n;
                progress = 1;
            } else if (n == 0) {
                out.eof = 1;
                progress = 1;
            } else if (errno == EAGAIN || errno == EINTR) {
                lev |= POLLIN;
            } else {
                rc = -errno;
                break;
            }
        }
        if (out.head < out.tail && !l->ssl) {
            ssize_t w = send(l->fd, out.buf + out.head, out.tail - out.head, MSG_NOSIGNAL);
            if (w > 0) {
                out.head += (size_t)w;
                out.bytes += (uint64_t)w;
                progress = 1;
                if (out.head == out.tail) {
                    out.head = out.tail = 0;
                } else if (out.tail == AGT_PUMP_BUF) {
                    memmove(out.buf, out.buf + out.head, out.tail - out.head);
                    out.tail -= out.head;
                    out.head = 0;
                }
            } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
                rev |= POLLOUT;
            } else {
                rc = w < 0 ? -errno : -EPIPE;
                break;
            }
        } else if (out.head < out.tail) {
            int w = SSL_write(l->ssl, out.buf + out.head, (int)(out.tail - out.head));
            if (w > 0) {
                out.head += (size_t)w;
                out.bytes += (uint64_t)w;
                ssl_write_pending = 0;
                progress = 1;
                if (out.head == out.tail)
                    out.head = out.tail = 0;
            } else {
                int e = SSL_get_error(l->ssl, w);
                if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                    ssl_write_pending = 1;
                    rev |= e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN;
                } else {
                    rc = -EPIPE;
                    break;
                }
            }
        }
        if (out.eof && out.head == out.tail && !out.shut && !l->ssl) {
            if (shutdown(l->fd, SHUT_WR) < 0) { /* FIN instead of close_notify; reading goes on */
                rc = -errno;
                break;
            }
            out.shut = 1;
            progress = 1;
        } else if (out.eof && out.head == out.tail && !out.shut) {
            int s = SSL_shutdown(l->ssl); /* sends close_notify; reading goes on */
            if (s >= 0) {
                out.shut = 1;
                progress = 1;
            } else if (SSL_get_error(l->ssl, s) == SSL_ERROR_WANT_WRITE) {
                rev |= POLLOUT;
            } else {
                rc = -EPIPE;
                break;
            }
        }

        if (in.shut && out.shut)
            break;
        if (progress)
            continue;
        /* A side with nothing wanted is left out: poll would report its HUP forever. */
        struct pollfd p[3] = {
            {.fd = rev ? l->fd : -1, .events = rev},
            {.fd = lev ? local : -1, .events = lev},
            {.fd = stop_fd, .events = POLLIN},
        };
        int n = poll(p, 3, -1);
        if (n < 0 && errno != EINTR) {
            rc = -errno;
            break;
        }
        if (n > 0 && p[2].revents) {
            rc = -ECANCELED;
            break;
        }
    }
    *bytes_in = in.bytes;
    *bytes_out = out.bytes;
    free(in.buf);
    free(out.buf);
    return rc;
}

/* The StreamFailed reason (and the heart of the log line) when a relay does not take a
 * plaintext data connection: a configuration mismatch only an admin can fix. */
#define PLAIN_REFUSED                                                                              \
    "relay refused a plaintext data connection: enable allow_plain_data on the relay or turn "   \
    "data_plain off on the agent"

/* Why a data connection failed: err for the log, reason for StreamFailed on the tunnel. */
struct data_fail {
    char err[400];
    char reason[AGT_ERR_MAX];
};

/* A relay that does not accept plaintext answers a plaintext DataHello with a Refusal naming
 * plaintext, or (one that refuses before reading, or one without the feature, which tries a
 * TLS handshake) a closed connection or bytes that are not a frame. */
static void plain_refused(struct data_fail *df, const char *relay, const char *detail)
{
    snprintf(df->err, sizeof(df->err), "%s (relay %s: %s)", PLAIN_REFUSED, relay, detail);
    cr_strlcpy(df->reason, PLAIN_REFUSED, sizeof(df->reason));
}

/* Opens the data connection to the relay's external address: TLS, or with data-plain a plain
 * TCP connection to the same address. Returns 0 or -errno with df filled. */
static int data_connect(struct agt_agent *a, const struct agt_stream_req *s, struct cr_link *l,
                        struct data_fail *df)
{
    if (!a->cfg->data_plain) {
        int rc = cr_link_connect_tls(l, a->tls, s->relay, AGT_DIAL_TIMEOUT_MS, df->err,
                                     sizeof(df->err));
        if (rc < 0)
            cr_strlcpy(df->reason, "the agent cannot open a data connection to the relay",
                       sizeof(df->reason));
        return rc;
    }
    int fd = cr_tcp_connect(s->relay, AGT_DIAL_TIMEOUT_MS);
    if (fd < 0) {
        snprintf(df->err, sizeof(df->err), "cannot connect to %s (plaintext data connection): %s",
                 s->relay, strerror(-fd));
        cr_strlcpy(df->reason, "the agent cannot open a data connection to the relay",
                   sizeof(df->reason));
        return fd;
    }
    cr_link_init_plain(l, fd);
    cr_strlcpy(l->peer, s->relay, sizeof(l->peer));
    return 0;
}

/* DataHello, then DataAccepted (or Refusal), over TLS or in the clear. Returns 0 or -errno
 * with df filled. */
static int data_hello(struct cr_link *l, const struct agt_stream_req *s, struct data_fail *df)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT, *in = NULL;
    Camrelay__DataHello dh = CAMRELAY__DATA_HELLO__INIT;
    int plain = l->ssl == NULL;
    char m[120], detail[160];
    int rc;

    dh.serial = s->cam->serial;
    dh.stream_id = s->stream_id;
    dh.token.data = (uint8_t *)s->token;
    dh.token.len = s->token_len;
    f.body_case = CAMRELAY__FRAME__BODY_DATA_HELLO;
    f.data_hello = &dh;
    rc = cr_link_write(l, &f, AGT_WRITE_MS);
    if (rc < 0) {
        if (plain && (rc == -EPIPE || rc == -ECONNRESET)) {
            snprintf(detail, sizeof(detail), "closed before the hello was sent: %s",
                     strerror(-rc));
            plain_refused(df, s->relay, detail);
        } else {
            snprintf(df->err, sizeof(df->err), "cannot send data_hello to %s: %s", s->relay,
                     strerror(-rc));
            cr_strlcpy(df->reason, "the agent cannot send data_hello to the relay",
                       sizeof(df->reason));
        }
        return rc;
    }
    rc = cr_link_read(l, AGT_STEP_MS, &in);
    if (rc < 0) {
        if (plain && rc != -ETIMEDOUT) {
            snprintf(detail, sizeof(detail), "%s instead of DataAccepted",
                     rc == -ECONNRESET ? "connection closed" : "no camrelay frame");
            plain_refused(df, s->relay, detail);
        } else {
            snprintf(df->err, sizeof(df->err), "no answer to data_hello from %s: %s", s->relay,
                     strerror(-rc));
            cr_strlcpy(df->reason, "no answer from the relay to data_hello", sizeof(df->reason));
        }
        return rc;
    }
    switch (in->body_case) {
    case CAMRELAY__FRAME__BODY_DATA_ACCEPTED:
        if (in->data_accepted->stream_id != s->stream_id) {
            snprintf(df->err, sizeof(df->err), "relay %s accepted stream %" PRIu64 " instead",
                     s->relay, in->data_accepted->stream_id);
            cr_strlcpy(df->reason, "the relay accepted another stream", sizeof(df->reason));
            rc = -EBADMSG;
        }
        break;
    case CAMRELAY__FRAME__BODY_REFUSAL: {
        size_t i = 0;
        for (const char *p = in->refusal->message; p && *p && i + 1 < sizeof(m); p++)
            m[i++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        m[i] = '\0';
        rc = -EACCES;
        if (plain && strstr(m, "plaintext")) {
            snprintf(detail, sizeof(detail), "%s: %s", cr_status_name(in->refusal->status), m);
            plain_refused(df, s->relay, detail);
            break;
        }
        snprintf(df->err, sizeof(df->err), "relay %s refused the data connection: %s: %s",
                 s->relay, cr_status_name(in->refusal->status), m);
        snprintf(df->reason, sizeof(df->reason), "the relay refused the data connection: %s", m);
        break;
    }
    default:
        snprintf(df->err, sizeof(df->err), "unexpected %s from relay %s", cr_frame_body_name(in),
                 s->relay);
        cr_strlcpy(df->reason, "unexpected answer from the relay to data_hello",
                   sizeof(df->reason));
        rc = -EBADMSG;
        break;
    }
    cr_frame_free(in);
    return rc;
}

/* Connects to the local service: the simulator through a socketpair, or TCP. Returns a
 * connected non-blocking fd or -errno with a message in err. */
static int connect_local(struct agt_agent *a, const struct agt_stream_req *s, char *err,
                         size_t errlen)
{
    if (a->sim) {
        int sv[2];
        enum agt_sim_service svc = strcmp(s->service, "rtsp") == 0 ? AGT_SIM_RTSP : AGT_SIM_HTTP;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
            int e = errno;
            snprintf(err, errlen, "local service %s (simulator) unreachable: socketpair: %s",
                     s->service, strerror(e));
            return -e;
        }
        int rc = agt_sim_serve_fd(a->sim, sv[1], svc, s->cam->serial); /* consumes sv[1] */
        if (rc < 0) {
            close(sv[0]);
            snprintf(err, errlen, "local service %s (simulator) unreachable: %s", s->service,
                     strerror(-rc));
            return rc;
        }
        return sv[0];
    }
    for (unsigned i = 0; i < a->cfg->n_svc; i++) {
        const struct agt_service *svc = &a->cfg->svc[i];
        if (strcmp(svc->name, s->service) != 0)
            continue;
        int fd = cr_tcp_connect(svc->addr, AGT_LOCAL_CONNECT_MS);
        if (fd < 0)
            snprintf(err, errlen, "local service %s at %s unreachable: %s", svc->name, svc->addr,
                     strerror(-fd));
        return fd;
    }
    snprintf(err, errlen, "no local service %s", s->service);
    return -ENOENT;
}

static void *stream_main(void *arg)
{
    struct agt_stream_req *s = arg;
    struct agt_cam *c = s->cam;
    struct agt_agent *a = c->agent;
    struct cr_link link;
    struct data_fail df;
    uint64_t bytes_in = 0, bytes_out = 0;
    int rc, local;

    memset(&df, 0, sizeof(df));
    rc = data_connect(a, s, &link, &df);
    if (rc < 0) {
        cr_warn("stream %" PRIu64 " serial=%s: no data connection: %s", s->stream_id, c->serial,
                df.err);
        agt_tunnel_stream_failed(c, s->tunnel_gen, s->stream_id, df.reason);
        goto out_done;
    }
    rc = data_hello(&link, s, &df);
    if (rc < 0) {
        if (strstr(df.err, PLAIN_REFUSED))
            cr_err("stream %" PRIu64 " serial=%s: %s", s->stream_id, c->serial, df.err);
        else
            cr_warn("stream %" PRIu64 " serial=%s: %s", s->stream_id, c->serial, df.err);
        agt_tunnel_stream_failed(c, s->tunnel_gen, s->stream_id, df.reason);
        goto out_close_link;
    }
    local = connect_local(a, s, df.err, sizeof(df.err));
    if (local < 0) {
        cr_warn("stream %" PRIu64 " serial=%s: %s", s->stream_id, c->serial, df.err);
        agt_tunnel_stream_failed(c, s->tunnel_gen, s->stream_id, df.err);
        rc = local;
        goto out_close_link;
    }
    cr_info("stream open serial=%s stream=%" PRIu64 " service=%s%s", c->serial, s->stream_id,
            s->service, link.ssl ? "" : " plaintext");
    rc = agt_stream_pump(&link, local, a->stop_fd, &bytes_in, &bytes_out);
    cr_info("stream closed serial=%s stream=%" PRIu64 " bytes_in=%" PRIu64 " bytes_out=%" PRIu64,
            c->serial, s->stream_id, bytes_in, bytes_out);
    if (rc < 0)
        cr_debug("stream %" PRIu64 " serial=%s ended early: %s", s->stream_id, c->serial,
                 strerror(-rc));
    close(local);

out_close_link:
    /* A stream cut short ends without close_notify, or on a plaintext data connection with a
     * reset instead of a FIN, so the relay sees a truncation, not an end. */
    if (rc < 0 && link.ssl) {
        SSL_set_quiet_shutdown(link.ssl, 1);
    } else if (rc < 0 && link.fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(link.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    cr_link_close(&link);
out_done:
    atomic_fetch_sub(&c->streams, 1);
    atomic_fetch_sub(&a->streams_open, 1);
    cr_wipe(s->token, sizeof(s->token));
    free(s);
    return NULL;
}

int agt_stream_start(const struct agt_stream_req *req)
{
    struct agt_cam *c = req->cam;
    struct agt_agent *a = c->agent;
    struct agt_stream_req *s = cr_xmalloc(sizeof(*s));

    *s = *req;
    atomic_fetch_add(&c->streams, 1);
    atomic_fetch_add(&a->streams_open, 1);
    int rc = agt__spawn(a, stream_main, s);
    if (rc < 0) {
        atomic_fetch_sub(&c->streams, 1);
        atomic_fetch_sub(&a->streams_open, 1);
        free(s);
    }
    return rc;
}
