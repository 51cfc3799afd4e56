#!/usr/bin/env bash
# Builds the Debian package build/camrelay_<version>_amd64.deb (`make deb`).
#
# The package is built from a snapshot of the work tree (the files git tracks plus new ones it
# does not ignore) in build/deb/camrelay-<version>/, with packaging/debian copied in as
# debian/, so concurrent edits and the developer build in build/ never mix with it. The
# programs are compiled there again with Debian's hardening flags (debian/rules).
# Then lintian runs when it is installed (LINTIAN=0 skips it).
#
# Environment: DEB_OUT (where the .deb goes, default build), JOBS (default: nproc),
# LINTIAN (1 = run lintian and fail on errors or warnings, 0 = skip; default 1 when installed).
# Prints the path of the .deb as its last line.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

OUT=${DEB_OUT:-build}
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
JOBS=${JOBS:-$(nproc)}

say() { printf '  %-6s %s\n' "$1" "$2"; }
die() {
    echo "deb: error: $*" >&2
    exit 1
}

for c in dpkg-buildpackage dpkg-parsechangelog dh; do
    command -v "$c" >/dev/null || die "needs $c (scripts/install-deps.sh installs debhelper and dpkg-dev)"
done

version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
arch=$(dpkg --print-architecture)
stage="$OUT/deb"
src="$stage/camrelay-$version"
deb="camrelay_${version}_${arch}.deb"

rm -rf "$stage"
mkdir -p "$src"

# ------------------------------------------------------------------------ source snapshot
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files that still exist, plus untracked files that are not ignored.
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            [ -f "$f" ] && printf '%s\0' "$f"
        done >"$stage/files"
else
    find Makefile common relay control agent cmd proto packaging docs README.md \
        -type f -print0 >"$stage/files"
fi
tar -C "$ROOT" --null -T "$stage/files" -cf - | tar -C "$src" -xf -
rm -f "$stage/files"
rm -rf "$src/debian"
cp -a packaging/debian "$src/debian"
say SNAP "$src ($(find "$src" -type f | wc -l) files)"

# ---------------------------------------------------------------------------------- build
say DEB "dpkg-buildpackage -b (log: $stage/build.log)"
if ! (cd "$src" && dpkg-buildpackage -b --no-sign -j"$JOBS") >"$stage/build.log" 2>&1; then
    echo "----- last 60 lines of $stage/build.log" >&2
    tail -n 60 "$stage/build.log" >&2
    die "dpkg-buildpackage failed"
fi
[ -f "$stage/$deb" ] || die "dpkg-buildpackage made no $deb"
cp "$stage/$deb" "$OUT/$deb"
# The detached debug symbols (camrelay-dbgsym) stay in build/deb.
say DEB "$OUT/$deb ($(du -h "$OUT/$deb" | cut -f1))"

# -------------------------------------------------------------------------------- lintian
run_lintian=${LINTIAN:-auto}
if [ "$run_lintian" = auto ]; then
    if command -v lintian >/dev/null; then run_lintian=1; else run_lintian=0; fi
fi
if [ "$run_lintian" = 1 ]; then
    command -v lintian >/dev/null || die "LINTIAN=1 but lintian is not installed"
    say LINT "lintian $deb"
    # --fail-on warning: errors and warnings fail; info and pedantic tags are only shown.
    if ! lintian --display-info --fail-on error,warning "$OUT/$deb"; then
        die "lintian found errors or warnings (overrides: packaging/debian/camrelay.lintian-overrides)"
    fi
else
    say LINT "skipped (lintian not installed or LINTIAN=0)"
fi

echo "$OUT/$deb"
