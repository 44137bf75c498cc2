#!/usr/bin/env bash
# Key broker on PostgreSQL, figure for docs/performance.md ("Key broker: folder or PostgreSQL"):
# the latency of one guest's auth + attest + resource (Trustee's sample evidence, so the figure is
# the broker's state handling rather than evidence verification), one client, sequential, through
# one `tsuba kbs serve` replica on the folder backend and one on PostgreSQL (a server the run
# starts in a temporary folder, fsync off, on 127.0.0.1), same release binary, same machine.
# Needs Debian's postgresql (scripts/setup). Fails on any failed handshake.
# Usage: bench/kbs-backends.sh [rounds]   (default 300)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export KBS_BENCH_ROUNDS=${1:-300}
jobs=${CARGO_BUILD_JOBS:-2}
CARGO_BUILD_JOBS=$jobs cargo test --locked -p tsuba-cli --release --test kbs_replicas --no-run \
    2>&1 | grep -E '^error' || true
echo "kbs-backends: nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\" postgres=$(ls /usr/lib/postgresql | sort -n | tail -n 1) load before: $(cut -d' ' -f1-3 /proc/loadavg)"
CARGO_BUILD_JOBS=$jobs cargo test --locked -p tsuba-cli --release --test kbs_replicas -- \
    --ignored --nocapture --test-threads 1 bench_attest_and_resource_latency 2>&1 | grep -oE 'kbs-backends:.*|test result.*|panicked.*'
echo "kbs-backends: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
