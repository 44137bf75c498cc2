#!/usr/bin/env bash
# Fast checks of build-amdsev.sh (no compile, about a minute): it is pointed at a Debian mirror
# served on 127.0.0.1 from a copy of the real trixie files, then each case tampers with one file
# and expects a refusal with a clear message. Also checks the cache: a hit touches no network,
# a corrupted entry is never handed out. Needs root (the recipe checks its build dependencies) and
# deb.debian.org once, to fetch the genuine InRelease, Sources.xz and tarballs.
#
# Usage: test-recipe.sh
# Environment: TSUBA_CACHE (default $HOME/.cache/tsuba): verified tarballs already in
# $TSUBA_CACHE/firmware/sources are reused instead of downloaded.

set -euo pipefail
umask 022
export LC_ALL=C

recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
real_mirror="http://deb.debian.org/debian"
suite="trixie"
version="$(sed -n 's/^readonly EDK2_VERSION="\(.*\)"$/\1/p' "$recipe_dir/build-amdsev.sh")"
upstream="${version%-*}"
orig="edk2_${upstream}.orig.tar.xz"
debian="edk2_${version}.debian.tar.xz"

[ "$(id -u)" -eq 0 ] || {
    echo "test-recipe: must run as root, like the recipe" >&2
    exit 1
}

tmp="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf -- "$tmp"
}
trap cleanup EXIT

# ---- a pristine mirror copy ---------------------------------------------------------------------
pristine="$tmp/pristine"
mkdir -p "$pristine/dists/$suite/main/source" "$pristine/pool/main/e/edk2"
get() { curl --fail --silent --show-error --max-time 300 --output "$2" "$1"; }
get "$real_mirror/dists/$suite/InRelease" "$pristine/dists/$suite/InRelease"
get "$real_mirror/dists/$suite/main/source/Sources.xz" "$pristine/dists/$suite/main/source/Sources.xz"
src_cache="${TSUBA_CACHE:-$HOME/.cache/tsuba}/firmware/sources"
for f in "$orig" "$debian"; do
    if [ -f "$src_cache/$f" ]; then
        cp "$src_cache/$f" "$pristine/pool/main/e/edk2/$f"
    else
        get "$real_mirror/pool/main/e/edk2/$f" "$pristine/pool/main/e/edk2/$f"
    fi
done

# The served tree starts as a copy of the pristine one; restore() undoes a case's tampering.
served="$tmp/served"
restore() {
    rm -rf "$served"
    cp -a "$pristine" "$served"
}
restore

python3 -u -m http.server --bind 127.0.0.1 --directory "$served" 0 >"$tmp/server.log" 2>&1 &
server_pid=$!
port=""
for _ in $(seq 50); do
    port="$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$tmp/server.log" | head -n 1)"
    [ -n "$port" ] && break
    sleep 0.2
done
[ -n "$port" ] || {
    cat "$tmp/server.log" >&2
    echo "test-recipe: the loopback mirror did not start" >&2
    exit 1
}
mirror="http://127.0.0.1:$port"

# A private copy of the recipe, so that cases can change amdsev.sha256 without touching the repo.
# The script is byte-identical, so it computes the same cache key.
recipe="$tmp/recipe"
mkdir -p "$recipe"
cp "$recipe_dir/build-amdsev.sh" "$recipe_dir/amdsev.sha256" "$recipe/"
recipe_hash="$(sha256sum "$recipe/build-amdsev.sh" | cut -c1-12)"

failures=0
n=0
pass() { printf 'ok   %s\n' "$1"; }
fail() {
    printf 'FAIL %s\n' "$1"
    failures=$((failures + 1))
}

# run NAME MIRROR ARGS... : run the recipe with a fresh cache; output in $tmp/out, $tmp/err.
run() {
    n=$((n + 1))
    local cache="$tmp/cache-$n"
    mkdir -p "$cache"
    TSUBA_CACHE="$cache" TSUBA_DEBIAN_MIRROR="$2" timeout 600 "$recipe/build-amdsev.sh" "${@:3}" \
        >"$tmp/out" 2>"$tmp/err"
}

