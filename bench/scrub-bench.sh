#!/usr/bin/env bash
# What a scrub costs, on one machine: 3 copies (W = 2) of a 256 MiB volume,
# file backends, loopback links. Per run: keel-bench nvmf 4 KiB random
# writes at QD 32 alone, the time of an idle scrub pass (every region of
# both replicas compared), and the same writes during a second pass. With
# RATE, the primary runs with --resync-rate-mib RATE (the pass is paced).
# Every process shares the machine's cores (nothing is pinned).
#
# Usage: bench/scrub-bench.sh [RUNS (3)] [RATE (unpaced)] [DIR (build/scrub-bench)]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
rate=${2:-}
dir=${3:-build/scrub-bench}
nqn=nqn.2026-11.io.keel:bench
spin=${KEEL_SPIN:-0us}
cargo build --release -q -p keel-target --bin keeld -p keel-bench --bin keel-bench -p keelctl
bin=build/release

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

# One metric of node 1 (no labels).
gauge() {
    (
        exec 3<>/dev/tcp/127.0.0.1/4741
        printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
        grep "^$1 " <&3 | awk '{ print $2 }'
    ) 2>/dev/null || true
}
wait_gauge() {
    for _ in $(seq 30000); do
        [ "$(gauge "$1")" = "$2" ] && return 0
        sleep 0.01
    done
    echo "$1 never reached $2" >&2
    return 1
}
writes() {
    "$bin/keel-bench" nvmf --addr 127.0.0.1:4541 --nqn "$nqn" --rw randwrite --bs 4k --qd 32 \
        --time 5s --json 2>/dev/null | grep -o '"iops":[0-9.]*' | head -n1 | cut -d: -f2
}

for run in $(seq "$runs"); do
    rm -rf "$dir"
    mkdir -p "$dir"
    printf 'keel replication benchmark key 0123456789\n' >"$dir/psk"
    members=()
    for n in 1 2 3; do members+=(--member "$n@127.0.0.1:464$n"); done
    for n in 1 2 3; do
        extra=()
        if [ "$n" = 1 ]; then
            extra+=(--rpc-socket "$dir/rpc.sock")
            if [ -n "$rate" ]; then extra+=(--resync-rate-mib "$rate"); fi
        fi
        "$bin/keeld" --listen "127.0.0.1:454$n" --nqn "$nqn" --backend "$dir/node$n.img" --size 256M \
            --no-pin --spin "$spin" --node-id "$n" "${members[@]}" --primary 1 \
            --replica-listen "127.0.0.1:464$n" --write-quorum 2 --psk-file "$dir/psk" \
            --metrics "127.0.0.1:474$n" --bootstrap "${extra[@]}" >/dev/null 2>>"$dir/keeld.log" &
        pids+=($!)
    done
    wait_gauge keel_replication_in_sync 1
    alone=$(writes)
    start=$(date +%s.%N)
    "$bin/keelctl" --socket "$dir/rpc.sock" volume scrub >/dev/null
    wait_gauge keel_replication_scrub_passes_total 1
    end=$(date +%s.%N)
    checks=$(gauge keel_replication_scrub_checks_total)
    "$bin/keelctl" --socket "$dir/rpc.sock" volume scrub >/dev/null
    during=$(writes)
    still=$(gauge keel_replication_scrubbing)
    awk -v r="$run" -v a="$alone" -v d="$during" -v s="$start" -v e="$end" -v c="$checks" -v still="$still" \
        'BEGIN { printf "run %d: writes alone %.0f IOPS; idle pass %.2f s (%d region checks, %.0f MiB/s); writes during a pass %.0f IOPS (%s)\n",
                 r, a, e - s, c, c / (e - s), d, still == 1 ? "the pass outlasted them" : "the pass ended first" }'
    stop_all
done
