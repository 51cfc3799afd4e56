/* Socket helpers: address parsing/formatting, listeners and connects with timeouts. */
#ifndef CR_NET_H
#define CR_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CR_ADDR_STRLEN 64

/* Parses "host:port", "[v6]:port" or ":port" (any address). Host names are resolved with
 * getaddrinfo (first result). Returns 0, -EINVAL on syntax, -EHOSTUNREACH if unresolvable. */
int cr_addr_parse(const char *host_port, struct sockaddr_storage *ss, socklen_t *len);

/* Formats as "ip:port" ("[v6]:port"); returns 0 or -ENOSPC. */
int cr_addr_format(const struct sockaddr *sa, char *buf, size_t cap);

/* A non-blocking, close-on-exec TCP listener. reuseport: SO_REUSEPORT so several workers can
 * each own one. Returns the fd or -errno. */
int cr_tcp_listen(const char *host_port, int reuseport, int backlog);

/* Port a bound socket listens on. */
uint16_t cr_sock_port(int fd);

/* Connects with a timeout; returns a connected, non-blocking, close-on-exec fd or -errno
 * (-ETIMEDOUT, -ECONNREFUSED, ...). */
int cr_tcp_connect(const char *host_port, int timeout_ms);

/* A Unix stream listener at path (removing a stale socket first), mode applied to the
 * socket file. Returns fd (blocking, close-on-exec) or -errno. */
int cr_unix_listen(const char *path, unsigned mode);
/* Connects to a Unix stream socket; returns fd or -errno. */
int cr_unix_connect(const char *path);

int cr_set_nonblock(int fd, int on);
/* Raises the soft RLIMIT_NOFILE to the hard limit: servers that hold a descriptor per
 * connection need more than the usual 1024. Best effort; call at start, from main. */
void cr_raise_fd_limit(void);
void cr_tcp_tune(int fd); /* TCP_NODELAY + keepalive: control links are small and latency-bound */

#endif
