/* camrelay-bench: the peer under test in a child process (the relay, forked and driven through
 * relay/relay.h, or haproxy, exec'd from bench/haproxy.cfg.in), plus the temporary directory
 * with its certificates, and the /proc figures the benchmark reads. Main thread only. */
#ifndef CAP_CAPACITY_PEER_H
#define CAP_CAPACITY_PEER_H

#include <netinet/in.h>
#include <stdint.h>
#include <sys/types.h>

#include "bench/capacity.h"

struct cap_peer {
    int kind;                    /* enum cap_peer_kind */
    pid_t pid;                   /* -1: none (direct) or already reaped */
    int cmd_fd, rep_fd;          /* relay child: commands in, replies out */
    struct sockaddr_in cam_addr; /* where cameras connect */
    uint16_t *ep_ports;          /* relay: camera i's recorder endpoint port (owned) */
    uint32_t n_cams;
    long rss_base_kb;            /* after start, before any camera connected */
};

/* Makes a fresh temporary directory with a CA, a server certificate for 127.0.0.1 and its key
 * (server.pem, server.key, both.pem for haproxy) with the openssl command line. Returns 0 or -1
 * with a message on stderr. */
int cap_peer_certs(void);

/* Kills the running child, if any, and removes the temporary directory. Safe to call twice and
 * from a signal handler on the way out (best effort). */
void cap_peer_cleanup(void);

/* Starts the peer, sized for streams cameras: for the relay, a child whose cameras all share
 * the verifier (salt, stored_key); for haproxy, `haproxy -db` in front of rec_port; for direct,
 * nothing (cameras dial rec_port). Fills p. Returns 0 or -1 with a message on stderr (p still
 * needs cap_peer_stop). */
int cap_peer_start(const struct cap_opts *o, int kind, uint32_t streams, const uint8_t salt[16],
                   const uint8_t stored_key[32], uint16_t rec_port, struct cap_peer *p);

/* Stops the child (the relay gets 2 s to stop cleanly, then SIGKILL) and frees p's memory. */
void cap_peer_stop(struct cap_peer *p);

/* Relay: registers count more cameras (serials CAP_SERIAL_FMT, numbered on), with one recorder
 * endpoint each when endpoints is set, and waits until the workers know them. Their ports go to
 * p->ep_ports. Returns 0 or -1. */
int cap_peer_add_cameras(struct cap_peer *p, uint32_t count, int endpoints);

/* Relay: the buffers_exhausted counter (0 for other peers or when the relay is gone). */
uint64_t cap_peer_buffers_exhausted(struct cap_peer *p);

/* Relay: the stream path (relay/relay.h rly_path_name: "tls-inplace", "plain", ...) most
 * of its streams took so far; "" for other peers, before any stream or when the relay is gone.
 * A static string. */
const char *cap_peer_stream_path(struct cap_peer *p);

/* CPU seconds (utime + stime of every thread) and VmRSS of a process. Returns 0 or -1. */
int cap_proc_sample(pid_t pid, double *cpu_s, long *rss_kb);

/* CPU seconds this process (the load generator) has used. */
double cap_self_cpu_s(void);

/* CPU seconds the whole machine has been busy (every core, /proc/stat: all but idle and
 * iowait), to tell how much other work shared the machine during a measurement. */
double cap_machine_busy_s(void);

#endif
