/* Simulator RTSP/1.0 server side: request parsing, SDP, SETUP (TCP interleaved only), PLAY. */
#include "agent/sim_int.h"
#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define METHOD_MAX 32
#define URL_MAX 1024
#define PUBLIC_METHODS "OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
#define SDP_MAX 8192

/* A (pointer, length) view into the session's input buffer; not NUL-terminated. */
struct str {
    const char *p;
    size_t len;
};

struct rtsp_req {
    struct str method;
    struct str url;
    struct str session; /* Session header up to ';' */
    struct str transport;
    struct str require;
    size_t content_length;
    uint32_t cseq;
    bool has_cseq;
    bool too_large; /* Content-Length over AGT_SIM__BODY_MAX */
};

static bool str_eq(struct str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static bool str_ieq(struct str s, const char *lit)
{
    return s.len == strlen(lit) && strncasecmp(s.p, lit, s.len) == 0;
}

static struct str trim(struct str s)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t'))
        s.len--;
    return s;
}

/* Splits s at the first c: returns the part before, leaves the rest (after c) in *s. */
static struct str split(struct str *s, char c)
{
    const char *e = memchr(s->p, c, s->len);
    struct str head = {s->p, e ? (size_t)(e - s->p) : s->len};

    s->p += e ? head.len + 1 : head.len;
    s->len -= e ? head.len + 1 : head.len;
    return head;
}

/* Parses a decimal of at most max_digits digits; false if empty, too long or not digits. */
static bool parse_uint(struct str s, unsigned max_digits, uint64_t *out)
{
    uint64_t v = 0;

    if (s.len == 0 || s.len > max_digits)
        return false;
    for (size_t i = 0; i < s.len; i++) {
        if (s.p[i] < '0' || s.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s.p[i] - '0');
    }
    *out = v;
    return true;
}

/* Visible ASCII only: no spaces, controls or bytes >= 0x7f. */
static bool visible(struct str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (s.p[i] < '!' || s.p[i] > '~')
            return false;
    return true;
}

static bool method_token(struct str s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!((s.p[i] >= 'A' && s.p[i] <= 'Z') || s.p[i] == '_'))
            return false;
    return s.len > 0 && s.len <= METHOD_MAX;
}

/* Parses a request head (through its empty line). Returns 0 or -EINVAL for anything that is
 * not a well-formed RTSP/1.0 request; r->has_cseq tells whether a 400 can echo CSeq. */
static int parse_request(const char *head, size_t len, struct rtsp_req *r)
{
    struct str rest = {head, len}, line, version;
    uint64_t v;

    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i < len; i++) /* control bytes have no business in a request head */
        if ((unsigned char)head[i] < 0x20 && head[i] != '\r' && head[i] != '\n' &&
            head[i] != '\t')
            return -EINVAL;
    line = split(&rest, '\n');
    if (line.len && line.p[line.len - 1] == '\r')
        line.len--;
    r->method = split(&line, ' ');
    r->url = split(&line, ' ');
    version = line;
    if (!method_token(r->method) || r->url.len == 0 || r->url.len > URL_MAX || !visible(r->url))
        return -EINVAL;
    for (;;) {
        struct str name, value;
        line = split(&rest, '\n');
        if (line.len && line.p[line.len - 1] == '\r')
            line.len--;
        if (line.len == 0)
            break;
        if (line.p[0] == ' ' || line.p[0] == '\t' || !memchr(line.p, ':', line.len))
            return -EINVAL; /* obsolete line folding or not a header */
        name = split(&line, ':');
        value = trim(line);
        if (name.len == 0 || !visible(name))
            return -EINVAL;
        if (str_ieq(name, "CSeq")) {
            if (!parse_uint(value, 9, &v))
                return -EINVAL;
            r->cseq = (uint32_t)v;
            r->has_cseq = true;
        } else if (str_ieq(name, "Session")) {
            r->session = trim(split(&value, ';'));
        } else if (str_ieq(name, "Transport")) {
            r->transport = value;
        } else if (str_ieq(name, "Require")) {
            r->require = value;
        } else if (str_ieq(name, "Content-Length")) {
            if (!parse_uint(value, 9, &v))
                return -EINVAL;
            r->too_large = v > AGT_SIM__BODY_MAX;
            r->content_length = r->too_large ? 0 : (size_t)v;
        }
    }
    if (!str_eq(version, "RTSP/1.0") || !r->has_cseq)
        return -EINVAL;
    return 0;
}

/* Status line, CSeq, Server and (once SETUP created it) Session; the caller adds headers and
 * finishes with end_reply(). */
static int begin_reply(struct agt_sim__sess *s, const struct rtsp_req *r, int code,
                       const char *reason)
{
    int rc = agt_sim__reply(s, "RTSP/1.0 %d %s\r\nServer: camrelay-sim\r\n", code, reason);

    if (rc == 0 && r->has_cseq)
        rc = agt_sim__reply(s, "CSeq: %u\r\n", r->cseq);
    if (rc == 0 && s->state != AGT_SIM__INIT)
        rc = agt_sim__reply(s, "Session: %s;timeout=%d\r\n", s->session_id,
                            AGT_SIM__SESSION_TIMEOUT_S);
    return rc;
}

