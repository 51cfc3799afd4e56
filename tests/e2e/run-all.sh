#!/usr/bin/env bash
# Run every tests/e2e/test_*.sh in order, each with a time limit, one result line per test and
# a closing line "N passed, M failed". Needs root (network namespaces); skipped otherwise.
#
# Environment: BUILD (build dir, programs in $BUILD/bin; default build), E2E_TIMEOUT (seconds
# per test, default 600), E2E_VERBOSE=1 (show every test's output, not only failures'),
# KEEP_E2E=1 (keep each test's temp dir), E2E_ONLY=REGEX (run only matching tests).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ "$(id -u)" -ne 0 ]; then
    echo "e2e: skipped (needs root for network namespaces)"
    exit 0
fi

BUILD=${BUILD:-build}
case "$BUILD" in /*) ;; *) BUILD="$root/$BUILD" ;; esac
export BUILD
timeout_s=${E2E_TIMEOUT:-600}

logdir=$(mktemp -d "${TMPDIR:-/tmp}/camrelay-e2e-logs-$$.XXXXXX")
cleanup() { [ "${KEEP_E2E:-0}" = 1 ] || rm -rf "$logdir"; }
trap cleanup EXIT

# Delete what a test that was killed outright left behind: only namespaces named with the
# prefix this run gave it, and only processes inside those namespaces.
sweep() {
    local prefix=$1 ns pid
    for ns in "$prefix-site" "$prefix-router" "$prefix-central"; do
        [ -e "/run/netns/$ns" ] || continue
        echo "e2e: removing leftover namespace $ns"
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ "${KEEP_E2E:-0}" != 1 ]; then
        rm -rf "${TMPDIR:-/tmp}/camrelay-e2e-$prefix-"*
    fi
}

shopt -s nullglob
tests=("$here"/test_*.sh)
passed=0
failed=0
failed_names=()
n=0

for t in "${tests[@]}"; do
    name=$(basename "$t" .sh)
    if [ -n "${E2E_ONLY:-}" ] && ! [[ "$name" =~ $E2E_ONLY ]]; then
        continue
    fi
    n=$((n + 1))
    prefix="cr$$t$n"
    log="$logdir/$name.log"
    start=$SECONDS
    E2E_PREFIX=$prefix timeout --kill-after=20 "$timeout_s" bash "$t" </dev/null >"$log" 2>&1
    rc=$?
    dur=$((SECONDS - start))
    sweep "$prefix"

    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        [ "${E2E_VERBOSE:-0}" = 1 ] && sed 's/^/    /' "$log"
        printf 'PASS  %-40s %4ds\n' "$name" "$dur"
    else
        failed=$((failed + 1))
        case $rc in
            124) why="timed out after ${timeout_s}s" ;;
            137) why="killed after timing out" ;;
            *)   why="exit $rc" ;;
        esac
        failed_names+=("$name ($why)")
        sed 's/^/    /' "$log"
        printf 'FAIL  %-40s %4ds  %s\n' "$name" "$dur" "$why"
    fi
done

if [ "$n" -eq 0 ]; then
    echo "e2e: no tests found in $here"
fi
if [ "$failed" -gt 0 ]; then
    echo "e2e: failures:"
    for f in "${failed_names[@]}"; do echo "  FAIL $f"; done
    [ "${KEEP_E2E:-0}" = 1 ] && echo "e2e: logs kept in $logdir"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
