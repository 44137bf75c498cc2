#!/usr/bin/env bash
# Container figures for docs/performance.md, measured side by side in one run:
#   - `ctr run --runtime io.containerd.tsuba.v2` of the encrypted busybox image (scripts/lib/flow.sh)
#     until the container's first output line, with the shim's and the guest's split (VM boot to
#     the agent's hello; attestation; the pull with its keys, decryption and unpacking; the
#     container's set-up; its start), next to the boot floor of bench/boot.sh (the same QEMU,
#     accelerator, firmware and kernel booting an init that only powers off);
#   - in a running pod, a container that pulls the image and a second one that does not: time to
#     their first output line;
#   - the shim's RSS and QEMU's RSS while the pod runs a container; the release initrd's size.
# Usage (after scripts/setup and the image build: make guest): bench/ctr-run.sh [runs]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
who=bench
runs=${1:-3}
. "$repo/scripts/lib/flow.sh"

flow_services >/dev/null
flow_image >/dev/null
flow_launch_config launch ""
flow_trust launch
flow_containerd

# The floor of bench/boot.sh, with this launch's firmware and kernel.
. "$repo/bench/floor.sh"
sed -e "s|^initrd = .*|initrd = \"$(floor_initrd "$work")\"|" -e '/^cmdline = /d' -e '/^\[network\]/,$d' \
    "$work/launch.toml" >"$work/floor.toml"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
# first_line_ms EXPECTED NAME ID [flags] [-- cmd]: ms from `ctr run` to the container's first
# output line, which must be EXPECTED; waits for the run to end.
first_line_ms() {
    local expected=$1 started line ended
    shift
    started=$(now_ms)
    {
        IFS= read -r line || true
        ended=$(now_ms)
        cat >/dev/null
    } < <(run_in_guest "$@" 2>&1)
    if [[ $line != "$expected" ]]; then
        echo "$who: ctr run $2 printed ${line@Q} first, not ${expected@Q}; the end of containerd's log:" >&2
        tail -n 30 "$work/containerd.log" >&2
        exit 1
    fi
    echo $((ended - started))
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

fields=(first floor boot create attest pull setup start policy)
for f in "${fields[@]}"; do : >"$work/$f.txt"; done
greeting="hello from inside a confidential guest"
for i in $(seq "$runs"); do
    # Alternate the two so machine noise hits both alike.
    "$tsuba" demo --config "$work/floor.toml" --until-exit |
        awk '/guest exited after/ {printf "%d\n", $4 * 1000}' >>"$work/floor.txt"
    first_line_ms "$greeting" launch "run$i" --rm >>"$work/first.txt"
    for f in boot create attest pull setup start; do
        flow_phase "${f}_ms" "run$i" >>"$work/$f.txt"
    done
    flow_phase policy_us "run$i" >>"$work/policy.txt"
done

# A pod: the CRI sandbox boots the VM; its first container pulls, the second does not.
ctr_pod=(--annotation io.kubernetes.cri.container-type=container --annotation io.kubernetes.cri.sandbox-id=pod)
run_in_guest launch pod -d --annotation io.kubernetes.cri.container-type=sandbox \
    --annotation io.kubernetes.cri.sandbox-id=pod >/dev/null
first_pulls=$(first_line_ms one launch c1 --rm "${ctr_pod[@]}" -- sh -c 'echo one')
second=$(first_line_ms two launch c2 --rm "${ctr_pod[@]}" -- sh -c 'echo two')
run_in_guest launch c3 -d "${ctr_pod[@]}" -- sh -c 'sleep 600' >/dev/null
shim_pid=$(pgrep -f -- "containerd-shim-tsuba-v2 .*-id pod( |$)" | head -n 1)
qemu_pid=$(pgrep -f -- "qemu-system.*$work/sandboxes/pod/" | head -n 1)
shim_rss=$(rss_kib "$shim_pid")
qemu_rss=$(rss_kib "$qemu_pid")
guest_mib=$(awk -F' = ' '/^memory_mib/ {print $2}' "$work/launch.toml")

size=$(stat -c %s "$repo/out/guest/release/initrd.img")
layer=$(skopeo inspect --raw --tls-verify=false "docker://$image" | jq '[.layers[].size] | add')
accel=$(grep -oE 'accel="?[a-z]+' "$work/containerd.log" | head -n 1 | tr -d '"' || true)
row() { printf '%-52s %6s ms   [%s]\n' "$1" "$(median <"$work/$2.txt")" "$(paste -sd' ' "$work/$2.txt")"; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(qemu-system-x86_64 --version | head -n1)${accel:+, $accel}"
echo "image: busybox, one encrypted layer of $layer bytes; runs: $runs (median)"
row "floor (init powers off)" floor
row "ctr run to the first output line" first
row "  VM boot until the agent's hello" boot
row "  container create in the guest" create
row "    attestation, policy from the broker" attest
row "    pull: manifest, layers, keys, decrypt, unpack" pull
row "    layer, cgroup, namespaces, init process" setup
row "  container start" start
printf '%-52s %6s µs   [%s]\n' "  the agent policy's decision on CreateContainer" "$(median <"$work/policy.txt")" "$(paste -sd' ' "$work/policy.txt")"
echo "first output / floor:                                $(awk -v a="$(median <"$work/first.txt")" -v b="$(median <"$work/floor.txt")" 'BEGIN {printf "%.2f", a/b}')"
echo "in a running pod, first container (pulls):          $first_pulls ms"
echo "in a running pod, second container (no pull):       $second ms"
echo "shim RSS, pod running a container:                  $shim_rss KiB"
echo "agent RSS, policy compiled (after initdata):        $(grep -oE 'agent_rss_kib=[0-9]+' "$work/containerd.log" | tail -n 1 | cut -d= -f2) KiB"
echo "QEMU RSS, pod running a container:                  $qemu_rss KiB (guest RAM $guest_mib MiB)"
echo "release initrd:                                      $size bytes"
