#!/usr/bin/env bash
# The default capacity run of camrelay-bench (about 15 minutes): a paced ramp for the TLS pair
# (camrelay, haproxy-tls) and the plaintext pair (camrelay-plain, haproxy), a capacity ramp
# over TLS to saturation (one relay worker against one haproxy thread), 1,000 paced streams on
# one thread per peer with a short batch wait (latency against CPU), bulk for every peer,
# 10,000 idle tunnels, 10 s of handshakes. Everything but the capacity ramp and the one-thread
# step goes into one JSON file (each run adds its section); the two ramps get SVG plots.
#
#   bench/run-capacity.sh                 build/bench/capacity.json and capacity.svg
#   OUT=/tmp/x PACED_PEERS=camrelay,haproxy-tls RAMP=1000:1000:4000 bench/run-capacity.sh
#
# Environment: BIN (the program), OUT (output directory), RAMP, CAP_RAMP, STEP_SECONDS, PACED_PEERS,
# IDLE_TUNNELS, NOTE (stored with the machine description). Exit status: 1 if any run failed;
# the other runs still happen.
set -uo pipefail

cd "$(dirname "$0")/.."
BIN=${BIN:-build/bin/camrelay-bench}
OUT=${OUT:-build/bench}
RAMP=${RAMP:-100:300:1600}
CAP_RAMP=${CAP_RAMP:-2500:250:6500}
STEP_SECONDS=${STEP_SECONDS:-5}
PACED_PEERS=${PACED_PEERS:-camrelay,haproxy-tls,camrelay-plain,haproxy}
IDLE_TUNNELS=${IDLE_TUNNELS:-10000}
NOTE=${NOTE:-"$(nproc) cores, shared build machine: other jobs run at the same time (noisy)"}

if [ ! -x "$BIN" ]; then
    make "$BIN" || exit 1
fi
if ! command -v haproxy >/dev/null; then
    echo "run-capacity: haproxy is not installed (scripts/install-deps.sh)" >&2
    exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT"/capacity.json "$OUT"/capacity.svg "$OUT"/capacity-ramp.json "$OUT"/capacity-ramp.svg \
    "$OUT"/capacity-1thread.json
JSON="$OUT/capacity.json"
status=0

run() {
    echo "+ $*"
    "$@" || status=1
    echo
}

run "$BIN" --mode paced --peer "$PACED_PEERS" --ramp "$RAMP" --seconds "$STEP_SECONDS" \
    --json "$JSON" --plot "$OUT/capacity.svg" --note "$NOTE"
# The capacity ramp over TLS: how many streams one relay thread holds against one haproxy
# thread. The generator gets the two threads: with one it saturates first (about 4,500
# streams here) and caps both peers alike.
run "$BIN" --mode paced --peer camrelay,haproxy-tls --ramp "$CAP_RAMP" --seconds "$STEP_SECONDS" \
    --workers 1 --gen-threads 2 --json "$OUT/capacity-ramp.json" \
    --plot "$OUT/capacity-ramp.svg" --note "$NOTE"
# 1,000 streams with one thread per peer and a 200 us batch wait: a window half as long
# gathers as many frames as with two workers (docs/benchmark.md, "Latency against CPU").
run "$BIN" --mode paced --peer "$PACED_PEERS" --streams 1000 --seconds 10 --workers 1 \
    --batch-wait-us 200 --json "$OUT/capacity-1thread.json" --note "$NOTE"
run "$BIN" --mode bulk --peer all --seconds "$STEP_SECONDS" --json "$JSON" --note "$NOTE"
run "$BIN" --mode idle --streams "$IDLE_TUNNELS" --json "$JSON" --note "$NOTE"
run "$BIN" --mode handshakes --seconds 10 --json "$JSON" --note "$NOTE"

echo "run-capacity: results in $JSON and $OUT/capacity.svg; the capacity ramp in" \
    "$OUT/capacity-ramp.json and $OUT/capacity-ramp.svg; one thread each in" \
    "$OUT/capacity-1thread.json"
exit $status
