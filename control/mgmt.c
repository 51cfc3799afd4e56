/* control/mgmt.c — the management server: Unix socket + optional TCP/TLS, a thread per
 * connection, one MgmtReply per MgmtRequest. */
#include "control/mgmt.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/util.h"

struct mgmt_conn {
    struct ctl_mgmt *m;
    int fd;      /* the connection; consumed by the link */
    int shut_fd; /* dup of fd, owned here: ctl_mgmt_stop() shuts the socket down through it
                  * without racing the connection thread closing (and the kernel reusing) fd */
    int is_tcp;
    struct mgmt_conn *prev, *next;
};

struct ctl_mgmt {
    ctl_mgmt_handler_fn handler;
    void *handler_ctx;
    SSL_CTX *tls; /* own reference; replaced by ctl_mgmt_set_tls under lock */
    char *token; /* NULL when there is no TCP listener; replaced under lock */
    size_t token_len;
    char *unix_path;
    unsigned idle_ms;
    int unix_fd, tcp_fd, wake_fd;
    pthread_t acceptor;

    pthread_mutex_t lock; /* guards the fields below, and tls and token */
    pthread_cond_t drained;
    struct mgmt_conn *conns;
    unsigned n_conns;    /* all connections */
    unsigned n_by_kind[2]; /* [is_tcp]: each listener has its own cap, so unauthenticated TCP
                            * peers cannot lock the local admin out of the Unix socket */
    int stopping;
};

/* "unix pid 123 uid 0" for log lines about a Unix-socket peer. */
static void unix_peer_name(int fd, char *buf, size_t cap)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
        snprintf(buf, cap, "unix pid %d uid %u", (int)cred.pid, (unsigned)cred.uid);
    else
        snprintf(buf, cap, "unix");
}

/* Plaintext secrets only ever travel in requests: wipe them before the frame is freed. */
static void wipe_request_secrets(Camrelay__MgmtRequest *req)
{
    char **fields[4] = {0};
    switch (req->op_case) {
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER:
        fields[0] = &req->camera_register->oak;
        fields[1] = &req->camera_register->user;
        fields[2] = &req->camera_register->password;
        break;
    case CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD:
        fields[0] = &req->account_add->password;
        break;
    default:
        break;
    }
    if (req->token)
        fields[3] = &req->token;
    for (int i = 0; i < 4; i++) {
        if (fields[i] && *fields[i] && **fields[i])
            cr_wipe(*fields[i], strlen(*fields[i]));
    }
}

static const char *op_name(const Camrelay__MgmtRequest *req)
{
    switch (req->op_case) {
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER: return "camera_register";
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST: return "camera_list";
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH: return "camera_attach";
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE: return "camera_remove";
    case CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD: return "account_add";
    case CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST: return "relay_list";
    case CAMRELAY__MGMT_REQUEST__OP_RELOAD: return "reload";
    default: return "none";
    }
}

/* 1 when the request carries exactly the configured token (constant-time compare). */
static int token_ok(struct ctl_mgmt *m, const Camrelay__MgmtRequest *req)
{
    size_t n = req->token ? strlen(req->token) : 0;
    pthread_mutex_lock(&m->lock); /* a reload may replace the token */
    int ok = m->token_len > 0 && n == m->token_len && cr_memeq_ct(req->token, m->token, n);
    pthread_mutex_unlock(&m->lock);
    return ok;
}

/* Serves one connection until the peer closes, idles out, or breaks the protocol. Returns 1
 * when the connection should stay open for another request. */
