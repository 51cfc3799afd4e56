/* Userspace TLS 1.3 record layer: application data and close_notify under derived keys. */
#include "relay/tls_record.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/mem.h>

#define CT_ALERT 21
#define CT_HANDSHAKE 22
#define CT_APPLICATION_DATA 23
#define LEGACY_VERSION_MAJOR 3
#define LEGACY_VERSION_MINOR 3
#define MAX_PLAINTEXT 16384
/* Record body (ciphertext + tag) bounds: the content type alone sealed, and RFC 8446 5.2's
 * 2^14 + 256. */
#define MIN_BODY (1 + RLY_REC_TAG)
#define MAX_BODY (RLY_REC_MAX_WIRE - RLY_REC_HEADER)
#define ALERT_WARNING 1
#define ALERT_CLOSE_NOTIFY 0

/* ready: 0 = unset, failed or closed (every call refused); 1 = usable. */
enum { DIR_OFF = 0, DIR_READY = 1 };

_Static_assert(RLY_REC_MAX_WIRE <= INT_MAX, "a record's size fits the int return values");

static uint64_t get_be64(const unsigned char b[8])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return v;
}

/* Material in the kernel's layout -> AEAD, key, 12-byte static IV, next sequence number. */
static int dir_init(struct rly_rec_dir *d, const struct rly_ktls_material *m)
{
    const EVP_AEAD *aead;
    const uint8_t *key;
    size_t key_len;

    struct rly_ktls_fields f;

    if (m->crypto.info.version != TLS_1_3_VERSION)
        return -EINVAL;
    switch (m->crypto.info.cipher_type) {
    case TLS_CIPHER_AES_GCM_128:
        aead = EVP_aead_aes_128_gcm();
        break;
    case TLS_CIPHER_AES_GCM_256:
        aead = EVP_aead_aes_256_gcm();
        break;
    case TLS_CIPHER_CHACHA20_POLY1305:
        aead = EVP_aead_chacha20_poly1305();
        break;
    default:
        return -EOPNOTSUPP;
    }
    if (rly_ktls_fields(m, m->crypto.info.cipher_type, &f) < 0)
        return -EOPNOTSUPP;
    if (m->len != f.len || f.salt_len + f.iv_len != sizeof(d->iv))
        return -EINVAL;
    if (f.salt_len)
        memcpy(d->iv, f.salt, f.salt_len);
    memcpy(d->iv + f.salt_len, f.iv, f.iv_len);
    d->seq = get_be64(f.seq);
    key = f.key;
    key_len = f.key_len;
    /* The plain AEADs, not the _tls13 ones: those assume the first record they seal has
     * sequence number 0, and a hand-off starts mid-stream. The context state is inline
     * in EVP_AEAD_CTX, so this allocates nothing. */
    if (EVP_AEAD_CTX_init(&d->aead, aead, key, key_len, RLY_REC_TAG, NULL) != 1) {
        ERR_clear_error();
        return -EINVAL;
    }
    d->ready = DIR_READY;
    return 0;
}

int rly_rec_init(struct rly_rec *r, const struct rly_ktls_material *tx,
                 const struct rly_ktls_material *rx)
{
    int rc = 0;

    memset(r, 0, sizeof(*r));
    if (tx)
        rc = dir_init(&r->tx, tx);
    if (rc == 0 && rx)
        rc = dir_init(&r->rx, rx);
    if (rc < 0)
        rly_rec_free(r);
    return rc;
}

void rly_rec_free(struct rly_rec *r)
{
    /* Cleanup is a no-op on a zeroed context; the key schedule lives inside the struct, so
     * the cleanse below is what removes it. */
    EVP_AEAD_CTX_cleanup(&r->rx.aead);
    EVP_AEAD_CTX_cleanup(&r->tx.aead);
    OPENSSL_cleanse(r, sizeof(*r));
}

/* RFC 8446 5.3: the static IV XOR the 64-bit sequence number, right-aligned. */
static void make_nonce(const struct rly_rec_dir *d, uint8_t nonce[12])
{
    uint64_t s = d->seq;
    memcpy(nonce, d->iv, 12);
    for (int i = 11; i >= 4; i--, s >>= 8)
        nonce[i] ^= (uint8_t)s;
}

int rly_rec_need(const uint8_t *buf, size_t len)
{
    size_t body;

    if (len < RLY_REC_HEADER)
        return 0;
    if (buf[0] != CT_APPLICATION_DATA || buf[1] != LEGACY_VERSION_MAJOR ||
        buf[2] != LEGACY_VERSION_MINOR)
        return -EPROTO;
    body = (size_t)buf[3] << 8 | buf[4];
    if (body > MAX_BODY)
        return -EMSGSIZE;
    return (int)(RLY_REC_HEADER + body);
}

