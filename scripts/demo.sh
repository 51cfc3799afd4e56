#!/usr/bin/env bash
# The local demo: a dispatcher, a relay and three simulated cameras on this machine; the
# cameras are registered, phone home, one is attached to a "recording server" (ffmpeg) that
# records a few seconds through the relay; prints the camera list and the frame count.
#
#   scripts/demo.sh            (after `make`; DEMO_DIR=... to keep the files elsewhere)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
DEMO_DIR=${DEMO_DIR:-/tmp/camrelay-demo}
SECONDS_TO_RECORD=${SECONDS_TO_RECORD:-5}
CAMERAS=3
DISPATCH_PORT=17443
RELAY_PORT=18443
PORT_RANGE=21000-21099

for p in camrelay-dispatch camrelayd camrelay-agent camrelayctl; do
    [ -x "$BIN/$p" ] || { echo "demo: $BIN/$p is missing: run 'make' first" >&2; exit 2; }
done
for c in ffmpeg ffprobe curl; do
    command -v "$c" >/dev/null || { echo "demo: needs $c (scripts/install-deps.sh)" >&2; exit 2; }
done

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT INT TERM

step() { printf '\n==> %s\n' "$*"; }
wait_log() { # FILE REGEX TIMEOUT
    local deadline=$((SECONDS + $3))
    until grep -Eq -- "$2" "$1" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "demo: timed out waiting for '$2' in $1; its last lines:" >&2
            tail -n 20 "$1" >&2
            exit 1
        fi
        sleep 0.2
    done
}
ctl() { "$BIN/camrelayctl" --relay-socket "$DEMO_DIR/relay.sock" "$@"; }

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"
cd "$DEMO_DIR"

step "making a 10 s H.264 test clip (1280x720, 8 fps, 500 kbit/s)"
ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=8 -t 10 -c:v libx264 \
    -preset veryfast -b:v 500k -maxrate 500k -bufsize 1000k -g 16 -bf 0 -pix_fmt yuv420p clip.mp4

step "PKI: a CA and certificates for the dispatcher and the relay"
"$BIN/camrelayctl" pki init --dir pki --dispatcher-host 127.0.0.1 --relay-host 127.0.0.1

step "dispatcher on 127.0.0.1:$DISPATCH_PORT"
"$BIN/camrelay-dispatch" --listen 127.0.0.1:$DISPATCH_PORT --cert pki/dispatch.pem \
    --key pki/dispatch.key --db dispatch.db --mgmt-socket dispatch.sock >dispatch.log 2>&1 &
PIDS+=($!)
wait_log dispatch.log 'listening' 10
head -c 24 /dev/urandom | base64 >relay1.password
"$BIN/camrelayctl" --dispatcher-socket dispatch.sock account add relay1 \
    --password-file relay1.password

step "relay on 127.0.0.1:$RELAY_PORT (endpoints in $PORT_RANGE)"
"$BIN/camrelayd" --name relay1 --listen-external 127.0.0.1:$RELAY_PORT \
    --public-addr 127.0.0.1:$RELAY_PORT --internal-host 127.0.0.1 --port-range $PORT_RANGE \
    --db relay.db --cert pki/relay.pem --key pki/relay.key --ca pki/ca.pem \
    --dispatcher 127.0.0.1:$DISPATCH_PORT --account-password-file relay1.password \
    --mgmt-socket relay.sock --keepalive-ms 2000 >relay.log 2>&1 &
PIDS+=($!)
wait_log relay.log 'listening for agents' 10

step "registering $CAMERAS cameras on the relay (state red: registered, not connected)"
for i in $(seq 1 $CAMERAS); do
    ctl camera register "$(printf 'DEMO-%04d' "$i")" --oak DEMO-OAK-1234 --user admin \
        --password demo-pass
done
ctl camera list

step "pressing the one-click button on $CAMERAS simulated cameras"
cat >agent.secrets <<EOF
oak=DEMO-OAK-1234
user=admin
password=demo-pass
EOF
chmod 600 agent.secrets
"$BIN/camrelay-agent" --serial DEMO --secrets-file agent.secrets \
    --dispatcher 127.0.0.1:$DISPATCH_PORT --ca pki/ca.pem --state-dir agent-state \
    --simulate $CAMERAS --sim-clip clip.mp4 --connect >agent.log 2>&1 &
PIDS+=($!)
for i in $(seq 1 $CAMERAS); do
    wait_log agent.log "tunnel up serial=$(printf 'DEMO-%04d' "$i")" 30
done
ctl camera list

step "attaching DEMO-0001 to the recording server (state green)"
ctl camera attach DEMO-0001 --recorder demo-recorder
url=$(ctl --json camera list DEMO-0001 | python3 -c \
    'import json,sys; c=json.load(sys.stdin)[0]; print([e["url"] for e in c["endpoints"] if e["service"]=="rtsp"][0])')
http=$(ctl --json camera list DEMO-0001 | python3 -c \
    'import json,sys; c=json.load(sys.stdin)[0]; print([e["url"] for e in c["endpoints"] if e["service"]=="http"][0])')

step "recording $SECONDS_TO_RECORD s from $url with ffmpeg"
ffmpeg -v error -y -rtsp_transport tcp -i "$url" -t "$SECONDS_TO_RECORD" -c copy recording.mp4
frames=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames \
    -of default=nw=1:nk=1 recording.mp4)
size=$(ffprobe -v error -select_streams v:0 -show_entries stream=width,height -of csv=p=0 recording.mp4)

step "the camera's web page through the relay ($http)"
curl -s --max-time 5 "$http" | sed -e 's/<[^>]*>/\n/g' | grep -v '^\s*$' | head -n 6

step "camera list"
ctl camera list

echo
echo "recording: $DEMO_DIR/recording.mp4, $frames frames (${size/,/x}) in $SECONDS_TO_RECORD s at 8 fps"
echo "logs: $DEMO_DIR/{dispatch,relay,agent}.log"
