/* control/pki.c — a private CA and server certificates with BoringSSL's X509 API. */
#include "control/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/util.h"

#define NOT_BEFORE_SKEW_S 300 /* tolerate clocks a little behind ours */
#define MAX_HOSTS 16

static void set_err(char *err, size_t errlen, const char *what)
{
    char buf[200];
    unsigned long e = ERR_get_error();
    if (e) {
        ERR_error_string_n(e, buf, sizeof(buf));
        snprintf(err, errlen, "%s: %s", what, buf);
    } else {
        snprintf(err, errlen, "%s", what);
    }
    ERR_clear_error();
}

/* 1 if s is a DNS name we are willing to put in a certificate: labels of [A-Za-z0-9-],
 * optionally a leading "*." wildcard, 1..253 bytes. */
static int dns_name_ok(const char *s)
{
    size_t n = strlen(s), label = 0;
    if (n == 0 || n > 253)
        return 0;
    if (strncmp(s, "*.", 2) == 0)
        s += 2;
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return 0;
        if (++label > 63)
            return 0;
    }
    return label > 0;
}

/* Appends one subjectAltName for host (an IP address or a DNS name) to gens. */
static int add_san(GENERAL_NAMES *gens, const char *host, char *err, size_t errlen)
{
    uint8_t ip[16];
    char bare[256];
    int iplen = 0;

    /* "[v6]" is accepted as v6. */
    if (host[0] == '[' && host[strlen(host) - 1] == ']' && strlen(host) < sizeof(bare)) {
        memcpy(bare, host + 1, strlen(host) - 2);
        bare[strlen(host) - 2] = '\0';
        host = bare;
    }
    if (inet_pton(AF_INET, host, ip) == 1)
        iplen = 4;
    else if (inet_pton(AF_INET6, host, ip) == 1)
        iplen = 16;
    else if (!dns_name_ok(host)) {
        snprintf(err, errlen, "\"%s\" is neither an IP address nor a DNS name", host);
        return -EINVAL;
    }

    GENERAL_NAME *gn = GENERAL_NAME_new();
    if (!gn)
        return -ENOMEM;
    if (iplen) {
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        if (!os || !ASN1_OCTET_STRING_set(os, ip, iplen)) {
            ASN1_OCTET_STRING_free(os);
            GENERAL_NAME_free(gn);
            return -ENOMEM;
        }
        GENERAL_NAME_set0_value(gn, GEN_IPADD, os);
    } else {
        ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
        if (!ia5 || !ASN1_STRING_set(ia5, host, (int)strlen(host))) {
            ASN1_IA5STRING_free(ia5);
            GENERAL_NAME_free(gn);
            return -ENOMEM;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);
    }
    if (!sk_GENERAL_NAME_push(gens, gn)) {
        GENERAL_NAME_free(gn);
        return -ENOMEM;
    }
    return 0;
}

/* Parses a comma-separated host list into subjectAltNames; *first gets the first host (for
 * the subject CN). Returns owned names or NULL with err set. */
static GENERAL_NAMES *parse_hosts(const char *flag, const char *list, char *first, size_t cap,
                                  char *err, size_t errlen)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    char *copy = cr_xstrdup(list ? list : ""), *save = NULL;
    int n = 0;

    first[0] = '\0';
    if (!gens)
        goto out_fail;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ')
            t++;
        size_t len = strlen(t);
        while (len > 0 && t[len - 1] == ' ')
            t[--len] = '\0';
        if (!len)
            continue;
        char why[300];
        if (add_san(gens, t, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s: %s", flag, why);
            goto out_fail;
        }
        if (!first[0])
            cr_strlcpy(first, t, cap);
        if (++n > MAX_HOSTS) {
            snprintf(err, errlen, "%s: at most %d hosts", flag, MAX_HOSTS);
            goto out_fail;
        }
    }
    if (n == 0) {
        snprintf(err, errlen, "%s: no host given", flag);
        goto out_fail;
    }
    free(copy);
    return gens;

out_fail:
    free(copy);
    GENERAL_NAMES_free(gens);
    return NULL;
}

static EVP_PKEY *new_key(void)
{
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    EVP_PKEY *pk = EVP_PKEY_new();
    if (!ec || !pk || !EC_KEY_generate_key(ec) || !EVP_PKEY_assign_EC_KEY(pk, ec)) {
        EC_KEY_free(ec);
        EVP_PKEY_free(pk);
        return NULL;
    }
    return pk;
}

