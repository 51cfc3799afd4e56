#!/usr/bin/env bash
# shellcheck disable=SC2016 # single-quoted checks are run by bash -c and expand there
# The Debian package, end to end on this machine (root): builds it (make deb, lintian
# included), checks its contents, metadata and units, installs it, runs camrelay-firstboot and
# both daemons from the installed configuration (on 127.0.0.1, as the camrelay user, briefly),
# then removes it (registry and configuration kept), reinstalls it (kept again), and purges it
# (both gone). Leaves the machine as it found it: the package purged, and the camrelay user
# deleted when this test created it.
#
# Refuses to run where camrelay is installed or /var/lib/camrelay or /etc/camrelay exist: it
# would purge them.
#
#   tests/packaging/test_deb.sh            (DEB=path.deb to test a built package instead)
#
# Prints one PASS/FAIL line per check and closes with "N passed, M failed".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
NAME=test_deb
TMP=$(mktemp -d "${TMPDIR:-/tmp}/camrelay-$NAME.XXXXXX")
PASSED=0
FAILED=0
PIDS=()
INSTALLED=0
MADE_USER=0

pass() {
    PASSED=$((PASSED + 1))
    printf 'PASS: %s: %s\n' "$NAME" "$*"
}
fail() {
    FAILED=$((FAILED + 1))
    printf 'FAIL: %s: %s\n' "$NAME" "$*"
}
# check DESCRIPTION CMD...: pass when CMD succeeds.
check() {
    local what=$1
    shift
    if "$@" >"$TMP/check.out" 2>&1; then
        pass "$what"
    else
        fail "$what"
        sed 's/^/      /' "$TMP/check.out" | tail -n 20
    fi
}
# fatal MSG: report, clean up, stop.
fatal() {
    fail "$*"
    exit 1
}
info() { printf '      %s: %s\n' "$NAME" "$*"; }

# dpkg_run ARGS...: dpkg, waiting (up to 5 min) while another apt/dpkg holds its lock.
dpkg_run() {
    local i out rc
    for ((i = 0; i < 150; i++)); do
        out=$(dpkg "$@" 2>&1)
        rc=$?
        if [ "$rc" -ne 0 ] && grep -q 'lock' <<<"$out" && ! grep -q '^Unpacking\|^Setting up' <<<"$out"; then
            sleep 2
            continue
        fi
        printf '%s\n' "$out"
        return "$rc"
    done
    printf '%s\n' "$out"
    return "$rc"
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$INSTALLED" = 1 ]; then
        dpkg_run --purge camrelay >/dev/null 2>&1 || true
    fi
    if [ "$MADE_USER" = 1 ] && getent passwd camrelay >/dev/null; then
        deluser --quiet --system camrelay >/dev/null 2>&1 || userdel camrelay 2>/dev/null || true
        getent group camrelay >/dev/null && groupdel camrelay 2>/dev/null
    fi
    rm -rf "$TMP"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ] && [ "$rc" -eq 0 ] && exit 0
    exit 1
}
trap cleanup EXIT
trap 'exit 1' INT TERM

[ "$(id -u)" -eq 0 ] || fatal "needs root (installs and purges the package)"
if dpkg-query -W -f='${db:Status-Status}' camrelay 2>/dev/null | grep -qv '^not-installed$'; then
    fatal "camrelay is installed on this machine: not touching it (dpkg --purge camrelay first)"
fi
for d in /var/lib/camrelay /etc/camrelay; do
    [ -e "$d" ] && fatal "$d exists: this test would purge it; move it away first"
done
getent passwd camrelay >/dev/null || MADE_USER=1

# ------------------------------------------------------------------------------ build
if [ -n "${DEB:-}" ]; then
    deb=$DEB
else
    info "building the package (make deb)"
    if ! make -C "$ROOT" --no-print-directory deb >"$TMP/build.log" 2>&1; then
        sed 's/^/      /' "$TMP/build.log" | tail -n 40
        fatal "make deb"
    fi
    sed 's/^/      /' "$TMP/build.log" | grep -v '^      make' | tail -n 20
    deb=$(tail -n 1 "$TMP/build.log")
    pass "make deb built $(basename "$deb"), lintian clean (errors and warnings fail it)"
fi
[ -f "$deb" ] || fatal "no package at $deb"
case "$(basename "$deb")" in
    camrelay_*_amd64.deb) pass "file name $(basename "$deb")" ;;
    *) fail "file name $(basename "$deb") is not camrelay_<version>_amd64.deb" ;;
esac

