/* Challenge-response proofs (SCRAM-SHA-256 style, bound to the TLS session) and tickets. */
#include "common/auth.h"

#include <errno.h>
#include <string.h>

#include <openssl/digest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "common/util.h"

static const char binding_label[] = "EXPORTER-camrelay-auth";

int cr_auth_client_key(const struct cr_auth_secret *secret, const uint8_t salt[CR_AUTH_SALT_LEN],
                       uint32_t iterations, uint8_t client_key[CR_AUTH_KEY_LEN])
{
    uint8_t salted[CR_AUTH_KEY_LEN];
    unsigned int mac_len = 0;

    if (!secret || !secret->password || iterations < CR_AUTH_ITERATIONS_MIN ||
        iterations > CR_AUTH_ITERATIONS_MAX)
        return -EINVAL;

    /* The secret's parts are joined with NUL separators so ("ab","c") != ("a","bc"). */
    size_t lo = secret->oak ? strlen(secret->oak) : 0;
    size_t lu = secret->user ? strlen(secret->user) : 0;
    size_t lp = strlen(secret->password);
    if (lo > 1024 || lu > 1024 || lp > 1024)
        return -EINVAL;
    char joined[3 * 1024 + 3];
    size_t n = 0;
    memcpy(joined + n, secret->oak ? secret->oak : "", lo);
    n += lo;
    joined[n++] = '\0';
    memcpy(joined + n, secret->user ? secret->user : "", lu);
    n += lu;
    joined[n++] = '\0';
    memcpy(joined + n, secret->password, lp);
    n += lp;

    int ok = PKCS5_PBKDF2_HMAC(joined, n, salt, CR_AUTH_SALT_LEN, iterations, EVP_sha256(),
                               sizeof(salted), salted);
    cr_wipe(joined, sizeof(joined));
    if (!ok)
        return -EINVAL;
    HMAC(EVP_sha256(), salted, sizeof(salted), (const uint8_t *)"Client Key", 10, client_key,
         &mac_len);
    cr_wipe(salted, sizeof(salted));
    return 0;
}

void cr_auth_stored_key(const uint8_t client_key[CR_AUTH_KEY_LEN],
                        uint8_t stored_key[CR_AUTH_KEY_LEN])
{
    SHA256(client_key, CR_AUTH_KEY_LEN, stored_key);
}

int cr_auth_make_verifier(const struct cr_auth_secret *secret, uint32_t iterations,
                          uint8_t salt[CR_AUTH_SALT_LEN], uint8_t stored_key[CR_AUTH_KEY_LEN])
{
    uint8_t client_key[CR_AUTH_KEY_LEN];
    cr_random_bytes(salt, CR_AUTH_SALT_LEN);
    int rc = cr_auth_client_key(secret, salt, iterations, client_key);
    if (rc < 0)
        return rc;
    cr_auth_stored_key(client_key, stored_key);
    cr_wipe(client_key, sizeof(client_key));
    return 0;
}

/* HMAC(StoredKey, transcript), each variable-length field length-prefixed. */
static void transcript_mac(const uint8_t stored_key[CR_AUTH_KEY_LEN],
                           const struct cr_auth_transcript *t, uint8_t out[CR_AUTH_KEY_LEN])
{
    HMAC_CTX ctx;
    uint8_t be[4];
    unsigned int len = 0;
    size_t id_len = strlen(t->identity);

    HMAC_CTX_init(&ctx);
    HMAC_Init_ex(&ctx, stored_key, CR_AUTH_KEY_LEN, EVP_sha256(), NULL);
    HMAC_Update(&ctx, (const uint8_t *)"camrelay-auth-v1", 16);
#define PUT_LEN(n)                                                                                 \
    be[0] = (uint8_t)((n) >> 24), be[1] = (uint8_t)((n) >> 16), be[2] = (uint8_t)((n) >> 8),       \
    be[3] = (uint8_t)(n), HMAC_Update(&ctx, be, 4)
    PUT_LEN(id_len);
    HMAC_Update(&ctx, (const uint8_t *)t->identity, id_len);
    PUT_LEN(t->client_nonce_len);
    HMAC_Update(&ctx, t->client_nonce, t->client_nonce_len);
    PUT_LEN(t->server_nonce_len);
    HMAC_Update(&ctx, t->server_nonce, t->server_nonce_len);
    HMAC_Update(&ctx, t->salt, CR_AUTH_SALT_LEN);
    PUT_LEN(t->iterations);
    HMAC_Update(&ctx, t->binding, CR_AUTH_BINDING_LEN);
#undef PUT_LEN
    HMAC_Final(&ctx, out, &len);
    HMAC_CTX_cleanup(&ctx);
}

