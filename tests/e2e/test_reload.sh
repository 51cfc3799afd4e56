#!/usr/bin/env bash
# Reload without dropping tunnels: camrelayd reads its settings from a config file; while an
# 8 s ffmpeg recording runs through the relay, its certificate is renewed (same CA, a new
# serial and key), the config file's log level goes to debug, the keepalive interval (for new
# tunnels) changes and a setting that cannot be reloaded (listen-external) is changed too; then SIGHUP, and then `camrelayctl reload` after
# the management token was rotated. The recording must have every frame, the camera's tunnel
# must stay up, new TLS connections must see the new certificate (openssl s_client before and
# after, a new stream through the agent afterwards), the old token must stop working, and the
# relay's log must show the reload, the new level and the restart-needed warning. A broken
# config file is refused as a whole.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd ffmpeg ffprobe curl ip openssl

T=$E2E_TMP
NS=$NS_CENTRAL # named like lib.sh's namespaces, so run-all.sh's sweep finds it after a kill
H=127.0.0.1
FPS=8
RECORD_S=8

loopback_ns "$NS"

tcp_ctl() { # TOKEN-FILE ARGS...: the TCP+TLS management listener
    local tok=$1; shift
    ns_run "$NS" "$BIN/camrelayctl" --relay $H:9443 --ca "$T/pki/ca.pem" --token-file "$tok" "$@"
}
frames() {
    ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
        -of default=nw=1:nk=1 "$1"
}
# served_cert PORT: "SERIAL FINGERPRINT VERIFY" of the certificate a new TLS connection sees.
served_cert() {
    local pem
    pem=$(ns_run "$NS" timeout 10 openssl s_client -connect "$H:$1" -CAfile "$T/pki/ca.pem" \
        -verify_return_error -showcerts </dev/null 2>/dev/null) || return 1
    printf '%s\n' "$pem" | openssl x509 -noout -serial -fingerprint -sha256 |
        sed -e 's/^serial=//' -e 's/^.*Fingerprint=//' | tr -d ':' | tr '\n' ' '
    printf '%s\n' "$pem" | grep -q "Verify return code: 0 (ok)" && echo verified || echo unverified
}
log_lines() { wc -l <"$T/relay.log"; }

# ---------------------------------------------------------------------------- the stack
stack_files "$T" $H "$FPS"
head -c 24 /dev/urandom | base64 >"$T/mgmt.token"

ns_spawn "$NS" "$T/dispatch.log" "$BIN/camrelay-dispatch" --listen $H:7443 \
    --cert "$T/pki/dispatch.pem" --key "$T/pki/dispatch.key" --db "$T/dispatch.db" \
    --mgmt-socket "$T/dispatch.sock"
wait_for_port "$NS" $H 7443 10 || { show_log "$T/dispatch.log"; fail "dispatcher did not start"; }
"$BIN/camrelayctl" --dispatcher-socket "$T/dispatch.sock" account add relay1 \
    --password-file "$T/relay1.password" >/dev/null

# Everything in the config file, so that editing it is what a reload sees (flags would win).
write_conf() { # LOG-LEVEL LISTEN-EXTERNAL TOKEN-FILE KEEPALIVE-MS
    cat >"$T/relay.conf" <<EOF
# camrelayd settings for test_reload
name = relay1
listen-external = $2
public-addr = $H:8443
internal-host = $H
port-range = 20000-20099
db = $T/relay.db
cert = $T/pki/relay.pem
key = $T/pki/relay.key
ca = $T/pki/ca.pem
dispatcher = $H:7443
account-password-file = $T/relay1.password
mgmt-socket = $T/relay.sock
mgmt-listen = $H:9443
mgmt-token-file = $3
http-listen = $H:9090
keepalive-ms = $4
log-level = $1
EOF
}
write_conf info "$H:8443" "$T/mgmt.token" 1000
ns_spawn "$NS" "$T/relay.log" "$BIN/camrelayd" --config "$T/relay.conf"
RELAY_PID=$SPAWNED_PID
wait_for_port "$NS" $H 8443 10 || { show_log "$T/relay.log"; fail "relay did not start"; }

ctl camera register CAMR-0001 --oak OAK-RELOAD-1 --user admin --password reload-pass >/dev/null
printf 'oak=OAK-RELOAD-1\nuser=admin\npassword=reload-pass\n' >"$T/agent.secrets"
chmod 600 "$T/agent.secrets"
ns_spawn "$NS" "$T/agent.log" "$BIN/camrelay-agent" --serial CAMR --secrets-file "$T/agent.secrets" \
    --dispatcher $H:7443 --ca "$T/pki/ca.pem" --state-dir "$T/agent-state" --simulate 1 \
    --sim-clip "$T/clip.mp4" --connect
