#!/usr/bin/env bash
# Build the measured AmdSev OVMF (OvmfPkg/AmdSev/AmdSevX64.dsc, RELEASE, X64) reproducibly from
# Debian trixie's edk2 source package, with Debian bookworm's toolchain.
#
# The source comes from deb.debian.org only, authenticated by the signed trixie InRelease:
# InRelease (gpgv, Debian archive keyring) -> Sources.xz (sha256 + size) -> edk2 tarballs (sha256 + size).
# The build runs in a private mount namespace with the source tree bind-mounted on a fixed path,
# so the output does not depend on where the work directory is. See docs/firmware.md.
#
# Usage: build-amdsev.sh [--work-dir DIR] [--output FILE] [--no-verify] [--keep-work] [--prepare-only]
#   (no option)      cached build: prints the path of the cached OVMF.fd; a cache hit does no work
#   --work-dir DIR   unpack and build in DIR (must be absent or empty); default: a fresh
#                    temporary directory under the cache, removed afterwards
#   --output FILE    bypass the cache: build and copy OVMF.fd to FILE, print FILE
#   --no-verify      do not compare the result with firmware/recipe/amdsev.sha256
#   --keep-work      keep the work directory (for inspection)
#   --prepare-only   stop after fetching, verifying, unpacking and patching; print the source tree
#                    (implies --keep-work; no cache lookup)
# Environment: TSUBA_CACHE (default $HOME/.cache/tsuba). A build needs root (apt-get, mount
# namespace); a cache hit does not.
# Stdout carries only the output path; progress goes to stderr.

set -euo pipefail
umask 022
export LC_ALL=C TZ=UTC
unset MAKEFLAGS MFLAGS CFLAGS CPPFLAGS LDFLAGS CC CXX PYTHONPATH

# ---- pinned inputs: bump EDK2_VERSION and re-record amdsev.sha256 together ----------------------
# TSUBA_DEBIAN_MIRROR may name another Debian mirror (test-recipe.sh serves a tampered one on
# loopback); whatever it serves must still verify against the Debian archive keyring.
readonly MIRROR="${TSUBA_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
readonly SUITE="trixie"
readonly EDK2_VERSION="2025.02-8+deb13u1"
readonly KEYRING="/usr/share/keyrings/debian-archive-keyring.gpg"
# Build dependencies, installed from the host's suite (bookworm) with apt-get.
readonly BUILD_DEPS=(build-essential nasm acpica-tools uuid-dev python3 quilt xz-utils
    curl gpgv dpkg-dev util-linux)
# The fixed path the source tree is bind-mounted on during the build (inside a private mount
# namespace, so concurrent builds do not see each other's mount).
readonly FIXED_PATH="/tsuba-edk2-build"
# Upper bounds for what the mirror may send us (bytes).
readonly MAX_INRELEASE=$((4 * 1024 * 1024))
readonly MAX_SOURCES_XZ=$((64 * 1024 * 1024))
readonly MAX_TARBALL=$((128 * 1024 * 1024))

log() { printf 'build-amdsev: %s\n' "$*" >&2; }
die() {
    printf 'build-amdsev: error: %s\n' "$*" >&2
    exit 1
}

RECIPE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly RECIPE_DIR
readonly EXPECTED_FILE="$RECIPE_DIR/amdsev.sha256"

# ---- arguments ---------------------------------------------------------------------------------
work_dir=""
output=""
verify=1
keep_work=0
prepare_only=0
while [ $# -gt 0 ]; do
    case "$1" in
    --work-dir)
        [ $# -ge 2 ] || die "--work-dir needs a directory"
        work_dir="$2"
        shift 2
        ;;
    --output)
        [ $# -ge 2 ] || die "--output needs a file name"
        output="$2"
        shift 2
        ;;
    --no-verify)
        verify=0
        shift
        ;;
    --keep-work)
        keep_work=1
        shift
        ;;
    --prepare-only)
        prepare_only=1
        keep_work=1
        shift
        ;;
    -h | --help)
        sed -n '2,/^$/s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
        exit 0
        ;;
    *) die "unknown argument: $1 (see --help)" ;;
    esac
done

# ---- cache layout ------------------------------------------------------------------------------
cache_root="${TSUBA_CACHE:-$HOME/.cache/tsuba}/firmware"
# The recipe hash covers the files that decide the output: this script alone (amdsev.sha256 is
# the expected result, not an input; check-reproducible.sh only drives this script).
recipe_sha256="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)"
recipe_hash="${recipe_sha256:0:12}"
readonly cache_root recipe_sha256 recipe_hash
cache_name="amdsev-${EDK2_VERSION}-${recipe_hash}"
cache_dir="$cache_root/$cache_name"
cache_fd="$cache_dir/OVMF.fd"
link_dir="$cache_root/amdsev"

