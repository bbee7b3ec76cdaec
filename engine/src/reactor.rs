//! The per-core loop and the engine that starts one per configured CPU.
//!
//! Each loop iteration: take mail, reap completions, fire due timers, let the
//! handler poll, hand new entries to the kernel. While anything happens the
//! core keeps polling; after `spin` with nothing to do (I/O in flight or not)
//! it sleeps in the kernel on its ring (woken by a completion, a timer or a
//! message), so an idle target costs next to no CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::mesh::{Mailbox, MeshShared, Origin, ShardId};
use crate::shard::{Completion, Shard, ShardStats};
use crate::sys::cpu;
use crate::sys::dma::{BufferPool, PoolConfig};
use crate::sys::ring::{Ring, RingConfig, RingFeatures};

/// What runs on a shard. All calls come from the shard's own thread.
pub trait Handler<M> {
    /// An operation this handler submitted finished.
    fn on_completion(&mut self, shard: &mut Shard<M>, done: Completion);

    /// A message from another shard or from outside the engine.
    fn on_message(&mut self, _shard: &mut Shard<M>, _from: Origin, _msg: M) {}

    /// A timer added with [`Shard::add_timer`] is due.
    fn on_timer(&mut self, _shard: &mut Shard<M>, _tag: u64) {}

    /// Called once per loop iteration; return true if it did any work (which
    /// keeps the core polling). A handler holding messages that a full queue
    /// refused must return true until they are sent: room in a queue wakes
    /// nobody, so a sleeping shard would hold them forever.
    fn poll(&mut self, _shard: &mut Shard<M>) -> bool {
        false
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// CPUs to run one shard each on. Empty: the first `shards` allowed CPUs.
    pub cpus: Vec<usize>,
    /// Number of shards when `cpus` is empty.
    pub shards: usize,
    /// Pin each shard's thread to its CPU.
    pub pin: bool,
    pub ring: RingConfig,
    pub pool: PoolConfig,
    /// Keep polling this long after the last piece of work before sleeping.
    pub spin: Duration,
    /// Capacity of each cross-core queue.
    pub mesh_capacity: usize,
    /// Most operations one shard may have in flight.
    pub max_inflight: usize,
    /// Slots in each ring's fixed-file table.
    pub fixed_files: u32,
    /// Where pinned shards' io_uring workers run.
    pub io_workers: IoWorkers,
}

/// Where the kernel's async workers (io-wq) of pinned shards run. They
/// carry fsync, fallocate and any read or write a file cannot do without
/// blocking (a tmpfs file: all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoWorkers {
    /// On the allowed CPUs no shard polls. Measured on a tmpfs file, 4 KiB
    /// randread at QD 32 (docs/benchmarks.md): 593k IOPS against 218k with
    /// `ShardCpu` (2.7x), p99 114 us instead of 1.1 ms, as the shard no
    /// longer time-shares its CPU with them. Costs an idle CPU's
    /// wake-up per punted I/O (QD 1 p50 8-24 us instead of ~6 us on a VM).
    #[default]
    OtherCpus,
    /// Inherit the shard's own pinning (the kernel's default).
    ShardCpu,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cpus: Vec::new(),
            shards: 1,
            pin: true,
            ring: RingConfig::default(),
            pool: PoolConfig::default(),
            spin: Duration::from_micros(200),
            mesh_capacity: 1024,
            max_inflight: 1024,
            fixed_files: 64,
            io_workers: IoWorkers::OtherCpus,
        }
    }
}

