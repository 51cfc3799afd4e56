/* control/status_page.c — camrelayd's HTML status page, rendered on the server. */
#include "control/status_page.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "control/ctl_print.h"

static const char *const state_names[CTL_CAM_STATES] = {"red", "yellow", "green"};

int ctl_status_state(const char *name)
{
    for (int i = 0; name && i < CTL_CAM_STATES; i++)
        if (strcmp(name, state_names[i]) == 0)
            return i;
    return -1;
}

void ctl_status_page_escape(struct ctl_text *out, const char *s)
{
    if (!s)
        return;
    const char *run = s;
    for (; *s; s++) {
        const char *ent;
        switch (*s) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: continue;
        }
        ctl_text_put(out, run, (size_t)(s - run));
        ctl_text_puts(out, ent);
        run = s + 1;
    }
    ctl_text_put(out, run, (size_t)(s - run));
}

const char *ctl_status_page_bitrate(double bps, char *buf, size_t cap)
{
    if (!(bps >= 0)) /* NaN or negative: nothing sensible to show */
        bps = 0;
    if (bps < 1000)
        snprintf(buf, cap, "%.0f bit/s", bps);
    else if (bps < 1e6)
        snprintf(buf, cap, "%.1f kbit/s", bps / 1e3);
    else if (bps < 1e9)
        snprintf(buf, cap, "%.2f Mbit/s", bps / 1e6);
    else
        snprintf(buf, cap, "%.2f Gbit/s", bps / 1e9);
    return buf;
}

const char *ctl_status_page_ago(int64_t now, int64_t then, char *buf, size_t cap)
{
    if (then <= 0) {
        snprintf(buf, cap, "never");
        return buf;
    }
    int64_t d = now - then;
    if (d < 2)
        snprintf(buf, cap, "just now");
    else if (d < 120)
        snprintf(buf, cap, "%" PRId64 " s ago", d);
    else if (d < 2 * 3600)
        snprintf(buf, cap, "%" PRId64 " min ago", d / 60);
    else if (d < 2 * 86400)
        snprintf(buf, cap, "%" PRId64 " h ago", d / 3600);
    else
        snprintf(buf, cap, "%" PRId64 " d ago", d / 86400);
    return buf;
}

static void utc(int64_t t, char *buf, size_t cap)
{
    struct tm tm;
    time_t tt = (time_t)t;
    if (t <= 0 || !gmtime_r(&tt, &tm))
        snprintf(buf, cap, "-");
    else
        strftime(buf, cap, "%Y-%m-%d %H:%M:%SZ", &tm);
}

/* Shorthands: a literal, and an escaped value. */
static void lit(struct ctl_text *o, const char *s)
{
    ctl_text_puts(o, s);
}
static void esc(struct ctl_text *o, const char *s)
{
    ctl_status_page_escape(o, s);
}

static const char style[] =
    "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:0;background:#f4f5f7;"
    "color:#1d2330;font-size:14px}"
    "header{background:#1d2330;color:#fff;padding:14px 24px}"
    "header h1{margin:0;font-size:20px;font-weight:600}"
    "header p{margin:4px 0 0;color:#b8c0cc;font-size:12px}"
    "main{padding:16px 24px}"
    ".summary{display:flex;flex-wrap:wrap;gap:12px;margin-bottom:18px}"
    ".tile{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;"
    "min-width:150px}"
    ".tile .label{color:#5b6474;font-size:12px;text-transform:uppercase;letter-spacing:.04em}"
    ".tile .value{font-size:22px;font-weight:600;margin-top:2px}"
    ".tile .note{color:#5b6474;font-size:12px;margin-top:2px}"
    ".count{display:inline-block;margin-right:8px;font-size:12px}"
    ".dot{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:4px}"
    ".dot-red,.badge-red{background:#c62828}.dot-yellow,.badge-yellow{background:#f9c623}"
    ".dot-green,.badge-green{background:#2e7d32}.badge-unknown{background:#6b7280}"
    "table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dde1e7}"
    "th{text-align:left;background:#e9ecf1;font-size:12px;text-transform:uppercase;"
    "letter-spacing:.04em;color:#3b4352;padding:8px 10px}"
    "td{padding:8px 10px;border-top:1px solid #e6e9ee;vertical-align:top}"
    "td.num{text-align:right;white-space:nowrap}"
    ".serial{font-family:'DejaVu Sans Mono',monospace;font-weight:600}"
    ".badge{display:inline-block;min-width:52px;text-align:center;padding:2px 8px;"
    "border-radius:10px;color:#fff;font-weight:600;font-size:12px}"
    ".badge-yellow{color:#3a2f00}"
    ".online{color:#2e7d32;font-weight:600}.offline{color:#8a93a3}"
    "small{color:#5b6474}"
    "code,a.url{font-family:'DejaVu Sans Mono',monospace;font-size:12px}"
    ".ep{white-space:nowrap}"
    ".empty{padding:20px;text-align:center;color:#5b6474}";

