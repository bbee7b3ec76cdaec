#!/bin/sh
# Builds keel-bench/keeld (release) and runs a guest payload from this folder
# under ../shared/guest/run.sh (qemu, the Debian kernel's nvme-tcp/nvmet).
# Usage: target/tests/guest/run.sh PAYLOAD.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
guest=${KEEL_GUEST_DIR:-$repo/../shared/guest}
payload=${1:?usage: run.sh PAYLOAD.sh}
[ -x "$guest/run.sh" ] || { echo "no guest runner at $guest (set KEEL_GUEST_DIR)" >&2; exit 2; }
"$guest/setup.sh" >/dev/null
(cd "$repo" && cargo build --release -p keel-bench)
exec "$guest/run.sh" "$here/$payload" "$repo/build/release/keel-bench"
