/* Kernel TLS hand-off: BoringSSL TLS 1.3 traffic secrets -> kernel crypto_info, with a probe. */
#include "relay/ktls.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/digest.h>
#include <openssl/hkdf.h>
#include <openssl/mem.h>

/* SHA-384 is the longest PRF hash of a TLS 1.3 suite. */
#define SECRET_MAX 48
#define IV12 12

_Static_assert(TLS_CIPHER_AES_GCM_128_SALT_SIZE + TLS_CIPHER_AES_GCM_128_IV_SIZE == IV12,
               "kTLS AES-128-GCM nonce = salt || iv");
_Static_assert(TLS_CIPHER_AES_GCM_256_SALT_SIZE + TLS_CIPHER_AES_GCM_256_IV_SIZE == IV12,
               "kTLS AES-256-GCM nonce = salt || iv");
_Static_assert(TLS_CIPHER_CHACHA20_POLY1305_SALT_SIZE == 0 &&
                   TLS_CIPHER_CHACHA20_POLY1305_IV_SIZE == IV12,
               "kTLS ChaCha20-Poly1305 nonce = iv");

/* One SSL's application traffic secrets as the keylog callback saw them (ex_data). Owned by
 * the SSL: wiped and freed by rly_ktls_derive(), rly_ktls_forget() or SSL_free. */
struct secrets {
    uint8_t client[SECRET_MAX];
    uint8_t server[SECRET_MAX];
    uint8_t client_len;
    uint8_t server_len;
};

/* The TLS 1.3 suites the kernel can take over, by IANA number. */
static const struct suite {
    uint16_t id;
    uint16_t kernel_cipher; /* TLS_CIPHER_* */
    uint8_t key_len;
} suites[] = {
    {0x1301, TLS_CIPHER_AES_GCM_128, TLS_CIPHER_AES_GCM_128_KEY_SIZE},
    {0x1302, TLS_CIPHER_AES_GCM_256, TLS_CIPHER_AES_GCM_256_KEY_SIZE},
    {0x1303, TLS_CIPHER_CHACHA20_POLY1305, TLS_CIPHER_CHACHA20_POLY1305_KEY_SIZE},
};

static const char client_label[] = "CLIENT_TRAFFIC_SECRET_0 ";
static const char server_label[] = "SERVER_TRAFFIC_SECRET_0 ";

static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static _Atomic int ex_index = -1;

/* 0: not probed yet; 1: the kernel accepts TCP_ULP "tls"; <0: -errno of the refusal. */
static _Atomic int probe_state;

static void secrets_wipe_free(struct secrets *s)
{
    OPENSSL_cleanse(s, sizeof(*s));
    free(s);
}

/* ex_data free callback: runs inside SSL_free. */
static void secrets_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int index, long argl,
                            void *argp)
{
    if (ptr)
        secrets_wipe_free(ptr);
}

static void ex_index_init(void)
{
    atomic_store(&ex_index, SSL_get_ex_new_index(0, NULL, NULL, NULL, secrets_ex_free));
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "LABEL <64 hex client_random> <hex secret>": keeps the two application traffic secrets,
 * ignores every other line (handshake secrets, exporter secret). Logs nothing. */
static void keylog_cb(const SSL *ssl, const char *line)
{
    size_t n, i;
    uint8_t *dst, *dst_len;
    int idx = atomic_load(&ex_index), is_client;
    const char *p;

    if (idx < 0)
        return;
    if (strncmp(line, client_label, sizeof(client_label) - 1) == 0) {
        is_client = 1;
        p = line + sizeof(client_label) - 1;
    } else if (strncmp(line, server_label, sizeof(server_label) - 1) == 0) {
        is_client = 0;
        p = line + sizeof(server_label) - 1;
    } else {
        return;
    }
    for (i = 0; i < 64; i++)
        if (hexval(p[i]) < 0)
            return;
    if (p[64] != ' ')
        return;
    n = strlen(p + 65);
    if (n == 0 || n % 2 != 0 || n / 2 > SECRET_MAX)
        return;

    struct secrets *s = SSL_get_ex_data(ssl, idx);
    if (!s) {
        /* One allocation per handshake, not per record; on failure derive says -ENOKEY and the
         * connection stays in userspace TLS. ex_data is per-object state that BoringSSL hands
         * us as const only by convention, hence the cast. */
        s = calloc(1, sizeof(*s));
        if (!s)
            return;
        if (!SSL_set_ex_data((SSL *)ssl, idx, s)) {
            free(s);
            return;
        }
    }
    if (is_client) {
        dst = s->client;
        dst_len = &s->client_len;
    } else {
        dst = s->server;
        dst_len = &s->server_len;
    }
    *dst_len = 0;
    p += 65;
    for (i = 0; i < n / 2; i++) {
        int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            OPENSSL_cleanse(dst, SECRET_MAX);
            return;
        }
        dst[i] = (uint8_t)(hi << 4 | lo);
    }
    *dst_len = (uint8_t)(n / 2);
}

