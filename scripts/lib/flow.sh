# The sim-mode flow on loopback, shared by scripts/demo and bench/ctr-run.sh (sourced, never run):
# a registry, the key broker over HTTPS (a generated CA; the guest pins the CA's key), a busybox
# image encrypted on the host with its key only in the broker, the launch configs and their
# reference measurement, and a private containerd that runs the image with the tsuba runtime.
# Every process started here is stopped, and the scratch folder removed, on every exit path.
# The caller sets `repo` and `who` (its name, for messages).

: "${TSUBA_OVMF:?run scripts/setup first}"
: "${TSUBA_AMDSEV_OVMF:?scripts/setup did not build the AmdSev firmware}"
: "${TSUBA_BUSYBOX:?run scripts/setup first}"
tsuba=$repo/target/debug/tsuba
for tool in /usr/bin/docker-registry /usr/bin/containerd ctr containerd-shim-tsuba-v2 skopeo umoci jq \
    openssl timeout; do
    command -v "$tool" >/dev/null || { echo "$who: $tool is missing: run scripts/setup" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
flow_cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    # Bounded: whatever has not exited after 10 s is killed.
    for pid in "${pids[@]}"; do
        timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # containerd's shims and their QEMUs outlive containerd by design: every process whose
    # command line names the scratch folder is ours.
    pkill -KILL -f -- "$work/" 2>/dev/null || true
    rm -rf "$work"
}
trap flow_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port: a loopback port nothing listens on (bash only: no python on a minimal machine).
free_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "$who: no free loopback port found" >&2
    return 1
}
# wait_listening NAME PID PORT: until 127.0.0.1:PORT accepts (30 s), or fail if PID exits.
wait_listening() {
    local i
    for ((i = 0; i < 300; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { echo "$who: $1 exited; its log:" >&2; cat "$work/$1.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "$who: $1 did not listen on 127.0.0.1:$3" >&2
    exit 1
}

# The launcher's simulated SNP device and the broker share tee-sim's roots here.
export TSUBA_TEE_SIM_STATE=$work/tee-sim
# The guest reaches the host's loopback at this address (QEMU user networking).
host_from_guest=10.0.2.2
key_id=kbs:///default/image-key/demo
policy_id=kbs:///default/security-policy/demo

# flow_services: the registry and the key broker; sets reg_port, kbs_port, kbs_url, kbs_pin.
flow_services() {
    reg_port=$(free_port)
    cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$reg_port
YML
    /usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 </dev/null &
    pids+=($!)
    wait_listening registry "$!" "$reg_port"
    "$tsuba" kbs admin-keygen --private "$work/admin.pem" --public "$work/admin.pub.pem" >/dev/null
    # The broker's TLS: a CA of our own, and a certificate it issues for the two addresses the
    # broker is reached at (the host's loopback; the host as the guest sees it). The broker sends
    # the CA in its chain; the guest knows it by its key's pin, on the measured command line.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=tsuba demo broker CA" -keyout "$work/kbs-ca.key" -out "$work/kbs-ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=tsuba demo broker" \
        -keyout "$work/kbs.key" -out "$work/kbs.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
        "$host_from_guest" >"$work/kbs.ext"
    openssl x509 -req -in "$work/kbs.csr" -CA "$work/kbs-ca.pem" -CAkey "$work/kbs-ca.key" \
        -CAcreateserial -days 2 -extfile "$work/kbs.ext" -out "$work/kbs.pem" 2>/dev/null
    cat "$work/kbs.pem" "$work/kbs-ca.pem" >"$work/kbs-chain.pem"
    kbs_pin=$("$tsuba" kbs pin --cert "$work/kbs-ca.pem")
    kbs_port=$(free_port)
    # The broker reads only tee-sim's public roots; the launcher keeps the private keys.
    "$tsuba" sim export-roots --state-dir "$TSUBA_TEE_SIM_STATE" --out "$work/sim-roots.pem"
    # tee-sim's platform TCB (SIM_DEFAULT_TCB) on its simulated Genoa is the SNP floor.
    "$tsuba" kbs serve --state-dir "$work/kbs-state" --listen "127.0.0.1:$kbs_port" \
        --admin-public-key "$work/admin.pub.pem" \
        --tls-cert "$work/kbs-chain.pem" --tls-key "$work/kbs.key" \
        --insecure-accept-simulated-evidence --insecure-sim-roots "$work/sim-roots.pem" \
        --insecure-release-resources-to-simulated \
        --snp-min-tcb genoa=bootloader:10,tee:0,snp:23,microcode:84 \
        >"$work/kbs.log" 2>&1 </dev/null &
    pids+=($!)
    wait_listening kbs "$!" "$kbs_port"
    kbs_url=https://127.0.0.1:$kbs_port
}

admin() { "$tsuba" kbs admin --url "$kbs_url" --key "$work/admin.pem" --ca "$work/kbs-ca.pem" "$@"; }

# flow_image: a busybox image whose command prints a greeting and reads its secret file,
# encrypted on the host (key-provider form: the KEK is generated into the broker) and pushed;
# sets image (as the host reaches it), guest_image (as the guest does) and marker (the secret
# file's text).
flow_image() {
    local layout=$work/plain
    marker="the owner's secret configuration: only an attested guest reads this ($RANDOM$RANDOM)"
    umoci init --layout "$layout"
    umoci new --image "$layout:v1"
    umoci unpack --image "$layout:v1" "$work/bundle" >/dev/null
    mkdir -p "$work/bundle/rootfs/bin" "$work/bundle/rootfs/etc" "$work/bundle/rootfs/app"
    cp "$TSUBA_BUSYBOX" "$work/bundle/rootfs/bin/busybox"
    local applet
    for applet in sh cat echo sha256sum cut sleep; do
        ln -s busybox "$work/bundle/rootfs/bin/$applet"
    done
    echo "hello from inside a confidential guest" >"$work/bundle/rootfs/etc/motd"
    echo "$marker" >"$work/bundle/rootfs/app/secret.conf"
    umoci repack --image "$layout:v1" "$work/bundle" >/dev/null
    umoci config --image "$layout:v1" --config.env PATH=/bin \
        --config.cmd sh --config.cmd -c --config.cmd \
        'cat /etc/motd; echo "it read /app/secret.conf: sha256 $(sha256sum /app/secret.conf | cut -c1-16)..."' \
        >/dev/null
    image=127.0.0.1:$reg_port/demo:enc
    "$tsuba" image encrypt --from "oci:$layout:v1" --to "docker://$image" \
        --plain-http "127.0.0.1:$reg_port" --key-provider "$key_id" \
        --kbs-admin-url "$kbs_url" --kbs-admin-key "$work/admin.pem" --kbs-admin-ca "$work/kbs-ca.pem"
    rm -rf "$work/bundle" "$layout"
    # The guest pulls by digest (of what was pushed), the one the agent policy pins.
    guest_image=$host_from_guest:$reg_port/demo@sha256:$(skopeo inspect --raw --tls-verify=false \
        "docker://$image" | sha256sum | cut -d' ' -f1)
    # The guest's signature policy, from the broker.
    echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$work/policy.json"
    admin set-resource "${policy_id#kbs:///}" "$work/policy.json"
}

# The pod's initdata ($work/initdata.toml), from `tsuba policy generate` over the Pod YAML of the
# containers the demo and the benchmark run (all of the one pinned image; ctr gives no CRI names,
# so the policy matches them by image and command): the broker, its key pin, the signature
# policy's resource and the registry, and the agent policy that allows exactly these containers.
# Its digest becomes HOST_DATA; the guest checks it against its own report before using any of it.
flow_initdata() {
    cat >"$work/pod.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: demo
spec:
  enableServiceLinks: false
  containers:
  - name: demo
    image: $guest_image
  - name: one
    image: $guest_image
    command: ["sh", "-c", "echo one"]
  - name: two
    image: $guest_image
    command: ["sh", "-c", "echo two"]
  - name: sleeper
    image: $guest_image
    command: ["sh", "-c", "sleep 600"]
YAML
    "$tsuba" policy generate "$work/pod.yaml" --output-dir "$work/pod" \
        --kbs-url "https://$host_from_guest:$kbs_port" --kbs-pin "$kbs_pin" \
        --image-policy "$policy_id" --plain-http-registry "$host_from_guest:$reg_port" >/dev/null
    cp "$work/pod/initdata.toml" "$work/initdata.toml"
    host_data=$(sed -n 's/^host_data=//p' "$work/pod/reference-values.txt")
}

# The guest's launch: a `tsuba measure` launch config, and the shim's runtime config whose [vm]
# table is the same launch (docs/shim.md), so the measurement is what the shim boots. The
# command line holds nothing per pod; the initdata does.
flow_vm_table() { # flow_vm_table EXTRA_KERNEL_ARGS SUBTABLE_PREFIX
    [ -f "$work/initdata.toml" ] || flow_initdata
    cat <<TOML
mode = "sim-snp"
kernel = "$repo/out/guest/release/vmlinuz"
initrd = "$repo/out/guest/release/initrd.img"
initdata = "${initdata_file:-$work/initdata.toml}"
cmdline = "${1# }"
vcpus = 1
memory_mib = 512
[${2}firmware]
boot = "$TSUBA_OVMF"
measured = "$TSUBA_AMDSEV_OVMF"
[${2}network]
backend = "user"
TOML
}
# flow_launch_config NAME EXTRA_KERNEL_ARGS: $work/NAME.toml and $work/NAME-runtime.toml.
flow_launch_config() {
    flow_vm_table "$2" "" >"$work/$1.toml"
    {
        printf 'state_root = "%s"\ntee_sim_state = "%s"\n' "$work/sandboxes" "$TSUBA_TEE_SIM_STATE"
        printf '[timeouts]\nagent_ready_secs = 150\ncreate_secs = 200\n[vm]\n'
        flow_vm_table "$2" "vm."
    } >"$work/$1-runtime.toml"
}
# flow_measure NAME: the SNP launch digest `tsuba measure` predicts for $work/NAME.toml.
flow_measure() { "$tsuba" measure --config "$work/$1.toml" | jq -er .snp.launch_digest; }
# flow_trust NAME: the broker's one reference value is NAME's measurement.
# flow_trust NAME also registers the pod's initdata (its HOST_DATA): a launch under any other
# initdata, with the same measurement, is refused.
flow_trust() {
    jq -n --arg m "$(flow_measure "$1")" --arg h "${host_data:?flow_initdata sets it}" \
        '{measurement: [$m], init_data: [$h]}' >"$work/refs.json"
    admin set-reference-values "$work/refs.json"
}

# flow_containerd: containerd with its root, state, socket and log ($work/containerd.log) in the
# scratch folder; it finds containerd-shim-tsuba-v2 on its PATH (scripts/setup installed it).
flow_containerd() {
    mkdir -p "$work/containerd" "$work/empty"
    cat >"$work/containerd/config.toml" <<TOML
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/containerd/containerd.sock"
[ttrpc]
  address = "$work/containerd/containerd.sock.ttrpc"
[debug]
  level = "info"
TOML
    /usr/bin/containerd --config "$work/containerd/config.toml" >"$work/containerd.log" 2>&1 </dev/null &
    pids+=($!)
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -S $work/containerd/containerd.sock ]] && return 0
        kill -0 "${pids[-1]}" 2>/dev/null || { echo "$who: containerd exited; its log:" >&2; cat "$work/containerd.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "$who: containerd did not create its socket" >&2
    exit 1
}
ctr() { timeout 300 /usr/bin/ctr --address "$work/containerd/containerd.sock" "$@"; }
# run_in_guest NAME ID [ctr flags...] [-- command...]: `ctr run` of the image with NAME's runtime
# config. --rootfs of an empty folder: containerd fetches and unpacks nothing; the guest pulls
# the image named by io.tsuba.image (without a command, the image's own runs).
run_in_guest() {
    local name=$1 id=$2
    shift 2
    local flags=() cmd=()
    while (($#)); do
        if [[ $1 == -- ]]; then
            shift
            cmd=("$@")
            break
        fi
        flags+=("$1")
        shift
    done
    ctr run --rootfs --runtime io.containerd.tsuba.v2 --runtime-config-path "$work/$name-runtime.toml" \
        --annotation "io.tsuba.image=$guest_image" "${flags[@]}" "$work/empty" "$id" "${cmd[@]}"
}
# flow_phase FIELD [ID]: the first FIELD=<ms> the shim logged (for container ID when given).
flow_phase() {
    if [[ -n ${2:-} ]]; then
        grep -F "id=$2 " "$work/containerd.log" | grep -oE "$1=[0-9]+" | head -n 1 | cut -d= -f2
    else
        grep -oE "$1=[0-9]+" "$work/containerd.log" | head -n 1 | cut -d= -f2
    fi
}
