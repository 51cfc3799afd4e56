/* control/http.c — the internal read-only HTTP port on libmicrohttpd (plain HTTP, GET/HEAD). */
#include "control/http.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/util.h"

/* ---- text buffer ---- */

static void text_reserve(struct ctl_text *t, size_t more)
{
    if (t->len + more + 1 <= t->cap)
        return;
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + more + 1)
        cap *= 2;
    char *nb = cr_xmalloc(cap);
    if (t->len)
        memcpy(nb, t->buf, t->len);
    free(t->buf);
    t->buf = nb;
    t->cap = cap;
}

void ctl_text_put(struct ctl_text *t, const char *s, size_t n)
{
    text_reserve(t, n);
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void ctl_text_puts(struct ctl_text *t, const char *s)
{
    ctl_text_put(t, s, strlen(s));
}

void ctl_text_printf(struct ctl_text *t, const char *fmt, ...)
{
    va_list ap;
    char small[256];

    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        ctl_text_put(t, small, (size_t)n);
        return;
    }
    text_reserve(t, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void ctl_text_free(struct ctl_text *t)
{
    free(t->buf);
    memset(t, 0, sizeof(*t));
}

/* ---- the server ---- */

struct ctl_http {
    struct MHD_Daemon *mhd;
    ctl_http_handler_fn handler;
    void *handler_ctx;
    uint16_t port;
    char name[64];
};

/* libmicrohttpd's own messages: mostly clients that broke the protocol or went away (port
 * scanners, health checks), so info, as the dispatcher logs a failed TLS handshake. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct ctl_http *h = cls;
    char line[512];
    if (CR_LOG_INFO > cr_log_level)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    cr_info("http (%s): %s", h->name, line);
}

/* Queues status with body (consumed; MHD frees it after sending) and the headers every
 * response carries. */
static enum MHD_Result reply(struct MHD_Connection *conn, int status, const char *content_type,
                             struct ctl_text *body)
{
    struct MHD_Response *rsp;
    if (body->len) {
        rsp = MHD_create_response_from_buffer(body->len, body->buf, MHD_RESPMEM_MUST_FREE);
        if (rsp)
            memset(body, 0, sizeof(*body)); /* MHD owns the buffer now */
    } else {
        rsp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    }
    ctl_text_free(body); /* on failure; a no-op when MHD took it */
    if (!rsp)
        return MHD_NO; /* out of memory: MHD closes the connection */
    MHD_add_response_header(rsp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    MHD_add_response_header(rsp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(rsp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(rsp, "Referrer-Policy", "no-referrer");
    /* The status page needs nothing but its own inline style. */
    MHD_add_response_header(rsp, "Content-Security-Policy",
                            "default-src 'none'; style-src 'unsafe-inline'; "
                            "frame-ancestors 'none'");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(rsp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, (unsigned)status, rsp);
    MHD_destroy_response(rsp);
    return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    struct ctl_http *h = cls;
    struct ctl_text body = {0};
    (void)version;
    (void)upload_data;
    (void)con_cls;

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        /* Answered before any request body is read; MHD then closes the connection. */
        cr_debug("http (%s): %s %s refused: read-only", h->name, method, url);
        ctl_text_puts(&body, "read-only: GET or HEAD only\n");
        return reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, CTL_HTTP_TEXT, &body);
    }
    if (*upload_data_size) /* a GET with a body: ignore the body */
        *upload_data_size = 0;

    struct ctl_http_response rsp = {.status = MHD_HTTP_OK, .content_type = CTL_HTTP_TEXT};
    int rc = h->handler(h->handler_ctx, url, &rsp);
    if (rc < 0) {
        ctl_text_free(&rsp.body);
        cr_debug("http (%s): %s %s: not found", h->name, method, url);
        ctl_text_puts(&body, "not found\n");
        return reply(conn, MHD_HTTP_NOT_FOUND, CTL_HTTP_TEXT, &body);
    }
    cr_debug("http (%s): %s %s: %d, %zu bytes", h->name, method, url, rsp.status, rsp.body.len);
    return reply(conn, rsp.status, rsp.content_type, &rsp.body);
}

int ctl_http_start(const struct ctl_http_config *cfg, struct ctl_http **out, char *err,
                   size_t errlen)
{
    *out = NULL;
    if (!cfg->handler || !cfg->listen) {
        snprintf(err, errlen, "http: a listen address and a handler are needed");
        return -EINVAL;
    }
    /* Bound here rather than by MHD so a failure names the address and the errno. */
    int fd = cr_tcp_listen(cfg->listen, 0, 64);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s for the %s: %s", cfg->listen,
                 cfg->name ? cfg->name : "HTTP port",
                 fd == -EINVAL ? "not a host:port address" : strerror(-fd));
        return fd;
    }
    struct ctl_http *h = cr_xcalloc(1, sizeof(*h));
    h->handler = cfg->handler;
    h->handler_ctx = cfg->handler_ctx;
    cr_strlcpy(h->name, cfg->name ? cfg->name : "http", sizeof(h->name));
    h->port = cr_sock_port(fd);

    /* epoll: a relay with many tunnels hands out descriptors far above select()'s 1024. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    h->mhd = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)(cfg->max_conns ? cfg->max_conns : CTL_HTTP_MAX_CONNS),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)CTL_HTTP_MAX_CONNS_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)(cfg->timeout_s ? cfg->timeout_s : CTL_HTTP_TIMEOUT_S),
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1,
        MHD_OPTION_END);
    if (!h->mhd) {
        snprintf(err, errlen, "cannot start the HTTP server for the %s on %s", h->name,
                 cfg->listen);
        close(fd);
        free(h);
        return -EIO;
    }
    cr_info("%s on http://%s/ (port %u; plain HTTP, read-only)", h->name, cfg->listen, h->port);
    *out = h;
    return 0;
}

uint16_t ctl_http_port(const struct ctl_http *h)
{
    return h ? h->port : 0;
}

void ctl_http_stop(struct ctl_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->mhd); /* joins its thread and closes the listener it was given */
    free(h);
}
