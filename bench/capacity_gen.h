/* camrelay-bench's load generator: cameras (control tunnel, data connection) and recorders on
 * one or two epoll threads, non-blocking sockets and BoringSSL. Each camera sends frames of a
 * fixed size at a fixed rate (paced mode), the recorders parse them and measure the added
 * latency. The main thread steers it: how many streams, which measurement window. */
#ifndef CAP_CAPACITY_GEN_H
#define CAP_CAPACITY_GEN_H

#include <stdint.h>

#include <openssl/ssl.h>

#include "bench/capacity.h"
#include "bench/capacity_peer.h"

/* What the generator saw in one window. Frames count by their scheduled send time: a frame
 * scheduled inside the window and not received by the window's end is undelivered. */
struct cap_wstats {
    uint64_t sched;      /* frames due */
    uint64_t recv;       /* frames received whole, by the window's end */
    uint64_t bytes;      /* their bytes (header included) */
    uint64_t late;       /* received with added latency above the budget */
    uint64_t gaps, ooo;  /* sequence numbers skipped / going backwards */
    uint64_t src_drop;   /* not sent: the camera's queue held a second of frames */
    uint64_t logins;     /* handshakes mode: logins completed inside the window */
    uint64_t max_us, lag_max_us;
    uint32_t hist[CAP_HBINS]; /* added latency, us */
    uint32_t lag[CAP_HBINS];  /* generator lateness: actual send - scheduled, us */
};

struct cap_gen;

/* A generator for up to cap streams of the given mode against the given peer kind (o borrowed,
 * outlives it). Every camera logs in with the same secret: the relay's verifier has salt, the
 * cameras' ClientKey is client_key (derived once: PBKDF2 is not what is measured). Threads start
 * with cap_gen_start. Returns owned generator, or NULL with a message on stderr. */
struct cap_gen *cap_gen_new(const struct cap_opts *o, int mode, int peer, uint32_t cap,
                            const uint8_t salt[16], const uint8_t client_key[32]);

/* Port of the recorders' listener (direct and haproxy peers; 0 for camrelay). */
uint16_t cap_gen_listen_port(const struct cap_gen *g);

/* Starts the threads against the peer (borrowed; outlives the generator's threads). */
void cap_gen_start(struct cap_gen *g, struct cap_peer *pp);

/* Raises the number of streams (tunnels in idle mode, parallel logins in handshakes mode) to n
 * and waits until all are up (handshakes: started). Returns 0, or -1 with a message when one
 * failed or they took longer than 120 s. progress: a live count on stderr. */
int cap_gen_grow(struct cap_gen *g, uint32_t n, int progress);

/* Streams (tunnels, logins in flight) up and failed so far. Any thread. */
void cap_gen_counts(struct cap_gen *g, uint32_t *ready, uint32_t *failed);

/* Measures frames scheduled in [t0, t1) (CLOCK_MONOTONIC ns); they must arrive by t_end. */
void cap_gen_window(struct cap_gen *g, uint64_t t0, uint64_t t1, uint64_t t_end);

/* Waits past the window's t_end until every thread reported, and adds up their figures. */
void cap_gen_window_wait(struct cap_gen *g, struct cap_wstats *out);

/* Stops the threads; connections stay open (bulk mode takes one over). Idempotent. */
void cap_gen_join(struct cap_gen *g);

/* After cap_gen_join: the camera's socket and TLS session (NULL for plain peers) and the
 * recorder's socket of stream idx, all still owned by the generator. Returns 0 or -1. */
int cap_gen_stream_sockets(struct cap_gen *g, uint32_t idx, int *cam_fd, SSL **cam_ssl,
                           int *rec_fd);

/* Stops the threads, closes every connection, frees g. NULL is fine. */
void cap_gen_free(struct cap_gen *g);

#endif
