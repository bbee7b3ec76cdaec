//! State every shard of keeld shares: the NVMe-oF [`Target`] (subsystems,
//! controllers, discovery) and where each controller's admin queue lives.
//!
//! It sits behind one mutex that commands take twice (parse, complete);
//! with the handful of cores keeld runs on today it is uncontended (its
//! cost was not profiled on its own). The way past it when it shows up in a profile: a
//! per-shard read-only snapshot of the namespace table for parsing I/O
//! commands, with the controller's liveness in an atomic.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use keel_engine::ShardId;

use crate::controller::{AsyncCompletion, Target, Timestamp};

/// Shared control state.
pub(crate) struct Shared {
    control: Mutex<Control>,
    started: Instant,
}

/// What the mutex guards.
pub(crate) struct Control {
    pub target: Target,
    /// The shard owning each controller's admin queue, where its AER
    /// completions go.
    pub admin_shard: HashMap<u16, ShardId>,
}

impl Shared {
    pub fn new(target: Target) -> Shared {
        Shared {
            control: Mutex::new(Control {
                target,
                admin_shard: HashMap::new(),
            }),
            started: Instant::now(),
        }
    }

    /// Locks the control state. A shard that panicked while holding it left
    /// the target as it was between two commands' steps; keep serving.
    pub fn lock(&self) -> MutexGuard<'_, Control> {
        self.control
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Now, on the controller clock.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_duration(self.started.elapsed())
    }
}

impl Control {
    /// Async completions raised by the last call, each with the shard that
    /// must send it. Ones for a controller whose admin queue is gone are
    /// dropped (nobody can receive them).
    pub fn routed_async(&mut self) -> Vec<(ShardId, AsyncCompletion)> {
        let pending = self.target.take_async_completions();
        pending
            .into_iter()
            .filter_map(|completion| {
                self.admin_shard
                    .get(&completion.cntlid)
                    .map(|&shard| (shard, completion))
            })
            .collect()
    }
}
