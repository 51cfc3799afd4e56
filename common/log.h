/* Levelled logging to stderr for every camrelay program. */
#ifndef CR_LOG_H
#define CR_LOG_H

enum cr_log_level {
    CR_LOG_ERROR = 0,
    CR_LOG_WARN = 1,
    CR_LOG_INFO = 2,
    CR_LOG_DEBUG = 3,
};

/* The process-wide threshold; messages above it are not even formatted. Any thread may read
 * it; set it at start-up (cr_log_set_level) or on reload. */
extern int cr_log_level;

/* Sets the threshold by name ("error", "warn", "info", "debug"). Returns 0 or -EINVAL. */
int cr_log_set_level_name(const char *name);

/* Sets a short program tag printed on every line ("relay", "agent"). Borrows the string. */
void cr_log_set_tag(const char *tag);

/* Formats and writes one line: "2026-11-24T05:30:00.123Z relay INFO message". Thread-safe
 * (one write(2) per line). Use the macros below, which check the level first. */
void cr_log_emit(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define cr_log(level, ...)                                                                         \
    do {                                                                                           \
        if ((level) <= cr_log_level)                                                               \
            cr_log_emit((level), __VA_ARGS__);                                                     \
    } while (0)
#define cr_err(...) cr_log(CR_LOG_ERROR, __VA_ARGS__)
#define cr_warn(...) cr_log(CR_LOG_WARN, __VA_ARGS__)
#define cr_info(...) cr_log(CR_LOG_INFO, __VA_ARGS__)
#define cr_debug(...) cr_log(CR_LOG_DEBUG, __VA_ARGS__)

#endif
