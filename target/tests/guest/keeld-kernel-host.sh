#!/bin/sh
# Guest payload (../shared/guest/run.sh): the Linux kernel's own NVMe/TCP host
# (nvme-tcp + nvme-cli + fio + ext4) against Keel's target daemon keeld, which
# serves a file-backed namespace on 127.0.0.1:4420. Discovery, connect,
# Identify/SMART, fio with crc32c verification, ext4 data surviving a
# reconnect, header+data digests, a refused host NQN, and a clean SIGTERM exit.
# Any error fails the payload; the last line of a good run is "KEELD-GUEST: PASS".
# Run from the repo: target/tests/guest/run.sh keeld-kernel-host.sh
#
# Env (GUEST_PAYLOAD_ENV="VAR=value ..."):
#   FIO_RUNTIME (s, 60)  FIO_DIGEST_RUNTIME (s, 10)  FIO_SIZE (half the namespace)
#   NS_SIZE_MB (512)  BLOCK_SIZE (512|4096, 512)  KEELD (/extra/keeld)
#   KEELD_ARGS (extra keeld flags)  KEELD_START_TIMEOUT (s, 30)
#   KEELD_STOP_TIMEOUT (s, 60)  CTRL_LOSS_TMO (s, 30)  RUST_LOG (info)
#   MKFS_EXT4_OPTS (extra mkfs.ext4 flags, e.g. "-E nodiscard")
#   PERF_RUNTIME (s, 15): each side of the keeld vs kernel nvmet comparison
set -eu
NQN=nqn.2014-08.io.keel:kernel-host
DISC_NQN=nqn.2014-08.org.nvmexpress.discovery
BAD_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000bad
ADDR=127.0.0.1 PORT=4420
KEELD=${KEELD:-/extra/keeld}
KEELD_ARGS=${KEELD_ARGS:-}
NS_SIZE_MB=${NS_SIZE_MB:-512}
BLOCK_SIZE=${BLOCK_SIZE:-512}
FIO_RUNTIME=${FIO_RUNTIME:-60}
FIO_DIGEST_RUNTIME=${FIO_DIGEST_RUNTIME:-10}
FIO_SIZE=${FIO_SIZE:-$((NS_SIZE_MB / 2))M}
KEELD_START_TIMEOUT=${KEELD_START_TIMEOUT:-30}
KEELD_STOP_TIMEOUT=${KEELD_STOP_TIMEOUT:-60}
# If keeld dies or stops answering, the kernel gives up on the controller after
# this many seconds and fails the I/O (default 600 s would outlast the guest).
CTRL_LOSS_TMO=${CTRL_LOSS_TMO:-30}
MKFS_EXT4_OPTS=${MKFS_EXT4_OPTS:-}
PERF_RUNTIME=${PERF_RUNTIME:-15}
BACKING_DIR=/srv/keel
BACKING=$BACKING_DIR/ns1.img
MNT=/mnt/ns1
OUT=/out
LOG=$OUT/keeld.log
KEELD_PID=
CURRENT_STEP=start

# step, fail, run_fio (and the three-node helpers, unused here)
# shellcheck source=target/tests/guest/keel-nodes.sh
. /extra/keel-nodes.sh

on_exit() {
    rc=$?
    dmesg >"$OUT/dmesg.txt" 2>/dev/null || true
    [ "$rc" -ne 0 ] || return 0
    echo
    echo "== FAILED (exit $rc) during step: $CURRENT_STEP"
    if [ -f "$LOG" ]; then
        echo "== keeld log, last 80 lines ($LOG)"
        tail -n 80 "$LOG"
    fi
    if [ -n "$KEELD_PID" ] && ! kill -0 "$KEELD_PID" 2>/dev/null; then
        echo "== keeld (pid $KEELD_PID) is no longer running"
    fi
    echo "== dmesg, nvme lines (last 40)"
    dmesg | grep -E 'nvme|blk_update|I/O error|EXT4' | tail -n 40 || true
    echo "KEELD-GUEST: FAIL"
}
trap on_exit EXIT

