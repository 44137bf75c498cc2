#!/usr/bin/env bash
# Boot figures for docs/performance.md, measured side by side in one run:
#   - boot-to-agent-ready of the release image, against the floor: the same QEMU, accelerator,
#     firmware, kernel and command line booting an initrd whose init only powers off;
#   - release initrd size (compressed), agent RSS after boot;
#   - the smallest guest memory that boots to agent-ready.
# Usage (after scripts/setup and the image build; `make bench` does both): bench/boot.sh [runs]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
: "${TSUBA_OVMF:?run via make bench}" "${TSUBA_AMDSEV_OVMF:?run via make bench}"
tsuba="$repo/target/debug/tsuba"
guest="$repo/out/guest/release"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$repo/bench/floor.sh"
floor_initrd "$work" >/dev/null

# The agent boots as for a pod: it takes an initdata document whose policy is the one
# `tsuba policy generate` writes for a five-container pod, so the figures below include checking
# the document against the guest's report and compiling the policy (RSS with the engine loaded).
cat > "$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: bench
spec:
  enableServiceLinks: false
  containers:
YAML
for n in 1 2 3 4 5; do
    cat >> "$work/pod.yaml" <<YAML
  - name: c$n
    image: registry.example:5000/app$n@sha256:$(printf '%064d' "$n")
    command: ["/app", "--serve", "--id=$n"]
    env: [{name: MODE, value: prod}]
YAML
done
"$tsuba" policy generate "$work/pod.yaml" --offline --output-dir "$work/pod" >/dev/null

config() { # initrd memory_mib
    cat > "$work/launch-$2.toml" <<TOML
initdata = "$work/pod/initdata.toml"
mode = "sim-snp"
kernel = "$guest/vmlinuz"
initrd = "$1"
vcpus = 1
memory_mib = $2
[firmware]
boot = "$TSUBA_OVMF"
measured = "$TSUBA_AMDSEV_OVMF"
TOML
    echo "$work/launch-$2.toml"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

floor_cfg=$(cp "$(config "$work/floor.img" 512)" "$work/floor.toml" && echo "$work/floor.toml")
agent_cfg=$(config "$guest/initrd.img" 512)
: > "$work/floor.txt"; : > "$work/agent.txt"
for i in $(seq "$runs"); do
    # Alternate the two so machine noise hits both alike.
    "$tsuba" demo --config "$floor_cfg" --until-exit | awk '/guest exited after/ {print $4}' >> "$work/floor.txt"
    "$tsuba" demo --config "$agent_cfg" > "$work/demo.out"
    awk '/agent ready after/ {print $4}' "$work/demo.out" >> "$work/agent.txt"
done
accel=$(awk -F'[()]' '/agent ready after/ {print $2}' "$work/demo.out")
floor=$(median < "$work/floor.txt")
ready=$(median < "$work/agent.txt")
rss=$(awk '/Health.Check/ {for (i=1;i<=NF;i++) if ($i=="RSS") print $(i+1)}' "$work/demo.out")
size=$(stat -c %s "$guest/initrd.img")

smallest=none
for mib in 64 96 128 160 192 256; do
    if "$tsuba" demo --config "$(config "$guest/initrd.img" "$mib")" --agent-timeout 120 >/dev/null 2>&1; then
        smallest=$mib
        break
    fi
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), accel $accel, $(qemu-system-x86_64 --version | head -n1)"
echo "runs: $runs (median)"
echo "floor (init powers off): ${floor} s   [$(paste -sd' ' "$work/floor.txt")]"
echo "agent ready:             ${ready} s   [$(paste -sd' ' "$work/agent.txt")]"
echo "ratio ready/floor:       $(awk -v a="$ready" -v b="$floor" 'BEGIN {printf "%.2f", a/b}')"
echo "release initrd:          $size bytes ($(awk -v s="$size" 'BEGIN {printf "%.2f", s/1048576}') MiB, gzip)"
echo "agent RSS after boot:    ${rss} KiB"
echo "smallest memory booting to agent-ready: ${smallest} MiB"
