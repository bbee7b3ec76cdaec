#!/bin/sh
# Guest payload (../shared/guest/run.sh): replication over RDMA vs TCP in the
# same guest. ROUNDS times, alternating, a fresh 3-copy volume (W=2) whose
# links are all TCP or all RDMA (soft-RoCE rxe0 on a guest-only dummy link,
# 192.0.2.1); once in sync, the kernel's nvme-tcp host runs fio 4 KiB
# random writes at QD 1 and QD 16 through the primary. Prints one line per
# run and the medians per transport. Under TCG these are only ratios
# between the two transports, never absolute figures.
# Run from the repo: target/tests/guest/run.sh keeld-rdma-bench.sh
# Env: ROUNDS (3), RUNTIME (s, 8), SIZE_MB (16), KEELD (/extra/keeld)
set -eu
IP=192.0.2.1
NQN=nqn.2014-08.io.keel:repl-bench
ROUNDS=${ROUNDS:-3}
RUNTIME=${RUNTIME:-8}
SIZE_MB=${SIZE_MB:-16}
KEELD=${KEELD:-/extra/keeld}
DIR=/srv/keel
OUT=/out
PIDS=

fail() { echo "FAIL: $*" >&2; exit 1; }
on_exit() {
    rc=$?
    nvme disconnect -n $NQN >/dev/null 2>&1 || true
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    [ "$rc" -eq 0 ] || echo "REPL-BENCH: FAIL"
}
trap on_exit EXIT

gauge() { wget -q -O - "http://127.0.0.1:909$1/metrics" 2>/dev/null | awk -v g="$2" '$1 == g { print $2 }'; }
wait_in_sync() {
    i=0
    until [ "$(gauge 1 keel_replication_in_sync)" = 1 ]; do
        i=$((i + 1)); [ $i -le 1200 ] || fail "not in sync after 240 s"; sleep 0.2
    done
}

# fio_iops QD: write IOPS and mean completion latency (us) of one run.
fio_iops() {
    fio --name=w --filename=/dev/nvme0n1 --ioengine=libaio --direct=1 --rw=randwrite \
        --bs=4k --iodepth="$1" --size="$((SIZE_MB / 2))M" --runtime="$RUNTIME" --time_based \
        --eta=never >"$OUT/fio.txt" || fail "fio failed"
    # "write: IOPS=1234," (or 1.2k) and the write's "clat (usec): ... avg=..."
    awk '
        /write: IOPS=/ { v = $2; sub(/IOPS=/, "", v); sub(/,$/, "", v)
                         m = 1; if (v ~ /k$/) { m = 1000; sub(/k$/, "", v) }; iops = v * m }
        /^ *clat \(/ && !c { u = $2; a = $0; sub(/.*avg=/, "", a); sub(/,.*/, "", a)
                         f = (u ~ /nsec/) ? 0.001 : (u ~ /msec/) ? 1000 : 1; c = a * f }
        END { printf "%d %.0f", iops, c }' "$OUT/fio.txt"
}

run_round() {
    t=$1 r=$2
    rm -f $DIR/node*.img $DIR/node*.img.keelrec
    PIDS=
    for n in 1 2 3; do
        "$KEELD" --listen 127.0.0.1:442$n --nqn $NQN --no-pin --metrics 127.0.0.1:909$n \
            --buffers 256 --backend "$DIR/node$n.img" --size "${SIZE_MB}M" --node-id $n \
            --primary 1 --replica-listen $IP:443$n --write-quorum 2 --psk-file $DIR/psk \
            --bootstrap --member "1@$t://$IP:4431" --member "2@$t://$IP:4432" \
            --member "3@$t://$IP:4433" >>"$OUT/keeld-$t-$r-$n.log" 2>&1 &
        PIDS="$PIDS $!"
    done
    wait_in_sync
    nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $NQN >/dev/null
    i=0
    until [ -b /dev/nvme0n1 ]; do i=$((i + 1)); [ $i -le 100 ] || fail "no namespace"; sleep 0.2; done
    qd1=$(fio_iops 1)
    qd16=$(fio_iops 16)
    nvme disconnect -n $NQN >/dev/null
    for p in $PIDS; do kill -TERM "$p"; done
    for p in $PIDS; do wait "$p" || fail "keeld exited badly"; done
    PIDS=
    echo "round $r $t: qd1 iops/clat_us $qd1, qd16 iops/clat_us $qd16"
    echo "$t ${qd1% *} ${qd16% *} ${qd1#* } ${qd16#* }" >>$OUT/results.txt
}

mkdir -p $OUT
[ -x "$KEELD" ] || fail "no keeld at $KEELD (built with --features rdma?)"
modprobe -a rdma_rxe rdma_ucm dummy nvme-tcp
ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
ip addr add $IP/24 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0
modprobe brd rd_nr=1 rd_size=$(((3 * SIZE_MB + 64) * 1024))
mkfs.ext4 -q -F /dev/ram0
mkdir -p $DIR
mount -t ext4 /dev/ram0 $DIR
echo "keel replication bench key 0123456789abcdef" >$DIR/psk
: >$OUT/results.txt
r=1
while [ $r -le "$ROUNDS" ]; do
    run_round tcp "$r"
    run_round rdma "$r"
    r=$((r + 1))
done

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo
echo "== medians of $ROUNDS runs (4 KiB randwrite, W=2 of 3, ${RUNTIME} s each)"
for t in tcp rdma; do
    echo "$t: qd1 $(awk -v t=$t '$1 == t { print $2 }' $OUT/results.txt | median) IOPS" \
        "($(awk -v t=$t '$1 == t { print $4 }' $OUT/results.txt | median) us)," \
        "qd16 $(awk -v t=$t '$1 == t { print $3 }' $OUT/results.txt | median) IOPS" \
        "($(awk -v t=$t '$1 == t { print $5 }' $OUT/results.txt | median) us)"
done
echo "REPL-BENCH: PASS"