/* Adds an extension given in OpenSSL's config syntax (fixed strings only, never user input). */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &ctx, nid, value);
    if (!ext)
        return 0;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok;
}

/*
 * Makes a certificate for key, named cn, signed by issuer_key (issuer NULL: self-signed CA).
 * sans (borrowed) only for server certificates. Returns owned X509 or NULL.
 */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                       long days, GENERAL_NAMES *sans)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *bn = BN_new();
    uint8_t serial[16];
    int ok = 0;

    if (!x || !name || !bn)
        goto out;
    cr_random_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f; /* positive */
    serial[0] |= 0x40; /* and full length */
    if (!BN_bin2bn(serial, sizeof(serial), bn))
        goto out;
    ASN1_INTEGER *sn = BN_to_ASN1_INTEGER(bn, NULL);
    if (!sn)
        goto out;
    int sn_ok = X509_set_serialNumber(x, sn);
    ASN1_INTEGER_free(sn);
    if (!sn_ok || !X509_set_version(x, X509_VERSION_3) ||
        !X509_gmtime_adj(X509_getm_notBefore(x), -NOT_BEFORE_SKEW_S) ||
        !X509_gmtime_adj(X509_getm_notAfter(x), days * 24 * 3600L))
        goto out;
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const uint8_t *)"camrelay", -1,
                                    -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const uint8_t *)cn, -1, -1, 0) ||
        !X509_set_subject_name(x, name) ||
        !X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) ||
        !X509_set_pubkey(x, key))
        goto out;

    X509 *iss = issuer ? issuer : x;
    if (!issuer) {
        if (!add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") ||
            !add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign") ||
            !add_ext(x, iss, NID_subject_key_identifier, "hash"))
            goto out;
    } else {
        if (!add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE") ||
            !add_ext(x, iss, NID_key_usage, "critical,digitalSignature") ||
            !add_ext(x, iss, NID_ext_key_usage, "serverAuth") ||
            !add_ext(x, iss, NID_subject_key_identifier, "hash") ||
            !add_ext(x, iss, NID_authority_key_identifier, "keyid:always") ||
            !X509_add1_ext_i2d(x, NID_subject_alt_name, sans, 0, X509V3_ADD_DEFAULT))
            goto out;
    }
    if (!X509_sign(x, issuer_key, EVP_sha256()))
        goto out;
    ok = 1;

out:
    BN_free(bn);
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Writes data to dir/name with mode through a temporary file and a rename. */
static int write_file(const char *dir, const char *name, const uint8_t *data, size_t len,
                      mode_t mode, char *err, size_t errlen)
{
    char path[1024], tmp[1100];
    int fd, rc = 0;

    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    unlink(tmp);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(-rc));
        return rc;
    }
    if (fchmod(fd, mode) < 0) /* whatever the umask said */
        rc = -errno;
    for (size_t off = 0; rc == 0 && off < len;) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            rc = w < 0 ? -errno : -EIO;
        else
            off += (size_t)w;
    }
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    if (close(fd) < 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) < 0)
        rc = -errno;
    if (rc < 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(-rc));
        unlink(tmp);
    }
    return rc;
}

/* PEM-encodes key (PKCS#8, unencrypted) or cert and writes it; key memory is wiped. */
static int write_pem(const char *dir, const char *name, EVP_PKEY *key, X509 *cert, char *err,
                     size_t errlen)
{
    BIO *bio = BIO_new(BIO_s_mem());
    const uint8_t *data;
    size_t len;
    int rc;

    if (!bio)
        return -ENOMEM;
    if (key ? !PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)
            : !PEM_write_bio_X509(bio, cert)) {
        set_err(err, errlen, "cannot encode PEM");
        BIO_free(bio);
        return -EIO;
    }
    BIO_mem_contents(bio, &data, &len);
    rc = write_file(dir, name, data, len, key ? 0600 : 0644, err, errlen);
    if (key)
        cr_wipe((void *)data, len);
    BIO_free(bio);
    return rc;
}

