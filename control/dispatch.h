/* control/dispatch.h — the dispatcher: first contact for agents, registration sink for relays.
 *
 * One TLS 1.3 listener serves both kinds of client; the first frame decides which
 * (docs/protocol.md):
 *
 *   AuthStart   an agent. Its serial is looked up in the registry. Unknown: the agent is held
 *               (Pending{hold_ms} every pending_interval_ms) until a relay syncs that serial
 *               (it then completes at once, scenarios C and D) or the hold expires
 *               (Refusal ERR_UNKNOWN_SERIAL). Known: challenge-response against the camera's
 *               verifier, then DispatchResult{relay name, relay's public addresses, a ticket
 *               MACed with the relay's ticket key} or Refusal ERR_AUTH / ERR_RETRY (the relay
 *               has never reported its addresses).
 *   RelayHello  a relay, authenticated with its dispatcher account. On success its public
 *               addresses and ticket key are stored, RelayWelcome{keepalive_ms} is sent, and
 *               the link then carries SyncCameras / UnregisterCamera / Ping, each answered
 *               (Ack / Pong). A serial owned by another relay is refused with ERR_DUPLICATE and
 *               never taken over. The dispatcher pings the relay every keepalive_ms and drops a
 *               link silent for 3 x keepalive_ms. A second link of the same account replaces
 *               the first at once.
 *   other       Refusal ERR_BAD_REQUEST and close.
 *
 * Until a peer has authenticated, frames above 16 KiB close its link; every login step is
 * bounded by 10 s, the TLS handshake too.
 *
 * A Unix management socket (mode 0660) answers MgmtRequest with MgmtReply, several per
 * connection: account_add (create a relay account or replace its password), relay_list,
 * camera_list (the dispatcher's view: serial, relay, last dispatch time as last_seen_unix,
 * state "red" when the relay is offline or the camera was never dispatched, else
 * "dispatched"; online is always false because only the relay knows the tunnel's state).
 * Camera registration, attach and removal are relay operations (ERR_BAD_REQUEST here).
 *
 * Threads: one acceptor thread, plus one detached thread per connection (bounded by
 * max_conns; connections above it are closed at once with a log line). All share one
 * registry handle (it has its own mutex). The dispatcher ignores SIGPIPE process-wide
 * (BoringSSL writes with write(2)).
 */
#ifndef CAMRELAY_CONTROL_DISPATCH_H
#define CAMRELAY_CONTROL_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

struct ctl_dispatch;

struct ctl_dispatch_config {
    const char *listen;      /* "host:port" for agents and relays; port 0 = any free port */
    const char *cert_file;   /* server certificate chain (PEM) */
    const char *key_file;    /* its private key (PEM) */
    const char *db_path;     /* SQLite registry file; its directory must exist */
    const char *mgmt_socket; /* management Unix socket path; NULL or "" = none */
    uint32_t hold_ms;        /* how long an unregistered agent is held; 0 = refused at once */
    uint32_t ticket_ttl_s;   /* ticket lifetime; 0 = 300 */
    uint32_t pending_interval_ms; /* Pending repeated this often while held; 0 = 5000 */
    uint32_t relay_keepalive_ms;  /* told to relays in RelayWelcome, ping interval; 0 = 10000 */
    uint32_t retry_after_ms; /* in ERR_UNKNOWN_SERIAL refusals; 0 = 10000 */
    unsigned max_conns;      /* concurrent connections (agents, relays, mgmt); 0 = 4096 */
};

/*
 * Opens the registry, loads the certificate, binds the listeners and starts serving.
 * Borrows cfg (strings are copied). On success *out is an owned handle for
 * ctl_dispatch_stop() and 0 is returned; on failure returns -errno, *out = NULL and err holds
 * a message naming what is wrong (certificate, database, listen address, socket path), fit
 * for "exit 2". Call from one thread; not reentrant with ctl_dispatch_stop on the same handle.
 */
int ctl_dispatch_start(const struct ctl_dispatch_config *cfg, struct ctl_dispatch **out,
                       char *err, size_t errlen);

/* What the dispatcher holds and has done since it started, for /metrics. */
struct ctl_dispatch_stats {
    unsigned relays_known;       /* relay accounts in the registry */
    unsigned relays_online;      /* accounts with a live, authenticated link */
    unsigned cameras_registered; /* cameras of every relay in the registry */
    unsigned agents_held;        /* agents waiting for their camera's registration */
    unsigned connections;        /* open connections (agents, relays, management) */
    unsigned max_conns;
    uint64_t dispatches;         /* DispatchResults sent */
    uint64_t auth_failures_agent, auth_failures_relay;
    uint64_t conns_refused;      /* connections closed at once: max_conns reached */
    int registry_ok;             /* 0: the registry could not be counted this time */
};

/* Fills out. Reads the registry (two counting walks), so call it per scrape, not per
 * request. Any thread. */
void ctl_dispatch_stats(struct ctl_dispatch *d, struct ctl_dispatch_stats *out);

/* The internal HTTP port's handler (ctl_http_handler_fn): "/metrics" in Prometheus text, "/"
 * a one-line pointer to it. Thread-safe; ctx is the struct ctl_dispatch. */
struct ctl_http_response;
int ctl_dispatch_http(void *ctx, const char *path, struct ctl_http_response *rsp);

/* The TCP port the TLS listener is bound to (useful with port 0). Any thread. */
uint16_t ctl_dispatch_port(const struct ctl_dispatch *d);

/*
 * Stops serving: closes the listeners (and removes the management socket file), closes every
 * connection, releases held agents, waits until every connection thread has finished, closes
 * the registry and frees d (consumed; NULL is a no-op). Call from the thread that started it.
 */
void ctl_dispatch_stop(struct ctl_dispatch *d);

#endif /* CAMRELAY_CONTROL_DISPATCH_H */
