/* C shim for bench/micro.cc: what the harness needs from relay/worker_t.h, which is not C++
 * (_Atomic fields), exposed as plain functions. */
#ifndef BENCH_SHIM_H
#define BENCH_SHIM_H

#include <stddef.h>

#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The relay's receive-buffer geometry: RLY_BUF_SIZE and RLY_RING_BUFS when worker_t.h defines
 * them, else 16 KiB and 256 (the sizes the relay was designed for). */
size_t bench_relay_buf_size(void);
unsigned bench_relay_ring_bufs(void);

/* One direction of an agent connection as the relay's worker moves ciphertext: the sending
 * SSL's write BIO is drained into a struct rly_buf (rly__agent_flush), and that buffer is fed
 * to the receiving SSL's read BIO (rly__agent_on_recv). The kernel hop between them is left
 * out on purpose: this measures the userspace record path only. */
struct bench_tls_pipe;

/* Returns an owned pipe with its buffer allocated, or NULL when out of memory. */
struct bench_tls_pipe *bench_tls_pipe_new(void);

/* Frees the pipe and its buffer; NULL is fine. */
void bench_tls_pipe_free(struct bench_tls_pipe *p);

/* Moves every pending ciphertext byte from from's write BIO to to's read BIO (both borrowed).
 * Returns the bytes moved (0 when nothing was pending) or -EIO when a BIO refused. */
long bench_tls_pipe_pump(struct bench_tls_pipe *p, SSL *from, SSL *to);

#ifdef __cplusplus
}
#endif

#endif
