/* Test helpers for tests/agent: guard-page buffers, child processes, ffmpeg-made fixture clips. */
#ifndef TESTS_AGENT_HELPERS_H
#define TESTS_AGENT_HELPERS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/support.h"

/* A readable region whose end touches a PROT_NONE page: reading one byte past the data that
 * guarded_place() put at its end faults at once. */
struct guarded {
    uint8_t *map;
    size_t map_len; /* readable part */
};

static inline int guarded_init(struct guarded *g, size_t cap)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);

    g->map_len = (cap + pg - 1) / pg * pg;
    if (g->map_len == 0)
        g->map_len = pg;
    g->map = mmap(NULL, g->map_len + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                  0);
    if (g->map == MAP_FAILED)
        return -errno;
    if (mprotect(g->map + g->map_len, pg, PROT_NONE) < 0)
        return -errno;
    return 0;
}

/* Copies len bytes so they end exactly at the guard page; returns where they start. */
static inline const uint8_t *guarded_place(struct guarded *g, const void *data, size_t len)
{
    uint8_t *dst = g->map + g->map_len - len;

    memmove(dst, data, len);
    return dst;
}

static inline void guarded_free(struct guarded *g)
{
    munmap(g->map, g->map_len + (size_t)sysconf(_SC_PAGESIZE));
}

/* Runs argv with stdout/stderr sent to /dev/null (or to out_path), killing it after
 * timeout_s. Returns its exit status, 127 if it could not run, -1 if killed. */
static inline int run_cmd(char *const argv[], const char *out_path, int timeout_s)
{
    int status = 0;
    pid_t pid = fork();

    if (pid < 0)
        return 127;
    if (pid == 0) {
        int fd = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (null >= 0)
            dup2(null, 0);
        execvp(argv[0], argv);
        _exit(127);
    }
    for (int waited_ms = 0;; waited_ms += 20) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        if (r < 0)
            return -1;
        if (waited_ms >= timeout_s * 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Reads a whole file into a malloc'd buffer; NULL on failure. */
static inline uint8_t *slurp(const char *path, size_t *len)
{
    struct stat st;
    uint8_t *buf = NULL;
    int fd = open(path, O_RDONLY);

    if (fd < 0)
        return NULL;
    if (fstat(fd, &st) == 0 && st.st_size > 0 && (buf = malloc((size_t)st.st_size)) != NULL &&
        read(fd, buf, (size_t)st.st_size) != st.st_size) {
        free(buf);
        buf = NULL;
    }
    if (buf)
        *len = (size_t)st.st_size;
    close(fd);
    return buf;
}

/* Fixture clips made by ffmpeg in a private temp dir: 320x240, 8 fps, 2 s, GOP 8, no
 * B-frames, as MP4 (moov last), MP4 with faststart (moov first) and Annex-B. */
struct clips {
    char dir[64];
    char mp4[128];
    char mp4_fast[128];
    char h264[128];
    bool ok;
};

static inline bool clips_make(struct clips *c)
{
    char *enc[] = {"ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
                   "testsrc2=size=320x240:rate=8", "-t", "2", "-c:v", "libx264", "-g", "8",
                   "-bf", "0", "-pix_fmt", "yuv420p", c->mp4, NULL};
    char *fast[] = {"ffmpeg", "-nostdin", "-v", "error", "-y", "-i", c->mp4, "-c", "copy",
                    "-movflags", "+faststart", c->mp4_fast, NULL};
    char *annexb[] = {"ffmpeg", "-nostdin", "-v", "error", "-y", "-i", c->mp4, "-c", "copy",
                      "-bsf:v", "h264_mp4toannexb", "-f", "h264", c->h264, NULL};

    c->ok = false;
    if (test_tmpdir(c->dir, sizeof(c->dir)) < 0)
        return false;
    snprintf(c->mp4, sizeof(c->mp4), "%s/clip.mp4", c->dir);
    snprintf(c->mp4_fast, sizeof(c->mp4_fast), "%s/clip-fast.mp4", c->dir);
    snprintf(c->h264, sizeof(c->h264), "%s/clip.h264", c->dir);
    c->ok = run_cmd(enc, NULL, 60) == 0 && run_cmd(fast, NULL, 60) == 0 &&
            run_cmd(annexb, NULL, 60) == 0;
    return c->ok;
}

/* Removes the clips' temp dir. */
static inline void clips_remove(struct clips *c)
{
    test_rmtree(c->dir);
}

#endif
