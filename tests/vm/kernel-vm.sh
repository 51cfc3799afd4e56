#!/usr/bin/env bash
# Runs one command under Debian's own kernel, which has the kernel TLS module (tls.ko) that
# this machine's kernel lacks: the kTLS path of the relay (TCP_ULP "tls", then splice) can
# only run there.
#
#   tests/vm/kernel-vm.sh [--] COMMAND [ARG]...
#
# The guest sees this machine's whole file system (read-only over virtio 9p, with a tmpfs
# overlay so it can write anywhere; nothing reaches the host), so the programs and tests of
# this checkout run there as they are. The command runs as root in the project root, with
# loopback up, kernel modules loading on demand (namespaces, nftables, veth) and
# CAMRELAY_VM=<kernel release> set. Its output is printed here; the script exits with its
# status (124 when the VM timed out, 125 when the VM could not start or run it).
#
# The kernel is Debian's linux-image-amd64 of the day, fetched once with `apt-get download`
# and unpacked (never installed) into $BUILD/vm. QEMU runs it under software emulation
# (these machines have no usable KVM): expect everything to run 10-30 times slower.
#
# Environment: VM_CACHE (where kernels are kept, default build/vm), VM_TIMEOUT (seconds,
# default 900), VM_MEM_MB (2048), VM_CPUS (2), VM_VERBOSE=1 (kernel messages too), VM_KEEP=1
# (keep the initramfs and the console log, for debugging the VM itself).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
vm_dir=${VM_CACHE:-$root/build/vm}
timeout_s=${VM_TIMEOUT:-900}

die() {
    echo "kernel-vm: $*" >&2
    exit 125
}

