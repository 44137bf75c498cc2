#!/usr/bin/env bash
# Prove that the AmdSev OVMF build is reproducible: build it twice, from scratch, in two work
# directories of different paths (and path lengths), bypassing the firmware cache, and compare:
#   1. the two builds must have the same sha256;
#   2. that sha256 must be the one recorded in firmware/recipe/amdsev.sha256.
# Exit status 0 only when both hold. Takes two full builds (about 6 minutes each on 2 cores).
#
# Usage: check-reproducible.sh [--keep]   (--keep keeps both work directories for diffing)
# Environment: TSUBA_CACHE (default $HOME/.cache/tsuba); the work directories and the verified
# source tarballs live under $TSUBA_CACHE/firmware.

set -euo pipefail
umask 022
export LC_ALL=C

die() {
    printf 'check-reproducible: error: %s\n' "$*" >&2
    exit 1
}
log() { printf 'check-reproducible: %s\n' "$*" >&2; }

keep=()
case "${1:-}" in
"") ;;
--keep) keep=(--keep-work) ;;
*) die "unknown argument: $1" ;;
esac

recipe_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${TSUBA_CACHE:-$HOME/.cache/tsuba}/firmware"
mkdir -p "$cache_root"
base="$(mktemp -d "$cache_root/repro-check.XXXXXXXX")"
if [ ${#keep[@]} -eq 0 ]; then
    trap 'rm -rf -- "$base"' EXIT
fi

# Two work directories whose absolute paths differ in content and in length.
dir_a="$base/a"
dir_b="$base/b-a-much-longer-directory-name/nested/deeper"
out="$base/out"
mkdir -p "$dir_b" "$out"

build() {
    local start
    start=$(date +%s)
    "$recipe_dir/build-amdsev.sh" --no-verify "${keep[@]}" --work-dir "$1" --output "$2" >/dev/null
    log "build in $1 took $(($(date +%s) - start)) s"
}

build "$dir_a" "$out/a.fd"
build "$dir_b" "$out/b.fd"

sha_a="$(sha256sum "$out/a.fd" | cut -d' ' -f1)"
sha_b="$(sha256sum "$out/b.fd" | cut -d' ' -f1)"
log "build in $dir_a: $sha_a"
log "build in $dir_b: $sha_b"
if [ "$sha_a" != "$sha_b" ]; then
    cmp -l "$out/a.fd" "$out/b.fd" | head -n 20 >&2 || true
    die "NOT reproducible: the two builds differ"
fi

read -r want _ <"$recipe_dir/amdsev.sha256" || die "cannot read $recipe_dir/amdsev.sha256"
[ "$sha_a" = "$want" ] ||
    die "reproducible, but sha256 $sha_a differs from the recorded $want (recipe, source or toolchain changed)"
log "reproducible: both builds are $sha_a, as recorded in amdsev.sha256"
