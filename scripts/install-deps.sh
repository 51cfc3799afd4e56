#!/usr/bin/env bash
# Install camrelay's build and test dependencies from Debian (12, bookworm).
#
# Idempotent: when every package is already installed it does nothing (no apt-get update),
# so CI can run it on every build. Needs root only when something is missing.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config
    liburing-dev android-libboringssl-dev libprotobuf-c-dev protobuf-c-compiler
    libjemalloc-dev libcmocka-dev libbenchmark-dev libsqlite3-dev
    libinih-dev libjansson-dev libmicrohttpd-dev
    ffmpeg iproute2 nftables openssl procps psmisc curl python3
    haproxy gnuplot-nox
    # packaging: make deb, make image, tests/e2e/test_image.sh, tests/packaging/test_deb.sh
    debhelper lintian debootstrap qemu-system-x86 e2fsprogs
    # kernel TLS under Debian's own kernel in QEMU (tests/vm/kernel-vm.sh, which fetches the
    # kernel itself): the VM's initramfs is busybox
    busybox-static
    # the status page's end-to-end test (headless): tests/e2e/test_status_page.sh
    chromium
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    if [ "$status" != "installed" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: error: must run as root to install them (try: sudo -E $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o DPkg::Lock::Timeout=300)

# Retry the update a few times: a concurrent apt run may hold the lists lock.
for attempt in 1 2 3; do
    if apt-get "${APT_OPTS[@]}" update; then
        break
    fi
    if [ "$attempt" -eq 3 ]; then
        echo "install-deps: error: apt-get update failed" >&2
        exit 1
    fi
    sleep 10
done

# build-essential needs its Recommends-free core only; the rest are libraries and tools
# whose recommends we do not use.
apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}"

# Verify.
still=()
for pkg in "${missing[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || still+=("$pkg")
done
if [ ${#still[@]} -ne 0 ]; then
    echo "install-deps: error: still not installed: ${still[*]}" >&2
    exit 1
fi
echo "install-deps: installed ${#missing[@]} package(s)"
