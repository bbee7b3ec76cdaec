#!/bin/sh
# Builds keel-bench and keeld (release) and runs a guest payload from this
# folder under ../shared/guest/run.sh (qemu, the Debian kernel's nvme-tcp/nvmet).
# Both programs go into the guest as /extra/keel-bench and /extra/keeld.
# Usage: target/tests/guest/run.sh PAYLOAD.sh
#   e.g. initiator-vs-kernel-nvmet.sh (our initiator vs the kernel's target)
#        keeld-kernel-host.sh         (the kernel's host vs our keeld)
#        rdma-transport.sh            (the RDMA link on soft-RoCE; builds
#                                      examples/rdma_frames instead)
#        keeld-rdma-replication.sh    (three keeld replicating over RDMA;
#                                      builds keeld with --features rdma)
#        keeld-multipath-failover.sh  (the kernel host's native multipath
#                                      across three keeld; also keelctl)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
guest=${KEEL_GUEST_DIR:-$repo/../shared/guest}
payload=${1:?usage: run.sh PAYLOAD.sh}
[ -f "$here/$payload" ] || { echo "no payload $here/$payload" >&2; exit 2; }
[ -x "$guest/run.sh" ] || { echo "no guest runner at $guest (set KEEL_GUEST_DIR)" >&2; exit 2; }
"$guest/setup.sh" >/dev/null
case $payload in
keeld-multipath-*)
    # keeld, and keelctl to promote a replica.
    (cd "$repo" && cargo build --release -p keel-target --bin keeld -p keelctl --bin keelctl)
    exec "$guest/run.sh" "$here/$payload" "$here/keel-nodes.sh" "$repo/build/release/keeld" \
        "$repo/build/release/keelctl"
    ;;
keeld-rdma-*)
    # keeld with replication over RDMA (cargo feature `rdma`).
    (cd "$repo" && cargo build --release -p keel-target --features rdma --bin keeld)
    exec "$guest/run.sh" "$here/$payload" "$here/keel-nodes.sh" "$repo/build/release/keeld"
    ;;
rdma-*)
    # The RDMA transport's own check: one example binary, built with the
    # `rdma` feature (needs libibverbs-dev, librdmacm-dev, libclang-dev).
    (cd "$repo" && cargo build --release -p keel-replicator --features rdma --example rdma_frames)
    exec "$guest/run.sh" "$here/$payload" "$repo/build/release/examples/rdma_frames"
    ;;
esac
# --bin selects targets across every -p given, so keel-bench needs its own --bin.
(cd "$repo" && cargo build --release -p keel-target --bin keeld -p keel-bench --bin keel-bench)
exec "$guest/run.sh" "$here/$payload" "$here/keel-nodes.sh" "$repo/build/release/keel-bench" \
    "$repo/build/release/keeld"
