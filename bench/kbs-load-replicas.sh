#!/usr/bin/env bash
# Key broker replicas under load, figures for docs/performance.md ("Key broker: folder or
# PostgreSQL"): KBS_LOAD_CLIENTS clients (default 64) for KBS_LOAD_SECS seconds (default 30) of
# auth + attest + resource (each step on another replica) against one `tsuba kbs serve` on the
# folder backend, one on PostgreSQL, and three on PostgreSQL with one SIGKILLed halfway, one after
# the other in one run, same release binary, same machine; once per evidence kind in
# KBS_LOAD_EVIDENCE (default "sim-snp sample"): sim-SNP (tee-sim signs a report per handshake,
# the broker verifies its chain and signature, as for a real guest) and Trustee's unsigned
# sample evidence (the broker's state handling and HTTP alone). The load generator shares the
# 2 cores. Needs Debian's postgresql (scripts/setup). Fails on any failed handshake.
# Another broker (Trustee's KBS, a fleet behind a load balancer) is measured instead when
# KBS_LOAD_URL is set: its operator provisions KBS_LOAD_RESOURCE (default default/key/1) and lets
# sample evidence attest (KBS_LOAD_EVIDENCE does not apply); KBS_LOAD_EXPECT_FILE, if given,
# holds the plaintext every fetch must decrypt to. KBS_LOAD_PEER_URL measures such a broker as
# well, after tsuba's setups, in the same run (side by side; same KBS_LOAD_RESOURCE and
# KBS_LOAD_EXPECT_FILE); docs/performance.md says how Trustee's KBS was built and provisioned.
# Usage: bench/kbs-load-replicas.sh [clients] [seconds]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export KBS_LOAD_CLIENTS=${1:-64} KBS_LOAD_SECS=${2:-30}
jobs=${CARGO_BUILD_JOBS:-2}
CARGO_BUILD_JOBS=$jobs cargo test --locked -p tsuba-cli --release --test kbs_replicas --no-run \
    2>&1 | grep -E '^error' || true
echo "kbs-load-replicas: nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\" postgres=$(ls /usr/lib/postgresql | sort -n | tail -n 1) commit=$(git rev-parse --short HEAD) load before: $(cut -d' ' -f1-3 /proc/loadavg)"
kinds=${KBS_LOAD_EVIDENCE:-sim-snp sample}
if [ -n "${KBS_LOAD_URL:-}" ]; then kinds=sample; fi
for kind in $kinds; do
    KBS_LOAD_EVIDENCE=$kind CARGO_BUILD_JOBS=$jobs cargo test --locked -p tsuba-cli --release \
        --test kbs_replicas -- --ignored --nocapture --test-threads 1 bench_handshakes 2>&1 |
        grep -oE 'kbs-load:.*|test result.*|panicked.*'
done
if [ -n "${KBS_LOAD_PEER_URL:-}" ] && [ -z "${KBS_LOAD_URL:-}" ]; then
    KBS_LOAD_URL=$KBS_LOAD_PEER_URL CARGO_BUILD_JOBS=$jobs cargo test --locked -p tsuba-cli \
        --release --test kbs_replicas -- --ignored --nocapture --test-threads 1 bench_handshakes \
        2>&1 | grep -oE 'kbs-load:.*|test result.*|panicked.*'
fi
echo "kbs-load-replicas: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
