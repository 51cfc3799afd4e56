/* C shim for bench/micro.cc: relay data-path types (worker_t.h) behind plain functions. */
#include "bench/shim.h"

#include <errno.h>
#include <stdlib.h>

#include "relay/worker_t.h"

/* worker_t.h is being reworked; fall back to the designed sizes if a constant moves. */
#ifndef RLY_BUF_SIZE
#define RLY_BUF_SIZE (16 * 1024)
#endif
#ifndef RLY_RING_BUFS
#define RLY_RING_BUFS 256
#endif

/* The worker drains a whole TLS record (16 KiB plaintext + 22 bytes) in one BIO_read. */
#define PIPE_CAP (RLY_BUF_SIZE > 17 * 1024 ? RLY_BUF_SIZE : 17 * 1024)

struct bench_tls_pipe {
    struct rly_buf out; /* the sender's out buffer: ciphertext waiting for a send */
};

size_t bench_relay_buf_size(void)
{
    return RLY_BUF_SIZE;
}

unsigned bench_relay_ring_bufs(void)
{
    return RLY_RING_BUFS;
}

struct bench_tls_pipe *bench_tls_pipe_new(void)
{
    struct bench_tls_pipe *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->out.mem = malloc(PIPE_CAP);
    if (!p->out.mem) {
        free(p);
        return NULL;
    }
    p->out.cap = PIPE_CAP;
    return p;
}

void bench_tls_pipe_free(struct bench_tls_pipe *p)
{
    if (!p)
        return;
    free(p->out.mem);
    free(p);
}

long bench_tls_pipe_pump(struct bench_tls_pipe *p, SSL *from, SSL *to)
{
    BIO *wbio = SSL_get_wbio(from), *rbio = SSL_get_rbio(to);
    struct rly_buf *b = &p->out;
    long moved = 0;

    while (BIO_ctrl_pending(wbio) > 0) {
        int n = BIO_read(wbio, b->mem, (int)b->cap);
        if (n <= 0)
            return -EIO;
        b->off = 0;
        b->len = (uint32_t)n;
        if (BIO_write(rbio, b->mem + b->off, (int)b->len) != (int)b->len)
            return -EIO;
        b->off = b->len = 0;
        moved += n;
    }
    return moved;
}
