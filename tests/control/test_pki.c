/* Tests for control/pki.c: `camrelayctl pki init` output loads, verifies, and is private. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/link.h"
#include "common/log.h"
#include "common/net.h"
#include "common/tls.h"
#include "control/pki.h"
#include "tests/support/support.h"

struct fixture {
    char dir[128];
    char pki[200];
};

static int setup(void **state)
{
    static struct fixture f;
    memset(&f, 0, sizeof(f));
    if (test_tmpdir(f.dir, sizeof(f.dir)) < 0)
        return -1;
    snprintf(f.pki, sizeof(f.pki), "%s/pki", f.dir); /* does not exist yet: init creates it */
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    test_rmtree(f->dir);
    return 0;
}

static void path_of(const struct fixture *f, const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", f->pki, name);
}

static X509 *load_cert(const struct fixture *f, const char *name)
{
    char p[300];
    path_of(f, name, p, sizeof(p));
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(x);
    return x;
}

/* This BoringSSL wants the length spelled out (0 is not "use strlen"). */
static int has_dns(X509 *x, const char *name)
{
    return X509_check_host(x, name, strlen(name), 0, NULL) == 1;
}

static int init_default(const struct fixture *f, int force, char *err, size_t errlen)
{
    struct ctl_pki_opts o = {f->pki, "127.0.0.1,dispatch.example", "127.0.0.1,relay.example",
                             force};
    return ctl_pki_init(&o, err, errlen);
}

static void test_pki_files_and_modes(void **state)
{
    struct fixture *f = *state;
    static const char *const keys[] = {"ca.key", "dispatch.key", "relay.key"};
    static const char *const certs[] = {"ca.pem", "dispatch.pem", "relay.pem"};
    char err[512], p[300];
    struct stat st;

    assert_int_equal(init_default(f, 0, err, sizeof(err)), 0);
    for (size_t i = 0; i < 3; i++) {
        path_of(f, keys[i], p, sizeof(p));
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0600);
        path_of(f, certs[i], p, sizeof(p));
        assert_int_equal(stat(p, &st), 0);
        assert_int_equal(st.st_mode & 07777, 0644);
    }
    /* No temporary files left behind. */
    path_of(f, ".ca.pem.tmp", p, sizeof(p));
    assert_int_not_equal(stat(p, &st), 0);
}

static void test_pki_certificates_are_sane(void **state)
{
    struct fixture *f = *state;
    char err[512];
    assert_int_equal(init_default(f, 0, err, sizeof(err)), 0);

    X509 *ca = load_cert(f, "ca.pem"), *relay = load_cert(f, "relay.pem");
    X509 *disp = load_cert(f, "dispatch.pem");

    /* The CA is a CA; the servers are not, and say serverAuth. */
    assert_int_equal(X509_check_ca(ca), 1);
    assert_int_equal(X509_check_ca(relay), 0);
    assert_true(X509_get_extended_key_usage(relay) & XKU_SSL_SERVER);
    assert_true(X509_get_extended_key_usage(disp) & XKU_SSL_SERVER);
    assert_int_equal(X509_check_issued(ca, relay), X509_V_OK);
    assert_int_equal(X509_check_issued(ca, disp), X509_V_OK);

    /* EC P-256 keys. */
    EVP_PKEY *pk = X509_get_pubkey(relay);
    assert_non_null(pk);
    assert_int_equal(EVP_PKEY_id(pk), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_bits(pk), 256);
    EVP_PKEY_free(pk);

    /* subjectAltNames: IP for addresses, DNS for names, and only those. */
    assert_true(has_dns(relay, "relay.example"));
    assert_int_equal(X509_check_ip_asc(relay, "127.0.0.1", 0), 1);
    assert_false(has_dns(relay, "dispatch.example"));
    assert_true(has_dns(disp, "dispatch.example"));
    assert_int_not_equal(X509_check_ip_asc(relay, "127.0.0.2", 0), 1);

    /* Validity: CA ~10 years, servers ~2 years. */
    int days, secs;
    assert_int_equal(
        ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(ca), X509_get0_notAfter(ca)), 1);
    assert_in_range(days, 3649, 3651);
    assert_int_equal(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(relay),
                                     X509_get0_notAfter(relay)), 1);
    assert_in_range(days, 729, 731);

    /* The whole chain verifies with BoringSSL's verifier. */
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_int_equal(X509_STORE_CTX_init(ctx, store, relay, NULL), 1);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER);
    assert_int_equal(X509_verify_cert(ctx), 1);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);

    X509_free(disp);
    X509_free(relay);
    X509_free(ca);
}

