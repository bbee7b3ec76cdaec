#!/usr/bin/env bash
# CI check for kernel-setup/: shellcheck every script, then run every script
# with --help and --dry-run. Works unprivileged, without nvme-cli or rdma tools.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERBOSE=0

usage() {
    cat <<EOF
Usage: $SCRIPT [--verbose] [--dry-run] [--help]

  1. shellcheck on every *.sh here; any finding, style included, fails.
  2. every script's --help, and --dry-run with sample arguments, must exit 0.
     Run as root, the dry-runs drop to user nobody (when it can read this
     folder), which proves they need no privileges and cannot change anything.
  3. unprivileged, each script without --dry-run must refuse and say it needs root.
Installs shellcheck with apt-get if it is missing.
  --verbose  print every command's output, not only failures
  --dry-run  print the checks it would run, run nothing
EOF
}

while (($#)); do
    case $1 in
    --verbose) VERBOSE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
cd "$HERE"

# Sample arguments: every script needs at least one case (checked below).
online=$(</sys/devices/system/cpu/online)
last_cpu=${online##*[,-]}
CASES=(
    "memlock.sh"
    "memlock.sh --user keel"
    "hugepages.sh --pages 512"
    "hugepages.sh --size 2G"
    "sysctl.sh"
    "connect-host.sh 127.0.0.1 nqn.2014-08.io.keel:vol0"
    "connect-host.sh 127.0.0.1 nqn.2014-08.io.keel:vol0 --port 4421 --digests"
    "connect-host.sh 127.0.0.1 nqn.2014-08.io.keel:vol0 --disconnect"
    "rxe-setup.sh --netdev lo"
    "rxe-setup.sh --remove"
    "install-service.sh --now"
    "check-all.sh"
)
# Isolating needs a CPU to spare: the last one, unless this machine has only one.
skipped=""
if ((last_cpu > 0)); then CASES+=("cpu-isolation.sh --cores $last_cpu"); else skipped=cpu-isolation.sh; fi

if ! have shellcheck; then
    sudo=()
    if ((EUID != 0 && !DRY_RUN)); then
        if ! { have sudo && sudo -n true 2>/dev/null; }; then
            die "shellcheck is missing; install it: sudo apt-get install -y shellcheck"
        fi
        sudo=(sudo -n)
    fi
    have apt-get || die "shellcheck is missing and there is no apt-get; see https://github.com/koalaman/shellcheck#installing"
    run "${sudo[@]}" apt-get update -qq
    run "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck
fi

# Run the dry-runs as nobody when we are root (and nobody can read this folder).
as_user=()
if ((EUID == 0)) && have setpriv; then
    nobody=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    if "${nobody[@]}" test -r "$HERE/lib.sh"; then
        as_user=("${nobody[@]}")
    else
        say "note: user nobody cannot read $HERE; dry-runs run as root"
    fi
fi
unprivileged=$((EUID != 0 || ${#as_user[@]} > 0))

indent() {
    [[ -n $1 ]] || return 0
    local line
    while IFS= read -r line; do say "      | $line"; done <<<"$1"
}

passed=0 failed=0
# check NAME EXPECT CMD...: EXPECT is ok (exit 0) or root (refuses, saying it needs root).
check() {
    local name=$1 expect=$2 out rc=0 good=0
    shift 2
    if ((DRY_RUN)); then say "[dry-run] $*"; return 0; fi
    out=$("$@" 2>&1) || rc=$?
    if [[ $expect == ok ]]; then
        ((rc == 0)) && good=1
    elif ((rc != 0)) && [[ $out == *"must run as root"* ]]; then
        good=1
    fi
    if ((good)); then
        say "ok    $name"
        passed=$((passed + 1))
        if ((VERBOSE)); then indent "$out"; fi
    else
        say "FAIL  $name (exit $rc)"
        failed=$((failed + 1))
        indent "$out"
    fi
}

check "shellcheck (all *.sh)" ok shellcheck --external-sources --severity=style ./*.sh

listed=" ${CASES[*]%% *} "
for script in *.sh; do
    [[ $script == lib.sh ]] && continue
    check "$script --help" ok "./$script" --help
    if [[ $script == "$skipped" ]]; then
        say "skip  $script --dry-run: single-CPU machine, no core to isolate"
    elif [[ $listed != *" $script "* ]]; then
        check "$script has a --dry-run case in check-all.sh" ok false
    fi
done

for c in "${CASES[@]}"; do
    read -ra argv <<<"$c"
    check "$c --dry-run" ok "${as_user[@]}" "./${argv[0]}" "${argv[@]:1}" --dry-run
    # check-all.sh itself needs no root, so only the system-changing scripts.
    if ((unprivileged)) && [[ ${argv[0]} != check-all.sh ]]; then
        check "$c (unprivileged: must refuse)" root "${as_user[@]}" "./${argv[0]}" "${argv[@]:1}"
    fi
done

((DRY_RUN)) && exit 0
say "check-all: $passed passed, $failed failed"
((failed == 0))
