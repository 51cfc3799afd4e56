/* control/mgmt_reply.c — building a MgmtReply whose strings and lists the builder owns. */
#include "control/mgmt_reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/frame.h"
#include "common/util.h"

static void free_str(char *s)
{
    if (s && s != protobuf_c_empty_string)
        free(s);
}

void ctl_mgmt_str(char **field, const char *s)
{
    free_str(*field);
    *field = (s && *s) ? cr_xstrdup(s) : (char *)protobuf_c_empty_string;
}

void ctl_mgmt_reply_init(struct ctl_mgmt_reply *r, uint64_t id)
{
    Camrelay__MgmtReply init = CAMRELAY__MGMT_REPLY__INIT;
    r->msg = init;
    r->msg.id = id;
    r->msg.status = CAMRELAY__STATUS__OK;
}

void ctl_mgmt_reply_set(struct ctl_mgmt_reply *r, int status, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    r->msg.status = status;
    ctl_mgmt_str(&r->msg.message, buf);
}

/* Grows a protobuf-c repeated field of pointers by one slot; returns the new slot. */
static void **push_slot(void ***arr, size_t *n)
{
    *arr = realloc(*arr, (*n + 1) * sizeof(**arr));
    if (!*arr) {
        fprintf(stderr, "camrelay: out of memory growing a reply\n");
        abort();
    }
    return &(*arr)[(*n)++];
}

Camrelay__CameraInfo *ctl_mgmt_reply_add_camera(struct ctl_mgmt_reply *r)
{
    static const Camrelay__CameraInfo init = CAMRELAY__CAMERA_INFO__INIT;
    Camrelay__CameraInfo *ci = cr_xmalloc(sizeof(*ci));
    *ci = init;
    *push_slot((void ***)&r->msg.cameras, &r->msg.n_cameras) = ci;
    return ci;
}

void ctl_mgmt_camera_add_endpoint(Camrelay__CameraInfo *ci, const char *service, uint32_t port,
                                  const char *url)
{
    static const Camrelay__Endpoint init = CAMRELAY__ENDPOINT__INIT;
    Camrelay__Endpoint *ep = cr_xmalloc(sizeof(*ep));
    *ep = init;
    ctl_mgmt_str(&ep->service, service);
    ep->port = port;
    ctl_mgmt_str(&ep->url, url);
    *push_slot((void ***)&ci->endpoints, &ci->n_endpoints) = ep;
}

Camrelay__RelayInfo *ctl_mgmt_reply_add_relay(struct ctl_mgmt_reply *r)
{
    static const Camrelay__RelayInfo init = CAMRELAY__RELAY_INFO__INIT;
    Camrelay__RelayInfo *ri = cr_xmalloc(sizeof(*ri));
    *ri = init;
    *push_slot((void ***)&r->msg.relays, &r->msg.n_relays) = ri;
    return ri;
}

void ctl_mgmt_relay_add_addr(Camrelay__RelayInfo *ri, const char *addr)
{
    char **slot = (char **)push_slot((void ***)&ri->public_addrs, &ri->n_public_addrs);
    *slot = (char *)protobuf_c_empty_string;
    ctl_mgmt_str(slot, addr);
}

static void free_camera(Camrelay__CameraInfo *ci)
{
    free_str(ci->serial);
    free_str(ci->state);
    free_str(ci->site_addr);
    free_str(ci->recorder);
    free_str(ci->relay);
    free_str(ci->data_path);
    for (size_t i = 0; i < ci->n_endpoints; i++) {
        free_str(ci->endpoints[i]->service);
        free_str(ci->endpoints[i]->url);
        free(ci->endpoints[i]);
    }
    free(ci->endpoints);
    free(ci);
}

static void free_relay(Camrelay__RelayInfo *ri)
{
    free_str(ri->name);
    for (size_t i = 0; i < ri->n_public_addrs; i++)
        free_str(ri->public_addrs[i]);
    free(ri->public_addrs);
    free(ri);
}

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t frame_size(struct ctl_mgmt_reply *r)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    f.body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    f.mgmt_reply = &r->msg;
    return cr_frame_encoded_size(&f);
}

size_t ctl_mgmt_reply_fit(struct ctl_mgmt_reply *r, size_t max_frame)
{
    size_t total = frame_size(r), dropped = 0;
    size_t had_cameras = r->msg.n_cameras, had_relays = r->msg.n_relays;
    /* Room for the message we add and for the frame's length prefixes growing or shrinking. */
    const size_t slack = 600;

    if (total <= max_frame)
        return 0;
    /* Subtract each dropped entry's exact encoded size (tag + length + body) instead of
     * re-measuring the whole reply per entry, which would be quadratic on big lists. */
    while (total + slack > max_frame && (r->msg.n_relays || r->msg.n_cameras)) {
        size_t sz;
        if (r->msg.n_relays) {
            Camrelay__RelayInfo *ri = r->msg.relays[--r->msg.n_relays];
            sz = camrelay__relay_info__get_packed_size(ri);
            free_relay(ri);
        } else {
            Camrelay__CameraInfo *ci = r->msg.cameras[--r->msg.n_cameras];
            sz = camrelay__camera_info__get_packed_size(ci);
            free_camera(ci);
        }
        sz += 1 + varint_len(sz);
        total = total > sz ? total - sz : 0;
        dropped++;
    }
    if (had_cameras)
        ctl_mgmt_reply_set(r, r->msg.status,
                           "showing %zu of %zu cameras: a reply is limited to %zu KiB; list one "
                           "serial at a time for the rest",
                           r->msg.n_cameras, had_cameras, max_frame / 1024);
    else
        ctl_mgmt_reply_set(r, r->msg.status,
                           "showing %zu of %zu relays: a reply is limited to %zu KiB",
                           r->msg.n_relays, had_relays, max_frame / 1024);
    /* The arithmetic above is exact up to length-prefix shrinkage; verify and finish off. */
    while (frame_size(r) > max_frame && (r->msg.n_relays || r->msg.n_cameras)) {
        if (r->msg.n_relays)
            free_relay(r->msg.relays[--r->msg.n_relays]);
        else
            free_camera(r->msg.cameras[--r->msg.n_cameras]);
        dropped++;
    }
    return dropped;
}

void ctl_mgmt_reply_free(struct ctl_mgmt_reply *r)
{
    free_str(r->msg.message);
    for (size_t i = 0; i < r->msg.n_cameras; i++)
        free_camera(r->msg.cameras[i]);
    free(r->msg.cameras);
    for (size_t i = 0; i < r->msg.n_relays; i++)
        free_relay(r->msg.relays[i]);
    free(r->msg.relays);
    ctl_mgmt_reply_init(r, 0);
}
