#!/usr/bin/env bash
# The appliance image boots and serves: builds the .deb and the image when they are missing or
# stale (the debootstrap base is cached per machine, see packaging/image/build.sh), boots
# build/image under QEMU (software emulation, direct kernel boot, user networking, the disk
# opened with snapshot=on so root.img stays pristine), waits until camrelay-firstboot has run
# and camrelayd answers through a forwarded port, checks the dispatcher too, then powers the VM
# off (ACPI, through the QEMU monitor) and ends QEMU by its pid.
#
# Environment: IMAGE_BOOT_TIMEOUT (s, default 240), IMAGE_PREBUILT=1 (boot build/image as it
# is, build nothing), QEMU_ACCEL (default tcg: this machine's /dev/kvm does not boot guests),
# METRICS_PORT (see below), KEEP_E2E=1 (keep the console log).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# What "camrelayd answers" means. Until the relay has its HTTP metrics/status port, the test
# checks that the agents' TLS port (8443) completes a handshake and presents a certificate
# issued by the camrelay CA. Once the metrics port exists, set METRICS_PORT to its port inside
# the VM (here or in the environment) and the test checks `GET /metrics` on it instead.
METRICS_PORT=${METRICS_PORT:-9090} # camrelayd's http-listen in the image's camrelayd.conf
RELAY_TLS_PORT=8443
DISPATCH_TLS_PORT=7443

BOOT_TIMEOUT=${IMAGE_BOOT_TIMEOUT:-240}
QEMU_ACCEL=${QEMU_ACCEL:-tcg}
IMAGE_DIR="$BUILD/image"

require_root
require_cmd qemu-system-x86_64 openssl python3 curl

# ------------------------------------------------------------------ package and image
t0=$SECONDS
if [ "${IMAGE_PREBUILT:-0}" = 1 ]; then
    info "IMAGE_PREBUILT=1: booting $IMAGE_DIR as it is"
else
    require_cmd debootstrap mkfs.ext4 dpkg-buildpackage
    # The package is rebuilt every time (about 20 s) so the image runs the current code.
    LINTIAN=0 make -C "$E2E_ROOT" --no-print-directory deb >"$E2E_TMP/deb.log" 2>&1 ||
        { show_log "$E2E_TMP/deb.log"; fail "make deb"; }
    deb=$(tail -n 1 "$E2E_TMP/deb.log")
    want="deb $(sha256sum "$deb" | cut -d' ' -f1)"
    script="script $(sha256sum "$E2E_ROOT/packaging/image/build.sh" | cut -d' ' -f1)"
    if [ -f "$IMAGE_DIR/root.img" ] && [ -f "$IMAGE_DIR/stamp" ] &&
        grep -qx "$want" "$IMAGE_DIR/stamp" && grep -qx "$script" "$IMAGE_DIR/stamp"; then
        info "image in $IMAGE_DIR is up to date"
    else
        info "building the image (debootstrap on the first run on this machine: minutes)"
        DEB=$deb IMAGE_DIR=$IMAGE_DIR "$E2E_ROOT/packaging/image/build.sh" >"$E2E_TMP/image.log" 2>&1 ||
            { show_log "$E2E_TMP/image.log"; fail "make image"; }
        sed 's/^/      /' "$E2E_TMP/image.log"
    fi
fi
for f in root.img vmlinuz initrd.img; do
    [ -f "$IMAGE_DIR/$f" ] || fail "$IMAGE_DIR/$f is missing (make image)"
done
build_s=$((SECONDS - t0))
pass "image ready in ${build_s}s: root.img $(du -h --apparent-size "$IMAGE_DIR/root.img" | cut -f1) (on disk $(du -h "$IMAGE_DIR/root.img" | cut -f1)), initrd $(du -h "$IMAGE_DIR/initrd.img" | cut -f1)"

