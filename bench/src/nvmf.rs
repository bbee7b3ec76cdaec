//! `keel-bench nvmf`: load an NVMe/TCP target through Keel's initiator, one
//! thread and one I/O queue (TCP connection) per `--connections`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_target::initiator::io_queue::is_success;
use keel_target::initiator::{Controller, HostOptions, IoDone, IoKind, IoQueue, NamespaceInfo};
use keel_target::tcp::DigestOptions;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::progress::{Counters, Progress};
use crate::report::Results;
use crate::verify::Verifier;
use crate::workload::{next_is_read, OffsetGen, Workload};

pub struct NvmfArgs {
    pub addr: String,
    pub nqn: String,
    pub nsid: u32,
    pub workload: Workload,
    pub connections: usize,
    pub verify: bool,
    pub digests: bool,
    pub poll: bool,
    pub hostnqn: Option<String>,
    pub quiet: bool,
}

pub struct NvmfRun {
    pub results: Results,
    pub namespace: NamespaceInfo,
    pub target: (String, String),
    pub verified_reads: u64,
}

pub fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))
}

pub fn run(args: &NvmfArgs) -> anyhow::Result<NvmfRun> {
    let addr = resolve(&args.addr)?;
    let mut options = HostOptions {
        digests: DigestOptions {
            header: args.digests,
            data: args.digests,
        },
        ..Default::default()
    };
    if let Some(nqn) = &args.hostnqn {
        options.hostnqn = nqn.clone();
    }
    let mut ctrl = Controller::connect(addr, &args.nqn, &options, args.connections as u16)
        .with_context(|| format!("connecting to {} at {addr}", args.nqn))?;
    let ns = ctrl
        .namespace(args.nsid)
        .context("identifying the namespace")?;
    let w = args.workload;
    if !w.block_size.is_multiple_of(ns.block_size as u64) || w.block_size > ctrl.max_transfer as u64
    {
        bail!(
            "--bs {} must be a multiple of the namespace's {}-byte blocks and at most the target's {}-byte transfer limit",
            w.block_size,
            ns.block_size,
            ctrl.max_transfer
        );
    }
    if (ctrl.io_queues as usize) < args.connections {
        bail!(
            "the target granted {} I/O queues, {} asked",
            ctrl.io_queues,
            args.connections
        );
    }
    let capacity = ns.blocks * ns.block_size as u64;
    let mut queues = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let q = ctrl
            .io_queue(
                i as u16 + 1,
                w.queue_depth.min(u16::MAX as usize - 1) as u16,
                ns,
            )
            .with_context(|| format!("opening I/O queue {}", i + 1))?;
        let mut q = q;
        q.set_busy_poll(args.poll)
            .context("switching the queue to busy polling")?;
        queues.push(q);
    }
    let counters: Vec<Arc<Counters>> = (0..args.connections)
        .map(|_| Arc::new(Counters::default()))
        .collect();
    let threads: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(i, queue)| {
            let counters = counters[i].clone();
            let connections = args.connections;
            let verify = args.verify;
            std::thread::Builder::new()
                .name(format!("nvmf-q{}", i + 1))
                .spawn(move || drive(queue, w, capacity, i, connections, verify, &counters))
        })
        .collect::<Result<_, _>>()
        .context("starting queue threads")?;
    let mut progress = Progress::new(counters, args.quiet);
    while !threads.iter().all(|t| t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        progress.maybe_redraw();
    }
    progress.finish();
    let mut results = Results::default();
    let mut verified = 0;
    for t in threads {
        let (r, v) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a queue thread panicked"))??;
        results.merge(&r);
        verified += v;
    }
    let target = ctrl.serial_model.clone();
    ctrl.shutdown().context("shutting the controller down")?;
    Ok(NvmfRun {
        results,
        namespace: ns,
        target,
        verified_reads: verified,
    })
}

