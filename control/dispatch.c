/* control/dispatch.c — the dispatcher's listeners, connection threads and first-frame routing. */
#include "control/dispatch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"
#include "control/dispatch_int.h"

#define DEFAULT_TICKET_TTL_S 300
#define DEFAULT_PENDING_INTERVAL_MS 5000
#define DEFAULT_RELAY_KEEPALIVE_MS 10000
#define DEFAULT_RETRY_AFTER_MS 10000
#define DEFAULT_MAX_CONNS 4096
#define CONN_STACK_SIZE (512 * 1024) /* BoringSSL + SQLite + protobuf-c need far less */
#define REFUSE_LOG_INTERVAL_MS 1000

size_t ctl__dispatch_split(char *s, char **out, size_t cap)
{
    size_t n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(s, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save))
        if (*tok)
            out[n++] = tok;
    return n;
}

/* ---- connection threads ---- */

/* Reads the first frame of a TLS connection and hands it to the agent or relay flow. */
static void serve_tls(struct ctl_dispatch *d, struct ctl_dispatch_conn *c)
{
    struct cr_link l;
    char err[256];
    Camrelay__Frame *f = NULL;

    int rc = cr_link_accept_tls(&l, d->tls, c->link_fd, CTL_DISPATCH_STEP_MS, err, sizeof(err));
    if (rc < 0) {
        /* Port scanners and health checks land here: not worth more than info. */
        cr_info("%s", err);
        return;
    }
    l.max_frame = CTL_DISPATCH_UNAUTH_MAX_FRAME;
    rc = cr_link_read(&l, CTL_DISPATCH_STEP_MS, &f);
    switch (rc) {
    case 0:
        break;
    case -ETIMEDOUT:
        cr_info("no hello from %s within %d ms; closing", l.peer, CTL_DISPATCH_STEP_MS);
        goto out_close_link;
    case -EMSGSIZE:
        cr_warn("frame above %d bytes from unauthenticated %s; closing",
                CTL_DISPATCH_UNAUTH_MAX_FRAME, l.peer);
        goto out_close_link;
    case -EBADMSG:
        cr_warn("malformed first frame from %s; closing", l.peer);
        goto out_close_link;
    default:
        cr_debug("%s closed before its hello: %s", l.peer, strerror(-rc));
        goto out_close_link;
    }

    switch (f->body_case) {
    case CAMRELAY__FRAME__BODY_AUTH_START:
        ctl__dispatch_agent(d, &l, f->auth_start);
        break;
    case CAMRELAY__FRAME__BODY_RELAY_HELLO:
        ctl__dispatch_relay(d, c, &l, f->relay_hello);
        break;
    default: {
        char msg[128];
        cr_info("unexpected %s from %s; closing", cr_frame_body_name(f), l.peer);
        snprintf(msg, sizeof(msg), "unexpected %s: expected auth_start or relay_hello",
                 cr_frame_body_name(f));
        cr_link_refuse(&l, CAMRELAY__STATUS__ERR_BAD_REQUEST, msg, 0);
        break;
    }
    }
    cr_frame_free(f);

out_close_link:
    cr_link_close(&l);
}

static void serve_mgmt(struct ctl_dispatch *d, struct ctl_dispatch_conn *c)
{
    struct cr_link l;
    cr_link_init_plain(&l, c->link_fd);
    cr_strlcpy(l.peer, c->peer, sizeof(l.peer));
    ctl__dispatch_mgmt(d, &l);
    cr_link_close(&l);
}

