#!/usr/bin/env bash
# The cost of replication in keeld, side by side on one machine: keel-bench
# nvmf against one plain keeld on a file, then against the primary of three
# keeld (W = 2 of 3 sync, file backends, loopback links). 4 KiB random
# writes at QD 32 and QD 1, and 4 KiB random reads at QD 32; RUNS runs of
# TIME each, medians. Every process shares the machine's cores (nothing is
# pinned), so on a small machine the replicated figures include the
# replicas' CPU.
#
# Usage: bench/replication-bench.sh [RUNS (3)] [TIME (5s)] [DIR (build/repl-bench)]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
time=${2:-5s}
dir=${3:-build/repl-bench}
nqn=nqn.2026-11.io.keel:bench
size=256M
cargo build --release -q -p keel-target --bin keeld -p keel-bench --bin keel-bench
bin=build/release
rm -rf "$dir"
mkdir -p "$dir"
printf 'keel replication benchmark key 0123456789\n' >"$dir/psk"

field() { grep -o "\"$1\":[0-9.]*" | head -n1 | cut -d: -f2; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap stop_all EXIT

start_keeld() { # PORT BACKEND [ARGS...]
    local port=$1 backend=$2 out
    shift 2
    out=$(mktemp)
    "$bin/keeld" --listen "127.0.0.1:$port" --nqn "$nqn" --backend "$backend" --size "$size" \
        --no-pin "$@" >"$out" 2>>"$dir/keeld.log" &
    pids+=($!)
    for _ in $(seq 100); do grep -q listening "$out" && break; sleep 0.1; done
    rm -f "$out"
}

gauge() { # METRICS_PORT NAME (empty while the endpoint is not up)
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1"
        printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
        grep "^$2 " <&3 | awk '{ print $2 }'
    ) 2>/dev/null || true
}

run_series() { # LABEL PORT RW QD
    local label=$1 port=$2 rw=$3 qd=$4 iops=() p50=()
    for _ in $(seq "$runs"); do
        local json
        json=$("$bin/keel-bench" nvmf --addr "127.0.0.1:$port" --nqn "$nqn" \
            --rw "$rw" --bs 4k --qd "$qd" --time "$time" --json 2>/dev/null)
        iops+=("$(field iops <<<"$json")")
        p50+=("$(grep -o '"p50":[0-9.]*' <<<"$json" | head -n1 | cut -d: -f2)")
    done
    printf "%-36s %10.0f %9.1f\n" "$label" \
        "$(printf '%s\n' "${iops[@]}" | median)" "$(printf '%s\n' "${p50[@]}" | median)"
}

printf "%-36s %10s %9s   (medians of %s x %s)\n" "run" "IOPS" "p50 us" "$runs" "$time"
start_keeld 4520 "$dir/plain.img"
for w in "randwrite 32" "randwrite 1" "randread 32"; do
    set -- $w
    run_series "plain $1 qd$2" 4520 "$1" "$2"
done
stop_all

members=(--member 1@127.0.0.1:4621 --member 2@127.0.0.1:4622 --member 3@127.0.0.1:4623)
for node in 1 2 3; do
    start_keeld "452$node" "$dir/node$node.img" --node-id "$node" "${members[@]}" --primary 1 \
        --replica-listen "127.0.0.1:462$node" --write-quorum 2 --psk-file "$dir/psk" \
        --metrics "127.0.0.1:472$node"
done
for _ in $(seq 600); do [ "$(gauge 4721 keel_replication_in_sync)" = 1 ] && break; sleep 0.1; done
for w in "randwrite 32" "randwrite 1" "randread 32"; do
    set -- $w
    run_series "replicated W=2/3 $1 qd$2" 4521 "$1" "$2"
done
