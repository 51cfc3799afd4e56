/* Small helpers every program shares: aborting allocators, clocks, random bytes, hex. */
#ifndef CR_UTIL_H
#define CR_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define CR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Start-up and control-plane allocators: abort on exhaustion, never return NULL. The data
 * path never calls these per I/O; it uses pools sized at start. */
void *cr_xmalloc(size_t n);
void *cr_xcalloc(size_t n, size_t size);
char *cr_xstrdup(const char *s);

/* Monotonic milliseconds, for timeouts. */
uint64_t cr_now_ms(void);
/* Wall-clock seconds since the epoch, for records shown to people. */
int64_t cr_unix_now(void);

/* Fills buf with cryptographically secure random bytes (BoringSSL RAND_bytes); aborts on
 * failure because nothing safe can continue without randomness. */
void cr_random_bytes(void *buf, size_t len);
/* Uniform random in [0, n), for jitter. */
uint32_t cr_random_below(uint32_t n);

/* Writes 2*len hex digits and a NUL into out (cap >= 2*len+1). */
void cr_hex_encode(const void *buf, size_t len, char *out);

/* Copies src into dst[cap] always NUL-terminating; returns -ENAMETOOLONG if it did not fit. */
int cr_strlcpy(char *dst, const char *src, size_t cap);

/* Compares two byte strings in constant time; 1 if equal. */
int cr_memeq_ct(const void *a, const void *b, size_t len);

/* The names camrelay accepts from users and the network (serials, relay and recorder names,
 * service names): 1..max bytes of [A-Za-z0-9._:-], safe in logs, paths, URLs, HTML and SQL
 * without escaping. Returns 1 if s is such a name. */
int cr_name_valid(const char *s, size_t max);

/* mkdir -p of the directory that holds path (the last component is not created), new
 * directories with mode. Returns 0 or -errno. */
int cr_mkdir_parents(const char *path, unsigned mode);

/* Zeroes key material in a way the compiler may not elide. */
void cr_wipe(void *buf, size_t len);

/* Reads a whole small file (secrets, tokens) up to cap-1 bytes, strips one trailing newline,
 * NUL-terminates. Returns length or -errno (-EFBIG if larger). */
int cr_read_small_file(const char *path, char *buf, size_t cap);

#endif
