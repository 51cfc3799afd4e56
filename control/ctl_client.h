/* control/ctl_client.h — camrelayctl's end of a management link: connect (Unix socket or
 * TCP+TLS with a token), send one MgmtRequest, read its MgmtReply. */
#ifndef CTL_CLIENT_H
#define CTL_CLIENT_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "common/link.h"

#define CTL_CLIENT_CONNECT_MS 10000
#define CTL_CLIENT_REPLY_MS 60000 /* a registration runs PBKDF2; a big list takes a while */

struct ctl_client {
    struct cr_link l;
    SSL_CTX *tls;  /* owned; NULL on Unix links */
    char *token;   /* owned copy; NULL on Unix links */
    uint64_t next_id;
};

/* Connects to a daemon's Unix management socket. Returns 0, or -errno from connect(2). */
int ctl_client_connect_unix(struct ctl_client *c, const char *path);

/*
 * Connects to a relay's TCP+TLS management listener at addr ("host:port"), trusting ca_file,
 * and remembers token (copied) for every request. Returns 0 or -errno with a message in err.
 */
int ctl_client_connect_tls(struct ctl_client *c, const char *addr, const char *ca_file,
                           const char *token, char *err, size_t errlen);

/*
 * Sends req (its id and token are filled in here; the caller's other fields are borrowed) and
 * waits for the MgmtReply with that id. Returns 0 and an owned *reply_frame (free with
 * cr_frame_free; the reply is (*reply_frame)->mgmt_reply), -ECONNRESET when the daemon closed
 * the link without answering, -EPROTO for an answer that is not a MgmtReply, other -errno.
 */
int ctl_client_call(struct ctl_client *c, Camrelay__MgmtRequest *req,
                    Camrelay__Frame **reply_frame);

/* Closes the link and wipes the token. Safe after any connect call (failed ones too) and
 * twice; not on a client no connect call has touched. */
void ctl_client_close(struct ctl_client *c);

#endif