# The controllers (/sys/class/nvme/nvmeX) connected to subsystem $1.
ctrls_of() {
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/subsysnqn" ] || continue
        [ "$(cat "$c/subsysnqn")" = "$1" ] && echo "${c##*/}"
    done
    return 0
}
all_ctrls() { for c in /sys/class/nvme/nvme*; do [ -e "$c" ] && echo "${c##*/}"; done; return 0; }

# The namespace block device of subsystem $1, e.g. /dev/nvme0n1. With native
# multipath the head device sits under /sys/class/nvme-subsystem/nvme-subsysN,
# without it under the controller; hidden per-path devices (nvmeXcYnZ) are skipped.
ns_dev_of() {
    for s in /sys/class/nvme-subsystem/nvme-subsys* /sys/class/nvme/nvme*; do
        [ -e "$s/subsysnqn" ] || continue
        [ "$(cat "$s/subsysnqn")" = "$1" ] || continue
        for n in "$s"/nvme*n*; do
            b=${n##*/}
            case $b in *c*) continue ;; esac
            [ -b "/dev/$b" ] && { echo "/dev/$b"; return 0; }
        done
    done
    return 0
}

# connect [extra nvme-cli flags]: connect to $NQN and wait for the namespace.
connect() {
    nvme connect -t tcp -a $ADDR -s $PORT -n $NQN --ctrl-loss-tmo="$CTRL_LOSS_TMO" "$@"
    i=0 DEV=
    while [ $i -lt 100 ]; do
        DEV=$(ns_dev_of $NQN)
        [ -n "$DEV" ] && break
        sleep 0.2; i=$((i + 1))
    done
    [ -n "$DEV" ] || fail "connected, but no namespace block device of $NQN appeared within 20 s"
    CTRL=/dev/$(ctrls_of $NQN | head -n1)
    echo "connected: controller $CTRL, namespace $DEV"
}

disconnect() {
    nvme disconnect -n $NQN
    [ -z "$(ctrls_of $NQN)" ] || fail "controller(s) of $NQN still present after disconnect: $(ctrls_of $NQN)"
}

# run_fio (keel-nodes.sh): fio against $DEV, fails on any error. The verify
# jobs add --verify_backlog: with time_based, fio's verify phase only runs
# after a full pass over the file, which a short run may never finish.

# show FILE CMD...: run CMD with its output into FILE, print FILE, fail if CMD
# failed (POSIX sh has no pipefail, so no "CMD | tee FILE").
show() {
    f=$1; shift
    src=0
    "$@" >"$f" 2>&1 || src=$?
    cat "$f"
    [ "$src" -eq 0 ] || fail "'$*' exited $src"
}

# Kernel complaints about the nvme controller or block I/O since boot: digest
# errors, error recovery/reconnects, I/O timeouts or errors, ext4 errors.
check_kernel_log() {
    bad=$(dmesg | grep -E 'nvme|blk_update|I/O error|Buffer I/O' |
        grep -iE 'digest|error|recovery|timeout|timed out|reconnect|failed|abort|reset' || true)
    [ -z "$bad" ] || { echo "$bad"; fail "kernel reported nvme/block errors ($1)"; }
}

# Is something listening on $ADDR:$PORT? (/proc/net/tcp: local address in hex, state 0A)
listening() {
    hexport=$(printf '%04X' $PORT)
    awk -v a="0100007F:$hexport" -v z="00000000:$hexport" \
        'NR > 1 && ($2 == a || $2 == z) && $4 == "0A" { f = 1 } END { exit !f }' /proc/net/tcp
}

mkdir -p $OUT
echo "KEELD-GUEST: kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {print $2 / 1024 " MiB"}' /proc/meminfo)"

step "prerequisites"
if [ ! -x "$KEELD" ]; then
    echo "FAIL: keeld not found at $KEELD." >&2
    echo "      Pass it as an extra file: target/tests/guest/run.sh keeld-kernel-host.sh" >&2
    echo "      (or ../shared/guest/run.sh keeld-kernel-host.sh build/release/keeld)" >&2
    exit 2
fi
for t in nvme fio mkfs.ext4 sha256sum awk; do
    command -v $t >/dev/null || fail "$t missing in the guest"
