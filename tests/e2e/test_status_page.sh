#!/usr/bin/env bash
# The relay's status page and metrics, as a person and as Prometheus see them: a dispatcher, a
# relay and an agent simulating two cameras on loopback (in a private network namespace, so the
# default HTTP ports 9090/9091 and every other port are ours alone); both cameras registered,
# one attached and recorded for 3 s with ffmpeg; then the status page opened in headless
# Chromium (the rendered DOM and a screenshot) and /metrics, /api/cameras and the dispatcher's
# /metrics read with curl. No password, OAK or user name may appear anywhere.
#
# Environment: STATUS_PAGE_SCREENSHOT=FILE keeps a copy of the screenshot (the temp dir goes).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ffmpeg ffprobe curl ip chromium

T=$E2E_TMP
NS=$NS_CENTRAL # named like lib.sh's namespaces, so run-all.sh's sweep finds it after a kill
H=127.0.0.1
FPS=8
OAK=OAK-STATUS-9f1c2e
CAMUSER=camuser-q7w
CAMPASS=campass-Zx81-secret
SECRETS_RE="$OAK|$CAMUSER|$CAMPASS"

loopback_ns "$NS"

in_ns() { ns_run "$NS" "$@"; }
http() { in_ns curl -sS --max-time 5 "$@"; }
chrome() { # ARGS... URL: headless Chromium inside the namespace, a fresh profile each time
    local profile
    profile=$(mktemp -d "$T/chromium.XXXXXX")
    in_ns timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" "$@" 2>>"$T/chromium.log"
}
metric() { # NAME-WITH-LABELS FILE -> value ("" if absent)
    awk -v k="$1" '$1 == k { print $2 }' "$2"
}

# ---------------------------------------------------------------------------- the stack
stack_files "$T" $H "$FPS"

# Both daemons on their default HTTP ports (127.0.0.1:9091 and :9090): the defaults are tested.
ns_spawn "$NS" "$T/dispatch.log" "$BIN/camrelay-dispatch" --listen $H:7443 \
    --cert "$T/pki/dispatch.pem" --key "$T/pki/dispatch.key" --db "$T/dispatch.db" \
    --mgmt-socket "$T/dispatch.sock"
DISPATCH_PID=$SPAWNED_PID
wait_for_port "$NS" $H 7443 10 || { show_log "$T/dispatch.log"; fail "dispatcher did not start"; }
"$BIN/camrelayctl" --dispatcher-socket "$T/dispatch.sock" account add relay1 \
    --password-file "$T/relay1.password" >/dev/null
ns_spawn "$NS" "$T/relay.log" "$BIN/camrelayd" --name relay1 --listen-external $H:8443 \
    --public-addr $H:8443 --internal-host $H --port-range 20000-20099 --db "$T/relay.db" \
    --cert "$T/pki/relay.pem" --key "$T/pki/relay.key" --ca "$T/pki/ca.pem" \
    --dispatcher $H:7443 --account-password-file "$T/relay1.password" \
    --mgmt-socket "$T/relay.sock" --keepalive-ms 1000
RELAY_PID=$SPAWNED_PID
wait_for_port "$NS" $H 8443 10 || { show_log "$T/relay.log"; fail "relay did not start"; }
wait_for_port "$NS" $H 9090 10 || { show_log "$T/relay.log"; fail "relay's HTTP port 9090 did not open"; }
wait_for_port "$NS" $H 9091 10 || { show_log "$T/dispatch.log"; fail "dispatcher's HTTP port 9091 did not open"; }
pass "dispatcher and relay up, HTTP ports 9091 and 9090 open (the defaults)"

for s in CAMS-0001 CAMS-0002; do
    ctl camera register $s --oak $OAK --user $CAMUSER --password $CAMPASS >/dev/null
done
cat >"$T/agent.secrets" <<EOF
oak=$OAK
user=$CAMUSER
password=$CAMPASS
EOF
chmod 600 "$T/agent.secrets"
ns_spawn "$NS" "$T/agent.log" "$BIN/camrelay-agent" --serial CAMS --secrets-file "$T/agent.secrets" \
    --dispatcher $H:7443 --ca "$T/pki/ca.pem" --state-dir "$T/agent-state" --simulate 2 \
    --sim-clip "$T/clip.mp4" --connect
AGENT_PID=$SPAWNED_PID
for s in CAMS-0001 CAMS-0002; do
    wait_for_log "$T/agent.log" "tunnel up serial=$s" 30 || { show_log "$T/agent.log"; fail "$s never came up"; }
done
ctl camera attach CAMS-0001 --recorder rec1 >/dev/null
pass "CAMS-0001 and CAMS-0002 registered and online; CAMS-0001 attached to rec1"