static void *conn_main(void *arg)
{
    struct ctl_dispatch_conn *c = arg;
    struct ctl_dispatch *d = c->d;

    if (c->is_mgmt)
        serve_mgmt(d, c);
    else
        serve_tls(d, c);

    /* Unlink before closing our dup, so nobody shuts down a reused descriptor number. */
    pthread_mutex_lock(&d->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    pthread_mutex_unlock(&d->lock);
    close(c->fd);
    free(c);

    /* Last touch of d: stop() frees it once active reaches 0. */
    pthread_mutex_lock(&d->lock);
    if (--d->active == 0)
        pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* Takes ownership of fd: starts a thread for it, or closes it (limit reached, stopping). */
static void start_conn(struct ctl_dispatch *d, int fd, int is_mgmt, const char *peer)
{
    struct ctl_dispatch_conn *c;
    pthread_attr_t attr;
    pthread_t tid;
    int dupfd, rc;

    pthread_mutex_lock(&d->lock);
    if (d->stopping) {
        pthread_mutex_unlock(&d->lock);
        close(fd);
        return;
    }
    if (d->active >= d->max_conns) {
        uint64_t now = cr_now_ms();
        d->refused++;
        if (now - d->refused_logged_ms >= REFUSE_LOG_INTERVAL_MS) {
            d->refused_logged_ms = now;
            cr_warn("too many connections (%u): refusing %s (%llu refused so far)",
                    d->max_conns, peer, (unsigned long long)d->refused);
        }
        pthread_mutex_unlock(&d->lock);
        close(fd);
        return;
    }
    pthread_mutex_unlock(&d->lock);

    dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dupfd < 0) {
        cr_err("cannot serve %s: dup: %s", peer, strerror(errno));
        close(fd);
        return;
    }
    c = cr_xcalloc(1, sizeof(*c));
    c->d = d;
    c->fd = dupfd;
    c->link_fd = fd;
    c->is_mgmt = is_mgmt;
    cr_strlcpy(c->peer, peer, sizeof(c->peer));

    pthread_mutex_lock(&d->lock);
    if (d->stopping) {
        pthread_mutex_unlock(&d->lock);
        goto out_free_conn;
    }
    c->next = d->conns;
    if (d->conns)
        d->conns->prev = c;
    d->conns = c;
    d->active++;
    pthread_mutex_unlock(&d->lock);

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, CONN_STACK_SIZE);
    rc = pthread_create(&tid, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (rc == 0)
        return;

    cr_err("cannot start a thread for %s: %s", peer, strerror(rc));
    pthread_mutex_lock(&d->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (--d->active == 0)
        pthread_cond_broadcast(&d->idle);
    pthread_mutex_unlock(&d->lock);
out_free_conn:
    close(c->fd);
    close(c->link_fd);
    free(c);
}

static void accept_one(struct ctl_dispatch *d, int lfd, int is_mgmt)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char peer[64] = "mgmt";

    int fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
            return;
        /* EMFILE/ENFILE/ENOBUFS: the pending connection stays queued; back off a little
         * instead of spinning on a listener that keeps polling readable. */
        cr_err("accept on %s listener: %s", is_mgmt ? "management" : "TLS", strerror(errno));
        usleep(100 * 1000);
        return;
    }
    if (is_mgmt) {
        struct ucred cred;
        socklen_t cl = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
            snprintf(peer, sizeof(peer), "mgmt pid=%d uid=%u", (int)cred.pid, (unsigned)cred.uid);
    } else if (cr_addr_format((struct sockaddr *)&ss, peer, sizeof(peer)) < 0) {
        cr_strlcpy(peer, "?", sizeof(peer));
    }
    start_conn(d, fd, is_mgmt, peer);
}

static void *acceptor_main(void *arg)
{
    struct ctl_dispatch *d = arg;
    struct pollfd p[3] = {
        {.fd = d->wake_fd, .events = POLLIN},
        {.fd = d->tls_fd, .events = POLLIN},
        {.fd = d->mgmt_fd, .events = POLLIN}, /* -1 is ignored by poll */
    };
    for (;;) {
        int n = poll(p, 3, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            cr_err("poll on listeners: %s", strerror(errno));
            usleep(100 * 1000);
            continue;
        }
        if (p[0].revents)
            return NULL;
        if (p[1].revents)
            accept_one(d, d->tls_fd, 0);
        if (p[2].revents)
            accept_one(d, d->mgmt_fd, 1);
    }
}

/* ---- relay sessions and held agents (shared with dispatch_agent.c / dispatch_relay.c) ---- */

void ctl__dispatch_wake(struct ctl_dispatch *d, const char *serial)
{
    pthread_mutex_lock(&d->lock);
    for (struct ctl_dispatch_waiter *w = d->waiters; w; w = w->next) {
        if (strcmp(w->serial, serial) == 0) {
            w->ready = 1;
            pthread_cond_signal(&w->cond);
        }
    }
    pthread_mutex_unlock(&d->lock);
}

int ctl__dispatch_relay_online(struct ctl_dispatch *d, const char *name)
{
    int online = 0;
    pthread_mutex_lock(&d->lock);
    for (struct ctl_dispatch_relay *r = d->relays; r; r = r->next) {
        if (strcmp(r->name, name) == 0) {
            online = 1;
            break;
        }
    }
    pthread_mutex_unlock(&d->lock);
    return online;
}

/* ---- start / stop ---- */

static char *dup_or_null(const char *s)
{
    return s && *s ? cr_xstrdup(s) : NULL;
}

static void free_dispatch(struct ctl_dispatch *d)
{
    if (d->wake_fd >= 0)
        close(d->wake_fd);
    if (d->mgmt_fd >= 0) {
        close(d->mgmt_fd);
        unlink(d->mgmt_path);
    }
    if (d->tls_fd >= 0)
        close(d->tls_fd);
    ctl_registry_close(d->reg);
    SSL_CTX_free(d->tls);
    pthread_mutex_destroy(&d->sync_lock);
    pthread_cond_destroy(&d->idle);
    pthread_mutex_destroy(&d->lock);
    free(d->listen);
    free(d->cert_file);
    free(d->key_file);
    free(d->db_path);
    free(d->mgmt_path);
    free(d);
}