done
modprobe nvme-tcp
if [ ! -s /etc/nvme/hostnqn ]; then
    mkdir -p /etc/nvme
    nvme gen-hostnqn >/etc/nvme/hostnqn
fi
HOSTNQN=$(cat /etc/nvme/hostnqn)
[ -n "$HOSTNQN" ] || fail "no host NQN"
echo "host NQN: $HOSTNQN"
case $BLOCK_SIZE in 512) LBADS=9 ;; 4096) LBADS=12 ;; *) fail "BLOCK_SIZE must be 512 or 4096" ;; esac

step "backing store: ext4 on a brd RAM disk at $BACKING_DIR (O_DIRECT capable, unlike tmpfs)"
modprobe brd rd_nr=1 rd_size=$(((NS_SIZE_MB + 96) * 1024))
mkfs.ext4 -q -F /dev/ram0
mkdir -p $BACKING_DIR
mount -t ext4 /dev/ram0 $BACKING_DIR
df -h $BACKING_DIR

step "1. start keeld: $NQN, ${NS_SIZE_MB} MiB file namespace, block size $BLOCK_SIZE, host $HOSTNQN only"
# shellcheck disable=SC2086 # KEELD_ARGS is a list of flags
set -- --listen $ADDR:$PORT --nqn $NQN --backend $BACKING --size "${NS_SIZE_MB}M" \
    --block-size "$BLOCK_SIZE" --allow-host "$HOSTNQN" $KEELD_ARGS
echo "$KEELD $*"
RUST_LOG=${RUST_LOG:-info} NO_COLOR=1 "$KEELD" "$@" >"$LOG" 2>&1 &
KEELD_PID=$!
i=0 limit=$((KEELD_START_TIMEOUT * 5))
until listening; do
    kill -0 "$KEELD_PID" 2>/dev/null || { wait "$KEELD_PID" || true; fail "keeld exited before listening"; }
    i=$((i + 1))
    [ $i -lt $limit ] || fail "keeld not listening on $ADDR:$PORT after ${KEELD_START_TIMEOUT}s"
    sleep 0.2
done
echo "keeld pid $KEELD_PID listening on $ADDR:$PORT after ~$((i / 5)) s"
ls -l $BACKING

step "2. nvme discover"
show $OUT/discover.txt nvme discover -t tcp -a $ADDR -s $PORT
grep -q "^subnqn: *$NQN *\$" $OUT/discover.txt || fail "discovery log does not list $NQN"
# Its entry: subtype "nvme subsystem", trtype tcp, traddr/trsvcid of our port.
awk -v nqn=$NQN -v addr=$ADDR -v port=$PORT '
    function check() { if (sn == nqn && st == "nvme subsystem" && tt == "tcp" && ta == addr && ts == port) ok = 1 }
    /^=====Discovery Log Entry/ { check(); sn = st = tt = ta = ts = "" }
    { v = $0; sub(/^[a-z]+: */, "", v); sub(/ +$/, "", v) }
    $1 == "subnqn:" { sn = v }
    $1 == "subtype:" { st = v }
    $1 == "trtype:" { tt = v }
    $1 == "traddr:" { ta = v }
    $1 == "trsvcid:" { ts = v }
    END { check(); exit !ok }' $OUT/discover.txt ||
    fail "the discovery log entry of $NQN is not {subtype nvme subsystem, trtype tcp, traddr $ADDR, trsvcid $PORT}"
echo "discovery log lists $NQN (discovery NQN $DISC_NQN)"

step "3. nvme connect, list, id-ctrl, id-ns, smart-log"
connect
nvme list
nvme list-subsys
show $OUT/id-ctrl.txt nvme id-ctrl "$CTRL"
show $OUT/id-ns.txt nvme id-ns "$DEV"
show $OUT/smart-log.txt nvme smart-log "$CTRL"
subnqn=$(sed -n 's/^subnqn *: *//p' $OUT/id-ctrl.txt | tr -d ' ')
[ "$subnqn" = "$NQN" ] || fail "Identify Controller SUBNQN '$subnqn' != '$NQN'"
grep -qE "^lbaf +[0-9]+ *:.*lbads:$LBADS .*in use" $OUT/id-ns.txt ||
    fail "id-ns: the LBA format in use does not have lbads:$LBADS (block size $BLOCK_SIZE)"