static int serve_one(struct ctl_mgmt *m, struct cr_link *l, int is_tcp)
{
    Camrelay__Frame *in = NULL;
    struct ctl_mgmt_reply rep;
    int rc, keep = 1;

    rc = cr_link_read(l, (int)m->idle_ms, &in);
    switch (rc) {
    case 0:
        break;
    case -ETIMEDOUT:
        cr_debug("management %s: idle for %u ms, closing", l->peer, m->idle_ms);
        return 0;
    case -ECONNRESET:
        return 0;
    case -EMSGSIZE:
        cr_warn("management %s: request frame above %d KiB, closing", l->peer,
                CTL_MGMT_MAX_REQUEST / 1024);
        return 0;
    case -EBADMSG:
        cr_warn("management %s: malformed frame, closing", l->peer);
        return 0;
    default:
        cr_info("management %s: read failed: %s", l->peer, strerror(-rc));
        return 0;
    }
    if (in->body_case != CAMRELAY__FRAME__BODY_MGMT_REQUEST) {
        cr_warn("management %s: unexpected %s frame, closing", l->peer, cr_frame_body_name(in));
        cr_frame_free(in);
        return 0;
    }

    Camrelay__MgmtRequest *req = in->mgmt_request;
    ctl_mgmt_reply_init(&rep, req->id);
    if (is_tcp && !token_ok(m, req)) {
        cr_warn("management %s: %s request with a missing or wrong token refused", l->peer,
                op_name(req));
        ctl_mgmt_reply_set(&rep, CAMRELAY__STATUS__ERR_PERMISSION,
                           "management token missing or wrong");
        keep = 0; /* one guess per connection (and per TLS handshake) */
    } else {
        cr_debug("management %s: %s", l->peer, op_name(req));
        m->handler(m->handler_ctx, req, &rep);
    }
    wipe_request_secrets(req);
    cr_frame_free(in);

    /* Requests are capped at 64 KiB; replies (camera lists) may use a whole frame. */
    size_t dropped = ctl_mgmt_reply_fit(&rep, CR_FRAME_MAX);
    if (dropped)
        cr_warn("management %s: reply trimmed by %zu entries to fit one frame", l->peer, dropped);
    Camrelay__Frame out = CAMRELAY__FRAME__INIT;
    out.body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    out.mgmt_reply = &rep.msg;
    rc = cr_link_write(l, &out, CTL_MGMT_WRITE_MS);
    ctl_mgmt_reply_free(&rep);
    if (rc < 0) {
        cr_info("management %s: cannot send reply: %s", l->peer, strerror(-rc));
        return 0;
    }
    return keep;
}

/* Removes c from the server's list, closes its shutdown handle and frees it. */
static void unlist(struct mgmt_conn *c)
{
    struct ctl_mgmt *m = c->m;
    pthread_mutex_lock(&m->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->n_conns--;
    m->n_by_kind[c->is_tcp]--;
    close(c->shut_fd);
    pthread_cond_broadcast(&m->drained);
    pthread_mutex_unlock(&m->lock);
    free(c);
}

static void *conn_main(void *arg)
{
    struct mgmt_conn *c = arg;
    struct ctl_mgmt *m = c->m;
    struct cr_link l;
    char err[256];

    if (c->is_tcp) {
        /* The handshake runs here, not in the acceptor, so a slow client stalls only itself. */
        /* A reference of our own: a reload may replace m->tls during the handshake. */
        pthread_mutex_lock(&m->lock);
        SSL_CTX *tls = m->tls;
        SSL_CTX_up_ref(tls);
        pthread_mutex_unlock(&m->lock);
        int rc = cr_link_accept_tls(&l, tls, c->fd, CTL_MGMT_HANDSHAKE_MS, err, sizeof(err));
        SSL_CTX_free(tls); /* the SSL, if any, holds its own */
        if (rc < 0) {
            cr_info("management: %s", err);
            goto out_unlist;
        }
    } else {
        cr_link_init_plain(&l, c->fd);
        unix_peer_name(c->fd, l.peer, sizeof(l.peer));
    }
    l.max_frame = CTL_MGMT_MAX_REQUEST;
    while (serve_one(m, &l, c->is_tcp))
        ;
    cr_link_close(&l);

out_unlist:
    unlist(c);
    return NULL;
}

/* Takes ownership of fd: hands it to a new connection thread or closes it. */
static void start_conn(struct ctl_mgmt *m, int fd, int is_tcp)
{
    pthread_attr_t attr;
    pthread_t t;
    struct mgmt_conn *c;

    is_tcp = !!is_tcp;
    pthread_mutex_lock(&m->lock);
    if (m->stopping || m->n_by_kind[is_tcp] >= CTL_MGMT_MAX_CONNS) {
        int full = !m->stopping;
        pthread_mutex_unlock(&m->lock);
        if (full)
            cr_warn("management: %u %s connections already open, refusing another",
                    CTL_MGMT_MAX_CONNS, is_tcp ? "TCP" : "Unix");
        close(fd);
        return;
    }
    int shut_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (shut_fd < 0) {
        pthread_mutex_unlock(&m->lock);
        cr_warn("management: cannot take a connection: %s", strerror(errno));
        close(fd);
        return;
    }
    c = cr_xcalloc(1, sizeof(*c));
    c->m = m;
    c->fd = fd;
    c->shut_fd = shut_fd;
    c->is_tcp = is_tcp;
    c->next = m->conns;
    if (m->conns)
        m->conns->prev = c;
    m->conns = c;
    m->n_conns++;
    m->n_by_kind[is_tcp]++;
    pthread_mutex_unlock(&m->lock);

    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        cr_warn("management: cannot start a connection thread: %s", strerror(rc));
        close(fd);
        unlist(c);
    }
}

