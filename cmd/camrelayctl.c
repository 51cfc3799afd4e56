/* camrelayctl: the admin CLI — PKI, dispatcher accounts, camera registration and status. */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/frame.h"
#include "common/util.h"
#include "control/ctl_client.h"
#include "control/ctl_print.h"
#include "control/pki.h"
#include "control/sizing.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define SECRET_MAX 512

enum cmd {
    CMD_NONE = 0,
    CMD_PKI_INIT,
    CMD_ACCOUNT_ADD,
    CMD_RELAY_LIST,
    CMD_CAMERA_REGISTER,
    CMD_CAMERA_LIST,
    CMD_CAMERA_ATTACH,
    CMD_CAMERA_REMOVE,
    CMD_RELOAD,
};
#define BIT(c) (1u << (c))
#define ALL_CMDS 0xffffffffu

struct args {
    char *relay_socket, *relay, *ca, *token_file, *dispatcher_socket;
    int json, force;
    char *dir, *dispatcher_host, *relay_host;
    char *password_file, *oak, *user, *password, *recorder;
    unsigned seen; /* bit i: table entry i was given */
    const char *pos[8];
    int n_pos;
};

/* The command line as a table: flag, whether it takes a value, where it goes, which commands
 * accept it. */
struct flag {
    const char *name;
    int has_value;
    size_t offset; /* char * or int (has_value 0) in struct args */
    unsigned cmds;
};

#define F(n, v, field, cmds) {n, v, offsetof(struct args, field), cmds}
static const struct flag flags[] = {
    F("relay-socket", 1, relay_socket, ALL_CMDS),
    F("relay", 1, relay, ALL_CMDS),
    F("ca", 1, ca, ALL_CMDS),
    F("token-file", 1, token_file, ALL_CMDS),
    F("dispatcher-socket", 1, dispatcher_socket, ALL_CMDS),
    F("json", 0, json, ALL_CMDS),
    F("dir", 1, dir, BIT(CMD_PKI_INIT)),
    F("dispatcher-host", 1, dispatcher_host, BIT(CMD_PKI_INIT)),
    F("relay-host", 1, relay_host, BIT(CMD_PKI_INIT)),
    F("force", 0, force, BIT(CMD_PKI_INIT)),
    F("password-file", 1, password_file, BIT(CMD_ACCOUNT_ADD) | BIT(CMD_CAMERA_REGISTER)),
    F("oak", 1, oak, BIT(CMD_CAMERA_REGISTER)),
    F("user", 1, user, BIT(CMD_CAMERA_REGISTER)),
    F("password", 1, password, BIT(CMD_CAMERA_REGISTER)),
    F("recorder", 1, recorder, BIT(CMD_CAMERA_ATTACH)),
    {0},
};
enum { FLAG_RELAY_SOCKET = 0, FLAG_RELAY = 1, FLAG_DISPATCHER_SOCKET = 4 };

static const char usage_text[] =
    "usage: camrelayctl [--relay-socket PATH | --relay ADDR --ca FILE --token-file FILE]\n"
    "                   [--dispatcher-socket PATH] [--json] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  pki init --dir DIR --dispatcher-host H[,H] --relay-host H[,H] [--force]\n"
    "  account add NAME --password-file FILE          (dispatcher)\n"
    "  relay list                                     (dispatcher)\n"
    "  camera register SERIAL --oak K --user U (--password P | --password-file F)   (relay)\n"
    "  camera list [SERIAL]                           (relay; the dispatcher's view with\n"
    "                                                 --dispatcher-socket)\n"
    "  camera attach SERIAL --recorder NAME           (relay; --recorder \"\" detaches)\n"
    "  camera remove SERIAL                           (relay)\n"
    "  reload                                         (relay) re-read its configuration, as\n"
    "                                                 SIGHUP: log level, certificate, token...\n"
    "  size ...                                       bandwidth and appliance sizing\n"
    "                                                 (camrelayctl size --help)\n"
    "\n"
    "defaults: --relay-socket /run/camrelay/relay.sock, --dispatcher-socket "
    "/run/camrelay/dispatch.sock\n"
    "exit status: 0 ok, 1 refused (the message says why), 2 usage or unreachable daemon\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "camrelayctl: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see camrelayctl --help)\n");
    return EXIT_USAGE;
}

