/* camrelay-dispatch: the dispatcher daemon (flags in docs/cli.md, behaviour in control/dispatch.h). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "common/config.h"
#include "common/log.h"
#include "common/net.h"
#include "control/dispatch.h"
#include "control/http.h"

struct dispatch_flags {
    char *listen;
    char *cert;
    char *key;
    char *db;
    char *mgmt_socket;
    char *log_level;
    char *http_listen;
    long hold_ms;
    long ticket_ttl;
};

#define F(field) offsetof(struct dispatch_flags, field)
static const struct cr_opt opts[] = {
    {"listen", CR_OPT_STR, F(listen), "0.0.0.0:7443", 0, 0, 0, 0,
     "address for agents and relays (TLS)"},
    {"cert", CR_OPT_STR, F(cert), NULL, 0, 0, 1, 0,
     "server certificate chain, PEM (from camrelayctl pki init)"},
    {"key", CR_OPT_STR, F(key), NULL, 0, 0, 1, 0, "server private key, PEM"},
    {"db", CR_OPT_STR, F(db), "/var/lib/camrelay/dispatch.db", 0, 0, 0, 0,
     "SQLite registry file (its directory must exist)"},
    {"mgmt-socket", CR_OPT_STR, F(mgmt_socket), "/run/camrelay/dispatch.sock", 0, 0, 0, 0,
     "management Unix socket (\"\" = none)"},
    {"hold-ms", CR_OPT_INT, F(hold_ms), "30000", 0, 3600000, 0, 0,
     "how long an unregistered camera is held waiting for its registration"},
    {"ticket-ttl", CR_OPT_INT, F(ticket_ttl), "300", 10, 86400, 0, 0,
     "ticket lifetime in seconds"},
    {"log-level", CR_OPT_STR, F(log_level), "info", 0, 0, 0, 0, "error, warn, info or debug"},
    {"http-listen", CR_OPT_STR, F(http_listen), "127.0.0.1:9091", 0, 0, 0, 0,
     "internal plain-HTTP port for /metrics (\"\" = off; keep it on a trusted network)"},
    CR_OPT_END,
};
#undef F

int main(int argc, char **argv)
{
    struct dispatch_flags fl = {0};
    struct ctl_dispatch *d = NULL;
    struct ctl_http *http = NULL;
    char err[512];
    sigset_t set;
    int sig, rc, status = 2;

    cr_log_set_tag("dispatch");
    rc = cr_config_load(opts, &fl, argc, argv, "--cert FILE --key FILE [options]", NULL);
    if (rc == 1) {
        status = 0;
        goto out_free_flags;
    }
    if (rc < 0)
        goto out_free_flags;
    if (cr_log_set_level_name(fl.log_level) < 0) {
        fprintf(stderr, "%s: --log-level must be error, warn, info or debug (got \"%s\")\n",
                argv[0], fl.log_level);
        goto out_free_flags;
    }
    if (*fl.http_listen) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (cr_addr_parse(fl.http_listen, &ss, &sl) < 0) {
            fprintf(stderr, "%s: --http-listen must be host:port, or \"\" to turn it off (got "
                            "\"%s\")\n",
                    argv[0], fl.http_listen);
            goto out_free_flags;
        }
    }
    cr_raise_fd_limit(); /* thread per connection, up to 4096: two descriptors each */

    /* Block the stop signals before any thread starts, so every thread inherits the mask and
     * only sigwait below receives them. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* nothing to reload yet; a stray HUP must not stop dispatching */

    struct ctl_dispatch_config cfg = {
        .listen = fl.listen,
        .cert_file = fl.cert,
        .key_file = fl.key,
        .db_path = fl.db,
        .mgmt_socket = fl.mgmt_socket,
        .hold_ms = (uint32_t)fl.hold_ms,
        .ticket_ttl_s = (uint32_t)fl.ticket_ttl,
    };
    rc = ctl_dispatch_start(&cfg, &d, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", argv[0], err);
        goto out_free_flags;
    }

    if (*fl.http_listen) {
        struct ctl_http_config hc = {
            .listen = fl.http_listen,
            .handler = ctl_dispatch_http,
            .handler_ctx = d,
            .name = "metrics",
        };
        /* A busy port costs the metrics, not the dispatcher: agents keep being served. */
        if (ctl_http_start(&hc, &http, err, sizeof(err)) < 0)
            cr_err("%s; running without metrics", err);
    }

    do {
        rc = sigwait(&set, &sig);
    } while (rc == EINTR);
    cr_info("%s received: shutting down", rc == 0 ? strsignal(sig) : "signal");
    ctl_http_stop(http); /* its handler reads d */
    ctl_dispatch_stop(d);
    status = 0;

out_free_flags:
    cr_config_free(opts, &fl);
    return status;
}
