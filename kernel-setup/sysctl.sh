#!/usr/bin/env bash
# Network sysctls for NVMe/TCP and replication traffic.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONF=/etc/sysctl.d/90-keel.conf

usage() {
    cat <<EOF
Usage: $SCRIPT [--dry-run] [--help]

Write the network tuning Keel wants to $CONF (every value is
explained in the file), apply it now with sysctl -p, and show the live values.
  --dry-run  print the file and the command, change nothing
EOF
}

while (($#)); do
    case $1 in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
need_root

read -r -d '' settings <<'EOF' || true
# Written by keel kernel-setup/sysctl.sh: NVMe/TCP and replication tuning.

# Busy polling: a socket read spins up to 50 us on the NIC queue before
# sleeping for an interrupt. Trades CPU for tail latency, which suits a host
# that gives whole cores to keeld; needs a NAPI driver. 50 is the kernel's
# suggested value (Documentation/admin-guide/sysctl/net.rst).
net.core.busy_read = 50
# Same for poll/select/epoll: initiators and tools that wait in epoll.
net.core.busy_poll = 50

# Ceiling for buffers an application sets with SO_RCVBUF/SO_SNDBUF. A stream
# must hold a bandwidth-delay product: 100 Gb/s x 10 ms (replication to
# another site) is ~125 MB, so 128 MiB.
net.core.rmem_max = 134217728
net.core.wmem_max = 134217728
# TCP autotuning min / default / max per socket, max sized as above. Defaults
# stay modest because a host opens one connection per NVMe I/O queue (often
# one per CPU); only busy sockets grow toward the max.
net.ipv4.tcp_rmem = 4096 131072 134217728
net.ipv4.tcp_wmem = 4096 65536 134217728

# Listen backlog (kernel default 4096 since 5.4, 128 before): after a target
# restart every host reconnects all its I/O queues at once, hosts x queues
# connections; a full accept queue drops them and reconnects back off.
# keeld's listen() backlog is capped at this value.
net.core.somaxconn = 8192
EOF

write_file "$CONF" "$settings"
need_tool sysctl "apt-get install procps"
run sysctl -p "$CONF"

# Live values, read from /proc so this works without procps.
say "values in the running kernel now:"
while read -r key _; do
    f=/proc/sys/${key//.//}
    if [[ -r $f ]]; then say "  $key = $(tr -s '\t' ' ' <"$f")"; else say "  $key: not available here"; fi
done < <(grep -E '^[a-z]' <<<"$settings")
