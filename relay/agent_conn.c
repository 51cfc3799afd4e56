/* Connections from agents on the external port: TLS through memory BIOs, the hello that says
 * what the connection is, the login of control tunnels, keepalive, and the control frames. */
#include "relay/worker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>

#include "common/auth.h"
#include "common/auth_link.h"
#include "common/frame.h"
#include "common/log.h"
#include "common/tls.h"
#include "common/util.h"
#include "relay/ktls.h"

static const char *const state_names[] = {"idle", "handshake", "hello", "login", "tunnel", "data"};

int rly__agent_start(struct rly_worker *w, struct rly_conn *c)
{
    /* Under tls_lock: a reload may swap the context and drop the relay's reference on the
     * old one between reading the pointer and SSL_new taking the SSL's reference. */
    pthread_mutex_lock(&w->relay->tls_lock);
    c->ssl = SSL_new(w->relay->tls);
    pthread_mutex_unlock(&w->relay->tls_lock);
    if (!c->ssl)
        return -ENOMEM;
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    if (!rbio || !wbio) {
        BIO_free(rbio);
        BIO_free(wbio);
        return -ENOMEM;
    }
    SSL_set_bio(c->ssl, rbio, wbio); /* the SSL owns both from here */
    SSL_set_accept_state(c->ssl);
    c->state = RLY_AGENT_HANDSHAKE;
    c->deadline_ms = cr_now_ms() + RLY_HANDSHAKE_TIMEOUT_MS;
    rly__post_recv(w, c);
    return 0;
}

void rly__agent_flush(struct rly_worker *w, struct rly_conn *c)
{
    if (c->send_busy || c->closing)
        return;
    BIO *wbio = c->ssl ? SSL_get_wbio(c->ssl) : NULL;
    if (c->out.len == 0 && wbio && BIO_ctrl_pending(wbio) > 0) {
        if (rly__buf_take(w, &c->out) < 0) {
            c->starved = 1; /* the ciphertext waits in the BIO until a buffer is free */
            return;
        }
        int n = BIO_read(wbio, c->out.mem, (int)c->out.cap);
        if (n > 0) {
            c->out.off = 0;
            c->out.len = (uint32_t)n;
        }
    }
    rly__post_send(w, c);
}

int rly__agent_send_frame(struct rly_worker *w, struct rly_conn *c, const Camrelay__Frame *f)
{
    if (c->plain) { /* a plaintext data connection: the frame goes out as it is */
        if (rly__buf_take(w, &c->out) < 0)
            return -ENOBUFS;
        uint32_t at = c->out.off + c->out.len;
        int n = cr_frame_encode(f, c->out.mem + at, c->out.cap - at);
        if (n < 0)
            return n;
        c->out.len += (uint32_t)n;
        rly__post_send(w, c);
        return 0;
    }
    int n = cr_frame_encode(f, (uint8_t *)w->scratch, sizeof(w->scratch));
    if (n < 0)
        return n;
    /* A memory BIO takes the whole record: SSL_write cannot be partial here. */
    if (SSL_write(c->ssl, w->scratch, n) != n) {
        ERR_clear_error();
        return -EPROTO;
    }
    rly__agent_flush(w, c);
    return 0;
}

/* Sends a Refusal and closes the connection once it has been sent. */
static void refuse(struct rly_worker *w, struct rly_conn *c, int status, const char *message,
                   uint32_t retry_after_ms)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Refusal r = CAMRELAY__REFUSAL__INIT;
    r.status = status;
    r.message = (char *)message;
    r.retry_after_ms = retry_after_ms;
    f.body_case = CAMRELAY__FRAME__BODY_REFUSAL;
    f.refusal = &r;
    c->state = RLY_AGENT_IDLE;
    c->read_eof = 1; /* read nothing more from a refused peer */
    c->close_after_flush = 1;
    c->deadline_ms = cr_now_ms() + 2000; /* a peer that does not read us cannot hold the slot */
    if (rly__agent_send_frame(w, c, &f) < 0)
        rly__conn_close(w, c, "cannot send refusal");
}

