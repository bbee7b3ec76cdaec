//! CPU topology and pinning.

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

/// CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

/// CPUs the kernel keeps other tasks off (`isolcpus=`), from
/// `/sys/devices/system/cpu/isolated`; empty when none or unreadable.
pub fn isolated_cpus() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/isolated")
        .map(|text| parse_cpu_list(&text))
        .unwrap_or_default()
}

/// Parses the kernel's CPU list format ("0-3,8,10-11"); malformed parts
/// are skipped, and a range is capped at 4096 CPUs.
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.trim().parse(), part.trim().parse()),
        };
        if let (Ok(first), Ok(last)) = (first, last) {
            if first <= last && last - first < 4096 {
                cpus.extend(first..=last);
            }
        }
    }
    cpus
}

/// CPU time this thread has used so far.
pub fn thread_cpu_time() -> std::time::Duration {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    std::time::Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_like_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("\n"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("5"), vec![5]);
        assert_eq!(parse_cpu_list("x,3-1,2-a,7"), vec![7]);
        assert_eq!(parse_cpu_list("0-999999999").len(), 0);
    }

    #[test]
    fn pinning_to_an_allowed_cpu_works() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap();
        std::thread::spawn(move || pin_current_thread(last).unwrap())
            .join()
            .unwrap();
    }

    #[test]
    fn thread_cpu_time_advances_while_spinning() {
        let before = thread_cpu_time();
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        assert!(thread_cpu_time() > before);
    }
}