static const struct flag *find_flag(const char *name, size_t len, int *index)
{
    for (int i = 0; flags[i].name; i++) {
        if (strlen(flags[i].name) == len && strncmp(flags[i].name, name, len) == 0) {
            *index = i;
            return &flags[i];
        }
    }
    return NULL;
}

/* Fills a from argv; flags may come before or after the command words. Returns 0, 1 for
 * --help, or EXIT_USAGE (message printed). */
static int parse_args(int argc, char **argv, struct args *a)
{
    int only_positional = 0;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!only_positional && (strcmp(s, "--help") == 0 || strcmp(s, "-h") == 0))
            return 1;
        if (!only_positional && strcmp(s, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (only_positional || strncmp(s, "--", 2) != 0) {
            if (a->n_pos == (int)CR_ARRAY_SIZE(a->pos))
                return usage_error("too many arguments");
            a->pos[a->n_pos++] = s;
            continue;
        }
        const char *name = s + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        int idx;
        const struct flag *f = find_flag(name, len, &idx);
        if (!f)
            return usage_error("unknown option \"%s\"", s);
        char *field = (char *)a + f->offset;
        if (!f->has_value) {
            if (eq)
                return usage_error("--%s takes no value", f->name);
            *(int *)(void *)field = 1;
        } else {
            const char *v = eq ? eq + 1 : NULL;
            if (!v) {
                if (i + 1 >= argc)
                    return usage_error("--%s needs a value", f->name);
                v = argv[++i];
            }
            *(char **)(void *)field = (char *)v;
        }
        a->seen |= 1u << idx;
    }
    return 0;
}

static enum cmd pick_command(const struct args *a, int *first_arg)
{
    static const struct {
        const char *w1, *w2;
        enum cmd c;
    } words[] = {
        {"pki", "init", CMD_PKI_INIT},
        {"account", "add", CMD_ACCOUNT_ADD},
        {"relay", "list", CMD_RELAY_LIST},
        {"camera", "register", CMD_CAMERA_REGISTER},
        {"camera", "list", CMD_CAMERA_LIST},
        {"camera", "attach", CMD_CAMERA_ATTACH},
        {"camera", "remove", CMD_CAMERA_REMOVE},
    };
    *first_arg = 2;
    if (a->n_pos >= 1 && strcmp(a->pos[0], "reload") == 0) {
        *first_arg = 1;
        return CMD_RELOAD;
    }
    if (a->n_pos < 2)
        return CMD_NONE;
    for (size_t i = 0; i < CR_ARRAY_SIZE(words); i++)
        if (strcmp(a->pos[0], words[i].w1) == 0 && strcmp(a->pos[1], words[i].w2) == 0)
            return words[i].c;
    return CMD_NONE;
}

/* ---- talking to a daemon ---- */

struct target {
    const char *what;  /* "relay" or "dispatcher" */
    const char *where; /* socket path or address */
};

/* Connects to the relay (Unix socket or TCP+TLS) or the dispatcher. Returns 0 or EXIT_USAGE
 * with the message printed. */
static int connect_daemon(const struct args *a, int dispatcher, struct ctl_client *c,
                          struct target *t)
{
    char err[512];
    int rc;