int rly_ktls_keylog_install(SSL_CTX *ctx)
{
    void (*cur)(const SSL *, const char *);

    pthread_once(&ex_once, ex_index_init);
    if (atomic_load(&ex_index) < 0)
        return -ENOMEM;
    cur = SSL_CTX_get_keylog_callback(ctx);
    if (cur == keylog_cb)
        return 0;
    if (cur)
        return -EEXIST;
    SSL_CTX_set_keylog_callback(ctx, keylog_cb);
    return 0;
}

static struct secrets *secrets_of(const SSL *ssl)
{
    int idx = atomic_load(&ex_index);
    return idx < 0 ? NULL : SSL_get_ex_data(ssl, idx);
}

void rly_ktls_forget(SSL *ssl)
{
    struct secrets *s = secrets_of(ssl);
    if (!s)
        return;
    SSL_set_ex_data(ssl, atomic_load(&ex_index), NULL);
    secrets_wipe_free(s);
}

int rly_ktls_secrets_held(const SSL *ssl)
{
    return secrets_of(ssl) != NULL;
}

void rly_ktls_material_wipe(struct rly_ktls_material *m)
{
    OPENSSL_cleanse(m, sizeof(*m));
}

/* RFC 8446 7.1: HKDF-Expand(secret, HkdfLabel{length, "tls13 " + label, context = ""}). */
static int expand_label(const EVP_MD *md, const uint8_t *secret, size_t secret_len,
                        const char *label, uint8_t *out, size_t out_len)
{
    uint8_t info[2 + 1 + 6 + 16 + 1];
    size_t label_len = strlen(label), n = 0;

    if (label_len > 16 || out_len > 0xffff)
        return -EINVAL;
    info[n++] = (uint8_t)(out_len >> 8);
    info[n++] = (uint8_t)out_len;
    info[n++] = (uint8_t)(6 + label_len);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, label_len);
    n += label_len;
    info[n++] = 0;
    return HKDF_expand(out, out_len, md, secret, secret_len, info, n) == 1 ? 0 : -EIO;
}

