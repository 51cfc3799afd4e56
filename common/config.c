/* Configuration as a table: defaults, then an INI file (libinih), then command-line flags. */
#include "common/config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct cr_opt *find_opt(const struct cr_opt *table, const char *name, size_t len)
{
    for (const struct cr_opt *o = table; o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0)
            return *out = 1, 0;
        if (strcasecmp(v, no[i]) == 0)
            return *out = 0, 0;
    }
    return -EINVAL;
}

/* Stores value into cfg; where names the source for the error message. */
static int set_opt(const struct cr_opt *o, void *cfg, const char *value, const char *where)
{
    char *field = (char *)cfg + o->offset;
    switch (o->type) {
    case CR_OPT_STR: {
        char **s = (char **)(void *)field;
        free(*s);
        *s = value ? strdup(value) : NULL;
        return 0;
    }
    case CR_OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(value ? value : "", &end, 10);
        if (!value || !*value || *end || errno || v < o->min || v > o->max) {
            fprintf(stderr, "%s: %s must be a whole number from %ld to %ld (got \"%s\")\n", where,
                    o->name, o->min, o->max, value ? value : "");
            return -EINVAL;
        }
        *(long *)(void *)field = v;
        return 0;
    }
    case CR_OPT_BOOL:
        if (parse_bool(value ? value : "true", (int *)(void *)field) < 0) {
            fprintf(stderr, "%s: %s must be true or false (got \"%s\")\n", where, o->name, value);
            return -EINVAL;
        }
        return 0;
    }
    return -EINVAL;
}

struct ini_ctx {
    const struct cr_opt *table;
    void *cfg;
    const char *path;
    int failed;
};

static int on_ini_setting(void *user, const char *section, const char *name, const char *value)
{
    struct ini_ctx *c = user;
    char where[512];
    (void)section; /* one program per file: sections only group keys for people */
    const struct cr_opt *o = find_opt(c->table, name, strlen(name));
    snprintf(where, sizeof(where), "%s", c->path);
    if (!o || strcmp(name, "config") == 0) {
        fprintf(stderr, "%s: unknown setting \"%s\"\n", c->path, name);
        c->failed = 1;
        return 0;
    }
    if (set_opt(o, c->cfg, value, where) < 0) {
        c->failed = 1;
        return 0; /* libinih then reports this line's number */
    }
    return 1;
}

void cr_config_usage(const struct cr_opt *table, const char *prog, const char *usage_line)
{
    fprintf(stderr, "usage: %s %s\n\noptions (also settable as key = value in --config FILE):\n",
            prog, usage_line ? usage_line : "[options]");
    fprintf(stderr, "  --config FILE\n      read settings from an INI file (flags override it)\n");
    for (const struct cr_opt *o = table; o->name; o++) {
        const char *arg = o->type == CR_OPT_STR ? " VALUE" : o->type == CR_OPT_INT ? " N" : "";
        fprintf(stderr, "  --%s%s%s%s\n      %s%s%s%s\n", o->name, arg, o->required ? " (required)" : "",
                o->reloadable ? " (reloadable)" : "", o->help, o->def ? " [default: " : "",
                o->def ? o->def : "", o->def ? "]" : "");
    }
}

int cr_config_load(const struct cr_opt *table, void *cfg, int argc, char **argv,
                   const char *usage_line, int *positional)
{
    const char *config_path = NULL;
    int i;

    for (const struct cr_opt *o = table; o->name; o++)
        if (o->def && set_opt(o, cfg, o->def, "default") < 0)
            return -EINVAL;

    /* First pass: find --config so the file is applied before the flags override it. */
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config_path = argv[i] + 9;
    }
    if (config_path) {
        struct ini_ctx c = {table, cfg, config_path, 0};
        /* Our own FILE so a read error (a directory: EISDIR) is not taken for an empty file. */
        /* An indented line is an error here, not a continuation of the previous value, and a
         * long line (a path list) is read whole. */
        ini_allow_multiline = false;
        ini_allow_realloc = true;
        ini_max_line = 4096;
        FILE *f = fopen(config_path, "r");
        if (!f) {
            fprintf(stderr, "%s: cannot read configuration file: %s\n", config_path, strerror(errno));
            return -EINVAL;
        }
        int rc = ini_parse_file(f, on_ini_setting, &c);
        int read_errno = ferror(f) ? (errno ? errno : EIO) : 0;
        fclose(f);
        if (read_errno || rc < 0) { /* rc < 0: libinih could not allocate its line buffer */
            fprintf(stderr, "%s: cannot read configuration file: %s\n", config_path,
                    strerror(read_errno ? read_errno : ENOMEM));
            return -EINVAL;
        }
        if (rc > 0) {
            fprintf(stderr, "%s:%d: syntax error or bad setting\n", config_path, rc);
            return -EINVAL;
        }
        if (c.failed)
            return -EINVAL;
    }

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cr_config_usage(table, argv[0], usage_line);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (strcmp(a, "--") == 0)
                i++;
            if (positional) {
                *positional = i;
                break;
            }
            fprintf(stderr, "%s: unexpected argument \"%s\" (see --help)\n", argv[0], a);
            return -EINVAL;
        }
        const char *name = a + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && strncmp(name, "config", 6) == 0) {
            if (!eq) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "%s: option --config needs a value\n", argv[0]);
                    return -EINVAL;
                }
                i++;
            }
            continue;
        }
        const struct cr_opt *o = find_opt(table, name, len);
        if (!o) {
            fprintf(stderr, "%s: unknown option \"%s\" (see --help)\n", argv[0], a);
            return -EINVAL;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && o->type != CR_OPT_BOOL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: option --%s needs a value\n", argv[0], o->name);
                return -EINVAL;
            }
            value = argv[++i];
        }
        if (set_opt(o, cfg, value, argv[0]) < 0)
            return -EINVAL;
    }
    if (positional && i >= argc)
        *positional = argc;

    for (const struct cr_opt *o = table; o->name; o++) {
        if (o->required && o->type == CR_OPT_STR && !*(char **)(void *)((char *)cfg + o->offset)) {
            fprintf(stderr, "%s: missing required setting --%s (%s)\n", argv[0], o->name, o->help);
            return -EINVAL;
        }
    }
    return 0;
}

void cr_config_free(const struct cr_opt *table, void *cfg)
{
    for (const struct cr_opt *o = table; o->name; o++) {
        if (o->type == CR_OPT_STR) {
            char **s = (char **)(void *)((char *)cfg + o->offset);
            free(*s);
            *s = NULL;
        }
    }
}