/// One queue's loop: keep `qd` commands in flight until the time is up.
fn drive(
    mut queue: IoQueue,
    w: Workload,
    capacity: u64,
    index: usize,
    connections: usize,
    verify: bool,
    counters: &Counters,
) -> anyhow::Result<(Results, u64)> {
    let ns = queue.namespace();
    // Verification needs each queue to own its blocks, so no two queues
    // race on one block; plain load may go anywhere.
    // Verification needs each queue to own its blocks, so no two queues
    // race on one block; plain load may go anywhere.
    let offsets = if verify {
        OffsetGen::for_slice(&w, capacity, index, connections)
    } else {
        OffsetGen::new(&w, capacity, index, connections)
    };
    let depth = queue.depth();
    let mut state = QueueState {
        w,
        block_size: ns.block_size as u64,
        blocks_per_io: (w.block_size / ns.block_size as u64) as u32,
        offsets,
        rng: SmallRng::seed_from_u64(0x6e766d66 ^ index as u64),
        verifier: verify.then(|| Verifier::new(capacity, w.block_size)),
        started: vec![Instant::now(); depth],
        ops: vec![(IoKind::Read, 0); depth],
    };
    let mut results = Results::default();
    let mut verified = 0u64;
    let run_start = Instant::now();
    let deadline = run_start + w.runtime;
    for slot in 0..depth {
        state.issue(&mut queue, slot)?;
    }
    let mut done: Vec<IoDone> = Vec::with_capacity(depth);
    while queue.in_flight() > 0 {
        done.clear();
        queue.wait(&mut done)?;
        let now = Instant::now();
        for d in &done {
            let slot = d.slot as usize;
            let (kind, offset) = state.ops[slot];
            if let Some(v) = state.verifier.as_mut() {
                v.finish(offset);
            }
            if !is_success(d.status) {
                results.errors += 1;
                if let Some(v) = state.verifier.as_mut() {
                    v.forget(offset); // a failed write leaves the block unknown
                }
                tracing::error!(status = %d.status, ?kind, offset, "I/O failed");
            } else {
                let latency = now.duration_since(state.started[slot]);
                match kind {
                    IoKind::Read => {
                        if let Some(v) = state.verifier.as_ref() {
                            v.check_read(offset, queue.buffer(d.slot, w.block_size as usize))?;
                            verified += 1;
                        }
                        results.read.record(w.block_size, latency);
                    }
                    IoKind::Write { .. } => {
                        if let Some(v) = state.verifier.as_mut() {
                            v.acknowledge_write(offset);
                        }
                        results.write.record(w.block_size, latency);
                    }
                    IoKind::Flush => {}
                }
                counters.ops.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(w.block_size, Ordering::Relaxed);
            }
            if now < deadline {
                state.issue(&mut queue, slot)?;
            }
        }
    }
    results.elapsed = run_start.elapsed();
    Ok((results, verified))
}

/// What one queue's loop needs to issue the next command.
struct QueueState {
    w: Workload,
    block_size: u64,
    blocks_per_io: u32,
    offsets: OffsetGen,
    rng: SmallRng,
    verifier: Option<Verifier>,
    started: Vec<Instant>,
    ops: Vec<(IoKind, u64)>,
}

impl QueueState {
    fn issue(&mut self, queue: &mut IoQueue, slot: usize) -> anyhow::Result<()> {
        // With verification, never two commands on one block at once: the
        // outcome of a read racing a write is not defined.
        let offset = loop {
            let offset = self.offsets.next(&mut self.rng);
            if self.verifier.as_ref().is_none_or(|v| !v.busy(offset)) {
                break offset;
            }
        };
        let kind = if next_is_read(&self.w, &mut self.rng) {
            IoKind::Read
        } else {
            IoKind::Write { fua: false }
        };
        if let Some(v) = self.verifier.as_mut() {
            if let IoKind::Write { .. } = kind {
                v.fill_for_write(
                    offset,
                    queue.buffer(slot as u16, self.w.block_size as usize),
                );
            }
            v.start(offset);
        }
        self.ops[slot] = (kind, offset);
        self.started[slot] = Instant::now();
        queue.submit(
            slot as u16,
            kind,
            offset / self.block_size,
            self.blocks_per_io,
        )?;
        Ok(())
    }
}