# expect_refusal NAME PATTERN ARGS... : the recipe must exit non-zero and say PATTERN on stderr.
expect_refusal() {
    local name="$1" pattern="$2"
    shift 2
    if run "$name" "$mirror" --prepare-only --work-dir "$tmp/work-$((n + 1))" "$@"; then
        fail "$name: accepted"
    elif ! grep -q -- "$pattern" "$tmp/err"; then
        fail "$name: refused without saying '$pattern':"
        sed 's/^/     /' "$tmp/err"
    elif [ -e "$tmp/work-$n/edk2/OvmfPkg" ]; then
        fail "$name: refused, but only after unpacking"
    else
        pass "$name"
    fi
}

in_release="$served/dists/$suite/InRelease"
sources="$served/dists/$suite/main/source/Sources.xz"
pool="$served/pool/main/e/edk2"

# ---- the genuine mirror: fetched, verified, unpacked, patched -----------------------------------
if run "genuine" "$mirror" --prepare-only --work-dir "$tmp/good"; then
    tree="$(cat "$tmp/out")"
    applied="$(wc -l <"$tree/.pc/applied-patches")"
    series="$(grep -cv '^\s*\(#\|$\)' "$tree/debian/patches/series")"
    if [ "$tree" = "$tmp/good/edk2" ] && [ "$applied" -eq "$series" ] && [ "$applied" -gt 0 ] &&
        [ -f "$tree/OvmfPkg/AmdSev/AmdSevX64.dsc" ] && [ ! -s "$tree/OvmfPkg/AmdSev/Grub/grub.efi" ] &&
        [ -f "$tree/OvmfPkg/AmdSev/Grub/grub.efi" ]; then
        pass "genuine mirror: $applied/$series patches applied, empty grub.efi"
    else
        fail "genuine mirror: tree $tree, $applied/$series patches"
    fi
else
    fail "genuine mirror refused:"
    sed 's/^/     /' "$tmp/err"
fi
rm -rf "$tmp/good"

# ---- tampering, one file at a time --------------------------------------------------------------
# A tampered index, and the signed Release text edited to match it: the signature breaks.
printf '\001' | dd of="$sources" bs=1 seek=4096 conv=notrunc status=none
real_sha="$(sha256sum "$pristine/dists/$suite/main/source/Sources.xz" | cut -d' ' -f1)"
sed -i "s/^ $real_sha / $(sha256sum "$sources" | cut -d' ' -f1) /" "$in_release"
cmp -s "$in_release" "$pristine/dists/$suite/InRelease" && fail "could not tamper with InRelease"
expect_refusal "InRelease edited to match a tampered index" "signature does not verify"
restore

# The signature stripped: a plain Release file served as InRelease.
gpgv --quiet --keyring /usr/share/keyrings/debian-archive-keyring.gpg --output "$tmp/Release" \
    "$in_release" 2>/dev/null
cp "$tmp/Release" "$in_release"
expect_refusal "unsigned InRelease" "signature does not verify"
restore

# Text added outside the signed block must not be believed: a second, unsigned Release text
# whose Sources.xz hash matches a tampered index. gpgv either rejects the file or ignores the text.
printf '\001' | dd of="$sources" bs=1 seek=100 conv=notrunc status=none
{
    echo "Codename: $suite"
    echo "SHA256:"
    echo " $(sha256sum "$sources" | cut -d' ' -f1) $(stat -c %s "$sources") main/source/Sources.xz"
    echo
    cat "$pristine/dists/$suite/InRelease"
} >"$in_release"
expect_refusal "unsigned text before the signed block" "Sources.xz: sha256\|signature does not verify"
restore

# The Sources index: one byte changed (same size), then one byte appended.
printf '\001' | dd of="$sources" bs=1 seek=4096 conv=notrunc status=none
expect_refusal "Sources.xz with a changed byte" "Sources.xz: sha256"
restore
printf '\001' >>"$sources"
expect_refusal "Sources.xz one byte longer" "Sources.xz: size"
restore

# The tarballs: a changed byte, a truncation, a missing file.
printf '\001' | dd of="$pool/$orig" bs=1 seek=1000000 conv=notrunc status=none
expect_refusal "orig tarball with a changed byte" "$orig: sha256"
restore
truncate -s -1 "$pool/$debian"
expect_refusal "truncated debian tarball" "$debian: size"
restore
rm "$pool/$debian"
expect_refusal "missing debian tarball" "download failed"
restore

