# Sourced by the keeld guest payloads (keeld-kernel-host.sh for step, fail
# and run_fio; keeld-rdma-replication.sh and keeld-multipath-failover.sh,
# which run three keeld nodes, for the rest too); run.sh copies it to
# /extra/keel-nodes.sh. Steps and failures, the nodes' pids, their
# Prometheus gauges (node N serves metrics on 127.0.0.1:909N), verified fio
# jobs on $DEV, a clean stop, and the exit trap. Uses $PIDS, $OUT, $DEV,
# $NQN and $CURRENT_STEP of the payload.
# shellcheck shell=sh

# shellcheck disable=SC2034 # CURRENT_STEP is the payload's, for its exit trap
step() { CURRENT_STEP=$*; echo; echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

pid_of() { echo "$PIDS" | cut -d' ' -f"$1"; }
set_pid() {
    case $1 in
    1) PIDS="$2 $(pid_of 2) $(pid_of 3)" ;;
    2) PIDS="$(pid_of 1) $2 $(pid_of 3)" ;;
    3) PIDS="$(pid_of 1) $(pid_of 2) $2" ;;
    esac
}

gauge() { wget -q -O - "http://127.0.0.1:909$1/metrics" 2>/dev/null | awk -v g="$2" '$1 == g { print $2 }'; }

# wait_gauge NODE NAME VALUE SECONDS
wait_gauge() {
    i=0
    until [ "$(gauge "$1" "$2")" = "$3" ]; do
        i=$((i + 1))
        [ $i -le $(($4 * 5)) ] || fail "node $1: $2 not $3 after $4 s (now '$(gauge "$1" "$2")')"
        sleep 0.2
    done
    echo "node $1: $2 = $3 after ~$((i / 5)) s"
}

# check_fio NAME: fio's report of job NAME, which must show no error.
check_fio() {
    cat "$OUT/fio-$1.txt"
    ! grep -qE 'err= *[1-9]|verify:.*(bad|fail)' "$OUT/fio-$1.txt" || fail "fio $1 reported errors"
}

# run_fio NAME FIO-ARGS...: a job on $DEV that must succeed.
run_fio() {
    name=$1; shift
    frc=0
    fio --name="$name" --filename="$DEV" --ioengine=libaio --direct=1 --eta=never \
        --output="$OUT/fio-$name.txt" "$@" || frc=$?
    check_fio "$name"
    [ "$frc" -eq 0 ] || fail "fio $name exited $frc"
}

# stop_node N: SIGTERM, and keeld must exit 0 within 60 s.
stop_node() {
    p=$(pid_of "$1")
    kill -TERM "$p"
    i=0
    while kill -0 "$p" 2>/dev/null; do
        i=$((i + 1)); [ $i -le 300 ] || fail "keeld $1 did not stop within 60 s"
        sleep 0.2
    done
    src=0; wait "$p" || src=$?
    set_pid "$1" -
    [ "$src" -eq 0 ] || fail "keeld $1 exited $src on SIGTERM"
}

# nodes_exit RC TAG LINES PATTERN: the payloads' exit trap. Disconnects
# $NQN if $DEV is set, kills the nodes, saves dmesg; on failure prints the
# step, each node's last LINES log lines and the dmesg lines matching
# PATTERN, then "TAG: FAIL".
nodes_exit() {
    [ -n "$DEV" ] && nvme disconnect -n "$NQN" >/dev/null 2>&1
    for n in 1 2 3; do
        p=$(pid_of $n)
        [ "$p" != - ] && kill -9 "$p" 2>/dev/null
    done
    dmesg >"$OUT/dmesg.txt" 2>/dev/null || true
    [ "$1" -ne 0 ] || return 0
    echo "== FAILED (exit $1) during step: $CURRENT_STEP"
    for n in 1 2 3; do
        [ -f "$OUT/keeld$n.log" ] && { echo "== keeld $n log (last $3 lines)"; tail -n "$3" "$OUT/keeld$n.log"; }
    done
    echo "== dmesg, lines matching $4 (last 30)"
    dmesg | grep -iE "$4" | tail -n 30 || true
    echo "$2: FAIL"
}