[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || die "usage: $0 [--] COMMAND [ARG]..."
for cmd in qemu-system-x86_64 apt-get apt-cache dpkg-deb flock; do
    command -v "$cmd" >/dev/null || die "$cmd is missing (scripts/install-deps.sh)"
done
[ -x /bin/busybox ] || die "/bin/busybox is missing (busybox-static; scripts/install-deps.sh)"

# ------------------------------------------------------------------ the kernel, once
# The kernel package linux-image-amd64 points to today, e.g. linux-image-6.1.0-57-amd64.
kernel_package() {
    { apt-cache depends linux-image-amd64 2>/dev/null || true; } |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
# Downloads and unpacks one kernel package into $vm_dir/PKG (its modules indexed for
# modprobe); 0, or 1 with nothing left behind.
fetch_kernel() {
    local pkg=$1 kdir="$vm_dir/$1" kver
    echo "kernel-vm: fetching $pkg (once, into $kdir)" >&2
    rm -rf "$kdir"
    mkdir -p "$kdir/deb"
    # apt drops privileges to _apt for downloads; a directory _apt may write avoids its warning.
    chmod 0777 "$kdir/deb"
    if (cd "$kdir/deb" && apt-get download -q "$pkg" >/dev/null) &&
        dpkg-deb -x "$kdir"/deb/*.deb "$kdir/root" &&
        kver=$(ls "$kdir/root/lib/modules") &&
        /bin/busybox depmod -b "$kdir/root" "$kver"; then
        rm -rf "$kdir/deb"
        touch "$kdir/ready"
        return 0
    fi
    echo "kernel-vm: could not fetch $pkg" >&2
    rm -rf "$kdir"
    return 1
}
mkdir -p "$vm_dir"
exec {lock_fd}>"$vm_dir/.lock" # one fetch at a time; runs share what is there
flock "$lock_fd"
pkg=$(kernel_package)
if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then # a machine whose package lists were cleared
    apt-get update -q >/dev/null 2>&1 || true
    pkg=$(kernel_package)
fi
if [ -z "$pkg" ] || { [ ! -f "$vm_dir/$pkg/ready" ] && ! fetch_kernel "$pkg"; }; then
    # No package list, or no network: the newest kernel fetched before will do.
    pkg=$(find "$vm_dir" -mindepth 2 -maxdepth 2 -name ready -printf '%h\n' 2>/dev/null |
        xargs -r -n1 basename | sort -V | tail -n 1)
    [ -n "$pkg" ] || die "no kernel: apt cannot name or fetch linux-image-amd64 (apt-get update as root?)"
    echo "kernel-vm: using $pkg, fetched before" >&2
fi
flock -u "$lock_fd"
kdir="$vm_dir/$pkg"
kver=$(ls "$kdir/root/lib/modules")
vmlinuz="$kdir/root/boot/vmlinuz-$kver"
moddir="$kdir/root/lib/modules/$kver"
[ -f "$vmlinuz" ] || die "no $vmlinuz"

# ------------------------------------------------------------------ the initramfs
# Just enough to mount this machine's root over 9p under an overlay and switch to it: busybox
# and the modules that 9p, virtio-pci and overlayfs need, in the order modules.dep gives.
work=$(mktemp -d "${TMPDIR:-/tmp}/camrelay-vm.XXXXXX")
qemu_pid=
cleanup() {
    if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    [ "${VM_KEEP:-0}" = 1 ] && echo "kernel-vm: kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load_order() { # modules.dep lists a module's dependencies in the order they must be unloaded
    local want seen=" " out=() line deps d
    for want in "$@"; do
        line=$(grep -E "/$want\.ko(\.[a-z]+)?:" "$moddir/modules.dep") || die "no module $want"
        read -r -a deps <<<"${line#*:}"
        local i
        for ((i = ${#deps[@]} - 1; i >= 0; i--)); do
            d=${deps[i]}
            case "$seen" in *" $d "*) ;; *) out+=("$d") seen="$seen$d " ;; esac
        done
        d=${line%%:*}
        case "$seen" in *" $d "*) ;; *) out+=("$d") seen="$seen$d " ;; esac
    done
    printf '%s\n' "${out[@]}"
}

ird="$work/initramfs"
mkdir -p "$ird/bin" "$ird/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/lower" \
    "$ird/rw" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
modules=$(load_order virtio_pci 9pnet_virtio 9p overlay) || exit 125
: >"$ird/modules/order"
for m in $modules; do
    cp "$moddir/$m" "$ird/modules/"
    echo "${m##*/}" >>"$ird/modules/order"
done

# The command, quoted for the guest's shell.
printf -v quoted '%q ' "$@"
# bash, not the guest's /bin/sh: %q above quotes for bash.
cat >"$ird/run.sh" <<EOF
#!/bin/bash
ip link set lo up
export CAMRELAY_VM=$kver PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp LANG=C.UTF-8
echo "camrelay-vm: running under \$(uname -r)"
if cd $(printf '%q' "$root"); then
    $quoted
    rc=\$?
else
    rc=125
fi
printf '\ncamrelay-vm: exit %s\n' "\$rc" # on a line of its own, whatever came before
exec /bin/busybox poweroff -f
EOF

cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in \$(cat /modules/order); do insmod /modules/\$m || echo "camrelay-vm: insmod \$m failed"; done
fail() { echo "camrelay-vm: \$*"; echo "camrelay-vm: exit 125"; exec poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower ||
    fail "cannot mount the host's root over 9p"
mount -t tmpfs -o size=75% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
    fail "cannot mount the overlay"
# The kernel's modules where modprobe looks, and a modprobe (busybox's) for on-demand loading.
mkdir -p /newroot/lib/modules /newroot/sbin
ln -sfn $(printf '%q' "$moddir") /newroot/lib/modules/$kver
[ -e /newroot/sbin/modprobe ] || ln -s /bin/busybox /newroot/sbin/modprobe
mount -t proc proc /newroot/proc
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
ln -s /proc/self/fd /newroot/dev/fd # what udev would make: bash's <(...) needs it
ln -s /proc/self/fd/0 /newroot/dev/stdin
ln -s /proc/self/fd/1 /newroot/dev/stdout
ln -s /proc/self/fd/2 /newroot/dev/stderr
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# /tmp stays the overlay's (writes land in its tmpfs): the checkout may live under the host's
# /tmp, as a CI clone does, and a tmpfs mounted there would hide it.
mount -t tmpfs tmpfs /newroot/run
echo /sbin/modprobe >/proc/sys/kernel/modprobe
cp /run.sh /newroot/run/camrelay-vm.sh
exec switch_root /newroot /bin/bash /run/camrelay-vm.sh
EOF
chmod +x "$ird/init" "$ird/run.sh"
(cd "$ird" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initrd.gz") ||
    die "cannot pack the initramfs"

# ------------------------------------------------------------------ boot
loglevel=3
[ "${VM_VERBOSE:-0}" = 1 ] && loglevel=7
console="$work/console.log"
qemu-system-x86_64 -machine q35 -accel tcg,thread=multi -cpu max -smp "${VM_CPUS:-2}" \
    -m "${VM_MEM_MB:-2048}" -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 loglevel=$loglevel panic=-1 rdinit=/init" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    </dev/null >"$console" 2>&1 &
qemu_pid=$!
# The guest's output; the firmware's and the kernel's only with VM_VERBOSE=1.
show_console() {
    if [ "${VM_VERBOSE:-0}" = 1 ]; then
        tr -d '\r' <"$console"
    else
        tr -d '\r' <"$console" | sed -n '/camrelay-vm: running/,$p' |
            sed 's/^.*camrelay-vm: running/camrelay-vm: running/' |
            grep -v '^\[ *[0-9.]*\] reboot: ' || true
    fi
}
deadline=$((SECONDS + timeout_s))
while kill -0 "$qemu_pid" 2>/dev/null; do
    if [ $SECONDS -ge $deadline ]; then
        kill "$qemu_pid" 2>/dev/null || true
        show_console
        echo "kernel-vm: no result after ${timeout_s}s: stopped the VM" >&2
        exit 124
    fi
    sleep 1
done
wait "$qemu_pid" 2>/dev/null || true
qemu_pid=
show_console
rc=$(tr -d '\r' <"$console" | sed -n 's/^camrelay-vm: exit \([0-9]*\)$/\1/p' | tail -n 1)
[ -n "$rc" ] || die "the VM ended without a result (VM_VERBOSE=1 shows the kernel's messages)"
exit "$rc"
