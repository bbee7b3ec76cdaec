#!/bin/sh
# Guest payload (../shared/guest/run.sh): Keel's RDMA replication transport
# (keel-replicator, feature `rdma`) on soft-RoCE. rxe0 sits on a dummy link
# that exists only in this guest (192.0.2.1, TEST-NET-1), set up the way
# ../shared/guest/examples/rxe-selftest.sh does; both ends use it, so the
# traffic takes rxe's loopback path through the kernel's verbs stack.
#
# 1. `rdma_frames send` streams FRAMES replication Write frames (4-128 KiB
#    payloads, far more than the 16-buffer credit window) to
#    `rdma_frames serve`, which checks every frame (sequence, CRC32C of the
#    wire decoder, payload pattern) and acks it; both print counters and a
#    CRC32C over all payloads, which must agree. The sender then disconnects
#    and the server must see the link go down.
# 2. A second sender is killed with SIGKILL mid-stream: the server must see
#    that link go down too (and exit).
# The last line of a good run is "RDMA-TRANSPORT: PASS".
# Run from the repo: target/tests/guest/run.sh rdma-transport.sh
#
# Env (GUEST_PAYLOAD_ENV="VAR=value ..."): FRAMES (800), WINDOW (64),
#   RDMA_FRAMES (/extra/rdma_frames), DOWN_TIMEOUT (s, 30)
set -eu
IP=192.0.2.1 PORT=4430
FRAMES=${FRAMES:-800}
WINDOW=${WINDOW:-64}
BIN=${RDMA_FRAMES:-/extra/rdma_frames}
DOWN_TIMEOUT=${DOWN_TIMEOUT:-30}
OUT=/out
CURRENT_STEP=start
S=

step() { CURRENT_STEP=$*; echo; echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
on_exit() {
    rc=$?
    [ -n "$S" ] && kill "$S" 2>/dev/null
    [ "$rc" -ne 0 ] || return 0
    echo "== FAILED (exit $rc) during step: $CURRENT_STEP"
    for f in "$OUT"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 30 "$f"; }; done
    dmesg | grep -iE 'rxe|rdma|infiniband' | tail -n 20 || true
    echo "RDMA-TRANSPORT: FAIL"
}
trap on_exit EXIT

# Waits up to $2 seconds for process $1 to exit; its status in $STATUS.
wait_exit() {
    i=0
    while kill -0 "$1" 2>/dev/null; do
        i=$((i + 1))
        [ "$i" -le "$(($2 * 10))" ] || return 1
        sleep 0.1
    done
    STATUS=0
    wait "$1" || STATUS=$?
}

crc_of() { sed -n 's/.*payload crc32c \([0-9a-f]*\);.*/\1/p' "$1" | head -n "${2:-1}" | tail -n 1; }

step "soft-RoCE rxe0 on dummy0 ($IP)"
modprobe -a rdma_rxe rdma_ucm dummy
ip link show dummy0 >/dev/null 2>&1 || ip link add dummy0 type dummy
ip addr add $IP/24 dev dummy0
ip link set dummy0 up
rdma link add rxe0 type rxe netdev dummy0
rdma link show
ibv_devices
mkdir -p $OUT

step "serve on $IP:$PORT (2 links), send $FRAMES frames with a window of $WINDOW"
"$BIN" serve $IP:$PORT --frames "$FRAMES" --links 2 >$OUT/serve.log 2>&1 &
S=$!
start=$(date +%s)
"$BIN" send $IP:$PORT --frames "$FRAMES" --window "$WINDOW" >$OUT/send1.log 2>&1 ||
    fail "sender 1 failed"
echo "sender 1 done in $(($(date +%s) - start)) s"
cat $OUT/send1.log
grep -q '^send: PASS' $OUT/send1.log || fail "sender 1 did not pass"
i=0
until grep -q 'serve: link 1 down' $OUT/serve.log; do
    i=$((i + 1))
    [ $i -le $((DOWN_TIMEOUT * 10)) ] || fail "server did not see link 1 go down"
    sleep 0.1
done
sent_crc=$(crc_of $OUT/send1.log)
got_crc=$(crc_of $OUT/serve.log)
echo "payload crc32c: sent $sent_crc, received $got_crc"
if [ -z "$sent_crc" ] || [ "$sent_crc" != "$got_crc" ]; then fail "payload CRCs differ"; fi

step "a sender killed with SIGKILL mid-stream: the server sees the link go down"
"$BIN" send $IP:$PORT --frames 1000000 --window "$WINDOW" >$OUT/send2.log 2>&1 &
K=$!
i=0
until grep -q 'serve: link 2 up' $OUT/serve.log; do
    i=$((i + 1))
    [ $i -le 300 ] || fail "link 2 never came up"
    sleep 0.1
done
sleep 2
kill -9 $K
wait $K 2>/dev/null || true
wait_exit $S "$DOWN_TIMEOUT" || fail "server still running ${DOWN_TIMEOUT}s after the kill"
S_STATUS=$STATUS
S=
cat $OUT/serve.log
[ "$S_STATUS" -eq 0 ] || fail "server exited with $S_STATUS"
grep -q 'serve: link 2 down' $OUT/serve.log || fail "server did not report link 2 down"
grep -q '^serve: PASS' $OUT/serve.log || fail "server did not pass"

step "RDMA-TRANSPORT: PASS"
echo "RDMA-TRANSPORT: PASS"
