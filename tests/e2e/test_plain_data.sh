#!/usr/bin/env bash
# Plaintext data connections (agent --data-plain, relay --allow-plain-data) end to end, on
# loopback in a private network namespace (every port is ours alone; the NAT shape is
# test_core_flow's): a dispatcher, a relay with --allow-plain-data and two simulated cameras,
# one whose agent opens plaintext data connections and one on TLS. The plaintext camera is
# recorded for 4 s with ffmpeg and its web page fetched through the relay; its stream took the
# plain path (camera list and /metrics). The TLS camera on the same relay still works
# and its stream took a TLS path. Then the relay is restarted without --allow-plain-data: the
# plaintext camera's stream is refused at once (ffmpeg fails well under the 10 s stream-open
# deadline), the agent and the relay say why, and the TLS camera still works.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ffmpeg ffprobe curl ip

T=$E2E_TMP
NS=$NS_CENTRAL # named like lib.sh's namespaces, so run-all.sh's sweep finds it after a kill
H=127.0.0.1
FPS=8
SECS=4
REFUSE_MAX_MS=5000

loopback_ns "$NS"

in_ns() { ns_run "$NS" "$@"; }
frames() {
    ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
        -of default=nw=1:nk=1 "$1"
}
# record SERIAL SECONDS FILE: ffmpeg pulls the camera's RTSP endpoint through the relay.
record() {
    local url
    url=$(camera_endpoint "$1" rtsp)
    in_ns timeout 30 ffmpeg -nostdin -v error -y -rtsp_transport tcp -i "$url" -t "$2" -c copy \
        "$3" 2>"$3.err" || { cat "$3.err" >&2; fail "ffmpeg could not record $1 from $url"; }
}
# check_recording FILE MIN-FRAMES WHAT: enough frames, and it decodes without an error.
check_recording() {
    local n errors
    n=$(frames "$1")
    [ -n "$n" ] && [ "$n" -ge "$2" ] || fail "$3: recorded ${n:-no} frames, expected at least $2"
    errors=$(ffmpeg -nostdin -v error -i "$1" -f null - 2>&1 | wc -l)
    [ "$errors" -eq 0 ] || fail "$3: the recording does not decode cleanly ($errors error lines)"
    RECORDED_FRAMES=$n
}
web_page() { # SERIAL: the camera's web page through the relay must be the simulator's
    local page
    page=$(in_ns curl -s --max-time 5 "$(camera_endpoint "$1" http)" || true)
    echo "$page" | grep -q "camrelay simulated camera $1" ||
        fail "$1: camera web page not served through the relay: ${page:0:200}"
}
metric() { # NAME-WITH-LABELS: its value on the relay's /metrics ("" if absent)
    in_ns curl -sS --max-time 5 "http://$H:9090/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------- the stack
stack_files "$T" $H "$FPS"

ns_spawn "$NS" "$T/dispatch.log" "$BIN/camrelay-dispatch" --listen $H:7443 \
    --cert "$T/pki/dispatch.pem" --key "$T/pki/dispatch.key" --db "$T/dispatch.db" \
    --mgmt-socket "$T/dispatch.sock" --http-listen ""
wait_for_port "$NS" $H 7443 10 || { show_log "$T/dispatch.log"; fail "dispatcher did not start"; }
"$BIN/camrelayctl" --dispatcher-socket "$T/dispatch.sock" account add relay1 \
    --password-file "$T/relay1.password" >/dev/null

# start_relay N [FLAGS...]: relay run N, its log $T/relay.log.N; registrations live in the db.
start_relay() {
    local run=$1; shift
    ns_spawn "$NS" "$T/relay.log.$run" "$BIN/camrelayd" --name relay1 \
        --listen-external $H:8443 --public-addr $H:8443 --internal-host $H \
        --port-range 20000-20099 --db "$T/relay.db" --cert "$T/pki/relay.pem" \
        --key "$T/pki/relay.key" --ca "$T/pki/ca.pem" --dispatcher $H:7443 \
        --account-password-file "$T/relay1.password" --mgmt-socket "$T/relay.sock" \
        --http-listen $H:9090 --keepalive-ms 1000 --log-level info "$@"
    RELAY_PID=$SPAWNED_PID
    wait_for_port "$NS" $H 8443 10 || { show_log "$T/relay.log.$run"; fail "relay did not start"; }
    wait_for_port "$NS" $H 9090 10 || { show_log "$T/relay.log.$run"; fail "relay's /metrics port did not open"; }
}
start_relay 1 --allow-plain-data
pass "dispatcher up; relay up with --allow-plain-data"

cat >"$T/agent.secrets" <<EOF
oak=OAK-PLAIN-7c41
user=admin
password=cam-secret-plain
EOF
chmod 600 "$T/agent.secrets"
for s in CAMP-0001 CAMT-0001; do
    ctl camera register $s --oak OAK-PLAIN-7c41 --user admin --password cam-secret-plain >/dev/null
done
agent() { # NAME SERIAL-PREFIX [extra flags]
    local name=$1 serial=$2; shift 2
    ns_spawn "$NS" "$T/agent-$name.log" "$BIN/camrelay-agent" --serial "$serial" \
        --secrets-file "$T/agent.secrets" --dispatcher $H:7443 --ca "$T/pki/ca.pem" \
        --state-dir "$T/agent-$name" --simulate 1 --sim-clip "$T/clip.mp4" --connect "$@"
}
agent plain CAMP --data-plain
agent tls CAMT
for s in CAMP-0001 CAMT-0001; do
    n=plain; [ $s = CAMT-0001 ] && n=tls
    wait_for_log "$T/agent-$n.log" "tunnel up serial=$s" 30 ||
        { show_log "$T/agent-$n.log"; fail "$s never came up"; }
    wait_camera_state $s yellow 10
    ctl camera attach $s --recorder rec1 >/dev/null
    wait_camera_state $s green 5
done
pass "CAMP-0001 (agent --data-plain) and CAMT-0001 (agent on TLS) registered, online, attached: green"

# ------------------------------------------- 1. the plaintext camera on an allowing relay
record CAMP-0001 $SECS "$T/plain.mp4"
check_recording "$T/plain.mp4" 25 "CAMP-0001 (plaintext)"
pass "$SECS s recorded from CAMP-0001 over a plaintext data connection: $RECORDED_FRAMES frames, decodes cleanly"

web_page CAMP-0001
pass "CAMP-0001's web page served through the relay over a plaintext data connection"

path=$(camera_field CAMP-0001 data_path)
[ "$path" = "plain" ] || fail "CAMP-0001's stream took the '$path' path, expected plain"
bytes=$(camera_field CAMP-0001 bytes_relayed)
[ -n "$bytes" ] && [ "$bytes" -gt 0 ] || fail "camera list counts '${bytes}' bytes relayed for CAMP-0001"
streams=$(metric 'camrelay_streams_by_path_total{path="plain"}')
[ -n "$streams" ] && [ "$streams" -ge 1 ] ||
    fail "/metrics: camrelay_streams_by_path_total{path=\"plain\"} is '${streams}', expected >= 1"
# A camera's frames fit a ring buffer: they are copied through the ring, not spliced.
copied=$(metric 'camrelay_plain_reads_total{how="copied"}')
[ -n "$copied" ] && [ "$copied" -ge 25 ] ||
    fail "/metrics: camrelay_plain_reads_total{how=\"copied\"} is '${copied}', expected >= 25 (a read per frame)"
pass "CAMP-0001: data_path plain, $bytes bytes relayed; /metrics counts $streams plain streams, $copied reads copied"

# ------------------------------------------------- 3. a TLS camera on the same relay
record CAMT-0001 2 "$T/tls.mp4"
check_recording "$T/tls.mp4" 12 "CAMT-0001 (TLS)"
web_page CAMT-0001
path=$(camera_field CAMT-0001 data_path)
# No TLS ULP in the kernel: our in-place record layer; with one: kTLS and splice.
[ "$path" = "tls-inplace" ] || [ "$path" = "ktls-splice" ] ||
    fail "CAMT-0001's stream took the '$path' path, expected tls-inplace or ktls-splice"
tls_streams=$(metric "camrelay_streams_by_path_total{path=\"$path\"}")
[ -n "$tls_streams" ] && [ "$tls_streams" -ge 1 ] ||
    fail "/metrics: camrelay_streams_by_path_total{path=\"$path\"} is '${tls_streams}'"
grep -q "relay refused a plaintext data connection" "$T/agent-plain.log" "$T/agent-tls.log" &&
    fail "a data connection was refused by the relay that allows plaintext"
pass "CAMT-0001 (TLS) on the same relay: 2 s recording with $RECORDED_FRAMES frames, web page, data_path $path"

# ------------------------------------------ 2. the same relay without --allow-plain-data
stop_pid "$RELAY_PID" 10
start_relay 2
wait_camera_state CAMP-0001 green 20
wait_camera_state CAMT-0001 green 20
pass "relay restarted without --allow-plain-data: both cameras back (green)"

url=$(camera_endpoint CAMP-0001 rtsp)
t0=$(now_ms)
if in_ns timeout 15 ffmpeg -nostdin -v error -y -rtsp_transport tcp -i "$url" -t 2 -c copy \
    "$T/refused.mp4" 2>"$T/refused.err"; then
    fail "ffmpeg recorded CAMP-0001 over plaintext from a relay without --allow-plain-data"
fi
took=$(($(now_ms) - t0))
[ "$took" -lt "$REFUSE_MAX_MS" ] ||
    fail "ffmpeg took $took ms to fail on the refused stream, expected < $REFUSE_MAX_MS ms"
info "ffmpeg: $(tr '\n' ' ' <"$T/refused.err" | cut -c1-160)"
wait_for_log "$T/agent-plain.log" "relay refused a plaintext data connection" 5 ||
    { show_log "$T/agent-plain.log"; fail "the plain agent did not log the refusal clearly"; }
wait_for_log "$T/relay.log.2" "plaintext data connection refused: allow_plain_data is off" 5 ||
    { show_log "$T/relay.log.2"; fail "the relay did not log why it refused the plaintext data connection"; }
pass "plaintext stream refused in $took ms; agent: '$(grep -o 'relay refused a plaintext data connection[^(]*' "$T/agent-plain.log" | head -n1 | sed 's/ *$//')'; relay: 'plaintext data connection refused: allow_plain_data is off'"

# The refusal is the plaintext connection's alone: the tunnel and the TLS camera carry on.
web_page CAMT-0001
[ "$(camera_field CAMP-0001 online)" = true ] || fail "CAMP-0001's tunnel went down after the refusal"
pass "after the refusal CAMP-0001's tunnel stays up and CAMT-0001 (TLS) is still served"