# ---------------------------------------------------------------------------- contents
dpkg-deb -c "$deb" | awk '{print $1, $2, $NF}' | sed 's| \./| /|' >"$TMP/contents"
expect_file() { # MODE PATH
    grep -q "^$1 root/root $2\$" "$TMP/contents"
}
for f in camrelayd camrelay-dispatch camrelay-agent camrelayctl; do
    check "contents: /usr/bin/$f (0755 root)" expect_file -rwxr-xr-x "/usr/bin/$f"
done
for f in /etc/camrelay/camrelayd.conf /etc/camrelay/dispatch.conf \
    /lib/systemd/system/camrelayd.service /lib/systemd/system/camrelay-dispatch.service \
    /lib/systemd/system/camrelay-firstboot.service /usr/lib/modules-load.d/camrelay.conf \
    /usr/share/man/man8/camrelayd.8.gz /usr/share/man/man8/camrelay-dispatch.8.gz \
    /usr/share/man/man1/camrelayctl.1.gz /usr/share/man/man1/camrelay-agent.1.gz \
    /usr/share/doc/camrelay/copyright /usr/share/doc/camrelay/changelog.gz; do
    check "contents: $f (0644 root)" expect_file -rw-r--r-- "$f"
done
check "contents: /usr/libexec/camrelay/camrelay-firstboot (0755 root)" \
    expect_file -rwxr-xr-x /usr/libexec/camrelay/camrelay-firstboot
check "contents: nothing under /var (the registry is made at run time)" \
    bash -c "! grep -q ' /var/' '$TMP/contents'"

dpkg-deb -f "$deb" Depends >"$TMP/depends"
for p in android-libboringssl libprotobuf-c1 libsqlite3-0 liburing2 libinih1 libjansson4 adduser; do
    check "Depends: $p" grep -Eq "(^|, )$p( |,|$)" "$TMP/depends"
done
# Every shared library the programs load must come from a package in Depends (catches a
# library added to the link, e.g. libmicrohttpd, without dpkg-shlibdeps seeing it).
deps_cover_needed() {
    local x lib path pkg
    mkdir -p "$TMP/x"
    dpkg-deb -x "$deb" "$TMP/x"
    for x in "$TMP"/x/usr/bin/*; do
        for lib in $(objdump -p "$x" | awk '/NEEDED/ {print $2}'); do
            # Where the loader finds it (RUNPATH included), then its package; /lib and
            # /usr/lib are the same directory here (usrmerge) but dpkg knows one of them.
            path=$(ldd "$x" | awk -v l="$lib" '$1 == l {print $3}')
            [ -n "$path" ] || { echo "$x: $lib not found"; return 1; }
            pkg=$( (dpkg -S "$path" || dpkg -S "$(realpath "$path")" || dpkg -S "${path#/usr}" ||
                dpkg -S "/usr$path") 2>/dev/null | head -n 1 | cut -d: -f1)
            [ -n "$pkg" ] || { echo "$lib ($path): no package"; return 1; }
            case "$pkg" in libc6 | libgcc-s1 | libstdc++6) continue ;; esac
            grep -Eq "(^|, )$pkg( |,|$)" "$TMP/depends" || { echo "$x needs $lib from $pkg"; return 1; }
        done
    done
}
check "Depends covers every NEEDED library ($(tr -d '\n' <"$TMP/depends"))" deps_cover_needed
check "conffiles: camrelayd.conf and dispatch.conf" bash -c \
    "dpkg-deb --ctrl-tarfile '$deb' | tar -xOf - ./conffiles | sort | tr '\n' ' ' |
     grep -qx '/etc/camrelay/camrelayd.conf /etc/camrelay/dispatch.conf '"

# ------------------------------------------------------------------------------ install
if ! dpkg_run -i "$deb" >"$TMP/install.log" 2>&1; then
    INSTALLED=1
    sed 's/^/      /' "$TMP/install.log"
    fatal "dpkg -i (missing dependencies? scripts/install-deps.sh)"
fi
INSTALLED=1
pass "dpkg -i $(basename "$deb")"

check "user camrelay: system user, no login shell" bash -c \
    'u=$(getent passwd camrelay) && uid=$(echo "$u" | cut -d: -f3) && [ "$uid" -lt 1000 ] &&
     case "$(echo "$u" | cut -d: -f7)" in */nologin|*/false) ;; *) exit 1 ;; esac'
check "/var/lib/camrelay: camrelay:camrelay 0750" bash -c \
    '[ "$(stat -c %U:%G:%a /var/lib/camrelay)" = camrelay:camrelay:750 ]'
check "daemons enabled (multi-user.target.wants)" bash -c \
    '[ -L /etc/systemd/system/multi-user.target.wants/camrelayd.service ] &&
     [ -L /etc/systemd/system/multi-user.target.wants/camrelay-dispatch.service ]'