    if (dispatcher) {
        t->what = "dispatcher";
        t->where = a->dispatcher_socket;
    } else if (a->relay) {
        char token[SECRET_MAX];
        t->what = "relay";
        t->where = a->relay;
        if (!a->ca || !a->token_file)
            return usage_error("--relay needs --ca and --token-file");
        /* An empty token is sent as such: the relay refuses it, and says so. */
        rc = cr_read_small_file(a->token_file, token, sizeof(token));
        if (rc < 0) {
            fprintf(stderr, "camrelayctl: cannot read the token file %s: %s\n", a->token_file,
                    rc == -EFBIG ? "file too large" : strerror(-rc));
            return EXIT_USAGE;
        }
        rc = ctl_client_connect_tls(c, a->relay, a->ca, token, err, sizeof(err));
        cr_wipe(token, sizeof(token));
        if (rc < 0) {
            fprintf(stderr, "camrelayctl: cannot reach the relay at %s: %s\n", a->relay, err);
            return EXIT_USAGE;
        }
        return 0;
    } else {
        t->what = "relay";
        t->where = a->relay_socket;
    }
    rc = ctl_client_connect_unix(c, t->where);
    if (rc < 0) {
        fprintf(stderr, "camrelayctl: cannot reach the %s at %s: %s (is %s running?)\n", t->what,
                t->where, strerror(-rc), dispatcher ? "camrelay-dispatch" : "camrelayd");
        return EXIT_USAGE;
    }
    return 0;
}

/* Sends req and prints a refusal. Returns 0 with an owned *reply, or the exit status. */
/* What a successful reply says, or fallback when it says nothing. */
static const char *said(const Camrelay__Frame *reply, const char *fallback)
{
    return *reply->mgmt_reply->message ? reply->mgmt_reply->message : fallback;
}

static int call(const struct args *a, int dispatcher, Camrelay__MgmtRequest *req,
                Camrelay__Frame **reply)
{
    struct ctl_client c;
    struct target t;
    int rc = connect_daemon(a, dispatcher, &c, &t);
    if (rc)
        return rc;
    rc = ctl_client_call(&c, req, reply);
    ctl_client_close(&c);
    if (rc == -ECONNRESET) {
        fprintf(stderr, "camrelayctl: the %s at %s closed the connection without answering "
                        "(see its log)\n", t.what, t.where);
        return EXIT_USAGE;
    }
    if (rc < 0) {
        fprintf(stderr, "camrelayctl: no answer from the %s at %s: %s\n", t.what, t.where,
                rc == -EPROTO ? "unexpected reply" : strerror(-rc));
        return EXIT_USAGE;
    }
    const Camrelay__MgmtReply *r = (*reply)->mgmt_reply;
    if (r->status != CAMRELAY__STATUS__OK) {
        fprintf(stderr, "camrelayctl: %s: %s\n", ctl_status_words(r->status),
                r->message && *r->message ? r->message : cr_status_name(r->status));
        cr_frame_free(*reply);
        *reply = NULL;
        return EXIT_REFUSED;
    }
    return 0;
}

static int print_cameras(const struct args *a, const Camrelay__MgmtReply *r, int with_relay)
{
    if (a->json)
        return ctl_print_cameras_json(stdout, r) < 0 ? EXIT_REFUSED : 0;
    ctl_print_cameras_table(stdout, r, with_relay);
    return 0;
}

/* ---- commands ---- */

static int cmd_pki_init(const struct args *a)
{
    struct ctl_pki_opts o = {a->dir, a->dispatcher_host, a->relay_host, a->force};
    char err[512];

    if (!a->dir || !a->dispatcher_host || !a->relay_host)
        return usage_error("pki init needs --dir, --dispatcher-host and --relay-host");
    int rc = ctl_pki_init(&o, err, sizeof(err));
    if (rc == -EINVAL)
        return usage_error("%s", err);
    if (rc < 0) {
        fprintf(stderr, "camrelayctl: %s\n", err);
        return EXIT_REFUSED;
    }
    printf("wrote %s/ca.pem, ca.key (CA, %d days), dispatch.pem, dispatch.key, relay.pem, "
           "relay.key (%d days)\n"
           "keep ca.key offline; give ca.pem to agents, relays and camrelayctl --ca\n",
           a->dir, CTL_PKI_CA_DAYS, CTL_PKI_SERVER_DAYS);
    return 0;
}

