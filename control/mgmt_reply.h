/* control/mgmt_reply.h — building a MgmtReply whose strings and lists the builder owns. */
#ifndef CTL_MGMT_REPLY_H
#define CTL_MGMT_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "proto/camrelay.pb-c.h"

/*
 * A reply under construction. Every string and list hanging off msg is heap memory owned by
 * the builder (or protobuf_c_empty_string), so ctl_mgmt_reply_free() releases all of it. All
 * zero is not valid: start with ctl_mgmt_reply_init(). Not thread-safe; one builder per
 * request. Allocation aborts on exhaustion (control plane).
 */
struct ctl_mgmt_reply {
    Camrelay__MgmtReply msg;
};

/* Starts an OK reply with no message for request id. */
void ctl_mgmt_reply_init(struct ctl_mgmt_reply *r, uint64_t id);

/* Sets status and a formatted message (copied; replaces any earlier message). */
void ctl_mgmt_reply_set(struct ctl_mgmt_reply *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Replaces *field (a string of a message this builder owns) with an owned copy of s. */
void ctl_mgmt_str(char **field, const char *s);

/* Appends an empty CameraInfo (all strings "") and returns it; owned by the reply. */
Camrelay__CameraInfo *ctl_mgmt_reply_add_camera(struct ctl_mgmt_reply *r);

/* Appends an endpoint (strings copied) to a CameraInfo that came from add_camera. */
void ctl_mgmt_camera_add_endpoint(Camrelay__CameraInfo *ci, const char *service, uint32_t port,
                                  const char *url);

/* Appends an empty RelayInfo and returns it; owned by the reply. */
Camrelay__RelayInfo *ctl_mgmt_reply_add_relay(struct ctl_mgmt_reply *r);

/* Appends one address (copied) to a RelayInfo that came from add_relay. */
void ctl_mgmt_relay_add_addr(Camrelay__RelayInfo *ri, const char *addr);

/*
 * Drops trailing cameras and relays until the reply, wrapped in a Frame, is at most max_frame
 * bytes, and says so in the message ("showing K of N cameras ..."). Returns how many entries
 * were dropped (0 when it already fitted).
 */
size_t ctl_mgmt_reply_fit(struct ctl_mgmt_reply *r, size_t max_frame);

/* Frees everything the builder owns; r may be reused after ctl_mgmt_reply_init(). */
void ctl_mgmt_reply_free(struct ctl_mgmt_reply *r);

#endif
