#!/usr/bin/env bash
# Layer decrypt-and-verify figure for docs/performance.md ("Images"): the criterion bench
# (image-rs/benches/layer_decrypt.rs: HMAC-SHA256 pass, then AES-256-CTR pass, 64 MiB in memory)
# and the physical limit measured by OpenSSL (image-rs/benches/openssl_peer.sh), alternately and
# pinned to the same core, so both see the same share of a shared machine. Prints, per round, the
# load average, both figures and their ratio. Usage: bench/layer-decrypt.sh [rounds] (default 3);
# CORE=n picks the core (default 1).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
rounds=${1:-3}
core=${CORE:-1}
bin=$(CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo bench -p tsuba-image-rs --bench layer_decrypt \
    --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -n 1)
[ -x "$bin" ] || { echo "layer-decrypt: bench binary not found" >&2; exit 1; }
# Criterion's "thrpt: [low MiB/s median MiB/s high MiB/s]" line: the median, in MiB/s.
median() { awk -v name="$1" '
    index($0, name) { hit = 1 }
    hit && /thrpt:/ { v = $4; u = $5; if (u ~ /GiB/) v *= 1024; printf "%.0f\n", v; exit }'; }
for round in $(seq 1 "$rounds"); do
    load=$(cut -d' ' -f1-3 /proc/loadavg)
    out=$(taskset -c "$core" "$bin" --bench --noplot 2>&1)
    both=$(printf '%s\n' "$out" | median decrypt_and_verify_64MiB)
    verify=$(printf '%s\n' "$out" | median verify_only_64MiB)
    peer=$(CORE="$core" sh image-rs/benches/openssl_peer.sh)
    limit=$(printf '%s\n' "$peer" | awk '/combined/ {print $4}')
    aes=$(printf '%s\n' "$peer" | awk '/aes-256-ctr/ {print $3}')
    hmac=$(printf '%s\n' "$peer" | awk '/hmac-sha256/ {print $3}')
    awk -v r="$round" -v l="$load" -v b="$both" -v v="$verify" -v lim="$limit" -v a="$aes" -v h="$hmac" \
        -v c="$core" 'BEGIN {
        printf "layer-decrypt: round=%s core=%s load=[%s] decrypt_and_verify=%s MiB/s verify_only=%s MiB/s openssl aes=%s hmac=%s limit=%s MiB/s ratio=%.0f%%\n",
            r, c, l, b, v, a, h, lim, 100 * b / lim }'
done
