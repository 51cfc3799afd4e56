/* A control link: blocking, deadline-bounded framed I/O over a socket, with or without TLS.
 * Used by the control plane (dispatcher, relay uplink and management, agent, ctl) where a
 * thread per link is simple and cheap; the relay's data path does not use it. */
#ifndef CR_LINK_H
#define CR_LINK_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/frame.h"

struct cr_link {
    int fd;           /* non-blocking socket; -1 = closed */
    SSL *ssl;         /* NULL on plain links (Unix management socket) */
    size_t max_frame; /* frames above this close the link (default CR_FRAME_MAX) */
    char peer[64];    /* "ip:port" for log messages */
};

/* Wraps a connected socket (consumed: closed by cr_link_close on every path). */
void cr_link_init_plain(struct cr_link *l, int fd);

/* TLS client: connects to host_port, handshakes within timeout_ms and verifies the server's
 * certificate against ctx's CA and the host. Returns 0 or -errno with a message in err. */
int cr_link_connect_tls(struct cr_link *l, SSL_CTX *ctx, const char *host_port, int timeout_ms,
                        char *err, size_t errlen);

/* TLS server: handshakes on an accepted socket (consumed) within timeout_ms. */
int cr_link_accept_tls(struct cr_link *l, SSL_CTX *ctx, int fd, int timeout_ms, char *err,
                       size_t errlen);

/* Reads one frame. Waits up to wait_ms for its first byte (-1 = forever); once it starts, the
 * whole frame must arrive within 10 s. Returns 0 and an owned *out, -ETIMEDOUT (nothing read;
 * the link is still usable), -ECONNRESET (peer closed), -EMSGSIZE (oversized: close the
 * link), -EBADMSG (malformed), -EPROTO (TLS failure). */
int cr_link_read(struct cr_link *l, int wait_ms, Camrelay__Frame **out);

/* Writes one frame within timeout_ms. Returns 0 or -errno. */
int cr_link_write(struct cr_link *l, const Camrelay__Frame *f, int timeout_ms);

/* Reads/writes raw bytes (data connections after the hello). Same conventions as above;
 * read returns bytes (>0), 0 on orderly close, or -errno; -EAGAIN when nothing is ready. */
int cr_link_read_some(struct cr_link *l, void *buf, size_t cap);
int cr_link_write_all(struct cr_link *l, const void *buf, size_t len, int timeout_ms);

/* 1 if decrypted bytes are already buffered (poll on the fd would not show them). */
int cr_link_pending(struct cr_link *l);

/* Sends close_notify when TLS, closes the socket, frees the SSL. Safe to call twice. */
void cr_link_close(struct cr_link *l);

/* Convenience: writes a Refusal frame (best effort, 1 s). */
void cr_link_refuse(struct cr_link *l, int status, const char *message, uint32_t retry_after_ms);

#endif
