/* Kernel TLS hand-off: derive a BoringSSL TLS 1.3 session's record keys and give them to the
 * kernel (TCP_ULP "tls"), with a run-time probe so callers fall back to userspace TLS. */
#ifndef RLY_KTLS_H
#define RLY_KTLS_H

#include <stdint.h>
#include <sys/socket.h>

#include <linux/tls.h>
#include <openssl/ssl.h>

/* One direction's kernel crypto state, laid out as setsockopt(SOL_TLS, TLS_TX/TLS_RX) wants it:
 * crypto.info.version is TLS_1_3_VERSION, crypto.info.cipher_type picks the union member, and
 * len is that member's size. All-zero (len 0) is the empty state. Holds a traffic key: whoever
 * fills one wipes it with rly_ktls_material_wipe() when done. */
struct rly_ktls_material {
    union {
        struct tls_crypto_info info;
        struct tls12_crypto_info_aes_gcm_128 aes_gcm_128;
        struct tls12_crypto_info_aes_gcm_256 aes_gcm_256;
        struct tls12_crypto_info_chacha20_poly1305 chacha20_poly1305;
    } crypto;
    socklen_t len;
};

/* Where a cipher's key, salt, IV and record sequence number sit in a material, and how long
 * each is: the one place that knows the kernel's per-cipher layout. The nonce base is
 * salt || iv (salt_len 0 for ChaCha20-Poly1305, whose iv is all 12 bytes). */
struct rly_ktls_fields {
    uint8_t *key, *salt, *iv, *seq;
    size_t key_len, salt_len, iv_len;
    socklen_t len; /* the material's len for this cipher */
};

/* Fills f with pointers into m for cipher (a TLS_CIPHER_* value); they are writable only when
 * m is. Returns 0, or -EOPNOTSUPP for a cipher without a layout here. */
int rly_ktls_fields(const struct rly_ktls_material *m, unsigned cipher,
                    struct rly_ktls_fields *f);

/* Installs on ctx the keylog callback that keeps each SSL's CLIENT_TRAFFIC_SECRET_0 and
 * SERVER_TRAFFIC_SECRET_0 (in SSL ex_data, one small allocation per handshake) so that
 * rly_ktls_derive() can compute the record keys; BoringSSL exports no traffic keys. Nothing
 * is logged. Secrets stay in memory until rly_ktls_derive() or rly_ktls_forget() consumes them
 * or the SSL is freed (the ex_data free callback wipes them), so install this only on contexts
 * whose connections will attempt the hand-off (e.g. when rly_ktls_available()).
 * Returns 0 (also when already installed), -EEXIST if ctx has another keylog callback (a
 * debugging SSLKEYLOGFILE hook, say; it is left in place), -ENOMEM if no ex_data index could be
 * allocated. Borrows ctx. Call at start-up, before ctx is shared between threads. */
int rly_ktls_keylog_install(SSL_CTX *ctx);

/* Derives the kernel crypto state of a finished TLS 1.3 session: tx from this side's traffic
 * secret, rx from the peer's, key = HKDF-Expand-Label(secret, "key", keylen), iv =
 * HKDF-Expand-Label(secret, "iv", 12) with the cipher's PRF hash, rec_seq from
 * SSL_get_write_sequence / SSL_get_read_sequence. Supports TLS_AES_128_GCM_SHA256,
 * TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256. is_server must match ssl's role.
 *
 * The hand-off is only correct at a record boundary with nothing held in userspace:
 * - no decrypted or undecrypted bytes buffered in ssl (SSL_has_pending) and no unread
 *   ciphertext in its read BIO (memory BIOs; a socket BIO leaves it in the socket, which is
 *   where the kernel will read it);
 * - no deferred post-handshake flight: a TLS 1.3 server that issues session tickets seals and
 *   sends them lazily with its first SSL_write, so for a server without SSL_OP_NO_TICKET this
 *   fails until at least one record has been written (camrelay's server contexts set
 *   SSL_OP_NO_TICKET, so it never applies there);
 * - every SSL_write has completed (none is waiting on SSL_ERROR_WANT_WRITE) and the caller has
 *   moved what the write BIO holds onto the socket; no KeyUpdate has happened (the secrets
 *   are the _0 generation).
 *
 * Returns 0 and fills tx and rx (returned owned: wipe them), consuming the secrets (wiped and
 * freed: a second call returns -ENOKEY); -EBUSY if a condition above does not hold (secrets
 * kept: retry later, or rly_ktls_forget()); -EINVAL if the session is not a finished TLS 1.3
 * one or is_server is wrong; -ENOKEY if no secrets were captured (keylog not installed,
 * allocation failed, or already consumed); -EOPNOTSUPP for another cipher; -EIO if HKDF
 * failed. On failure tx and rx are left empty. Call from the thread that drives ssl. */
int rly_ktls_derive(SSL *ssl, int is_server, struct rly_ktls_material *tx,
                    struct rly_ktls_material *rx);

/* rly_ktls_derive() that leaves the secrets in place, for tests and diagnostics that derive
 * twice; the secrets still go with rly_ktls_derive(), rly_ktls_forget() or SSL_free. */
int rly_ktls_derive_keep(SSL *ssl, int is_server, struct rly_ktls_material *tx,
                         struct rly_ktls_material *rx);

/* Wipes and frees ssl's captured secrets, if any: for connections that stay in userspace TLS
 * (kTLS unavailable, or a hand-off that will not happen). Call from the thread driving ssl. */
void rly_ktls_forget(SSL *ssl);

/* 1 while ssl holds captured, unconsumed traffic secrets, else 0. Tells nothing about them. */
int rly_ktls_secrets_held(const SSL *ssl);

/* Moves fd's record layer into the kernel: setsockopt TCP_ULP "tls", then SOL_TLS TLS_TX with
 * tx and TLS_RX with rx (one of them may be NULL to offload one direction only). fd must be an
 * established TCP socket whose TLS stream is at the point where tx/rx were derived.
 * Returns 0; -ENOENT or -ENOPROTOOPT when the kernel has no TLS ULP (nothing changed on fd:
 * carry on in userspace TLS); -EINVAL for malformed material (fd untouched); another -errno
 * if a later step failed, after which the socket's record state is unknown: close it.
 * Borrows tx and rx (wipes nothing: the caller wipes its material). Any thread. */
int rly_ktls_enable(int fd, const struct rly_ktls_material *tx,
                    const struct rly_ktls_material *rx);

/* 1 if the kernel accepts TCP_ULP "tls", else 0. Probes once with a throw-away TCP
 * connection on 127.0.0.1 and caches the result. Thread-safe; the first call opens and closes
 * three sockets, so make it at start-up rather than on the data path. */
int rly_ktls_available(void);

/* Why rly_ktls_available() is 0, as a static string for a start-up log line; NULL if kTLS is
 * available. Probes like rly_ktls_available() if that has not run yet. Thread-safe. */
const char *rly_ktls_unavailable_reason(void);

/* Zeroes m (key, iv, salt, sequence) so that no key material stays behind. */
void rly_ktls_material_wipe(struct rly_ktls_material *m);

#endif
