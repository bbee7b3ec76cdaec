#!/bin/sh
# Guest payload (../shared/guest/run.sh): failover seen by the Linux kernel's
# own NVMe/TCP host with native NVMe multipath, no Keel software on the host.
# Three keeld replicate one volume over TCP (W = 2 of 3); each serves the
# same subsystem and namespace identity on its own NVMe/TCP listener. The
# host connects to all three: one multipath namespace, whose paths' ANA
# states must be optimized on the primary and inaccessible on the replicas.
# fio writes with crc32c verification; the primary is killed with SIGKILL
# while a second verified fio job is running; node 2 is promoted with keelctl.
# The job must finish with no I/O error: the host queues its I/O while no
# path is optimized and moves it to node 2 once node 2's ANA Change notice
# says it serves. Everything written before and during the failover must
# verify; node 1, restarted, rejoins as a replica whose path reads
# inaccessible; the three copies must end byte-identical.
# The last line of a good run is "KEELD-MULTIPATH: PASS".
# Run from the repo: target/tests/guest/run.sh keeld-multipath-failover.sh
#
# Env (GUEST_PAYLOAD_ENV="VAR=value ..."): SIZE_MB (64), FIO_SIZE_MB (16),
#   KEELD (/extra/keeld), KEELCTL (/extra/keelctl), SYNC_TIMEOUT (s, 120),
#   FAILOVER_AFTER (s, 2): how long the second job runs before the kill,
#   KEELD_EXTRA (""): more keeld flags for every node (e.g. --read-lease),
#   RUST_LOG (info)
set -eu
NQN=nqn.2014-08.io.keel:multipath
SIZE_MB=${SIZE_MB:-64}
FIO_SIZE_MB=${FIO_SIZE_MB:-16}
KEELD=${KEELD:-/extra/keeld}
KEELCTL=${KEELCTL:-/extra/keelctl}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-120}
FAILOVER_AFTER=${FAILOVER_AFTER:-2}
KEELD_EXTRA=${KEELD_EXTRA:-}
export RUST_LOG="${RUST_LOG:-info}"
DIR=/srv/keel
OUT=/out
CURRENT_STEP=start
PIDS="- - -"
FIO_PID=
DEV=

# step, fail, pid_of/set_pid, gauge, wait_gauge, check_fio, run_fio, stop_node, nodes_exit
# shellcheck source=target/tests/guest/keel-nodes.sh
. /extra/keel-nodes.sh

on_exit() {
    rc=$?
    [ -n "$FIO_PID" ] && kill -9 "$FIO_PID" 2>/dev/null
    nodes_exit "$rc" KEELD-MULTIPATH 30 nvme
}
trap on_exit EXIT

# start_node N [PRIMARY]: PRIMARY is the node it takes for the primary (1).
start_node() {
    n=$1
    primary=${2:-1}
    # shellcheck disable=SC2086 # KEELD_EXTRA is a list of flags
    "$KEELD" $KEELD_EXTRA --listen 127.0.0.1:442"$n" --nqn $NQN --no-pin --metrics 127.0.0.1:909"$n" \
        --rpc-socket "$DIR/node$n.sock" --buffers 256 --backend "$DIR/node$n.img" \
        --size "${SIZE_MB}M" --node-id "$n" --primary "$primary" --replica-listen 127.0.0.1:443"$n" \
        --write-quorum 2 --psk-file $DIR/psk --bootstrap \
        --member 1@tcp://127.0.0.1:4431 --member 2@tcp://127.0.0.1:4432 \
        --member 3@tcp://127.0.0.1:4433 >>"$OUT/keeld$n.log" 2>&1 &
    set_pid "$n" $!
    echo "keeld $n: pid $!"
}

# ana_state PORT: the ANA state of the path (hidden per-path disk
# nvmeXcYn1) through the controller connected to PORT.
ana_state() {
    for p in /sys/block/nvme*c*n1; do
        [ -f "$p/ana_state" ] || continue
        grep -q "trsvcid=$1" "$p/device/address" 2>/dev/null && { cat "$p/ana_state"; return; }
    done
    echo none
}

# wait_ana PORT STATE SECONDS
wait_ana() {
    i=0
    until [ "$(ana_state "$1")" = "$2" ]; do
        i=$((i + 1))
        [ $i -le $(($3 * 5)) ] || fail "path to :$1 is '$(ana_state "$1")', not $2, after $3 s"
        sleep 0.2
    done
    echo "path to :$1: $2"
}

mkdir -p $OUT
[ -x "$KEELD" ] || fail "no keeld at $KEELD"
[ -x "$KEELCTL" ] || fail "no keelctl at $KEELCTL"

