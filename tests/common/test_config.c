/* Tests common/config.c: defaults, INI file, flags and their precedence, errors, --help,
 * positional arguments. stderr is captured so messages can be checked and kept quiet. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/config.h"
#include "common/util.h"
#include "tests/support/support.h"

struct test_cfg {
    char *name;
    char *listen;
    char *token;
    long port;
    long workers;
    int verbose;
    int ktls;
};

static const struct cr_opt table[] = {
    {"name", CR_OPT_STR, offsetof(struct test_cfg, name), "camrelay", 0, 0, 0, 1, "instance name"},
    {"listen", CR_OPT_STR, offsetof(struct test_cfg, listen), NULL, 0, 0, 1, 0, "listen address"},
    {"token", CR_OPT_STR, offsetof(struct test_cfg, token), NULL, 0, 0, 0, 0, "token"},
    {"port", CR_OPT_INT, offsetof(struct test_cfg, port), "7443", 1, 65535, 0, 0, "port"},
    {"workers", CR_OPT_INT, offsetof(struct test_cfg, workers), NULL, -4, 64, 0, 1, "workers"},
    {"verbose", CR_OPT_BOOL, offsetof(struct test_cfg, verbose), "false", 0, 0, 0, 1, "verbose"},
    {"ktls", CR_OPT_BOOL, offsetof(struct test_cfg, ktls), "yes", 0, 0, 0, 0, "use kTLS"},
    CR_OPT_END,
};

static char tmpdir[128];
static char captured[8192]; /* stderr of the last load() */

/* Runs cr_config_load on a NULL-terminated argument list (argv[0] = "prog") into a zeroed
 * cfg with stderr captured into `captured`. */
static int load_v(struct test_cfg *cfg, int *positional, va_list ap)
{
    char *argv[32];
    int argc = 0;
    argv[argc++] = "prog";
    for (const char *a; (a = va_arg(ap, const char *)) != NULL;) {
        assert_true(argc < 31);
        argv[argc++] = (char *)a;
    }
    argv[argc] = NULL;
    memset(cfg, 0, sizeof(*cfg));

    char path[192];
    snprintf(path, sizeof(path), "%s/stderr", tmpdir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    dup2(fd, 2);
    int rc = cr_config_load(table, cfg, argc, argv, "[options] [FILE...]", positional);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, captured, sizeof(captured) - 1, 0);
    captured[n > 0 ? n : 0] = '\0';
    close(fd);
    return rc;
}

static int load(struct test_cfg *cfg, ...)
{
    va_list ap;
    va_start(ap, cfg);
    int rc = load_v(cfg, NULL, ap);
    va_end(ap);
    return rc;
}

static int load_pos(struct test_cfg *cfg, int *positional, ...)
{
    va_list ap;
    va_start(ap, positional);
    int rc = load_v(cfg, positional, ap);
    va_end(ap);
    return rc;
}

static void assert_captured_has(const char *needle)
{
    if (!strstr(captured, needle))
        fail_msg("stderr lacks \"%s\"; it was:\n%s", needle, captured);
}

