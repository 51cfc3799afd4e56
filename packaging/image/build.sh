#!/usr/bin/env bash
# Builds the camrelay appliance image (`make image`, as root):
#
#   build/image/root.img     ext4 file system of the whole appliance (root=/dev/vda), made
#                            from a directory with `mkfs.ext4 -d`: no loop device, no mount
#   build/image/vmlinuz      the image's own kernel and initrd, for direct kernel boot
#   build/image/initrd.img
#   build/image/root/        the tree root.img was made from
#   build/image/stamp        what went in (base, package, this script), for callers' caching
#
# A minimal Debian bookworm (debootstrap --variant=minbase, plus systemd-sysv, udev, dbus,
# linux-image-amd64, and the package's run-time dependencies) with systemd-networkd doing DHCP
# on the first NIC, the camrelay .deb installed (both daemons enabled), and
# camrelay-firstboot.service enabled: on first boot it makes the PKI for the machine's
# addresses, the relay's dispatcher account and the relay's public address, so that
# camrelay-dispatch and camrelayd come up by themselves.
#
# debootstrap takes minutes, so its result (the "base") is cached per machine in
# $IMAGE_CACHE/base-<key>, keyed by suite, mirror and package list; a later build copies it
# and only installs the package and writes the file system (well under a minute).
#
# Environment:
#   DEB=FILE               the package (default build/camrelay_<version>_amd64.deb, built by
#                          packaging/deb/build.sh when missing)
#   IMAGE_DIR              output directory (default build/image)
#   IMAGE_CACHE            base cache (default /var/cache/camrelay-image; IMAGE_CACHE= disables)
#   IMAGE_MIRROR           Debian mirror (default: the first one in this machine's apt sources)
#   IMAGE_SUITE            default bookworm
#   IMAGE_SIZE             file-system size for mkfs.ext4 (default: the tree plus 40%, at
#                          least 1G; the file is sparse)
#   IMAGE_HOSTNAME         default camrelay
#   IMAGE_ROOT_PASSWORD    root's password on the console (default: root locked, no login)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

IMAGE_DIR=${IMAGE_DIR:-build/image}
case "$IMAGE_DIR" in /*) ;; *) IMAGE_DIR="$ROOT/$IMAGE_DIR" ;; esac
IMAGE_CACHE=${IMAGE_CACHE-/var/cache/camrelay-image}
IMAGE_SUITE=${IMAGE_SUITE:-bookworm}
IMAGE_HOSTNAME=${IMAGE_HOSTNAME:-camrelay}
IMAGE_ROOT_PASSWORD=${IMAGE_ROOT_PASSWORD:-}
# Bump when the base's contents change in a way the key below does not see.
BASE_FORMAT=1

say() { printf '  %-6s %s\n' "$1" "$2"; }
die() {
    echo "image: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, and files owned by other users)"
for c in debootstrap mkfs.ext4 dpkg-deb chroot systemctl sha256sum; do
    command -v "$c" >/dev/null || die "needs $c (scripts/install-deps.sh)"
done

if [ -z "${IMAGE_MIRROR:-}" ]; then
    IMAGE_MIRROR=$(
        {
            grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
            grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}'
        } | grep -m 1 '/debian/*$' || true
    )
    IMAGE_MIRROR=${IMAGE_MIRROR:-http://deb.debian.org/debian}
fi

# ---------------------------------------------------------------------------- the package
t_start=$SECONDS
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
DEB=${DEB:-build/camrelay_${version}_$(dpkg --print-architecture).deb}
case "$DEB" in /*) ;; *) DEB="$ROOT/$DEB" ;; esac
if [ ! -f "$DEB" ]; then
    say DEB "$DEB missing: building it"
    packaging/deb/build.sh >/dev/null
fi
[ -f "$DEB" ] || die "no package at $DEB"

# Its run-time dependencies (first alternative, no versions) go into the base.
deps=$(dpkg-deb -f "$DEB" Depends | tr ',' '\n' | sed -E 's/\|.*//; s/\(.*\)//; s/[[:space:]]//g' |
    grep -v '^$' | sort -u | tr '\n' ',' | sed 's/,$//')