static void *acceptor_main(void *arg)
{
    struct ctl_mgmt *m = arg;
    struct pollfd p[3];
    int n = 0, i_unix = -1, i_tcp = -1;

    p[n++] = (struct pollfd){.fd = m->wake_fd, .events = POLLIN};
    if (m->unix_fd >= 0) {
        i_unix = n;
        p[n++] = (struct pollfd){.fd = m->unix_fd, .events = POLLIN};
    }
    if (m->tcp_fd >= 0) {
        i_tcp = n;
        p[n++] = (struct pollfd){.fd = m->tcp_fd, .events = POLLIN};
    }
    for (;;) {
        if (poll(p, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            cr_err("management: poll failed: %s", strerror(errno));
            break;
        }
        if (p[0].revents)
            break; /* ctl_mgmt_stop() */
        for (int i = 1; i < n; i++) {
            if (!(p[i].revents & POLLIN))
                continue;
            int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                start_conn(m, fd, i == i_tcp);
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                cr_err("management: accept failed: %s; pausing 100 ms", strerror(errno));
                poll(p, 1, 100); /* wakes early on stop */
            } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                cr_warn("management: accept on the %s listener failed: %s",
                        i == i_unix ? "Unix" : "TCP", strerror(errno));
            }
        }
    }
    return NULL;
}

static void close_listeners(struct ctl_mgmt *m)
{
    if (m->tcp_fd >= 0)
        close(m->tcp_fd);
    if (m->unix_fd >= 0) {
        close(m->unix_fd);
        unlink(m->unix_path);
    }
}

