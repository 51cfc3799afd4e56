/* Challenge-response proofs (SCRAM-SHA-256 style, bound to the TLS session) and tickets.
 *
 * Registration turns a secret into a verifier: salt (16 random bytes), iterations, and
 * StoredKey = SHA-256(ClientKey), where ClientKey = HMAC(PBKDF2(secret, salt, iterations),
 * "Client Key"). Only the verifier is stored. To log in, the client proves it knows ClientKey:
 * proof = ClientKey XOR HMAC(StoredKey, transcript), where the transcript covers the identity,
 * both nonces, salt, iterations and a TLS exporter value of this very session, so a proof
 * recorded on one connection is worthless on any other. The server recomputes
 * HMAC(StoredKey, transcript), XORs it out and checks SHA-256(result) == StoredKey.
 *
 * A camera's secret is its OAK, user name and password (all three must match); a relay's
 * secret is its dispatcher account password. */
#ifndef CR_AUTH_H
#define CR_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#define CR_AUTH_SALT_LEN 16
#define CR_AUTH_KEY_LEN 32
#define CR_AUTH_NONCE_LEN 32
#define CR_AUTH_NONCE_MIN 16
#define CR_AUTH_NONCE_MAX 64
#define CR_AUTH_ITERATIONS_DEFAULT 4096
#define CR_AUTH_ITERATIONS_MIN 1000
#define CR_AUTH_ITERATIONS_MAX 1000000
#define CR_AUTH_BINDING_LEN 32

struct cr_auth_secret {
    const char *oak;      /* cameras; NULL for relay accounts */
    const char *user;     /* cameras; NULL for relay accounts */
    const char *password;
};

struct cr_auth_transcript {
    const char *identity;
    const uint8_t *client_nonce;
    size_t client_nonce_len;
    const uint8_t *server_nonce;
    size_t server_nonce_len;
    const uint8_t *salt; /* CR_AUTH_SALT_LEN */
    uint32_t iterations;
    uint8_t binding[CR_AUTH_BINDING_LEN];
};

/* Derives ClientKey from the secret (the slow PBKDF2 step, done once per client). Returns 0
 * or -EINVAL (iterations out of range, NULL password). Callers wipe client_key after use. */
int cr_auth_client_key(const struct cr_auth_secret *secret, const uint8_t salt[CR_AUTH_SALT_LEN],
                       uint32_t iterations, uint8_t client_key[CR_AUTH_KEY_LEN]);

/* StoredKey = SHA-256(ClientKey). */
void cr_auth_stored_key(const uint8_t client_key[CR_AUTH_KEY_LEN],
                        uint8_t stored_key[CR_AUTH_KEY_LEN]);

/* Makes a fresh verifier: random salt, the given iterations, StoredKey. Returns 0 or -EINVAL. */
int cr_auth_make_verifier(const struct cr_auth_secret *secret, uint32_t iterations,
                          uint8_t salt[CR_AUTH_SALT_LEN], uint8_t stored_key[CR_AUTH_KEY_LEN]);

/* Client side: proof = ClientKey XOR HMAC(SHA-256(ClientKey), transcript). */
void cr_auth_client_proof(const uint8_t client_key[CR_AUTH_KEY_LEN],
                          const struct cr_auth_transcript *t, uint8_t proof[CR_AUTH_KEY_LEN]);

/* Server side: 1 when proof matches stored_key for this transcript, else 0. Constant time. */
int cr_auth_verify(const uint8_t stored_key[CR_AUTH_KEY_LEN], const struct cr_auth_transcript *t,
                   const uint8_t *proof, size_t proof_len);

/* The session binding: a TLS 1.3 exporter value both ends compute the same only on this
 * connection. Returns 0 or -EPROTO. */
int cr_auth_tls_binding(SSL *ssl, uint8_t out[CR_AUTH_BINDING_LEN]);

/* Tickets: the dispatcher's short-lived statement "serial S was sent to relay R until T",
 * MACed with the relay's ticket key. Encoded as 8-byte big-endian expiry + 32-byte MAC. */
#define CR_TICKET_LEN 40
void cr_ticket_make(const uint8_t key[32], const char *serial, const char *relay,
                    uint64_t expires_unix, uint8_t out[CR_TICKET_LEN]);
/* Returns 0 if valid and unexpired at now_unix, -EKEYREJECTED if forged or for another
 * serial/relay, -EKEYEXPIRED if expired, -EINVAL if malformed. */
int cr_ticket_check(const uint8_t key[32], const char *serial, const char *relay,
                    const uint8_t *ticket, size_t len, uint64_t now_unix);

#endif
