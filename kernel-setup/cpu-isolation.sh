#!/usr/bin/env bash
# Keep the kernel off keeld's reactor cores: boot parameters (advice) and IRQs (done here).
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: $SCRIPT --cores LIST [--dry-run] [--help]

keeld pins one polling reactor per core; a timer tick, RCU callback or device
interrupt on such a core shows up directly as I/O tail latency.
  1. prints the isolcpus/nohz_full/rcu_nocbs kernel parameters for LIST and the
     grub file to put them in (it does not edit the boot command line),
  2. moves every IRQ off LIST now (/proc/irq/*/smp_affinity_list) and makes
     LIST absent from /proc/irq/default_smp_affinity for new IRQs,
  3. warns if irqbalance is running (it would move IRQs back).

  --cores LIST  the cores keeld's reactors use, e.g. 2-7 or 2-7,10-15
  --dry-run     list each IRQ it would move and the exact writes, change nothing
EOF
}

# "0-3,8" -> "0 1 2 3 8"
expand_cpus() {
    local part c lo hi out=() parts
    IFS=, read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        [[ $part =~ ^([0-9]+)(-([0-9]+))?$ ]] || die "bad CPU list: $1 (want e.g. 2-5,8)"
        lo=$((10#${BASH_REMATCH[1]})) hi=$((10#${BASH_REMATCH[3]:-${BASH_REMATCH[1]}}))
        ((lo <= hi)) || die "bad CPU range: $part"
        for ((c = lo; c <= hi; c++)); do out+=("$c"); done
    done
    echo "${out[*]}"
}

# "0 1 2 3 8" (sorted) -> "0-3,8"
compress_cpus() {
    local list="" lo="" prev="" c
    for c in "$@" END; do
        if [[ $c != END && -n $prev ]] && ((c == prev + 1)); then prev=$c; continue; fi
        if [[ -n $lo ]]; then list+=${list:+,}$lo; ((prev > lo)) && list+=-$prev; fi
        lo=$c prev=$c
    done
    echo "$list"
}

# "0 1 8" -> "00000103": the hex format of /proc/irq/default_smp_affinity,
# 32-bit words separated by commas on machines with more than 32 CPUs.
cpus_to_mask() {
    local -a words=()
    local c i mask="" top=0
    for c in "$@"; do
        words[c / 32]=$((${words[c / 32]:-0} | 1 << (c % 32)))
        ((c / 32 > top)) && top=$((c / 32))
    done
    for ((i = top; i >= 0; i--)); do
        mask+=$(printf '%08x' "${words[i]:-0}")
        ((i)) && mask+=,
    done
    echo "$mask"
}

irqbalance_running() {
    local f comm
    for f in /proc/[0-9]*/comm; do
        { read -r comm <"$f"; } 2>/dev/null || continue
        [[ $comm == irqbalance ]] && return 0
    done
    return 1
}

cores=
while (($#)); do
    case $1 in
    --cores) cores=${2:?--cores needs a CPU list}; shift ;;
    --dry-run) DRY_RUN=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done
[[ -n $cores ]] || { usage >&2; exit 2; }
need_root

# Assign first: set -e does not see a failing $(...) inside <<<.
list=$(expand_cpus "$cores")
read -ra isolated <<<"$list"
list=$(expand_cpus "$(</sys/devices/system/cpu/online)")
read -ra online <<<"$list"
declare -A is_isolated=()
for c in "${isolated[@]}"; do is_isolated[$c]=1; done
for c in "${isolated[@]}"; do
    [[ " ${online[*]} " == *" $c "* ]] || die "CPU $c is not online (online: $(</sys/devices/system/cpu/online))"
done
isolated=() housekeeping=() # both sorted, without duplicates
for c in "${online[@]}"; do
    if [[ -n ${is_isolated[$c]:-} ]]; then isolated+=("$c"); else housekeeping+=("$c"); fi
done
((${#housekeeping[@]})) || die "--cores $cores covers every CPU; leave at least one for the kernel and IRQs"
[[ -n ${is_isolated[0]:-} ]] && warn "CPU 0 always keeps some timers and IRQs; better leave it out of --cores"
cores=$(compress_cpus "${isolated[@]}")
hk=$(compress_cpus "${housekeeping[@]}")

params="isolcpus=managed_irq,domain,$cores nohz_full=$cores rcu_nocbs=$cores"
say "== 1. Boot parameters (advice only; needs a reboot)"
say "  $params"
say "  Debian/Ubuntu: append them to GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, then: update-grub"
for f in /etc/default/grub.d/*.cfg; do
    [[ -e $f ]] && say "    note: $f is read after /etc/default/grub and may override it"
done
say "  RHEL/Fedora:   grubby --update-kernel=ALL --args=\"$params\""
say "  isolated now: '$(cat /sys/devices/system/cpu/isolated 2>/dev/null)'," \
    "nohz_full now: '$(cat /sys/devices/system/cpu/nohz_full 2>/dev/null)'"
say "  and set keeld's cores in keel.toml to $cores; leave $hk for the kernel."

say "== 2. IRQ affinity (now; resets at reboot, so rerun after boot)"
if irqbalance_running; then
    warn "irqbalance is running and will move IRQs back onto $cores. Stop it
  (systemctl disable --now irqbalance), or ban the cores with
  IRQBALANCE_BANNED_CPULIST=$cores in /etc/default/irqbalance and restart it.
  Once booted with isolcpus/nohz_full, irqbalance avoids those cores by itself."
fi

# IRQ names from /proc/interrupts ("  34:  140  0  PCI-MSIX  1-edge  virtio4-input").
declare -A irq_name=()
while read -r irq rest; do irq_name[${irq%:}]=${rest##* }; done </proc/interrupts

moved=0 refused=0
for dir in /proc/irq/[0-9]*; do
    irq=${dir##*/} f=$dir/smp_affinity_list
    cur=$(cat "$f" 2>/dev/null) || continue
    list=$(expand_cpus "$cur")
    read -ra cpus <<<"$list"
    keep=()
    for c in "${cpus[@]}"; do [[ -n ${is_isolated[$c]:-} ]] || keep+=("$c"); done
    ((${#keep[@]} < ${#cpus[@]})) || continue # not on an isolated core
    new=$hk
    ((${#keep[@]})) && new=$(compress_cpus "${keep[@]}")
    say "IRQ $irq (${irq_name[$irq]:-?}): $cur -> $new"
    if write_value "$f" "$new" 2>/dev/null; then
        moved=$((moved + 1))
    else # managed IRQs (e.g. NVMe queues) are pinned by the kernel
        warn "IRQ $irq: the kernel refused; isolcpus=managed_irq keeps managed IRQs off at boot"
        refused=$((refused + 1))
    fi
done
if ((DRY_RUN)); then say "IRQs to move off $cores: $moved"; else say "IRQs moved off $cores: $moved, refused by the kernel: $refused"; fi
write_value /proc/irq/default_smp_affinity "$(cpus_to_mask "${housekeeping[@]}")"
