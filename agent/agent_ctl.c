/* The agent's control socket: "press" and "status", and the --press client. */
#include "agent/agent_ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "agent/agent.h"
#include "common/log.h"
#include "common/net.h"

#define LINE_MAX_LEN 64

int agt_ctl_listen(const char *path)
{
    return cr_unix_listen(path, 0660);
}

static void set_timeouts(int fd)
{
    struct timeval tv = {.tv_sec = AGT_CTL_IO_MS / 1000, .tv_usec = (AGT_CTL_IO_MS % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int agt_ctl_serve(struct agt_agent *a, int fd)
{
    char line[LINE_MAX_LEN + 1], msg[128];
    size_t n = 0;

    while (n < LINE_MAX_LEN) {
        ssize_t r = recv(fd, line + n, LINE_MAX_LEN - n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        n += (size_t)r;
        if (memchr(line, '\n', n))
            break;
    }
    line[n] = '\0';
    line[strcspn(line, "\r\n")] = '\0';

    if (strcmp(line, "press") == 0) {
        unsigned cams = agt_agent_n_cameras(a);
        int started = agt_agent_press(a);
        snprintf(msg, sizeof(msg), "ok %s (%u camera%s)\n",
                 started ? "phoning home" : "already phoning home", cams, cams == 1 ? "" : "s");
        return write_all(fd, msg, strlen(msg));
    }
    if (strcmp(line, "status") == 0) {
        size_t len;
        char *text = agt_agent_status(a, &len);
        int rc = write_all(fd, text, len);
        free(text);
        return rc;
    }
    const char *bad = "error unknown command (expected \"press\" or \"status\")\n";
    write_all(fd, bad, strlen(bad));
    return -EINVAL;
}

void agt_ctl_accept(struct agt_agent *a, int listen_fd)
{
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EINTR && errno != EAGAIN)
            cr_warn("control socket: accept: %s", strerror(errno));
        return;
    }
    set_timeouts(fd);
    int rc = agt_ctl_serve(a, fd);
    if (rc < 0 && rc != -EINVAL)
        cr_debug("control socket client: %s", strerror(-rc));
    close(fd);
}

int agt_ctl_client(const char *path, const char *cmd, FILE *out)
{
    char buf[4096], first[3] = "";
    size_t got = 0;
    int fd = cr_unix_connect(path);

    if (fd < 0) {
        fprintf(stderr, "camrelay-agent: cannot reach the agent at %s: %s\n", path,
                strerror(-fd));
        return 2;
    }
    set_timeouts(fd);
    size_t len = strlen(cmd);
    char line[LINE_MAX_LEN + 2];
    snprintf(line, sizeof(line), "%s\n", cmd);
    if (len > LINE_MAX_LEN || write_all(fd, line, len + 1) < 0) {
        fprintf(stderr, "camrelay-agent: cannot send \"%s\" to %s\n", cmd, path);
        close(fd);
        return 2;
    }
    shutdown(fd, SHUT_WR);
    for (;;) {
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            fprintf(stderr, "camrelay-agent: no answer from %s: %s\n", path, strerror(errno));
            close(fd);
            return 2;
        }
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r && got < 2; i++)
            first[got++] = buf[i];
        fwrite(buf, 1, (size_t)r, out);
    }
    fflush(out);
    close(fd);
    return strcmp(first, "ok") == 0 ? 0 : 1;
}
