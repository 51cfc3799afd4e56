/* TLS 1.3 contexts (BoringSSL) for servers and clients. */
#include "common/tls.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>

static void last_error(char *err, size_t errlen, const char *what, const char *path)
{
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
    snprintf(err, errlen, "%s %s: %s", what, path, buf);
}

SSL_CTX *cr_tls_server_ctx(const char *cert_file, const char *key_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        last_error(err, errlen, "cannot load certificate", cert_file);
        goto out_free_ctx;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        last_error(err, errlen, "cannot load private key", key_file);
        goto out_free_ctx;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "private key %s does not match certificate %s", key_file,
                 cert_file);
        goto out_free_ctx;
    }
    return ctx;

out_free_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *cr_tls_client_ctx(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
        last_error(err, errlen, "cannot load CA", ca_file);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return ctx;
}

int cr_tls_expect_host(SSL *ssl, const char *host_port)
{
    char host[256];
    const char *start = host_port, *end;
    if (host_port[0] == '[') {
        start = host_port + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(host_port, ':');
    }
    if (!end || (size_t)(end - start) >= sizeof(host))
        return -EINVAL;
    memcpy(host, start, (size_t)(end - start));
    host[end - start] = '\0';
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(param, host) == 1)
        return 0;
    SSL_set_tlsext_host_name(ssl, host);
    return X509_VERIFY_PARAM_set1_host(param, host, strlen(host)) == 1 ? 0 : -EINVAL;
}

const char *cr_tls_error_string(int ssl_error, char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    if (e) {
        ERR_error_string_n(e, buf, len);
        ERR_clear_error();
    } else if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
        snprintf(buf, len, "connection closed by peer");
    } else {
        snprintf(buf, len, "TLS error %d", ssl_error);
    }
    return buf;
}
