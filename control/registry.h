/* control/registry.h — the SQLite registry: cameras and their ports, relay accounts, state. */
#ifndef CAMRELAY_CONTROL_REGISTRY_H
#define CAMRELAY_CONTROL_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

/*
 * One schema serves both daemons: the relay uses cameras (with their internal endpoint ports)
 * and meta; the dispatcher uses cameras (of all relays), relays and meta.
 *
 * Threads: a registry handle carries its own mutex, so any thread may call any function on a
 * shared handle. Separate handles (threads or processes) on the same file are also safe:
 * SQLite's locking plus a busy timeout serialise their writes. Only open and close must not
 * race with other calls on the same handle.
 *
 * Errors: functions return 0 (or a count >= 0) on success and -errno on failure:
 *   -EINVAL  bad argument: a NULL pointer, a string that is not NUL-terminated in its array,
 *            a name (serial, relay, recorder, meta key) longer than CTL_NAME_MAX - 1 bytes or
 *            not made only of [A-Za-z0-9._:-], or an empty serial/account name/key (relay and
 *            recorder may be "" where the struct says so). Nothing is written.
 *   -ENOTSUP (open) a schema newer than this build's, or an SQLite file that is not ours.
 *   -ENOENT  no such record.
 *   -EBUSY   another connection held the database locked for longer than the busy timeout.
 *   -ENOMEM  out of memory.
 *   -EIO     any other SQLite failure (logged to stderr with context), or a stored row that
 *            does not fit the structs below (a corrupt or foreign database).
 *
 * Secrets: only verifiers are stored, never a password or an OAK. The ticket keys (relay
 * accounts, meta) are key material the daemons need as is: the database file is created
 * mode 0600 and deleted content is overwritten (secure_delete).
 */

#define CTL_NAME_MAX 64       /* incl. NUL: serials, relay/recorder names, meta keys */
#define CTL_MAX_SERVICES 4
#define CTL_SERVICE_MAX 16    /* incl. NUL */
#define CTL_ADDRS_MAX 256     /* incl. NUL: a relay's comma-separated public address list */
#define CTL_META_VALUE_MAX 4096

struct ctl_registry;

/* A salted verifier (SCRAM-SHA-256 style, see common/auth.h): never the secret itself. */
struct ctl_verifier {
    uint8_t salt[16];
    uint32_t iterations; /* PBKDF2 iterations, >= 1 */
    uint8_t stored_key[32];
};

struct ctl_endpoint {
    char service[CTL_SERVICE_MAX]; /* same charset as names, 1..15 bytes */
    uint16_t port;
};

struct ctl_camera {
    char serial[CTL_NAME_MAX];
    struct ctl_verifier verifier;
    char relay[CTL_NAME_MAX];     /* owning relay's name ("" allowed on the relay side) */
    char recorder[CTL_NAME_MAX];  /* attached recording server, "" = not attached */
    int64_t created_unix;         /* 0 on add/upsert = now */
    int64_t last_seen_unix;       /* 0 = never */
    char site_addr[CTL_NAME_MAX]; /* last public address seen, "" = none; names' charset plus [] */
    uint64_t bytes_relayed;
    int synced; /* relay side: the dispatcher acknowledged this record (0 or 1) */
    unsigned n_endpoints;
    struct ctl_endpoint endpoints[CTL_MAX_SERVICES]; /* in the order the services were given */
};

struct ctl_relay_account {
    char name[CTL_NAME_MAX];
    struct ctl_verifier verifier;
    char public_addrs[CTL_ADDRS_MAX]; /* comma-separated host:port list, "" until it connects */
    uint8_t ticket_key[32];
    int has_ticket_key;
};

/*
 * Opens (creating if missing, mode 0600) the registry file at path; the directory must exist.
 * Creates the schema on first open; refuses a database whose schema is newer than this
 * build's, or that holds someone else's tables (-ENOTSUP), and a file that is not SQLite
 * (-EIO). On success *out is an owned handle for ctl_registry_close(); on failure *out = NULL.
 */
int ctl_registry_open(const char *path, struct ctl_registry **out);
/* Closes and frees the handle (consumes it; NULL is a no-op). No call may be in flight. */
void ctl_registry_close(struct ctl_registry *reg);

/*
 * Relay side: adds a camera and allocates one internal port per service, atomically: the lowest
 * ports in [port_lo, port_hi] not used by any camera. Ports are stored, so they are stable
 * across restarts. Every field of *cam is stored except the endpoints; n_services may be 0.
 * Services must be distinct names (1..15 bytes); port_lo must be >= 1 and <= port_hi.
 * Returns 0, -EEXIST if the serial exists, -ENOSPC if the range has fewer free ports than
 * services, -EINVAL on bad input. On success cam->endpoints/n_endpoints are filled in (and
 * cam->created_unix if it was 0); on failure *cam is unchanged. Borrows everything.
 */
