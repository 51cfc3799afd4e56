/* control/registry.c — the SQLite registry shared by the relay daemon and the dispatcher. */
#include "control/registry.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define SCHEMA_VERSION 1
/* Long enough to ride out another process's checkpoint, short enough that a stuck writer
 * shows up as -EBUSY in the logs rather than a hung daemon. */
#define BUSY_TIMEOUT_MS 5000
/* Rows fetched per lock hold in the foreach walks: bounds memory and how long other threads
 * wait, and lets the callback run unlocked. */
#define FOREACH_BATCH 32

#define STR_(x) #x
#define STR(x) STR_(x)

/*
 * STRICT tables so a column never holds a value of the wrong type; CHECKs mirror the C
 * bounds so a row that made it in always fits the structs. bytes_relayed holds the uint64 as
 * its int64 bit pattern. cameras.relay has no foreign key to relays: on the relay side it
 * names the relay itself, which has no account row there.
 */
static const char schema_sql[] =
    "CREATE TABLE relays ("
    " name TEXT PRIMARY KEY NOT NULL CHECK (length(name) BETWEEN 1 AND 63),"
    " salt BLOB NOT NULL CHECK (length(salt) = 16),"
    " iterations INTEGER NOT NULL CHECK (iterations BETWEEN 1 AND 4294967295),"
    " stored_key BLOB NOT NULL CHECK (length(stored_key) = 32),"
    " public_addrs TEXT NOT NULL DEFAULT '' CHECK (length(public_addrs) < " STR(CTL_ADDRS_MAX) "),"
    " ticket_key BLOB CHECK (ticket_key IS NULL OR length(ticket_key) = 32)"
    ") STRICT;"
    "CREATE TABLE cameras ("
    " serial TEXT PRIMARY KEY NOT NULL CHECK (length(serial) BETWEEN 1 AND 63),"
    " salt BLOB NOT NULL CHECK (length(salt) = 16),"
    " iterations INTEGER NOT NULL CHECK (iterations BETWEEN 1 AND 4294967295),"
    " stored_key BLOB NOT NULL CHECK (length(stored_key) = 32),"
    " relay TEXT NOT NULL DEFAULT '' CHECK (length(relay) < 64),"
    " recorder TEXT NOT NULL DEFAULT '' CHECK (length(recorder) < 64),"
    " created_unix INTEGER NOT NULL,"
    " last_seen_unix INTEGER NOT NULL DEFAULT 0,"
    " site_addr TEXT NOT NULL DEFAULT '' CHECK (length(site_addr) < 64),"
    " bytes_relayed INTEGER NOT NULL DEFAULT 0,"
    " synced INTEGER NOT NULL DEFAULT 0 CHECK (synced IN (0, 1))"
    ") STRICT;"
    "CREATE INDEX cameras_by_relay ON cameras (relay, serial);"
    "CREATE TABLE endpoints ("
    " serial TEXT NOT NULL REFERENCES cameras (serial) ON DELETE CASCADE,"
    " idx INTEGER NOT NULL CHECK (idx >= 0 AND idx < " STR(CTL_MAX_SERVICES) "),"
    " service TEXT NOT NULL CHECK (length(service) BETWEEN 1 AND 15),"
    " port INTEGER NOT NULL UNIQUE CHECK (port BETWEEN 1 AND 65535),"
    " PRIMARY KEY (serial, idx),"
    " UNIQUE (serial, service)"
    ") STRICT;"
    "CREATE TABLE meta ("
    " key TEXT PRIMARY KEY NOT NULL CHECK (length(key) BETWEEN 1 AND 63),"
    " value BLOB NOT NULL CHECK (length(value) <= " STR(CTL_META_VALUE_MAX) ")"
    ") STRICT;"
    "PRAGMA user_version = " STR(SCHEMA_VERSION) ";";

/* Per-connection scratch table for prune_relay's keep list: SQL cannot bind an array. */
static const char temp_sql[] = "CREATE TEMP TABLE prune_keep (serial TEXT PRIMARY KEY NOT NULL);";

enum stmt_id {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_CAM_INSERT,
    S_CAM_UPSERT,
    S_CAM_GET,
    S_CAM_DELETE,
    S_CAM_PAGE_ALL,
    S_CAM_PAGE_RELAY,
    S_CAM_SET_RECORDER,
    S_CAM_SET_SYNCED,
    S_CAM_SEEN,
    S_EP_USED_PORTS,
    S_EP_INSERT,
    S_EP_GET,
    S_KEEP_CLEAR,
    S_KEEP_INSERT,
    S_CAM_PRUNE,
    S_RELAY_PUT,
    S_RELAY_GET,
    S_RELAY_PAGE,
    S_RELAY_SET_ADDRS,
    S_META_GET,
    S_META_SET,
    S_COUNT
};

/* Column order shared by every camera SELECT and by bind_camera(). */
#define CAM_COLS                                                                                   \
    "serial, salt, iterations, stored_key, relay, recorder, created_unix, last_seen_unix,"         \
    " site_addr, bytes_relayed, synced"
#define CAM_VALUES "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11"
#define RELAY_COLS "name, salt, iterations, stored_key, public_addrs, ticket_key"