AGENT_PID=$SPAWNED_PID
wait_for_log "$T/agent.log" "tunnel up serial=CAMR-0001" 30 || { show_log "$T/agent.log"; fail "CAMR-0001 never came up"; }
ctl camera attach CAMR-0001 --recorder rec1 >/dev/null
grep -q " DEBUG " "$T/relay.log" && fail "debug lines logged at log-level info"
read -r serial_before fp_before verify_before <<<"$(served_cert 8443)" || fail "openssl s_client could not connect"
[ "$verify_before" = verified ] || fail "the relay's certificate does not verify against the CA"
tcp_ctl "$T/mgmt.token" camera list >/dev/null || fail "TCP management with the token failed"
pass "stack up from $T/relay.conf (log-level info); relay certificate serial $serial_before"

# ---------------------------------------------------- a recording, and reloads in its middle
url=$(ctl --json camera list CAMR-0001 | "$PYTHON" -c \
    'import json,sys; print([e["url"] for e in json.load(sys.stdin)[0]["endpoints"] if e["service"]=="rtsp"][0])')
ns_run "$NS" timeout 60 ffmpeg -nostdin -v error -y -rtsp_transport tcp -i "$url" -t $RECORD_S \
    -c copy "$T/rec.mp4" >"$T/ffmpeg.log" 2>&1 &
FFMPEG_PID=$!
track_pid "$FFMPEG_PID"
wait_for_log "$T/relay.log" "stream open serial=CAMR-0001" 10 || { show_log "$T/relay.log"; fail "the recording did not start"; }
sleep 2

# A renewed certificate from the same CA: new key, new serial, same name; files replaced in
# place as a renewal job would.
cat >"$T/renew.ext" <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
subjectAltName = IP:$H
EOF
new_serial=$(openssl rand -hex 16 | sed 's/^./4/') # positive, 128 bits
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$T/renew.key" -subj "/CN=$H" -out "$T/renew.csr" 2>/dev/null
openssl x509 -req -in "$T/renew.csr" -CA "$T/pki/ca.pem" -CAkey "$T/pki/ca.key" \
    -set_serial "0x$new_serial" -days 30 -extfile "$T/renew.ext" -out "$T/renew.pem" 2>/dev/null
cp "$T/renew.key" "$T/pki/relay.key.new" && mv "$T/pki/relay.key.new" "$T/pki/relay.key"
cp "$T/renew.pem" "$T/pki/relay.pem.new" && mv "$T/pki/relay.pem.new" "$T/pki/relay.pem"
write_conf debug "$H:8444" "$T/mgmt.token" 2000

mark=$(log_lines)
kill -HUP "$RELAY_PID"
wait_for_log "$T/relay.log" "reload \(SIGHUP\): .*log-level info -> debug" 10 || { show_log "$T/relay.log"; fail "no reload logged after SIGHUP"; }
tail -n +"$((mark + 1))" "$T/relay.log" >"$T/reload1.log"
grep -q "reload (SIGHUP): listen-external changed: restart needed" "$T/reload1.log" ||
    { cat "$T/reload1.log"; fail "no restart-needed warning for listen-external"; }
grep -q "reload (SIGHUP): .*keepalive-ms 1000 -> 2000 for new tunnels" "$T/reload1.log" ||
    { cat "$T/reload1.log"; fail "the keepalive change was not applied"; }
grep -qi "reload (SIGHUP): TLS certificate for new connections: serial $new_serial" "$T/reload1.log" ||
    { cat "$T/reload1.log"; fail "the new certificate (serial $new_serial) was not logged"; }
read -r serial_after fp_after verify_after <<<"$(served_cert 8443)" || fail "openssl s_client could not connect after the reload"
[ "${serial_after,,}" = "$new_serial" ] || fail "new connections see serial $serial_after, expected $new_serial"
[ "$fp_after" != "$fp_before" ] || fail "the certificate fingerprint did not change"
[ "$verify_after" = verified ] || fail "the renewed certificate does not verify against the CA"
tcp_probe "$NS" $H 8444 1 && fail "the relay started listening on the new listen-external without a restart"
pass "SIGHUP mid-recording: new TLS connections see serial $serial_after (was $serial_before), log-level debug, keepalive-ms 2000 for new tunnels, 'listen-external changed: restart needed'"