static void on_tunnel_hello(struct rly_worker *w, struct rly_conn *c, Camrelay__TunnelHello *h)
{
    struct rly_relay *r = w->relay;
    char msg[160];

    if (!h->auth || cr_auth_start_check(h->auth) < 0) {
        atomic_fetch_add(&r->counters.frames_rejected, 1);
        cr_warn("agent %s: malformed tunnel hello", c->addr);
        refuse(w, c, CAMRELAY__STATUS__ERR_BAD_REQUEST, "malformed tunnel hello", 0);
        return;
    }
    const char *serial = h->auth->identity;
    int32_t cam_idx = rly__camera_find(w, serial);
    if (cam_idx < 0 && !atomic_load(&r->cameras_loaded)) {
        /* Still loading the registry after a restart: the camera may well be ours. */
        refuse(w, c, CAMRELAY__STATUS__ERR_RETRY, "relay is starting; try again shortly", 1000);
        return;
    }
    if (cam_idx < 0) {
        atomic_fetch_add(&r->counters.tunnels_refused, 1);
        cr_warn("agent %s: refused tunnel for unregistered serial %s", c->addr, serial);
        snprintf(msg, sizeof(msg), "camera %s is not registered on this relay", serial);
        refuse(w, c, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL, msg, 0);
        return;
    }
    if (h->ticket.len > 0 && atomic_load(&r->have_ticket_key)) {
        int rc = cr_ticket_check(r->ticket_key, serial, r->cfg.relay_name, h->ticket.data,
                                 h->ticket.len, (uint64_t)cr_unix_now());
        if (rc < 0) {
            atomic_fetch_add(&r->counters.tunnels_refused, 1);
            cr_warn("agent %s: refused tunnel for %s: ticket %s", c->addr, serial,
                    rc == -EKEYEXPIRED ? "expired" : "invalid");
            refuse(w, c, CAMRELAY__STATUS__ERR_AUTH,
                   rc == -EKEYEXPIRED ? "ticket expired" : "ticket not valid for this relay", 0);
            return;
        }
    }
    struct rly_camera *cam = &w->cameras[cam_idx];
    c->camera = cam_idx;
    c->auth_start = h->auth; /* taken over from the frame: freed with the slot */
    h->auth = NULL;
    cr_random_bytes(c->server_nonce, sizeof(c->server_nonce));

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthChallenge ch = CAMRELAY__AUTH_CHALLENGE__INIT;
    ch.salt.data = cam->salt;
    ch.salt.len = sizeof(cam->salt);
    ch.iterations = cam->iterations;
    ch.server_nonce.data = c->server_nonce;
    ch.server_nonce.len = sizeof(c->server_nonce);
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_CHALLENGE;
    f.auth_challenge = &ch;
    c->state = RLY_AGENT_AUTH;
    c->deadline_ms = cr_now_ms() + RLY_HELLO_TIMEOUT_MS;
    if (rly__agent_send_frame(w, c, &f) < 0)
        rly__conn_close(w, c, "cannot send challenge");
}