int ctl_registry_camera_add(struct ctl_registry *reg, struct ctl_camera *cam,
                            const char *const *services, unsigned n_services,
                            uint16_t port_lo, uint16_t port_hi);
/*
 * Dispatcher side: inserts a camera, or replaces an existing one's verifier and owning relay
 * (its other fields and ports are kept). On insert every field of *cam but the endpoints is
 * stored. Returns 0 or -errno.
 */
int ctl_registry_camera_upsert(struct ctl_registry *reg, const struct ctl_camera *cam);
/* Copies the camera and its endpoints into *out. Returns 0, -ENOENT, or -errno. */
int ctl_registry_camera_get(struct ctl_registry *reg, const char *serial, struct ctl_camera *out);
/* Removes the camera and frees its ports. Returns 0, -ENOENT, or -errno. */
int ctl_registry_camera_remove(struct ctl_registry *reg, const char *serial);
/*
 * Calls fn for each camera ordered by serial (bytewise); relay == NULL: all cameras, else only
 * that relay's. Stops early and returns fn's value if it is non-zero; else returns 0 or -errno.
 * fn runs without the registry's lock held, so it may call any registry function. The walk
 * reads in pages: a camera added or removed during it may or may not be seen; each record
 * passed to fn is consistent. The record is only valid during the call.
 */
int ctl_registry_camera_foreach(struct ctl_registry *reg, const char *relay,
                                int (*fn)(const struct ctl_camera *, void *), void *ctx);
/* Attaches the camera to a recording server; recorder NULL or "" detaches. 0, -ENOENT, -errno. */
int ctl_registry_camera_set_recorder(struct ctl_registry *reg, const char *serial,
                                     const char *recorder);
/* Relay side: marks the record acknowledged (non-zero) or not by the dispatcher. */
int ctl_registry_camera_set_synced(struct ctl_registry *reg, const char *serial, int synced);
/*
 * Records the tunnel's last contact: last_seen, site address (NULL keeps the stored one),
 * running byte total. Returns 0, -ENOENT, or -errno.
 */
int ctl_registry_camera_seen(struct ctl_registry *reg, const char *serial, int64_t unix_time,
                             const char *site_addr, uint64_t bytes_relayed);
/*
 * Dispatcher full sync: removes (in one transaction) the relay's cameras whose serial is not
 * in keep[0..n_keep). keep may hold serials of other relays or unknown ones; they are ignored.
 * Returns the number removed, or -errno (-EINVAL if any keep[] entry is not a valid serial).
 */
int ctl_registry_camera_prune_relay(struct ctl_registry *reg, const char *relay,
                                    const char *const *keep, unsigned n_keep);

/*
 * Inserts a relay account or replaces its verifier. public_addrs is replaced only if non-empty
 * and ticket_key only if has_ticket_key: otherwise the stored ones are kept.
 */
int ctl_registry_relay_put(struct ctl_registry *reg, const struct ctl_relay_account *acct);
/* Copies the account into *out. Returns 0, -ENOENT, or -errno. */
int ctl_registry_relay_get(struct ctl_registry *reg, const char *name,
                           struct ctl_relay_account *out);
/*
 * Records where a connected relay is reachable and its ticket key. public_addrs is a
 * comma-separated host:port list (names' charset plus "[],", < CTL_ADDRS_MAX bytes, "" clears
 * it, NULL keeps it); ticket_key NULL keeps the stored key. Returns 0, -ENOENT, or -errno.
 */
int ctl_registry_relay_set_addrs(struct ctl_registry *reg, const char *name,
                                 const char *public_addrs, const uint8_t ticket_key[32]);
/* As camera_foreach, for relay accounts ordered by name. */
int ctl_registry_relay_foreach(struct ctl_registry *reg,
                               int (*fn)(const struct ctl_relay_account *, void *), void *ctx);

/*
 * Small key/value store for daemon state (e.g. the relay's ticket key). Keys follow the name
 * rules; values are 0..CTL_META_VALUE_MAX bytes.
 * meta_get copies the value into buf and sets *len (if len is non-NULL) to its size; if cap is
 * smaller it copies nothing, still sets *len and returns -ERANGE. Returns 0, -ENOENT, -errno.
 */
int ctl_registry_meta_get(struct ctl_registry *reg, const char *key, void *buf, size_t cap,
                          size_t *len);
/* Inserts or replaces a value (-EINVAL if longer than CTL_META_VALUE_MAX). Borrows buf. */
int ctl_registry_meta_set(struct ctl_registry *reg, const char *key, const void *buf, size_t len);

#endif /* CAMRELAY_CONTROL_REGISTRY_H */