int ctl_dispatch_start(const struct ctl_dispatch_config *cfg, struct ctl_dispatch **out,
                       char *err, size_t errlen)
{
    struct ctl_dispatch *d;
    int rc;

    *out = NULL;
    if (!cfg->listen || !cfg->cert_file || !cfg->key_file || !cfg->db_path) {
        snprintf(err, errlen, "listen address, certificate, key and database are required");
        return -EINVAL;
    }
    /* A peer closing mid-write must not kill the process (BoringSSL writes with write(2)). */
    signal(SIGPIPE, SIG_IGN);

    d = cr_xcalloc(1, sizeof(*d));
    d->listen = cr_xstrdup(cfg->listen);
    d->cert_file = cr_xstrdup(cfg->cert_file);
    d->key_file = cr_xstrdup(cfg->key_file);
    d->db_path = cr_xstrdup(cfg->db_path);
    d->mgmt_path = dup_or_null(cfg->mgmt_socket);
    d->hold_ms = cfg->hold_ms;
    d->ticket_ttl_s = cfg->ticket_ttl_s ? cfg->ticket_ttl_s : DEFAULT_TICKET_TTL_S;
    d->pending_interval_ms =
        cfg->pending_interval_ms ? cfg->pending_interval_ms : DEFAULT_PENDING_INTERVAL_MS;
    d->relay_keepalive_ms =
        cfg->relay_keepalive_ms ? cfg->relay_keepalive_ms : DEFAULT_RELAY_KEEPALIVE_MS;
    d->retry_after_ms = cfg->retry_after_ms ? cfg->retry_after_ms : DEFAULT_RETRY_AFTER_MS;
    d->max_conns = cfg->max_conns ? cfg->max_conns : DEFAULT_MAX_CONNS;
    d->tls_fd = d->mgmt_fd = d->wake_fd = -1;
    pthread_mutex_init(&d->lock, NULL);
    pthread_cond_init(&d->idle, NULL);
    pthread_mutex_init(&d->sync_lock, NULL);

    d->tls = cr_tls_server_ctx(d->cert_file, d->key_file, err, errlen);
    if (!d->tls) {
        rc = -EINVAL;
        goto out_free;
    }
    rc = ctl_registry_open(d->db_path, &d->reg);
    if (rc < 0) {
        snprintf(err, errlen, "cannot open the registry %s: %s", d->db_path, strerror(-rc));
        goto out_free;
    }
    rc = cr_tcp_listen(d->listen, 0, 1024);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", d->listen,
                 rc == -EINVAL ? "not a host:port address" : strerror(-rc));
        goto out_free;
    }
    d->tls_fd = rc;
    d->port = cr_sock_port(d->tls_fd);
    if (d->mgmt_path) {
        rc = cr_unix_listen(d->mgmt_path, 0660);
        if (rc < 0) {
            snprintf(err, errlen, "cannot listen on management socket %s: %s", d->mgmt_path,
                     strerror(-rc));
            goto out_free;
        }
        d->mgmt_fd = rc;
        cr_set_nonblock(d->mgmt_fd, 1);
    }
    d->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (d->wake_fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        goto out_free;
    }
    rc = pthread_create(&d->acceptor, NULL, acceptor_main, d);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the acceptor thread: %s", strerror(rc));
        rc = -rc;
        goto out_free;
    }
    d->acceptor_started = 1;
    cr_info("dispatcher listening on %s (port %u)%s%s", d->listen, d->port,
            d->mgmt_path ? ", management socket " : "", d->mgmt_path ? d->mgmt_path : "");
    *out = d;
    return 0;

out_free:
    free_dispatch(d);
    return rc;
}

uint16_t ctl_dispatch_port(const struct ctl_dispatch *d)
{
    return d->port;
}

void ctl_dispatch_stop(struct ctl_dispatch *d)
{
    uint64_t one = 1;

    if (!d)
        return;
    if (d->acceptor_started) {
        ssize_t w = write(d->wake_fd, &one, sizeof(one));
        (void)w;
        pthread_join(d->acceptor, NULL);
    }

    pthread_mutex_lock(&d->lock);
    d->stopping = 1;
    for (struct ctl_dispatch_conn *c = d->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    for (struct ctl_dispatch_waiter *w = d->waiters; w; w = w->next)
        pthread_cond_signal(&w->cond);
    while (d->active > 0)
        pthread_cond_wait(&d->idle, &d->lock);
    pthread_mutex_unlock(&d->lock);

    cr_info("dispatcher stopped");
    free_dispatch(d);
}