static void tile_begin(struct ctl_text *o, const char *label)
{
    lit(o, "<div class=\"tile\"><div class=\"label\">");
    esc(o, label);
    lit(o, "</div><div class=\"value\">");
}

static void render_summary(struct ctl_text *o, const struct ctl_status_summary *s)
{
    char buf[64];

    lit(o, "<section class=\"summary\">");
    tile_begin(o, "Cameras");
    ctl_text_printf(o, "%u</div><div class=\"note\">", s->cameras);
    for (int i = CTL_CAM_STATES - 1; i >= 0; i--)
        ctl_text_printf(o, "<span class=\"count count-%s\"><span class=\"dot dot-%s\"></span>"
                           "%u %s</span>",
                        state_names[i], state_names[i], s->by_state[i], state_names[i]);
    lit(o, "</div></div>");

    tile_begin(o, "Tunnels online");
    ctl_text_printf(o, "%u</div><div class=\"note\">of %u registered</div></div>",
                    s->tunnels_online, s->cameras);
    tile_begin(o, "Open streams");
    ctl_text_printf(o, "%u</div><div class=\"note\">recorders pulling now</div></div>",
                    s->streams_open);
    tile_begin(o, "Relayed");
    esc(o, ctl_human_bytes((unsigned long long)s->bytes_relayed, buf, sizeof(buf)));
    lit(o, "</div><div class=\"note\">since the relay started</div></div>");
    tile_begin(o, "Data path");
    esc(o, s->data_path ? s->data_path : "-");
    ctl_text_printf(o, "</div><div class=\"note\">kernel TLS %s</div></div>",
                    s->ktls_available ? "available" : "not available");
    tile_begin(o, "Dispatcher");
    if (!s->have_dispatcher)
        lit(o, "none</div><div class=\"note\">no --dispatcher configured");
    else
        ctl_text_printf(o, "%s</div><div class=\"note\">%u registration%s not yet synced",
                        s->dispatcher_connected ? "connected" : "disconnected", s->unsynced,
                        s->unsynced == 1 ? "" : "s");
    lit(o, "</div></div></section>\n");
}

static void render_endpoints(struct ctl_text *o, const Camrelay__CameraInfo *ci)
{
    if (ci->n_endpoints == 0) {
        lit(o, "-");
        return;
    }
    for (size_t i = 0; i < ci->n_endpoints; i++) {
        const Camrelay__Endpoint *ep = ci->endpoints[i];
        const char *url = ep->url ? ep->url : "";
        lit(o, i ? "<br><span class=\"ep\">" : "<span class=\"ep\">");
        /* Only plain http URLs become links: nothing the page shows can run script. */
        if (strncmp(url, "http://", 7) == 0) {
            lit(o, "<a class=\"url\" href=\"");
            esc(o, url);
            lit(o, "\">");
            esc(o, url);
            lit(o, "</a>");
        } else {
            lit(o, "<code>");
            esc(o, url);
            lit(o, "</code>");
        }
        lit(o, "</span>");
    }
}