static const char *write_file(const char *name, const char *text)
{
    static char path[4][192];
    static int slot;
    char *p = path[slot++ % 4];
    snprintf(p, sizeof(path[0]), "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

static void test_config_defaults_applied(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--listen", ":7443", NULL), 0);
    assert_string_equal(c.name, "camrelay");
    assert_string_equal(c.listen, ":7443");
    assert_null(c.token); /* no default: unset */
    assert_int_equal(c.port, 7443);
    assert_int_equal(c.workers, 0);
    assert_int_equal(c.verbose, 0);
    assert_int_equal(c.ktls, 1);
    assert_string_equal(captured, "");
    cr_config_free(table, &c);
    assert_null(c.name);
    assert_null(c.listen);
}

static void test_config_file_values(void **state)
{
    (void)state;
    struct test_cfg c;
    const char *path = write_file("a.ini", "; camrelay test\n"
                                           "# another comment\n"
                                           "[relay]\n"
                                           "name = cam-a\n"
                                           "listen=0.0.0.0:7443\n"
                                           "port   =   8443  \n"
                                           "\n"
                                           "[other]\n"
                                           "workers = -4\n"
                                           "verbose = YES\n"
                                           "ktls = off\n"
                                           "token = abc def ; inline comment\n");
    assert_int_equal(load(&c, "--config", path, NULL), 0);
    assert_string_equal(c.name, "cam-a");
    assert_string_equal(c.listen, "0.0.0.0:7443");
    assert_int_equal(c.port, 8443);
    assert_int_equal(c.workers, -4);
    assert_int_equal(c.verbose, 1);
    assert_int_equal(c.ktls, 0);
    assert_string_equal(c.token, "abc def");
    cr_config_free(table, &c);

    /* --config=FILE form. */
    char flag[256];
    snprintf(flag, sizeof(flag), "--config=%s", path);
    assert_int_equal(load(&c, flag, NULL), 0);
    assert_int_equal(c.port, 8443);
    cr_config_free(table, &c);
}

static void test_config_flags_override_file(void **state)
{
    (void)state;
    struct test_cfg c;
    const char *path = write_file("b.ini", "name = from-file\nport = 8443\nlisten = file:1\n"
                                           "verbose = true\n");
    /* The file applies first wherever --config sits; flags win. */
    assert_int_equal(load(&c, "--port", "9443", "--config", path, "--verbose=false", NULL), 0);
    assert_int_equal(c.port, 9443);
    assert_int_equal(c.verbose, 0);
    assert_string_equal(c.name, "from-file"); /* not overridden: the file's value stays */
    assert_string_equal(c.listen, "file:1");
    cr_config_free(table, &c);

    assert_int_equal(load(&c, "--config", path, "--listen", "flag:2", "--name=n2", NULL), 0);
    assert_string_equal(c.listen, "flag:2");
    assert_string_equal(c.name, "n2");
    assert_int_equal(c.port, 8443);
    cr_config_free(table, &c);
}

static void test_config_flag_forms(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--listen=a:1", "--port=100", "--workers", "-3", NULL), 0);
    assert_string_equal(c.listen, "a:1");
    assert_int_equal(c.port, 100);
    assert_int_equal(c.workers, -3);
    cr_config_free(table, &c);

    assert_int_equal(load(&c, "--listen", "b:2", "--port", "200", NULL), 0);
    assert_string_equal(c.listen, "b:2");
    assert_int_equal(c.port, 200);
    cr_config_free(table, &c);

    /* Values may contain '=' and start with '-'; empty strings are values too. */
    assert_int_equal(load(&c, "--listen=x=y", "--token", "--not-a-flag", "--name=", NULL), 0);
    assert_string_equal(c.listen, "x=y");
    assert_string_equal(c.token, "--not-a-flag");
    assert_string_equal(c.name, "");
    cr_config_free(table, &c);

    /* The last occurrence wins (and the earlier string is freed: see ASan). */
    assert_int_equal(load(&c, "--listen", "1", "--listen", "2", "--port", "5", "--port=6", NULL), 0);
    assert_string_equal(c.listen, "2");
    assert_int_equal(c.port, 6);
    cr_config_free(table, &c);
}

static void test_config_bool_flags(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--listen", "x", "--verbose", NULL), 0);
    assert_int_equal(c.verbose, 1);
    cr_config_free(table, &c);

    static const struct {
        const char *flag;
        int verbose;
    } forms[] = {
        {"--verbose=true", 1}, {"--verbose=1", 1},  {"--verbose=yes", 1},  {"--verbose=ON", 1},
        {"--verbose=false", 0}, {"--verbose=0", 0}, {"--verbose=no", 0},   {"--verbose=Off", 0},
    };
    for (size_t i = 0; i < CR_ARRAY_SIZE(forms); i++) {
        assert_int_equal(load(&c, "--listen", "x", "--verbose", forms[i].flag, NULL), 0);
        if (c.verbose != forms[i].verbose)
            fail_msg("%s gave %d", forms[i].flag, c.verbose);
        cr_config_free(table, &c);
    }

    static const char *const bad[] = {"--verbose=maybe", "--verbose=", "--verbose=2",
                                      "--verbose=truee"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        assert_int_equal(load(&c, "--listen", "x", bad[i], NULL), -EINVAL);
        assert_captured_has("verbose");
        cr_config_free(table, &c);
    }

    /* A bare bool flag does not take the next argument as its value. */
    int pos = -1;
    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "--ktls", "false", NULL), 0);
    assert_int_equal(c.ktls, 1);
    assert_int_equal(pos, 4);
    cr_config_free(table, &c);
}

static void test_config_unknown_flag(void **state)
{
    (void)state;
    struct test_cfg c;
    static const char *const bad[] = {"--nope", "--nope=1", "--por", "--portx=1", "--Port=1",
                                      "---port=1"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad); i++) {
        assert_int_equal(load(&c, "--listen", "x", bad[i], NULL), -EINVAL);
        assert_captured_has(bad[i]);
        cr_config_free(table, &c);
    }
}

