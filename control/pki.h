/* control/pki.h — `camrelayctl pki init`: a private CA and the dispatcher's and relay's server
 * certificates, made with BoringSSL's X509 API (no openssl command line). */
#ifndef CTL_PKI_H
#define CTL_PKI_H

#include <stddef.h>

#define CTL_PKI_CA_DAYS 3650    /* 10 years */
#define CTL_PKI_SERVER_DAYS 730 /* 2 years */

struct ctl_pki_opts {
    const char *dir;              /* created (0755) if missing */
    const char *dispatcher_hosts; /* comma-separated names and IP addresses */
    const char *relay_hosts;
    int force; /* replace an existing CA */
};

/*
 * Writes into dir: ca.pem + ca.key (EC P-256, CA:TRUE pathlen 0, 10 years), dispatch.pem +
 * dispatch.key and relay.pem + relay.key (EC P-256, signed by the CA, serverAuth, 2 years, one
 * subjectAltName per host: IP for addresses, DNS for names). Keys are mode 0600, certificates
 * 0644; each file is written to a temporary name and renamed into place.
 * Returns 0; -EEXIST when dir already holds a CA and force is 0; -EINVAL for a host that is
 * neither an IP address nor a DNS name (or an empty list); other -errno. err says why.
 */
int ctl_pki_init(const struct ctl_pki_opts *o, char *err, size_t errlen);

#endif