check "camrelay-firstboot.service not enabled by the package" \
    test ! -e /etc/systemd/system/multi-user.target.wants/camrelay-firstboot.service
for p in camrelayd camrelay-dispatch camrelay-agent camrelayctl; do
    # --help loads every library (BoringSSL through the RUNPATH) and exits 0.
    check "$p --help runs" "/usr/bin/$p" --help
done
check "camrelayd accepts /etc/camrelay/camrelayd.conf" \
    /usr/bin/camrelayd --config /etc/camrelay/camrelayd.conf --help
check "camrelay-dispatch accepts /etc/camrelay/dispatch.conf" \
    /usr/bin/camrelay-dispatch --config /etc/camrelay/dispatch.conf --help

if command -v systemd-analyze >/dev/null; then
    man_opt=--man=yes # Documentation=man:... must resolve, when man is here to say so
    command -v man >/dev/null || man_opt=--man=no
    check "systemd-analyze verify (three units)" systemd-analyze verify "$man_opt" \
        /lib/systemd/system/camrelayd.service /lib/systemd/system/camrelay-dispatch.service \
        /lib/systemd/system/camrelay-firstboot.service
    # Exposure score: informational (systemd's scale, lower is better).
    for u in camrelayd camrelay-dispatch; do
        score=$(systemd-analyze security --offline=true "/lib/systemd/system/$u.service" 2>/dev/null |
            grep -o 'Overall exposure level.*' || true)
        [ -n "$score" ] && info "$u: $score"
    done
else
    info "systemd-analyze not installed: unit verification skipped"
fi
unit_has() { # UNIT LINE
    grep -qx -- "$2" "/lib/systemd/system/$1"
}
hardening_ok=1
for u in camrelayd.service camrelay-dispatch.service; do
    for l in User=camrelay StateDirectory=camrelay ConfigurationDirectory=camrelay \
        RuntimeDirectory=camrelay Restart=on-failure NoNewPrivileges=yes ProtectSystem=strict \
        ProtectHome=yes PrivateTmp=yes PrivateDevices=yes ProtectKernelTunables=yes \
        ProtectKernelModules=yes ProtectControlGroups=yes \
        'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' CapabilityBoundingSet= \
        LimitNOFILE=1048576 SystemCallArchitectures=native; do
        unit_has "$u" "$l" || { fail "$u lacks $l"; hardening_ok=0; }
    done
done
[ "$hardening_ok" = 1 ] && pass "both daemon units carry the required settings and hardening"
check "camrelayd.service has no SystemCallFilter (io_uring must stay allowed)" \
    bash -c '! grep -q "^SystemCallFilter" /lib/systemd/system/camrelayd.service'

# ------------------------------------------------- first boot, then both daemons, briefly
info "camrelay-firstboot (CAMRELAY_HOSTS=localhost,127.0.0.1)"
if CAMRELAY_HOSTS=localhost,127.0.0.1 CAMRELAY_PUBLIC_ADDR=127.0.0.1:8443 \
    /usr/libexec/camrelay/camrelay-firstboot >"$TMP/firstboot.log" 2>&1; then
    pass "camrelay-firstboot"
else
    sed 's/^/      /' "$TMP/firstboot.log"
    fail "camrelay-firstboot"
fi
check "PKI: ca.pem relay.pem/.key dispatch.pem/.key, keys 0640 root:camrelay, ca.key 0600 root" \
    bash -c 'cd /etc/camrelay/pki &&
      [ "$(stat -c %U:%G:%a relay.key dispatch.key)" = "$(printf "root:camrelay:640\nroot:camrelay:640")" ] &&
      [ "$(stat -c %U:%a ca.key)" = root:600 ] && [ -f ca.pem ] && [ -f relay.pem ] && [ -f dispatch.pem ] &&
      [ "$(stat -c %U:%G:%a .)" = root:camrelay:750 ]'
check "relay account password 0640 root:camrelay" bash -c \
    '[ -s /etc/camrelay/relay-account.password ] &&
     [ "$(stat -c %U:%G:%a /etc/camrelay/relay-account.password)" = root:camrelay:640 ]'
check "camrelayd.conf: public-addr set by firstboot" \
    grep -qx 'public-addr = 127.0.0.1:8443' /etc/camrelay/camrelayd.conf
check "firstboot a second time does nothing" bash -c \
    '/usr/libexec/camrelay/camrelay-firstboot | grep -q "nothing to do"'

