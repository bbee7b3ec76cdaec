#!/usr/bin/env bash
# Raise the locked-memory limit so keeld can register its io_uring buffers.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $SCRIPT [--user NAME] [--dry-run] [--help]

Raise RLIMIT_MEMLOCK to unlimited for keeld:
  - $LIMITS_FILE   (login sessions: keeld or benchmarks run by hand)
  - $DROPIN_FILE   (keeld.service: LimitMEMLOCK=infinity)
Keel registers its buffer pool with io_uring (IORING_REGISTER_BUFFERS); the
kernel pins those pages and charges them to RLIMIT_MEMLOCK unless the process
has CAP_IPC_LOCK (keeld under a dedicated user, or with capabilities dropped,
does not). The usual 8 MiB default is far too small for a buffer pool.

  --user NAME  limit applies to NAME only (default: every user, root included)
  --dry-run    print the files it would write and the commands, change nothing
EOF
}

LIMITS_FILE=/etc/security/limits.d/90-keel-memlock.conf
DROPIN_FILE=/etc/systemd/system/keeld.service.d/memlock.conf
users=('*' root) # the '*' wildcard in limits.conf does not cover root

while (($#)); do
    case $1 in
    --user) users=("${2:?--user needs a name}"); shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
need_root

say "current limit (this shell): ulimit -l soft=$(ulimit -Sl) hard=$(ulimit -Hl) (KiB)"

limits="# Written by keel kernel-setup/memlock.sh: io_uring registered buffers are
# pinned memory charged to RLIMIT_MEMLOCK; keeld's buffer pool needs more than 8 MiB."
for u in "${users[@]}"; do
    limits+=$'\n'"$(printf '%-8s %-5s memlock unlimited' "$u" soft)"
    limits+=$'\n'"$(printf '%-8s %-5s memlock unlimited' "$u" hard)"
done
write_file "$LIMITS_FILE" "$limits"

# systemd services do not go through PAM, so limits.d does not reach them.
write_file "$DROPIN_FILE" "# Written by keel kernel-setup/memlock.sh: registered io_uring buffers are locked memory.
[Service]
LimitMEMLOCK=infinity"

if systemd_running; then
    run systemctl daemon-reload
else
    say "systemd is not running here: skipping systemctl daemon-reload"
fi
say "new limits apply to new login sessions and to keeld.service after: systemctl restart keeld"
