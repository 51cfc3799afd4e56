/* Levelled logging to stderr: one write(2) per line so threads never interleave. */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int cr_log_level = CR_LOG_INFO;
static const char *log_tag = "camrelay";

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

int cr_log_set_level_name(const char *name)
{
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(name, level_names[i]) == 0 ||
            (i == CR_LOG_WARN && strcasecmp(name, "warning") == 0)) {
            cr_log_level = i;
            return 0;
        }
    }
    return -EINVAL;
}

void cr_log_set_tag(const char *tag)
{
    log_tag = tag;
}

void cr_log_emit(int level, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ %s %s ", ts.tv_nsec / 1000000,
                          log_tag, level_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}
