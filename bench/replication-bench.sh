#!/usr/bin/env bash
# The cost of replication in keeld, side by side on one machine: keel-bench
# nvmf against one plain keeld on a file, then against the primary of 2
# copies (W = 2) and of 3 copies (W = 2, then W = 3), file backends,
# loopback links. 4 KiB random
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
# Shards poll this long after their last work before sleeping; several
# keelds on fewer cores than processes must not spin (KEEL_SPIN overrides).
spin=${KEEL_SPIN:-0us}
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
        --no-pin --spin "$spin" "$@" >"$out" 2>>"$dir/keeld.log" &
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

run_series() { # PORT RW QD: prints "IOPS P50" (medians)
    local port=$1 rw=$2 qd=$3 iops=() p50=()
    for _ in $(seq "$runs"); do
        local json
        json=$(timeout 120 "$bin/keel-bench" nvmf --addr "127.0.0.1:$port" --nqn "$nqn" \
            --rw "$rw" --bs 4k --qd "$qd" --time "$time" --json 2>/dev/null)
        iops+=("$(field iops <<<"$json")")
        p50+=("$(grep -o '"p50":[0-9.]*' <<<"$json" | head -n1 | cut -d: -f2)")
    done
    echo "$(printf '%s\n' "${iops[@]}" | median) $(printf '%s\n' "${p50[@]}" | median)"
}

printf "%-36s %10s %9s %7s %9s   (medians of %s x %s)\n" "run" "IOPS" "p50 us" "x plain" "+p50 us" "$runs" "$time"
declare -A plain_iops plain_p50
series() { # LABEL PORT (every workload; the first call is the plain target)
    local label=$1 port=$2 line iops p50
    local rw qd
    for w in "randwrite 32" "randwrite 1" "randread 32"; do
        read -r rw qd <<<"$w"
        line=$(run_series "$port" "$rw" "$qd")
        iops=${line% *}
        p50=${line#* }
        if [ "$label" = plain ]; then
            plain_iops[$rw$qd]=$iops
            plain_p50[$rw$qd]=$p50
        fi
        printf "%-36s %10.0f %9.1f %7.2f %+9.1f\n" "$label $rw qd$qd" "$iops" "$p50" \
            "$(awk -v a="$iops" -v b="${plain_iops[$rw$qd]}" 'BEGIN { print a / b }')" \
            "$(awk -v a="$p50" -v b="${plain_p50[$rw$qd]}" 'BEGIN { print a - b }')"
    done
}

start_keeld 4520 "$dir/plain.img"
series plain 4520
stop_all

cluster() { # COPIES QUORUM: a primary (node 1) and COPIES-1 replicas
    local copies=$1 quorum=$2 members=() node
    for node in $(seq "$copies"); do members+=(--member "$node@127.0.0.1:462$node"); done
    for node in $(seq "$copies"); do
        rm -f "$dir/node$node.img" "$dir/node$node.img.keelrec"
        start_keeld "452$node" "$dir/node$node.img" --node-id "$node" "${members[@]}" --primary 1 \
            --replica-listen "127.0.0.1:462$node" --write-quorum "$quorum" --psk-file "$dir/psk" \
            --metrics "127.0.0.1:472$node" --bootstrap
    done
    for _ in $(seq 600); do [ "$(gauge 4721 keel_replication_in_sync)" = 1 ] && break; sleep 0.1; done
}

round_trips() { # the primary's latest heartbeat round trip to each replica, in us
    local text
    text=$(
        exec 3<>/dev/tcp/127.0.0.1/4721
        printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
        grep '^keel_replica_round_trip_seconds{' <&3
    ) 2>/dev/null || true
    awk '{ printf "%s%.0f", (NR > 1 ? " / " : ""), $2 * 1e6 }' <<<"$text"
}

for config in "2 2" "3 2" "3 3"; do
    read -r copies quorum <<<"$config"
    cluster "$copies" "$quorum"
    # Each end sends a heartbeat every 1.25 s (a quarter of the default
    # link timeout); its round trip is one replication round trip here,
    # the yardstick of the QD 1 "+p50" column (3 s: the latest beat went
    # out on an idle link, not behind the initial copy).
    sleep 3
    printf "%-36s %s us\n" "$copies copies: round trip (heartbeat)" "$(round_trips)"
    series "$copies copies W=$quorum" 4521
    stop_all
done