expected_sha256() {
    [ -f "$EXPECTED_FILE" ] || die "missing $EXPECTED_FILE (record the sha256 of a verified build there)"
    local hex name
    read -r hex name <"$EXPECTED_FILE" || true
    [[ "$hex" =~ ^[0-9a-f]{64}$ && "$name" == "OVMF.fd" ]] ||
        die "$EXPECTED_FILE must hold one line: '<sha256>  OVMF.fd'"
    printf '%s\n' "$hex"
}

# Point amdsev/OVMF.fd at the cached build (relative link; replaced atomically).
update_link() {
    local target="../$cache_name/OVMF.fd"
    mkdir -p "$link_dir"
    if [ "$(readlink "$link_dir/OVMF.fd" 2>/dev/null || true)" != "$target" ]; then
        ln -sfn "$target" "$link_dir/.OVMF.fd.new"
        mv -Tf "$link_dir/.OVMF.fd.new" "$link_dir/OVMF.fd"
    fi
}

# cache_hit: when the cached image has the recorded sha256, link it, print its path and exit.
cache_hit() {
    [ -z "$output" ] && [ "$prepare_only" -eq 0 ] || return 0
    local want have
    want="$(expected_sha256)"
    [ -f "$cache_fd" ] || return 0
    have="$(sha256sum "$cache_fd" | cut -d' ' -f1)"
    if [ "$have" = "$want" ]; then
        update_link
        printf '%s\n' "$cache_fd"
        exit 0
    fi
    log "cached $cache_fd has sha256 $have, expected $want: rebuilding"
}
cache_hit

[ "$(id -u)" -eq 0 ] || die "building needs root (apt-get and a private mount namespace)"

# ---- build dependencies (idempotent: apt-get only when something is missing) -------------------
missing=()
for pkg in "${BUILD_DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing build dependencies: ${missing[*]}"
    apt-get update >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

# ---- one build at a time per cache (the download area and the cache entry are shared) ----------
mkdir -p "$cache_root"
exec 9>"$cache_root/.amdsev.lock"
flock 9
# Another run may have built it while we waited for the lock.
cache_hit

# ---- work directory ----------------------------------------------------------------------------
if [ -z "$work_dir" ]; then
    mkdir -p "$cache_root/work"
    work_dir="$(mktemp -d "$cache_root/work/amdsev.XXXXXXXX")"
else
    mkdir -p "$work_dir"
    [ -z "$(ls -A "$work_dir")" ] || die "work directory $work_dir is not empty"
fi
work_dir="$(cd "$work_dir" && pwd)"
cleanup() {
    if [ "$keep_work" -eq 0 ]; then
        rm -rf -- "$work_dir"
    else
        log "kept work directory $work_dir"
    fi
}
trap cleanup EXIT

# ---- authenticated download from deb.debian.org ------------------------------------------------
# fetch URL FILE MAX_BYTES: HTTP GET, failing on any HTTP error or when larger than MAX_BYTES.
fetch() {
    curl --fail --silent --show-error --location --proto '=http,https' --max-filesize "$3" \
        --retry 3 --connect-timeout 20 --output "$2" "$1" || die "download failed: $1"
}

# check_file FILE SHA256 SIZE NAME
check_file() {
    local size have
    size="$(stat -c %s "$1")"
    [ "$size" = "$3" ] || die "$4: size $size, the signed index says $3"
    have="$(sha256sum "$1" | cut -d' ' -f1)"
    [ "$have" = "$2" ] || die "$4: sha256 $have, the signed index says $2"
}

dl="$work_dir/download"
mkdir -p "$dl"
log "fetching and verifying $SUITE InRelease"
fetch "$MIRROR/dists/$SUITE/InRelease" "$dl/InRelease" "$MAX_INRELEASE"
# Only the signed payload that gpgv writes out is parsed: text outside the signature is ignored.
gpgv --quiet --keyring "$KEYRING" --output "$dl/Release" "$dl/InRelease" 2>"$dl/gpgv.log" ||
    die "InRelease signature does not verify against $KEYRING: $(cat "$dl/gpgv.log")"
grep -qx "Codename: $SUITE" "$dl/Release" || die "signed Release file is not for $SUITE"

