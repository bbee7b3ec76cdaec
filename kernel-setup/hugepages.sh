#!/usr/bin/env bash
# Reserve 2 MiB hugepages for keeld's buffer pool.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NR=/proc/sys/vm/nr_hugepages
PERSIST=/etc/sysctl.d/90-keel-hugepages.conf

usage() {
    cat <<EOF
Usage: $SCRIPT [--pages N | --size SIZE] [--dry-run] [--help]

Reserve 2 MiB hugepages now ($NR) and at every boot ($PERSIST),
then report how many the kernel actually granted. Without --pages/--size it
only reports. Keel backs its registered, DMA-able buffer pool with hugepages:
fewer pages to pin and far fewer TLB misses on the data path.

  --pages N    reserve N pages of 2 MiB
  --size SIZE  reserve at least SIZE, e.g. 512M, 2G, 1T (rounded up to 2 MiB)
  --dry-run    print the commands and file it would write, change nothing
EOF
}

report() {
    say "2 MiB hugepages reserved now: $(<"$NR")"
    grep -E '^HugePages_(Total|Free)' /proc/meminfo | sed 's/^/  /'
    # Pages are spread over NUMA nodes; keeld's cores want theirs local.
    local n f
    for n in /sys/devices/system/node/node[0-9]*; do
        f=$n/hugepages/hugepages-2048kB/nr_hugepages
        if [[ -r $f ]]; then say "  ${n##*/}: $(<"$f")"; fi
    done
}

pages=
while (($#)); do
    case $1 in
    --pages) pages=${2:?--pages needs a number}; shift
        [[ $pages =~ ^[0-9]+$ ]] || die "--pages wants a number, got: $pages" ;;
    --size) size=${2:?--size needs a size}; shift
        [[ $size =~ ^([0-9]+)([KMGT]?)i?B?$ ]] || die "--size wants e.g. 512M or 2G, got: $size"
        case ${BASH_REMATCH[2]} in K) sh=10 ;; M) sh=20 ;; G) sh=30 ;; T) sh=40 ;; *) sh=0 ;; esac
        bytes=$(( 10#${BASH_REMATCH[1]} << sh ))
        pages=$(( (bytes + (2 << 20) - 1) / (2 << 20) )) ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done

[[ -r $NR ]] || die "$NR not found: kernel without hugetlbfs support?"
# nr_hugepages counts pages of the *default* size; we promise 2 MiB pages.
grep -q '^Hugepagesize: *2048 kB' /proc/meminfo ||
    die "default hugepage size is not 2 MiB ($(grep Hugepagesize /proc/meminfo)); remove hugepagesz=/default_hugepagesz= from the kernel command line"

if [[ -z $pages ]]; then
    report
    exit 0
fi
need_root

say "requesting $pages hugepages of 2 MiB ($((pages * 2)) MiB)"
write_value "$NR" "$pages"
write_file "$PERSIST" "# Written by keel kernel-setup/hugepages.sh: 2 MiB pages for keeld's buffer pool.
vm.nr_hugepages = $pages"

if ((DRY_RUN)); then
    report
    exit 0
fi
granted=$(<"$NR")
report
if ((granted < pages)); then
    warn "kernel granted only $granted of $pages pages: free memory is too fragmented.
  Retry after: echo 1 > /proc/sys/vm/compact_memory
  or reserve at boot with the kernel parameter hugepages=$pages"
    exit 1
fi
