/* Small helpers every program shares: aborting allocators, clocks, random bytes, hex. */
#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/mem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

static void out_of_memory(size_t n)
{
    fprintf(stderr, "camrelay: out of memory allocating %zu bytes\n", n);
    abort();
}

void *cr_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        out_of_memory(n);
    return p;
}

void *cr_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        out_of_memory(n * size);
    return p;
}

char *cr_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = cr_xmalloc(n);
    memcpy(p, s, n);
    return p;
}

uint64_t cr_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t cr_unix_now(void)
{
    return (int64_t)time(NULL);
}

void cr_random_bytes(void *buf, size_t len)
{
    if (RAND_bytes(buf, len) != 1) {
        fprintf(stderr, "camrelay: RAND_bytes failed\n");
        abort();
    }
}

uint32_t cr_random_below(uint32_t n)
{
    uint32_t r;
    if (n == 0)
        return 0;
    cr_random_bytes(&r, sizeof(r));
    return (uint32_t)(((uint64_t)r * n) >> 32);
}

void cr_hex_encode(const void *buf, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

int cr_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = strlen(src);
    if (cap == 0)
        return -ENAMETOOLONG;
    if (n >= cap) {
        memcpy(dst, src, cap - 1);
        dst[cap - 1] = '\0';
        return -ENAMETOOLONG;
    }
    memcpy(dst, src, n + 1);
    return 0;
}

int cr_name_valid(const char *s, size_t max)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == ':' || c == '-'))
            return 0;
    }
    return 1;
}

int cr_mkdir_parents(const char *path, unsigned mode)
{
    char dir[1024];
    if (cr_strlcpy(dir, path, sizeof(dir)) < 0)
        return -ENAMETOOLONG;
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = '\0';
    for (char *p = dir + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char end = *p;
        *p = '\0';
        if (mkdir(dir, (mode_t)mode) < 0 && errno != EEXIST)
            return -errno;
        if (!end)
            return 0;
        *p = '/';
    }
}

int cr_memeq_ct(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void cr_wipe(void *buf, size_t len)
{
    OPENSSL_cleanse(buf, len);
}

int cr_read_small_file(const char *path, char *buf, size_t cap)
{
    if (cap == 0)
        return -EINVAL; /* no room even for the NUL */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    size_t n = 0;
    for (;;) {
        if (n == cap - 1) { /* full (also before the first read when cap == 1): any more? */
            char extra;
            if (read(fd, &extra, 1) > 0) {
                close(fd);
                return -EFBIG;
            }
            break;
        }
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            close(fd);
            return e;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    buf[n] = '\0';
    return (int)n;
}