static void put_be64(unsigned char out[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        out[i] = (unsigned char)(v >> (56 - 8 * i));
}

/* One direction: secret + sequence number -> kernel layout in m. */
static int fill(const struct suite *su, const EVP_MD *md, const uint8_t *secret,
                size_t secret_len, uint64_t seq, struct rly_ktls_material *m)
{
    uint8_t key[32], iv[IV12];
    int rc = expand_label(md, secret, secret_len, "key", key, su->key_len);
    if (rc == 0)
        rc = expand_label(md, secret, secret_len, "iv", iv, sizeof(iv));
    if (rc < 0)
        goto out_wipe;

    m->crypto.info.version = TLS_1_3_VERSION;
    m->crypto.info.cipher_type = su->kernel_cipher;
    /* The kernel builds the nonce as salt || iv and XORs the sequence number into it. */
    struct rly_ktls_fields f;
    rc = rly_ktls_fields(m, su->kernel_cipher, &f);
    if (rc == 0) {
        if (f.salt_len)
            memcpy(f.salt, iv, f.salt_len);
        memcpy(f.iv, iv + f.salt_len, f.iv_len);
        memcpy(f.key, key, f.key_len);
        put_be64(f.seq, seq);
        m->len = f.len;
    }
out_wipe:
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(iv, sizeof(iv));
    return rc;
}

/* Deferred NewSessionTicket flight: BoringSSL seals and sends it with the first record a TLS
 * 1.3 server writes, and nothing public tells whether it is still queued, so a ticket-issuing
 * server is only known to be clear once its write sequence has moved. */
static int tickets_may_be_pending(const SSL *ssl, int is_server)
{
    return is_server && !(SSL_get_options(ssl) & SSL_OP_NO_TICKET) &&
           SSL_get_write_sequence(ssl) == 0;
}

static int derive(SSL *ssl, int is_server, struct rly_ktls_material *tx,
                  struct rly_ktls_material *rx, int keep)
{
    const struct suite *su = NULL;
    const SSL_CIPHER *cipher;
    const EVP_MD *md;
    struct secrets *s;
    BIO *rbio;
    size_t i, md_len;
    int rc;

    if (tx)
        memset(tx, 0, sizeof(*tx));
    if (rx)
        memset(rx, 0, sizeof(*rx));
    if (!ssl || !tx || !rx)
        return -EINVAL;
    if (SSL_version(ssl) != TLS1_3_VERSION || SSL_in_init(ssl) ||
        !SSL_is_server(ssl) != !is_server)
        return -EINVAL;
    cipher = SSL_get_current_cipher(ssl);
    if (!cipher)
        return -EINVAL;
    for (i = 0; i < sizeof(suites) / sizeof(suites[0]); i++)
        if (suites[i].id == SSL_CIPHER_get_protocol_id(cipher))
            su = &suites[i];
    md = EVP_get_digestbynid(SSL_CIPHER_get_prf_nid(cipher));
    if (!su || !md)
        return -EOPNOTSUPP;
    md_len = EVP_MD_size(md);
    s = secrets_of(ssl);
    if (!s || s->client_len != md_len || s->server_len != md_len)
        return -ENOKEY;

    rbio = SSL_get_rbio(ssl);
    if (SSL_has_pending(ssl) || (rbio && BIO_ctrl_pending(rbio) > 0) ||
        tickets_may_be_pending(ssl, is_server))
        return -EBUSY;

    rc = fill(su, md, is_server ? s->server : s->client, md_len, SSL_get_write_sequence(ssl),
              tx);
    if (rc < 0)
        goto out_wipe_material;
    rc = fill(su, md, is_server ? s->client : s->server, md_len, SSL_get_read_sequence(ssl),
              rx);
    if (rc < 0)
        goto out_wipe_material;
    if (!keep)
        rly_ktls_forget(ssl);
    return 0;

out_wipe_material:
    rly_ktls_material_wipe(tx);
    rly_ktls_material_wipe(rx);
    return rc;
}

int rly_ktls_derive(SSL *ssl, int is_server, struct rly_ktls_material *tx,
                    struct rly_ktls_material *rx)
{
    return derive(ssl, is_server, tx, rx, 0);
}

int rly_ktls_derive_keep(SSL *ssl, int is_server, struct rly_ktls_material *tx,
                         struct rly_ktls_material *rx)
{
    return derive(ssl, is_server, tx, rx, 1);
}

int rly_ktls_fields(const struct rly_ktls_material *cm, unsigned cipher,
                    struct rly_ktls_fields *f)
{
    struct rly_ktls_material *m = (struct rly_ktls_material *)cm; /* see the header */
    switch (cipher) {
    case TLS_CIPHER_AES_GCM_128: {
        struct tls12_crypto_info_aes_gcm_128 *c = &m->crypto.aes_gcm_128;
        *f = (struct rly_ktls_fields){c->key, c->salt, c->iv, c->rec_seq, sizeof(c->key),
                                      sizeof(c->salt), sizeof(c->iv), sizeof(*c)};
        return 0;
    }
    case TLS_CIPHER_AES_GCM_256: {
        struct tls12_crypto_info_aes_gcm_256 *c = &m->crypto.aes_gcm_256;
        *f = (struct rly_ktls_fields){c->key, c->salt, c->iv, c->rec_seq, sizeof(c->key),
                                      sizeof(c->salt), sizeof(c->iv), sizeof(*c)};
        return 0;
    }
    case TLS_CIPHER_CHACHA20_POLY1305: {
        struct tls12_crypto_info_chacha20_poly1305 *c = &m->crypto.chacha20_poly1305;
        *f = (struct rly_ktls_fields){c->key, NULL, c->iv, c->rec_seq, sizeof(c->key), 0,
                                      sizeof(c->iv), sizeof(*c)};
        return 0;
    }
    default:
        return -EOPNOTSUPP;
    }
}

static int material_ok(const struct rly_ktls_material *m)
{
    struct rly_ktls_fields f;
    return m->crypto.info.version == TLS_1_3_VERSION &&
           rly_ktls_fields(m, m->crypto.info.cipher_type, &f) == 0 && m->len == f.len;
}

int rly_ktls_enable(int fd, const struct rly_ktls_material *tx,
                    const struct rly_ktls_material *rx)
{
    if ((!tx && !rx) || (tx && !material_ok(tx)) || (rx && !material_ok(rx)))
        return -EINVAL;
    if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0)
        return -errno;
    if (tx && setsockopt(fd, SOL_TLS, TLS_TX, &tx->crypto, tx->len) < 0)
        return -errno;
    if (rx && setsockopt(fd, SOL_TLS, TLS_RX, &rx->crypto, rx->len) < 0)
        return -errno;
    return 0;
}