int rly_rec_open(struct rly_rec *r, uint8_t *buf, size_t len, struct rly_rec_span *spans,
                 unsigned max_spans, unsigned *n_spans, int *eof)
{
    struct rly_rec_dir *d = &r->rx;
    uint8_t nonce[12];
    size_t off = 0;
    unsigned n = 0;
    int rc;

    *n_spans = 0;
    *eof = 0;
    if (d->ready != DIR_READY)
        return -EINVAL;
    /* The count of bytes consumed is returned as an int (and spans hold 32-bit offsets): a
     * larger buffer is opened up to that limit and the rest waits for the next call. */
    if (len > INT_MAX)
        len = INT_MAX;

    while (n < max_spans) {
        uint8_t *hdr = buf + off, *body;
        size_t body_len, pt_len;
        int need = rly_rec_need(hdr, len - off);

        if (need < 0) {
            rc = need;
            goto out_fail;
        }
        if (need == 0 || (size_t)need > len - off)
            break; /* partial record: wait for the rest */
        body = hdr + RLY_REC_HEADER;
        body_len = (size_t)need - RLY_REC_HEADER;
        if (body_len < MIN_BODY) {
            rc = -EPROTO;
            goto out_fail;
        }
        if (d->seq == UINT64_MAX) {
            rc = -EPROTO; /* a nonce would repeat: the peer should have rekeyed long ago */
            goto out_fail;
        }
        make_nonce(d, nonce);
        /* In place: BoringSSL allows out == in when they are exactly equal. */
        if (EVP_AEAD_CTX_open(&d->aead, body, &pt_len, body_len, nonce, sizeof(nonce), body,
                              body_len, hdr, RLY_REC_HEADER) != 1) {
            ERR_clear_error(); /* the worker's SSL_get_error calls must not see it */
            rc = -EBADMSG;
            goto out_fail;
        }
        d->seq++;
        off += (size_t)need;

        /* TLSInnerPlaintext: content || type (non-zero) || zero padding. */
        while (pt_len > 0 && body[pt_len - 1] == 0)
            pt_len--;
        if (pt_len == 0) {
            rc = -EPROTO;
            goto out_fail;
        }
        pt_len--;
        switch (body[pt_len]) {
        case CT_APPLICATION_DATA:
            if (pt_len > 0) {
                spans[n].off = (uint32_t)(body - buf);
                spans[n].len = (uint32_t)pt_len;
                n++;
            }
            break;
        case CT_ALERT:
            /* Every alert but close_notify is fatal in TLS 1.3 (RFC 8446 6); the level is
             * not looked at, as the RFC says. */
            if (pt_len != 2 || body[1] != ALERT_CLOSE_NOTIFY) {
                rc = -EPROTO;
                goto out_fail;
            }
            d->ready = DIR_OFF; /* nothing may follow a close_notify */
            *eof = 1;
            *n_spans = n;
            return (int)len;
        case CT_HANDSHAKE:
            rc = -ENOTSUP;
            goto out_fail;
        default:
            rc = -EPROTO;
            goto out_fail;
        }
    }
    *n_spans = n;
    return (int)off;

out_fail:
    d->ready = DIR_OFF;
    return rc;
}

/* Seals in[0, len) with inner content type ct as one record: header at out, body behind it.
 * The content type goes in through seal_scatter's extra_in and comes out encrypted at
 * out[RLY_REC_HEADER + len], ahead of the tag: in is never written to, and sealing in place
 * (in == out + RLY_REC_HEADER) needs no copy. */
static int seal_record(struct rly_rec_dir *d, uint8_t *out, const uint8_t *in, size_t len,
                       uint8_t ct)
{
    uint8_t nonce[12];
    size_t tag_len = 0, body_len = len + 1 + RLY_REC_TAG;

    if (d->ready != DIR_READY)
        return -EINVAL;
    if (len > MAX_PLAINTEXT)
        return -EMSGSIZE;
    if (d->seq == UINT64_MAX) {
        d->ready = DIR_OFF;
        return -EIO;
    }
    out[0] = CT_APPLICATION_DATA;
    out[1] = LEGACY_VERSION_MAJOR;
    out[2] = LEGACY_VERSION_MINOR;
    out[3] = (uint8_t)(body_len >> 8);
    out[4] = (uint8_t)body_len;
    make_nonce(d, nonce);
    if (EVP_AEAD_CTX_seal_scatter(&d->aead, out + RLY_REC_HEADER, out + RLY_REC_HEADER + len,
                                  &tag_len, 1 + RLY_REC_TAG, nonce, sizeof(nonce), in, len, &ct,
                                  1, out, RLY_REC_HEADER) != 1 ||
        tag_len != 1 + RLY_REC_TAG) {
        ERR_clear_error();
        d->ready = DIR_OFF;
        return -EIO;
    }
    d->seq++;
    return (int)(RLY_REC_HEADER + body_len);
}

int rly_rec_seal(struct rly_rec *r, uint8_t *out, const uint8_t *in, size_t len)
{
    return seal_record(&r->tx, out, in, len, CT_APPLICATION_DATA);
}

int rly_rec_seal_close_notify(struct rly_rec *r, uint8_t *out)
{
    static const uint8_t alert[2] = {ALERT_WARNING, ALERT_CLOSE_NOTIFY};
    int rc = seal_record(&r->tx, out, alert, sizeof(alert), CT_ALERT);
    if (rc > 0)
        r->tx.ready = DIR_OFF; /* nothing may follow a close_notify */
    return rc;
}
