#!/usr/bin/env bash
# Run cmocka unit-test binaries (given as arguments), show their output, add up the results.
#
#   tests/run-unit.sh build/tests/common/test_frame build/tests/relay/test_ring ...
#
# Counts individual tests from cmocka's per-group summary lines ("[  PASSED  ] N test(s)." and
# "[  FAILED  ] N test(s), listed below:"). A binary that crashes, times out, exits non-zero
# without reporting a failure, or prints no summary at all counts as one failure under its own
# name. The last line is always exactly "N passed, M failed"; the exit status is non-zero when
# M > 0.
#
# Environment: UNIT_TIMEOUT (seconds per binary, default 300), UNIT_NO_SKIP=1 (a skipped test
# counts as a failure: for runs whose point is what other machines skip, e.g. kTLS in tests/vm).
set -uo pipefail

timeout_s=${UNIT_TIMEOUT:-300}
total_pass=0
total_fail=0
total_skip=0
failed_names=()

# Plain cmocka output (not XML/TAP/subunit) whatever the caller's environment says.
export CMOCKA_MESSAGE_OUTPUT=STDOUT
unset CMOCKA_XML_FILE
# Sanitizer builds: make reports land in the output and abort with a recognisable status.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

log=$(mktemp "${TMPDIR:-/tmp}/run-unit.XXXXXX")
trap 'rm -f "$log"' EXIT

if [ $# -eq 0 ]; then
    echo "run-unit: no test binaries given"
fi

for bin in "$@"; do
    name=${bin#"${BUILD:-build}"/tests/}
    echo "=== $name"
    if [ ! -x "$bin" ]; then
        echo "run-unit: $bin: not found or not executable"
        total_fail=$((total_fail + 1))
        failed_names+=("$name (missing)")
        continue
    fi

    timeout --kill-after=10 "$timeout_s" "$bin" 2>&1 </dev/null | tee "$log"
    rc=${PIPESTATUS[0]}

    # Sum every group's summary in this binary.
    read -r pass fail skip groups < <(awk '
        /^\[  PASSED  \] [0-9]+ test\(s\)\./        { p += $4; g++ }
        /^\[  FAILED  \] [0-9]+ test\(s\)/          { f += $4 }
        /^\[  SKIPPED \] [0-9]+ test\(s\)/          { s += $4 }
        END { printf "%d %d %d %d\n", p, f, s, g }' "$log")
    # A group whose every test failed prints "[  PASSED  ] 0 test(s)." too, so groups counts
    # the summaries seen.

    why=""
    if [ "$rc" -eq 124 ]; then
        why="timed out after ${timeout_s}s"
    elif [ "$rc" -gt 128 ]; then
        sig=$((rc - 128))
        why="crashed: signal $sig ($(kill -l "$sig" 2>/dev/null || echo '?'))"
    elif [ "$groups" -eq 0 ]; then
        why="no cmocka summary (exited early, status $rc)"
    elif [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; then
        why="exit status $rc with no failed test reported (sanitizer report or error after the tests?)"
    fi

    total_pass=$((total_pass + pass))
    total_fail=$((total_fail + fail))
    total_skip=$((total_skip + skip))
    if [ -z "$why" ] && [ "${UNIT_NO_SKIP:-0}" = 1 ] && [ "$skip" -gt 0 ]; then
        why="$skip test(s) skipped where none may be"
    fi
    if [ -n "$why" ]; then
        echo "run-unit: $name: $why"
        total_fail=$((total_fail + 1))
        failed_names+=("$name ($why)")
    elif [ "$fail" -gt 0 ]; then
        # The failing tests' names, from cmocka's "listed below" section.
        tests=$(awk '/^\[  FAILED  \] [0-9]+ test\(s\), listed below:/ { l = 1; next }
                     l && /^\[  FAILED  \] / { sub(/^\[  FAILED  \] /, ""); printf "%s%s", sep, $0; sep = ", "; next }
                     { l = 0 }' "$log")
        failed_names+=("$name: ${tests:-$fail test(s)}")
    fi
done

echo
if [ "$total_skip" -gt 0 ]; then
    echo "run-unit: $total_skip test(s) skipped"
fi
if [ ${#failed_names[@]} -gt 0 ]; then
    echo "run-unit: failures:"
    for f in "${failed_names[@]}"; do
        echo "  FAIL $f"
    done
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