/* Without a loopback connection (no lo in this namespace, say): the ULP lookup comes before
 * the socket-state check, so an unconnected socket still tells "no such ULP" (ENOENT) from
 * "ULP present, socket not established" (ENOTCONN). */
static int probe_unconnected(void)
{
    int rc, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    rc = setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 ? 0 : -errno;
    close(fd);
    return rc == 0 || rc == -ENOTCONN ? 1 : rc;
}

/* Returns 1 if TCP_ULP "tls" is accepted, else -errno. */
static int probe(void)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t addr_len = sizeof(addr);
    int rc, lfd, cfd, afd;

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -errno;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &addr_len) < 0) {
        rc = probe_unconnected();
        goto out_close_listener;
    }
    cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (cfd < 0) {
        rc = -errno;
        goto out_close_listener;
    }
    if (connect(cfd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        rc = probe_unconnected();
        goto out_close_client;
    }
    /* Loopback connect completes through the backlog; accept so that closing sends no RST. */
    afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    rc = setsockopt(cfd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 ? 1 : -errno;
    if (afd >= 0)
        close(afd);
out_close_client:
    close(cfd);
out_close_listener:
    close(lfd);
    return rc;
}

/* Cached probe result. A probe that could not even make a socket (EMFILE, ENOBUFS) says
 * nothing about the kernel, so it is not cached and the next call probes again. */
static int probe_cached(void)
{
    int st = atomic_load(&probe_state);
    if (st != 0)
        return st;
    st = probe();
    if (st == 1 || st == -ENOENT || st == -ENOPROTOOPT || st == -EPERM || st == -EACCES ||
        st == -EOPNOTSUPP)
        atomic_store(&probe_state, st);
    return st;
}

int rly_ktls_available(void)
{
    return probe_cached() == 1;
}

const char *rly_ktls_unavailable_reason(void)
{
    switch (probe_cached()) {
    case 1:
        return NULL;
    case -ENOENT:
        return "kernel has no TLS ULP (CONFIG_TLS unset or tls module not loaded): "
               "TCP_ULP \"tls\" fails with ENOENT";
    case -ENOPROTOOPT:
        return "kernel does not support TCP_ULP (ENOPROTOOPT)";
    case -EPERM:
    case -EACCES:
        return "TCP_ULP \"tls\" not permitted here (seccomp or LSM policy)";
    default:
        return "kTLS probe failed: no loopback TCP socket could be set up, or TCP_ULP \"tls\" "
               "was refused";
    }
}