/* Every statement the registry runs: fixed text, inputs only ever as bound parameters. */
static const char *const stmt_sql[S_COUNT] = {
    /* IMMEDIATE takes the write lock up front (waiting out busy_timeout), so a transaction
     * that reads then writes never fails half-way on a lock upgrade. */
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_CAM_INSERT] = "INSERT INTO cameras (" CAM_COLS ") VALUES (" CAM_VALUES ")"
                     " ON CONFLICT (serial) DO NOTHING",
    [S_CAM_UPSERT] = "INSERT INTO cameras (" CAM_COLS ") VALUES (" CAM_VALUES ")"
                     " ON CONFLICT (serial) DO UPDATE SET salt = excluded.salt,"
                     " iterations = excluded.iterations, stored_key = excluded.stored_key,"
                     " relay = excluded.relay",
    [S_CAM_GET] = "SELECT " CAM_COLS " FROM cameras WHERE serial = ?1",
    [S_CAM_DELETE] = "DELETE FROM cameras WHERE serial = ?1",
    [S_CAM_PAGE_ALL] = "SELECT " CAM_COLS " FROM cameras WHERE serial > ?1"
                       " ORDER BY serial LIMIT ?2",
    [S_CAM_PAGE_RELAY] = "SELECT " CAM_COLS " FROM cameras WHERE relay = ?1 AND serial > ?2"
                         " ORDER BY serial LIMIT ?3",
    [S_CAM_SET_RECORDER] = "UPDATE cameras SET recorder = ?2 WHERE serial = ?1",
    [S_CAM_SET_SYNCED] = "UPDATE cameras SET synced = ?2 WHERE serial = ?1",
    [S_CAM_SEEN] = "UPDATE cameras SET last_seen_unix = ?2, site_addr = coalesce(?3, site_addr),"
                   " bytes_relayed = ?4 WHERE serial = ?1",
    [S_EP_USED_PORTS] = "SELECT port FROM endpoints WHERE port BETWEEN ?1 AND ?2 ORDER BY port",
    [S_EP_INSERT] = "INSERT INTO endpoints (serial, idx, service, port) VALUES (?1, ?2, ?3, ?4)",
    [S_EP_GET] = "SELECT service, port FROM endpoints WHERE serial = ?1 ORDER BY idx",
    [S_KEEP_CLEAR] = "DELETE FROM temp.prune_keep",
    [S_KEEP_INSERT] = "INSERT OR IGNORE INTO temp.prune_keep (serial) VALUES (?1)",
    [S_CAM_PRUNE] = "DELETE FROM cameras WHERE relay = ?1"
                    " AND serial NOT IN (SELECT serial FROM temp.prune_keep)",
    [S_RELAY_PUT] = "INSERT INTO relays (" RELAY_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                    " ON CONFLICT (name) DO UPDATE SET salt = excluded.salt,"
                    " iterations = excluded.iterations, stored_key = excluded.stored_key,"
                    " public_addrs = CASE WHEN excluded.public_addrs <> ''"
                    " THEN excluded.public_addrs ELSE relays.public_addrs END,"
                    " ticket_key = coalesce(excluded.ticket_key, relays.ticket_key)",
    [S_RELAY_GET] = "SELECT " RELAY_COLS " FROM relays WHERE name = ?1",
    [S_RELAY_PAGE] = "SELECT " RELAY_COLS " FROM relays WHERE name > ?1 ORDER BY name LIMIT ?2",
    [S_RELAY_SET_ADDRS] = "UPDATE relays SET public_addrs = coalesce(?2, public_addrs),"
                          " ticket_key = coalesce(?3, ticket_key) WHERE name = ?1",
    [S_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [S_META_SET] = "INSERT INTO meta (key, value) VALUES (?1, ?2)"
                   " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
};

/*
 * One SQLite connection plus the statements prepared on it. lock serialises every use of db
 * and stmt[] (the connection is opened NOMUTEX: this lock is the only one), and keeps a
 * multi-statement transaction from interleaving with another thread's.
 */
struct ctl_registry {
    pthread_mutex_t lock;
    sqlite3 *db;
    sqlite3_stmt *stmt[S_COUNT];
};

/* ---- errors ---- */

static int sqlite_to_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    default:
        return -EIO;
    }
}

/* Logs a SQLite failure with what was being done; returns the mapped -errno. Call it before
 * any further statement runs, which would replace the connection's error message. Callers
 * only put validated names into what, so nothing hostile reaches the log; SQLite's messages
 * name tables and constraints, never values. */
__attribute__((format(printf, 3, 4))) static int db_fail(sqlite3 *db, int rc, const char *fmt,
                                                         ...)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    char what[192];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    cr_err("registry: %s: %s (SQLite code %d)", what, msg, rc);
    return sqlite_to_errno(rc);
}

/* A stored row that does not fit our structs: someone else's or a damaged database. */
static int corrupt(const char *what, const char *key)
{
    cr_err("registry: %s %s: stored row is malformed", what, key);
    return -EIO;
}

/* ---- input validation: everything from outside passes here before any SQL runs ---- */

static int name_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == ':' || c == '-';
}

/* 1 if s is NUL-terminated within cap bytes and made of name characters (plus extra);
 * empty only if allow_empty. */
static int str_ok(const char *s, size_t cap, int allow_empty, const char *extra)
{
    size_t n;

    if (!s)
        return 0;
    n = strnlen(s, cap);
    if (n == cap || (n == 0 && !allow_empty))
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (!name_char((unsigned char)s[i]) && !(extra && strchr(extra, s[i])))
            return 0;
    }
    return 1;
}

