#!/usr/bin/env bash
# Reconnect after a relay restart, at scale: N simulated cameras (one agent process, one
# tunnel each) are registered and online; the relay is killed (SIGKILL, as a crash or power
# loss would) and started again; the script measures how long until every camera is back, and
# shows the reconnect rate over time (backoff with jitter spreads the storm).
#
#   bench/run-restart.sh              N=10000 by default (fewer if the open-file limit, which
#                                     must be N+1000, is lower); build/bench/restart.json
#   N=2000 bench/run-restart.sh
#
# Everything runs on 127.0.0.1 with ports of its own, below the ephemeral range; every process is stopped by pid and the
# work directory removed at the end (KEEP=1 keeps it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$ROOT/build/bin}
OUT=${OUT:-$ROOT/build/bench}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/camrelay-restart-XXXXXX")
DISPATCH=127.0.0.1:10443
EXTERNAL=127.0.0.1:10444
METRICS=127.0.0.1:10445

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fds=$(ulimit -n)
if [ -z "${N:-}" ]; then # 10,000 cameras, or as many as the open-file limit allows
    N=$((fds - 1000))
    [ "$N" -le 10000 ] || N=10000
fi
# The relay holds one descriptor per online camera, its tunnel: its two endpoint listeners
# (rtsp, http) are registered files of its io_uring, not descriptors. The agent holds one per
# simulated camera too.
if [ "$fds" -lt $((N + 1000)) ]; then
    echo "run-restart: open-file limit $fds is too small for $N cameras (the relay needs" \
        "$((N + 1000))); try N=$((fds - 1000))" >&2
    exit 2
fi
mkdir -p "$OUT"
cd "$WORK"

online() { # tunnels the relay counts as up (0 while it is down)
    { curl -s --max-time 2 "http://$METRICS/metrics" 2>/dev/null || true; } |
        awk '$1 == "camrelay_tunnels_online" { print $2; found = 1 } END { if (!found) print 0 }'
}
wait_online() { # COUNT TIMEOUT -> prints seconds, or fails
    local t0=$SECONDS
    while [ "$(online)" -lt "$1" ]; do
        [ $((SECONDS - t0)) -lt "$2" ] || { echo "run-restart: only $(online) of $1 online after $2 s" >&2; return 1; }
        sleep 0.5
    done
}
start_relay() {
    "$BIN/camrelayd" --name relay1 --listen-external "$EXTERNAL" --public-addr "$EXTERNAL" \
        --internal-host 127.0.0.1 --port-range 11000-31999 --services rtsp,http --db relay.db \
        --cert pki/relay.pem --key pki/relay.key --ca pki/ca.pem --dispatcher "$DISPATCH" \
        --account-password-file relay1.password --mgmt-socket relay.sock --http-listen "$METRICS" \
        --metrics-per-camera=false --log-level warn >>"relay.log" 2>&1 &
    RELAY_PID=$!
    PIDS+=("$RELAY_PID")
}

"$BIN/camrelayctl" pki init --dir pki --dispatcher-host 127.0.0.1 --relay-host 127.0.0.1 >/dev/null
head -c 24 /dev/urandom | base64 >relay1.password
"$BIN/camrelay-dispatch" --listen "$DISPATCH" --cert pki/dispatch.pem --key pki/dispatch.key \
    --db dispatch.db --mgmt-socket dispatch.sock --http-listen "" --log-level warn >dispatch.log 2>&1 &
PIDS+=($!)
sleep 0.5
"$BIN/camrelayctl" --dispatcher-socket dispatch.sock account add relay1 --password-file relay1.password >/dev/null
start_relay
sleep 1

echo "registering $N cameras ..."
width=4 # camrelay-agent --simulate numbers serials with 4 digits, 6 above 9,999 cameras
[ "$N" -le 9999 ] || width=6
t0=$SECONDS
for i in $(seq 1 "$N"); do
    printf -v serial 'RST-%0*d' "$width" "$i"
    "$BIN/camrelayctl" --relay-socket relay.sock camera register "$serial" --oak OAK-RESTART \
        --user admin --password restart-pass >/dev/null
done
echo "registered in $((SECONDS - t0)) s"

printf 'oak=OAK-RESTART\nuser=admin\npassword=restart-pass\n' >agent.secrets
ffmpeg -v error -y -f lavfi -i testsrc2=size=320x240:rate=8 -t 2 -c:v libx264 -g 8 -bf 0 \
    -pix_fmt yuv420p clip.mp4
"$BIN/camrelay-agent" --serial RST --secrets-file agent.secrets --dispatcher "$DISPATCH" \
    --ca pki/ca.pem --state-dir agent-state --simulate "$N" --sim-clip clip.mp4 --connect \
    --log-level warn >agent.log 2>&1 &
PIDS+=($!)
t0=$SECONDS
wait_online "$N" 300
first=$((SECONDS - t0))
echo "first connection: all $N online in $first s"
sleep 3

echo "killing the relay (SIGKILL) and starting it again ..."
kill -KILL "$RELAY_PID"
wait "$RELAY_PID" 2>/dev/null || true
start_relay
start=$(date +%s.%N)
samples=()
back=""
while :; do
    now=$(date +%s.%N)
    n=$(online)
    el=$(awk -v a="$start" -v b="$now" 'BEGIN { printf "%.1f", b - a }')
    samples+=("[$el,$n]")
    if [ "$n" -ge "$N" ]; then
        back=$el
        break
    fi
    if awk -v e="$el" 'BEGIN { exit !(e > 120) }'; then
        break
    fi
    sleep 0.5
done
if [ -n "$back" ]; then
    echo "after the restart: all $N cameras back in $back s"
else
    echo "after the restart: only $(online) of $N back within 120 s" >&2
fi
{
    printf '{"cameras": %d, "first_connect_s": %d, "back_after_restart_s": %s,\n' "$N" "$first" "${back:-null}"
    printf ' "online_over_time": [%s]}\n' "$(IFS=,; echo "${samples[*]}")"
} >"$OUT/restart.json"
echo "run-restart: $OUT/restart.json"
[ -n "$back" ]
