/* control/relayd.h — camrelayd's control plane: camera registration and status on top of the
 * registry, the data path (relay/relay.h) and the dispatcher uplink; the management handler. */
#ifndef CTL_RELAYD_H
#define CTL_RELAYD_H

#include <stddef.h>
#include <stdint.h>

#include "control/mgmt_reply.h"

struct ctl_registry;
struct ctl_uplink;
struct rly_relay;
struct ctl_relayd;

#define CTL_RELAYD_SECRET_MAX 256 /* OAK, user and password: 1..256 bytes each */
#define CTL_RELAYD_EVENTS_MAX 4096 /* queued data-path events before new ones are dropped */

struct ctl_relayd_config {
    const char *name;          /* this relay's account name (CameraInfo.relay) */
    const char *internal_host; /* address endpoint listeners bind ("0.0.0.0", "10.0.0.5", "::") */
    const char *url_host;      /* host written into endpoint URLs */
    const char *const *services; /* services each camera gets an endpoint for */
    unsigned n_services;
    uint16_t port_lo, port_hi; /* endpoint port range */
    uint32_t iterations;       /* PBKDF2 iterations for new verifiers (0 = the default) */
};

/*
 * Creates the control plane over an open registry (borrowed; must outlive it). Strings in cfg
 * are copied. The data path and uplink are attached afterwards (the data path needs
 * ctl_relayd_on_event and this object to start). Returns 0 and an owned *out, or -errno.
 */
int ctl_relayd_new(const struct ctl_relayd_config *cfg, struct ctl_registry *reg,
                   struct ctl_relayd **out);

/* Attaches the data path (borrowed; NULL = none: registrations are stored and endpoint ports
 * checked, but nothing listens; tests use that). Call before serving requests. */
void ctl_relayd_set_relay(struct ctl_relayd *d, struct rly_relay *relay);

/* Attaches the uplink that relays registrations to the dispatcher (borrowed; NULL = none).
 * Call before serving requests. */
void ctl_relayd_set_uplink(struct ctl_relayd *d, struct ctl_uplink *up);

/*
 * Start-up: binds the endpoint listeners of every registered camera (the registry's ports,
 * stable across restarts) and hands the cameras to the data path. An endpoint whose port
 * cannot be bound is logged and left out; the camera keeps its other endpoints. Then declares
 * the data path's camera table complete (rly_relay_set_ready). Returns the number of cameras
 * loaded or -errno. Main thread, before serving requests.
 */
int ctl_relayd_load_cameras(struct ctl_relayd *d);

/* The data path's rly_event_fn: queues a tunnel up/down event for the control thread and
 * signals ctl_relayd_event_fd(). Never blocks beyond a short mutex; drops the event (counted)
 * when CTL_RELAYD_EVENTS_MAX are already queued. Any thread. */
void ctl_relayd_on_event(void *ctx, const char *serial, int online, const char *site_addr,
                         uint64_t bytes_relayed);

/* Readable when events are queued (an eventfd). */
int ctl_relayd_event_fd(const struct ctl_relayd *d);

/* Persists the queued events (last seen, site address, byte totals) in the registry. Control
 * thread (camrelayd's main loop). */
void ctl_relayd_drain_events(struct ctl_relayd *d);

/* Re-reads the daemon's configuration and applies what can change without a restart; writes
 * a one-line summary for people into msg. Returns 0, or -errno when the new configuration
 * was refused or part of it could not be applied (msg says what; the old values stay). Must
 * be thread-safe: SIGHUP and management requests may call it at once. */
typedef int (*ctl_relayd_reload_fn)(void *ctx, const char *why, char *msg, size_t cap);

/* Sets what the management operation `reload` calls (NULL = the operation is refused).
 * Call before serving requests. */
void ctl_relayd_set_reload(struct ctl_relayd *d, ctl_relayd_reload_fn fn, void *ctx);

/* Turns the per-camera series of /metrics on or off (on after ctl_relayd_new). Any thread. */
void ctl_relayd_set_metrics_per_camera(struct ctl_relayd *d, int on);

/* Samples every camera's live byte counter from the data path and updates its smoothed
 * bitrate (struct ctl_rate). Call about once a second from one thread (camrelayd's main
 * loop); now_ms is a monotonic clock (cr_now_ms). */
void ctl_relayd_sample(struct ctl_relayd *d, uint64_t now_ms);

/* The internal HTTP port's handler (ctl_http_handler_fn): "/" the status page, "/metrics"
 * Prometheus text, "/api/cameras" the camera list as JSON (the objects of `camrelayctl --json
 * camera list`). Thread-safe; ctx is the struct ctl_relayd. */
struct ctl_http_response;
int ctl_relayd_http(void *ctx, const char *path, struct ctl_http_response *rsp);

/* The management handler (ctl_mgmt_handler_fn): camera_register, camera_list, camera_attach,
 * camera_remove, reload. Thread-safe; ctx is the struct ctl_relayd. */
void ctl_relayd_handle(void *ctx, const Camrelay__MgmtRequest *req, struct ctl_mgmt_reply *rep);

/* Frees d. The management server, uplink and data path must be stopped first. */
void ctl_relayd_free(struct ctl_relayd *d);

#endif