step "backing store ext4 on brd; native NVMe multipath on"
modprobe -a nvme-tcp brd
[ "$(cat /sys/module/nvme_core/parameters/multipath)" = Y ] || fail "nvme_core.multipath is off"
rmmod brd 2>/dev/null || true
modprobe brd rd_nr=1 rd_size=$(((3 * SIZE_MB + 64) * 1024))
mkfs.ext4 -q -F /dev/ram0
mkdir -p $DIR
mount -t ext4 /dev/ram0 $DIR
echo "keel multipath guest test key 0123456789" >$DIR/psk

step "three keeld, W=2 of 3, each with its own NVMe/TCP listener"
for n in 1 2 3; do start_node $n; done
wait_gauge 1 keel_replication_serving 1 60
wait_gauge 1 keel_replication_in_sync 1 "$SYNC_TIMEOUT"

step "the host connects to all three: one namespace, three paths"
for n in 1 2 3; do
    nvme connect -t tcp -a 127.0.0.1 -s 442"$n" -n $NQN --ctrl-loss-tmo=5 --reconnect-delay=1
done
i=0
until [ -b /dev/nvme0n1 ]; do i=$((i + 1)); [ $i -le 100 ] || fail "no namespace"; sleep 0.2; done
DEV=/dev/nvme0n1
nvme list-subsys || true
paths=0
for p in /sys/block/nvme*c*n1; do [ -e "$p" ] && paths=$((paths + 1)); done
[ "$paths" -eq 3 ] || fail "expected 3 paths to one namespace, found $paths"
wait_ana 4421 optimized 10
wait_ana 4422 inaccessible 10
wait_ana 4423 inaccessible 10

step "verified writes through the multipath device (served by node 1)"
run_fio write1 --rw=randwrite --bs=4k --bsrange=4k-64k --iodepth=8 --size="${FIO_SIZE_MB}M" \
    --verify=crc32c --do_verify=1 --verify_fatal=1 --randseed=21

step "a second verified job; SIGKILL node 1 after ${FAILOVER_AFTER} s; promote node 2"
fio --name=write2 --filename="$DEV" --ioengine=libaio --direct=1 --eta=never \
    --output="$OUT/fio-write2.txt" --rw=randwrite --bs=4k --iodepth=4 --offset="${FIO_SIZE_MB}M" \
    --size="${FIO_SIZE_MB}M" --rate_iops=500 --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --randseed=22 &
FIO_PID=$!
sleep "$FAILOVER_AFTER"
kill -0 "$FIO_PID" 2>/dev/null || fail "fio write2 ended before the failover (raise FIO_SIZE_MB)"
kill -9 "$(pid_of 1)"
wait "$(pid_of 1)" 2>/dev/null || true
set_pid 1 -
echo "node 1 killed at $(date +%s)"
"$KEELCTL" --socket $DIR/node2.sock promote $NQN
wait_gauge 2 keel_replication_serving 1 60
wait_ana 4422 optimized 30
wait_ana 4423 inaccessible 10
frc=0
wait "$FIO_PID" || frc=$?
FIO_PID=
check_fio write2
[ "$frc" -eq 0 ] || fail "fio write2 exited $frc across the failover"

step "everything written before and during the failover reads back through node 2"
run_fio verify1 --rw=randwrite --bs=4k --bsrange=4k-64k --iodepth=8 --size="${FIO_SIZE_MB}M" \
    --verify=crc32c --verify_only=1 --verify_fatal=1 --randseed=21
run_fio verify2 --rw=randwrite --bs=4k --iodepth=4 --offset="${FIO_SIZE_MB}M" \
    --size="${FIO_SIZE_MB}M" --verify=crc32c --verify_only=1 --verify_fatal=1 --randseed=22
dmesg | grep -iE 'nvme.*(ANA|optimized|inaccessible|failover|path)' | tail -n 10 || true

step "node 1 restarts as a replica of node 2, is resynced, and reports its path inaccessible"
start_node 1 2
wait_gauge 2 keel_replication_in_sync 1 "$SYNC_TIMEOUT"
wait_gauge 1 keel_replication_serving 0 10
nvme connect -t tcp -a 127.0.0.1 -s 4421 -n $NQN --ctrl-loss-tmo=5 --reconnect-delay=1
wait_ana 4421 inaccessible 10
wait_ana 4422 optimized 10
nvme disconnect -n $NQN
DEV=

step "SIGTERM all three; the copies must be byte-identical"
for n in 2 3 1; do stop_node $n; done
sha256sum $DIR/node1.img $DIR/node2.img $DIR/node3.img
cmp $DIR/node2.img $DIR/node1.img || fail "node 1's copy differs from node 2's"
cmp $DIR/node2.img $DIR/node3.img || fail "node 3's copy differs from node 2's"

step "KEELD-MULTIPATH: PASS"
echo "KEELD-MULTIPATH: PASS"