static int name_ok(const char *s)
{
    return str_ok(s, CTL_NAME_MAX, 0, NULL);
}

/* Relay and recorder names may be "" (none). */
static int opt_name_ok(const char *s)
{
    return str_ok(s, CTL_NAME_MAX, 1, NULL);
}

/* Addresses add the brackets of "[v6]:port". */
static int addr_ok(const char *s)
{
    return str_ok(s, CTL_NAME_MAX, 1, "[]");
}

static int addr_list_ok(const char *s)
{
    return str_ok(s, CTL_ADDRS_MAX, 1, "[],");
}

static int verifier_ok(const struct ctl_verifier *v)
{
    /* PBKDF2 needs at least one iteration; a 0 would make a verifier no proof can match. */
    return v->iterations >= 1;
}

static int camera_ok(const struct ctl_camera *cam)
{
    return name_ok(cam->serial) && verifier_ok(&cam->verifier) && opt_name_ok(cam->relay) &&
           opt_name_ok(cam->recorder) && addr_ok(cam->site_addr);
}

/* ---- statement helpers (all called with reg->lock held) ---- */

/* Makes a statement reusable and drops its bindings so no input outlives the call. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows. Returns the SQLite code (SQLITE_OK on success). */
static int step_exec(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int tx_begin(struct ctl_registry *reg, const char *what, const char *key)
{
    sqlite3_stmt *st = reg->stmt[S_BEGIN];
    int rc = step_exec(st);

    stmt_done(st);
    if (rc != SQLITE_OK)
        return db_fail(reg->db, rc, "%s %s: begin", what, key);
    return 0;
}

static void tx_rollback(struct ctl_registry *reg)
{
    sqlite3_stmt *st = reg->stmt[S_ROLLBACK];

    /* SQLite may already have rolled back on its own (e.g. after SQLITE_FULL). */
    if (sqlite3_get_autocommit(reg->db))
        return;
    step_exec(st);
    stmt_done(st);
}

/* Commits; on failure rolls back, so the caller's transaction is over either way. */
static int tx_commit(struct ctl_registry *reg, const char *what, const char *key)
{
    sqlite3_stmt *st = reg->stmt[S_COMMIT];
    int rc = step_exec(st);
    int err = 0;

    stmt_done(st);
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "%s %s: commit", what, key);
        tx_rollback(reg);
    }
    return err;
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* A NULL pointer would bind SQL NULL, not an empty blob. */
static void bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    if (n == 0)
        sqlite3_bind_zeroblob(st, i, 0);
    else
        sqlite3_bind_blob(st, i, p, (int)n, SQLITE_TRANSIENT);
}

static void bind_camera(sqlite3_stmt *st, const struct ctl_camera *cam, int64_t created)
{
    bind_text(st, 1, cam->serial);
    bind_blob(st, 2, cam->verifier.salt, sizeof(cam->verifier.salt));
    sqlite3_bind_int64(st, 3, cam->verifier.iterations);
    bind_blob(st, 4, cam->verifier.stored_key, sizeof(cam->verifier.stored_key));
    bind_text(st, 5, cam->relay);
    bind_text(st, 6, cam->recorder);
    sqlite3_bind_int64(st, 7, created);
    sqlite3_bind_int64(st, 8, cam->last_seen_unix);
    bind_text(st, 9, cam->site_addr);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)cam->bytes_relayed);
    sqlite3_bind_int(st, 11, cam->synced ? 1 : 0);
}

/* Copies a TEXT column into dst[cap]; 0, or -1 if it is not text or does not fit. */
static int col_text(sqlite3_stmt *st, int col, char *dst, size_t cap)
{
    const unsigned char *s;
    int n;

    if (sqlite3_column_type(st, col) != SQLITE_TEXT)
        return -1;
    s = sqlite3_column_text(st, col);
    n = sqlite3_column_bytes(st, col);
    if (n < 0 || (size_t)n >= cap || (n > 0 && !s))
        return -1;
    if (n > 0)
        memcpy(dst, s, (size_t)n);
    dst[n] = '\0';
    return 0;
}

/* Copies a BLOB column of exactly n bytes into dst; 0 or -1. */
static int col_blob(sqlite3_stmt *st, int col, void *dst, size_t n)
{
    const void *p;

    if (sqlite3_column_type(st, col) != SQLITE_BLOB || (size_t)sqlite3_column_bytes(st, col) != n)
        return -1;
    p = sqlite3_column_blob(st, col);
    if (!p)
        return -1;
    memcpy(dst, p, n);
    return 0;
}

/* Columns 1..3 of a row as a verifier; 0 or -1. */
static int col_verifier(sqlite3_stmt *st, struct ctl_verifier *v)
{
    sqlite3_int64 it = sqlite3_column_int64(st, 2);

    if (col_blob(st, 1, v->salt, sizeof(v->salt)) < 0 || it < 1 || it > UINT32_MAX ||
        col_blob(st, 3, v->stored_key, sizeof(v->stored_key)) < 0)
        return -1;
    v->iterations = (uint32_t)it;
    return 0;
}

