#!/usr/bin/env bash
# keeld over NVMe/TCP on loopback, as docs/benchmarks.md reports it: the
# target on CPU 0 (one shard), keel-bench nvmf busy-polling on CPU 1, 4 KiB,
# memory and file backends, QD 32 and QD 1, RUNS runs of TIME each (median),
# and keel-bench local on the same file for reference.
#
# Usage: bench/target-bench.sh [RUNS (5)] [TIME (10s)] [FILE (build/bench-1g.dat)]
# The run with the median IOPS of each series is kept as JSON in
# build/bench-results/, and charted (keel-bench plot) into
# build/bench-results/keeld-loopback.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
time=${2:-10s}
file=${3:-build/bench-1g.dat}
nqn=nqn.2026-11.io.keel:bench
addr=127.0.0.1:4420
cargo build --release -q -p keel-target --bin keeld -p keel-bench --bin keel-bench
bin=build/release
results=build/bench-results
mkdir -p "$results"

field() { grep -o "\"$1\":[0-9.]*" | head -n1 | cut -d: -f2; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

keeld_pid=
stop_keeld() {
    [ -n "$keeld_pid" ] || return 0
    kill -TERM "$keeld_pid" 2>/dev/null || true
    wait "$keeld_pid" 2>/dev/null || true
    keeld_pid=
}
trap stop_keeld EXIT

start_keeld() { # BACKEND [SIZE]
    local out
    out=$(mktemp)
    taskset -c 0 "$bin/keeld" --listen "$addr" --nqn "$nqn" --backend "$1" ${2:+--size "$2"} \
        >"$out" 2>/dev/null &
    keeld_pid=$!
    for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
    rm -f "$out"
}

# run_series LABEL CMD...: RUNS runs; prints a row of medians and keeps the
# median-IOPS run's JSON as $results/<label with dashes>.json.
run_series() {
    local label=$1; shift
    local slug=${label// /-}
    local iops=() p50=() p99=()
    for n in $(seq "$runs"); do
        local json
        json=$("$@" --json 2>/dev/null)
        printf '%s\n' "$json" >"$results/$slug.run$n"
        iops+=("$(field iops <<<"$json")")
        p50+=("$(grep -o '"p50":[0-9.]*' <<<"$json" | head -n1 | cut -d: -f2)")
        p99+=("$(grep -o '"p99":[0-9.]*' <<<"$json" | head -n1 | cut -d: -f2)")
    done
    local mid
    mid=$(printf '%s\n' "${iops[@]}" | median)
    # An even count's median is a mean of two runs: keep the first run then.
    cp "$results/$slug.run1" "$results/$slug.json"
    for n in $(seq "$runs"); do
        if [ "$(field iops <"$results/$slug.run$n")" = "$mid" ]; then
            cp "$results/$slug.run$n" "$results/$slug.json"
        fi
        rm -f "$results/$slug.run$n"
    done
    printf "%-40s %10.0f %9.1f %9.1f\n" "$label" \
        "$mid" \
        "$(printf '%s\n' "${p50[@]}" | median)" \
        "$(printf '%s\n' "${p99[@]}" | median)"
}

printf "%-40s %10s %9s %9s   (medians of %s x %s)\n" "run" "IOPS" "p50 us" "p99 us" "$runs" "$time"
[ -f "$file" ] || "$bin/keel-bench" local --file "$file" --size 1G --rw randwrite --time 1s >/dev/null
for backend in memory "$file"; do
    if [ "$backend" = memory ]; then start_keeld memory 1G; else start_keeld "$backend"; fi
    for rw in randread randwrite; do
        for qd in 32 1; do
            run_series "keeld $rw qd$qd ${backend##*/}" taskset -c 1 "$bin/keel-bench" nvmf \
                --addr "$addr" --nqn "$nqn" --rw "$rw" --bs 4k --qd "$qd" --time "$time" --poll
        done
    done
    stop_keeld
done
for rw in randread randwrite; do
    for qd in 32 1; do
        run_series "local $rw qd$qd ${file##*/}" "$bin/keel-bench" local --file "$file" \
            --rw "$rw" --bs 4k --qd "$qd" --time "$time"
    done
done
"$bin/keel-bench" plot --title "keeld over NVMe/TCP on loopback vs local, 4 KiB, one core" \
    --out "$results/keeld-loopback.svg" "$results"/keeld-*.json "$results"/local-*.json
echo "chart: $results/keeld-loopback.svg"