static void on_proof(struct rly_worker *w, struct rly_conn *c, Camrelay__AuthProof *p)
{
    struct rly_relay *r = w->relay;
    struct rly_camera *cam = rly__camera(w, c->camera);
    struct cr_auth_transcript t = {0};
    char msg[200];

    if (!cam) {
        refuse(w, c, CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL, "camera was removed", 0);
        return;
    }
    t.identity = c->auth_start->identity;
    t.client_nonce = c->auth_start->client_nonce.data;
    t.client_nonce_len = c->auth_start->client_nonce.len;
    t.server_nonce = c->server_nonce;
    t.server_nonce_len = sizeof(c->server_nonce);
    t.salt = cam->salt;
    t.iterations = cam->iterations;
    if (cr_auth_tls_binding(c->ssl, t.binding) < 0 ||
        !cr_auth_verify(cam->stored_key, &t, p->client_proof.data, p->client_proof.len)) {
        atomic_fetch_add(&r->counters.tunnels_refused, 1);
        cr_warn("agent %s: authentication failed for serial %s", c->addr, cam->serial);
        snprintf(msg, sizeof(msg),
                 "authentication failed for serial %s: OAK or credentials do not match the "
                 "registration",
                 cam->serial);
        refuse(w, c, CAMRELAY__STATUS__ERR_AUTH, msg, 0);
        return;
    }
    camrelay__auth_start__free_unpacked(c->auth_start, NULL);
    c->auth_start = NULL;

    uint64_t now = cr_now_ms();
    int32_t me = rly__idx(w, c), old = cam->tunnel;
    c->state = RLY_AGENT_TUNNEL;
    c->deadline_ms = 0;
    c->last_rx_ms = now;
    c->keepalive_ms = atomic_load_explicit(&r->keepalive_ms, memory_order_relaxed);
    c->next_ping_ms = now + c->keepalive_ms;
    rly__camera_set_online(w, cam, me, c->addr);
    /* A reconnecting camera replaces its old tunnel at once: the old one may be a dead TCP
     * connection the relay has not noticed yet. */
    struct rly_conn *prev = rly__conn(w, old);
    if (prev && old != me && prev->kind == RLY_CONN_AGENT) {
        cr_info("tunnel for %s from %s replaces the one from %s", cam->serial, c->addr,
                prev->addr);
        rly__conn_close(w, prev, "replaced by a new tunnel");
    }

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__TunnelWelcome wel = CAMRELAY__TUNNEL_WELCOME__INIT;
    wel.keepalive_ms = c->keepalive_ms;
    wel.site_addr = c->addr;
    f.body_case = CAMRELAY__FRAME__BODY_TUNNEL_WELCOME;
    f.tunnel_welcome = &wel;
    atomic_fetch_add(&r->counters.tunnels_accepted, 1);
    cr_info("tunnel up serial=%s site=%s", cam->serial, c->addr);
    if (rly__agent_send_frame(w, c, &f) < 0)
        rly__conn_close(w, c, "cannot send welcome");
}

static void on_data_hello(struct rly_worker *w, struct rly_conn *c, Camrelay__DataHello *h)
{
    const char *why = "refused";
    int rc = rly__stream_pair(w, c, h, &why);
    if (rc < 0) {
        atomic_fetch_add(&w->relay->counters.data_conns_refused, 1);
        cr_warn("agent %s: data connection for stream %llu of %s refused: %s", c->addr,
                (unsigned long long)h->stream_id, h->serial ? h->serial : "?", why);
        refuse(w, c, rc == -EACCES ? CAMRELAY__STATUS__ERR_AUTH : CAMRELAY__STATUS__ERR_BAD_REQUEST,
               why, 0);
    }
}

/* A frame the link does not allow in its state: the peer is broken or hostile. */
static void reject_frame(struct rly_worker *w, struct rly_conn *c, const Camrelay__Frame *f)
{
    char msg[96];
    atomic_fetch_add(&w->relay->counters.frames_rejected, 1);
    snprintf(msg, sizeof(msg), "unexpected %s in state %s", cr_frame_body_name(f),
             state_names[c->state]);
    cr_warn("agent %s: %s: closing", c->addr, msg);
    refuse(w, c, CAMRELAY__STATUS__ERR_BAD_REQUEST, msg, 0);
}

/* The serial a hello names, or NULL when the hello is malformed. */
static const char *hello_serial(const Camrelay__Frame *f)
{
    const char *serial = NULL;
    if (f->body_case == CAMRELAY__FRAME__BODY_TUNNEL_HELLO && f->tunnel_hello->auth)
        serial = f->tunnel_hello->auth->identity;
    else if (f->body_case == CAMRELAY__FRAME__BODY_DATA_HELLO)
        serial = f->data_hello->serial;
    if (!serial || !*serial || strlen(serial) >= RLY_NAME_MAX)
        return NULL;
    return serial;
}

/* Handles one frame. Returns 1 when the frame was taken over (handed to another worker),
 * 0 when the caller still owns it. */
