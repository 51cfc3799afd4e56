/* control/relayd_int.h — camrelayd's control plane internals shared by relayd.c (registration,
 * events, management) and relayd_metrics.c (sampler, /metrics, status page). Not for others. */
#ifndef CTL_RELAYD_INT_H
#define CTL_RELAYD_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "control/metrics.h"
#include "control/registry.h"
#include "control/relayd.h"

/* A tunnel up/down event copied out of the data path's thread. */
struct relayd_event {
    char serial[CTL_NAME_MAX];
    char site_addr[CTL_NAME_MAX];
    uint64_t bytes_relayed;
    int64_t when_unix;
    int online;
};

/* Per camera: the registry's byte total when the data path's counter for it started at 0
 * (start-up or registration). Persisted and shown totals are base + the live counter. The
 * sampler keeps the live counter's smoothed rate next to it. */
struct cam_base {
    char serial[CTL_NAME_MAX];
    uint64_t bytes;
    struct ctl_rate rate; /* of the data path's live counter, sampled every second */
};

struct ctl_relayd {
    char *name, *internal_host, *url_host;
    char **services;
    unsigned n_services;
    uint16_t port_lo, port_hi;
    uint32_t iterations;
    struct ctl_registry *reg;  /* borrowed */
    struct rly_relay *relay;   /* borrowed; NULL = no data path */
    struct ctl_uplink *uplink; /* borrowed; NULL = no dispatcher */
    ctl_relayd_reload_fn reload;
    void *reload_ctx;
    _Atomic int metrics_per_camera;

    pthread_mutex_t ops_lock; /* serialises register/remove/attach against each other */

    pthread_mutex_t cams_lock; /* guards cams: sorted by serial (strcmp) */
    struct cam_base *cams;
    size_t n_cams, cap_cams;

    pthread_mutex_t ev_lock; /* guards the event ring */
    struct relayd_event *ev;
    size_t ev_head, ev_count;
    uint64_t ev_dropped;
    int ev_fd;
};

/* Index of serial in d->cams, or where it would go (*found = 0). cams_lock held. */
size_t ctl__relayd_cams_find(const struct ctl_relayd *d, const char *serial, int *found);

/* The camera's smoothed relayed bitrate (bits/s), 0 if unknown. Takes cams_lock. */
double ctl__relayd_bitrate(struct ctl_relayd *d, const char *serial);

/* Adds every registered camera's CameraInfo to rep, as `camrelayctl camera list` gets them
 * (ordered by serial). Returns 0 or -errno (a registry failure; rep then says so). */
int ctl__relayd_list(struct ctl_relayd *d, struct ctl_mgmt_reply *rep);

#endif