static int cmd_account_add(const struct args *a, const char *name)
{
    char password[SECRET_MAX];
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__AccountAdd add = CAMRELAY__ACCOUNT_ADD__INIT;
    Camrelay__Frame *reply = NULL;

    if (!a->password_file)
        return usage_error("account add needs --password-file");
    int rc = cr_read_small_file(a->password_file, password, sizeof(password));
    if (rc <= 0) {
        fprintf(stderr, "camrelayctl: cannot read the password file %s: %s\n", a->password_file,
                rc == 0 ? "file is empty" : rc == -EFBIG ? "file too large" : strerror(-rc));
        return EXIT_USAGE;
    }
    add.name = (char *)name;
    add.password = password;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD;
    req.account_add = &add;
    rc = call(a, 1, &req, &reply);
    cr_wipe(password, sizeof(password));
    if (rc)
        return rc;
    printf("%s\n", said(reply, "relay account added"));
    cr_frame_free(reply);
    return 0;
}

static int cmd_relay_list(const struct args *a)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__Frame *reply = NULL;

    req.op_case = CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST;
    req.relay_list = &sel;
    int rc = call(a, 1, &req, &reply);
    if (rc)
        return rc;
    if (a->json)
        rc = ctl_print_relays_json(stdout, reply->mgmt_reply) < 0 ? EXIT_REFUSED : 0;
    else
        ctl_print_relays_table(stdout, reply->mgmt_reply);
    cr_frame_free(reply);
    return rc;
}

static int cmd_camera_register(const struct args *a, const char *serial)
{
    char password[SECRET_MAX];
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraRegister reg = CAMRELAY__CAMERA_REGISTER__INIT;
    Camrelay__Frame *reply = NULL;
    int rc;

    if (!a->oak || !a->user)
        return usage_error("camera register needs --oak and --user");
    if (!!a->password == !!a->password_file)
        return usage_error("camera register needs exactly one of --password and --password-file");
    if (a->password_file) {
        rc = cr_read_small_file(a->password_file, password, sizeof(password));
        if (rc <= 0) {
            fprintf(stderr, "camrelayctl: cannot read the password file %s: %s\n",
                    a->password_file,
                    rc == 0 ? "file is empty" : rc == -EFBIG ? "file too large" : strerror(-rc));
            return EXIT_USAGE;
        }
    } else if (cr_strlcpy(password, a->password, sizeof(password)) < 0) {
        return usage_error("--password is too long");
    }
    reg.serial = (char *)serial;
    reg.oak = a->oak;
    reg.user = a->user;
    reg.password = password;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER;
    req.camera_register = &reg;
    rc = call(a, 0, &req, &reply);
    cr_wipe(password, sizeof(password));
    if (rc)
        return rc;
    const Camrelay__MgmtReply *r = reply->mgmt_reply;
    if (a->json) {
        rc = print_cameras(a, r, 0);
    } else {
        printf("camera %s registered: %s\n", serial, *r->message ? r->message : "ok");
        for (size_t i = 0; i < r->n_cameras; i++) {
            printf("state: %s\n", r->cameras[i]->state);
            for (size_t j = 0; j < r->cameras[i]->n_endpoints; j++)
                printf("endpoint %s: %s\n", r->cameras[i]->endpoints[j]->service,
                       r->cameras[i]->endpoints[j]->url);
        }
    }
    cr_frame_free(reply);
    return rc;
}

