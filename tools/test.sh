#!/usr/bin/env bash
# Keel's whole test suite, as CI runs it. Installs what the tests need first
# (fio for the side-by-side benchmark test, shellcheck for kernel-setup/, and
# the RDMA headers plus libclang for the `rdma` feature's rdma-sys bindings).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
# rustc links through the system's C compiler driver; a bare Debian has none.
command -v cc >/dev/null 2>&1 || need+=(gcc)
# libfuzzer-sys (the fuzz crates, checked below) compiles libFuzzer's C++.
command -v c++ >/dev/null 2>&1 || need+=(g++)
for pkg in libibverbs-dev librdmacm-dev libclang-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "== installing ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo clippy --features rdma -D warnings (the RDMA transport)"
cargo clippy --workspace --all-targets --locked --features rdma -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== the fuzz crates compile (their own workspaces: harnesses and seed generators track the APIs)"
cargo check --manifest-path target/fuzz/Cargo.toml --locked --bins
cargo check --manifest-path replicator/fuzz/Cargo.toml --locked --bins
echo "== cargo test -p keel-replicator --features rdma (RDMA link logic without a device)"
cargo test -p keel-replicator --locked --features rdma --lib rdma::
echo "== kernel-setup: shellcheck and every --dry-run"
kernel-setup/check-all.sh
shellcheck tools/*.sh
echo "== the Linux kernel's NVMe/TCP host against keeld, in qemu (TCG: a few minutes)"
guest_dir=${KEEL_GUEST_DIR:-$PWD/../shared/guest}
if [ "${KEEL_SKIP_GUEST:-0}" = 1 ]; then
    echo "SKIPPED (KEEL_SKIP_GUEST=1)"
elif [ -x "$guest_dir/run.sh" ]; then
    KEEL_GUEST_DIR=$guest_dir GUEST_OUTDIR=$PWD/build/guest-out \
        target/tests/guest/run.sh keeld-kernel-host.sh
    echo "== Keel's RDMA replication transport on soft-RoCE (rxe), in qemu"
    KEEL_GUEST_DIR=$guest_dir GUEST_OUTDIR=$PWD/build/guest-out-rdma \
        target/tests/guest/run.sh rdma-transport.sh
    echo "== three keeld replicating over RDMA on soft-RoCE, in qemu (kill -9, resync, identical copies)"
    KEEL_GUEST_DIR=$guest_dir GUEST_OUTDIR=$PWD/build/guest-out-keeld-rdma \
        target/tests/guest/run.sh keeld-rdma-replication.sh
    echo "== the kernel host's native multipath across three keeld: ANA states, failover under fio, in qemu"
    KEEL_GUEST_DIR=$guest_dir GUEST_OUTDIR=$PWD/build/guest-out-multipath \
        target/tests/guest/run.sh keeld-multipath-failover.sh
else
    echo "SKIPPED: no guest runner at $guest_dir (a checkout without ../shared/guest; set KEEL_GUEST_DIR to where the guest runner is)"
    guest_skipped=1
fi
if [ "${guest_skipped:-0}" = 1 ] || [ "${KEEL_SKIP_GUEST:-0}" = 1 ]; then
    echo "== all tests passed (the qemu guest tests skipped)"
else
    echo "== all tests passed"
fi