include="systemd-sysv,udev,dbus,kmod,initramfs-tools,linux-image-amd64,iproute2,$deps"

# ------------------------------------------------------------------------------- the base
key=$(printf '%s\n' "$BASE_FORMAT" "$IMAGE_SUITE" "$IMAGE_MIRROR" "$include" | sha256sum | cut -c1-16)
if [ -n "$IMAGE_CACHE" ]; then
    base="$IMAGE_CACHE/base-$key"
else
    base="$IMAGE_DIR/base"
fi
mkdir -p "$IMAGE_DIR" "$(dirname "$base")"
# One build at a time makes or copies a base (a developer's `make image` and a test may run
# together); released when this script exits.
exec 9>"$(dirname "$base")/.lock"
flock 9
if [ -f "$base/.camrelay-base" ]; then
    say BASE "cached $base"
else
    say BASE "debootstrap $IMAGE_SUITE (minbase + $include) from $IMAGE_MIRROR"
    rm -rf "$base.tmp"
    debs=$(dirname "$base")/debs
    mkdir -p "$debs"
    t0=$SECONDS
    if ! debootstrap --variant=minbase --merged-usr --components=main \
        --include="$include" --cache-dir="$debs" \
        "$IMAGE_SUITE" "$base.tmp" "$IMAGE_MIRROR" >"$IMAGE_DIR/debootstrap.log" 2>&1; then
        tail -n 30 "$IMAGE_DIR/debootstrap.log" >&2
        [ -f "$base.tmp/debootstrap/debootstrap.log" ] && tail -n 30 "$base.tmp/debootstrap/debootstrap.log" >&2
        die "debootstrap failed (log: $IMAGE_DIR/debootstrap.log)"
    fi
    # debootstrap leaves the downloaded .debs in the cache dir, not in the tree.
    rm -f "$base.tmp"/var/cache/apt/archives/*.deb
    rm -rf "$base.tmp"/var/lib/apt/lists/*
    echo "$key $IMAGE_SUITE $IMAGE_MIRROR $include" >"$base.tmp/.camrelay-base"
    rm -rf "$base"
    mv "$base.tmp" "$base"
    say BASE "debootstrap took $((SECONDS - t0)) s"
    # Older bases (another key) are of no further use.
    if [ -n "$IMAGE_CACHE" ]; then
        for old in "$IMAGE_CACHE"/base-*; do
            [ "$old" = "$base" ] || rm -rf "$old"
        done
    fi
fi

# ------------------------------------------------------------------------- the appliance
rootfs="$IMAGE_DIR/root"
rm -rf "$rootfs" "$IMAGE_DIR/root.img" "$IMAGE_DIR/stamp"
cp -a "$base" "$rootfs"
rm -f "$rootfs/.camrelay-base"
flock -u 9

echo "$IMAGE_HOSTNAME" >"$rootfs/etc/hostname"
cat >"$rootfs/etc/hosts" <<EOF
127.0.0.1	localhost
127.0.1.1	$IMAGE_HOSTNAME
::1		localhost ip6-localhost ip6-loopback
EOF
cat >"$rootfs/etc/fstab" <<'EOF'
# The whole appliance is one ext4 file system on the first virtio disk.
/dev/vda	/	ext4	defaults,errors=remount-ro	0	1
EOF
# apt on the appliance: the release (as built) plus its security and point updates.
cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $IMAGE_MIRROR $IMAGE_SUITE main
deb $IMAGE_MIRROR $IMAGE_SUITE-updates main
deb ${IMAGE_MIRROR%/debian*}/debian-security $IMAGE_SUITE-security main
EOF
# Every booted copy of the image gets its own machine id.
: >"$rootfs/etc/machine-id"
rm -f "$rootfs/var/lib/dbus/machine-id"
# debootstrap copied this machine's resolver configuration: not the appliance's business.
rm -f "$rootfs/etc/resolv.conf"

# Network: DHCP on the first (and any) Ethernet NIC with systemd-networkd; boot waits for one
# link at most 60 s (network-online.target: camrelay-firstboot needs the address).
cat >"$rootfs/etc/systemd/network/80-camrelay-dhcp.network" <<'EOF'
# camrelay appliance: DHCP on Ethernet NICs (see deployment.md for a static address).
[Match]
Type=ether
Name=en* eth*

[Network]
DHCP=yes
EOF
mkdir -p "$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$rootfs/etc/systemd/system/systemd-networkd-wait-online.service.d/camrelay.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=60
EOF
systemctl --root="$rootfs" --quiet enable systemd-networkd.service systemd-networkd-wait-online.service

cat >"$rootfs/etc/issue" <<'EOF'
camrelay appliance (Debian GNU/Linux 12) \n \l
  camrelayctl camera list      cameras on this relay
  journalctl -u camrelayd      relay log

EOF

if [ -n "$IMAGE_ROOT_PASSWORD" ]; then
    echo "root:$IMAGE_ROOT_PASSWORD" | chroot "$rootfs" chpasswd
else
    chroot "$rootfs" passwd --lock root >/dev/null
fi

# The package, installed the way apt would (its postinst makes the user and enables the
# daemons); nothing is started inside the chroot.
say DEB "installing $(basename "$DEB")"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
cp "$DEB" "$rootfs/tmp/camrelay.deb"
if ! chroot "$rootfs" dpkg -i /tmp/camrelay.deb >"$IMAGE_DIR/install.log" 2>&1; then
    cat "$IMAGE_DIR/install.log" >&2
    die "dpkg -i in the image failed"
fi
rm -f "$rootfs/tmp/camrelay.deb" "$rootfs/usr/sbin/policy-rc.d"
systemctl --root="$rootfs" --quiet enable camrelay-firstboot.service
for u in camrelayd camrelay-dispatch camrelay-firstboot; do
    [ -L "$rootfs/etc/systemd/system/multi-user.target.wants/$u.service" ] ||
        die "$u.service is not enabled in the image"
done

# Leftovers of the build.
rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/* \
    "$rootfs"/var/tmp/* "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/lib/dpkg/*-old

# ----------------------------------------------------------------------- kernel and initrd
kernel=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no kernel in $rootfs/boot"
kver=${kernel##*/vmlinuz-}
[ -f "$rootfs/boot/initrd.img-$kver" ] || die "no initrd.img-$kver in $rootfs/boot"
cp "$kernel" "$IMAGE_DIR/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$IMAGE_DIR/initrd.img"

