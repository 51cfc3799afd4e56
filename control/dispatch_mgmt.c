/* control/dispatch_mgmt.c — the dispatcher's management socket: relay accounts and listings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/auth.h"
#include "common/log.h"
#include "common/util.h"
#include "control/dispatch_int.h"

#define MGMT_MAX_FRAME (64 * 1024) /* requests are tiny; anything near this is garbage */
#define MGMT_IDLE_MS 60000         /* an idle management connection is closed */
#define MGMT_WRITE_MS 10000
#define PASSWORD_MIN 8
#define PASSWORD_MAX 1024
#define MAX_ADDRS 16
/* A reply must stay under CR_FRAME_MAX; leave room for the envelope and the message. */
#define REPLY_BUDGET (CR_FRAME_MAX - 4096)

/* ---- account_add ---- */

static void account_add(struct ctl_dispatch *d, const Camrelay__AccountAdd *a,
                        Camrelay__MgmtReply *rep, char *msg, size_t cap)
{
    struct ctl_relay_account acct, old;
    struct cr_auth_secret secret = {0};
    size_t plen = a->password ? strlen(a->password) : 0;

    rep->status = CAMRELAY__STATUS__ERR_BAD_REQUEST;
    if (!cr_name_valid(a->name, CTL_NAME_MAX - 1)) {
        snprintf(msg, cap, "relay account name must be 1..63 characters of [A-Za-z0-9._:-]");
        return;
    }
    if (plen < PASSWORD_MIN || plen > PASSWORD_MAX) {
        snprintf(msg, cap, "password must be %d to %d characters", PASSWORD_MIN, PASSWORD_MAX);
        return;
    }
    memset(&acct, 0, sizeof(acct));
    cr_strlcpy(acct.name, a->name, sizeof(acct.name));
    secret.password = a->password;
    if (cr_auth_make_verifier(&secret, CR_AUTH_ITERATIONS_DEFAULT, acct.verifier.salt,
                              acct.verifier.stored_key) < 0) {
        rep->status = CAMRELAY__STATUS__ERR_INTERNAL;
        snprintf(msg, cap, "cannot derive the verifier");
        return;
    }
    acct.verifier.iterations = CR_AUTH_ITERATIONS_DEFAULT;
    int existed = ctl_registry_relay_get(d->reg, a->name, &old) == 0;
    cr_wipe(&old, sizeof(old));
    /* public_addrs "" and has_ticket_key 0: a password change keeps what the relay reported. */
    int rc = ctl_registry_relay_put(d->reg, &acct);
    if (rc < 0) {
        cr_err("account_add %s: %s", a->name, strerror(-rc));
        rep->status = CAMRELAY__STATUS__ERR_INTERNAL;
        snprintf(msg, cap, "registry error: %s", strerror(-rc));
        return;
    }
    rep->status = CAMRELAY__STATUS__OK;
    snprintf(msg, cap, existed ? "relay account %s: password replaced"
                               : "relay account %s created",
             a->name);
    cr_info("%s", msg);
}

/* ---- relay_list ---- */

struct relay_rows {
    struct ctl_dispatch *d;
    const char *only; /* NULL = all */
    Camrelay__RelayInfo **infos;
    size_t n, cap, bytes;
    int truncated;
};

static int count_camera(const struct ctl_camera *cam, void *ctx)
{
    (void)cam;
    (*(uint32_t *)ctx)++;
    return 0;
}

static int add_relay_row(const struct ctl_relay_account *acct, void *ctx)
{
    struct relay_rows *rows = ctx;
    if (rows->only && strcmp(rows->only, acct->name) != 0)
        return 0;

    Camrelay__RelayInfo *ri = cr_xmalloc(sizeof(*ri));
    camrelay__relay_info__init(ri);
    ri->name = cr_xstrdup(acct->name);
    char *list = cr_xstrdup(acct->public_addrs), *addrs[MAX_ADDRS];
    size_t n = ctl__dispatch_split(list, addrs, MAX_ADDRS);
    ri->public_addrs = cr_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        ri->public_addrs[i] = cr_xstrdup(addrs[i]);
    ri->n_public_addrs = n;
    free(list);
    ri->online = ctl__dispatch_relay_online(rows->d, acct->name);
    ctl_registry_camera_foreach(rows->d->reg, acct->name, count_camera, &ri->cameras);

    size_t sz = camrelay__relay_info__get_packed_size(ri) + 8;
    if (rows->bytes + sz > REPLY_BUDGET) {
        rows->truncated = 1;
        camrelay__relay_info__free_unpacked(ri, NULL); /* all its pieces are malloc'd */
        return 1;
    }
    if (rows->n == rows->cap) {
        rows->cap = rows->cap ? rows->cap * 2 : 16;
        Camrelay__RelayInfo **grown = cr_xcalloc(rows->cap, sizeof(*grown));
        if (rows->n)
            memcpy(grown, rows->infos, rows->n * sizeof(*grown));
        free(rows->infos);
        rows->infos = grown;
    }
    rows->infos[rows->n++] = ri;
    rows->bytes += sz;
    return 0;
}