void cr_auth_client_proof(const uint8_t client_key[CR_AUTH_KEY_LEN],
                          const struct cr_auth_transcript *t, uint8_t proof[CR_AUTH_KEY_LEN])
{
    uint8_t stored[CR_AUTH_KEY_LEN], sig[CR_AUTH_KEY_LEN];
    cr_auth_stored_key(client_key, stored);
    transcript_mac(stored, t, sig);
    for (int i = 0; i < CR_AUTH_KEY_LEN; i++)
        proof[i] = client_key[i] ^ sig[i];
    cr_wipe(sig, sizeof(sig));
}

int cr_auth_verify(const uint8_t stored_key[CR_AUTH_KEY_LEN], const struct cr_auth_transcript *t,
                   const uint8_t *proof, size_t proof_len)
{
    uint8_t sig[CR_AUTH_KEY_LEN], client_key[CR_AUTH_KEY_LEN], check[CR_AUTH_KEY_LEN];
    if (proof_len != CR_AUTH_KEY_LEN)
        return 0;
    transcript_mac(stored_key, t, sig);
    for (int i = 0; i < CR_AUTH_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    cr_auth_stored_key(client_key, check);
    int ok = cr_memeq_ct(check, stored_key, CR_AUTH_KEY_LEN);
    cr_wipe(client_key, sizeof(client_key));
    return ok;
}

int cr_auth_tls_binding(SSL *ssl, uint8_t out[CR_AUTH_BINDING_LEN])
{
    if (!SSL_export_keying_material(ssl, out, CR_AUTH_BINDING_LEN, binding_label,
                                    sizeof(binding_label) - 1, NULL, 0, 0))
        return -EPROTO;
    return 0;
}

static void ticket_mac(const uint8_t key[32], const char *serial, const char *relay,
                       const uint8_t expiry_be[8], uint8_t mac[32])
{
    HMAC_CTX ctx;
    unsigned int len = 0;
    HMAC_CTX_init(&ctx);
    HMAC_Init_ex(&ctx, key, 32, EVP_sha256(), NULL);
    HMAC_Update(&ctx, (const uint8_t *)"camrelay-ticket-v1", 18);
    HMAC_Update(&ctx, (const uint8_t *)serial, strlen(serial) + 1);
    HMAC_Update(&ctx, (const uint8_t *)relay, strlen(relay) + 1);
    HMAC_Update(&ctx, expiry_be, 8);
    HMAC_Final(&ctx, mac, &len);
    HMAC_CTX_cleanup(&ctx);
}

void cr_ticket_make(const uint8_t key[32], const char *serial, const char *relay,
                    uint64_t expires_unix, uint8_t out[CR_TICKET_LEN])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(expires_unix >> (56 - 8 * i));
    ticket_mac(key, serial, relay, out, out + 8);
}

int cr_ticket_check(const uint8_t key[32], const char *serial, const char *relay,
                    const uint8_t *ticket, size_t len, uint64_t now_unix)
{
    uint8_t mac[32];
    uint64_t expires = 0;
    if (len != CR_TICKET_LEN)
        return -EINVAL;
    ticket_mac(key, serial, relay, ticket, mac);
    if (!cr_memeq_ct(mac, ticket + 8, 32))
        return -EKEYREJECTED;
    for (int i = 0; i < 8; i++)
        expires = expires << 8 | ticket[i];
    if (now_unix > expires)
        return -EKEYEXPIRED;
    return 0;
}