/* A TLS server with relay.pem that accepts n connections (handshakes may fail). */
struct server {
    SSL_CTX *ctx;
    int fd;
    int n;
    int ok; /* handshakes that succeeded */
};

static void *server_main(void *arg)
{
    struct server *s = arg;
    for (int i = 0; i < s->n; i++) {
        struct cr_link l;
        char err[256];
        int c;
        do {
            c = accept4(s->fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0)
                usleep(1000);
        } while (c < 0);
        if (cr_link_accept_tls(&l, s->ctx, c, 5000, err, sizeof(err)) == 0) {
            s->ok++;
            cr_link_close(&l);
        }
    }
    return NULL;
}

static void test_pki_tls_accepts_right_ip_refuses_other(void **state)
{
    struct fixture *f = *state;
    char err[512], cert[300], key[300], ca[300], addr[64];
    struct server s = {0};
    struct cr_link l;
    pthread_t t;

    assert_int_equal(init_default(f, 0, err, sizeof(err)), 0);
    path_of(f, "relay.pem", cert, sizeof(cert));
    path_of(f, "relay.key", key, sizeof(key));
    path_of(f, "ca.pem", ca, sizeof(ca));
    s.ctx = cr_tls_server_ctx(cert, key, err, sizeof(err));
    assert_non_null(s.ctx);
    SSL_CTX *client = cr_tls_client_ctx(ca, err, sizeof(err));
    assert_non_null(client);

    /* 0.0.0.0 so that 127.0.0.2 (also loopback) reaches the same server. */
    s.fd = cr_tcp_listen("0.0.0.0:0", 0, 8);
    assert_true(s.fd >= 0);
    s.n = 2;
    uint16_t port = cr_sock_port(s.fd);
    assert_int_equal(pthread_create(&t, NULL, server_main, &s), 0);

    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    assert_int_equal(cr_link_connect_tls(&l, client, addr, 5000, err, sizeof(err)), 0);
    cr_link_close(&l);

    snprintf(addr, sizeof(addr), "127.0.0.2:%u", port);
    int rc = cr_link_connect_tls(&l, client, addr, 5000, err, sizeof(err));
    assert_true(rc < 0);
    assert_non_null(strstr(err, "not trusted"));

    pthread_join(t, NULL);
    assert_int_equal(s.ok, 1);
    close(s.fd);
    SSL_CTX_free(client);
    SSL_CTX_free(s.ctx);
}

static void test_pki_refuses_to_replace_ca_without_force(void **state)
{
    struct fixture *f = *state;
    char err[512];
    assert_int_equal(init_default(f, 0, err, sizeof(err)), 0);
    X509 *before = load_cert(f, "ca.pem");

    assert_int_equal(init_default(f, 0, err, sizeof(err)), -EEXIST);
    assert_non_null(strstr(err, "--force"));
    X509 *same = load_cert(f, "ca.pem");
    assert_int_equal(X509_cmp(before, same), 0);

    assert_int_equal(init_default(f, 1, err, sizeof(err)), 0);
    X509 *after = load_cert(f, "ca.pem");
    assert_int_not_equal(X509_cmp(before, after), 0);
    X509_free(after);
    X509_free(same);
    X509_free(before);
}

static void test_pki_rejects_bad_hosts(void **state)
{
    struct fixture *f = *state;
    char err[512];
    struct stat st;
    static const char *const bad[] = {"", " , ", "bad host", "relay..example", "a/b", "-x.",
                                      "x_y.example"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct ctl_pki_opts o = {f->pki, "127.0.0.1", bad[i], 0};
        assert_int_equal(ctl_pki_init(&o, err, sizeof(err)), -EINVAL);
    }
    /* Nothing written on refusal. */
    assert_int_not_equal(stat(f->pki, &st), 0);

    /* IPv6, bracketed IPv6 and a wildcard are fine. */
    struct ctl_pki_opts ok = {f->pki, "::1,[fd00::5]", "*.relays.example,10.0.0.1", 0};
    assert_int_equal(ctl_pki_init(&ok, err, sizeof(err)), 0);
    X509 *d = load_cert(f, "dispatch.pem");
    assert_int_equal(X509_check_ip_asc(d, "fd00::5", 0), 1);
    X509_free(d);
}

int main(void)
{
    cr_log_level = CR_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pki_files_and_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pki_certificates_are_sane, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pki_tls_accepts_right_ip_refuses_other, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pki_refuses_to_replace_ca_without_force, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pki_rejects_bad_hosts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