/// How a shard ran, reported when it stops.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub shard: ShardId,
    pub cpu: Option<usize>,
    pub ring: RingFeatures,
    pub hugepages: bool,
    pub stats: ShardStats,
    /// Thread CPU time over the shard's life.
    pub cpu_time: Duration,
    pub wall_time: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("shard {shard} could not start: {source}")]
    Start {
        shard: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {shard} failed: {source}")]
    Run {
        shard: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {0} panicked")]
    Panicked(usize),
    #[error("invalid engine configuration: {0}")]
    Config(String),
}

/// A running set of shards.
pub struct Engine<M> {
    mesh: Arc<MeshShared<M>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<ShardReport, EngineError>>>,
}

impl<M: Send + 'static> Engine<M> {
    /// Starts one shard per CPU. `make_handler` runs on each shard's thread
    /// (after pinning, so what it allocates is local to that core). Returns
    /// once every shard has its ring and buffers, or the first failure.
    pub fn start<H, F>(config: EngineConfig, make_handler: F) -> Result<Engine<M>, EngineError>
    where
        H: Handler<M> + 'static,
        F: Fn(&mut Shard<M>) -> std::io::Result<H> + Send + Sync + 'static,
    {
        let allowed = cpu::allowed_cpus();
        let cpus: Vec<Option<usize>> = if config.cpus.is_empty() {
            (0..config.shards.max(1))
                .map(|i| config.pin.then(|| allowed[i % allowed.len()]))
                .collect()
        } else {
            config
                .cpus
                .iter()
                .map(|&c| config.pin.then_some(c))
                .collect()
        };
        let worker_cpus = Arc::new(match config.io_workers {
            IoWorkers::OtherCpus => worker_cpus(&allowed, &cpus),
            IoWorkers::ShardCpu => Vec::new(),
        });
        let mesh =
            MeshShared::new(cpus.len(), config.mesh_capacity).map_err(|e| EngineError::Start {
                shard: 0,
                source: e,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let make_handler = Arc::new(make_handler);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(cpus.len());
        for (index, cpu) in cpus.iter().copied().enumerate() {
            let mailbox = Mailbox::new(ShardId(index), mesh.clone());
            let config = config.clone();
            let stop = stop.clone();
            let make_handler = make_handler.clone();
            let ready_tx = ready_tx.clone();
            let worker_cpus = worker_cpus.clone();
            let thread = std::thread::Builder::new()
                .name(format!("keel-shard{index}"))
                .spawn(move || {
                    let started = Instant::now();
                    let setup = setup_shard(index, cpu, &worker_cpus, &config, mailbox)
                        .and_then(|mut shard| make_handler(&mut shard).map(|h| (shard, h)));
                    let (mut shard, mut handler) = match setup {
                        Ok(ok) => {
                            let _ = ready_tx.send(Ok(()));
                            ok
                        }
                        Err(e) => {
                            let msg = e.to_string();
                            let _ = ready_tx.send(Err(msg));
                            return Err(EngineError::Start {
                                shard: index,
                                source: e,
                            });
                        }
                    };
                    run(&mut shard, &mut handler, config.spin, &stop).map_err(|e| {
                        EngineError::Run {
                            shard: index,
                            source: e,
                        }
                    })?;
                    Ok(ShardReport {
                        shard: ShardId(index),
                        cpu,
                        ring: shard.ring_features(),
                        hugepages: shard.pool().uses_hugepages(),
                        stats: shard.stats(),
                        cpu_time: cpu::thread_cpu_time(),
                        wall_time: started.elapsed(),
                    })
                })
                .map_err(|e| EngineError::Start {
                    shard: index,
                    source: e,
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let engine = Engine {
            mesh,
            stop,
            threads,
        };
        for _ in 0..engine.threads.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    // Collect the real error from the failed thread.
                    engine.stop.store(true, Ordering::SeqCst);
                    engine.mesh.wake_all();
                    let results = engine.join_all();
                    return Err(results
                        .into_iter()
                        .find_map(|r| r.err())
                        .unwrap_or(EngineError::Config("a shard failed to start".into())));
                }
            }
        }
        Ok(engine)
    }

    pub fn shards(&self) -> usize {
        self.mesh.shards()
    }

    /// Sends from outside the engine (control plane). Gives the message back
    /// when the shard's external queue is full.
    pub fn send(&self, shard: ShardId, msg: M) -> Result<(), M> {
        self.mesh.send_external(shard, msg)
    }

    /// A handle other threads can keep to send messages to the shards
    /// (through the same external queues as [`Engine::send`]).
    pub fn sender(&self) -> EngineSender<M> {
        EngineSender {
            mesh: self.mesh.clone(),
        }
    }

    /// Asks every shard to stop and waits for them. Each cancels what it has
    /// in flight (handlers see `ECANCELED` completions), lets disk I/O
    /// finish, then exits.
    pub fn stop(self) -> Result<Vec<ShardReport>, EngineError> {
        self.stop.store(true, Ordering::SeqCst);
        self.mesh.wake_all();
        self.join()
    }

    /// Waits for every shard to stop on its own (handlers call
    /// [`Shard::stop`]).
    pub fn join(self) -> Result<Vec<ShardReport>, EngineError> {
        self.join_all().into_iter().collect()
    }

    fn join_all(self) -> Vec<Result<ShardReport, EngineError>> {
        self.threads
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.join().unwrap_or(Err(EngineError::Panicked(i))))
            .collect()
    }
}

/// A cloneable handle for sending messages to the shards from any thread.
pub struct EngineSender<M> {
    mesh: Arc<MeshShared<M>>,
}

impl<M> Clone for EngineSender<M> {
    fn clone(&self) -> Self {
        EngineSender {
            mesh: self.mesh.clone(),
        }
    }
}

impl<M: Send + 'static> EngineSender<M> {
    /// Queues `msg` for `shard` and wakes it; gives it back when the queue
    /// is full (or the shard does not exist).
    pub fn send(&self, shard: ShardId, msg: M) -> Result<(), M> {
        self.mesh.send_external(shard, msg)
    }
}

/// Where the kernel's async workers (io-wq) of pinned shards may run: the
/// allowed CPUs no shard polls, or every allowed CPU when shards cover them
/// all (spread out, they still do better than all on one shard's CPU).
/// Empty when no shard is pinned: workers then inherit the thread's mask.
fn worker_cpus(allowed: &[usize], shard_cpus: &[Option<usize>]) -> Vec<usize> {
    if shard_cpus.iter().all(Option::is_none) {
        return Vec::new();
    }
    let free: Vec<usize> = allowed
        .iter()
        .copied()
        .filter(|c| !shard_cpus.contains(&Some(*c)))
        .collect();
    if free.is_empty() {
        allowed.to_vec()
    } else {
        free
    }
}

