#!/usr/bin/env bash
# Install keeld as a systemd service.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
UNIT_DST=/etc/systemd/system/keeld.service
BIN_DST=/usr/local/bin/keeld
CONFIG=/etc/keel/keel.toml

usage() {
    cat <<EOF
Usage: $SCRIPT [--binary PATH] [--now] [--dry-run] [--help]

Copy keeld.service to $UNIT_DST and keeld to $BIN_DST,
create /etc/keel, then systemctl daemon-reload and enable keeld.
  --binary PATH  keeld binary to install (default: the workspace's
                 build/release/keeld, if built; cargo's target-dir is build/)
  --now          also (re)start keeld now
  --dry-run      print what it would copy and the systemctl commands
EOF
}

bin=$REPO/build/release/keeld now=0
while (($#)); do
    case $1 in
    --binary) bin=${2:?--binary needs a path}; shift ;;
    --now) now=1 ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
need_root
if ! systemd_running; then
    ((DRY_RUN)) || die "systemd is not running on this machine"
    warn "systemd is not running here; printing the systemctl commands anyway"
fi

run install -D -m 0644 "$HERE/keeld.service" "$UNIT_DST"
if [[ -x $bin ]]; then
    run install -D -m 0755 "$bin" "$BIN_DST"
else
    warn "no keeld binary at $bin (cargo build --release, or pass --binary); not installing $BIN_DST"
fi
run install -d -m 0755 /etc/keel
[[ -e $CONFIG ]] || warn "$CONFIG does not exist yet: keeld will not start until you write it"

run systemctl daemon-reload
run systemctl enable keeld.service
if ((now)); then run systemctl restart keeld.service; fi
say "logs: journalctl -u keeld -f"