# ------------------------------------------------------------------------------- boot
free_port() {
    "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
relay_fwd=$(free_port)
dispatch_fwd=$(free_port)
fwd="hostfwd=tcp:127.0.0.1:$relay_fwd-:$RELAY_TLS_PORT,hostfwd=tcp:127.0.0.1:$dispatch_fwd-:$DISPATCH_TLS_PORT"
if [ -n "$METRICS_PORT" ]; then
    metrics_fwd=$(free_port)
    fwd="$fwd,hostfwd=tcp:127.0.0.1:$metrics_fwd-:$METRICS_PORT"
fi
console="$E2E_TMP/console.log"
monitor="$E2E_TMP/monitor.sock"

if [ "$QEMU_ACCEL" = tcg ] && [ -e /dev/kvm ]; then
    info "software emulation (tcg); /dev/kvm is there but hung guests at boot on these machines (QEMU_ACCEL=kvm tries it)"
fi
boot_t0=$SECONDS
# The journal goes to the serial console too, so console.log has the daemons' logs.
# snapshot=on: writes go to a temporary overlay (in $TMPDIR), root.img stays as built.
ns_spawn "" "$E2E_TMP/qemu.log" env TMPDIR="$E2E_TMP" qemu-system-x86_64 \
    -machine q35 -accel "$QEMU_ACCEL" -smp 2 -m 1024 -nographic \
    -kernel "$IMAGE_DIR/vmlinuz" -initrd "$IMAGE_DIR/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 systemd.journald.forward_to_console=1" \
    -drive "file=$IMAGE_DIR/root.img,format=raw,if=virtio,snapshot=on" \
    -netdev "user,id=n0,$fwd" -device virtio-net-pci,netdev=n0 \
    -serial "file:$console" -monitor "unix:$monitor,server,nowait"
qemu_pid=$SPAWNED_PID
info "qemu pid $qemu_pid ($QEMU_ACCEL): relay :$RELAY_TLS_PORT on 127.0.0.1:$relay_fwd, dispatcher :$DISPATCH_TLS_PORT on 127.0.0.1:$dispatch_fwd"

# tls_issuer PORT: the issuer line of the certificate the server on 127.0.0.1:PORT presents.
# (QEMU accepts on the host side even while nothing listens in the guest; only a completed
# handshake counts.)
tls_issuer() {
    timeout 10 openssl s_client -connect "127.0.0.1:$1" </dev/null 2>/dev/null | grep '^issuer=' || true
}
relay_answers() {
    if [ -n "$METRICS_PORT" ]; then
        curl -fsS --max-time 5 "http://127.0.0.1:$metrics_fwd/metrics" 2>/dev/null | grep -q camrelay
    else
        tls_issuer "$relay_fwd" | grep -q 'camrelay'
    fi
}

deadline=$((boot_t0 + BOOT_TIMEOUT))
until relay_answers; do
    if ! kill -0 "$qemu_pid" 2>/dev/null; then
        show_log "$E2E_TMP/qemu.log"
        show_log "$console" 60
        fail "qemu exited before camrelayd answered"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
        show_log "$console" 60
        fail "camrelayd did not answer within ${BOOT_TIMEOUT}s of boot"
    fi
    sleep 2
done
answer_s=$((SECONDS - boot_t0))
if [ -n "$METRICS_PORT" ]; then
    pass "camrelayd's metrics port $METRICS_PORT answers GET /metrics, ${answer_s}s after qemu started"
    # The appliance runs Debian's kernel, which has kernel TLS (a module the first TCP_ULP
    # "tls" loads): its relay must use it.
    metrics=$(curl -fsS --max-time 5 "http://127.0.0.1:$metrics_fwd/metrics")
    echo "$metrics" | grep -qx 'camrelay_ktls_available 1' &&
        echo "$metrics" | grep -qx 'camrelay_data_path_info{path="ktls-splice"} 1' ||
        { echo "$metrics" | grep -E 'ktls|data_path' >&2; fail "the appliance's relay does not use kernel TLS"; }
    pass "the appliance's relay hands TLS streams to the kernel (camrelay_ktls_available 1, path ktls-splice)"
else
    pass "camrelayd :$RELAY_TLS_PORT completes a TLS handshake, ${answer_s}s after qemu started ($(tls_issuer "$relay_fwd"))"
fi

issuer=$(tls_issuer "$dispatch_fwd")
echo "$issuer" | grep -q camrelay || fail "camrelay-dispatch :$DISPATCH_TLS_PORT did not present a camrelay certificate"
pass "camrelay-dispatch :$DISPATCH_TLS_PORT completes a TLS handshake ($issuer)"

grep -q 'camrelay-firstboot: done' "$console" ||
    { show_log "$console" 60; fail "the console shows no 'camrelay-firstboot: done'"; }
pass "camrelay-firstboot ran: $(grep -o 'PKI for [^ ]*' "$console" | head -n 1 | tr -d '\r')"

# The relay logs in to the appliance's dispatcher with the account firstboot made (either
# side's log line will do).
wait_for_log "$console" 'logged in to dispatcher|relay [^ ]+ logged in from' 60 ||
    { show_log "$console" 60; fail "camrelayd did not log in to the local dispatcher"; }
pass "camrelayd logged in to the appliance's dispatcher"

if grep -Eq 'Failed to start|\.service: (Main process exited|Failed with result)' "$console"; then
    grep -E 'Failed to start|\.service: (Main process exited|Failed with result)' "$console" |
        sed 's/^/      /' >&2
    fail "a unit failed (console)"
fi
pass "no unit failed"

# ---------------------------------------------------------------------------- power off
power_t0=$SECONDS
"$PYTHON" - "$monitor" <<'EOF' || info "could not reach the QEMU monitor"
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
time.sleep(0.2)
s.sendall(b"system_powerdown\n")
time.sleep(0.5)
s.close()
EOF
for ((i = 0; i < 600; i++)); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$qemu_pid" 2>/dev/null; then
    info "the VM did not power off within 60 s: ending qemu"
    stop_pid "$qemu_pid" 5 || true
    fail "no clean power-off"
fi
wait "$qemu_pid" 2>/dev/null || true
grep -q 'reboot: Power down' "$console" || fail "qemu ended without the guest's 'reboot: Power down'"
pass "VM powered off cleanly in $((SECONDS - power_t0))s"
info "timings: image ${build_s}s, boot to answer ${answer_s}s"
