#!/usr/bin/env bash
# Times `tsuba measure` against the public Python reference tool `sev-snp-measure` on the same
# inputs, in the same run, alternating the two so that machine noise hits both alike.
#
# Inputs: a 4 MiB firmware, 8 vCPUs (EPYC-Milan). With the AmdSev build
# ($TSUBA_AMDSEV_OVMF, default ~/.cache/tsuba/firmware/amdsev/OVMF.fd) the launch also measures a
# 12 MiB kernel, a 32 MiB initrd and a command line (kernel hashes); without it, Debian's plain
# /usr/share/ovmf/OVMF.fd padded in front to 4 MiB, without kernel.
#
# Needs: `pip install sev-snp-measure`, jq, Debian's ovmf. Prints one line per tool (median and
# mean wall-clock milliseconds over $RUNS runs, process start included) and the speed-up.
#
# Usage: bench/measure-vs-python.sh            (RUNS=20 by default)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-20}
amdsev=${TSUBA_AMDSEV_OVMF:-$HOME/.cache/tsuba/firmware/amdsev/OVMF.fd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

command -v sev-snp-measure >/dev/null || { echo "pip install sev-snp-measure" >&2; exit 1; }
command -v jq >/dev/null || { echo "apt-get install jq" >&2; exit 1; }

# Deterministic boot files (content does not matter for speed, only size).
head -c $((12 * 1024 * 1024)) /dev/zero | tr '\0' '\220' >"$work/kernel"
head -c $((32 * 1024 * 1024)) /dev/zero | tr '\0' '\037' >"$work/initrd"
cmdline="console=ttyS0 root=/dev/vda"

if [ -f "$amdsev" ]; then
    fw=$amdsev
    tsuba_boot=(--kernel "$work/kernel" --initrd "$work/initrd" --cmdline "$cmdline")
    py_boot=(--kernel "$work/kernel" --initrd "$work/initrd" --append "$cmdline")
    what="AmdSev OVMF ($(($(stat -c %s "$fw") / 1024)) KiB), with kernel hashes"
else
    fw=$work/ovmf-4m.fd
    plain=/usr/share/ovmf/OVMF.fd
    pad=$((4 * 1024 * 1024 - $(stat -c %s "$plain")))
    { head -c "$pad" /dev/zero | tr '\0' 'Z'; cat "$plain"; } >"$fw"
    tsuba_boot=()
    py_boot=()
    what="plain OVMF padded to 4 MiB, no kernel (AmdSev build not found at $amdsev)"
fi

(cd "$root" && CARGO_BUILD_JOBS=2 cargo build -q --release -p tsuba-cli)
tsuba=$root/target/release/tsuba

run_tsuba() {
    "$tsuba" measure --firmware "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${tsuba_boot[@]}" |
        jq -r .snp.launch_digest
}
run_python() {
    sev-snp-measure --mode snp --ovmf "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${py_boot[@]}"
}

a=$(run_tsuba)
b=$(run_python)
if [ "$a" != "$b" ]; then
    echo "MISMATCH: tsuba $a, sev-snp-measure $b" >&2
    exit 1
fi

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000)); }
: >"$work/t" && : >"$work/p"
for _ in $(seq "$runs"); do
    ms run_tsuba >>"$work/t"
    ms run_python >>"$work/p"
done

stats() { sort -n "$1" | awk '{v[NR]=$1; s+=$1} END {printf "%.1f %.1f\n", v[int((NR+1)/2)]/1000, s/NR/1000}'; }
read -r t_med t_mean < <(stats "$work/t")
read -r p_med p_mean < <(stats "$work/p")

echo "inputs: $what; 8 vCPUs EPYC-Milan; digest $a (both tools agree)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf 'tsuba measure:   median %8.1f ms  mean %8.1f ms  (%d runs)\n' "$t_med" "$t_mean" "$runs"
printf 'sev-snp-measure: median %8.1f ms  mean %8.1f ms  (%d runs)\n' "$p_med" "$p_mean" "$runs"
awk -v t="$t_med" -v p="$p_med" 'BEGIN {printf "speed-up (median): %.1fx\n", p / t}'