static int cmd_camera_list(const struct args *a, const char *serial, int dispatcher)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__Frame *reply = NULL;

    sel.serial = (char *)(serial ? serial : "");
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST;
    req.camera_list = &sel;
    int rc = call(a, dispatcher, &req, &reply);
    if (rc)
        return rc;
    rc = print_cameras(a, reply->mgmt_reply, dispatcher);
    if (*reply->mgmt_reply->message) /* e.g. a list trimmed to fit one reply */
        fprintf(stderr, "camrelayctl: %s\n", reply->mgmt_reply->message);
    cr_frame_free(reply);
    return rc;
}

static int cmd_camera_attach(const struct args *a, const char *serial)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraAttach att = CAMRELAY__CAMERA_ATTACH__INIT;
    Camrelay__Frame *reply = NULL;

    if (!a->recorder)
        return usage_error("camera attach needs --recorder NAME");
    att.serial = (char *)serial;
    att.recorder = a->recorder;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH;
    req.camera_attach = &att;
    int rc = call(a, 0, &req, &reply);
    if (rc)
        return rc;
    if (a->json)
        rc = print_cameras(a, reply->mgmt_reply, 0);
    else
        printf("camera %s: %s\n", serial, said(reply, "attached"));
    cr_frame_free(reply);
    return rc;
}

static int cmd_camera_remove(const struct args *a, const char *serial)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__Frame *reply = NULL;

    sel.serial = (char *)serial;
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE;
    req.camera_remove = &sel;
    int rc = call(a, 0, &req, &reply);
    if (rc)
        return rc;
    printf("%s\n", said(reply, "removed"));
    cr_frame_free(reply);
    return 0;
}

static int cmd_reload(const struct args *a)
{
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__Frame *reply = NULL;

    req.op_case = CAMRELAY__MGMT_REQUEST__OP_RELOAD;
    req.reload = &sel;
    int rc = call(a, 0, &req, &reply);
    if (rc)
        return rc;
    printf("reloaded: %s\n", said(reply, "ok"));
    cr_frame_free(reply);
    return 0;
}

/* Index of a `size` command word that only global flags precede, or 0. */
static int size_command_at(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "size") == 0)
            return i;
        if (strncmp(argv[i], "--", 2) != 0)
            return 0;
        int idx;
        const char *name = argv[i] + 2, *eq = strchr(name, '=');
        const struct flag *f = find_flag(name, eq ? (size_t)(eq - name) : strlen(name), &idx);
        if (!f)
            return 0;
        if (f->has_value && !eq)
            i++;
    }
    return 0;
}

