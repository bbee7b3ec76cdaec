//! `keel-bench local`: drives Keel's engine directly against a file, a block
//! device or memory, one shard per core, each keeping `qd` I/Os in flight.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_engine::backend::OpenOptions;
use keel_engine::{
    BlockBackend, Buf, Completion, DeviceId, Engine, EngineConfig, FileBackend, Handler, IoOp,
    MemoryBackend, Op, PoolConfig, RingConfig, Shard, ShardReport,
};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::progress::{Counters, Progress};
use crate::report::Results;
use crate::workload::{next_is_read, OffsetGen, Workload};

pub struct LocalArgs {
    /// `None`: a memory backend.
    pub file: Option<PathBuf>,
    pub size: Option<u64>,
    pub workload: Workload,
    pub cores: usize,
    pub spin: Duration,
    pub sqpoll: bool,
    pub task_run: keel_engine::TaskRun,
    pub io_workers: keel_engine::IoWorkers,
    pub quiet: bool,
}

pub struct LocalRun {
    pub results: Results,
    pub backend: String,
    pub ring: String,
    pub hugepages: bool,
    pub shards: Vec<ShardReport>,
}

/// One slot of the queue: the buffer it owns and when its I/O started.
struct Slot {
    buf: Option<Buf>,
    started: Instant,
}

struct Job {
    dev: DeviceId,
    workload: Workload,
    offsets: OffsetGen,
    rng: SmallRng,
    slots: Vec<Slot>,
    started: bool,
    run_start: Instant,
    deadline: Instant,
    results: Results,
    counters: Arc<Counters>,
    out: mpsc::Sender<Results>,
}

impl Job {
    fn issue(&mut self, shard: &mut Shard<()>, slot: usize) {
        let Some(buf) = self.slots[slot].buf.take() else {
            return;
        };
        let offset = self.offsets.next(&mut self.rng);
        let op = if next_is_read(&self.workload, &mut self.rng) {
            IoOp::Read { offset }
        } else {
            IoOp::Write { offset, fua: false }
        };
        self.slots[slot].started = Instant::now();
        if let Err((err, buf)) = shard.submit(self.dev, op, Some(buf), slot as u64) {
            tracing::error!(%err, "submit failed");
            self.results.errors += 1;
            self.slots[slot].buf = buf;
        }
    }

    fn finish_if_drained(&mut self, shard: &mut Shard<()>) {
        if shard.in_flight() == 0 {
            self.results.elapsed = self.run_start.elapsed();
            let _ = self.out.send(std::mem::take(&mut self.results));
            for slot in &mut self.slots {
                if let Some(b) = slot.buf.take() {
                    shard.free(b);
                }
            }
            shard.stop();
        }
    }
}

impl Handler<()> for Job {
    fn poll(&mut self, shard: &mut Shard<()>) -> bool {
        if self.started {
            return false;
        }
        self.started = true;
        self.run_start = Instant::now();
        self.deadline = self.run_start + self.workload.runtime;
        for slot in 0..self.slots.len() {
            self.issue(shard, slot);
        }
        true
    }