static void test_config_int_range(void **state)
{
    (void)state;
    struct test_cfg c;
    static const char *const bad_port[] = {"0",  "65536", "-1",  "12x", "",  "0x10",
                                           "1e3", "99999999999999999999", "-99999999999999999999",
                                           "8443.0"};
    for (size_t i = 0; i < CR_ARRAY_SIZE(bad_port); i++) {
        if (load(&c, "--listen", "x", "--port", bad_port[i], NULL) != -EINVAL)
            fail_msg("--port \"%s\" accepted (port %ld)", bad_port[i], c.port);
        assert_captured_has("port");
        assert_captured_has("1 to 65535");
        cr_config_free(table, &c);
    }
    assert_int_equal(load(&c, "--listen", "x", "--port", "1", "--workers=-4", NULL), 0);
    assert_int_equal(c.port, 1);
    assert_int_equal(c.workers, -4);
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--listen", "x", "--port", "65535", "--workers=64", NULL), 0);
    assert_int_equal(c.port, 65535);
    assert_int_equal(c.workers, 64);
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--listen", "x", "--workers=-5", NULL), -EINVAL);
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--listen", "x", "--workers=65", NULL), -EINVAL);
    cr_config_free(table, &c);
}

static void test_config_missing_required(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, NULL), -EINVAL);
    assert_captured_has("--listen");
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--port", "1", NULL), -EINVAL);
    cr_config_free(table, &c);

    /* Satisfied by the file as well as by a flag. */
    const char *path = write_file("req.ini", "listen = :1\n");
    assert_int_equal(load(&c, "--config", path, NULL), 0);
    assert_string_equal(c.listen, ":1");
    cr_config_free(table, &c);
}

static void test_config_missing_value(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--listen", "x", "--port", NULL), -EINVAL);
    assert_captured_has("--port");
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--listen", NULL), -EINVAL);
    cr_config_free(table, &c);
    /* --config needs its value like every other option (it must not vanish silently). */
    assert_int_equal(load(&c, "--listen", "x", "--config", NULL), -EINVAL);
    assert_captured_has("--config");
    cr_config_free(table, &c);
}

static void test_config_file_errors(void **state)
{
    (void)state;
    struct test_cfg c;
    const char *path = write_file("unknown.ini", "listen = :1\nnope = 1\n");
    assert_int_equal(load(&c, "--config", path, NULL), -EINVAL);
    assert_captured_has(path);
    assert_captured_has("nope");
    cr_config_free(table, &c);

    path = write_file("badint.ini", "listen = :1\nport = 70000\n");
    assert_int_equal(load(&c, "--config", path, NULL), -EINVAL);
    assert_captured_has(path);
    assert_captured_has("port");
    cr_config_free(table, &c);

    path = write_file("badbool.ini", "listen = :1\nverbose = sometimes\n");
    assert_int_equal(load(&c, "--config", path, NULL), -EINVAL);
    assert_captured_has("verbose");
    cr_config_free(table, &c);

    path = write_file("syntax.ini", "listen = :1\nthis line has no equals sign\n");
    assert_int_equal(load(&c, "--config", path, NULL), -EINVAL);
    assert_captured_has(":2");
    cr_config_free(table, &c);

    path = write_file("nested.ini", "listen = :1\nconfig = /etc/other.ini\n");
    assert_int_equal(load(&c, "--config", path, NULL), -EINVAL);
    cr_config_free(table, &c);

    char missing[192];
    snprintf(missing, sizeof(missing), "%s/does-not-exist.ini", tmpdir);
    assert_int_equal(load(&c, "--config", missing, NULL), -EINVAL);
    assert_captured_has(missing);
    cr_config_free(table, &c);

    assert_int_equal(load(&c, "--config", tmpdir, "--listen", "x", NULL), -EINVAL); /* a dir */
    cr_config_free(table, &c);
}

/* Values longer than libinih's line buffer must not be silently cut short. */
static void test_config_file_long_value(void **state)
{
    (void)state;
    struct test_cfg c;
    char text[1200], value[1024];
    memset(value, 'v', 150);
    value[150] = '\0';
    snprintf(text, sizeof(text), "listen = :1\ntoken = %s\n", value);
    const char *path = write_file("long150.ini", text);
    assert_int_equal(load(&c, "--config", path, NULL), 0);
    assert_string_equal(c.token, value);
    cr_config_free(table, &c);

    memset(value, 'w', 1000);
    value[1000] = '\0';
    snprintf(text, sizeof(text), "listen = :1\ntoken = %s\n", value);
    path = write_file("long1000.ini", text);
    int rc = load(&c, "--config", path, NULL);
    if (rc == 0 && strcmp(c.token, value) != 0)
        fail_msg("1000-byte value accepted but cut to %zu bytes", strlen(c.token));
    cr_config_free(table, &c);
}

