/* control/uplink.h — the relay's link to the dispatcher: logs in with the relay account, keeps
 * the dispatcher's copy of this relay's cameras in step with the registry, keeps it alive. */
#ifndef CTL_UPLINK_H
#define CTL_UPLINK_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct ctl_registry;
struct ctl_uplink;

#define CTL_UPLINK_BACKOFF_MIN_MS 1000
#define CTL_UPLINK_BACKOFF_MAX_MS 30000
#define CTL_UPLINK_STEP_MS 10000    /* each login step, and waiting for an Ack */
#define CTL_UPLINK_CONNECT_MS 5000  /* TCP connect + TLS handshake per dispatcher */
#define CTL_UPLINK_SYNC_BATCH 1000  /* cameras per SyncCameras frame (keeps frames < 256 KiB) */

struct ctl_uplink_config {
    const char *name;         /* relay account name (copied) */
    const char *public_addrs; /* comma-separated host:port agents are told (copied) */
    const char *dispatchers;  /* comma-separated host:port, tried in order (copied) */
    SSL_CTX *tls;             /* client context trusting --ca (borrowed; outlives the uplink) */
    const char *password;     /* account password (copied; wiped at stop) */
    const uint8_t *ticket_key; /* 32 bytes (copied; wiped at stop) */
    uint32_t keepalive_ms;    /* used when the dispatcher's RelayWelcome gives none */
    uint32_t backoff_min_ms, backoff_max_ms; /* 0 = the defaults above (tests shorten them) */
};

/*
 * Starts the uplink thread. It connects to the first dispatcher that answers, sends
 * RelayHello, proves the account password, then sends a full SyncCameras of every registered
 * camera and marks them synced; after that it sends each change queued by
 * ctl_uplink_camera_changed() and waits for its Ack. On any failure it backs off (1 s doubling
 * to 30 s, with jitter) and starts over with a full sync, so a change made while the
 * dispatcher is unreachable is never lost. The registry is borrowed and must outlive the
 * uplink. Returns 0 and an owned *out, or -errno. Call from the main thread.
 */
int ctl_uplink_start(const struct ctl_uplink_config *cfg, struct ctl_registry *reg,
                     struct ctl_uplink **out);

/* Queues a change for the dispatcher: the camera was registered (its record is read from the
 * registry when sent) or removed. Never blocks on the network. Any thread. */
void ctl_uplink_camera_changed(struct ctl_uplink *up, const char *serial, int removed);

/* 1 while logged in to a dispatcher. Any thread. */
int ctl_uplink_connected(struct ctl_uplink *up);

/* Stops the thread (interrupting a connection in progress), wipes the secrets, frees up.
 * NULL is a no-op. */
void ctl_uplink_stop(struct ctl_uplink *up);

#endif
