/* Simulator HTTP/1.1 side: one bounded request per connection, a status page and a JSON API. */
#include "agent/sim_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define BODY_CAP 2048

static const char *profile_name(unsigned idc)
{
    switch (idc) {
    case 66:
        return "Baseline";
    case 77:
        return "Main";
    case 88:
        return "Extended";
    case 100:
        return "High";
    case 110:
        return "High 10";
    case 122:
        return "High 4:2:2";
    case 244:
        return "High 4:4:4";
    default:
        return "other";
    }
}

/* Queues the whole response; the session closes once it is written (Connection: close). */
static int respond(struct agt_sim__sess *s, int code, const char *reason, const char *type,
                   const char *extra, const char *body, size_t body_len, bool head_only)
{
    s->http_status = code;
    s->close_after_flush = true;
    return agt_sim__reply(s,
                          "HTTP/1.1 %d %s\r\n"
                          "Server: camrelay-sim\r\n"
                          "Content-Type: %s\r\n"
                          "Content-Length: %zu\r\n"
                          "Cache-Control: no-store\r\n"
                          "Connection: close\r\n"
                          "%s\r\n"
                          "%.*s",
                          code, reason, type, body_len, extra, head_only ? 0 : (int)body_len,
                          body);
}

static int error_page(struct agt_sim__sess *s, int code, const char *reason, const char *extra,
                      bool head_only)
{
    char body[128];
    int n = snprintf(body, sizeof(body), "%d %s\n", code, reason);

    return respond(s, code, reason, "text/plain; charset=utf-8", extra, body, (size_t)n,
                   head_only);
}

/* Serial and name were validated to [A-Za-z0-9._:-] at hand-over, so they need no escaping
 * in HTML or JSON. */
static int status_page(struct agt_sim *sim, struct agt_sim__sess *s, bool head_only)
{
    const struct agt_clip *c = sim->clip;
    char body[BODY_CAP];
    int n = snprintf(body, sizeof(body),
                     "<!doctype html>\n"
                     "<html><head><meta charset=\"utf-8\">"
                     "<title>camrelay simulated camera %s</title></head>\n"
                     "<body><h1>camrelay simulated camera %s</h1>\n"
                     "<ul><li>name: %s</li><li>video: H.264 %s, %ux%u, %.3f fps</li>\n"
                     "<li>clip: %zu frames, %.1f s, looped</li>\n"
                     "<li>frames sent: %llu</li><li>sessions: %u</li></ul>\n"
                     "</body></html>\n",
                     s->serial, s->serial, sim->name, profile_name(c->info.profile_idc),
                     c->info.width, c->info.height, c->fps, c->n_aus,
                     (double)c->duration_90k / 90000.0,
                     (unsigned long long)atomic_load(&sim->frames_sent),
                     atomic_load(&sim->sessions));

    if (n < 0 || n >= (int)sizeof(body))
        return -ENOBUFS;
    return respond(s, 200, "OK", "text/html; charset=utf-8", "", body, (size_t)n, head_only);
}

static int params_json(struct agt_sim *sim, struct agt_sim__sess *s, bool head_only)
{
    const struct agt_clip *c = sim->clip;
    char body[BODY_CAP];
    int n = snprintf(body, sizeof(body),
                     "{\"serial\":\"%s\",\"name\":\"%s\",\"codec\":\"H264\","
                     "\"profile_idc\":%u,\"level_idc\":%u,\"width\":%u,\"height\":%u,"
                     "\"fps\":%.3f,\"clip_frames\":%zu,\"clip_duration_ms\":%llu,"
                     "\"frames_sent\":%llu,\"frames_dropped\":%llu,\"sessions\":%u}\n",
                     s->serial, sim->name, c->info.profile_idc, c->info.level_idc, c->info.width,
                     c->info.height, c->fps, c->n_aus,
                     (unsigned long long)(c->duration_90k / 90),
                     (unsigned long long)atomic_load(&sim->frames_sent),
                     (unsigned long long)atomic_load(&sim->frames_dropped),
                     atomic_load(&sim->sessions));

    if (n < 0 || n >= (int)sizeof(body))
        return -ENOBUFS;
    return respond(s, 200, "OK", "application/json", "", body, (size_t)n, head_only);
}

static bool visible(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] < '!' || p[i] > '~')
            return false;
    return true;
}

int agt_sim__http_input(struct agt_sim *sim, struct agt_sim__sess *s)
{
    const uint8_t *p = s->in, *sp1, *sp2, *eol, *q;
    size_t len = s->in_len, head_len, line_len, mlen, tlen;
    bool head_only;

    if (s->close_after_flush) {
        s->in_len = 0;
        return 0;
    }
    while (len && (p[0] == '\r' || p[0] == '\n')) {
        p++;
        len--;
    }
    head_len = agt_sim__header_end(p, len);
    if (head_len == 0)
        return s->in_len == sizeof(s->in)
                   ? error_page(s, 431, "Request Header Fields Too Large", "", false)
                   : 0;
    s->last_rx_ns = sim->now_ns;
    eol = memchr(p, '\n', head_len);
    line_len = (size_t)(eol - p) - (eol[-1] == '\r'); /* eol > p: leading line ends skipped */
    sp1 = memchr(p, ' ', line_len);
    sp2 = sp1 ? memchr(sp1 + 1, ' ', line_len - (size_t)(sp1 + 1 - p)) : NULL;
    if (!sp1 || !sp2 || sp1 == p || sp2 == sp1 + 1 || !visible(p, (size_t)(sp1 - p)) ||
        !visible(sp1 + 1, (size_t)(sp2 - sp1 - 1)) || (size_t)(p + line_len - sp2 - 1) != 8 ||
        (memcmp(sp2 + 1, "HTTP/1.1", 8) != 0 && memcmp(sp2 + 1, "HTTP/1.0", 8) != 0))
        return error_page(s, 400, "Bad Request", "", false);
    mlen = (size_t)(sp1 - p);
    head_only = mlen == 4 && memcmp(p, "HEAD", 4) == 0;
    if (!head_only && !(mlen == 3 && memcmp(p, "GET", 3) == 0))
        return error_page(s, 405, "Method Not Allowed", "Allow: GET, HEAD\r\n", false);
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1)); /* the query string is ignored */
    tlen = (size_t)((q ? q : sp2) - (sp1 + 1));
    if (tlen == 1 && sp1[1] == '/')
        return status_page(sim, s, head_only);
    if (tlen == 11 && memcmp(sp1 + 1, "/api/params", 11) == 0)
        return params_json(sim, s, head_only);
    return error_page(s, 404, "Not Found", "", head_only);
}