/* Reads a CAM_COLS row into *cam (zeroing it first), then its endpoints. Called while st is
 * still on that row: the open statement keeps the read transaction, so camera and endpoints
 * come from one snapshot even if another connection writes in between. Returns 0 or -errno. */
static int read_camera(struct ctl_registry *reg, sqlite3_stmt *st, struct ctl_camera *cam)
{
    sqlite3_stmt *ep = reg->stmt[S_EP_GET];
    int rc, err = 0;

    memset(cam, 0, sizeof(*cam));
    if (col_text(st, 0, cam->serial, sizeof(cam->serial)) < 0)
        return corrupt("camera", "(bad serial)");
    if (col_verifier(st, &cam->verifier) < 0 ||
        col_text(st, 4, cam->relay, sizeof(cam->relay)) < 0 ||
        col_text(st, 5, cam->recorder, sizeof(cam->recorder)) < 0 ||
        col_text(st, 8, cam->site_addr, sizeof(cam->site_addr)) < 0)
        return corrupt("camera", cam->serial);
    cam->created_unix = sqlite3_column_int64(st, 6);
    cam->last_seen_unix = sqlite3_column_int64(st, 7);
    cam->bytes_relayed = (uint64_t)sqlite3_column_int64(st, 9);
    cam->synced = sqlite3_column_int(st, 10) != 0;

    bind_text(ep, 1, cam->serial);
    while ((rc = sqlite3_step(ep)) == SQLITE_ROW) {
        struct ctl_endpoint *e = &cam->endpoints[cam->n_endpoints];
        int port = sqlite3_column_int(ep, 1);

        if (cam->n_endpoints == CTL_MAX_SERVICES ||
            col_text(ep, 0, e->service, sizeof(e->service)) < 0 || port < 1 || port > 65535) {
            err = corrupt("camera endpoints", cam->serial);
            goto out_reset;
        }
        e->port = (uint16_t)port;
        cam->n_endpoints++;
    }
    if (rc != SQLITE_DONE)
        err = db_fail(reg->db, rc, "camera %s: read endpoints", cam->serial);
out_reset:
    stmt_done(ep);
    return err;
}

static int read_relay(sqlite3_stmt *st, struct ctl_relay_account *acct)
{
    memset(acct, 0, sizeof(*acct));
    if (col_text(st, 0, acct->name, sizeof(acct->name)) < 0)
        return corrupt("relay", "(bad name)");
    if (col_verifier(st, &acct->verifier) < 0 ||
        col_text(st, 4, acct->public_addrs, sizeof(acct->public_addrs)) < 0)
        return corrupt("relay", acct->name);
    if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
        if (col_blob(st, 5, acct->ticket_key, sizeof(acct->ticket_key)) < 0)
            return corrupt("relay", acct->name);
        acct->has_ticket_key = 1;
    }
    return 0;
}

/*
 * Runs the bound single-row write stmt in its own transaction. Returns 0, -ENOENT if it
 * touched no row, or -errno. Resets stmt on every path.
 */
static int write_one(struct ctl_registry *reg, enum stmt_id id, const char *what, const char *key)
{
    sqlite3_stmt *st = reg->stmt[id];
    int rc, err;

    err = tx_begin(reg, what, key);
    if (err)
        goto out_reset;
    rc = step_exec(st);
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "%s %s", what, key);
        goto out_rollback;
    }
    if (sqlite3_changes(reg->db) == 0) {
        err = -ENOENT;
        goto out_rollback;
    }
    err = tx_commit(reg, what, key);
    goto out_reset;

out_rollback:
    tx_rollback(reg);
out_reset:
    stmt_done(st);
    return err;
}

/* ---- open / close ---- */

/* Runs a one-row PRAGMA and copies its first column as text into buf. Returns SQLite code. */
static int pragma_text(sqlite3 *db, const char *sql, char *buf, size_t cap)
{
    sqlite3_stmt *st;
    const unsigned char *s;
    int rc;

    buf[0] = '\0';
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        s = sqlite3_column_text(st, 0);
        if (s)
            snprintf(buf, cap, "%s", (const char *)s);
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * Sets the connection's pragmas and checks they took: each is a stated requirement (WAL for
 * readers alongside a writer, synchronous=FULL so an acknowledged registration survives power
 * loss, foreign keys so removing a camera frees its ports), not a hint.
 */
static int configure(sqlite3 *db, const char *path)
{
    static const struct {
        const char *set, *get, *want;
    } pragmas[] = {
        {"PRAGMA journal_mode = WAL", NULL, "wal"},
        {"PRAGMA synchronous = FULL", "PRAGMA synchronous", "2"},
        {"PRAGMA foreign_keys = ON", "PRAGMA foreign_keys", "1"},
        /* Overwrite deleted rows: old ticket keys must not linger in free pages. */
        {"PRAGMA secure_delete = ON", "PRAGMA secure_delete", "1"},
        {"PRAGMA temp_store = MEMORY", NULL, NULL},
    };
    char got[32];
    int rc;

    for (size_t i = 0; i < CR_ARRAY_SIZE(pragmas); i++) {
        rc = pragma_text(db, pragmas[i].set, got, sizeof(got));
        if (rc == SQLITE_OK && pragmas[i].get)
            rc = pragma_text(db, pragmas[i].get, got, sizeof(got));
        if (rc != SQLITE_OK)
            return db_fail(db, rc, "open %s: %s", path, pragmas[i].set);
        if (pragmas[i].want && strcmp(got, pragmas[i].want) != 0) {
            cr_err("registry: open %s: %s did not take effect (got \"%s\")", path, pragmas[i].set,
                   got);
            return -EIO;
        }
    }
    return 0;
}