static void relay_list(struct ctl_dispatch *d, const Camrelay__CameraSelect *sel,
                       Camrelay__MgmtReply *rep, char *msg, size_t cap)
{
    struct relay_rows rows = {.d = d};
    rows.only = sel->serial && *sel->serial ? sel->serial : NULL;
    int rc = ctl_registry_relay_foreach(d->reg, add_relay_row, &rows);
    if (rc < 0) {
        rep->status = CAMRELAY__STATUS__ERR_INTERNAL;
        snprintf(msg, cap, "registry error: %s", strerror(-rc));
    } else if (rows.only && rows.n == 0) {
        rep->status = CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL;
        snprintf(msg, cap, "no relay account %s", rows.only);
    } else if (rows.truncated) {
        snprintf(msg, cap, "list truncated after %zu relays (reply size limit)", rows.n);
    }
    rep->relays = rows.infos;
    rep->n_relays = rows.n;
}

/* ---- camera_list ---- */

struct camera_rows {
    struct ctl_dispatch *d;
    Camrelay__CameraInfo **infos;
    size_t n, cap, bytes;
    int truncated;
};

static int add_camera_row(const struct ctl_camera *cam, void *ctx)
{
    struct camera_rows *rows = ctx;
    Camrelay__CameraInfo *ci = cr_xmalloc(sizeof(*ci));
    camrelay__camera_info__init(ci);
    ci->serial = cr_xstrdup(cam->serial);
    ci->relay = cr_xstrdup(cam->relay);
    ci->site_addr = cr_xstrdup(cam->site_addr);
    ci->last_seen_unix = cam->last_seen_unix;
    ci->synced = 1; /* the dispatcher holds it: the relay's sync was acknowledged */
    int relay_up = ctl__dispatch_relay_online(rows->d, cam->relay);
    ci->state = cr_xstrdup(relay_up && cam->last_seen_unix ? "dispatched" : "red");

    size_t sz = camrelay__camera_info__get_packed_size(ci) + 8;
    if (rows->bytes + sz > REPLY_BUDGET) {
        rows->truncated = 1;
        camrelay__camera_info__free_unpacked(ci, NULL);
        return 1;
    }
    if (rows->n == rows->cap) {
        rows->cap = rows->cap ? rows->cap * 2 : 64;
        Camrelay__CameraInfo **grown = cr_xcalloc(rows->cap, sizeof(*grown));
        if (rows->n)
            memcpy(grown, rows->infos, rows->n * sizeof(*grown));
        free(rows->infos);
        rows->infos = grown;
    }
    rows->infos[rows->n++] = ci;
    rows->bytes += sz;
    return 0;
}

static void camera_list(struct ctl_dispatch *d, const Camrelay__CameraSelect *sel,
                        Camrelay__MgmtReply *rep, char *msg, size_t cap)
{
    struct camera_rows rows = {.d = d};
    int rc;
    if (sel->serial && *sel->serial) {
        struct ctl_camera cam;
        rc = ctl_registry_camera_get(d->reg, sel->serial, &cam);
        if (rc == 0)
            add_camera_row(&cam, &rows);
        else if (rc == -ENOENT || rc == -EINVAL) {
            rep->status = CAMRELAY__STATUS__ERR_UNKNOWN_SERIAL;
            snprintf(msg, cap, "serial %s is not registered on any relay", sel->serial);
            return;
        }
    } else {
        rc = ctl_registry_camera_foreach(d->reg, NULL, add_camera_row, &rows);
    }
    if (rc < 0) {
        rep->status = CAMRELAY__STATUS__ERR_INTERNAL;
        snprintf(msg, cap, "registry error: %s", strerror(-rc));
    } else if (rows.truncated) {
        snprintf(msg, cap, "list truncated after %zu cameras (reply size limit); ask for one "
                 "serial", rows.n);
    }
    rep->cameras = rows.infos;
    rep->n_cameras = rows.n;
}

/* ---- the connection ---- */

static void free_reply_lists(Camrelay__MgmtReply *rep)
{
    for (size_t i = 0; i < rep->n_cameras; i++)
        camrelay__camera_info__free_unpacked(rep->cameras[i], NULL);
    for (size_t i = 0; i < rep->n_relays; i++)
        camrelay__relay_info__free_unpacked(rep->relays[i], NULL);
    free(rep->cameras);
    free(rep->relays);
}

