/* A control link: blocking, deadline-bounded framed I/O over a socket, with or without TLS. */
#include "common/link.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/err.h>

#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"

#define FRAME_BODY_DEADLINE_MS 10000

void cr_link_init_plain(struct cr_link *l, int fd)
{
    memset(l, 0, sizeof(*l));
    l->fd = fd;
    l->max_frame = CR_FRAME_MAX;
    cr_set_nonblock(fd, 1);
}

/* Waits until fd is ready for `events` or the deadline passes (deadline 0 = forever). */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        int timeout = -1;
        if (deadline) {
            uint64_t now = cr_now_ms();
            if (now >= deadline)
                return -ETIMEDOUT;
            timeout = (int)(deadline - now);
        }
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, timeout);
        if (rc > 0)
            return 0;
        if (rc == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

/* Maps an SSL result to: 1 retry after waiting (sets *events), or a negative errno. */
static int ssl_status(struct cr_link *l, int ret, short *events)
{
    int e = SSL_get_error(l->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        *events = POLLIN;
        return 1;
    case SSL_ERROR_WANT_WRITE:
        *events = POLLOUT;
        return 1;
    case SSL_ERROR_ZERO_RETURN:
        return -ECONNRESET;
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        return -ECONNRESET;
    default:
        return -EPROTO;
    }
}

static int handshake(struct cr_link *l, int is_server, int timeout_ms, char *err, size_t errlen)
{
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        int ret = is_server ? SSL_accept(l->ssl) : SSL_connect(l->ssl);
        if (ret == 1)
            return 0;
        short events = 0;
        int st = ssl_status(l, ret, &events);
        if (st < 0) {
            char buf[200];
            long vr = SSL_get_verify_result(l->ssl);
            /* INVALID_CALL: the handshake failed before the certificate was checked. */
            if (!is_server && vr != X509_V_OK && vr != X509_V_ERR_INVALID_CALL)
                snprintf(err, errlen, "TLS handshake with %s failed: certificate not trusted (%s)",
                         l->peer, X509_verify_cert_error_string(vr));
            else
                snprintf(err, errlen, "TLS handshake with %s failed: %s", l->peer,
                         cr_tls_error_string(SSL_get_error(l->ssl, ret), buf, sizeof(buf)));
            return st == -ECONNRESET ? -ECONNRESET : -EPROTO;
        }
        st = wait_fd(l->fd, events, deadline);
        if (st < 0) {
            snprintf(err, errlen, "TLS handshake with %s timed out", l->peer);
            return st;
        }
    }
}

int cr_link_connect_tls(struct cr_link *l, SSL_CTX *ctx, const char *host_port, int timeout_ms,
                        char *err, size_t errlen)
{
    memset(l, 0, sizeof(*l));
    l->fd = -1;
    l->max_frame = CR_FRAME_MAX;
    cr_strlcpy(l->peer, host_port, sizeof(l->peer));
    int fd = cr_tcp_connect(host_port, timeout_ms);
    if (fd < 0) {
        snprintf(err, errlen, "cannot connect to %s: %s", host_port, strerror(-fd));
        return fd;
    }
    l->fd = fd;
    l->ssl = SSL_new(ctx);
    if (!l->ssl || cr_tls_expect_host(l->ssl, host_port) < 0) {
        snprintf(err, errlen, "cannot set up TLS for %s", host_port);
        cr_link_close(l);
        return -ENOMEM;
    }
    SSL_set_fd(l->ssl, fd);
    int rc = handshake(l, 0, timeout_ms, err, errlen);
    if (rc < 0)
        cr_link_close(l);
    return rc;
}

int cr_link_accept_tls(struct cr_link *l, SSL_CTX *ctx, int fd, int timeout_ms, char *err,
                       size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    cr_link_init_plain(l, fd);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
        cr_addr_format((struct sockaddr *)&ss, l->peer, sizeof(l->peer));
    cr_tcp_tune(fd);
    l->ssl = SSL_new(ctx);
    if (!l->ssl) {
        snprintf(err, errlen, "cannot set up TLS for %s", l->peer);
        cr_link_close(l);
        return -ENOMEM;
    }
    SSL_set_fd(l->ssl, fd);
    int rc = handshake(l, 1, timeout_ms, err, errlen);
    if (rc < 0)
        cr_link_close(l);
    return rc;
}

int cr_link_pending(struct cr_link *l)
{
    return l->ssl && SSL_pending(l->ssl) > 0;
}

