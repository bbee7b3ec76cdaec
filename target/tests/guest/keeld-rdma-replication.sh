#!/bin/sh
# Guest payload (../shared/guest/run.sh): three keeld processes replicating
# one volume over RDMA (soft-RoCE rxe0 on a guest-only dummy link,
# 192.0.2.1, as in ../shared/guest/examples/rxe-selftest.sh), write quorum 2
# of 3, every --member rdma://. The Linux kernel's nvme-tcp host writes
# through the primary with fio and crc32c verification; a replica is killed
# with SIGKILL; more verified writes complete on the quorum left; the
# replica restarts and is resynced; all three stop with SIGTERM and their
# backing files must be byte-identical. The primary's log must show the links
# were RDMA and their counters (frames and bytes per link).
# The last line of a good run is "KEELD-RDMA: PASS".
# Run from the repo: target/tests/guest/run.sh keeld-rdma-replication.sh
#
# Env (GUEST_PAYLOAD_ENV="VAR=value ..."): SIZE_MB (64), FIO_SIZE_MB (24),
#   KEELD (/extra/keeld), SYNC_TIMEOUT (s, 240), RUST_LOG (info),
#   TRANSPORTS ("rdma,rdma,rdma": nodes 1-3's member transports; e.g.
#   "rdma,rdma,tcp" mixes both on one volume, "tcp,tcp,tcp" is the TCP
#   baseline for comparisons)
set -eu
IP=192.0.2.1
NQN=nqn.2014-08.io.keel:rdma-repl
SIZE_MB=${SIZE_MB:-64}
FIO_SIZE_MB=${FIO_SIZE_MB:-24}
KEELD=${KEELD:-/extra/keeld}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-240}
TRANSPORTS=${TRANSPORTS:-rdma,rdma,rdma}
T1=$(echo "$TRANSPORTS" | cut -d, -f1)
T2=$(echo "$TRANSPORTS" | cut -d, -f2)
T3=$(echo "$TRANSPORTS" | cut -d, -f3)
export RUST_LOG="${RUST_LOG:-info}"
DIR=/srv/keel
OUT=/out
CURRENT_STEP=start
PIDS="- - -"
DEV=

# step, fail, pid_of/set_pid, gauge, wait_gauge, run_fio, stop_node, nodes_exit
# shellcheck source=target/tests/guest/keel-nodes.sh
. /extra/keel-nodes.sh

on_exit() {
    nodes_exit $? KEELD-RDMA 40 'rxe|rdma|nvme'
}
trap on_exit EXIT

start_node() {
    n=$1
    set -- --listen 127.0.0.1:442"$n" --nqn $NQN --no-pin --metrics 127.0.0.1:909"$n" \
        --buffers 256 --backend "$DIR/node$n.img" --size "${SIZE_MB}M" \
        --node-id "$n" --primary 1 --replica-listen $IP:443"$n" --write-quorum 2 \
        --psk-file $DIR/psk --bootstrap \
        --member "1@$T1://$IP:4431" --member "2@$T2://$IP:4432" --member "3@$T3://$IP:4433"
    "$KEELD" "$@" >>"$OUT/keeld$n.log" 2>&1 &
    set_pid "$n" $!
    echo "keeld $n: pid $!"
}

mkdir -p $OUT
[ -x "$KEELD" ] || fail "no keeld at $KEELD (built with --features rdma?)"

step "soft-RoCE rxe0 on dummy0 ($IP); backing store ext4 on brd"
modprobe -a rdma_rxe rdma_ucm dummy nvme-tcp brd
ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
ip addr add $IP/24 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0
rdma link show
rmmod brd 2>/dev/null || true
modprobe brd rd_nr=1 rd_size=$(((3 * SIZE_MB + 64) * 1024))
mkfs.ext4 -q -F /dev/ram0
mkdir -p $DIR
mount -t ext4 /dev/ram0 $DIR
echo "keel rdma replication guest test key 0123456789" >$DIR/psk

step "three keeld, W=2 of 3, member transports: $T1 $T2 $T3"
for n in 1 2 3; do start_node $n; done
wait_gauge 1 keel_replication_links 2 60
wait_gauge 1 keel_replication_serving 1 60
echo "initial full copy to both replicas over RDMA..."
wait_gauge 1 keel_replication_in_sync 1 "$SYNC_TIMEOUT"
echo "RDMA links up on the primary: $(grep -c 'replication link up (rdma)' $OUT/keeld1.log || true)"

step "the kernel's nvme-tcp host: verified writes through the primary"
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $NQN --ctrl-loss-tmo=30
i=0
until [ -b /dev/nvme0n1 ]; do i=$((i + 1)); [ $i -le 100 ] || fail "no namespace"; sleep 0.2; done
DEV=/dev/nvme0n1
run_fio write1 --rw=randwrite --bs=4k --bsrange=4k-128k --iodepth=8 --size="${FIO_SIZE_MB}M" \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --randseed=11

step "SIGKILL replica 3; writes still complete on the quorum (primary + replica 2)"
kill -9 "$(pid_of 3)"
wait "$(pid_of 3)" 2>/dev/null || true
set_pid 3 -
wait_gauge 1 keel_replication_links 1 60
run_fio write2 --rw=randwrite --bs=4k --bsrange=4k-64k --iodepth=8 --offset="${FIO_SIZE_MB}M" \
    --size="${FIO_SIZE_MB}M" --verify=crc32c --do_verify=1 --verify_fatal=1 --randseed=12

step "replica 3 restarts and is resynced (over $T3)"
start_node 3
wait_gauge 1 keel_replication_links 2 60
wait_gauge 1 keel_replication_in_sync 1 "$SYNC_TIMEOUT"
# fio re-derives what each job wrote from the same job parameters and seed.
run_fio verify1 --rw=randwrite --bs=4k --bsrange=4k-128k --iodepth=8 --size="${FIO_SIZE_MB}M" \
    --verify=crc32c --verify_only=1 --verify_fatal=1 --randseed=11
run_fio verify2 --rw=randwrite --bs=4k --bsrange=4k-64k --iodepth=8 --offset="${FIO_SIZE_MB}M" \
    --size="${FIO_SIZE_MB}M" --verify=crc32c --verify_only=1 --verify_fatal=1 --randseed=12
nvme disconnect -n $NQN
DEV=
wait_gauge 1 keel_replication_in_sync 1 60

step "SIGTERM all three; the copies must be byte-identical"
stop_node 1
stop_node 2
stop_node 3
sha256sum $DIR/node1.img $DIR/node2.img $DIR/node3.img
cmp $DIR/node1.img $DIR/node2.img || fail "node 2's copy differs from node 1's"
cmp $DIR/node1.img $DIR/node3.img || fail "node 3's copy differs from node 1's"

step "each link used its member's transport; the primary's RDMA link counters"
grep 'rdma link stats' $OUT/keeld1.log | sed 's/\x1b\[[0-9;]*m//g'
# Node 2's link came up once, node 3's twice (before the kill, after the restart).
want=0
[ "$T2" = rdma ] && want=$((want + 1))
[ "$T3" = rdma ] && want=$((want + 2))
rdma_links=$(grep -c 'replication link up (rdma)' $OUT/keeld1.log || true)
all_links=$(grep -c 'replication link up' $OUT/keeld1.log || true)
echo "links up on the primary: $all_links, of them over RDMA: $rdma_links (expected 3 and $want)"
if [ "$all_links" -ne 3 ] || [ "$rdma_links" -ne "$want" ]; then
    fail "links of the wrong transport"
fi

step "KEELD-RDMA ($TRANSPORTS): PASS"
echo "KEELD-RDMA: PASS"