fn setup_shard<M>(
    index: usize,
    cpu: Option<usize>,
    worker_cpus: &[usize],
    config: &EngineConfig,
    mailbox: Mailbox<M>,
) -> std::io::Result<Shard<M>> {
    if let Some(cpu) = cpu {
        if let Err(err) = cpu::pin_current_thread(cpu) {
            tracing::warn!(shard = index, cpu, %err, "could not pin shard thread; running unpinned");
        }
        // Another task on a polling shard's CPU shows up as latency
        // outliers of a scheduler tick or two (docs/benchmarks.md).
        if !cpu::isolated_cpus().contains(&cpu) {
            tracing::info!(
                shard = index,
                cpu,
                "CPU not isolated (isolcpus): other tasks may share it; see kernel-setup/cpu-isolation.sh"
            );
        }
    }
    let mut ring = Ring::new(&config.ring)?;
    if !worker_cpus.is_empty() {
        if let Err(err) = ring.set_worker_cpus(worker_cpus) {
            tracing::warn!(shard = index, %err, "could not set the io_uring workers' CPUs; they share the shard's");
        }
    }
    let pool = BufferPool::new(&config.pool)?;
    tracing::info!(
        shard = index,
        ?cpu,
        ring = %ring.features(),
        ?worker_cpus,
        buffers = pool.capacity(),
        buffer_bytes = pool.slot_size(),
        hugepages = pool.uses_hugepages(),
        "shard ready"
    );
    Shard::new(
        ShardId(index),
        ring,
        pool,
        mailbox,
        config.max_inflight,
        config.fixed_files,
    )
}

/// Messages taken per loop iteration, so completions are never starved.
const MAIL_PER_LOOP: usize = 256;

fn run<M, H: Handler<M>>(
    shard: &mut Shard<M>,
    handler: &mut H,
    spin: Duration,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut completions: Vec<Completion> = Vec::with_capacity(1024);
    let mut mail: Vec<(Origin, M)> = Vec::with_capacity(MAIL_PER_LOOP);
    let mut last_work = Instant::now();
    let mut cancelled = false;
    loop {
        shard.now = Instant::now();
        shard.stats.loops += 1;
        let mut worked = false;

        if shard.drain_mail(MAIL_PER_LOOP, &mut mail) > 0 {
            worked = true;
            for (from, msg) in mail.drain(..) {
                handler.on_message(shard, from, msg);
            }
        }

        if shard.reap(&mut completions) > 0 {
            worked = true;
            for done in completions.drain(..) {
                handler.on_completion(shard, done);
            }
        }

        while let Some(tag) = shard.timers.pop_due(shard.now) {
            worked = true;
            handler.on_timer(shard, tag);
        }

        worked |= handler.poll(shard);
        shard.ring.submit_nowait()?;

        if stop.load(Ordering::Relaxed) {
            shard.stop_requested = true;
        }
        if shard.stop_requested {
            if shard.in_flight() == 0 {
                return Ok(());
            }
            // Sockets may wait forever for data that never comes: cancel
            // them so the in-flight table can drain.
            if !cancelled {
                cancelled = true;
                shard.cancel_all();
            }
        }

        // Polling for `spin` after the last event covers a fast device's
        // completion without a sleep and a wake-up; a slow one (or a socket
        // waiting for its peer) is waited for in the kernel, where a
        // completion wakes us.
        if worked || shard.has_ready() {
            last_work = shard.now;
        } else if shard.now.duration_since(last_work) >= spin {
            sleep(shard)?;
            last_work = Instant::now();
        }
    }
}

fn sleep<M>(shard: &mut Shard<M>) -> std::io::Result<()> {
    shard.arm_wakeup()?;
    shard.mailbox.waker().prepare_sleep();
    // Look again after announcing the sleep: a sender that pushed before it
    // saw our flag did not wake us.
    if shard.mailbox.has_mail() || shard.stop_requested {
        shard.mailbox.waker().awake();
        return Ok(());
    }
    let timeout = shard.timers.time_to_next(Instant::now());
    let before = Instant::now();
    let result = shard.ring.submit_and_wait(timeout);
    shard.mailbox.waker().awake();
    shard.stats.sleeps += 1;
    shard.stats.slept += before.elapsed();
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::worker_cpus;

    #[test]
    fn io_workers_go_where_no_shard_polls() {
        assert_eq!(worker_cpus(&[0, 1, 2, 3], &[Some(0), Some(2)]), vec![1, 3]);
        // Shards on every CPU: spread over all of them.
        assert_eq!(worker_cpus(&[0, 1], &[Some(0), Some(1)]), vec![0, 1]);
        // Unpinned shards leave the workers' mask alone.
        assert!(worker_cpus(&[0, 1], &[None]).is_empty());
    }
}