# One more camera with the wrong password: the dispatcher counts the refused proof.
printf 'oak=%s\nuser=%s\npassword=wrong-password\n' "$OAK" "$CAMUSER" >"$T/wrong.secrets"
ns_spawn "$NS" "$T/agent-wrong.log" "$BIN/camrelay-agent" --serial CAMS --secrets-file "$T/wrong.secrets" \
    --dispatcher $H:7443 --ca "$T/pki/ca.pem" --state-dir "$T/agent-wrong" --simulate 1 \
    --sim-clip "$T/clip.mp4" --connect
WRONG_PID=$SPAWNED_PID
wait_for_log "$T/agent-wrong.log" "authentication failed" 20 || { show_log "$T/agent-wrong.log"; fail "wrong password not refused"; }
stop_pid "$WRONG_PID"

rtsp=$(ctl --json camera list CAMS-0001 | "$PYTHON" -c \
    'import json,sys; print([e["url"] for e in json.load(sys.stdin)[0]["endpoints"] if e["service"]=="rtsp"][0])')
in_ns timeout 60 ffmpeg -nostdin -v error -y -rtsp_transport tcp -i "$rtsp" -t 3 -c copy "$T/rec.mp4" ||
    fail "ffmpeg could not record $rtsp"
n=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
    -of default=nw=1:nk=1 "$T/rec.mp4")
[ "$n" -ge $((3 * FPS - 2)) ] || fail "the 3 s recording has $n frames"
pass "3 s recorded from $rtsp through the relay: $n frames"

# Sizing against what the relay measures (the bitrate is smoothed over ~5 s, so it is still
# well above zero right after the recording): a generous plan fits, a 50 kbit/s plan does not.
ctl size --sites 1 --cameras-per-site 2 --kbps 4000 --live >"$T/live-ok.txt" ||
    { cat "$T/live-ok.txt"; fail "size --live flagged cameras against a 4 Mbit/s plan"; }
grep -q "live: 2 cameras measured" "$T/live-ok.txt" || fail "size --live did not measure 2 cameras: $(cat "$T/live-ok.txt")"
if ctl size --sites 1 --cameras-per-site 2 --kbps 50 --live >"$T/live-over.txt"; then
    fail "size --live did not flag the recorded camera against a 50 kbit/s plan"
fi
grep -q "camera CAMS-0001.*over plan" "$T/live-over.txt" || fail "size --live: $(cat "$T/live-over.txt")"
pass "size --live: the recorded camera is within a 4 Mbit/s plan and flagged against 50 kbit/s"

# ------------------------------------------------------------- the page, as a person sees it
chrome --dump-dom "http://$H:9090/" >"$T/dom.html" || { tail -n 20 "$T/chromium.log"; fail "chromium could not load the status page"; }
[ -s "$T/dom.html" ] || fail "chromium rendered an empty page"
chrome --screenshot="$T/status.png" --window-size=1280,800 "http://$H:9090/" >/dev/null ||
    { tail -n 20 "$T/chromium.log"; fail "chromium could not take a screenshot"; }
[ "$(stat -c %s "$T/status.png" 2>/dev/null || echo 0)" -gt 10000 ] || fail "the screenshot is missing or blank"
if [ -n "${STATUS_PAGE_SCREENSHOT:-}" ]; then cp "$T/status.png" "$STATUS_PAGE_SCREENSHOT"; fi

# The table as a person reads it: each row's cells as text, plus the badges' classes.
ctl --json camera list >"$T/cameras.json"
"$PYTHON" - "$T/dom.html" "$T/cameras.json" <<'PY' || fail "the status page does not show what it should (see above)"
import html.parser, json, re, sys

