#!/usr/bin/env bash
# Attach (or detach) a Keel volume on an NVMe/TCP host with the kernel initiator.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $SCRIPT ADDR NQN [--port PORT] [--digests] [--disconnect] [--dry-run] [--help]

On the host (initiator) side: load nvme-tcp, discover ADDR, connect to the
subsystem NQN served by keeld and list the resulting /dev/nvme* devices.
  --port PORT    keeld's NVMe/TCP listener (default 4420, the IANA port)
  --digests      enable header and data digests (CRC32C, nvme connect -g -G)
  --disconnect   detach NQN instead (nvme disconnect -n NQN)
  --dry-run      print the commands, change nothing
Needs nvme-cli (apt-get install nvme-cli).
EOF
}

port=4420 digests=() disconnect=0 args=()
while (($#)); do
    case $1 in
    --port) port=${2:?--port needs a number}; shift ;;
    --digests) digests=(-g -G) ;;
    --disconnect) disconnect=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *) args+=("$1") ;;
    esac
    shift
done
((${#args[@]} == 2)) || { usage >&2; exit 2; }
addr=${args[0]} nqn=${args[1]}
if ! [[ $port =~ ^[0-9]{1,5}$ ]] || ((10#$port < 1 || 10#$port > 65535)); then die "bad port: $port"; fi
[[ $nqn == nqn.* ]] || die "NQN must start with 'nqn.', got: $nqn"
need_root
need_tool nvme "apt-get install nvme-cli"

if ((disconnect)); then
    run nvme disconnect -n "$nqn"
    show nvme list
    exit 0
fi

# keeld refuses hosts whose NQN the subsystem does not allow: say which one we are.
if [[ -s /etc/nvme/hostnqn ]]; then
    say "host NQN: $(</etc/nvme/hostnqn) (must be in the subsystem's allowed hosts in keel.toml)"
else
    warn "no /etc/nvme/hostnqn; create a stable one first: nvme gen-hostnqn > /etc/nvme/hostnqn"
fi

if [[ -d /sys/module/nvme_tcp ]]; then say "nvme-tcp module already loaded"; else run modprobe nvme-tcp; fi
# Discovery is informative; a target without a discovery service can still be connected.
run nvme discover -t tcp -a "$addr" -s "$port" || warn "discovery at $addr:$port failed; connecting directly"
run nvme connect -t tcp -a "$addr" -s "$port" -n "$nqn" "${digests[@]}"
show nvme list
