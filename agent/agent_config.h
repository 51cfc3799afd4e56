/* camrelay-agent configuration: the flag table (docs/cli.md), --services and --secrets-file
 * parsing, and the checks that turn a bad configuration into one clear message (exit 2). */
#ifndef AGT_AGENT_CONFIG_H
#define AGT_AGENT_CONFIG_H

#include <stddef.h>

#include "common/config.h"
#include "common/net.h"

#define AGT_SERIAL_MAX 64      /* identity: 1..63 chars of [A-Za-z0-9._:-] (cr_auth_start_check) */
#define AGT_SERVICE_NAME_MAX 16 /* "rtsp", "http": 1..15 chars of [a-z0-9_-] */
#define AGT_MAX_SERVICES 8
#define AGT_MAX_DISPATCHERS 16
#define AGT_SPEC_MAX 1024      /* longest --services / --dispatcher value accepted */
#define AGT_SECRET_LINE_MAX 512 /* longest line in a secrets file, newline excluded */
#define AGT_SECRETS_FILE_MAX 4096
#define AGT_SIMULATE_MAX 100000

struct agt_service {
    char name[AGT_SERVICE_NAME_MAX];
    char addr[CR_ADDR_STRLEN]; /* "host:port" of the local service */
};

/* Everything the agent is configured with. The first block is filled by cr_config_load from
 * agt_config_opts (strings owned, freed by agt_config_free); the second by agt_config_check. */
struct agt_config {
    char *serial;
    char *oak;      /* secret */
    char *user;     /* secret */
    char *password; /* secret */
    char *secrets_file;
    char *dispatcher;
    char *ca;
    char *services;
    char *state_dir;
    char *control_socket;
    char *sim_clip;
    char *log_level;
    int connect;
    int press;
    int data_plain; /* data connections without TLS (the relay needs allow-plain-data) */
    long simulate;
    long sim_fps;

    struct agt_service svc[AGT_MAX_SERVICES];
    unsigned n_svc;
    char disp[AGT_MAX_DISPATCHERS][CR_ADDR_STRLEN];
    unsigned n_disp;
};

/* The flag table (docs/cli.md, camrelay-agent). */
extern const struct cr_opt agt_config_opts[];

/* Loads defaults, --config FILE and flags into cfg (zeroed by the caller), then runs
 * agt_config_check. Prints a clear message to stderr on error. Returns 0, 1 after --help, or
 * -EINVAL (the caller exits 2). Start-up only. */
int agt_config_load(struct agt_config *cfg, int argc, char **argv);

/* Validates a loaded configuration and fills the derived fields: reads --secrets-file (flags
 * win over the file), parses --services and --dispatcher, checks the serial. The --press
 * client mode needs only --control-socket. Returns 0 or -EINVAL with a message in err that
 * never contains a secret. */
int agt_config_check(struct agt_config *cfg, char *err, size_t errlen);

/* Wipes the secrets and frees every string. Safe on a zeroed or half-loaded cfg. */
void agt_config_free(struct agt_config *cfg);

/* Parses "name=host:port[,name=host:port...]" into out[cap]. Names are 1..15 of [a-z0-9_-],
 * unique; addresses pass agt_hostport_check. Returns the count (>= 1) or -EINVAL with a
 * message in err. Pure: no name resolution. */
int agt_services_parse(const char *spec, struct agt_service *out, unsigned cap, char *err,
                       size_t errlen);

/* Parses a comma-separated host:port list into out[cap]. Returns the count (>= 1) or -EINVAL
 * with a message in err. */
int agt_hostport_list_parse(const char *spec, char (*out)[CR_ADDR_STRLEN], unsigned cap,
                            char *err, size_t errlen);

/* Syntax check of "host:port" / "[v6]:port": host of [A-Za-z0-9._-] (or a bracketed v6
 * literal), port 1..65535, whole string shorter than CR_ADDR_STRLEN. Returns 0 or -EINVAL.
 * Used for flags and for addresses received from the network (dispatcher, cache file). */
int agt_hostport_check(const char *s);

/* Checks a serial as the relay will (1..63 of [A-Za-z0-9._:-]). Returns 0 or -EINVAL. */
int agt_serial_check(const char *serial);

/* The secrets found in a --secrets-file: owned copies, NULL when absent. */
struct agt_secrets {
    char *oak;
    char *user;
    char *password;
};

/* Parses secrets-file text (len bytes, need not be NUL-terminated): "key=value" lines with key
 * oak, user or password; blank lines and lines starting with '#' are ignored; the value is
 * taken verbatim (no trimming, CR before LF dropped). Rejects unknown or repeated keys, empty
 * values, NUL bytes and lines longer than AGT_SECRET_LINE_MAX. Keys may be missing (the caller
 * decides). Returns 0 or -EINVAL with a message in err naming the line, never the value. */
int agt_secrets_parse(const char *text, size_t len, struct agt_secrets *out, char *err,
                      size_t errlen);

/* Reads and parses a secrets file (at most AGT_SECRETS_FILE_MAX bytes); warns when it is
 * readable by group or others. Returns 0 or -errno with a message in err. */
int agt_secrets_load(const char *path, struct agt_secrets *out, char *err, size_t errlen);

/* Wipes and frees the values. */
void agt_secrets_free(struct agt_secrets *s);

#endif
