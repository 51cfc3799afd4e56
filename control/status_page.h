/* control/status_page.h — camrelayd's status page: one server-rendered, self-refreshing,
 * read-only HTML page (summary, then a table of every camera), every value escaped. */
#ifndef CTL_STATUS_PAGE_H
#define CTL_STATUS_PAGE_H

#include <stddef.h>
#include <stdint.h>

#include "control/http.h"
#include "proto/camrelay.pb-c.h"

#define CTL_STATUS_PAGE_REFRESH_S 5

enum ctl_cam_state {
    CTL_CAM_RED = 0,
    CTL_CAM_YELLOW,
    CTL_CAM_GREEN,
    CTL_CAM_STATES,
};

/* The relay-wide figures at the top of the page. Strings are borrowed. */
struct ctl_status_summary {
    const char *relay_name;
    int64_t now_unix;
    unsigned cameras;                   /* registered */
    unsigned by_state[CTL_CAM_STATES];  /* indexed by enum ctl_cam_state */
    unsigned tunnels_online;
    unsigned streams_open;
    uint64_t bytes_relayed;             /* since the relay started, all cameras */
    const char *data_path;              /* path of new TLS streams: "tls-inplace", "ktls-splice" */
    int ktls_available;
    int have_dispatcher;                /* a --dispatcher is configured */
    int dispatcher_connected;
    unsigned unsynced;                  /* registrations the dispatcher has not acknowledged */
};

/* One table row: the camera as `camrelayctl camera list` shows it, and its smoothed bitrate. */
struct ctl_status_camera {
    const Camrelay__CameraInfo *info; /* borrowed */
    double bitrate_bps;
};

/* "red"/"yellow"/"green" to the enum; -1 for anything else. */
int ctl_status_state(const char *name);

/* Appends the whole page to out. */
void ctl_status_page_render(struct ctl_text *out, const struct ctl_status_summary *s,
                            const struct ctl_status_camera *cams, size_t n);

/* Appends s with & < > " ' replaced by entities: safe in element content and in quoted
 * attribute values. NULL appends nothing. */
void ctl_status_page_escape(struct ctl_text *out, const char *s);

/* "850 bit/s", "512.3 kbit/s", "4.20 Mbit/s" into buf; returns buf. */
const char *ctl_status_page_bitrate(double bps, char *buf, size_t cap);

/* "never", "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago" into buf; returns buf. */
const char *ctl_status_page_ago(int64_t now_unix, int64_t then_unix, char *buf, size_t cap);

#endif