# The SHA256 entry of main/source/Sources.xz in the signed Release file.
read -r sources_sha sources_size < <(awk '
    /^SHA256:/ { in_sha = 1; next }
    /^[^ ]/ { in_sha = 0 }
    in_sha && $3 == "main/source/Sources.xz" { print $1, $2; exit }' "$dl/Release") ||
    die "signed Release file lists no SHA256 for main/source/Sources.xz"
fetch "$MIRROR/dists/$SUITE/main/source/Sources.xz" "$dl/Sources.xz" "$MAX_SOURCES_XZ"
check_file "$dl/Sources.xz" "$sources_sha" "$sources_size" Sources.xz

# The edk2 stanza of the verified index, and the tarballs it lists.
xz -dc "$dl/Sources.xz" | awk -v RS= -v ORS='\n\n' '/(^|\n)Package: edk2\n/' >"$dl/edk2.stanza"
index_version="$(awk '/^Version: / { print $2; exit }' "$dl/edk2.stanza")"
[ "$index_version" = "$EDK2_VERSION" ] ||
    die "$SUITE lists edk2 ${index_version:-<none>}, this recipe pins $EDK2_VERSION (bump EDK2_VERSION and re-record amdsev.sha256)"
pool_dir="$(awk '/^Directory: / { print $2; exit }' "$dl/edk2.stanza")"
[[ "$pool_dir" =~ ^pool/main/e/edk2$ ]] || die "unexpected pool directory for edk2: $pool_dir"
awk '/^Checksums-Sha256:/ { in_sha = 1; next }
    /^[^ ]/ { in_sha = 0 }
    in_sha && $3 ~ /\.tar\.[a-z0-9]+$/ { print $1, $2, $3 }' "$dl/edk2.stanza" >"$dl/tarballs"
{ grep -q '\.orig\.tar\.' "$dl/tarballs" && grep -q '\.debian\.tar\.' "$dl/tarballs"; } ||
    die "edk2 entry does not list an orig and a debian tarball"

# Verified tarballs are kept in the cache (outside the work directory) for the next build.
src_cache="$cache_root/sources"
mkdir -p "$src_cache"
while read -r sha size name; do
    [[ "$name" =~ ^[A-Za-z0-9.+~_-]+$ ]] || die "unexpected file name in the index: $name"
    [ "$size" -le "$MAX_TARBALL" ] || die "$name: listed size $size is over the limit"
    if [ -f "$src_cache/$name" ] && [ "$(sha256sum "$src_cache/$name" | cut -d' ' -f1)" = "$sha" ]; then
        log "using cached $name"
    else
        log "fetching $name"
        fetch "$MIRROR/$pool_dir/$name" "$src_cache/$name.part" "$MAX_TARBALL"
        check_file "$src_cache/$name.part" "$sha" "$size" "$name"
        mv -f "$src_cache/$name.part" "$src_cache/$name"
    fi
    # Check again the copy we unpack (the cache is writable by whoever owns it).
    cp "$src_cache/$name" "$dl/$name"
    check_file "$dl/$name" "$sha" "$size" "$name"
done <"$dl/tarballs"

# ---- unpack and patch --------------------------------------------------------------------------
src="$work_dir/edk2"
mkdir -p "$src"
orig="$(awk '$3 ~ /\.orig\.tar\./ { print $3 }' "$dl/tarballs")"
debian="$(awk '$3 ~ /\.debian\.tar\./ { print $3 }' "$dl/tarballs")"
tar -x --no-same-owner --strip-components=1 -C "$src" -f "$dl/$orig"
tar -x --no-same-owner -C "$src" -f "$dl/$debian"
log "applying debian/patches"
(cd "$src" && QUILT_PATCHES=debian/patches QUILT_PC=.pc quilt --quiltrc - push -a -q) \
    >"$work_dir/quilt.log" 2>&1 || {
    cat "$work_dir/quilt.log" >&2
    die "debian/patches do not apply"
}
log "applied $(grep -c '^Applying patch' "$work_dir/quilt.log") patches"

# Skip the grub module: an empty grub.efi, newer than grub.sh and grub.cfg, so that the PREBUILD
# step (OvmfPkg/AmdSev/Grub/grub.sh) keeps it instead of building grub.
touch "$src/OvmfPkg/AmdSev/Grub/grub.efi"
if [ "$prepare_only" -eq 1 ]; then
    printf '%s\n' "$src"
    exit 0
fi

SOURCE_DATE_EPOCH="$(dpkg-parsechangelog -l "$src/debian/changelog" -STimestamp)"
export SOURCE_DATE_EPOCH

# Stack cookies: edk2 (since 2024.11) draws 100 random 32-bit and 64-bit values into
# Build/<platform>/StackCookieValues{32,64}.json on the first build in a build directory, and picks
# one per module by Python's hash() of the module GUID, so every fresh build directory gets other
# values. Debian's no-stack-protector-all-archs.diff builds with -fno-stack-protector, so today the
# cookies do not reach the image; should that change, they would break reproducibility. Pre-seed the
# files with fixed values (from SHA-256 of a label, in the ranges edk2 uses) and fix PYTHONHASHSEED
# below. A reproducible firmware cannot have secret cookies anyway: the binary is public.
build_out="$src/Build/AmdSev/RELEASE_GCC5"
mkdir -p "$build_out"
python3 - "$build_out" <<'PY'
import hashlib
import json
import os
import sys

for bits, bound in ((32, 0xFFFFFFFF), (64, 0xFFFFFFFFFFFFFFFF)):
    values = []
    for i in range(100):
        label = f"tsuba amdsev stack cookie {bits} {i}".encode()
        digest = hashlib.sha256(label).digest()
        values.append(int.from_bytes(digest[: bits // 8], "little") % bound)
    with open(os.path.join(sys.argv[1], f"StackCookieValues{bits}.json"), "w") as file:
        json.dump(values, file)
PY

# ---- build under the fixed path ----------------------------------------------------------------
mkdir -p "$FIXED_PATH"
log "building AmdSevX64 RELEASE (nice -n 10; a few minutes)"
start=$(date +%s)
# The inner script runs in a private mount namespace with $src bind-mounted on $FIXED_PATH.
# Only whitelisted variables reach it, so the host's environment cannot change the output.
# shellcheck disable=SC2016 # the inner script expands its own variables
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent LC_ALL=C TZ=UTC \
    SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
    SRC="$src" FIXED="$FIXED_PATH" \
    unshare --mount --propagation private -- bash -euo pipefail -c '
        umask 022
        mount --bind "$SRC" "$FIXED"
        cd "$FIXED"
        set +u
        . ./edksetup.sh >/dev/null
        set -u
        nice -n 10 make -C BaseTools >build-basetools.log 2>&1 ||
            { tail -n 40 build-basetools.log; exit 1; }
        nice -n 10 build -a X64 -t GCC5 -b RELEASE -n 2 -q \
            -p OvmfPkg/AmdSev/AmdSevX64.dsc >build-amdsev.log 2>&1 ||
            { tail -n 60 build-amdsev.log; exit 1; }
    ' >&2 || die "the edk2 build failed (log above; --keep-work keeps $work_dir)"
log "build took $(($(date +%s) - start)) s"

built="$src/Build/AmdSev/RELEASE_GCC5/FV/OVMF.fd"
[ -f "$built" ] || die "build finished without $built"
got="$(sha256sum "$built" | cut -d' ' -f1)"
log "OVMF.fd sha256 $got"

if [ "$verify" -eq 1 ]; then
    want="$(expected_sha256)"
    [ "$got" = "$want" ] ||
        die "built OVMF.fd has sha256 $got but $EXPECTED_FILE records $want (toolchain or source differ; see docs/firmware.md)"
fi

# What it was built with, next to the image.
build_info() {
    printf 'edk2 %s (Debian %s, %s)\n' "$EDK2_VERSION" "$SUITE" "$MIRROR"
    printf 'recipe sha256 %s\n' "$recipe_sha256"
    printf 'SOURCE_DATE_EPOCH %s\n' "$SOURCE_DATE_EPOCH"
    printf 'OVMF.fd sha256 %s\n' "$got"
    dpkg-query -W -f='${Package} ${Version}\n' gcc gcc-12 binutils nasm acpica-tools python3 uuid-dev make 2>/dev/null || true
}

if [ -n "$output" ]; then
    mkdir -p "$(dirname "$output")"
    cp "$built" "$output.part"
    build_info >"$output.build-info"
    mv -f "$output.part" "$output"
    printf '%s\n' "$output"
    exit 0
fi

mkdir -p "$cache_dir"
cp "$built" "$cache_dir/.OVMF.fd.part"
build_info >"$cache_dir/build-info.txt"
mv -f "$cache_dir/.OVMF.fd.part" "$cache_fd"
update_link
printf '%s\n' "$cache_fd"