/* size --live: every camera's measured bitrate and public address, from the relay. */
static int live_fetch(void *ctx, struct ctl_size_measured **out, size_t *n, FILE *err)
{
    const struct args *a = ctx;
    Camrelay__MgmtRequest req = CAMRELAY__MGMT_REQUEST__INIT;
    Camrelay__CameraSelect sel = CAMRELAY__CAMERA_SELECT__INIT;
    Camrelay__Frame *reply = NULL;

    sel.serial = "";
    req.op_case = CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST;
    req.camera_list = &sel;
    if (call(a, 0, &req, &reply))
        return -1; /* call() said why */
    const Camrelay__MgmtReply *r = reply->mgmt_reply;
    struct ctl_size_measured *m = cr_xcalloc(r->n_cameras, sizeof(*m));
    for (size_t i = 0; i < r->n_cameras; i++) {
        const Camrelay__CameraInfo *ci = r->cameras[i];
        snprintf(m[i].camera, sizeof(m[i].camera), "%s", ci->serial);
        /* The site is the camera's public IP: strip the port (and IPv6 brackets). */
        const char *addr = ci->site_addr ? ci->site_addr : "";
        const char *start = addr[0] == '[' ? addr + 1 : addr;
        const char *end = addr[0] == '[' ? strchr(start, ']') : strrchr(start, ':');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        if (len >= sizeof(m[i].site))
            len = sizeof(m[i].site) - 1;
        memcpy(m[i].site, start, len);
        m[i].kbps = ci->bitrate_bps / 1000.0;
    }
    if (r->message && *r->message)
        fprintf(err, "camrelayctl: %s\n", r->message);
    *n = r->n_cameras;
    *out = m;
    cr_frame_free(reply);
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    int first, rc;

    memset(&a, 0, sizeof(a));
    signal(SIGPIPE, SIG_IGN);
    /* `size` has its own flags: the global flags before it say which relay --live asks. */
    int k = size_command_at(argc, argv);
    if (k > 0) {
        rc = parse_args(k, argv, &a);
        if (rc)
            return rc == 1 ? 0 : rc;
        if (!a.relay_socket)
            a.relay_socket = "/run/camrelay/relay.sock";
        if (a.json) { /* a global --json means size's --json */
            argv[k - 1] = "size";
            argv[k] = "--json";
            k--;
        }
        struct ctl_size_live_source src = {.fetch = live_fetch, .ctx = &a};
        return ctl_size_main(argc - k, argv + k, &src);
    }
    rc = parse_args(argc, argv, &a);
    if (rc == 1) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc)
        return rc;
    if (!a.relay_socket)
        a.relay_socket = "/run/camrelay/relay.sock";
    if (!a.dispatcher_socket)
        a.dispatcher_socket = "/run/camrelay/dispatch.sock";

    enum cmd c = pick_command(&a, &first);
    if (c == CMD_NONE) {
        if (a.n_pos == 0) {
            fputs(usage_text, stderr);
            return EXIT_USAGE;
        }
        return usage_error("unknown command \"%s%s%s\"", a.pos[0], a.n_pos > 1 ? " " : "",
                           a.n_pos > 1 ? a.pos[1] : "");
    }
    for (int i = 0; flags[i].name; i++)
        if ((a.seen & (1u << i)) && !(flags[i].cmds & BIT(c)))
            return usage_error("--%s does not apply to \"%s%s%s\"", flags[i].name, a.pos[0],
                               c == CMD_RELOAD ? "" : " ", c == CMD_RELOAD ? "" : a.pos[1]);
    if ((a.seen & (1u << FLAG_RELAY)) && (a.seen & (1u << FLAG_RELAY_SOCKET)))
        return usage_error("give either --relay-socket or --relay, not both");

    int n_args = a.n_pos - first;
    const char *arg = n_args > 0 ? a.pos[first] : NULL;
    switch (c) {
    case CMD_RELOAD:
        if (n_args != 0)
            return usage_error("reload takes no argument");
        return cmd_reload(&a);
    case CMD_PKI_INIT:
    case CMD_RELAY_LIST:
        if (n_args != 0)
            return usage_error("\"%s %s\" takes no argument", a.pos[0], a.pos[1]);
        return c == CMD_PKI_INIT ? cmd_pki_init(&a) : cmd_relay_list(&a);
    case CMD_CAMERA_LIST: {
        if (n_args > 1)
            return usage_error("camera list takes at most one SERIAL");
        /* The dispatcher's view when its socket is named and the relay's is not. */
        int to_dispatcher = (a.seen & (1u << FLAG_DISPATCHER_SOCKET)) &&
                            !(a.seen & ((1u << FLAG_RELAY) | (1u << FLAG_RELAY_SOCKET)));
        return cmd_camera_list(&a, arg, to_dispatcher);
    }
    default:
        break;
    }
    if (n_args != 1)
        return usage_error("\"%s %s\" needs exactly one %s", a.pos[0], a.pos[1],
                           c == CMD_ACCOUNT_ADD ? "NAME" : "SERIAL");
    switch (c) {
    case CMD_ACCOUNT_ADD: return cmd_account_add(&a, arg);
    case CMD_CAMERA_REGISTER: return cmd_camera_register(&a, arg);
    case CMD_CAMERA_ATTACH: return cmd_camera_attach(&a, arg);
    case CMD_CAMERA_REMOVE: return cmd_camera_remove(&a, arg);
    default: return EXIT_USAGE;
    }
}