/* Counts rows of a one-integer query into *n. Returns the SQLite code. */
static int query_int(sqlite3 *db, const char *sql, sqlite3_int64 *n)
{
    sqlite3_stmt *st;
    int rc;

    *n = 0;
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *n = sqlite3_column_int64(st, 0);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/*
 * Creates the schema on first open, inside one write transaction so two processes opening a
 * new file at once cannot both create it. user_version 0 with tables present is a database
 * that is not ours: refuse rather than add tables to it.
 */
static int ensure_schema(sqlite3 *db, const char *path)
{
    sqlite3_int64 version = 0, objects = 0;
    int rc, err = 0;

    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return db_fail(db, rc, "open %s: begin", path);
    rc = query_int(db, "PRAGMA user_version", &version);
    if (rc == SQLITE_OK && version == 0)
        rc = query_int(db, "SELECT count(*) FROM sqlite_schema", &objects);
    if (rc != SQLITE_OK) {
        err = db_fail(db, rc, "open %s: read schema version", path);
        goto out_rollback;
    }
    if (version > SCHEMA_VERSION || version < 0) {
        cr_err("registry: open %s: schema version %lld is not %d; refusing a newer or foreign "
               "database", path, (long long)version, SCHEMA_VERSION);
        err = -ENOTSUP;
        goto out_rollback;
    }
    if (version == SCHEMA_VERSION) /* nothing to write; later versions migrate from here */
        goto out_rollback;
    if (objects != 0) {
        cr_err("registry: open %s: an SQLite database without a camrelay schema; refusing it",
               path);
        err = -ENOTSUP;
        goto out_rollback;
    }
    rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        err = db_fail(db, rc, "open %s: create schema", path);
        goto out_rollback;
    }
    return 0;

out_rollback:
    if (!sqlite3_get_autocommit(db))
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return err;
}

/* Finalizes whatever statements were prepared and closes the connection. */
static void close_db(struct ctl_registry *reg)
{
    for (int i = 0; i < S_COUNT; i++)
        sqlite3_finalize(reg->stmt[i]); /* NULL is a no-op */
    sqlite3_close(reg->db);
}

int ctl_registry_open(const char *path, struct ctl_registry **out)
{
    struct ctl_registry *reg;
    int fd, rc, err;

    if (out)
        *out = NULL;
    if (!path || !*path || !out)
        return -EINVAL;

    /* Create the file ourselves: SQLite would create it 0644 and it holds ticket keys. Its
     * -wal and -shm files copy this file's mode. An existing file keeps the mode the admin
     * gave it. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        err = -errno;
        cr_err("registry: open %s: %s", path, strerror(-err));
        return err;
    }
    close(fd);

    reg = cr_xcalloc(1, sizeof(*reg));
    /* NOMUTEX: reg->lock serialises all use of the connection. */
    rc = sqlite3_open_v2(path, &reg->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "open %s", path);
        goto out_close_db;
    }
    sqlite3_extended_result_codes(reg->db, 1);
    /* The file is data, not code: no schema-embedded functions or writes to sqlite_schema. */
    sqlite3_db_config(reg->db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
    sqlite3_db_config(reg->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
    sqlite3_busy_timeout(reg->db, BUSY_TIMEOUT_MS);

    err = configure(reg->db, path);
    if (err)
        goto out_close_db;
    err = ensure_schema(reg->db, path);
    if (err)
        goto out_close_db;
    rc = sqlite3_exec(reg->db, temp_sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "open %s: create temp table", path);
        goto out_close_db;
    }
    for (int i = 0; i < S_COUNT; i++) {
        rc = sqlite3_prepare_v3(reg->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                &reg->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            err = db_fail(reg->db, rc, "open %s: prepare statement %d", path, i);
            goto out_close_db;
        }
    }
    err = -pthread_mutex_init(&reg->lock, NULL);
    if (err)
        goto out_close_db;
    *out = reg;
    return 0;

out_close_db:
    close_db(reg);
    free(reg);
    return err;
}

void ctl_registry_close(struct ctl_registry *reg)
{
    if (!reg)
        return;
    close_db(reg);
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

/* ---- cameras ---- */

/*
 * Picks the n lowest ports in [lo, hi] that no endpoint uses, into ports[]. Runs inside the
 * caller's write transaction, so no other writer can take them before they are inserted.
 * Returns 0, -ENOSPC, or -errno.
 */
static int alloc_ports(struct ctl_registry *reg, const char *serial, unsigned n, uint16_t lo,
                       uint16_t hi, uint16_t *ports)
{
    sqlite3_stmt *st = reg->stmt[S_EP_USED_PORTS];
    unsigned next = lo, got = 0; /* unsigned: next may pass 65535 */
    int rc = SQLITE_DONE, err = 0;

    sqlite3_bind_int(st, 1, lo);
    sqlite3_bind_int(st, 2, hi);
    while (got < n && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        unsigned used = (unsigned)sqlite3_column_int(st, 0);

        while (next < used && got < n)
            ports[got++] = (uint16_t)next++;
        if (used >= next)
            next = used + 1;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        err = db_fail(reg->db, rc, "camera add %s: read used ports", serial);
        goto out_reset;
    }
    while (got < n && next <= hi)
        ports[got++] = (uint16_t)next++;
    if (got < n)
        err = -ENOSPC;
out_reset:
    stmt_done(st);
    return err;
}

/* Services: distinct, each a name of 1..15 bytes. */
static int services_ok(const char *const *services, unsigned n)
{
    if (n > CTL_MAX_SERVICES || (n > 0 && !services))
        return 0;
    for (unsigned i = 0; i < n; i++) {
        if (!str_ok(services[i], CTL_SERVICE_MAX, 0, NULL))
            return 0;
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(services[i], services[j]) == 0)
                return 0;
        }
    }
    return 1;
}

