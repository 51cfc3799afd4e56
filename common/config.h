/* Configuration as a table (name, type, default, offset, reloadable): one table per program
 * fills a struct from defaults, then an INI file (--config FILE, parsed by libinih), then
 * command-line flags (--name value / --name=value), in that order of precedence. */
#ifndef CR_CONFIG_H
#define CR_CONFIG_H

#include <stddef.h>

enum cr_opt_type {
    CR_OPT_STR = 0, /* char * (owned copy; free with cr_config_free) */
    CR_OPT_INT,     /* long, checked against [min, max] */
    CR_OPT_BOOL,    /* int: true/false/yes/no/on/off/1/0; a bare --flag means true */
};

struct cr_opt {
    const char *name; /* flag and INI key: "listen-external" */
    enum cr_opt_type type;
    size_t offset; /* offsetof(struct my_config, field) */
    const char *def; /* default as text; NULL = unset/0 */
    long min, max;   /* CR_OPT_INT bounds */
    int required;
    int reloadable; /* may change on SIGHUP without a restart */
    const char *help;
};

#define CR_OPT_END {0}

/* Fills cfg from table. Positional arguments are rejected unless positional is non-NULL, in
 * which case *positional receives the index of the first one (argv[i..argc) are left for the
 * caller). On --help prints usage and returns 1; on a bad value or unknown flag prints a
 * clear message naming the flag or file:line and returns -EINVAL. Returns 0 on success. */
int cr_config_load(const struct cr_opt *table, void *cfg, int argc, char **argv,
                   const char *usage_line, int *positional);

/* Prints the flag table (name, default, help). */
void cr_config_usage(const struct cr_opt *table, const char *prog, const char *usage_line);

/* Frees the strings cr_config_load allocated. */
void cr_config_free(const struct cr_opt *table, void *cfg);

#endif
