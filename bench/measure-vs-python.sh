#!/usr/bin/env bash
# Times `tsuba measure` against the public Python reference tool `sev-snp-measure` on the same
# inputs, in the same run, alternating the two so that machine noise hits both alike.
#
# Inputs: a 4 MiB firmware, 8 vCPUs (EPYC-Milan). With the AmdSev build
# ($TSUBA_AMDSEV_OVMF, default ~/.cache/tsuba/firmware/amdsev/OVMF.fd) the launch also measures a
# 12 MiB kernel, a 32 MiB initrd and a command line (kernel hashes); without it, Debian's plain
# /usr/share/ovmf/OVMF.fd padded in front to 4 MiB, without kernel.
#
# Needs: sev-snp-measure ($TSUBA_SEV_SNP_MEASURE: the venv scripts/setup installs; else on PATH),
# jq, GNU time (/usr/bin/time), Debian's ovmf. Prints one line per tool: median wall-clock and
# median CPU time (user + sys of the process, which a busy shared machine disturbs less than
# wall-clock) over $RUNS runs, process start included, and the speed-ups.
#
# Usage: bench/measure-vs-python.sh   (env: RUNS=20, TSUBA_AMDSEV_OVMF, TSUBA_BIN, TSUBA_SEV_SNP_MEASURE)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-20}
amdsev=${TSUBA_AMDSEV_OVMF:-$HOME/.cache/tsuba/firmware/amdsev/OVMF.fd}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

ssm=${TSUBA_SEV_SNP_MEASURE:-sev-snp-measure}
command -v "$ssm" >/dev/null || { echo "sev-snp-measure not found: run scripts/setup" >&2; exit 1; }
command -v jq >/dev/null || { echo "apt-get install jq" >&2; exit 1; }

# Deterministic boot files (content does not matter for speed, only size).
head -c $((12 * 1024 * 1024)) /dev/zero | tr '\0' '\220' >"$work/kernel"
head -c $((32 * 1024 * 1024)) /dev/zero | tr '\0' '\037' >"$work/initrd"
cmdline="console=ttyS0 root=/dev/vda"

if [ -f "$amdsev" ]; then
    fw=$amdsev
    tsuba_boot=(--kernel "$work/kernel" --initrd "$work/initrd" --cmdline "$cmdline")
    py_boot=(--kernel "$work/kernel" --initrd "$work/initrd" --append "$cmdline")
    what="AmdSev OVMF ($(($(stat -L -c %s "$fw") / 1024)) KiB), with kernel hashes"
else
    fw=$work/ovmf-4m.fd
    plain=/usr/share/ovmf/OVMF.fd
    pad=$((4 * 1024 * 1024 - $(stat -c %s "$plain")))
    { head -c "$pad" /dev/zero | tr '\0' 'Z'; cat "$plain"; } >"$fw"
    tsuba_boot=()
    py_boot=()
    what="plain OVMF padded to 4 MiB, no kernel (AmdSev build not found at $amdsev)"
fi

# TSUBA_BIN: an already built `tsuba` to time instead of building one.
if [ -n "${TSUBA_BIN:-}" ]; then
    tsuba=$TSUBA_BIN
else
    (cd "$root" && CARGO_BUILD_JOBS=2 cargo build -q --release -p tsuba-cli)
    tsuba=$root/target/release/tsuba
fi

run_tsuba() {
    "$tsuba" measure --firmware "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${tsuba_boot[@]}" |
        jq -r .snp.launch_digest
}
run_python() {
    "$ssm" --mode snp --ovmf "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${py_boot[@]}"
}

load=$(cut -d' ' -f1-3 /proc/loadavg)
a=$(run_tsuba)
b=$(run_python)
if [ "$a" != "$b" ]; then
    echo "MISMATCH: tsuba $a, sev-snp-measure $b" >&2
    exit 1
fi

# One timed run: appends "wall_ms cpu_ms" (cpu = user + sys of the tool's process).
timed() {
    local out=$1
    shift
    /usr/bin/time -f "%e %U %S" -o "$work/one" "$@" >/dev/null
    awk '{printf "%.1f %.1f\n", $1 * 1000, ($2 + $3) * 1000}' "$work/one" >>"$out"
}
tsuba_cmd=("$tsuba" measure --firmware "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${tsuba_boot[@]}")
py_cmd=("$ssm" --mode snp --ovmf "$fw" --vcpus 8 --vcpu-type EPYC-Milan "${py_boot[@]}")
: >"$work/t" && : >"$work/p"
for _ in $(seq "$runs"); do
    timed "$work/t" "${tsuba_cmd[@]}"
    timed "$work/p" "${py_cmd[@]}"
done

# Median of column $2 of file $1.
median() { sort -n -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {printf "%.1f\n", v[int((NR+1)/2)]}'; }
t_wall=$(median "$work/t" 1)
t_cpu=$(median "$work/t" 2)
p_wall=$(median "$work/p" 1)
p_cpu=$(median "$work/p" 2)

echo "inputs: $what; 8 vCPUs EPYC-Milan; digest $a (both tools agree)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "load average before the runs: $load"
printf 'tsuba measure:   median wall %8.1f ms  cpu (user+sys) %8.1f ms  (%d runs)\n' "$t_wall" "$t_cpu" "$runs"
printf 'sev-snp-measure: median wall %8.1f ms  cpu (user+sys) %8.1f ms  (%d runs)\n' "$p_wall" "$p_cpu" "$runs"
awk -v tw="$t_wall" -v pw="$p_wall" -v tc="$t_cpu" -v pc="$p_cpu" \
    'BEGIN {printf "speed-up (median): wall %.1fx, cpu %.1fx\n", pw / tw, pc / (tc > 0 ? tc : 1)}'