int ctl_registry_camera_add(struct ctl_registry *reg, struct ctl_camera *cam,
                            const char *const *services, unsigned n_services,
                            uint16_t port_lo, uint16_t port_hi)
{
    sqlite3_stmt *ins, *ep;
    uint16_t ports[CTL_MAX_SERVICES];
    int64_t created;
    int rc, err;

    if (!reg || !cam || !camera_ok(cam) || !services_ok(services, n_services) || port_lo == 0 ||
        port_lo > port_hi)
        return -EINVAL;
    created = cam->created_unix ? cam->created_unix : cr_unix_now();

    pthread_mutex_lock(&reg->lock);
    ins = reg->stmt[S_CAM_INSERT];
    ep = reg->stmt[S_EP_INSERT];
    err = tx_begin(reg, "camera add", cam->serial);
    if (err)
        goto out_unlock;
    bind_camera(ins, cam, created);
    rc = step_exec(ins);
    stmt_done(ins);
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "camera add %s", cam->serial);
        goto out_rollback;
    }
    if (sqlite3_changes(reg->db) == 0) { /* ON CONFLICT DO NOTHING: the serial exists */
        err = -EEXIST;
        goto out_rollback;
    }
    err = alloc_ports(reg, cam->serial, n_services, port_lo, port_hi, ports);
    if (err)
        goto out_rollback;
    for (unsigned i = 0; i < n_services; i++) {
        bind_text(ep, 1, cam->serial);
        sqlite3_bind_int(ep, 2, (int)i);
        bind_text(ep, 3, services[i]);
        sqlite3_bind_int(ep, 4, ports[i]);
        rc = step_exec(ep);
        stmt_done(ep);
        if (rc != SQLITE_OK) {
            err = db_fail(reg->db, rc, "camera add %s: endpoint %s", cam->serial, services[i]);
            goto out_rollback;
        }
    }
    err = tx_commit(reg, "camera add", cam->serial);
    if (err)
        goto out_unlock;

    /* Only now that it is durable does the caller's struct change. */
    cam->created_unix = created;
    cam->n_endpoints = n_services;
    memset(cam->endpoints, 0, sizeof(cam->endpoints));
    for (unsigned i = 0; i < n_services; i++) {
        memcpy(cam->endpoints[i].service, services[i], strlen(services[i]) + 1);
        cam->endpoints[i].port = ports[i];
    }
    goto out_unlock;

out_rollback:
    tx_rollback(reg);