class Table(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.row, self.cell, self.in_body = [], None, None, False
        self.badges, self.refresh, self.title = [], None, ""
        self._in_title = False
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "meta" and a.get("http-equiv", "").lower() == "refresh":
            self.refresh = a.get("content")
        if tag == "title":
            self._in_title = True
        if tag == "tbody":
            self.in_body = True
        if self.in_body and tag == "tr":
            self.row = []
        if self.row is not None and tag == "td":
            self.cell = []
        if self.row is not None and tag == "span" and "badge" in a.get("class", "").split():
            self.badges.append(a["class"])
        if self.cell is not None and tag == "br":
            self.cell.append(" ")
    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag == "td" and self.cell is not None:
            self.row.append(re.sub(r"\s+", " ", "".join(self.cell)).strip())
            self.cell = None
        if tag == "tr" and self.row is not None:
            self.rows.append(self.row)
            self.row = None
        if tag == "tbody":
            self.in_body = False
    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self.cell is not None:
            self.cell.append(data)

dom = open(sys.argv[1]).read()
cams = {c["serial"]: c for c in json.load(open(sys.argv[2]))}
p = Table()
p.feed(dom)
errors = []
def check(cond, what):
    if not cond:
        errors.append(what)

check(p.refresh == "5", f"self-refresh meta is {p.refresh!r}, expected 5 s")
check("relay1" in p.title, f"title {p.title!r} does not name the relay")
rows = {r[0]: r for r in p.rows if r}
check(set(rows) == {"CAMS-0001", "CAMS-0002"}, f"table rows are {sorted(rows)}")
check(sorted(p.badges) == ["badge badge-green", "badge badge-yellow"], f"badges are {p.badges}")
# serial, state, tunnel, last seen, site, bitrate, relayed, endpoints, recorder
for serial, state, recorder in (("CAMS-0001", "green", "rec1"), ("CAMS-0002", "yellow", "-")):
    r = rows.get(serial)
    if not r:
        continue
    check(len(r) == 9, f"{serial}: {len(r)} cells: {r}")
    check(r[1] == state, f"{serial}: state cell {r[1]!r}, expected {state}")
    check(r[2].startswith("online"), f"{serial}: tunnel cell {r[2]!r}")
    check(r[3].startswith("now") and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", r[3]),
          f"{serial}: last seen {r[3]!r}")
    check(r[4] == cams[serial]["site_addr"], f"{serial}: site {r[4]!r} vs {cams[serial]['site_addr']!r}")
    for e in cams[serial]["endpoints"]:
        check(e["url"] in r[7], f"{serial}: endpoint {e['url']} not shown ({r[7]!r})")
    check(r[8] == recorder, f"{serial}: recorder {r[8]!r}")
a = rows.get("CAMS-0001", [""] * 9)
check(re.fullmatch(r"[\d.]+ (bit|kbit|Mbit)/s", a[5]) and a[5] != "0 bit/s",
      f"CAMS-0001: bitrate {a[5]!r}, expected a non-zero rate")
check(re.fullmatch(r"[\d.]+ (KiB|MiB)", a[6]), f"CAMS-0001: relayed {a[6]!r}, expected KiB or MiB")
for e in errors:
    print("status page:", e, file=sys.stderr)
print("CAMS-0001:", " | ".join(a))
sys.exit(1 if errors else 0)
PY
grep -Eq "$SECRETS_RE" "$T/dom.html" && fail "a secret appears in the status page"
pass "status page (Chromium DOM): both cameras, one green and one yellow badge, online, endpoint URLs, bitrate and bytes for CAMS-0001, self-refreshing, no secret"

# ------------------------------------------------------------------------------- /metrics
http "http://$H:9090/metrics" >"$T/metrics.txt" || fail "GET /metrics failed"
grep -Eq "$SECRETS_RE" "$T/metrics.txt" && fail "a secret appears in /metrics"
want() { # NAME VALUE
    local v
    v=$(metric "$1" "$T/metrics.txt")
    [ "$v" = "$2" ] || { grep -v '^#' "$T/metrics.txt" >&2; fail "/metrics: $1 is '${v}', expected $2"; }
}
nonzero() { # NAME
    local v
    v=$(metric "$1" "$T/metrics.txt")
    "$PYTHON" -c 'import sys; sys.exit(0 if float(sys.argv[1] or 0) > 0 else 1)' "${v:-0}" ||
        fail "/metrics: $1 is '${v}', expected > 0"
}
want camrelay_tunnels_online 2
want 'camrelay_cameras{state="green"}' 1
want 'camrelay_cameras{state="yellow"}' 1
want 'camrelay_cameras{state="red"}' 0
want 'camrelay_camera_online{serial="CAMS-0001"}' 1
want 'camrelay_camera_online{serial="CAMS-0002"}' 1
# This kernel has no TLS ULP: new TLS streams open their records in place, and they did.
if [ "$(metric camrelay_ktls_available "$T/metrics.txt")" = 1 ]; then path=ktls-splice; else path=tls-inplace; fi
want "camrelay_data_path_info{path=\"$path\"}" 1
nonzero "camrelay_streams_by_path_total{path=\"$path\"}"
want 'camrelay_streams_by_path_total{path="tls-bio"}' 0
want camrelay_dispatcher_connected 1
want camrelay_cameras_unsynced 0
want camrelay_tunnels_accepted_total 2
nonzero camrelay_bytes_relayed_total
nonzero camrelay_streams_opened_total
nonzero 'camrelay_camera_bytes_relayed_total{serial="CAMS-0001"}'
nonzero 'camrelay_camera_bitrate_bps{serial="CAMS-0001"}'
nonzero 'camrelay_worker_completions_total{worker="0"}'
grep -qx '# TYPE camrelay_bytes_relayed_total counter' "$T/metrics.txt" || fail "/metrics: no TYPE line for camrelay_bytes_relayed_total"
grep -q '^# HELP camrelay_tunnels_online ' "$T/metrics.txt" || fail "/metrics: no HELP line for camrelay_tunnels_online"
ktls=$(metric camrelay_ktls_available "$T/metrics.txt")
[ "$ktls" = 0 ] || [ "$ktls" = 1 ] || fail "/metrics: camrelay_ktls_available is '$ktls'"
ctype=$(http -o /dev/null -w '%{content_type}' "http://$H:9090/metrics")
case "$ctype" in "text/plain; version=0.0.4"*) ;; *) fail "/metrics content type is '$ctype'" ;; esac
pass "relay /metrics: tunnels_online 2, cameras green 1 / yellow 1, CAMS-0001 $(metric 'camrelay_camera_bytes_relayed_total{serial="CAMS-0001"}' "$T/metrics.txt") bytes at $(metric 'camrelay_camera_bitrate_bps{serial="CAMS-0001"}' "$T/metrics.txt" | cut -d. -f1) bit/s, HELP/TYPE lines, format 0.0.4, no secret"