static int handle_frame(struct rly_worker *w, struct rly_conn *c, Camrelay__Frame *f)
{
    switch (c->state) {
    case RLY_AGENT_HELLO: {
        if (c->plain && f->body_case != CAMRELAY__FRAME__BODY_DATA_HELLO) {
            reject_frame(w, c, f); /* control tunnels are always TLS */
            return 0;
        }
        const char *serial = hello_serial(f);
        if (serial && w->relay->n_workers > 1) {
            uint32_t owner = rly__owner(w->relay, serial);
            if (owner != w->id) {
                rly__handover(w, c, owner, f); /* the camera's worker continues from here */
                return 1;
            }
        }
        if (f->body_case == CAMRELAY__FRAME__BODY_TUNNEL_HELLO) {
            rly_ktls_forget(c->ssl); /* a tunnel keeps BoringSSL's record layer */
            on_tunnel_hello(w, c, f->tunnel_hello);
        }
        else if (f->body_case == CAMRELAY__FRAME__BODY_DATA_HELLO)
            on_data_hello(w, c, f->data_hello);
        else
            reject_frame(w, c, f);
        return 0;
    }
    case RLY_AGENT_AUTH:
        if (f->body_case == CAMRELAY__FRAME__BODY_AUTH_PROOF)
            on_proof(w, c, f->auth_proof);
        else
            reject_frame(w, c, f);
        return 0;
    case RLY_AGENT_TUNNEL:
        c->last_rx_ms = cr_now_ms();
        if (f->body_case == CAMRELAY__FRAME__BODY_PONG)
            return 0;
        if (f->body_case == CAMRELAY__FRAME__BODY_STREAM_FAILED) {
            rly__stream_failed(w, rly__camera(w, c->camera), f->stream_failed->stream_id,
                               f->stream_failed->reason);
            return 0;
        }
        reject_frame(w, c, f);
        return 0;
    default:
        return 0;
    }
}

/* Handles the whole frames at the start of c->frame. Returns 1 when the connection wants
 * more bytes, 0 when it moved on (closing, refused, handed over, or paired: then the stream's
 * path has taken over and c->frame holds the stream bytes that followed the hello). */
static int decode_frames(struct rly_worker *w, struct rly_conn *c)
{
    struct rly_buf *b = &c->frame;
    for (;;) {
        Camrelay__Frame *f = NULL;
        int rc = cr_frame_decode(b->mem, b->len, RLY_FRAME_MAX_EXTERNAL, &f);
        if (rc == 0 && b->len == RLY_PLAIN_CAP)
            rc = -EMSGSIZE; /* cannot happen with max <= cap, kept as a guard */
        if (rc == 0)
            return 1;
        if (rc < 0) {
            atomic_fetch_add(&w->relay->counters.frames_rejected, 1);
            cr_warn("agent %s: %s frame: closing", c->addr,
                    rc == -EMSGSIZE ? "oversized" : "malformed");
            b->len = 0;
            refuse(w, c, CAMRELAY__STATUS__ERR_BAD_REQUEST,
                   rc == -EMSGSIZE ? "frame too large" : "malformed frame", 0);
            return 0;
        }
        memmove(b->mem, b->mem + rc, b->len - (uint32_t)rc); /* consume before handling */
        b->len -= (uint32_t)rc;
        if (!handle_frame(w, c, f))
            cr_frame_free(f);
        if (c->closing || c->close_after_flush || c->handover_to)
            return 0;
        if (c->state == RLY_AGENT_DATA) {
            rly__stream_agent_readable(w, c); /* raw bytes from here on */
            return 0;
        }
    }
}

/* A plaintext data connection before its pairing: bytes are frames as they are. */
static void read_plain_frames(struct rly_worker *w, struct rly_conn *c, const uint8_t *data,
                              int len)
{
    struct rly_buf *b = &c->frame;
    if (len > 0) {
        if (rly__buf_take(w, b) < 0) {
            rly__conn_close(w, c, "relay out of buffers");
            return;
        }
        if ((uint32_t)len > RLY_PLAIN_CAP - b->len) {
            atomic_fetch_add(&w->relay->counters.frames_rejected, 1);
            cr_warn("agent %s: more than %d bytes before DataAccepted: closing", c->addr,
                    RLY_PLAIN_CAP);
            b->len = 0;
            refuse(w, c, CAMRELAY__STATUS__ERR_BAD_REQUEST, "too much data before DataAccepted",
                   0);
            return;
        }
        memcpy(b->mem + b->len, data, (size_t)len);
        b->len += (uint32_t)len;
    }
    if (b->mem && !decode_frames(w, c))
        return;
    if (c->read_eof) {
        rly__conn_close(w, c, "closed by the agent");
        return;
    }
    rly__buf_give(w, b); /* nothing held while waiting for the rest */
    rly__post_recv(w, c);
}

