# shellcheck shell=bash
# Sourced by every kernel-setup script: one place for the --dry-run plumbing,
# so "dry-run prints every change and changes nothing" holds everywhere.

DRY_RUN=0
SCRIPT=$(basename "$0")

say()  { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die()  { printf '%s: error: %s\n' "$SCRIPT" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

# Every change goes through run/write_file/write_value. In dry-run they print
# the exact command or file content instead of doing it.
run() {
    if ((DRY_RUN)); then
        local q
        q=$(printf '%q ' "$@")
        say "[dry-run] ${q% }"
    else
        "$@"
    fi
}

write_file() { # PATH CONTENT
    if ((DRY_RUN)); then
        say "[dry-run] write $1:"
        printf '%s\n' "$2" | sed 's/^/    | /'
    else
        mkdir -p "$(dirname "$1")"
        printf '%s\n' "$2" >"$1"
        say "wrote $1"
    fi
}

write_value() { # PATH VALUE: for /proc and /sys knobs
    if ((DRY_RUN)); then
        say "[dry-run] echo $2 > $1"
    else
        printf '%s\n' "$2" >"$1"
    fi
}

need_root() {
    ((DRY_RUN)) && return 0
    ((EUID == 0)) || die "must run as root to change the system (try: sudo $0 ...), or add --dry-run to only print the changes"
}

# A missing tool is fatal for a real run, but a dry-run only reports it:
# CI containers have no nvme-cli or rdma tools.
need_tool() { # TOOL INSTALL_HINT
    have "$1" && return 0
    ((DRY_RUN)) || die "$1 not found; install it with: $2"
    warn "$1 not found (install it with: $2); printing the commands anyway"
}

systemd_running() { [[ -d /run/systemd/system ]]; }

# Read-only state display; safe in dry-run too, so it always runs when it can.
show() {
    if have "$1"; then
        say "\$ $*"
        "$@" || warn "$1 failed"
    else
        say "($1 not installed: cannot show '$*')"
    fi
}