# The daemons as the units run them (user camrelay, the installed configuration), moved to
# free loopback ports and sockets in a private directory: nothing listens beyond 127.0.0.1.
free_port() { "${PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dport=$(free_port)
rport=$(free_port)
eport=$(free_port)
run=$TMP/run
install -d -o camrelay -g camrelay -m 0750 "$run"
chmod 0711 "$TMP"
# exec: run in the background, the recorded pid is the daemon itself.
as_camrelay() { exec setpriv --reuid=camrelay --regid=camrelay --init-groups "$@"; }
as_camrelay /usr/bin/camrelay-dispatch --config /etc/camrelay/dispatch.conf \
    --listen "127.0.0.1:$dport" --mgmt-socket "$run/dispatch.sock" >"$TMP/dispatch.log" 2>&1 </dev/null &
PIDS+=($!)
as_camrelay /usr/bin/camrelayd --config /etc/camrelay/camrelayd.conf \
    --listen-external "127.0.0.1:$rport" --public-addr "127.0.0.1:$rport" \
    --internal-host 127.0.0.1 --services rtsp --port-range "$eport-$eport" \
    --dispatcher "127.0.0.1:$dport" \
    --mgmt-socket "$run/relay.sock" >"$TMP/relay.log" 2>&1 </dev/null &
PIDS+=($!)
wait_sock() {
    local i
    for ((i = 0; i < 100; i++)); do
        [ -S "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
if wait_sock "$run/dispatch.sock" && wait_sock "$run/relay.sock"; then
    pass "both daemons up from the installed configuration as user camrelay"
else
    fail "daemons did not come up"
    sed 's/^/      dispatch: /' "$TMP/dispatch.log"
    sed 's/^/      relay: /' "$TMP/relay.log"
fi
check "management sockets 0660 camrelay:camrelay" bash -c \
    "[ \"\$(stat -c %U:%G:%a '$run/relay.sock' '$run/dispatch.sock')\" = \"\$(printf 'camrelay:camrelay:660\ncamrelay:camrelay:660')\" ]"
check "registry files owned by camrelay" bash -c \
    '[ "$(stat -c %U /var/lib/camrelay/relay.db)" = camrelay ] && [ "$(stat -c %U /var/lib/camrelay/dispatch.db)" = camrelay ]'
check "camrelayctl: register a camera on the installed relay" /usr/bin/camrelayctl \
    --relay-socket "$run/relay.sock" camera register PKG-TEST-0001 --oak OAK-1 --user admin \
    --password secret
check "camrelayctl: the dispatcher knows the relay account" bash -c \
    "/usr/bin/camrelayctl --dispatcher-socket '$run/dispatch.sock' relay list | grep -qw relay1"
check "TLS on the relay's agent port, certificate issued by the camrelay CA" bash -c \
    "timeout 10 openssl s_client -connect 127.0.0.1:$rport -CAfile /etc/camrelay/pki/ca.pem \
        -verify_return_error </dev/null 2>&1 | grep -q '^issuer=.*CN = camrelay CA'"
for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()

# ------------------------------------------------------------ remove, reinstall, purge
echo "# added by $NAME" >>/etc/camrelay/camrelayd.conf
if dpkg_run -r camrelay >"$TMP/remove.log" 2>&1; then pass "dpkg -r camrelay"; else fail "dpkg -r camrelay"; fi
check "remove: binaries gone" test ! -e /usr/bin/camrelayd
check "remove: registry kept (/var/lib/camrelay/relay.db, dispatch.db)" \
    test -s /var/lib/camrelay/relay.db -a -s /var/lib/camrelay/dispatch.db
check "remove: configuration and PKI kept" bash -c \
    'grep -q "added by" /etc/camrelay/camrelayd.conf && [ -f /etc/camrelay/pki/ca.key ]'

if dpkg_run -i "$deb" >"$TMP/reinstall.log" 2>&1 && dpkg_run -i "$deb" >>"$TMP/reinstall.log" 2>&1; then
    pass "install again, then upgrade over itself"
else
    sed 's/^/      /' "$TMP/reinstall.log"
    fail "reinstall"
fi
check "reinstall/upgrade: registry and edited configuration kept" bash -c \
    '[ -s /var/lib/camrelay/relay.db ] && grep -q "added by" /etc/camrelay/camrelayd.conf &&
     [ "$(stat -c %U:%G /var/lib/camrelay)" = camrelay:camrelay ]'

if dpkg_run --purge camrelay >"$TMP/purge.log" 2>&1; then
    INSTALLED=0
    pass "dpkg --purge camrelay"
else
    sed 's/^/      /' "$TMP/purge.log"
    fail "dpkg --purge camrelay"
fi
check "purge: /var/lib/camrelay gone" test ! -e /var/lib/camrelay
check "purge: /etc/camrelay gone (configuration, PKI, password)" test ! -e /etc/camrelay
check "purge: unit symlinks gone" bash -c \
    '! ls /etc/systemd/system/multi-user.target.wants/ 2>/dev/null | grep -q camrelay'