static void render_row(struct ctl_text *o, const struct ctl_status_summary *s,
                       const struct ctl_status_camera *c)
{
    const Camrelay__CameraInfo *ci = c->info;
    char buf[64];
    int st = ctl_status_state(ci->state);

    lit(o, "<tr><td class=\"serial\">");
    esc(o, ci->serial);
    /* The class comes from our own table, never from the value. */
    ctl_text_printf(o, "</td><td><span class=\"badge badge-%s\">",
                    st >= 0 ? state_names[st] : "unknown");
    esc(o, ci->state && *ci->state ? ci->state : "unknown");
    lit(o, "</span></td><td>");
    lit(o, ci->online ? "<span class=\"online\">online</span>"
                      : "<span class=\"offline\">offline</span>");
    if (ci->open_streams)
        ctl_text_printf(o, "<br><small>%u stream%s</small>", ci->open_streams,
                        ci->open_streams == 1 ? "" : "s");
    lit(o, "</td><td>");
    if (ci->online) {
        lit(o, "now<br><small>up since ");
    } else {
        esc(o, ctl_status_page_ago(s->now_unix, ci->last_seen_unix, buf, sizeof(buf)));
        lit(o, "<br><small>");
    }
    utc(ci->last_seen_unix, buf, sizeof(buf));
    esc(o, buf);
    lit(o, "</small></td><td>");
    esc(o, ci->site_addr && *ci->site_addr ? ci->site_addr : "-");
    lit(o, "</td><td class=\"num\">");
    if (ci->online || c->bitrate_bps > 0)
        esc(o, ctl_status_page_bitrate(c->bitrate_bps, buf, sizeof(buf)));
    else
        lit(o, "-");
    lit(o, "</td><td class=\"num\">");
    esc(o, ctl_human_bytes((unsigned long long)ci->bytes_relayed, buf, sizeof(buf)));
    lit(o, "</td><td>");
    render_endpoints(o, ci);
    lit(o, "</td><td>");
    esc(o, ci->recorder && *ci->recorder ? ci->recorder : "-");
    lit(o, "</td></tr>\n");
}

void ctl_status_page_render(struct ctl_text *o, const struct ctl_status_summary *s,
                            const struct ctl_status_camera *cams, size_t n)
{
    char now[40];

    utc(s->now_unix, now, sizeof(now));
    lit(o, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    ctl_text_printf(o, "<meta http-equiv=\"refresh\" content=\"%d\">\n",
                    CTL_STATUS_PAGE_REFRESH_S);
    lit(o, "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
           "<title>camrelay relay ");
    esc(o, s->relay_name);
    lit(o, " - status</title>\n<style>");
    lit(o, style);
    lit(o, "</style></head>\n<body>\n<header><h1>camrelay relay ");
    esc(o, s->relay_name);
    lit(o, "</h1><p>Status at ");
    esc(o, now);
    ctl_text_printf(o, " &middot; refreshes every %d s &middot; read-only</p></header>\n<main>\n",
                    CTL_STATUS_PAGE_REFRESH_S);
    render_summary(o, s);
    lit(o, "<table><thead><tr><th>Serial</th><th>State</th><th>Tunnel</th><th>Last seen</th>"
           "<th>Site address</th><th>Bitrate</th><th>Relayed</th><th>Endpoints</th>"
           "<th>Recorder</th></tr></thead>\n<tbody>\n");
    for (size_t i = 0; i < n; i++)
        render_row(o, s, &cams[i]);
    if (n == 0)
        lit(o, "<tr><td class=\"empty\" colspan=\"9\">No cameras registered on this relay "
               "(camrelayctl camera register).</td></tr>\n");
    lit(o, "</tbody></table>\n</main>\n</body></html>\n");
}