# ---------------------------------------------------------------------------- file system
used_kib=$(du -s --apparent-size -k "$rootfs" | cut -f1)
if [ -n "${IMAGE_SIZE:-}" ]; then
    size=$IMAGE_SIZE
else
    size_mib=$(((used_kib * 14 / 10 / 1024 + 63) / 64 * 64))
    [ "$size_mib" -ge 1024 ] || size_mib=1024
    size="${size_mib}M"
fi
say MKFS "root.img ($size, tree $((used_kib / 1024)) MiB)"
mkfs.ext4 -q -F -L camrelay-root -d "$rootfs" "$IMAGE_DIR/root.img.tmp" "$size" >/dev/null
mv "$IMAGE_DIR/root.img.tmp" "$IMAGE_DIR/root.img"

{
    echo "base $key"
    echo "deb $(sha256sum "$DEB" | cut -d' ' -f1)"
    echo "script $(sha256sum packaging/image/build.sh | cut -d' ' -f1)"
    echo "kernel $kver"
} >"$IMAGE_DIR/stamp"

say IMAGE "$IMAGE_DIR: root.img $(du -h --apparent-size "$IMAGE_DIR/root.img" | cut -f1) (on disk $(du -h "$IMAGE_DIR/root.img" | cut -f1)), vmlinuz $kver, initrd.img $(du -h "$IMAGE_DIR/initrd.img" | cut -f1); $((SECONDS - t_start)) s"
