//! One io_uring per shard, set up with the latency flags the running kernel
//! accepts.
//!
//! Flags are tried from most to least demanding and the first set the kernel
//! takes wins; which one that was is recorded in [`RingFeatures`] and logged,
//! so a benchmark result can always be tied to the ring that produced it.

use std::io;
use std::os::fd::RawFd;

use io_uring::{cqueue, squeue, IoUring};

/// How a shard's ring should be set up.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// Submission queue entries (a power of two; the kernel rounds up).
    pub entries: u32,
    /// Use a kernel SQ polling thread with this idle time in milliseconds.
    /// It costs a core per ring and excludes DEFER_TASKRUN, so it is opt-in.
    pub sqpoll_idle_ms: Option<u32>,
    /// Set the ring up with IORING_SETUP_IOPOLL. Only valid for a ring that
    /// carries nothing but O_DIRECT reads and writes to block devices with
    /// polled queues (`/sys/block/*/queue/io_poll`).
    pub iopoll: bool,
    /// How completion task work runs (when not SQPOLL).
    pub task_run: TaskRun,
}

/// When the kernel runs a ring's completion task work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskRun {
    /// DEFER_TASKRUN, falling back to COOP_TASKRUN: only when the shard
    /// enters the kernel to reap — nothing interrupts its poll loop. Best
    /// latency when the shard runs where its completions arrive.
    #[default]
    Deferred,
    /// COOP_TASKRUN: at the next kernel entry or return, no IPI.
    Cooperative,
    /// Neither: task work runs as soon as the kernel can (an IPI to the
    /// shard's CPU when the completion came in elsewhere). Measured faster
    /// at QD 32 on a VM whose single virtio queue interrupts another CPU
    /// (docs/benchmarks.md).
    Immediate,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 256,
            sqpoll_idle_ms: None,
            iopoll: false,
            task_run: TaskRun::Deferred,
        }
    }
}

/// The setup flags a ring actually got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingFeatures {
    pub single_issuer: bool,
    pub defer_taskrun: bool,
    pub coop_taskrun: bool,
    pub taskrun_flag: bool,
    pub sqpoll: bool,
    pub iopoll: bool,
}

impl std::fmt::Display for RingFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (self.single_issuer, "SINGLE_ISSUER"),
            (self.defer_taskrun, "DEFER_TASKRUN"),
            (self.coop_taskrun, "COOP_TASKRUN"),
            (self.taskrun_flag, "TASKRUN_FLAG"),
            (self.sqpoll, "SQPOLL"),
            (self.iopoll, "IOPOLL"),
        ];
        let taken: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if taken.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&taken.join("|"))
        }
    }
}

/// A shard's io_uring and the features it was set up with.
pub struct Ring {
    ring: IoUring,
    features: RingFeatures,
}