out_unlock:
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_upsert(struct ctl_registry *reg, const struct ctl_camera *cam)
{
    int err;

    if (!reg || !cam || !camera_ok(cam))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    bind_camera(reg->stmt[S_CAM_UPSERT], cam,
                cam->created_unix ? cam->created_unix : cr_unix_now());
    /* An upsert always writes a row, so write_one's -ENOENT cannot happen. */
    err = write_one(reg, S_CAM_UPSERT, "camera upsert", cam->serial);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_get(struct ctl_registry *reg, const char *serial, struct ctl_camera *out)
{
    sqlite3_stmt *st;
    int rc, err;

    if (!reg || !out || !name_ok(serial))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_CAM_GET];
    bind_text(st, 1, serial);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_camera(reg, st, out);
    else if (rc == SQLITE_DONE)
        err = -ENOENT;
    else
        err = db_fail(reg->db, rc, "camera get %s", serial);
    stmt_done(st);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_remove(struct ctl_registry *reg, const char *serial)
{
    int err;

    if (!reg || !name_ok(serial))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    bind_text(reg->stmt[S_CAM_DELETE], 1, serial);
    /* The endpoints go with it: ON DELETE CASCADE. */
    err = write_one(reg, S_CAM_DELETE, "camera remove", serial);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

/* Reads up to cap cameras with serial > after (of relay, if non-NULL) into batch[].
 * Returns the count or -errno. */
static int camera_page(struct ctl_registry *reg, const char *relay, const char *after,
                       struct ctl_camera *batch, int cap)
{
    sqlite3_stmt *st;
    int rc = SQLITE_DONE, n = 0, err = 0;

    pthread_mutex_lock(&reg->lock);
    if (relay) {
        st = reg->stmt[S_CAM_PAGE_RELAY];
        bind_text(st, 1, relay);
        bind_text(st, 2, after);
        sqlite3_bind_int(st, 3, cap);
    } else {
        st = reg->stmt[S_CAM_PAGE_ALL];
        bind_text(st, 1, after);
        sqlite3_bind_int(st, 2, cap);
    }
    while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        err = read_camera(reg, st, &batch[n]);
        if (err)
            goto out_reset;
        n++;
    }
    if (n < cap && rc != SQLITE_DONE)
        err = db_fail(reg->db, rc, "camera list after \"%s\"", after);
out_reset:
    stmt_done(st);
    pthread_mutex_unlock(&reg->lock);
    return err ? err : n;
}

int ctl_registry_camera_foreach(struct ctl_registry *reg, const char *relay,
                                int (*fn)(const struct ctl_camera *, void *), void *ctx)
{
    char after[CTL_NAME_MAX] = "";
    struct ctl_camera *batch;
    int n, ret = 0;

    if (!reg || !fn || (relay && !opt_name_ok(relay)))
        return -EINVAL;
    batch = cr_xcalloc(FOREACH_BATCH, sizeof(*batch));
    do {
        n = camera_page(reg, relay, after, batch, FOREACH_BATCH);
        if (n < 0) {
            ret = n;
            break;
        }
        for (int i = 0; i < n && ret == 0; i++)
            ret = fn(&batch[i], ctx);
        if (n > 0)
            memcpy(after, batch[n - 1].serial, sizeof(after));
    } while (ret == 0 && n == FOREACH_BATCH);
    free(batch);
    return ret;
}

int ctl_registry_camera_set_recorder(struct ctl_registry *reg, const char *serial,
                                     const char *recorder)
{
    int err;

    if (!recorder)
        recorder = "";
    if (!reg || !name_ok(serial) || !opt_name_ok(recorder))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    bind_text(reg->stmt[S_CAM_SET_RECORDER], 1, serial);
    bind_text(reg->stmt[S_CAM_SET_RECORDER], 2, recorder);
    err = write_one(reg, S_CAM_SET_RECORDER, "camera set recorder", serial);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_set_synced(struct ctl_registry *reg, const char *serial, int synced)
{
    int err;

    if (!reg || !name_ok(serial))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    bind_text(reg->stmt[S_CAM_SET_SYNCED], 1, serial);
    sqlite3_bind_int(reg->stmt[S_CAM_SET_SYNCED], 2, synced ? 1 : 0);
    err = write_one(reg, S_CAM_SET_SYNCED, "camera set synced", serial);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_seen(struct ctl_registry *reg, const char *serial, int64_t unix_time,
                             const char *site_addr, uint64_t bytes_relayed)
{
    sqlite3_stmt *st;
    int err;

    if (!reg || !name_ok(serial) || (site_addr && !addr_ok(site_addr)))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_CAM_SEEN];
    bind_text(st, 1, serial);
    sqlite3_bind_int64(st, 2, unix_time);
    bind_text(st, 3, site_addr); /* NULL binds NULL: coalesce keeps the stored address */
    sqlite3_bind_int64(st, 4, (sqlite3_int64)bytes_relayed);
    err = write_one(reg, S_CAM_SEEN, "camera seen", serial);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_camera_prune_relay(struct ctl_registry *reg, const char *relay,
                                    const char *const *keep, unsigned n_keep)
{
    sqlite3_stmt *clear, *ins, *prune;
    int rc, err, removed = 0;

    if (!reg || !opt_name_ok(relay) || (n_keep > 0 && !keep))
        return -EINVAL;
    for (unsigned i = 0; i < n_keep; i++) {
        if (!name_ok(keep[i]))
            return -EINVAL;
    }

    pthread_mutex_lock(&reg->lock);
    clear = reg->stmt[S_KEEP_CLEAR];
    ins = reg->stmt[S_KEEP_INSERT];
    prune = reg->stmt[S_CAM_PRUNE];
    err = tx_begin(reg, "camera prune relay", relay);
    if (err)
        goto out_unlock;
    /* The keep table is filled and emptied inside the transaction, so a rollback also leaves
     * it empty. */
    rc = step_exec(clear);
    stmt_done(clear);
    for (unsigned i = 0; rc == SQLITE_OK && i < n_keep; i++) {
        bind_text(ins, 1, keep[i]);
        rc = step_exec(ins);
        stmt_done(ins);
    }
    if (rc == SQLITE_OK) {
        bind_text(prune, 1, relay);
        rc = step_exec(prune);
        stmt_done(prune);
        /* Counts camera rows only: cascaded endpoint deletions are not included. */
        removed = sqlite3_changes(reg->db);
    }
    if (rc == SQLITE_OK) {
        rc = step_exec(clear);
        stmt_done(clear);
    }
    if (rc != SQLITE_OK) {
        err = db_fail(reg->db, rc, "camera prune relay %s", relay);
        goto out_rollback;
    }
    err = tx_commit(reg, "camera prune relay", relay);
    goto out_unlock;

out_rollback:
    tx_rollback(reg);
out_unlock:
    pthread_mutex_unlock(&reg->lock);
    return err ? err : removed;
}

/* ---- relay accounts ---- */

int ctl_registry_relay_put(struct ctl_registry *reg, const struct ctl_relay_account *acct)
{
    sqlite3_stmt *st;
    int err;

    if (!reg || !acct || !name_ok(acct->name) || !verifier_ok(&acct->verifier) ||
        !addr_list_ok(acct->public_addrs))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_RELAY_PUT];
    bind_text(st, 1, acct->name);
    bind_blob(st, 2, acct->verifier.salt, sizeof(acct->verifier.salt));
    sqlite3_bind_int64(st, 3, acct->verifier.iterations);
    bind_blob(st, 4, acct->verifier.stored_key, sizeof(acct->verifier.stored_key));
    bind_text(st, 5, acct->public_addrs);
    if (acct->has_ticket_key)
        bind_blob(st, 6, acct->ticket_key, sizeof(acct->ticket_key));
    else
        sqlite3_bind_null(st, 6);
    err = write_one(reg, S_RELAY_PUT, "relay put", acct->name);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_relay_get(struct ctl_registry *reg, const char *name,
                           struct ctl_relay_account *out)
{
    sqlite3_stmt *st;
    int rc, err;

    if (!reg || !out || !name_ok(name))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_RELAY_GET];
    bind_text(st, 1, name);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        err = read_relay(st, out);
    else if (rc == SQLITE_DONE)
        err = -ENOENT;
    else
        err = db_fail(reg->db, rc, "relay get %s", name);
    stmt_done(st);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_relay_set_addrs(struct ctl_registry *reg, const char *name,
                                 const char *public_addrs, const uint8_t ticket_key[32])
{
    sqlite3_stmt *st;
    int err;

    if (!reg || !name_ok(name) || (public_addrs && !addr_list_ok(public_addrs)))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_RELAY_SET_ADDRS];
    bind_text(st, 1, name);
    bind_text(st, 2, public_addrs);
    if (ticket_key)
        bind_blob(st, 3, ticket_key, 32);
    else
        sqlite3_bind_null(st, 3);
    err = write_one(reg, S_RELAY_SET_ADDRS, "relay set addrs", name);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

static int relay_page(struct ctl_registry *reg, const char *after,
                      struct ctl_relay_account *batch, int cap)
{
    sqlite3_stmt *st;
    int rc = SQLITE_DONE, n = 0, err = 0;

    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_RELAY_PAGE];
    bind_text(st, 1, after);
    sqlite3_bind_int(st, 2, cap);
    while (n < cap && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        err = read_relay(st, &batch[n]);
        if (err)
            goto out_reset;
        n++;
    }
    if (n < cap && rc != SQLITE_DONE)
        err = db_fail(reg->db, rc, "relay list after \"%s\"", after);
out_reset:
    stmt_done(st);
    pthread_mutex_unlock(&reg->lock);
    return err ? err : n;
}

int ctl_registry_relay_foreach(struct ctl_registry *reg,
                               int (*fn)(const struct ctl_relay_account *, void *), void *ctx)
{
    char after[CTL_NAME_MAX] = "";
    struct ctl_relay_account *batch;
    int n, ret = 0;

    if (!reg || !fn)
        return -EINVAL;
    batch = cr_xcalloc(FOREACH_BATCH, sizeof(*batch));
    do {
        n = relay_page(reg, after, batch, FOREACH_BATCH);
        if (n < 0) {
            ret = n;
            break;
        }
        for (int i = 0; i < n && ret == 0; i++)
            ret = fn(&batch[i], ctx);
        if (n > 0)
            memcpy(after, batch[n - 1].name, sizeof(after));
    } while (ret == 0 && n == FOREACH_BATCH);
    /* The batch held ticket keys. */
    cr_wipe(batch, FOREACH_BATCH * sizeof(*batch));
    free(batch);
    return ret;
}

/* ---- meta ---- */

int ctl_registry_meta_get(struct ctl_registry *reg, const char *key, void *buf, size_t cap,
                          size_t *len)
{
    sqlite3_stmt *st;
    const void *p;
    size_t n;
    int rc, err = 0;

    if (!reg || !name_ok(key) || (cap > 0 && !buf))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    st = reg->stmt[S_META_GET];
    bind_text(st, 1, key);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        err = -ENOENT;
        goto out_reset;
    }
    if (rc != SQLITE_ROW) {
        err = db_fail(reg->db, rc, "meta get %s", key);
        goto out_reset;
    }
    if (sqlite3_column_type(st, 0) != SQLITE_BLOB) {
        err = corrupt("meta", key);
        goto out_reset;
    }
    p = sqlite3_column_blob(st, 0);
    n = (size_t)sqlite3_column_bytes(st, 0);
    if (n > CTL_META_VALUE_MAX || (n > 0 && !p)) {
        err = corrupt("meta", key);
        goto out_reset;
    }
    if (len)
        *len = n;
    if (n > cap) {
        err = -ERANGE;
        goto out_reset;
    }
    if (n > 0)
        memcpy(buf, p, n);
out_reset:
    stmt_done(st);
    pthread_mutex_unlock(&reg->lock);
    return err;
}

int ctl_registry_meta_set(struct ctl_registry *reg, const char *key, const void *buf, size_t len)
{
    int err;

    if (!reg || !name_ok(key) || len > CTL_META_VALUE_MAX || (len > 0 && !buf))
        return -EINVAL;
    pthread_mutex_lock(&reg->lock);
    bind_text(reg->stmt[S_META_SET], 1, key);
    bind_blob(reg->stmt[S_META_SET], 2, buf, len);
    err = write_one(reg, S_META_SET, "meta set", key);
    pthread_mutex_unlock(&reg->lock);
    return err;
}
