# shellcheck shell=bash
# Helpers for camrelay's end-to-end tests. Source it from a test script:
#
#   #!/usr/bin/env bash
#   set -euo pipefail
#   . "$(dirname "$0")/lib.sh"
#   netns_setup                        # site --NAT-- router --- central
#   ns_spawn "$NS_CENTRAL" "$E2E_TMP/relay.log" "$BIN/camrelayd" ...
#   wait_for_port "$NS_CENTRAL" 192.0.2.2 8443 10 || fail "relay did not listen"
#   pass "relay is up"
#
# Network shape (PLATFORM.md), built per run with a unique prefix ($E2E_PREFIX, default cr$$):
#
#   $NS_SITE     eth0 10.10.0.2/24, default route via 10.10.0.1
#   $NS_ROUTER   lan0 10.10.0.1/24, wan0 192.0.2.1/24, ip_forward=1,
#                nft: masquerade 10.10.0.0/24 out of wan0; forward policy drop except
#                established/related and lan0 -> wan0 from 10.10.0.0/24
#   $NS_CENTRAL  eth0 192.0.2.2/24 (no route to 10.10.0.0/24)
#
# Every process started with ns_spawn (or recorded with track_pid) is ended at exit, every
# namespace deleted and $E2E_TMP removed (kept when KEEP_E2E=1), also when the test fails or
# is interrupted.
#
# Environment: BUILD (build dir, default build; programs in $BUILD/bin), E2E_PREFIX, KEEP_E2E.

E2E_NAME=$(basename "${0%.sh}")
E2E_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$E2E_ROOT/$BUILD" ;; esac
BIN="$BUILD/bin"
export BUILD BIN

E2E_PREFIX=${E2E_PREFIX:-cr$$}
NS_SITE="$E2E_PREFIX-site"
NS_ROUTER="$E2E_PREFIX-router"
NS_CENTRAL="$E2E_PREFIX-central"

SITE_IP=10.10.0.2
ROUTER_LAN_IP=10.10.0.1
ROUTER_WAN_IP=192.0.2.1
CENTRAL_IP=192.0.2.2

# A python3 that does not depend on a user's pyenv/venv set-up inside `ip netns exec`.
if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3 || true); fi
export PYTHON

# The test's own stderr, kept on a spare descriptor: a failure or an interruption may happen
# while a command's stderr is redirected (e.g. inside `tcp_probe ... 2>/dev/null`), and the
# FAIL line must still be seen.
exec {E2E_ERR}>&2

E2E_PIDS=()
E2E_NETNS=()
E2E_TORN_DOWN=0

E2E_TMP=$(mktemp -d "${TMPDIR:-/tmp}/camrelay-e2e-$E2E_PREFIX-$E2E_NAME.XXXXXX")
export E2E_TMP

# ---------------------------------------------------------------------------------- output

pass() { printf 'PASS: %s: %s\n' "$E2E_NAME" "$*"; }
info() { printf '      %s: %s\n' "$E2E_NAME" "$*"; }
# fail MSG: report and end the test (exit 1; the EXIT trap cleans up).
fail() {
    printf 'FAIL: %s: %s\n' "$E2E_NAME" "$*" >&"$E2E_ERR"
    exit 1
}
# Show the tail of a log file (for failure messages).
show_log() {
    local f=$1 n=${2:-40}
    [ -f "$f" ] || return 0
    {
        echo "----- last $n lines of $f"
        tail -n "$n" "$f"
        echo "-----"
    } >&"$E2E_ERR"
}

require_root() {
    [ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces)"
}
require_cmd() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || fail "needs '$c' (scripts/install-deps.sh)"
    done
}

# ------------------------------------------------------------------------------ processes

track_pid() { E2E_PIDS+=("$@"); }

# ns_run NS CMD...: run in namespace NS ("" = the host's namespace).
ns_run() {
    local ns=$1; shift
    if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi
}

# ns_spawn NS LOGFILE CMD...: start CMD in the background in NS, stdout+stderr to LOGFILE,
# stdin from /dev/null; its pid is tracked and left in $SPAWNED_PID.
SPAWNED_PID=
ns_spawn() {
    local ns=$1 logf=$2; shift 2
    if [ -n "$ns" ]; then
        ip netns exec "$ns" "$@" >"$logf" 2>&1 </dev/null {E2E_ERR}>&- &
    else
        "$@" >"$logf" 2>&1 </dev/null {E2E_ERR}>&- &
    fi
    SPAWNED_PID=$!
    track_pid "$SPAWNED_PID"
}