static int end_reply(struct agt_sim__sess *s, const char *body, size_t body_len)
{
    int rc = body_len ? agt_sim__reply(s, "Content-Length: %zu\r\n\r\n", body_len)
                      : agt_sim__reply(s, "\r\n");

    return rc == 0 && body_len ? agt_sim__append(s, body, body_len) : rc;
}

static int simple_reply(struct agt_sim__sess *s, const struct rtsp_req *r, int code,
                        const char *reason)
{
    int rc = begin_reply(s, r, code, reason);

    return rc ? rc : end_reply(s, NULL, 0);
}

/* Finds RTP/AVP/TCP among the offered transports and its interleaved channel pair. */
static bool pick_tcp_transport(struct str offers, uint8_t *channel)
{
    while (offers.len) {
        struct str spec = trim(split(&offers, ','));
        struct str proto = trim(split(&spec, ';'));
        if (!str_ieq(proto, "RTP/AVP/TCP"))
            continue;
        *channel = 0;
        while (spec.len) {
            struct str param = trim(split(&spec, ';'));
            struct str key = split(&param, '=');
            uint64_t ch;
            if (str_ieq(key, "interleaved") && parse_uint(split(&param, '-'), 3, &ch) &&
                ch < 255)
                *channel = (uint8_t)ch;
        }
        return true;
    }
    return false;
}

static bool session_ok(const struct agt_sim__sess *s, const struct rtsp_req *r)
{
    return r->session.len == 0 || str_eq(r->session, s->session_id);
}

static int handle_setup(struct agt_sim__sess *s, const struct rtsp_req *r)
{
    uint8_t ch;
    int rc;

    if (s->state == AGT_SIM__PLAYING)
        return simple_reply(s, r, 455, "Method Not Valid in This State");
    if (s->state != AGT_SIM__INIT && !session_ok(s, r))
        return simple_reply(s, r, 454, "Session Not Found");
    if (!pick_tcp_transport(r->transport, &ch))
        return simple_reply(s, r, 461, "Unsupported Transport");
    s->rtp_channel = ch;
    s->state = AGT_SIM__READY;
    rc = begin_reply(s, r, 200, "OK");
    if (rc == 0)
        rc = agt_sim__reply(s, "Transport: RTP/AVP/TCP;unicast;interleaved=%u-%u;ssrc=%08X\r\n",
                            ch, ch + 1u, s->rtp.ssrc);
    return rc ? rc : end_reply(s, NULL, 0);
}

static int handle_play(struct agt_sim *sim, struct agt_sim__sess *s, const struct rtsp_req *r)
{
    bool slash = r->url.p[r->url.len - 1] == '/';
    bool track = r->url.len >= 9 && memcmp(r->url.p + r->url.len - 9, "trackID=0", 9) == 0;
    int rc;

    if (s->state == AGT_SIM__INIT)
        return simple_reply(s, r, 455, "Method Not Valid in This State");
    if (!session_ok(s, r))
        return simple_reply(s, r, 454, "Session Not Found");
    rc = begin_reply(s, r, 200, "OK");
    if (rc == 0)
        rc = agt_sim__reply(s, "Range: npt=0.000-\r\nRTP-Info: url=%.*s%s%s;seq=%u;rtptime=%u\r\n",
                            (int)r->url.len, r->url.p, track || slash ? "" : "/",
                            track ? "" : "trackID=0", s->rtp.seq,
                            agt_sim__next_rtptime(sim, s));
    if (rc == 0)
        rc = end_reply(s, NULL, 0);
    if (rc == 0 && s->state != AGT_SIM__PLAYING) {
        rc = agt_sim__play(sim, s); /* queued behind the reply: first frame follows it */
        if (rc == 0)
            cr_info("sim: rtsp play serial=%s", s->serial);
    }
    return rc;
}

static int handle(struct agt_sim *sim, struct agt_sim__sess *s, const struct rtsp_req *r)
{
    const struct str m = r->method;
    int rc;

    if (r->require.len) {
        rc = begin_reply(s, r, 551, "Option not supported");
        if (rc == 0)
            rc = agt_sim__reply(s, "Unsupported: %.*s\r\n", (int)r->require.len, r->require.p);
        return rc ? rc : end_reply(s, NULL, 0);
    }
    if (str_eq(m, "OPTIONS")) {
        rc = begin_reply(s, r, 200, "OK");
        if (rc == 0)
            rc = agt_sim__reply(s, "Public: " PUBLIC_METHODS "\r\n");
        return rc ? rc : end_reply(s, NULL, 0);
    }
    if (str_eq(m, "DESCRIBE")) {
        bool slash = r->url.p[r->url.len - 1] == '/';
        rc = begin_reply(s, r, 200, "OK");
        if (rc == 0)
            rc = agt_sim__reply(s, "Content-Base: %.*s%s\r\nContent-Type: application/sdp\r\n",
                                (int)r->url.len, r->url.p, slash ? "" : "/");
        return rc ? rc : end_reply(s, sim->sdp, sim->sdp_len);
    }
    if (str_eq(m, "SETUP"))
        return handle_setup(s, r);
    if (str_eq(m, "PLAY"))
        return handle_play(sim, s, r);
    if (str_eq(m, "TEARDOWN")) {
        agt_sim__stop(sim, s);
        s->close_after_flush = true;
        return simple_reply(s, r, 200, "OK");
    }
    if (str_eq(m, "GET_PARAMETER") || str_eq(m, "SET_PARAMETER")) /* keepalives */
        return session_ok(s, r) ? simple_reply(s, r, 200, "OK")
                                : simple_reply(s, r, 454, "Session Not Found");
    return simple_reply(s, r, 501, "Not Implemented");
}

