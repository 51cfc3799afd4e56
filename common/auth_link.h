/* The challenge-response exchange over a blocking control link, both sides. The relay's
 * data path runs the server side itself from its event loop with common/auth.h. */
#ifndef CR_AUTH_LINK_H
#define CR_AUTH_LINK_H

#include <stdint.h>

#include "common/auth.h"
#include "common/link.h"

/* A client's secret plus a cache of ClientKey: PBKDF2 runs once per (salt, iterations). */
struct cr_auth_client {
    struct cr_auth_secret secret; /* borrowed strings */
    uint8_t salt[CR_AUTH_SALT_LEN];
    uint32_t iterations;
    uint8_t client_key[CR_AUTH_KEY_LEN];
    int have_key;
};

/* Answers the challenge just received on l with a proof for identity/client_nonce. Returns 0
 * or -errno (-EINVAL for an unacceptable challenge, e.g. iterations out of range). */
int cr_auth_client_respond(struct cr_link *l, struct cr_auth_client *c, const char *identity,
                           const uint8_t *client_nonce, size_t client_nonce_len,
                           const Camrelay__AuthChallenge *ch);

/* Forgets the cached key (wiped). */
void cr_auth_client_forget(struct cr_auth_client *c);

/* Server side: sends an AuthChallenge for the verifier, reads the AuthProof and checks it
 * against the transcript bound to l's TLS session. Returns 0 when the proof verifies,
 * -EACCES when it does not, -EBADMSG for a malformed start or an unexpected frame, other
 * -errno for link failures. Does not send the outcome: the caller answers. */
int cr_auth_server_verify(struct cr_link *l, const Camrelay__AuthStart *start,
                          const uint8_t salt[CR_AUTH_SALT_LEN], uint32_t iterations,
                          const uint8_t stored_key[CR_AUTH_KEY_LEN], int timeout_ms);

/* Validates an AuthStart from the network: identity 1..63 chars of [A-Za-z0-9._:-], nonce
 * length within bounds. Returns 0 or -EBADMSG. */
int cr_auth_start_check(const Camrelay__AuthStart *start);

#endif