b=${DEV#/dev/}
lbs=$(cat "/sys/block/$b/queue/logical_block_size")
bytes=$(($(cat "/sys/block/$b/size") * 512))
echo "block device $DEV: $bytes bytes, logical block size $lbs"
[ "$lbs" -eq "$BLOCK_SIZE" ] || fail "logical block size $lbs != $BLOCK_SIZE"
[ "$bytes" -gt 0 ] || fail "namespace has no capacity"
[ "$bytes" -le $((NS_SIZE_MB * 1048576)) ] || fail "namespace ($bytes bytes) is larger than --size ${NS_SIZE_MB}M"
[ "$bytes" -eq $((NS_SIZE_MB * 1048576)) ] || echo "note: namespace is $bytes bytes, --size asked for $((NS_SIZE_MB * 1048576))"

step "4. fio randrw 4k-128k qd16, crc32c verify, ${FIO_RUNTIME}s on $FIO_SIZE"
run_fio randrw-verify --rw=randrw --bsrange=4k-128k --iodepth=16 --size="$FIO_SIZE" \
    --runtime="$FIO_RUNTIME" --time_based --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --verify_backlog=256
check_kernel_log "fio"

step "5. ext4 on the namespace, files survive disconnect/reconnect"
# shellcheck disable=SC2086 # MKFS_EXT4_OPTS is a list of flags
mkfs.ext4 -F $MKFS_EXT4_OPTS "$DEV"
mkdir -p $MNT
mount -t ext4 "$DEV" $MNT
for kb in 1 4 13 64 300 1024 2048 4096; do
    dd if=/dev/urandom of=$MNT/f$kb bs=1024 count=$kb 2>/dev/null
done
mkdir $MNT/dir && dd if=/dev/urandom of=$MNT/dir/g3m bs=1M count=3 2>/dev/null
(cd $MNT && sha256sum f* dir/g3m) >/tmp/sums.txt
cat /tmp/sums.txt
sync
ls -l $MNT
df -h $MNT
umount $MNT
disconnect
connect
mount -t ext4 "$DEV" $MNT
(cd $MNT && sha256sum -c /tmp/sums.txt) || fail "files changed across disconnect/reconnect"
umount $MNT
disconnect
check_kernel_log "ext4"

step "6. connect with header and data digests (-g -G), fio verify ${FIO_DIGEST_RUNTIME}s"
connect -g -G
run_fio digest-verify --rw=randrw --bsrange=4k-128k --iodepth=16 --size="$FIO_SIZE" \
    --runtime="$FIO_DIGEST_RUNTIME" --time_based --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --verify_backlog=256
disconnect
check_kernel_log "digests"

step "7. a host NQN not on the allow list is refused"
before=$(all_ctrls)
if nvme connect -t tcp -a $ADDR -s $PORT -n $NQN --hostnqn $BAD_HOSTNQN; then
    fail "host $BAD_HOSTNQN was allowed to connect"
fi
sleep 1
after=$(all_ctrls)
[ "$before" = "$after" ] || fail "a controller appeared for the refused host: before '$before', after '$after'"
[ -z "$(ctrls_of $NQN)" ] || fail "refused host left a controller of $NQN: $(ctrls_of $NQN)"
echo "refused as expected; controllers unchanged: '${after:-none}'"
kill -0 "$KEELD_PID" 2>/dev/null || fail "keeld died"

step "8. SIGTERM keeld, expect exit status 0"
kill -TERM "$KEELD_PID"
(sleep "$KEELD_STOP_TIMEOUT"; kill -KILL "$KEELD_PID" 2>/dev/null) &
WATCHDOG=$!
krc=0
wait "$KEELD_PID" || krc=$?
kill "$WATCHDOG" 2>/dev/null || true
KEELD_PID=
[ "$krc" -ne 137 ] || fail "keeld did not exit within ${KEELD_STOP_TIMEOUT}s of SIGTERM (killed)"
[ "$krc" -eq 0 ] || fail "keeld exited with status $krc after SIGTERM"
echo "keeld exited 0"
echo "== keeld log, last 20 lines"
tail -n 20 "$LOG"


# perf_job NAME: the comparison job on $DEV (fio terse v3: read IOPS in field 8,
# mean read latency in 40, write IOPS in 49, mean write latency in 81; us).
perf_job() {
    fio --name="$1" --filename="$DEV" --ioengine=libaio --direct=1 --rw=randrw \
        --rwmixread=70 --bs=4k --iodepth=32 --size="$FIO_SIZE" --runtime="$PERF_RUNTIME" \
        --time_based --output-format=terse --terse-version=3 >"$OUT/perf-$1.terse" ||
        fail "fio $1 failed"
    awk -F';' -v name="$1" '{ printf "%-14s %10.0f %10.0f %12.1f %12.1f\n", name, $8, $49, $40, $81 }' \
        "$OUT/perf-$1.terse" >"$OUT/perf-$1.row"
    cat "$OUT/perf-$1.row"
}

step "9. side by side: the same fio job (4k randrw 70/30 qd32, ${PERF_RUNTIME}s) on keeld and on the kernel's nvmet-tcp, same backing file"
set -- --listen $ADDR:$PORT --nqn $NQN --backend $BACKING --block-size "$BLOCK_SIZE" \
    --allow-host "$HOSTNQN"
NO_COLOR=1 "$KEELD" "$@" >>"$LOG" 2>&1 &
KEELD_PID=$!
i=0
until listening; do
    kill -0 "$KEELD_PID" 2>/dev/null || fail "keeld exited before listening (second start)"
    i=$((i + 1)); [ $i -lt 150 ] || fail "keeld not listening after restart"
    sleep 0.2
done
connect
perf_job keeld
disconnect
kill -TERM "$KEELD_PID"
wait "$KEELD_PID" || fail "keeld exited non-zero after the comparison run"
KEELD_PID=

KNQN=nqn.2014-08.io.keel:kernel-nvmet KPORT=4421
modprobe nvmet
modprobe nvmet-tcp
CFG=/sys/kernel/config/nvmet
[ -d $CFG ] || mount -t configfs none /sys/kernel/config
mkdir $CFG/subsystems/$KNQN
echo 1 >$CFG/subsystems/$KNQN/attr_allow_any_host
mkdir $CFG/subsystems/$KNQN/namespaces/1
printf %s $BACKING >$CFG/subsystems/$KNQN/namespaces/1/device_path
echo 1 >$CFG/subsystems/$KNQN/namespaces/1/enable
mkdir $CFG/ports/1
echo tcp >$CFG/ports/1/addr_trtype
echo ipv4 >$CFG/ports/1/addr_adrfam
echo $ADDR >$CFG/ports/1/addr_traddr
echo $KPORT >$CFG/ports/1/addr_trsvcid
ln -s $CFG/subsystems/$KNQN $CFG/ports/1/subsystems/$KNQN
SAVED_NQN=$NQN SAVED_PORT=$PORT
NQN=$KNQN PORT=$KPORT
connect
perf_job kernel-nvmet
disconnect
NQN=$SAVED_NQN PORT=$SAVED_PORT
rm $CFG/ports/1/subsystems/$KNQN
rmdir $CFG/ports/1
echo 0 >$CFG/subsystems/$KNQN/namespaces/1/enable
rmdir $CFG/subsystems/$KNQN/namespaces/1
rmdir $CFG/subsystems/$KNQN

{
    echo "side by side (TCG guest: only the ratio means anything)"
    printf "%-14s %10s %10s %12s %12s\n" target "read IOPS" "write IOPS" "read lat us" "write lat us"
    cat "$OUT/perf-keeld.row" "$OUT/perf-kernel-nvmet.row"
    awk '{ iops[NR] = $2 + $3 } END { if (iops[2] > 0) printf "keeld / kernel nvmet, total IOPS: %.2f\n", iops[1] / iops[2] }' \
        "$OUT/perf-keeld.row" "$OUT/perf-kernel-nvmet.row"
} | tee "$OUT/side-by-side.txt"

echo
echo "KEELD-GUEST: PASS"
