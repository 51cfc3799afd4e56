/* control/dispatch_int.h — the dispatcher's internals shared by dispatch*.c (not for others). */
#ifndef CAMRELAY_CONTROL_DISPATCH_INT_H
#define CAMRELAY_CONTROL_DISPATCH_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "common/link.h"
#include "control/dispatch.h"
#include "control/registry.h"

#define CTL_DISPATCH_STEP_MS 10000          /* handshake and every login step */
#define CTL_DISPATCH_UNAUTH_MAX_FRAME 16384 /* until the peer has authenticated */

/* One accepted connection. The list entry lets stop() and relay replacement shut the socket
 * down (shutdown(2) only: the connection's own thread owns the fd and closes it). fd is a dup
 * of the link's socket, so it stays valid until the entry is unlinked even if the link closed
 * its own descriptor on a failed handshake. */
struct ctl_dispatch_conn {
    struct ctl_dispatch_conn *prev, *next;
    struct ctl_dispatch *d;
    int fd;      /* dup, owned by the entry; -1 for none */
    int link_fd; /* given to the link, which consumes it */
    int is_mgmt;
    char peer[64];
};

/* An agent held until its serial is registered. Lives on the held thread's stack; linked in
 * d->waiters while it waits. */
struct ctl_dispatch_waiter {
    struct ctl_dispatch_waiter *next;
    const char *serial; /* borrowed */
    int ready;          /* set by ctl__dispatch_wake, cleared by the waiter */
    pthread_cond_t cond;
};

/* A relay with a live, authenticated link. */
struct ctl_dispatch_relay {
    struct ctl_dispatch_relay *next;
    char name[CTL_NAME_MAX];
    struct ctl_dispatch_conn *conn; /* the link currently serving this account */
};

struct ctl_dispatch {
    /* Settings (strings owned). */
    char *listen, *cert_file, *key_file, *db_path, *mgmt_path;
    uint32_t hold_ms, ticket_ttl_s, pending_interval_ms, relay_keepalive_ms, retry_after_ms;
    unsigned max_conns;

    SSL_CTX *tls;
    struct ctl_registry *reg;
    int tls_fd, mgmt_fd, wake_fd;
    uint16_t port;
    pthread_t acceptor;
    int acceptor_started;

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t idle;  /* signalled when active drops to 0 */
    int stopping;
    unsigned active;
    struct ctl_dispatch_conn *conns;
    struct ctl_dispatch_waiter *waiters;
    struct ctl_dispatch_relay *relays;
    uint64_t refused, refused_logged_ms;

    /* For /metrics; counted by any connection thread, no lock. */
    _Atomic uint64_t dispatches;          /* DispatchResults sent */
    _Atomic uint64_t auth_failures_agent; /* cameras whose proof did not verify */
    _Atomic uint64_t auth_failures_relay; /* relay logins: unknown account or wrong password */

    /* Serialises "who owns this serial" + upsert across relay links, so two relays syncing the
     * same serial at once cannot both take it. Taken before lock, never inside it. */
    pthread_mutex_t sync_lock;
};

/* Serves an agent whose first frame was start (borrowed). The link is closed by the caller. */
void ctl__dispatch_agent(struct ctl_dispatch *d, struct cr_link *l,
                         const Camrelay__AuthStart *start);

/* Serves a relay whose first frame was hello (borrowed), until the link ends. */
void ctl__dispatch_relay(struct ctl_dispatch *d, struct ctl_dispatch_conn *c, struct cr_link *l,
                         const Camrelay__RelayHello *hello);

/* Serves one management connection until the peer closes it or misbehaves. */
void ctl__dispatch_mgmt(struct ctl_dispatch *d, struct cr_link *l);

/* Wakes agents held for serial (a relay just registered it). Any thread; takes d->lock. */
void ctl__dispatch_wake(struct ctl_dispatch *d, const char *serial);

/* 1 if the relay account has a live link. Any thread; takes d->lock. */
int ctl__dispatch_relay_online(struct ctl_dispatch *d, const char *name);



/* Splits a comma-separated list in place: fills out[0..cap) with pointers into s (empty
 * items skipped) and returns how many. */
size_t ctl__dispatch_split(char *s, char **out, size_t cap);

#endif /* CAMRELAY_CONTROL_DISPATCH_INT_H */
