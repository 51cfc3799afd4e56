/* TLS 1.3 contexts (BoringSSL) for servers and clients, and the blocking handshakes the
 * control plane uses. The relay's data path drives its own non-blocking handshakes. */
#ifndef CR_TLS_H
#define CR_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

/* A server context: TLS 1.3 only, the given certificate chain and key, no session tickets
 * (a ticket would move the write sequence before kTLS hand-off, and agents reconnect rarely).
 * Returns owned context, or NULL with a message in err. */
SSL_CTX *cr_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen);

/* A client context: TLS 1.3 only, trusting exactly the CA file (the camrelay PKI), peer
 * verification on. Returns owned context, or NULL with a message in err. */
SSL_CTX *cr_tls_client_ctx(const char *ca_file, char *err, size_t errlen);

/* Sets on ssl the name or IP address the peer's certificate must carry, from "host:port". */
int cr_tls_expect_host(SSL *ssl, const char *host_port);

/* Writes the last BoringSSL error (or a description of ssl_error) into buf; returns buf. */
const char *cr_tls_error_string(int ssl_error, char *buf, size_t len);

#endif