code=$(http -o /dev/null -w '%{http_code}' -X POST --data x "http://$H:9090/metrics")
[ "$code" = 405 ] || fail "POST /metrics answered $code, expected 405"
code=$(http -o /dev/null -w '%{http_code}' "http://$H:9090/no-such-page")
[ "$code" = 404 ] || fail "GET /no-such-page answered $code, expected 404"
pass "read-only: POST answered 405, an unknown path 404"

http "http://$H:9090/api/cameras" >"$T/api.json" || fail "GET /api/cameras failed"
grep -Eq "$SECRETS_RE" "$T/api.json" && fail "a secret appears in /api/cameras"
ctl --json camera list >"$T/ctl.json"
"$PYTHON" - "$T/api.json" "$T/ctl.json" <<'PY' || fail "/api/cameras differs from camrelayctl --json camera list"
import json, sys
api, cli = (json.load(open(p)) for p in sys.argv[1:3])
live = {"bytes_relayed", "last_seen_unix", "open_streams", "bitrate_bps"}  # move between reads
strip = lambda l: [{k: v for k, v in c.items() if k not in live} for c in l]
if strip(api) != strip(cli) or [sorted(c) for c in api] != [sorted(c) for c in cli]:
    print(json.dumps(api, indent=1), json.dumps(cli, indent=1), sep="\n", file=sys.stderr)
    sys.exit(1)
PY
pass "/api/cameras: the same objects as camrelayctl --json camera list"

http "http://$H:9091/metrics" >"$T/dispatch-metrics.txt" || fail "GET dispatcher /metrics failed"
grep -Eq "$SECRETS_RE" "$T/dispatch-metrics.txt" && fail "a secret appears in the dispatcher's /metrics"
dm() { metric "$1" "$T/dispatch-metrics.txt"; }
[ "$(dm camrelay_dispatch_relays_known)" = 1 ] || fail "dispatcher: relays_known $(dm camrelay_dispatch_relays_known)"
[ "$(dm camrelay_dispatch_relays_online)" = 1 ] || fail "dispatcher: relays_online $(dm camrelay_dispatch_relays_online)"
[ "$(dm camrelay_dispatch_cameras_registered)" = 2 ] || fail "dispatcher: cameras_registered $(dm camrelay_dispatch_cameras_registered)"
[ "$(dm camrelay_dispatch_agents_held)" = 0 ] || fail "dispatcher: agents_held $(dm camrelay_dispatch_agents_held)"
[ "$(dm camrelay_dispatch_dispatches_total)" -ge 2 ] || fail "dispatcher: dispatches_total $(dm camrelay_dispatch_dispatches_total)"
[ "$(dm 'camrelay_dispatch_auth_failures_total{link="agent"}')" -ge 1 ] || fail "dispatcher: the wrong password was not counted"
[ "$(dm 'camrelay_dispatch_auth_failures_total{link="relay"}')" = 0 ] || fail "dispatcher: relay auth failures counted"
[ "$(dm camrelay_dispatch_connections_refused_total)" = 0 ] || fail "dispatcher: connections refused"
pass "dispatcher /metrics: 1 relay known and online, 2 cameras, $(dm camrelay_dispatch_dispatches_total) dispatches, $(dm 'camrelay_dispatch_auth_failures_total{link="agent"}') agent auth failure(s), no secret"

stop_pid "$AGENT_PID"
stop_pid "$RELAY_PID" 10 || fail "camrelayd did not stop cleanly"
stop_pid "$DISPATCH_PID" 10 || fail "camrelay-dispatch did not stop cleanly"
grep -q "stopped" "$T/relay.log" || { show_log "$T/relay.log"; fail "camrelayd did not log its stop"; }
pass "stopped agent, relay and dispatcher by pid"
