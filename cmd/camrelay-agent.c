/* camrelay-agent: phones home from a camera (or N simulated ones) to its relay; docs/cli.md. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "agent/agent.h"
#include "agent/agent_config.h"
#include "agent/agent_ctl.h"
#include "common/log.h"

/* Serves the control socket and waits for SIGINT/SIGTERM. Main thread. */
static void run(struct agt_agent *a, int sig_fd, int ctl_fd)
{
    for (;;) {
        struct pollfd p[2] = {{.fd = sig_fd, .events = POLLIN}, {.fd = ctl_fd, .events = POLLIN}};
        int n = poll(p, ctl_fd >= 0 ? 2 : 1, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            cr_err("poll: %s", strerror(errno));
            return;
        }
        if (p[0].revents) {
            struct signalfd_siginfo si;
            ssize_t r = read(sig_fd, &si, sizeof(si));
            cr_info("stopping on %s", r == (ssize_t)sizeof(si) ? strsignal((int)si.ssi_signo)
                                                               : "a signal");
            return;
        }
        if (ctl_fd >= 0 && p[1].revents)
            agt_ctl_accept(a, ctl_fd);
    }
}

int main(int argc, char **argv)
{
    struct agt_config cfg = {0};
    struct agt_agent *a = NULL;
    char err[512];
    int status = 2, ctl_fd = -1, sig_fd = -1;
    sigset_t set;

    cr_log_set_tag("agent");
    int rc = agt_config_load(&cfg, argc, argv);
    if (rc != 0) {
        status = rc == 1 ? 0 : 2;
        goto out_free_config;
    }
    if (cfg.press) {
        status = agt_ctl_client(cfg.control_socket, "press", stdout);
        goto out_free_config;
    }

    /* Threads inherit the mask: only this thread sees SIGINT/SIGTERM, through sig_fd. TLS
     * writes go through write(2), so a peer that vanished must not kill the process. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    sig_fd = signalfd(-1, &set, SFD_CLOEXEC);
    if (sig_fd < 0) {
        fprintf(stderr, "camrelay-agent: signalfd: %s\n", strerror(errno));
        goto out_free_config;
    }
    if (agt_agent_create(&cfg, &a, err, sizeof(err)) < 0) {
        fprintf(stderr, "camrelay-agent: %s\n", err);
        goto out_close_sig;
    }
    if (cfg.control_socket) {
        ctl_fd = agt_ctl_listen(cfg.control_socket);
        if (ctl_fd < 0) {
            fprintf(stderr, "camrelay-agent: cannot listen on --control-socket %s: %s\n",
                    cfg.control_socket, strerror(-ctl_fd));
            goto out_destroy_agent;
        }
        cr_info("control socket %s: \"press\" starts phoning home, \"status\" reports",
                cfg.control_socket);
    }
    if (agt_agent_start(a) < 0) {
        status = 1;
        agt_agent_stop(a);
        goto out_close_ctl;
    }
    run(a, sig_fd, ctl_fd);
    agt_agent_stop(a);
    status = 0;

out_close_ctl:
    if (ctl_fd >= 0) {
        close(ctl_fd);
        unlink(cfg.control_socket);
    }
out_destroy_agent:
    agt_agent_destroy(a);
out_close_sig:
    close(sig_fd);
out_free_config:
    agt_config_free(&cfg);
    return status;
}