# An oversized InRelease (over the recipe's 4 MiB bound) is not downloaded.
head -c $((5 * 1024 * 1024)) /dev/zero >"$in_release"
expect_refusal "oversized InRelease" "download failed"
restore

# A recipe pinned to another edk2 version than the signed index lists.
cp "$recipe/build-amdsev.sh" "$tmp/pinned.sh"
sed -i 's/^readonly EDK2_VERSION=".*"$/readonly EDK2_VERSION="2025.02-1"/' "$recipe/build-amdsev.sh"
expect_refusal "index lists another edk2 version than pinned" "this recipe pins 2025.02-1"
cp "$tmp/pinned.sh" "$recipe/build-amdsev.sh"

# ---- arguments and the recorded hash ------------------------------------------------------------
mkdir -p "$tmp/not-empty" && touch "$tmp/not-empty/x"
if run "non-empty work dir" "$mirror" --prepare-only --work-dir "$tmp/not-empty"; then
    fail "non-empty work dir: accepted"
elif grep -q "is not empty" "$tmp/err"; then
    pass "non-empty work dir refused"
else
    fail "non-empty work dir: wrong message: $(cat "$tmp/err")"
fi

cp "$recipe/amdsev.sha256" "$tmp/amdsev.sha256.real"
echo "not-a-hash  OVMF.fd" >"$recipe/amdsev.sha256"
if run "malformed amdsev.sha256" "$mirror"; then
    fail "malformed amdsev.sha256: accepted"
elif grep -q "must hold one line" "$tmp/err"; then
    pass "malformed amdsev.sha256 refused"
else
    fail "malformed amdsev.sha256: wrong message: $(cat "$tmp/err")"
fi

# ---- the cache ----------------------------------------------------------------------------------
# A cache hit does no work: the mirror is a closed port, so any download would fail.
dead="http://127.0.0.1:9"
entry="amdsev-$version-$recipe_hash"
head -c 4096 /dev/urandom >"$tmp/fake.fd"
echo "$(sha256sum "$tmp/fake.fd" | cut -d' ' -f1)  OVMF.fd" >"$recipe/amdsev.sha256"
n=$((n + 1))
cache="$tmp/cache-$n"
mkdir -p "$cache/firmware/$entry"
cp "$tmp/fake.fd" "$cache/firmware/$entry/OVMF.fd"
if TSUBA_CACHE="$cache" TSUBA_DEBIAN_MIRROR="$dead" "$recipe/build-amdsev.sh" >"$tmp/out" 2>"$tmp/err" &&
    [ "$(cat "$tmp/out")" = "$cache/firmware/$entry/OVMF.fd" ] &&
    [ "$(readlink "$cache/firmware/amdsev/OVMF.fd")" = "../$entry/OVMF.fd" ] &&
    cmp -s "$cache/firmware/amdsev/OVMF.fd" "$tmp/fake.fd" && [ ! -s "$tmp/err" ]; then
    pass "cache hit: path printed, amdsev/OVMF.fd linked, no download"
else
    fail "cache hit: out '$(cat "$tmp/out")' err '$(cat "$tmp/err")'"
fi

# A corrupted entry is not handed out: the recipe says so and rebuilds (here: fails to download).
printf '\001' | dd of="$cache/firmware/$entry/OVMF.fd" bs=1 seek=0 conv=notrunc status=none
if TSUBA_CACHE="$cache" TSUBA_DEBIAN_MIRROR="$dead" "$recipe/build-amdsev.sh" >"$tmp/out" 2>"$tmp/err"; then
    fail "corrupted cache entry: accepted"
elif grep -q "rebuilding" "$tmp/err" && [ ! -s "$tmp/out" ]; then
    pass "corrupted cache entry: not used, rebuild attempted"
else
    fail "corrupted cache entry: out '$(cat "$tmp/out")' err '$(cat "$tmp/err")'"
fi
cp "$tmp/amdsev.sha256.real" "$recipe/amdsev.sha256"

if [ "$failures" -ne 0 ]; then
    echo "test-recipe: $failures failed" >&2
    exit 1
fi
echo "test-recipe: all passed"
