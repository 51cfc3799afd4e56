/* Socket helpers: address parsing/formatting, listeners and connects with timeouts. */
#include "common/net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int cr_addr_parse(const char *host_port, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *port_s;
    size_t hl;

    if (!host_port || !*host_port)
        return -EINVAL;
    if (host_port[0] == '[') {
        const char *end = strchr(host_port, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        hl = (size_t)(end - host_port - 1);
        if (hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, host_port + 1, hl);
        port_s = end + 2;
    } else {
        const char *colon = strrchr(host_port, ':');
        if (!colon)
            return -EINVAL;
        hl = (size_t)(colon - host_port);
        if (hl >= sizeof(host))
            return -EINVAL;
        memcpy(host, host_port, hl);
        port_s = colon + 1;
    }
    host[hl] = '\0';
    char *endp;
    long port = strtol(port_s, &endp, 10);
    if (!*port_s || *endp || port < 0 || port > 65535)
        return -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (hl == 0 || strcmp(host, "*") == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        *len = sizeof(*in);
        return 0;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return -EHOSTUNREACH;
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        return -EAFNOSUPPORT;
    return 0;
}

int cr_addr_format(const struct sockaddr *sa, char *buf, size_t cap)
{
    char ip[INET6_ADDRSTRLEN];
    int n;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        n = snprintf(buf, cap, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        n = snprintf(buf, cap, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        n = snprintf(buf, cap, "unix");
    }
    return (n < 0 || (size_t)n >= cap) ? -ENOSPC : 0;
}

int cr_set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

void cr_tcp_tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
}

int cr_tcp_listen(const char *host_port, int reuseport, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, rc, fd;

    rc = cr_addr_parse(host_port, &ss, &len);
    if (rc < 0)
        return rc;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport)
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, backlog) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

uint16_t cr_sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

int cr_tcp_connect(const char *host_port, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc, fd, err = 0;
    socklen_t elen = sizeof(err);

    rc = cr_addr_parse(host_port, &ss, &len);
    if (rc < 0)
        return rc;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto out_close_fd;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        do {
            rc = poll(&p, 1, timeout_ms);
        } while (rc < 0 && errno == EINTR);
        if (rc == 0) {
            rc = -ETIMEDOUT;
            goto out_close_fd;
        }
        if (rc < 0) {
            rc = -errno;
            goto out_close_fd;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err) {
            rc = err ? -err : -errno;
            goto out_close_fd;
        }
    }
    cr_tcp_tune(fd);
    return fd;

out_close_fd:
    close(fd);
    return rc;
}

int cr_unix_listen(const char *path, unsigned mode)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int fd, rc;
    if (strlen(path) >= sizeof(un.sun_path))
        return -ENAMETOOLONG;
    strcpy(un.sun_path, path);
    /* Only a stale socket is removed: a misconfigured path must not delete a regular file. */
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode))
        return -EEXIST;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    unlink(path);
    /* Create the socket file with no access, then open it up to exactly `mode`: no window in
     * which another user could connect. */
    mode_t old = umask(0777);
    rc = bind(fd, (struct sockaddr *)&un, sizeof(un));
    umask(old);
    if (rc < 0 || chmod(path, mode) < 0 || listen(fd, 64) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int cr_unix_connect(const char *path)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int fd, rc;
    if (strlen(path) >= sizeof(un.sun_path))
        return -ENAMETOOLONG;
    strcpy(un.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

void cr_raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}
