/* control/ctl_client.c — camrelayctl's end of a management link. */
#include "control/ctl_client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/net.h"
#include "common/tls.h"
#include "common/util.h"

int ctl_client_connect_unix(struct ctl_client *c, const char *path)
{
    memset(c, 0, sizeof(*c));
    c->l.fd = -1;
    int fd = cr_unix_connect(path);
    if (fd < 0)
        return fd;
    cr_link_init_plain(&c->l, fd);
    cr_strlcpy(c->l.peer, path, sizeof(c->l.peer));
    c->next_id = 1;
    return 0;
}

int ctl_client_connect_tls(struct ctl_client *c, const char *addr, const char *ca_file,
                           const char *token, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    c->l.fd = -1;
    c->tls = cr_tls_client_ctx(ca_file, err, errlen);
    if (!c->tls)
        return -EINVAL;
    int rc = cr_link_connect_tls(&c->l, c->tls, addr, CTL_CLIENT_CONNECT_MS, err, errlen);
    if (rc < 0) {
        SSL_CTX_free(c->tls);
        c->tls = NULL;
        return rc;
    }
    c->token = cr_xstrdup(token ? token : "");
    c->next_id = 1;
    return 0;
}

int ctl_client_call(struct ctl_client *c, Camrelay__MgmtRequest *req,
                    Camrelay__Frame **reply_frame)
{
    Camrelay__Frame f = CAMRELAY__FRAME__INIT;
    Camrelay__Frame *in = NULL;
    int rc;

    *reply_frame = NULL;
    req->id = c->next_id++;
    req->token = c->token ? c->token : (char *)protobuf_c_empty_string;
    f.body_case = CAMRELAY__FRAME__BODY_MGMT_REQUEST;
    f.mgmt_request = req;
    rc = cr_link_write(&c->l, &f, CTL_CLIENT_CONNECT_MS);
    req->token = (char *)protobuf_c_empty_string;
    if (rc < 0)
        return rc;
    uint64_t deadline = cr_now_ms() + CTL_CLIENT_REPLY_MS;
    for (;;) {
        uint64_t now = cr_now_ms();
        rc = cr_link_read(&c->l, now >= deadline ? 0 : (int)(deadline - now), &in);
        if (rc < 0)
            return rc;
        if (in->body_case != CAMRELAY__FRAME__BODY_MGMT_REPLY) {
            cr_frame_free(in);
            return -EPROTO;
        }
        if (in->mgmt_reply->id == req->id || in->mgmt_reply->id == 0) {
            *reply_frame = in;
            return 0;
        }
        cr_frame_free(in); /* a stale answer: keep waiting for ours */
    }
}

void ctl_client_close(struct ctl_client *c)
{
    if (c->l.fd >= 0 || c->l.ssl)
        cr_link_close(&c->l);
    if (c->token) {
        cr_wipe(c->token, strlen(c->token));
        free(c->token);
        c->token = NULL;
    }
    SSL_CTX_free(c->tls);
    c->tls = NULL;
}
