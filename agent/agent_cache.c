/* The agent's relay cache file: load, atomic store, drop. */
#include "agent/agent_cache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "agent/agent_config.h"
#include "common/log.h"
#include "common/util.h"

static int cache_path(char *buf, size_t cap, const char *dir, const char *serial, const char *ext)
{
    int n = snprintf(buf, cap, "%s/%s.relay%s", dir, serial, ext);
    return (n < 0 || (size_t)n >= cap) ? -ENAMETOOLONG : 0;
}

int agt_cache_load(const char *dir, const char *serial, char (*addrs)[CR_ADDR_STRLEN],
                   unsigned cap)
{
    char path[4096], text[AGT_CACHE_FILE_MAX];
    const char *why = NULL;
    unsigned n = 0;

    if (cache_path(path, sizeof(path), dir, serial, "") < 0)
        return 0;
    int len = cr_read_small_file(path, text, sizeof(text));
    if (len == -ENOENT)
        return 0;
    if (len < 0) {
        cr_warn("ignoring relay cache %s: %s", path, strerror(-len));
        return 0;
    }
    if ((size_t)len != strlen(text)) {
        why = "contains a NUL byte";
        goto out_corrupt;
    }
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    if (!line || strcmp(line, AGT_CACHE_HEADER) != 0) {
        why = "missing header line";
        goto out_corrupt;
    }
    while ((line = strtok_r(NULL, "\n", &save))) {
        if (strncmp(line, "relay=", 6) != 0 || agt_hostport_check(line + 6) < 0) {
            why = "a line is not relay=host:port";
            goto out_corrupt;
        }
        if (n < cap)
            cr_strlcpy(addrs[n++], line + 6, CR_ADDR_STRLEN);
    }
    if (n == 0) {
        why = "no relay address";
        goto out_corrupt;
    }
    return (int)n;

out_corrupt:
    cr_warn("ignoring corrupt relay cache %s: %s (the dispatcher will be asked)", path, why);
    return 0;
}

int agt_cache_store(const char *dir, const char *serial, const char (*addrs)[CR_ADDR_STRLEN],
                    unsigned n, int durable)
{
    char path[4096], tmp[4096], text[AGT_CACHE_FILE_MAX];
    size_t len = 0;
    int fd, rc;

    if (n == 0)
        return -EINVAL;
    if (cache_path(path, sizeof(path), dir, serial, "") < 0 ||
        cache_path(tmp, sizeof(tmp), dir, serial, ".tmp") < 0)
        return -ENAMETOOLONG;
    len = (size_t)snprintf(text, sizeof(text), "%s\n", AGT_CACHE_HEADER);
    for (unsigned i = 0; i < n; i++) {
        int w = snprintf(text + len, sizeof(text) - len, "relay=%s\n", addrs[i]);
        if (w < 0 || (size_t)w >= sizeof(text) - len)
            return -ENOSPC;
        len += (size_t)w;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    for (size_t done = 0; done < len;) {
        ssize_t w = write(fd, text + done, len - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = w < 0 ? -errno : -EIO;
            goto out_unlink;
        }
        done += (size_t)w;
    }
    if (durable && fsync(fd) < 0) {
        rc = -errno;
        goto out_unlink;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        goto out_unlink;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        goto out_unlink;
    }
    return 0;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

int agt_cache_drop(const char *dir, const char *serial)
{
    char path[4096];
    if (cache_path(path, sizeof(path), dir, serial, "") < 0)
        return -ENAMETOOLONG;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}