/* The first byte of a connection on the external port: a TLS handshake record (0x16) or,
 * where allowed, the length prefix of a plaintext DataHello frame (0x00: frames are far
 * shorter than 16 MiB). Returns 0 to carry on, -1 when the connection was refused. */
static int sniff(struct rly_worker *w, struct rly_conn *c, uint8_t first)
{
    c->sniffed = 1;
    if (first == 0x16)
        return 0;
    if (first != 0x00) {
        atomic_fetch_add(&w->relay->counters.handshake_failures, 1);
        cr_info("agent %s: neither TLS nor a camrelay frame: closing", c->addr);
        rly__conn_close(w, c, "not TLS");
        return -1;
    }
    SSL_free(c->ssl);
    c->ssl = NULL;
    c->plain = 1;
    c->state = RLY_AGENT_HELLO;
    c->deadline_ms = cr_now_ms() + RLY_HELLO_TIMEOUT_MS;
    if (!w->relay->cfg.allow_plain_data) {
        atomic_fetch_add(&w->relay->counters.data_conns_refused, 1);
        cr_warn("agent %s: plaintext data connection refused: allow_plain_data is off",
                c->addr);
        refuse(w, c, CAMRELAY__STATUS__ERR_BAD_REQUEST,
               "plaintext data connections are not enabled on this relay", 0);
        return -1;
    }
    return 0;
}

/* Decrypts and handles control frames until the TLS layer needs more bytes. */
static void read_frames(struct rly_worker *w, struct rly_conn *c)
{
    struct rly_buf *b = &c->frame;
    if (rly__buf_take(w, b) < 0) {
        c->starved = 1; /* stop reading this peer until a buffer is free */
        return;
    }
    for (;;) {
        int n = SSL_read(c->ssl, b->mem + b->len, (int)(RLY_PLAIN_CAP - b->len));
        if (n <= 0) {
            int e = SSL_get_error(c->ssl, n);
            ERR_clear_error();
            if (e == SSL_ERROR_WANT_READ && !c->read_eof) {
                rly__buf_give(w, b); /* an idle tunnel keeps no frame buffer */
                rly__post_recv(w, c);
            } else {
                rly__conn_close(w, c, e == SSL_ERROR_WANT_READ || e == SSL_ERROR_ZERO_RETURN ||
                                              e == SSL_ERROR_SYSCALL
                                          ? "closed by the agent"
                                          : "TLS error");
            }
            return;
        }
        b->len += (uint32_t)n;
        if (!decode_frames(w, c))
            return;
    }
}

void rly__agent_on_recv(struct rly_worker *w, struct rly_conn *c, const uint8_t *data, int len)
{
    if (!c->sniffed && len > 0 && sniff(w, c, data[0]) < 0)
        return;
    if (c->plain) {
        if (!c->close_after_flush)
            read_plain_frames(w, c, data, len);
        return;
    }
    BIO *rbio = SSL_get_rbio(c->ssl);
    if (len > 0)
        BIO_write(rbio, data, len);
    if (c->read_eof)
        BIO_set_mem_eof_return(rbio, 0); /* the TLS layer now sees end of stream */
    if (c->close_after_flush)
        return;

    if (c->state == RLY_AGENT_HANDSHAKE) {
        int rc = SSL_do_handshake(c->ssl);
        if (rc != 1) {
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ && !c->read_eof) {
                rly__agent_flush(w, c);
                rly__post_recv(w, c);
                return;
            }
            char buf[160];
            atomic_fetch_add(&w->relay->counters.handshake_failures, 1);
            cr_info("agent %s: TLS handshake failed: %s", c->addr,
                    e == SSL_ERROR_WANT_READ ? "closed during handshake"
                                             : cr_tls_error_string(e, buf, sizeof(buf)));
            rly__agent_flush(w, c); /* the alert, if any */
            c->close_after_flush = 1;
            c->read_eof = 1;
            if (!c->send_busy && c->out.len == 0)
                rly__conn_close(w, c, "handshake failed");
            return;
        }
        c->state = RLY_AGENT_HELLO;
        c->deadline_ms = cr_now_ms() + RLY_HELLO_TIMEOUT_MS;
    }
    rly__agent_continue(w, c);
}