static void test_config_help(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--help", NULL), 1); /* even with --listen missing */
    assert_captured_has("usage: prog [options] [FILE...]");
    assert_captured_has("--listen VALUE (required)");
    assert_captured_has("--port N");
    assert_captured_has("[default: 7443]");
    assert_captured_has("--verbose");
    assert_captured_has("(reloadable)");
    assert_captured_has("--config FILE");
    cr_config_free(table, &c);
    assert_int_equal(load(&c, "--port", "5", "-h", NULL), 1);
    cr_config_free(table, &c);
}

static void test_config_positional(void **state)
{
    (void)state;
    struct test_cfg c;
    int pos = -1;

    assert_int_equal(load(&c, "--listen", "x", "file.txt", NULL), -EINVAL);
    assert_captured_has("file.txt");
    cr_config_free(table, &c);

    assert_int_equal(load_pos(&c, &pos, "--listen", "x", NULL), 0);
    assert_int_equal(pos, 3); /* none: argc */
    cr_config_free(table, &c);

    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "a", "b", NULL), 0);
    assert_int_equal(pos, 3);
    cr_config_free(table, &c);

    /* Flags after the first positional are left for the caller. */
    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "a", "--port", "5", NULL), 0);
    assert_int_equal(pos, 3);
    assert_int_equal(c.port, 7443);
    cr_config_free(table, &c);

    /* "--" ends the options: what follows is positional even if it looks like a flag. */
    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "--", "--port", "5", NULL), 0);
    assert_int_equal(pos, 4);
    assert_int_equal(c.port, 7443);
    cr_config_free(table, &c);

    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "--", NULL), 0);
    assert_int_equal(pos, 4);
    cr_config_free(table, &c);

    /* --config after "--" is not read. */
    const char *path = write_file("after.ini", "port = 1234\n");
    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "--", "--config", path, NULL), 0);
    assert_int_equal(c.port, 7443);
    assert_int_equal(pos, 4);
    cr_config_free(table, &c);

    /* --config's value is not a positional argument. */
    assert_int_equal(load_pos(&c, &pos, "--listen", "x", "--config", path, "f", NULL), 0);
    assert_int_equal(c.port, 1234);
    assert_int_equal(pos, 5);
    cr_config_free(table, &c);
}

static void test_config_bad_default_rejected(void **state)
{
    (void)state;
    struct {
        long n;
    } cfg = {0};
    static const struct cr_opt bad_table[] = {
        {"n", CR_OPT_INT, 0, "not-a-number", 0, 10, 0, 0, "n"},
        CR_OPT_END,
    };
    char *argv[] = {"prog", NULL};
    int saved = dup(2), devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 2);
    int rc = cr_config_load(bad_table, &cfg, 1, argv, NULL, NULL);
    dup2(saved, 2);
    close(saved);
    close(devnull);
    assert_int_equal(rc, -EINVAL);
}

static void test_config_free_twice(void **state)
{
    (void)state;
    struct test_cfg c;
    assert_int_equal(load(&c, "--listen", "x", "--token", "t", NULL), 0);
    cr_config_free(table, &c);
    cr_config_free(table, &c);
    struct test_cfg zero = {0};
    cr_config_free(table, &zero);
}

static int group_setup(void **state)
{
    (void)state;
    return test_tmpdir(tmpdir, sizeof(tmpdir)) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    test_rmtree(tmpdir);
    return 0;
}

int main(void)
{
    static const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_defaults_applied),
        cmocka_unit_test(test_config_file_values),
        cmocka_unit_test(test_config_flags_override_file),
        cmocka_unit_test(test_config_flag_forms),
        cmocka_unit_test(test_config_bool_flags),
        cmocka_unit_test(test_config_unknown_flag),
        cmocka_unit_test(test_config_int_range),
        cmocka_unit_test(test_config_missing_required),
        cmocka_unit_test(test_config_missing_value),
        cmocka_unit_test(test_config_file_errors),
        cmocka_unit_test(test_config_file_long_value),
        cmocka_unit_test(test_config_help),
        cmocka_unit_test(test_config_positional),
        cmocka_unit_test(test_config_bad_default_rejected),
        cmocka_unit_test(test_config_free_twice),
    };
    return cmocka_run_group_tests_name("test_config", tests, group_setup, group_teardown);
}