# stop_pid PID [TIMEOUT]: TERM, wait up to TIMEOUT s (default 5), then KILL. Returns the
# process's exit status when it was our child.
stop_pid() {
    local pid=$1 t=${2:-5} i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null
}

# ------------------------------------------------------------------------------- waiting

# wait_for_port NS HOST PORT TIMEOUT: until a TCP connect from NS to HOST:PORT succeeds.
wait_for_port() {
    local ns=$1 host=$2 port=$3 t=${4:-10}
    local deadline=$((SECONDS + t))
    while :; do
        if ns_run "$ns" timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# wait_for_log FILE REGEX TIMEOUT: until FILE has a line matching the extended REGEX.
wait_for_log() {
    local f=$1 re=$2 t=${3:-10}
    local deadline=$((SECONDS + t))
    while :; do
        if [ -f "$f" ] && grep -Eq -- "$re" "$f"; then
            return 0
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# tcp_probe NS HOST PORT [TIMEOUT]: 0 when a TCP connection can be opened.
tcp_probe() {
    ns_run "$1" timeout "${4:-3}" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null
}

# ------------------------------------------------------------------------------- network

# netns_setup: the site / router / central namespaces described at the top.
netns_setup() {
    require_root
    require_cmd ip nft sysctl

    local ns
    for ns in "$NS_SITE" "$NS_ROUTER" "$NS_CENTRAL"; do
        if [ -e "/run/netns/$ns" ]; then
            fail "namespace $ns already exists (stale run? delete it with: ip netns del $ns)"
        fi
        ip netns add "$ns" || fail "ip netns add $ns"
        E2E_NETNS+=("$ns")
        ip -n "$ns" link set lo up
    done

    # veth pairs created inside the namespaces: no names in the host's namespace.
    ip -n "$NS_SITE" link add eth0 type veth peer name lan0 netns "$NS_ROUTER" \
        || fail "veth site<->router"
    ip -n "$NS_CENTRAL" link add eth0 type veth peer name wan0 netns "$NS_ROUTER" \
        || fail "veth central<->router"

    ip -n "$NS_SITE" addr add "$SITE_IP/24" dev eth0
    ip -n "$NS_SITE" link set eth0 up
    ip -n "$NS_ROUTER" addr add "$ROUTER_LAN_IP/24" dev lan0
    ip -n "$NS_ROUTER" addr add "$ROUTER_WAN_IP/24" dev wan0
    ip -n "$NS_ROUTER" link set lan0 up
    ip -n "$NS_ROUTER" link set wan0 up
    ip -n "$NS_CENTRAL" addr add "$CENTRAL_IP/24" dev eth0
    ip -n "$NS_CENTRAL" link set eth0 up
    ip -n "$NS_SITE" route add default via "$ROUTER_LAN_IP" || fail "site default route"

    ip netns exec "$NS_ROUTER" sysctl -qw net.ipv4.ip_forward=1 || fail "router ip_forward"

    ip netns exec "$NS_ROUTER" nft -f - <<'NFT' || fail "router nftables rules"
table ip nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan0" ip saddr 10.10.0.0/24 masquerade
    }
}
table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan0" oifname "wan0" ip saddr 10.10.0.0/24 accept
    }
}
NFT

    # veth links come up asynchronously: wait for carrier on both outer ends.
    local i
    for ((i = 0; i < 50; i++)); do
        if [ "$(ip -n "$NS_SITE" -o link show eth0 | grep -c 'state UP')" -eq 1 ] &&
           [ "$(ip -n "$NS_CENTRAL" -o link show eth0 | grep -c 'state UP')" -eq 1 ]; then
            break
        fi
        sleep 0.1
    done
    info "namespaces $NS_SITE ($SITE_IP) -> $NS_ROUTER ($ROUTER_LAN_IP | $ROUTER_WAN_IP, NAT) -> $NS_CENTRAL ($CENTRAL_IP)"
}