impl Ring {
    /// Builds a ring, falling back through flag sets the kernel may refuse.
    pub fn new(config: &RingConfig) -> io::Result<Ring> {
        let mut last_err = None;
        for candidate in candidates(config) {
            let mut builder = IoUring::builder();
            if candidate.single_issuer {
                builder.setup_single_issuer();
            }
            if candidate.defer_taskrun {
                builder.setup_defer_taskrun();
            }
            if candidate.coop_taskrun {
                builder.setup_coop_taskrun();
            }
            if candidate.taskrun_flag {
                builder.setup_taskrun_flag();
            }
            if let (true, Some(idle)) = (candidate.sqpoll, config.sqpoll_idle_ms) {
                builder.setup_sqpoll(idle);
            }
            if candidate.iopoll {
                builder.setup_iopoll();
            }
            // Completions can outrun the SQ when many ops finish at once.
            builder.setup_cqsize(config.entries.saturating_mul(4));
            match builder.build(config.entries) {
                Ok(ring) => {
                    tracing::debug!(flags = %candidate, entries = config.entries, "io_uring ready");
                    return Ok(Ring {
                        ring,
                        features: candidate,
                    });
                }
                Err(err) => {
                    tracing::debug!(flags = %candidate, %err, "io_uring setup refused, falling back");
                    last_err = Some(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("no io_uring flag set to try")))
    }

    pub fn features(&self) -> RingFeatures {
        self.features
    }

    /// Queues one entry. Returns the entry back when the SQ is full so the
    /// caller can submit and retry.
    ///
    /// # Safety
    /// Every buffer, file descriptor and pointer the entry refers to must stay
    /// valid until its completion has been reaped.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> Result<(), squeue::PushError> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.ring.submission().push(entry) }
    }

    /// Entries queued but not yet handed to the kernel.
    pub fn pending_submissions(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// Hands queued entries to the kernel without waiting, entering the kernel
    /// only when there is something to submit or deferred completion work the
    /// kernel has flagged for us.
    pub fn submit_nowait(&mut self) -> io::Result<usize> {
        let pending = self.ring.submission().len();
        let needs_taskrun = self.features.taskrun_flag && self.ring.submission().taskrun();
        let needs_enter = pending > 0 || needs_taskrun || self.features.iopoll;
        if !needs_enter && !self.ring.submission().cq_overflow() {
            return Ok(0);
        }
        retry_on_busy(|| self.ring.submitter().submit_and_wait(0))
    }

    /// Submits and sleeps until at least one completion is ready or the
    /// timeout passes.
    pub fn submit_and_wait(&mut self, timeout: Option<std::time::Duration>) -> io::Result<usize> {
        match timeout {
            None => retry_on_busy(|| self.ring.submitter().submit_and_wait(1)),
            Some(t) => {
                let ts = io_uring::types::Timespec::from(t);
                let args = io_uring::types::SubmitArgs::new().timespec(&ts);
                match self.ring.submitter().submit_with_args(1, &args) {
                    Ok(n) => Ok(n),
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => Ok(0),
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => Ok(0),
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(0),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Takes every completion currently in the CQ.
    pub fn drain_completions(&mut self, mut each: impl FnMut(cqueue::Entry)) -> usize {
        let mut n = 0;
        for cqe in self.ring.completion() {
            each(cqe);
            n += 1;
        }
        n
    }

    /// Lets the kernel's async workers for this ring (io-wq: fsync,
    /// fallocate, and any read or write the file cannot do without blocking)
    /// run only on `cpus`. They inherit the creating thread's affinity, so a
    /// shard pinned to one CPU would otherwise time-share that CPU with its
    /// own workers, which shows as millisecond latency outliers.
    pub fn set_worker_cpus(&mut self, cpus: &[usize]) -> io::Result<()> {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let capacity = 8 * std::mem::size_of::<libc::cpu_set_t>();
        for &cpu in cpus.iter().filter(|&&c| c < capacity) {
            // SAFETY: CPU_SET writes one bit inside `set`; `cpu` is below the
            // set's capacity (checked above).
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        self.ring.submitter().register_iowq_aff(&set)
    }

    /// Registers `fds` as a sparse fixed-file table of `slots` entries.
    pub fn register_file_table(&mut self, slots: u32) -> io::Result<()> {
        self.ring.submitter().register_files_sparse(slots)
    }

    /// Puts `fd` in fixed-file slot `slot`.
    pub fn set_fixed_file(&mut self, slot: u32, fd: RawFd) -> io::Result<()> {
        self.ring
            .submitter()
            .register_files_update(slot, &[fd])
            .map(|_| ())
    }

    /// Registers buffers for READ_FIXED/WRITE_FIXED.
    ///
    /// # Safety
    /// The memory the iovecs describe must stay mapped for as long as the ring
    /// exists (the kernel pins the pages, but the addresses must stay ours).
    pub unsafe fn register_buffers(&mut self, iovecs: &[libc::iovec]) -> io::Result<()> {
        // SAFETY: forwarded from this function's contract.
        unsafe { self.ring.submitter().register_buffers(iovecs) }
    }
}

/// EINTR and EBUSY on submit mean "try again after reaping", not failure.
fn retry_on_busy(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    match f() {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(0),
        other => other,
    }
}

/// Flag sets to try, best first.
fn candidates(config: &RingConfig) -> Vec<RingFeatures> {
    let sqpoll = config.sqpoll_idle_ms.is_some();
    let iopoll = config.iopoll;
    let mut list = Vec::new();
    if !sqpoll {
        // DEFER_TASKRUN runs completion work only when we enter the kernel to
        // reap: no IPIs and no task-work interrupting the poll loop.
        if config.task_run == TaskRun::Deferred {
            list.push(RingFeatures {
                single_issuer: true,
                defer_taskrun: true,
                taskrun_flag: true,
                iopoll,
                ..Default::default()
            });
        }
        if config.task_run != TaskRun::Immediate {
            list.push(RingFeatures {
                single_issuer: true,
                coop_taskrun: true,
                taskrun_flag: true,
                iopoll,
                ..Default::default()
            });
        } else {
            list.push(RingFeatures {
                single_issuer: true,
                iopoll,
                ..Default::default()
            });
        }
    } else {
        list.push(RingFeatures {
            single_issuer: true,
            sqpoll: true,
            iopoll,
            ..Default::default()
        });
        list.push(RingFeatures {
            sqpoll: true,
            iopoll,
            ..Default::default()
        });
    }
    list.push(RingFeatures {
        iopoll,
        ..Default::default()
    });
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn ring_takes_the_best_flags_this_kernel_offers() {
        let ring = Ring::new(&RingConfig::default()).expect("io_uring available");
        let f = ring.features();
        // Linux >= 6.1 accepts DEFER_TASKRUN; older kernels must still get a ring.
        assert!(!f.sqpoll && !f.iopoll);
        assert!(f.to_string().len() > 2);
    }

    #[test]
    fn each_task_run_mode_gets_its_flags() {
        let ring = |task_run| {
            Ring::new(&RingConfig {
                task_run,
                ..RingConfig::default()
            })
            .unwrap()
            .features()
        };
        let deferred = ring(TaskRun::Deferred);
        let cooperative = ring(TaskRun::Cooperative);
        let immediate = ring(TaskRun::Immediate);
        // Whatever the kernel, a mode never gets a stronger flag than asked.
        assert!(!cooperative.defer_taskrun);
        assert!(!immediate.defer_taskrun && !immediate.coop_taskrun);
        // On 6.1+ (every machine we run on) each gets exactly its own.
        if deferred.defer_taskrun {
            assert!(cooperative.coop_taskrun);
            assert!(immediate.single_issuer);
        }
    }

    #[test]
    fn nop_round_trips_user_data() {
        let mut ring = Ring::new(&RingConfig::default()).unwrap();
        for i in 0..8u64 {
            let nop = opcode::Nop::new().build().user_data(100 + i);
            // SAFETY: NOP refers to no memory.
            unsafe { ring.push(&nop).unwrap() };
        }
        assert_eq!(ring.pending_submissions(), 8);
        let mut seen = Vec::new();
        while seen.len() < 8 {
            ring.submit_and_wait(None).unwrap();
            ring.drain_completions(|c| {
                assert_eq!(c.result(), 0);
                seen.push(c.user_data());
            });
        }
        seen.sort_unstable();
        assert_eq!(seen, (100..108).collect::<Vec<_>>());
    }

    #[test]
    fn wait_with_timeout_returns_when_nothing_completes() {
        let mut ring = Ring::new(&RingConfig::default()).unwrap();
        let start = std::time::Instant::now();
        ring.submit_and_wait(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        assert!(start.elapsed() >= std::time::Duration::from_millis(15));
        assert_eq!(ring.drain_completions(|_| {}), 0);
    }

    #[test]
    fn full_submission_queue_hands_the_entry_back() {
        let mut ring = Ring::new(&RingConfig {
            entries: 4,
            ..Default::default()
        })
        .unwrap();
        let nop = opcode::Nop::new().build();
        let mut pushed = 0;
        // SAFETY: NOP refers to no memory.
        while unsafe { ring.push(&nop) }.is_ok() {
            pushed += 1;
            assert!(pushed <= 64, "SQ never filled");
        }
        assert_eq!(pushed, 4);
    }
}
