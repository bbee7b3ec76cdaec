//! One line of live progress per second, on a terminal only.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counters the shards bump and the progress line reads.
#[derive(Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
}

pub struct Progress {
    counters: Vec<Arc<Counters>>,
    enabled: bool,
    started: Instant,
    last: (Instant, u64, u64),
}

impl Progress {
    pub fn new(counters: Vec<Arc<Counters>>, quiet: bool) -> Progress {
        let now = Instant::now();
        Progress {
            counters,
            enabled: !quiet && std::io::stderr().is_terminal(),
            started: now,
            last: (now, 0, 0),
        }
    }

    fn totals(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(o, b), c| {
            (
                o + c.ops.load(Ordering::Relaxed),
                b + c.bytes.load(Ordering::Relaxed),
            )
        })
    }

    /// Redraws the line if a second has passed since the last one.
    pub fn maybe_redraw(&mut self) {
        let now = Instant::now();
        if !self.enabled || now.duration_since(self.last.0) < Duration::from_secs(1) {
            return;
        }
        let (ops, bytes) = self.totals();
        let dt = now.duration_since(self.last.0).as_secs_f64();
        let iops = (ops - self.last.1) as f64 / dt;
        let mib = (bytes - self.last.2) as f64 / dt / (1 << 20) as f64;
        let _ = write!(
            std::io::stderr(),
            "\r[{:>4.0}s] {:>10.0} IOPS {:>9.1} MiB/s   ",
            now.duration_since(self.started).as_secs_f64(),
            iops,
            mib
        );
        self.last = (now, ops, bytes);
    }

    pub fn finish(&self) {
        if self.enabled {
            let _ = write!(std::io::stderr(), "\r{:60}\r", "");
        }
    }
}
