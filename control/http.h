/* control/http.h — the daemons' internal, read-only HTTP port (metrics, status page), served by
 * libmicrohttpd, and the growable text buffer responses are built in. */
#ifndef CTL_HTTP_H
#define CTL_HTTP_H

#include <stddef.h>
#include <stdint.h>

/*
 * A text buffer that grows as it is written: buf[0..len) plus a NUL at buf[len] once anything
 * was written. All-zero is a valid empty buffer. Control plane only: growth aborts on
 * exhaustion (cr_xmalloc), so writers never check for errors.
 */
struct ctl_text {
    char *buf;
    size_t len, cap;
};

void ctl_text_put(struct ctl_text *t, const char *s, size_t n);
void ctl_text_puts(struct ctl_text *t, const char *s);
void ctl_text_printf(struct ctl_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Frees the buffer and leaves t empty (all zero). */
void ctl_text_free(struct ctl_text *t);

/* What a handler answers: status 200 and a body by default. */
struct ctl_http_response {
    int status;               /* HTTP status; the handler may leave the default 200 */
    const char *content_type; /* static string, e.g. CTL_HTTP_TEXT */
    struct ctl_text body;     /* consumed by the server (sent, then freed) */
};

#define CTL_HTTP_TEXT "text/plain; charset=utf-8"
#define CTL_HTTP_HTML "text/html; charset=utf-8"
#define CTL_HTTP_JSON "application/json"
#define CTL_HTTP_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

/* Answers a GET or HEAD of path (decoded, without the query string). Returns 0 with rsp
 * filled, or -ENOENT for a path it does not serve (the server answers 404). Runs on the
 * server's thread, one request at a time; must not block for long. */
typedef int (*ctl_http_handler_fn)(void *ctx, const char *path, struct ctl_http_response *rsp);

struct ctl_http_config {
    const char *listen;  /* "host:port" ("[v6]:port"); port 0 = any free port */
    ctl_http_handler_fn handler;
    void *handler_ctx;   /* borrowed; must outlive the server */
    const char *name;    /* for log lines: "metrics and status page" */
    unsigned max_conns;  /* concurrent connections, 0 = CTL_HTTP_MAX_CONNS */
    unsigned timeout_s;  /* idle time before a connection is closed, 0 = CTL_HTTP_TIMEOUT_S */
};

#define CTL_HTTP_MAX_CONNS 32
#define CTL_HTTP_MAX_CONNS_PER_IP 8
#define CTL_HTTP_TIMEOUT_S 10

struct ctl_http;

/*
 * Binds cfg->listen and starts libmicrohttpd's own thread (epoll, so descriptors above
 * FD_SETSIZE are fine). Plain HTTP only: this is the internal side, and the port must never
 * carry a secret. GET and HEAD only (405 otherwise), every response with no-store and nosniff.
 * Returns 0 and an owned *out, or -errno with a message in err (-EINVAL: not host:port).
 * Call after the process has blocked its signals, so the server thread inherits the mask.
 */
int ctl_http_start(const struct ctl_http_config *cfg, struct ctl_http **out, char *err,
                   size_t errlen);

/* The port the server is bound to (useful with port 0). */
uint16_t ctl_http_port(const struct ctl_http *h);

/* Stops the thread, closes the listener and every connection, frees h. NULL is a no-op. */
void ctl_http_stop(struct ctl_http *h);

#endif