/* Frees what ctl_mgmt_start made besides its sockets and threads. */
static void mgmt_free(struct ctl_mgmt *m)
{
    if (m->token) {
        cr_wipe(m->token, m->token_len);
        free(m->token);
    }
    SSL_CTX_free(m->tls);
    free(m->unix_path);
    pthread_cond_destroy(&m->drained);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

int ctl_mgmt_start(const struct ctl_mgmt_config *cfg, struct ctl_mgmt **out, char *err,
                   size_t errlen)
{
    struct ctl_mgmt *m;
    int rc;

    *out = NULL;
    if (!cfg->handler || (!cfg->unix_path && !cfg->tcp_listen)) {
        snprintf(err, errlen, "management server needs a handler and a listener");
        return -EINVAL;
    }
    if (cfg->tcp_listen && (!cfg->tls || !cfg->token || !*cfg->token)) {
        snprintf(err, errlen, "management listener %s needs a TLS certificate and a token",
                 cfg->tcp_listen);
        return -EINVAL;
    }
    m = cr_xcalloc(1, sizeof(*m));
    m->handler = cfg->handler;
    m->handler_ctx = cfg->handler_ctx;
    m->tls = cfg->tls;
    if (m->tls)
        SSL_CTX_up_ref(m->tls);
    m->idle_ms = cfg->idle_ms ? cfg->idle_ms : CTL_MGMT_IDLE_MS;
    m->unix_fd = m->tcp_fd = -1;
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->drained, NULL);
    m->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (m->wake_fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create an eventfd: %s", strerror(-rc));
        goto out_free;
    }

    if (cfg->unix_path) {
        rc = cr_mkdir_parents(cfg->unix_path, 0755);
        if (rc < 0) {
            snprintf(err, errlen, "cannot create the directory of %s: %s", cfg->unix_path,
                     strerror(-rc));
            goto out_close;
        }
        int probe = cr_unix_connect(cfg->unix_path);
        if (probe >= 0) {
            close(probe);
            rc = -EADDRINUSE;
            snprintf(err, errlen, "another daemon already answers on %s", cfg->unix_path);
            goto out_close;
        }
        m->unix_fd = cr_unix_listen(cfg->unix_path, 0660);
        if (m->unix_fd < 0) {
            rc = m->unix_fd;
            snprintf(err, errlen, "cannot listen on %s: %s", cfg->unix_path, strerror(-rc));
            goto out_close;
        }
        m->unix_path = cr_xstrdup(cfg->unix_path);
        cr_set_nonblock(m->unix_fd, 1);
    }
    if (cfg->tcp_listen) {
        m->tcp_fd = cr_tcp_listen(cfg->tcp_listen, 0, 64);
        if (m->tcp_fd < 0) {
            rc = m->tcp_fd;
            snprintf(err, errlen, "cannot listen on %s: %s", cfg->tcp_listen, strerror(-rc));
            goto out_close;
        }
        m->token = cr_xstrdup(cfg->token);
        m->token_len = strlen(m->token);
    }
    rc = pthread_create(&m->acceptor, NULL, acceptor_main, m);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the management thread: %s", strerror(rc));
        rc = -rc;
        goto out_close;
    }
    if (m->unix_path)
        cr_info("management: listening on %s", m->unix_path);
    if (m->tcp_fd >= 0)
        cr_info("management: listening on %s (TLS, token required)", cfg->tcp_listen);
    *out = m;
    return 0;

out_close:
    close_listeners(m);
    close(m->wake_fd);
out_free:
    mgmt_free(m);
    return rc;
}

uint16_t ctl_mgmt_tcp_port(const struct ctl_mgmt *m)
{
    return m->tcp_fd >= 0 ? cr_sock_port(m->tcp_fd) : 0;
}

void ctl_mgmt_stop(struct ctl_mgmt *m)
{
    uint64_t one = 1;

    if (!m)
        return;
    pthread_mutex_lock(&m->lock);
    m->stopping = 1;
    pthread_mutex_unlock(&m->lock);
    if (write(m->wake_fd, &one, sizeof(one)) < 0)
        cr_warn("management: cannot wake the accept thread: %s", strerror(errno));
    pthread_join(m->acceptor, NULL);
    close_listeners(m);

    pthread_mutex_lock(&m->lock);
    for (struct mgmt_conn *c = m->conns; c; c = c->next)
        shutdown(c->shut_fd, SHUT_RDWR);
    while (m->n_conns > 0)
        pthread_cond_wait(&m->drained, &m->lock);
    pthread_mutex_unlock(&m->lock);

    close(m->wake_fd);
    mgmt_free(m);
}

int ctl_mgmt_set_token(struct ctl_mgmt *m, const char *token)
{
    size_t n = token ? strlen(token) : 0;
    if (n == 0)
        return -EINVAL;
    char *copy = cr_xstrdup(token);
    pthread_mutex_lock(&m->lock);
    if (!m->token) { /* no TCP listener: nothing uses a token */
        pthread_mutex_unlock(&m->lock);
        cr_wipe(copy, n);
        free(copy);
        return -ENOENT;
    }
    int changed = n != m->token_len || !cr_memeq_ct(copy, m->token, n);
    char *old = m->token;
    size_t old_len = m->token_len;
    m->token = copy;
    m->token_len = n;
    pthread_mutex_unlock(&m->lock);
    cr_wipe(old, old_len);
    free(old);
    return changed;
}

void ctl_mgmt_set_tls(struct ctl_mgmt *m, SSL_CTX *tls)
{
    SSL_CTX_up_ref(tls);
    pthread_mutex_lock(&m->lock);
    SSL_CTX *old = m->tls;
    m->tls = tls;
    pthread_mutex_unlock(&m->lock);
    SSL_CTX_free(old); /* NULL-safe; live connections hold their own references */
}
