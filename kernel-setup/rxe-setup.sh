#!/usr/bin/env bash
# Soft-RoCE: an RDMA device over a plain Ethernet NIC, to run Keel's RDMA
# replication transport (cargo feature `rdma`) on machines without RDMA hardware.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DEV=rxe0

usage() {
    cat <<EOF
Usage: $SCRIPT [--netdev IFACE] [--remove] [--dry-run] [--help]

Load rdma_rxe and create the soft-RoCE device $DEV on IFACE, then show
'rdma link' and 'ibv_devices'. With --remove, delete $DEV.
  --netdev IFACE  Ethernet interface to run RoCE over (default: the one
                  holding the default route)
  --remove        delete $DEV instead
  --dry-run       print the commands, change nothing
Debian packages: iproute2 (rdma), ibverbs-utils (ibv_devices),
rdma-core + ibverbs-providers (libibverbs and the rxe provider that
applications such as keeld load at run time).
EOF
}

netdev="" remove=0
while (($#)); do
    case $1 in
    --netdev) netdev=${2:?--netdev needs an interface}; shift ;;
    --remove) remove=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
need_root
need_tool rdma "apt-get install iproute2"

if ((remove)); then
    if [[ -e /sys/class/infiniband/$DEV ]]; then run rdma link delete "$DEV"; else say "no $DEV to remove"; fi
    show rdma link
    exit 0
fi

if [[ -z $netdev ]]; then # default route: destination 00000000 in /proc/net/route
    netdev=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route)
    [[ -n $netdev ]] || die "no default route; pass --netdev IFACE"
fi
[[ -e /sys/class/net/$netdev ]] || die "no such interface: $netdev"

if [[ -d /sys/module/rdma_rxe ]]; then say "rdma_rxe module already loaded"; else run modprobe rdma_rxe; fi
if [[ -e /sys/class/infiniband/$DEV ]]; then
    say "$DEV already exists"
else
    run rdma link add "$DEV" type rxe netdev "$netdev"
fi
show rdma link
show ibv_devices
