#!/usr/bin/env bash
# Keel's whole test suite, as CI runs it. Installs what the tests need first
# (fio for the side-by-side benchmark test, shellcheck for kernel-setup/).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fio >/dev/null 2>&1 || need+=(fio)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
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
echo "== cargo test"
cargo test --workspace --locked
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
else
    echo "SKIPPED: no guest runner at $guest_dir (set KEEL_GUEST_DIR to ../shared/guest)"
fi
echo "== all tests passed"