# Rotate the management token, then reload through the management socket.
head -c 24 /dev/urandom | base64 >"$T/mgmt.token.new"
cp "$T/mgmt.token" "$T/mgmt.token.old"
mv "$T/mgmt.token.new" "$T/mgmt.token"
mark=$(log_lines)
out=$(ctl reload) || fail "camrelayctl reload failed: $out"
echo "$out" | grep -q "management token replaced" || fail "camrelayctl reload: '$out' does not mention the new token"
echo "$out" | grep -q "listen-external changed: restart needed" || fail "camrelayctl reload: '$out' does not mention listen-external"
tail -n +"$((mark + 1))" "$T/relay.log" | grep -q " DEBUG management unix .*: reload" ||
    { show_log "$T/relay.log"; fail "no debug line after the level went to debug"; }
if tcp_ctl "$T/mgmt.token.old" camera list >/dev/null 2>&1; then
    fail "the old management token still works after the reload"
fi
tcp_ctl "$T/mgmt.token" camera list >/dev/null || fail "the new management token does not work"
pass "camrelayctl reload: '$out'; old token refused, new token accepted"

wait "$FFMPEG_PID" || { cat "$T/ffmpeg.log"; fail "ffmpeg failed during the reloads"; }
n=$(frames "$T/rec.mp4")
expected=$((RECORD_S * FPS))
[ "$n" -ge $((expected - 1)) ] && [ "$n" -le $((expected + 1)) ] ||
    fail "the recording has $n frames, expected $expected: the stream did not survive the reloads"
errors=$(ffmpeg -nostdin -v error -i "$T/rec.mp4" -f null - 2>&1 | wc -l)
[ "$errors" -eq 0 ] || fail "the recording does not decode cleanly ($errors error lines)"
pass "the $RECORD_S s recording spanning both reloads has $n frames (expected $expected) and decodes cleanly"

grep -q "tunnel down" "$T/agent.log" && { show_log "$T/agent.log"; fail "the agent's tunnel went down"; }
[ "$(grep -c "tunnel up serial=CAMR-0001" "$T/agent.log")" -eq 1 ] || fail "the agent reconnected its tunnel"
[ "$(grep -c "tunnel up serial=CAMR-0001" "$T/relay.log")" -eq 1 ] || fail "the relay saw a second tunnel"
grep -q "tunnel down\|tunnel dead" "$T/relay.log" && fail "the relay dropped the tunnel"
state=$(ctl --json camera list CAMR-0001 | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)[0]["state"])')
[ "$state" = green ] || fail "CAMR-0001 is $state after the reloads"
pass "the tunnel stayed up through both reloads (one 'tunnel up', no 'tunnel down'); CAMR-0001 green"

# A new stream means a new TLS data connection from the agent, which checks the renewed
# certificate against the CA.
ns_run "$NS" timeout 60 ffmpeg -nostdin -v error -y -rtsp_transport tcp -i "$url" -t 2 -c copy "$T/rec2.mp4" ||
    fail "a new recording after the reload failed"
n2=$(frames "$T/rec2.mp4")
[ "$n2" -ge $((2 * FPS - 2)) ] || fail "the recording after the reload has $n2 frames"
pass "a new stream after the reload (the agent's new data connection verified the renewed certificate): $n2 frames"

# A config file that does not load changes nothing.
echo "no-such-setting = 1" >>"$T/relay.conf"
if out=$(ctl reload 2>&1); then
    fail "a broken config file was accepted: $out"
fi
echo "$out" | grep -q "nothing changed" || fail "refused reload: unclear message: $out"
grep -q "reload (camrelayctl reload): the configuration does not load" "$T/relay.log" ||
    fail "the refused reload was not logged"
kill -0 "$RELAY_PID" || fail "camrelayd died on a broken config file"
metrics=$(ns_run "$NS" curl -s --max-time 5 "http://$H:9090/metrics")
echo "$metrics" | grep -qx "camrelay_tunnels_online 1" || fail "metrics after the reloads: $(echo "$metrics" | grep tunnels_online)"
pass "a broken config file is refused as a whole ('$out'); the relay keeps serving"

stop_pid "$AGENT_PID"
stop_pid "$RELAY_PID" 10 || fail "camrelayd did not stop cleanly"
grep -q "stopped" "$T/relay.log" || { show_log "$T/relay.log"; fail "camrelayd did not log its stop"; }
pass "stopped by pid"
