#!/bin/sh
# Guest payload (../shared/guest/run.sh): Keel's userspace NVMe/TCP initiator
# (keel-bench nvmf) against the Linux kernel's own nvmet-tcp target, the
# reference implementation. Every run writes self-describing blocks and checks
# every read; any mismatch, NVMe error or protocol error fails the payload.
# Run from the repo: target/tests/guest/run.sh initiator-vs-kernel-nvmet.sh
set -eu
NQN=nqn.2014-08.io.keel:kernel-nvmet
ADDR=127.0.0.1 PORT=4420
CFG=/sys/kernel/config/nvmet
T=${KEEL_TEST_TIME:-6s}
BENCH=/extra/keel-bench
step() { echo; echo "=== $*"; }

step "kernel nvmet-tcp on $ADDR:$PORT: namespace 1 = 256 MiB brd"
modprobe brd rd_nr=1 rd_size=262144
modprobe nvmet-tcp
mkdir $CFG/subsystems/$NQN
echo 0 >$CFG/subsystems/$NQN/attr_allow_any_host
mkdir $CFG/hosts/nqn.2014-08.io.keel:host:keel-bench
ln -s $CFG/hosts/nqn.2014-08.io.keel:host:keel-bench $CFG/subsystems/$NQN/allowed_hosts/
mkdir $CFG/subsystems/$NQN/namespaces/1
printf %s /dev/ram0 >$CFG/subsystems/$NQN/namespaces/1/device_path
echo 1 >$CFG/subsystems/$NQN/namespaces/1/enable
mkdir $CFG/ports/1
echo tcp >$CFG/ports/1/addr_trtype
echo ipv4 >$CFG/ports/1/addr_adrfam
echo $ADDR >$CFG/ports/1/addr_traddr
echo $PORT >$CFG/ports/1/addr_trsvcid
ln -s $CFG/subsystems/$NQN $CFG/ports/1/subsystems/$NQN
sleep 1

step "4k randrw 50/50, qd 16, 2 connections, verify"
$BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --rw randrw --rwmix 50 --bs 4k --qd 16 --connections 2 --time "$T" --verify

step "128k randwrite then randrw, qd 4, verify (writes beyond in-capsule size go through R2T + H2CData)"
$BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --rw randrw --rwmix 30 --bs 128k --qd 4 --time "$T" --verify

step "header and data digests: 16k randrw, qd 8, verify"
$BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --rw randrw --bs 16k --qd 8 --time "$T" --verify --digests

step "sequential write then read, 64k, qd 8, JSON"
$BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --rw write --bs 64k --qd 8 --time 3s --json
$BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --rw read --bs 64k --qd 8 --time 3s --json

step "a host NQN the subsystem does not allow is refused"
if $BENCH nvmf --addr $ADDR:$PORT --nqn $NQN --hostnqn nqn.2014-08.io.keel:host:intruder --time 1s 2>/tmp/refused.txt; then
    echo "FAIL: disallowed host was let in"; exit 1
fi
cat /tmp/refused.txt
grep -q "Connect failed" /tmp/refused.txt

step "an unknown subsystem NQN is refused"
if $BENCH nvmf --addr $ADDR:$PORT --nqn nqn.2014-08.io.keel:nope --time 1s 2>/tmp/unknown.txt; then
    echo "FAIL: unknown subsystem accepted"; exit 1
fi
cat /tmp/unknown.txt

step "PASS"