    fn on_completion(&mut self, shard: &mut Shard<()>, done: Completion) {
        let now = Instant::now();
        let slot = done.tag as usize;
        let bytes = done.buf.as_ref().map_or(0, |b| b.len() as u64);
        match done.result {
            Ok(_) => {
                let latency = now.duration_since(self.slots[slot].started);
                match done.op {
                    Op::Block(IoOp::Read { .. }) => self.results.read.record(bytes, latency),
                    _ => self.results.write.record(bytes, latency),
                }
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(err) => {
                if self.results.errors == 0 {
                    tracing::error!(%err, "I/O failed");
                }
                self.results.errors += 1;
            }
        }
        self.slots[slot].buf = done.buf;
        if now < self.deadline {
            self.issue(shard, slot);
        } else {
            self.finish_if_drained(shard);
        }
    }
}

/// Opens (creating and laying out if needed) the backend to measure.
pub fn open_backend(
    file: Option<&Path>,
    size: Option<u64>,
    lay_out: bool,
) -> anyhow::Result<Arc<dyn BlockBackend>> {
    let Some(path) = file else {
        let size = size.unwrap_or(1 << 30);
        return Ok(Arc::new(
            MemoryBackend::new(size, 4096).map_err(anyhow::Error::msg)?,
        ));
    };
    let fresh = !path.exists();
    if fresh || lay_out {
        let size = size.context("--size is needed to create the file")?;
        lay_out_file(path, size)?;
    }
    let backend = FileBackend::open(
        path,
        &OpenOptions {
            size,
            block_size: None,
        },
    )
    .with_context(|| format!("opening {}", path.display()))?;
    Ok(Arc::new(backend))
}

/// Writes every byte of the file once, so reads measure the device and not
/// the filesystem answering holes with zeroes. Runs before any reactor
/// starts, so plain blocking writes are fine here.
pub fn lay_out_file(path: &Path, size: u64) -> anyhow::Result<()> {
    use std::io::Write;
    if let Ok(meta) = std::fs::metadata(path) {
        // A file already this large with all blocks allocated is laid out.
        use std::os::unix::fs::MetadataExt;
        if meta.len() >= size && meta.blocks() * 512 >= size {
            return Ok(());
        }
    }
    eprintln!("laying out {} ({} MiB)...", path.display(), size >> 20);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut rng = SmallRng::seed_from_u64(0x6b65656c);
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written < size {
        rng.fill_bytes(&mut chunk);
        let n = chunk.len().min((size - written) as usize);
        file.write_all(&chunk[..n])
            .with_context(|| format!("writing {}", path.display()))?;
        written += n as u64;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

pub fn run(args: &LocalArgs) -> anyhow::Result<LocalRun> {
    let w = args.workload;
    if w.block_size == 0 || w.queue_depth == 0 || args.cores == 0 {
        bail!("--bs, --qd and --cores must be positive");
    }
    let backend = open_backend(args.file.as_deref(), args.size, false)?;
    let geometry = backend.geometry();
    if !w.block_size.is_multiple_of(geometry.block_size as u64) {
        bail!(
            "--bs {} is not a multiple of the device's {}-byte blocks",
            w.block_size,
            geometry.block_size
        );
    }
    if w.block_size > geometry.capacity {
        bail!(
            "--bs {} is larger than the volume ({} bytes)",
            w.block_size,
            geometry.capacity
        );
    }
    let description = backend.describe();
    let config = EngineConfig {
        shards: args.cores,
        pin: true,
        ring: RingConfig {
            entries: (w.queue_depth as u32).next_power_of_two().max(8),
            sqpoll_idle_ms: args.sqpoll.then_some(1000),
            iopoll: false,
            task_run: args.task_run,
        },
        pool: PoolConfig {
            slot_size: w.block_size as usize,
            slots: w.queue_depth,
            hugepages: true,
        },
        spin: args.spin,
        max_inflight: w.queue_depth,
        io_workers: args.io_workers,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel();
    let counters: Vec<Arc<Counters>> = (0..args.cores)
        .map(|_| Arc::new(Counters::default()))
        .collect();
    let shard_counters = counters.clone();
    let engine = Engine::start(config, move |shard| {
        let dev = shard.attach(backend.clone())?;
        let mut rng = SmallRng::seed_from_u64(0x5eed ^ shard.id().0 as u64);
        let mut slots = Vec::with_capacity(w.queue_depth);
        for _ in 0..w.queue_depth {
            let buf = shard
                .alloc(w.block_size as usize)
                .ok_or_else(|| std::io::Error::other("buffer pool smaller than the queue depth"))?;
            rng.fill_bytes(shard.buf_mut(&buf));
            slots.push(Slot {
                buf: Some(buf),
                started: Instant::now(),
            });
        }
        Ok(Job {
            dev,
            workload: w,
            offsets: OffsetGen::new(&w, geometry.capacity, shard.id().0, shard.shards()),
            rng,
            slots,
            started: false,
            run_start: Instant::now(),
            deadline: Instant::now(),
            results: Results::default(),
            counters: shard_counters[shard.id().0].clone(),
            out: tx.clone(),
        })
    })
    .context("starting the engine")?;

    let mut progress = Progress::new(counters, args.quiet);
    let mut results = Results::default();
    let mut received = 0;
    while received < args.cores {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(r) => {
                results.merge(&r);
                received += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every shard is gone: join below says why.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        progress.maybe_redraw();
    }
    progress.finish();
    let shards = engine.join().context("engine shard failed")?;
    let ring = shards
        .first()
        .map(|s| s.ring.to_string())
        .unwrap_or_default();
    let hugepages = shards.iter().all(|s| s.hugepages);
    Ok(LocalRun {
        results,
        backend: description,
        ring,
        hugepages,
        shards,
    })
}
