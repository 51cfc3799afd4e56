#!/usr/bin/env bash
# The kernel TLS path for real: this machine's kernel has no TLS ULP, so the relay's kTLS
# branch (camera direction handed to the kernel, then spliced) is run under Debian's own kernel
# in QEMU (tests/vm/kernel-vm.sh), which has it. Inside: the kTLS unit tests with a real
# kernel offload (none may skip), the relay's tests with their kTLS streams (none may skip),
# the one-click core flow through real NAT, whose recording must take the ktls-splice path,
# and the relay's kTLS tests again with 16 KiB TCP send buffers.
#
# Environment: VM_TIMEOUT (s, default 540), and kernel-vm.sh's.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

require_root
require_cmd qemu-system-x86_64 busybox

out="$E2E_TMP/vm.log"
t0=$SECONDS
# One VM for every part (a boot costs about 10 s of emulation); each part's output is kept
# whole. The VM gives up before run-all.sh's limit would end this test, and the runner is
# tracked, so that however this test ends its QEMU ends too (kernel-vm.sh stops it on TERM).
rc=0
VM_TIMEOUT=${VM_TIMEOUT:-540} "$E2E_ROOT/tests/vm/kernel-vm.sh" bash -c '
    rc=0
    export UNIT_NO_SKIP=1 # a test that skips here did not run the kernel path: a failure
    tests/run-unit.sh build/tests/relay/test_ktls build/tests/relay/test_relay || rc=1
    echo "::: test_core_flow"; tests/e2e/test_core_flow.sh || rc=1
    # Small send buffers, as under TCP memory pressure: where a kernel TX once stalled.
    echo "::: test_relay, 16 KiB send buffers"
    sysctl -qw net.ipv4.tcp_wmem="4096 16384 16384" &&
        TEST_FILTER="test_relay_ktls_*" tests/run-unit.sh build/tests/relay/test_relay || rc=1
    exit $rc' >"$out" 2>&1 &
vm_pid=$!
track_pid "$vm_pid"
wait "$vm_pid" || rc=$?
took=$((SECONDS - t0))
if [ "$rc" -ne 0 ]; then
    show_log "$out" 80
    fail "in the VM (exit $rc after ${took}s): see above"
fi
kernel=$(sed -n 's/^camrelay-vm: running under //p' "$out")
info "ran under $kernel in ${took}s"

# What ran must be the kernel path, not a fallback that happens to pass (a skip already
# failed the run above).
grep -q "^\[       OK \] test_ktls_kernel_offload_round_trip" "$out" ||
    fail "the kernel offload round trip did not run"
pass "kTLS unit tests under $kernel: the kernel's records match ours, both ways, three ciphers"
grep -q "^\[       OK \] test_relay_ktls_stream_records_intact" "$out" ||
    fail "the relay's kTLS stream test did not pass"
grep -q "^\[       OK \] test_relay_ktls_last_bytes_and_close_notify_in_one_read" "$out" ||
    fail "the relay's kTLS close_notify test did not pass"
[ "$(grep -c "^\[       OK \] test_relay_ktls_upload_reaches_slow_camera" "$out")" -eq 2 ] ||
    fail "the relay's kTLS upload test did not pass twice (default and 16 KiB send buffers)"
pass "relay streams through kTLS: 2 MiB both ways, split and tiny records, a changed record refused, close_notify, a bulk upload to a slow camera (also with 16 KiB send buffers)"
grep -q "its stream took the ktls-splice path" "$out" ||
    { show_log "$out" 40; fail "the core flow's recording did not take the ktls-splice path"; }
sed -n 's/^PASS: test_core_flow: /      core flow in the VM: /p' "$out"
pass "the one-click core flow through NAT, its recording relayed by kTLS and splice"
