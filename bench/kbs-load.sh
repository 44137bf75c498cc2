#!/usr/bin/env bash
# Key broker figures for docs/performance.md ("Key broker"): full handshakes (auth, attest with
# sim-SNP evidence, one resource fetch) per second and p50/p99 latency, with 64 concurrent
# clients for 30 s against a broker on 127.0.0.1, broker and clients in one release-mode process
# (so the clients' evidence signing shares the machine's cores with the broker). Fails on any
# error. Usage: bench/kbs-load.sh [clients] [seconds]
# Latency is read at 1 client (with 64 it is mostly queueing: 64 / rate). The machine's load
# average is printed before and after the run: on a shared machine, report it with the figures.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export KBS_LOAD_CLIENTS=${1:-64} KBS_LOAD_SECS=${2:-30}
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo test -p tsuba-kbs --features insecure-sim --release --test load --no-run \
    2>&1 | grep -E '^error' || true
echo "kbs-load: nproc=$(nproc) cpu=\"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)\" load before: $(cut -d' ' -f1-3 /proc/loadavg)"
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo test -p tsuba-kbs --features insecure-sim --release --test load -- \
    --ignored --nocapture --test-threads 1 2>&1 | grep -E '^kbs-load:|^kbs-pieces:|test result|panicked'
echo "kbs-load: load after: $(cut -d' ' -f1-3 /proc/loadavg)"
