#!/usr/bin/env bash
# Builds the fuzz targets with cargo-afl and runs each under AFL++ for a bounded time, then prints
# one Markdown row per target from AFL's fuzzer_stats (docs/fuzzing.md, docs/performance.md).
#
#   fuzz/run.sh SECONDS [TARGET...]      (all targets when none is named)
#
# Exits non-zero when a target crashed or hung: its inputs are in fuzz/out/<target>/default/
# crashes/ (or hangs/); reproduce one with `$CARGO_TARGET_DIR/release/tsuba-fuzz <target> < FILE`.
# Needs cargo-afl (scripts/setup installs it). Environment: FUZZ_TIMEOUT_MS (per input, default
# 5000), CARGO_BUILD_JOBS, CARGO_TARGET_DIR (default fuzz/target; make fuzz-ci keeps it in the cache).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$here"

log() { printf 'fuzz: %s\n' "$*" >&2; }

command -v cargo-afl >/dev/null || { log "cargo-afl is missing: run scripts/setup"; exit 1; }

start=$(date +%s)
log "building the instrumented targets (cargo afl build --release)"
cargo afl build --release --locked --features afl --bin tsuba-fuzz 2>&1 | tail -n 3 >&2
binary="${CARGO_TARGET_DIR:-$here/target}/release/tsuba-fuzz"
built=$(date +%s)
log "built in $((built - start)) s"

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(find corpus -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort)
fi

# afl-fuzz wants crashes to reach it as signals (no core_pattern pipe) and a fixed CPU governor;
# neither matters for bounded runs on shared CI machines.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 \
    AFL_NO_AFFINITY=1

stat() { awk -F' *: *' -v k="$1" '$1 == k {print $2}' "$2"; }

failed=()
printf '| target | execs/s | execs | edges found / map | bitmap coverage | corpus | crashes | hangs |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|\n'
for t in "${targets[@]}"; do
    out="$here/out/$t"
    rm -rf "$out"
    mkdir -p "$out"
    # -c -: no CmpLog (it needs a second binary built with cargo-afl's LLVM plugins).
    if ! cargo afl fuzz -c - -V "$seconds" -t "${FUZZ_TIMEOUT_MS:-5000}+" -i "corpus/$t" -o "$out" \
        -- "$binary" "$t" >"$out/afl.log" 2>&1; then
        log "afl-fuzz failed on $t: see $out/afl.log"
        sed "s/\x1b\[[0-9;]*m//g" "$out/afl.log" | grep -E "PROGRAM ABORT|Location|ERROR" >&2 || true
        failed+=("$t")
        continue
    fi
    stats="$out/default/fuzzer_stats"
    total_edges=$(stat total_edges "$stats")
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    printf '| %s | %s | %s | %s / %s | %s | %s | %s | %s |\n' "$t" \
        "$(stat execs_per_sec "$stats")" "$(stat execs_done "$stats")" \
        "$(stat edges_found "$stats")" "$total_edges" "$(stat bitmap_cvg "$stats")" \
        "$(stat corpus_count "$stats")" "$crashes" "$hangs"
    if [ "$crashes" != 0 ] || [ "$hangs" != 0 ]; then
        failed+=("$t")
    fi
done
log "done in $(( $(date +%s) - start )) s (build $((built - start)) s)"
if [ ${#failed[@]} -gt 0 ]; then
    log "crashes, hangs or failures in: ${failed[*]} (inputs under fuzz/out/<target>/default/)"
    exit 1
fi