static int make_dir(const char *dir, char *err, size_t errlen)
{
    char path[1024];
    if (cr_strlcpy(path, dir, sizeof(path)) < 0) {
        snprintf(err, errlen, "%s: path too long", dir);
        return -ENAMETOOLONG;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            goto fail;
        *p = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:;
    int rc = -errno;
    snprintf(err, errlen, "cannot create %s: %s", path, strerror(-rc));
    return rc;
}

static int exists(const char *dir, const char *name)
{
    char path[1100];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return lstat(path, &st) == 0;
}

/* CN from the first host (a CN is at most 64 characters). */
static void pick_cn(char *cn, size_t cap, const char *first, const char *fallback)
{
    if (strlen(first) <= 64)
        cr_strlcpy(cn, first, cap);
    else
        cr_strlcpy(cn, fallback, cap);
}

int ctl_pki_init(const struct ctl_pki_opts *o, char *err, size_t errlen)
{
    GENERAL_NAMES *d_sans = NULL, *r_sans = NULL;
    EVP_PKEY *ca_key = NULL, *d_key = NULL, *r_key = NULL;
    X509 *ca = NULL, *d_cert = NULL, *r_cert = NULL;
    char d_first[256], r_first[256], cn[80];
    int rc;

    if (!o->dir || !*o->dir) {
        snprintf(err, errlen, "--dir is required");
        return -EINVAL;
    }
    d_sans = parse_hosts("--dispatcher-host", o->dispatcher_hosts, d_first, sizeof(d_first), err,
                         errlen);
    if (!d_sans)
        return -EINVAL;
    r_sans = parse_hosts("--relay-host", o->relay_hosts, r_first, sizeof(r_first), err, errlen);
    if (!r_sans) {
        rc = -EINVAL;
        goto out;
    }
    rc = make_dir(o->dir, err, errlen);
    if (rc < 0)
        goto out;
    if (!o->force && (exists(o->dir, "ca.pem") || exists(o->dir, "ca.key"))) {
        snprintf(err, errlen,
                 "%s already holds a CA (ca.pem/ca.key); --force replaces it, and every "
                 "certificate it signed stops being trusted",
                 o->dir);
        rc = -EEXIST;
        goto out;
    }

    rc = -EIO;
    ca_key = new_key();
    d_key = new_key();
    r_key = new_key();
    if (!ca_key || !d_key || !r_key) {
        set_err(err, errlen, "cannot generate an EC P-256 key");
        goto out;
    }
    ca = make_cert(ca_key, "camrelay CA", NULL, ca_key, CTL_PKI_CA_DAYS, NULL);
    if (!ca) {
        set_err(err, errlen, "cannot make the CA certificate");
        goto out;
    }
    pick_cn(cn, sizeof(cn), d_first, "camrelay dispatcher");
    d_cert = make_cert(d_key, cn, ca, ca_key, CTL_PKI_SERVER_DAYS, d_sans);
    pick_cn(cn, sizeof(cn), r_first, "camrelay relay");
    r_cert = d_cert ? make_cert(r_key, cn, ca, ca_key, CTL_PKI_SERVER_DAYS, r_sans) : NULL;
    if (!d_cert || !r_cert) {
        set_err(err, errlen, "cannot make a server certificate");
        goto out;
    }

    /* The CA goes last: an interrupted run leaves no CA behind, so it can simply be rerun. */
    if ((rc = write_pem(o->dir, "dispatch.key", d_key, NULL, err, errlen)) < 0 ||
        (rc = write_pem(o->dir, "dispatch.pem", NULL, d_cert, err, errlen)) < 0 ||
        (rc = write_pem(o->dir, "relay.key", r_key, NULL, err, errlen)) < 0 ||
        (rc = write_pem(o->dir, "relay.pem", NULL, r_cert, err, errlen)) < 0 ||
        (rc = write_pem(o->dir, "ca.key", ca_key, NULL, err, errlen)) < 0 ||
        (rc = write_pem(o->dir, "ca.pem", NULL, ca, err, errlen)) < 0)
        goto out;
    rc = 0;

out:
    X509_free(r_cert);
    X509_free(d_cert);
    X509_free(ca);
    EVP_PKEY_free(r_key);
    EVP_PKEY_free(d_key);
    EVP_PKEY_free(ca_key);
    GENERAL_NAMES_free(r_sans);
    GENERAL_NAMES_free(d_sans);
    return rc;
}