/* Answers one request. Returns 0 or -errno from the link. */
static int handle(struct ctl_dispatch *d, struct cr_link *l, Camrelay__MgmtRequest *req)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__MgmtReply rep = CAMRELAY__MGMT_REPLY__INIT;
    char msg[256] = "";

    rep.id = req->id;
    rep.status = CAMRELAY__STATUS__OK;
    switch (req->op_case) {
    case CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD:
        account_add(d, req->account_add, &rep, msg, sizeof(msg));
        break;
    case CAMRELAY__MGMT_REQUEST__OP_RELAY_LIST:
        relay_list(d, req->relay_list, &rep, msg, sizeof(msg));
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_LIST:
        camera_list(d, req->camera_list, &rep, msg, sizeof(msg));
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER:
        rep.status = CAMRELAY__STATUS__ERR_BAD_REQUEST;
        cr_strlcpy(msg, "use the relay's management socket for camera registration",
                   sizeof(msg));
        break;
    case CAMRELAY__MGMT_REQUEST__OP_RELOAD:
        rep.status = CAMRELAY__STATUS__ERR_BAD_REQUEST;
        cr_strlcpy(msg, "reload is a relay operation; restart the dispatcher to change its "
                   "settings", sizeof(msg));
        break;
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_ATTACH:
    case CAMRELAY__MGMT_REQUEST__OP_CAMERA_REMOVE:
        rep.status = CAMRELAY__STATUS__ERR_BAD_REQUEST;
        cr_strlcpy(msg, "use the relay's management socket for camera attach and removal",
                   sizeof(msg));
        break;
    default:
        rep.status = CAMRELAY__STATUS__ERR_BAD_REQUEST;
        cr_strlcpy(msg, "no operation in the request", sizeof(msg));
        break;
    }
    rep.message = msg;
    f.body_case = CAMRELAY__FRAME__BODY_MGMT_REPLY;
    f.mgmt_reply = &rep;
    int rc = cr_link_write(l, &f, MGMT_WRITE_MS);
    free_reply_lists(&rep);
    return rc;
}

/* The only plaintext secret the dispatcher sees: wipe it before the frame is freed. */
static void wipe_request(Camrelay__Frame *f)
{
    if (f->body_case != CAMRELAY__FRAME__BODY_MGMT_REQUEST || !f->mgmt_request)
        return;
    Camrelay__MgmtRequest *req = f->mgmt_request;
    if (req->op_case == CAMRELAY__MGMT_REQUEST__OP_ACCOUNT_ADD && req->account_add &&
        req->account_add->password)
        cr_wipe(req->account_add->password, strlen(req->account_add->password));
    if (req->op_case == CAMRELAY__MGMT_REQUEST__OP_CAMERA_REGISTER && req->camera_register) {
        Camrelay__CameraRegister *cr = req->camera_register;
        if (cr->oak)
            cr_wipe(cr->oak, strlen(cr->oak));
        if (cr->password)
            cr_wipe(cr->password, strlen(cr->password));
    }
}

void ctl__dispatch_mgmt(struct ctl_dispatch *d, struct cr_link *l)
{
    l->max_frame = MGMT_MAX_FRAME;
    for (;;) {
        Camrelay__Frame *f = NULL;
        int rc = cr_link_read(l, MGMT_IDLE_MS, &f);
        switch (rc) {
        case 0:
            break;
        case -ETIMEDOUT:
            cr_debug("%s: idle for %d ms; closing", l->peer, MGMT_IDLE_MS);
            return;
        case -ECONNRESET:
            return;
        case -EMSGSIZE:
            cr_warn("%s: management request above %d bytes; closing", l->peer, MGMT_MAX_FRAME);
            return;
        case -EBADMSG:
            cr_warn("%s: malformed management request; closing", l->peer);
            return;
        default:
            cr_info("%s: management connection failed: %s", l->peer, strerror(-rc));
            return;
        }
        if (f->body_case != CAMRELAY__FRAME__BODY_MGMT_REQUEST) {
            cr_warn("%s: unexpected %s on the management socket; closing", l->peer,
                    cr_frame_body_name(f));
            wipe_request(f);
            cr_frame_free(f);
            return;
        }
        rc = handle(d, l, f->mgmt_request);
        wipe_request(f);
        cr_frame_free(f);
        if (rc < 0) {
            cr_info("%s: writing the management reply failed: %s", l->peer, strerror(-rc));
            return;
        }
    }
}