void rly__agent_continue(struct rly_worker *w, struct rly_conn *c)
{
    if (c->closing || c->close_after_flush || c->handover_to)
        return;
    if (c->state == RLY_AGENT_DATA)
        rly__stream_agent_readable(w, c);
    else if (c->plain)
        read_plain_frames(w, c, NULL, 0);
    else
        read_frames(w, c);
    if (!c->closing)
        rly__agent_flush(w, c);
}

void rly__agent_adopt(struct rly_worker *w, struct rly_handover *ho)
{
    int32_t idx = w->stopping ? -1 : rly__conn_alloc(w, RLY_CONN_AGENT, ho->fd);
    struct rly_conn *c = rly__conn(w, idx);
    if (!c || (ho->leftover_len && rly__buf_take(w, &c->frame) < 0)) {
        cr_warn("agent %s: no connection slot on the camera's worker", ho->addr);
        if (c) {
            c->ssl = ho->ssl;
            rly__conn_close(w, c, "no memory");
        } else {
            SSL_free(ho->ssl);
            close(ho->fd);
        }
        cr_frame_free(ho->hello);
        free(ho);
        return;
    }
    c->ssl = ho->ssl;
    c->plain = (uint8_t)ho->plain;
    c->sniffed = 1;
    memcpy(c->addr, ho->addr, sizeof(c->addr));
    if (ho->leftover_len)
        memcpy(c->frame.mem, ho->leftover, ho->leftover_len);
    c->frame.len = ho->leftover_len;
    c->state = RLY_AGENT_HELLO;
    c->deadline_ms = cr_now_ms() + RLY_HELLO_TIMEOUT_MS;
    Camrelay__Frame *hello = ho->hello;
    free(ho);
    if (!handle_frame(w, c, hello))
        cr_frame_free(hello);
    rly__agent_continue(w, c);
}

void rly__agent_on_sent(struct rly_worker *w, struct rly_conn *c)
{
    if (c->handover_to) {
        uint32_t owner = (uint32_t)c->handover_to - 1;
        Camrelay__Frame *hello = c->held_hello;
        c->held_hello = NULL;
        c->handover_to = 0;
        rly__handover(w, c, owner, hello);
        return;
    }
    rly__agent_flush(w, c);
    if (c->send_busy)
        return;
    rly__buf_give(w, &c->out); /* drained: an idle connection holds no send buffer */
    if (c->close_after_flush) {
        rly__conn_close(w, c, "refused");
        return;
    }
    if (c->state == RLY_AGENT_DATA)
        rly__stream_agent_drained(w, c);
}

void rly__agent_tick(struct rly_worker *w, struct rly_conn *c, uint64_t now)
{
    uint32_t keepalive = c->keepalive_ms;
    if (c->deadline_ms && now > c->deadline_ms) {
        cr_info("agent %s: timed out in state %s", c->addr, state_names[c->state]);
        rly__conn_close(w, c, "timeout");
        return;
    }
    if (c->state != RLY_AGENT_TUNNEL)
        return;
    if (now - c->last_rx_ms > 3ull * keepalive) {
        struct rly_camera *cam = rly__camera(w, c->camera);
        cr_warn("tunnel dead serial=%s site=%s: nothing heard for %llu ms", cam ? cam->serial : "?",
                c->addr, (unsigned long long)(now - c->last_rx_ms));
        rly__conn_close(w, c, "keepalive timeout");
        return;
    }
    if (now >= c->next_ping_ms) {
        Camrelay__Frame f = CAMRELAY__FRAME__INIT;
        Camrelay__Ping p = CAMRELAY__PING__INIT;
        p.seq = ++c->ping_seq;
        f.body_case = CAMRELAY__FRAME__BODY_PING;
        f.ping = &p;
        c->next_ping_ms = now + keepalive;
        if (rly__agent_send_frame(w, c, &f) < 0)
            rly__conn_close(w, c, "cannot send ping");
    }
}

void rly__agent_on_close(struct rly_worker *w, struct rly_conn *c)
{
    if (c->state != RLY_AGENT_TUNNEL)
        return;
    struct rly_camera *cam = rly__camera(w, c->camera);
    if (cam && cam->tunnel == rly__idx(w, c)) {
        cr_info("tunnel down serial=%s site=%s", cam->serial, c->addr);
        rly__camera_set_online(w, cam, -1, NULL);
    }
}