# netns_teardown: end tracked processes and anything else left inside our namespaces, delete
# the namespaces, remove $E2E_TMP unless KEEP_E2E=1. Idempotent; runs from the EXIT trap.
netns_teardown() {
    [ "$E2E_TORN_DOWN" -eq 0 ] || return 0
    E2E_TORN_DOWN=1
    local pid ns i alive

    for pid in "${E2E_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for ((i = 0; i < 50; i++)); do
        alive=0
        for pid in "${E2E_PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 1 ] || break
        sleep 0.1
    done
    for pid in "${E2E_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done

    for ns in "${E2E_NETNS[@]}"; do
        # Processes still inside one of our namespaces (children of tracked ones...).
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    E2E_NETNS=()

    if [ "${KEEP_E2E:-0}" = 1 ]; then
        echo "      $E2E_NAME: kept $E2E_TMP (KEEP_E2E=1)" >&"$E2E_ERR"
    else
        rm -rf "$E2E_TMP"
    fi
}

# loopback_ns NS: a namespace with only lo up, for a test that runs its whole stack on
# 127.0.0.1 there (every port is its alone). Name it like lib.sh's namespaces (e.g.
# $NS_CENTRAL) so run-all.sh's sweep finds it after a kill; it is deleted at exit.
loopback_ns() {
    local ns=$1
    [ -e "/run/netns/$ns" ] && fail "namespace $ns already exists"
    ip netns add "$ns" || fail "ip netns add $ns"
    E2E_NETNS+=("$ns")
    ip -n "$ns" link set lo up
}

# --------------------------------------------------------------------------- the stack

# stack_files DIR HOST FPS: what a dispatcher, a relay and simulated cameras need, in DIR:
# clip.mp4 (10 s of H.264 test pattern at FPS frames/s), pki/ (`camrelayctl pki init` with
# HOST as the dispatcher's and the relay's name) and relay1.password (a random password).
stack_files() {
    local dir=$1 host=$2 fps=$3
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=640x360:rate=$fps" -t 10 -c:v libx264 \
        -preset veryfast -b:v 500k -maxrate 500k -bufsize 1000k -g 16 -bf 0 -pix_fmt yuv420p \
        "$dir/clip.mp4"
    "$BIN/camrelayctl" pki init --dir "$dir/pki" --dispatcher-host "$host" --relay-host "$host" >/dev/null
    head -c 24 /dev/urandom | base64 >"$dir/relay1.password"
}

# The relay's management socket for ctl and the camera_* helpers; a test may set it.
RELAY_SOCK=$E2E_TMP/relay.sock

# ctl ARGS...: camrelayctl against the relay on $RELAY_SOCK.
ctl() { "$BIN/camrelayctl" --relay-socket "$RELAY_SOCK" "$@"; }
# camera_field SERIAL KEY: one field of the camera's JSON record ("" if absent).
camera_field() {
    ctl --json camera list "$1" | "$PYTHON" -c '
import json, sys
cams = json.load(sys.stdin)
v = cams[0].get(sys.argv[1], "") if cams else ""
print(str(v).lower() if isinstance(v, bool) else v)' "$2"
}
# camera_endpoint SERIAL SERVICE: the URL of the camera's SERVICE endpoint on the relay.
camera_endpoint() {
    ctl --json camera list "$1" | "$PYTHON" -c '
import json, sys
print([e["url"] for e in json.load(sys.stdin)[0]["endpoints"] if e["service"] == sys.argv[1]][0])' "$2"
}
# wait_camera_state SERIAL STATE TIMEOUT: until the camera is STATE, else fail.
wait_camera_state() {
    local deadline=$((SECONDS + $3)) s=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        s=$(camera_field "$1" state 2>/dev/null || true)
        [ "$s" = "$2" ] && return 0
        sleep 0.2
    done
    fail "$1: state is '$s', expected '$2' within $3 s"
}

# ---------------------------------------------------------------------------- exit traps

e2e_on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    netns_teardown
    exit "$rc"
}
e2e_on_signal() {
    local sig=$1
    trap - EXIT INT TERM
    printf 'FAIL: %s: interrupted (SIG%s)\n' "$E2E_NAME" "$sig" >&"$E2E_ERR"
    netns_teardown
    [ "$sig" = INT ] && exit 130
    exit 143
}
trap e2e_on_exit EXIT
trap 'e2e_on_signal INT' INT
trap 'e2e_on_signal TERM' TERM
