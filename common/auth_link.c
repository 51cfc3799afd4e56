/* The challenge-response exchange over a blocking control link, both sides. */
#include "common/auth_link.h"

#include <errno.h>
#include <string.h>

#include "common/util.h"

int cr_auth_start_check(const Camrelay__AuthStart *start)
{
    if (!start || !cr_name_valid(start->identity, 63))
        return -EBADMSG;
    if (start->client_nonce.len < CR_AUTH_NONCE_MIN || start->client_nonce.len > CR_AUTH_NONCE_MAX)
        return -EBADMSG;
    return 0;
}

int cr_auth_client_respond(struct cr_link *l, struct cr_auth_client *c, const char *identity,
                           const uint8_t *client_nonce, size_t client_nonce_len,
                           const Camrelay__AuthChallenge *ch)
{
    struct cr_auth_transcript t = {0};
    uint8_t proof[CR_AUTH_KEY_LEN];
    int rc;

    if (ch->salt.len != CR_AUTH_SALT_LEN || ch->server_nonce.len < CR_AUTH_NONCE_MIN ||
        ch->server_nonce.len > CR_AUTH_NONCE_MAX || ch->iterations < CR_AUTH_ITERATIONS_MIN ||
        ch->iterations > CR_AUTH_ITERATIONS_MAX)
        return -EINVAL;
    if (!c->have_key || c->iterations != ch->iterations ||
        memcmp(c->salt, ch->salt.data, CR_AUTH_SALT_LEN) != 0) {
        rc = cr_auth_client_key(&c->secret, ch->salt.data, ch->iterations, c->client_key);
        if (rc < 0)
            return rc;
        memcpy(c->salt, ch->salt.data, CR_AUTH_SALT_LEN);
        c->iterations = ch->iterations;
        c->have_key = 1;
    }
    t.identity = identity;
    t.client_nonce = client_nonce;
    t.client_nonce_len = client_nonce_len;
    t.server_nonce = ch->server_nonce.data;
    t.server_nonce_len = ch->server_nonce.len;
    t.salt = ch->salt.data;
    t.iterations = ch->iterations;
    rc = cr_auth_tls_binding(l->ssl, t.binding);
    if (rc < 0)
        return rc;
    cr_auth_client_proof(c->client_key, &t, proof);

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthProof p = CAMRELAY__AUTH_PROOF__INIT;
    p.client_proof.data = proof;
    p.client_proof.len = sizeof(proof);
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_PROOF;
    f.auth_proof = &p;
    return cr_link_write(l, &f, 5000);
}

void cr_auth_client_forget(struct cr_auth_client *c)
{
    cr_wipe(c->client_key, sizeof(c->client_key));
    c->have_key = 0;
}

int cr_auth_server_verify(struct cr_link *l, const Camrelay__AuthStart *start,
                          const uint8_t salt[CR_AUTH_SALT_LEN], uint32_t iterations,
                          const uint8_t stored_key[CR_AUTH_KEY_LEN], int timeout_ms)
{
    uint8_t server_nonce[CR_AUTH_NONCE_LEN];
    struct cr_auth_transcript t = {0};
    Camrelay__Frame *in = NULL;
    int rc;

    if (cr_auth_start_check(start) < 0)
        return -EBADMSG;
    cr_random_bytes(server_nonce, sizeof(server_nonce));

    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__AuthChallenge ch = CAMRELAY__AUTH_CHALLENGE__INIT;
    ch.salt.data = (uint8_t *)salt;
    ch.salt.len = CR_AUTH_SALT_LEN;
    ch.iterations = iterations;
    ch.server_nonce.data = server_nonce;
    ch.server_nonce.len = sizeof(server_nonce);
    f.body_case = CAMRELAY__FRAME__BODY_AUTH_CHALLENGE;
    f.auth_challenge = &ch;
    rc = cr_link_write(l, &f, timeout_ms);
    if (rc < 0)
        return rc;
    rc = cr_link_read(l, timeout_ms, &in);
    if (rc < 0)
        return rc;
    if (in->body_case != CAMRELAY__FRAME__BODY_AUTH_PROOF) {
        rc = -EBADMSG;
        goto out_free_frame;
    }
    t.identity = start->identity;
    t.client_nonce = start->client_nonce.data;
    t.client_nonce_len = start->client_nonce.len;
    t.server_nonce = server_nonce;
    t.server_nonce_len = sizeof(server_nonce);
    t.salt = salt;
    t.iterations = iterations;
    rc = cr_auth_tls_binding(l->ssl, t.binding);
    if (rc < 0)
        goto out_free_frame;
    rc = cr_auth_verify(stored_key, &t, in->auth_proof->client_proof.data,
                        in->auth_proof->client_proof.len)
             ? 0
             : -EACCES;

out_free_frame:
    cr_frame_free(in);
    return rc;
}