int cr_link_read_some(struct cr_link *l, void *buf, size_t cap)
{
    if (l->fd < 0)
        return -EBADF;
    if (l->ssl) {
        int ret = SSL_read(l->ssl, buf, (int)(cap > 1 << 30 ? 1 << 30 : cap));
        if (ret > 0)
            return ret;
        short events;
        int st = ssl_status(l, ret, &events);
        if (st == 1)
            return -EAGAIN;
        return st == -ECONNRESET ? 0 : st;
    }
    ssize_t r = read(l->fd, buf, cap);
    if (r >= 0)
        return (int)r;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

/* Reads exactly len bytes. If wait_first is set, waits until that deadline for the first
 * byte, then allows FRAME_BODY_DEADLINE_MS for the rest. */
static int read_exact(struct cr_link *l, uint8_t *buf, size_t len, uint64_t first_deadline)
{
    size_t got = 0;
    uint64_t deadline = first_deadline;
    while (got < len) {
        int r = cr_link_read_some(l, buf + got, len - got);
        if (r > 0) {
            if (got == 0)
                deadline = cr_now_ms() + FRAME_BODY_DEADLINE_MS;
            got += (size_t)r;
            continue;
        }
        if (r == 0)
            return -ECONNRESET;
        if (r != -EAGAIN)
            return r;
        short events = POLLIN;
        if (l->ssl && SSL_want_write(l->ssl))
            events = POLLOUT;
        int st = wait_fd(l->fd, events, deadline);
        if (st < 0)
            return (st == -ETIMEDOUT && got > 0) ? -EPROTO : st;
    }
    return 0;
}

int cr_link_read(struct cr_link *l, int wait_ms, Camrelay__Frame **out)
{
    uint8_t hdr[CR_FRAME_HDR];
    uint64_t first = wait_ms < 0 ? 0 : cr_now_ms() + (uint64_t)wait_ms;
    if (wait_ms == 0)
        first = cr_now_ms() + 1;
    int rc = read_exact(l, hdr, sizeof(hdr), first);
    if (rc < 0)
        return rc;
    int body = cr_frame_body_len(hdr, l->max_frame);
    if (body < 0)
        return body;
    uint8_t small[512];
    uint8_t *buf = body <= (int)sizeof(small) ? small : cr_xmalloc((size_t)body);
    rc = read_exact(l, buf, (size_t)body, cr_now_ms() + FRAME_BODY_DEADLINE_MS);
    if (rc == -ETIMEDOUT)
        rc = -EPROTO;
    if (rc == 0)
        rc = cr_frame_unpack_body(buf, (size_t)body, out) < 0 ? -EBADMSG : 0;
    cr_wipe(buf, (size_t)body); /* management frames carry plaintext OAKs and passwords */
    if (buf != small)
        free(buf);
    return rc;
}

int cr_link_write_all(struct cr_link *l, const void *data, size_t len, int timeout_ms)
{
    const uint8_t *p = data;
    size_t done = 0;
    uint64_t deadline = cr_now_ms() + (uint64_t)timeout_ms;
    if (l->fd < 0)
        return -EBADF;
    while (done < len) {
        short events = POLLOUT;
        if (l->ssl) {
            int ret = SSL_write(l->ssl, p + done, (int)(len - done > 1 << 30 ? 1 << 30 : len - done));
            if (ret > 0) {
                done += (size_t)ret;
                continue;
            }
            int st = ssl_status(l, ret, &events);
            if (st < 0)
                return st;
        } else {
            ssize_t w = send(l->fd, p + done, len - done, MSG_NOSIGNAL);
            if (w > 0) {
                done += (size_t)w;
                continue;
            }
            if (w < 0 && errno != EWOULDBLOCK && errno != EINTR)
                return -errno;
        }
        int st = wait_fd(l->fd, events, deadline);
        if (st < 0)
            return st;
    }
    return 0;
}

int cr_link_write(struct cr_link *l, const Camrelay__Frame *f, int timeout_ms)
{
    uint8_t small[1024];
    size_t need = cr_frame_encoded_size(f);
    uint8_t *buf = need <= sizeof(small) ? small : cr_xmalloc(need);
    int n = cr_frame_encode(f, buf, need);
    int rc = n < 0 ? n : cr_link_write_all(l, buf, (size_t)n, timeout_ms);
    if (buf != small)
        free(buf);
    return rc;
}

void cr_link_close(struct cr_link *l)
{
    if (l->ssl) {
        SSL_shutdown(l->ssl); /* best effort close_notify; the socket is non-blocking */
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
}

void cr_link_refuse(struct cr_link *l, int status, const char *message, uint32_t retry_after_ms)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Refusal r = CAMRELAY__REFUSAL__INIT;
    r.status = status;
    r.message = (char *)message;
    r.retry_after_ms = retry_after_ms;
    f.body_case = CAMRELAY__FRAME__BODY_REFUSAL;
    f.refusal = &r;
    cr_link_write(l, &f, 1000);
}