int agt_sim__rtsp_input(struct agt_sim *sim, struct agt_sim__sess *s)
{
    size_t off = 0;
    int rc = 0;

    while (off < s->in_len && !s->close_after_flush && rc == 0) {
        const uint8_t *p = s->in + off;
        size_t avail = s->in_len - off, head_len;
        struct rtsp_req req;

        if (s->skip) { /* rest of an interleaved packet (RTCP receiver reports) */
            size_t n = s->skip < avail ? s->skip : avail;
            s->skip -= n;
            off += n;
            continue;
        }
        if (p[0] == '$') {
            if (avail < 4)
                break;
            s->skip = (size_t)p[2] << 8 | p[3];
            off += 4;
            continue;
        }
        if (p[0] == '\r' || p[0] == '\n') { /* stray line ends between requests */
            off++;
            continue;
        }
        head_len = agt_sim__header_end(p, avail);
        if (head_len == 0) {
            if (avail == sizeof(s->in)) /* a head that does not fit is an attack or a bug */
                rc = -EMSGSIZE;
            break;
        }
        if (parse_request((const char *)p, head_len, &req) < 0) {
            s->close_after_flush = true;
            rc = simple_reply(s, &req, 400, "Bad Request");
            break;
        }
        if (req.too_large || head_len + req.content_length > sizeof(s->in)) {
            s->close_after_flush = true;
            rc = simple_reply(s, &req, 413, "Request Entity Too Large");
            break;
        }
        if (req.content_length > avail - head_len)
            break; /* body still coming */
        s->last_rx_ns = sim->now_ns;
        rc = handle(sim, s, &req);
        off += head_len + req.content_length;
    }
    memmove(s->in, s->in + off, s->in_len - off);
    s->in_len -= off;
    return rc;
}

static size_t base64(const uint8_t *in, size_t len, char *out)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;

    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < len ? in[i + 2] : 0);
        out[o++] = tbl[v >> 18 & 63];
        out[o++] = tbl[v >> 12 & 63];
        out[o++] = i + 1 < len ? tbl[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

int agt_sim__rtsp_build_sdp(struct agt_sim *sim, uint64_t session_version)
{
    const struct agt_clip *c = sim->clip;
    size_t need = 4 * ((c->sps.len + 2) / 3) + 4 * ((c->pps.len + 2) / 3) + 2;
    char *b64, *sdp;
    int n;

    if (need > SDP_MAX)
        return -EINVAL; /* parameter sets too large for a DESCRIBE reply */
    b64 = malloc(need);
    sdp = malloc(SDP_MAX);
    if (!b64 || !sdp) {
        free(b64);
        free(sdp);
        return -ENOMEM;
    }
    size_t k = base64(c->sps.data, c->sps.len, b64);
    b64[k++] = ',';
    base64(c->pps.data, c->pps.len, b64 + k);
    n = snprintf(sdp, SDP_MAX,
                 "v=0\r\n"
                 "o=- %llu 1 IN IP4 0.0.0.0\r\n"
                 "s=%s\r\n"
                 "c=IN IP4 0.0.0.0\r\n"
                 "t=0 0\r\n"
                 "a=tool:camrelay-sim\r\n"
                 "a=range:npt=0-\r\n"
                 "a=control:*\r\n"
                 "m=video 0 RTP/AVP 96\r\n"
                 "a=rtpmap:96 H264/90000\r\n"
                 "a=fmtp:96 packetization-mode=1;profile-level-id=%02X%02X%02X;"
                 "sprop-parameter-sets=%s\r\n"
                 "a=framerate:%.3f\r\n"
                 "a=x-dimensions:%u,%u\r\n"
                 "a=control:trackID=0\r\n",
                 (unsigned long long)session_version, sim->name, c->sps.data[1], c->sps.data[2],
                 c->sps.data[3], b64, c->fps, c->info.width, c->info.height);
    free(b64);
    if (n < 0 || n >= SDP_MAX) {
        free(sdp);
        return -EINVAL;
    }
    sim->sdp = sdp;
    sim->sdp_len = (size_t)n;
    return 0;
}
