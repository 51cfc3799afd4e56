/* control/mgmt.h — the management server: a Unix socket and an optional TCP+TLS listener that
 * answer each MgmtRequest with one MgmtReply built by a handler callback. */
#ifndef CTL_MGMT_H
#define CTL_MGMT_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "control/mgmt_reply.h"

#define CTL_MGMT_MAX_REQUEST (64 * 1024) /* a larger request frame closes the connection */
#define CTL_MGMT_IDLE_MS 30000           /* a connection silent this long is closed */
#define CTL_MGMT_HANDSHAKE_MS 10000
#define CTL_MGMT_WRITE_MS 10000
#define CTL_MGMT_MAX_CONNS 64 /* concurrent connections per listener; more are closed */

struct ctl_mgmt;

/*
 * Answers one request. Runs on a connection thread, several at once: it must be thread-safe.
 * req is borrowed for the call; rep arrives initialised (OK, id copied) and the server sends
 * and frees it afterwards. Token checks are done before the handler is called.
 */
typedef void (*ctl_mgmt_handler_fn)(void *ctx, const Camrelay__MgmtRequest *req,
                                    struct ctl_mgmt_reply *rep);

struct ctl_mgmt_config {
    const char *unix_path;  /* Unix socket (mode 0660, parent directory created); NULL = none */
    const char *tcp_listen; /* "host:port" TCP+TLS listener; NULL = none */
    SSL_CTX *tls;           /* server context for tcp_listen (the server takes a reference) */
    const char *token;      /* required on tcp_listen; copied */
    ctl_mgmt_handler_fn handler;
    void *handler_ctx;
    unsigned idle_ms; /* 0 = CTL_MGMT_IDLE_MS (tests shorten it) */
};

/*
 * Binds the listeners and starts the accept thread. Refuses (-EADDRINUSE) when a live server
 * already answers on unix_path. Returns 0 and an owned *out, or -errno with a message in err.
 * Call from the main thread.
 */
int ctl_mgmt_start(const struct ctl_mgmt_config *cfg, struct ctl_mgmt **out, char *err,
                   size_t errlen);

/* Replaces the token TCP requests must carry (a reload; copied). Returns 1 if it differs from
 * the old one, 0 if the same, -ENOENT when there is no TCP listener, -EINVAL for "". Any
 * thread. */
int ctl_mgmt_set_token(struct ctl_mgmt *m, const char *token);

/* Replaces the TCP listener's server context for handshakes from now on (a reload with a
 * renewed certificate). Takes its own reference; the replaced one is released. Any thread. */
void ctl_mgmt_set_tls(struct ctl_mgmt *m, SSL_CTX *tls);

/* Port of the TCP listener (useful when tcp_listen asked for port 0), 0 if none. */
uint16_t ctl_mgmt_tcp_port(const struct ctl_mgmt *m);

/*
 * Stops accepting, shuts down every open connection, waits for their threads to finish (a
 * handler in progress completes), removes the Unix socket file and frees m. NULL is a no-op.
 */
void ctl_mgmt_stop(struct ctl_mgmt *m);

#endif
