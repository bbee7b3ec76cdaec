//! The simulated cluster: event queue, fault injection, host, checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::rc::Rc;

use super::disk::{Completion, Disk, Payload, PendingIo};
use super::net::{Connection, Network};
use super::rng::Rng;
use crate::core::{
    Action, DurableRecord, Event, Geometry, HostOpId, HostStatus, IoToken, LinkDirection, LinkId,
    Member, Membership, Node, Position, PrimaryLimits, ReplicaLimits, Standing, Time,
};
use crate::wire::{ByteRange, Epoch, NodeId, ReplicationMode};

const BLOCK_SIZE: u32 = 4096;
const BLOCKS_PER_REGION: u32 = 4;
const REGIONS: u64 = 8;
const BLOCKS: usize = (REGIONS as usize) * (BLOCKS_PER_REGION as usize);
/// Steps allowed for the healed cluster to become quiet and converge.
const MAX_HEAL_STEPS: usize = 20_000;

/// One simulated run's shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimConfig {
    /// Steps with faults before healing.
    pub(crate) steps: usize,
    /// Test-only primary bug to prove the checks catch it.
    pub(crate) mutation_ack_after_local_only: bool,
    /// Keep and print a trace.
    pub(crate) verbose: bool,
    /// The host also reads through degraded reads (off for the seeds kept
    /// as regressions: it changes every run's random sequence).
    pub(crate) degraded_reads: bool,
    /// Primaries hold read leases, and every node that serves reads is
    /// checked to read every acknowledged write (check (f)).
    pub(crate) read_leases: bool,
    /// The control plane starts scrubs, and no scrub may find a replica
    /// different from its primary (check (g)).
    pub(crate) scrubs: bool,
}

/// The read lease when `read_leases` is on: a few network round trips.
const READ_LEASE: Time = 4_000_000;

/// What a successful run did (to see that runs exercise something).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Stats {
    pub(crate) acked_writes: u64,
    /// Host commands failed with a path error (deposed or not serving).
    pub(crate) path_errors: u64,
    /// Epochs whose primary served (the first included).
    pub(crate) primaries_served: u64,
    pub(crate) max_epoch: u64,
    pub(crate) crashes: u64,
    pub(crate) steps: u64,
    /// Degraded reads answered with data.
    pub(crate) degraded_reads: u64,
    /// Region checks scrubs finished (at least: a node's count is lost
    /// when it stops being primary).
    pub(crate) scrub_checks: u64,
}

enum SimEvent {
    Deliver {
        link: LinkId,
        to: NodeId,
    },
    LinkUp {
        link: LinkId,
        node: NodeId,
        peer: NodeId,
        direction: LinkDirection,
    },
    LinkDown {
        link: LinkId,
        node: NodeId,
        peer: NodeId,
    },
    /// A gracefully closed connection has delivered everything: it dies.
    Close {
        link: LinkId,
    },
    Disk {
        node: NodeId,
        incarnation: u64,
        token: IoToken,
    },
}

struct SimNode {
    state: Option<Node<Payload>>,
    incarnation: u64,
    disk: Disk,
}

struct HostOp {
    node: NodeId,
    /// First block and the write's id; `None` for a flush.
    write: Option<(usize, usize, u64)>,
    /// A write with FUA.
    fua: bool,
    /// For a flush: per block, the last write acknowledged before it was
    /// sent, and that acknowledgement's epoch.
    flushes: Option<Vec<(u64, Epoch)>>,
    /// For a degraded read: its first block and, per block, the last write
    /// acknowledged when it was sent.
    read: Option<(usize, Vec<u64>)>,
}

pub(crate) struct Sim {
    seed: u64,
    cfg: SimConfig,
    rng: Rng,
    now: Time,
    geometry: Geometry,
    membership: Membership,
    primary_limits: PrimaryLimits,
    nodes: Vec<SimNode>,
    net: Network,
    queue: BTreeMap<(Time, u64), SimEvent>,
    next_event: u64,
    host_ops: BTreeMap<HostOpId, HostOp>,
    /// Blocks with a host write outstanding: the host never has two
    /// overlapping writes outstanding, so write ids order each block's
    /// writes.
    locked: BTreeSet<usize>,
    /// Per block, the id of the last write acknowledged to the host that
    /// must still be readable: reset to `guaranteed` by a power loss, which
    /// may take acknowledged writes no flush covered (NVMe semantics with a
    /// volatile write cache).
    acked: Vec<u64>,
    /// Per block, the epoch of the primary that acknowledged `acked`.
    acked_epoch: Vec<Epoch>,
    /// Per block, the last write made durable by a FUA acknowledgement or a
    /// completed flush: readable whatever crashes.
    guaranteed: Vec<u64>,
    next_host_id: u64,
    next_epoch: u64,
    /// The newest epoch whose primary has served.
    newest_serving_epoch: Epoch,
    device_replaced: bool,
    /// Per node, if its device was replaced: the next host write id then.
    replaced_before_write: Vec<Option<u64>>,
    /// Per node, the next host write id at its last power loss (0: none):
    /// a copy may have applied a write and lost it to a power loss before
    /// its primary noticed.
    power_lost_at: Vec<u64>,
    step: usize,
    /// Promotions the control plane tried (`keep_a_primary`): it takes
    /// the alive nodes in turn, so every candidate gets its chance.
    control_promotions: usize,
    /// A failover planned in the middle of a membership change: at this
    /// step, the primary that started it is cut off and another promoted.
    failover: Option<(usize, NodeId)>,
    stats: Stats,
    trace: Vec<String>,
}

type Check = Result<(), String>;

impl Sim {
    pub(crate) fn new(seed: u64, cfg: SimConfig) -> Self {
        let mut rng = Rng::new(seed);
        let node_count = rng.between(3, 4) as usize;
        let with_async = node_count == 4 && rng.chance(500);
        let members: Vec<Member> = (0..node_count)
            .map(|i| Member {
                node: NodeId(i as u64),
                mode: if with_async && i == node_count - 1 {
                    ReplicationMode::Async
                } else {
                    ReplicationMode::Sync
                },
            })
            .collect();
        let sync = members
            .iter()
            .filter(|m| m.mode == ReplicationMode::Sync)
            .count() as u64;
        let write_quorum = rng.between(2, sync) as u8;
        let membership = Membership {
            members,
            primary: NodeId(0),
            write_quorum,
            since: Epoch(0),
            previous: None,
        };
        assert!(membership.is_valid());
        let geometry =
            Geometry::new(BLOCK_SIZE, BLOCK_SIZE * BLOCKS_PER_REGION, REGIONS).expect("geometry");
        let primary_limits = PrimaryLimits {
            max_host_ops: 16,
            window_frames: rng.between(2, 8) as usize,
            max_unsynced_frames: rng.between(8, 32) as usize,
            max_unsettled_writes: 64,
            max_queued_frames: rng.between(8, 64) as usize,
            async_max_lag_bytes: 64 * 1024,
            async_max_lag_time: 4_000_000,
            // Links are cut for longer than this (a replica connected but
            // silent is dropped; fixed, so the seeds' draws stay as they were).
            ack_timeout: 50_000_000,
            resync_regions_in_flight: rng.between(1, 4) as usize,
            bitmap_hold: rng.between(0, 3_000_000),
            resync_paced: rng.chance(250),
            // No draw: the seeds kept as regressions keep their runs.
            read_lease: if cfg.read_leases { READ_LEASE } else { 0 },
            mutation_ack_after_local_only: cfg.mutation_ack_after_local_only,
        };
        // Epoch 1: node 0 was primary and every copy is identical (empty).
        let nodes = (0..node_count)
            .map(|i| {
                let standing = if i == 0 {
                    Standing {
                        epoch: Epoch(1),
                        synced: Epoch(1),
                        applied: Position::all_of(Epoch(1)),
                        consistent: true,
                        amnesiac: false,
                    }
                } else {
                    Standing {
                        epoch: Epoch(1),
                        synced: Epoch(1),
                        applied: Position::ZERO,
                        consistent: true,
                        amnesiac: false,
                    }
                };
                let record = DurableRecord {
                    membership: membership.clone(),
                    standing,
                    intent: Vec::new(),
                };
                SimNode {
                    state: None,
                    incarnation: 0,
                    disk: Disk::new(BLOCKS, record),
                }
            })
            .collect();
        let mut sim = Self {
            seed,
            cfg,
            rng,
            now: 0,
            geometry,
            membership,
            primary_limits,
            nodes,
            net: Network::default(),
            queue: BTreeMap::new(),
            next_event: 0,
            host_ops: BTreeMap::new(),
            locked: BTreeSet::new(),
            acked: vec![0; BLOCKS],
            acked_epoch: vec![Epoch(0); BLOCKS],
            guaranteed: vec![0; BLOCKS],
            next_host_id: 1,
            next_epoch: 2,
            newest_serving_epoch: Epoch(0),
            device_replaced: false,
            replaced_before_write: vec![None; node_count],
            power_lost_at: vec![0; node_count],
            step: 0,
            control_promotions: 0,
            failover: None,
            stats: Stats::default(),
            trace: Vec::new(),
        };
        for i in 0..node_count {
            sim.start_node(NodeId(i as u64));
        }
        sim
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.cfg.verbose {
            let line = format!("[{:>6} t={:>10}] {}", self.step, self.now, line());
            self.trace.push(line);
        }
    }

    fn fail(&self, message: String) -> String {
        let mut text = format!(
            "simulation seed {} failed at step {}: {}\n  config: {:?}, {:?}\n  reproduce: SIM_SEED={} cargo test -p keel-replicator sim_replay -- --ignored --nocapture\n",
            self.seed, self.step, message, self.membership, self.primary_limits, self.seed
        );
        // The last 400 lines, or `SIM_TRACE_LINES` (a liveness failure's
        // cause may lie thousands of steps back).
        let lines = std::env::var("SIM_TRACE_LINES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(400);
        for line in self.trace.iter().rev().take(lines).rev() {
            let _ = writeln!(text, "{line}");
        }
        if self.cfg.verbose {
            for (i, n) in self.nodes.iter().enumerate() {
                let _ = writeln!(text, "n{i}: {:#?}", n.state);
            }
            let _ = writeln!(
                text,
                "connections: {:?}",
                self.net
                    .connections
                    .iter()
                    .map(|(id, c)| (
                        id.0,
                        c.initiator.0,
                        c.acceptor.0,
                        c.closing,
                        c.toward_acceptor.len(),
                        c.toward_initiator.len()
                    ))
                    .collect::<Vec<_>>()
            );
        }
        text
    }

    /// Runs the faulty phase, heals, and waits for convergence.
    pub(crate) fn run(mut self) -> Result<Stats, String> {
        let result = self.run_inner();
        result.map_err(|m| self.fail(m))
    }

    fn run_inner(&mut self) -> Result<Stats, String> {
        self.promote(NodeId(0))?;
        for _ in 0..self.cfg.steps {
            self.step(true)?;
        }
        self.heal();
        for _ in 0..MAX_HEAL_STEPS {
            self.step(false)?;
            if self.is_converged() {
                self.check_converged()?;
                self.stats.steps = self.step as u64;
                return Ok(self.stats);
            }
        }
        Err(format!(
            "the healed cluster did not converge: {}",
            self.describe()
        ))
    }

    fn describe(&self) -> String {
        let mut s = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match &n.state {
                Some(node) => {
                    let _ = write!(
                        s,
                        "n{i}: epoch {} primary {} serving {} quiet {} record {:?} membership {:?}; ",
                        node.epoch(),
                        node.is_primary(),
                        node.is_serving(),
                        node.is_quiet(),
                        node.durable_record().standing,
                        node.durable_record().membership
                    );
                }
                None => {
                    let _ = write!(s, "n{i}: down; ");
                }
            }
        }
        let _ = write!(
            s,
            "queue {} events, {} host ops",
            self.queue.len(),
            self.host_ops.len()
        );
        s
    }

    fn schedule(&mut self, at: Time, event: SimEvent) {
        self.queue.insert((at, self.next_event), event);
        self.next_event += 1;
    }

    fn alive(&self, node: NodeId) -> bool {
        self.nodes[node.0 as usize].state.is_some()
    }

    fn node_ids(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as u64).map(NodeId).collect()
    }

    fn start_node(&mut self, id: NodeId) {
        let replica_limits = ReplicaLimits {
            max_queued_frames: 64,
            max_writes_in_flight: 4,
            persist_batch: 8,
        };
        let n = &mut self.nodes[id.0 as usize];
        n.incarnation += 1;
        n.state = Some(Node::recover(
            id,
            self.geometry,
            self.primary_limits,
            replica_limits,
            n.disk.record.clone(),
            n.disk.noted,
        ));
    }

    /// One step: maybe a fault or host command, connection attempts, then
    /// the next scheduled event; then the checks.
    fn step(&mut self, faults: bool) -> Check {
        self.step += 1;
        if faults {
            self.inject()?;
        } else {
            self.keep_a_primary()?;
        }
        self.connect_links();
        if self.step.is_multiple_of(8) {
            for id in self.node_ids() {
                self.deliver(id, Event::Tick)?;
                if self.primary_limits.resync_paced {
                    self.deliver(id, Event::ResyncCredit { regions: 1 })?;
                }
            }
        }
        if let Some(((at, _), event)) = self.queue.pop_first() {
            self.now = self.now.max(at);
            self.process(event)?;
        } else {
            self.now += 100_000;
        }
        self.check_newest_primary_has_acked_writes()?;
        self.check_lease_holders_read_acked_writes()?;
        self.check_scrubs_match()
    }

    /// (g) A scrub never finds a replica's region different from its
    /// primary's: the copies it compares must hold the same writes (a
    /// replica the primary may have let diverge is dirty, and not compared).
    fn check_scrubs_match(&mut self) -> Check {
        if !self.cfg.scrubs {
            return Ok(());
        }
        let mut checked = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(status) = n.state.as_ref().map(|s| s.scrub_status()) else {
                continue;
            };
            if status.mismatches > 0 {
                return Err(format!(
                    "(g) n{i}'s scrub found {} region(s) of a replica different from its own",
                    status.mismatches
                ));
            }
            checked += status.checked;
        }
        self.stats.scrub_checks = self.stats.scrub_checks.max(checked);
        Ok(())
    }

    /// (f) With read leases, every node that serves reads at this moment
    /// reads every acknowledged write (or a newer one): a deposed primary
    /// that has not noticed stops serving reads before a newer primary
    /// serves anything.
    fn check_lease_holders_read_acked_writes(&self) -> Check {
        if !self.cfg.read_leases {
            return Ok(());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(state) = n.state.as_ref().filter(|s| s.serves_reads(self.now)) else {
                continue;
            };
            for b in 0..BLOCKS {
                if n.disk.visible(b) < self.acked[b] {
                    return Err(format!(
                        "(f) n{i} serves reads in epoch {} but reads block {b} as write #{}; write #{} was acknowledged",
                        state.epoch().0,
                        n.disk.visible(b),
                        self.acked[b]
                    ));
                }
            }
        }
        Ok(())
    }

    fn inject(&mut self) -> Check {
        self.failover_if_due()?;
        let roll = self.rng.below(1000);
        match roll {
            0..=299 => self.host_write()?,
            300..=319 => self.host_flush()?,
            320..=327 => self.crash_random(),
            328..=379 => self.restart_random(),
            380..=394 => self.reset_random_connection(),
            395..=402 => self.partition_random(),
            403..=408 => {
                let alive: Vec<NodeId> = self
                    .node_ids()
                    .into_iter()
                    .filter(|n| self.alive(*n))
                    .collect();
                self.promote_one_of(&alive)?;
            }
            409..=411 => self.duplicate_random_frame(),
            412..=414 => self.replace_random_device(),
            415..=420 => self.reconfigure_random()?,
            421..=470 if self.cfg.degraded_reads => self.host_degraded_read()?,
            471..=480 if self.cfg.read_leases => self.isolate_a_primary()?,
            481..=520 if self.cfg.scrubs => self.start_scrub()?,
            _ => {}
        }
        if self.step.is_multiple_of(50) {
            self.keep_a_primary()?;
        }
        Ok(())
    }

    fn heal(&mut self) {
        self.log(|| "heal".to_string());
        self.net.partitions.clear();
        for id in self.node_ids() {
            if !self.alive(id) {
                self.start_node(id);
            }
        }
    }

    /// The control plane: if no node acts as primary, promote one, trying
    /// each alive node in turn (a candidate that is not up to date retires).
    fn keep_a_primary(&mut self) -> Check {
        let any_primary = self
            .nodes
            .iter()
            .any(|n| n.state.as_ref().is_some_and(|s| s.is_primary()));
        if any_primary || !self.step.is_multiple_of(16) {
            return Ok(());
        }
        let alive: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| self.alive(*n))
            .collect();
        if alive.is_empty() {
            return Ok(());
        }
        // In turn by attempt, not by step: a period of steps shared with the
        // elections' length would skip some nodes for ever.
        let candidate = alive[self.control_promotions % alive.len()];
        self.control_promotions += 1;
        self.promote(candidate)
    }

    /// The control plane changes the serving primary's membership: a new
    /// write quorum, a copy's mode, a copy removed or one added (back).
    fn reconfigure_random(&mut self) -> Check {
        let serving = self.nodes_whose_state(|s| s.is_serving() && !s.is_reconfiguring());
        let Some(node) = self.rng.pick(&serving).copied() else {
            return Ok(());
        };
        let Some(current) = self.nodes[node.0 as usize]
            .state
            .as_ref()
            .map(|s| s.membership().clone())
        else {
            return Ok(());
        };
        let mut next = current.clone();
        let others: Vec<NodeId> = current
            .members
            .iter()
            .map(|m| m.node)
            .filter(|n| *n != node)
            .collect();
        let outsiders: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| current.mode_of(*n).is_none())
            .collect();
        match self.rng.below(4) {
            0 => {}
            1 => {
                if let Some(other) = self.rng.pick(&others).copied() {
                    for m in next.members.iter_mut().filter(|m| m.node == other) {
                        m.mode = match m.mode {
                            ReplicationMode::Sync => ReplicationMode::Async,
                            ReplicationMode::Async => ReplicationMode::Sync,
                        };
                    }
                }
            }
            2 => {
                if let Some(other) = self.rng.pick(&others).copied() {
                    next.members.retain(|m| m.node != other);
                }
            }
            _ => {
                if let Some(outsider) = self.rng.pick(&outsiders).copied() {
                    let mode = if self.rng.chance(300) {
                        ReplicationMode::Async
                    } else {
                        ReplicationMode::Sync
                    };
                    next.members.push(Member {
                        node: outsider,
                        mode,
                    });
                }
            }
        }
        // W >= 2, as at the start: with W = 1 the fence quorum is every sync
        // copy, and a blank (replaced) one never counts, so no election
        // could ever finish after a device replacement.
        let sync = next.sync_count() as u64;
        if sync < 2 {
            return Ok(());
        }
        next.write_quorum = if self.rng.chance(500) {
            self.rng.between(2, sync) as u8
        } else {
            (next.write_quorum as u64).clamp(2, sync) as u8
        };
        if !next.is_valid() {
            return Ok(());
        }
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        self.log(|| format!("reconfigure n{} to epoch {epoch}: {next:?}", node.0));
        self.deliver(
            node,
            Event::Reconfigure {
                epoch,
                membership: next,
            },
        )?;
        // Half the time, a failover while the change is reaching copies:
        // the windows the joint quorum and the membership epochs protect.
        if self.failover.is_none() && self.rng.chance(500) {
            let at = self.step + self.rng.between(1, 60) as usize;
            self.failover = Some((at, node));
        }
        Ok(())
    }

    /// The planned failover: the primary is killed, loses power or is cut
    /// off from one other node, and another node is promoted.
    fn failover_if_due(&mut self) -> Check {
        let Some((at, primary)) = self.failover else {
            return Ok(());
        };
        if self.step < at {
            return Ok(());
        }
        self.failover = None;
        if self.alive(primary) {
            match self.rng.below(3) {
                0 => self.crash(primary, false),
                1 => self.crash(primary, true),
                _ => {
                    let others: Vec<NodeId> = self
                        .node_ids()
                        .into_iter()
                        .filter(|n| *n != primary)
                        .collect();
                    if let Some(other) = self.rng.pick(&others).copied() {
                        self.partition(primary, other);
                    }
                }
            }
        }
        let candidates: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| *n != primary && self.alive(*n))
            .collect();
        self.promote_one_of(&candidates)
    }

    /// A serving primary is cut off from every other node (a host may
    /// still reach it) and another node is promoted: the cut-off one must
    /// stop serving reads before the new one serves (read leases).
    fn isolate_a_primary(&mut self) -> Check {
        let serving = self.nodes_whose_state(Node::is_serving);
        let Some(primary) = self.rng.pick(&serving).copied() else {
            return Ok(());
        };
        let others: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| *n != primary)
            .collect();
        for other in &others {
            self.partition(primary, *other);
        }
        let candidates: Vec<NodeId> = others.into_iter().filter(|n| self.alive(*n)).collect();
        self.promote_one_of(&candidates)
    }

    /// The write quorum `node` works with now.
    fn write_quorum_of(&self, node: NodeId) -> usize {
        self.nodes[node.0 as usize]
            .state
            .as_ref()
            .map_or(usize::from(self.membership.write_quorum), |s| {
                usize::from(s.membership().write_quorum)
            })
    }

    /// Promotes one of `candidates` picked at random, if any.
    fn promote_one_of(&mut self, candidates: &[NodeId]) -> Check {
        match self.rng.pick(candidates).copied() {
            Some(candidate) => self.promote(candidate),
            None => Ok(()),
        }
    }

    fn promote(&mut self, node: NodeId) -> Check {
        let epoch = Epoch(self.next_epoch);
        self.next_epoch += 1;
        self.log(|| format!("promote n{} to epoch {}", node.0, epoch));
        self.deliver(node, Event::Promote { epoch })
    }

    /// Where the host sends a command: mostly a serving primary, sometimes
    /// any node acting as primary (a multipath host may hit a stale path).
    fn host_target(&mut self) -> Option<NodeId> {
        let serving = !self.rng.chance(100);
        let targets = self.nodes_whose_state(|s| {
            if serving {
                s.is_serving()
            } else {
                s.is_primary()
            }
        });
        self.rng.pick(&targets).copied()
    }

    /// The live nodes whose state machine satisfies `f`, in id order.
    fn nodes_whose_state(&self, f: impl Fn(&Node<Payload>) -> bool) -> Vec<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|n| self.nodes[n.0 as usize].state.as_ref().is_some_and(&f))
            .collect()
    }

    /// A host command's blocks: 1 or 2 within one region (first, count).
    fn random_blocks(&mut self) -> (usize, u64) {
        let per_region = BLOCKS_PER_REGION as u64;
        let region = self.rng.below(REGIONS);
        let start = self.rng.below(per_region);
        let len = self.rng.between(1, (per_region - start).min(2));
        ((region * per_region + start) as usize, len)
    }

    fn host_write(&mut self) -> Check {
        let Some(node) = self.host_target() else {
            return Ok(());
        };
        let (first, len) = self.random_blocks();
        let blocks: Vec<usize> = (first..first + len as usize).collect();
        if blocks.iter().any(|b| self.locked.contains(b)) {
            return Ok(());
        }
        let id = self.next_host_id;
        self.next_host_id += 1;
        let fua = self.rng.chance(100);
        self.locked.extend(blocks.iter().copied());
        self.host_ops.insert(
            HostOpId(id),
            HostOp {
                node,
                write: Some((first, len as usize, id)),
                fua,
                flushes: None,
                read: None,
            },
        );
        let range = block_range(first, len);
        let data = Rc::new(vec![id; len as usize]);
        self.log(|| format!("host write #{id} blocks {first}+{len} to n{}", node.0));
        self.deliver(
            node,
            Event::HostWrite {
                id: HostOpId(id),
                range,
                data,
                fua,
            },
        )
    }

    /// A host read whose local read failed on the primary: it must come
    /// back from a replica with every write acknowledged before it.
    fn host_degraded_read(&mut self) -> Check {
        let Some(node) = self.host_target() else {
            return Ok(());
        };
        let (first, len) = self.random_blocks();
        let id = self.next_host_id;
        self.next_host_id += 1;
        let expected = self.acked[first..first + len as usize].to_vec();
        self.host_ops.insert(
            HostOpId(id),
            HostOp {
                node,
                write: None,
                fua: false,
                flushes: None,
                read: Some((first, expected)),
            },
        );
        let range = block_range(first, len);
        self.log(|| {
            format!(
                "host degraded read #{id} blocks {first}+{len} to n{}",
                node.0
            )
        });
        self.deliver(
            node,
            Event::DegradedRead {
                id: HostOpId(id),
                range,
            },
        )
    }

    /// The control plane asks the serving primaries to scrub.
    fn start_scrub(&mut self) -> Check {
        let serving = self.nodes_whose_state(|s| s.is_serving());
        for node in serving {
            self.log(|| format!("scrub on n{}", node.0));
            self.deliver(node, Event::Scrub)?;
        }
        Ok(())
    }

    /// A degraded read answered with `data`: from the current primary, it
    /// holds for each block the write acknowledged when the read was sent
    /// or a newer one (less only where a power loss took it since). A
    /// deposed primary that has not noticed may answer stale data, as it
    /// may read its own copy (no leases): not checked.
    fn read_completion(&mut self, node: NodeId, id: HostOpId, data: &[u64]) -> Check {
        let Some(HostOp {
            node: asked,
            read: Some((first, expected)),
            ..
        }) = self.host_ops.remove(&id)
        else {
            return Err(format!(
                "n{} answered read {} that the host never sent (or twice)",
                node.0, id.0
            ));
        };
        self.log(|| format!("n{} completes read #{} with {data:?}", node.0, id.0));
        if asked != node || data.len() != expected.len() {
            return Err(format!(
                "n{} answered read {} (sent to n{}, {} blocks) with {} blocks",
                node.0,
                id.0,
                asked.0,
                expected.len(),
                data.len()
            ));
        }
        let current = self.nodes[node.0 as usize]
            .state
            .as_ref()
            .is_some_and(|s| s.is_serving() && s.epoch() >= self.newest_serving_epoch);
        if current {
            for (i, (&got, &want)) in data.iter().zip(&expected).enumerate() {
                let b = first + i;
                if got < want.min(self.acked[b]) {
                    return Err(format!(
                        "(a) n{} answered a degraded read of block {b} with write #{got}, \
                         but write #{want} was acknowledged before the read",
                        node.0
                    ));
                }
            }
        }
        self.stats.degraded_reads += 1;
        Ok(())
    }

    fn host_flush(&mut self) -> Check {
        let Some(node) = self.host_target() else {
            return Ok(());
        };
        let id = self.next_host_id;
        self.next_host_id += 1;
        let flushes = self
            .acked
            .iter()
            .copied()
            .zip(self.acked_epoch.iter().copied())
            .collect();
        self.host_ops.insert(
            HostOpId(id),
            HostOp {
                node,
                write: None,
                fua: false,
                flushes: Some(flushes),
                read: None,
            },
        );
        self.deliver(node, Event::HostFlush { id: HostOpId(id) })
    }

    fn crash_random(&mut self) {
        let alive: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| self.alive(*n))
            .collect();
        if alive.len() <= 1 {
            return;
        }
        let Some(node) = self.rng.pick(&alive).copied() else {
            return;
        };
        let power_loss = self.rng.chance(500);
        self.crash(node, power_loss);
    }

    /// Kills `node`'s process, or with `power_loss` its machine: then the
    /// device loses what was not flushed, and acknowledged writes no flush
    /// covered are no longer promised anywhere.
    fn crash(&mut self, node: NodeId, power_loss: bool) {
        self.log(|| format!("crash n{} (power loss: {power_loss})", node.0));
        self.stats.crashes += 1;
        let n = &mut self.nodes[node.0 as usize];
        n.state = None;
        if power_loss {
            n.disk.crash(&mut self.rng);
            self.power_lost_at[node.0 as usize] = self.next_host_id;
            self.acked.clone_from(&self.guaranteed);
        } else {
            n.disk.kill(&mut self.rng);
        }
        // Its connections reset; the peers notice after a while.
        let links: Vec<LinkId> = self
            .net
            .connections
            .iter()
            .filter(|(_, c)| c.initiator == node || c.acceptor == node)
            .map(|(id, _)| *id)
            .collect();
        for link in links {
            self.reset(link);
        }
        // The host learns nothing about commands at that node: their
        // outcome is unknown, and it may write those blocks again.
        let lost: Vec<HostOpId> = self
            .host_ops
            .iter()
            .filter(|(_, op)| op.node == node)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.release(id);
        }
    }

    /// A node loses its device and comes back with a blank one (at most once
    /// a run: with W >= 2 every acknowledged write survives on another copy,
    /// and the node must be rebuilt by a full copy).
    fn replace_random_device(&mut self) {
        if self.device_replaced {
            return;
        }
        // A device loss on top of copies mid-resync, or of the copy that
        // was primary, is a double failure no quorum survives: only a
        // replica's, while every other copy is up to date.
        let all_consistent = self.nodes.iter().all(|n| n.disk.record.standing.consistent);
        let replicas: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| {
                let sim_node = &self.nodes[n.0 as usize];
                let standing = sim_node.disk.record.standing;
                // Nor a copy that was primary since (a deposed primary
                // claims all of its epoch): it may be the only complete
                // copy while the others are still being resynced.
                let was_primary = standing.consistent && standing.applied.index == u64::MAX;
                sim_node.state.as_ref().is_some_and(|s| !s.is_primary()) && !was_primary
            })
            .collect();
        if !all_consistent || replicas.len() <= 1 {
            return;
        }
        let Some(node) = self.rng.pick(&replicas).copied() else {
            return;
        };
        self.device_replaced = true;
        self.crash(node, true);
        self.log(|| format!("replace the device of n{}", node.0));
        let record = DurableRecord {
            membership: self.membership.clone(),
            standing: Standing::BLANK,
            intent: Vec::new(),
        };
        self.nodes[node.0 as usize].disk = Disk::new(BLOCKS, record);
        self.replaced_before_write[node.0 as usize] = Some(self.next_host_id);
    }

    fn restart_random(&mut self) {
        let down: Vec<NodeId> = self
            .node_ids()
            .into_iter()
            .filter(|n| !self.alive(*n))
            .collect();
        if let Some(node) = self.rng.pick(&down).copied() {
            self.log(|| format!("restart n{}", node.0));
            self.start_node(node);
        }
    }

    /// A connection dies at once (reset): what it still carried is lost,
    /// both ends learn after a delay.
    fn reset(&mut self, link: LinkId) {
        let Some(c) = self.net.connections.remove(&link) else {
            return;
        };
        for (node, peer) in [(c.initiator, c.acceptor), (c.acceptor, c.initiator)] {
            let at = self.now + self.rng.between(10_000, 2_000_000);
            self.schedule(at, SimEvent::LinkDown { link, node, peer });
        }
    }

    fn reset_random_connection(&mut self) {
        let links: Vec<LinkId> = self.net.connections.keys().copied().collect();
        if let Some(link) = self.rng.pick(&links).copied() {
            self.log(|| format!("reset link {}", link.0));
            self.reset(link);
        }
    }

    fn partition_random(&mut self) {
        let ids = self.node_ids();
        let a = *self.rng.pick(&ids).expect("nodes");
        let b = *self.rng.pick(&ids).expect("nodes");
        if a == b {
            return;
        }
        self.partition(a, b);
    }

    /// Cuts `a` from `b` for a while: their links reset, and none opens.
    fn partition(&mut self, a: NodeId, b: NodeId) {
        let until = self.now + self.rng.between(1_000_000, 30_000_000);
        self.log(|| format!("partition n{} | n{} until {until}", a.0, b.0));
        self.net.partitions.insert(Network::pair(a, b), until);
        let cut: Vec<LinkId> = self
            .net
            .connections
            .iter()
            .filter(|(_, c)| Network::pair(c.initiator, c.acceptor) == Network::pair(a, b))
            .map(|(id, _)| *id)
            .collect();
        for link in cut {
            self.reset(link);
        }
    }

    fn duplicate_random_frame(&mut self) {
        let links: Vec<LinkId> = self.net.connections.keys().copied().collect();
        let Some(link) = self.rng.pick(&links).copied() else {
            return;
        };
        let Some(c) = self.net.connections.get_mut(&link) else {
            return;
        };
        let to = c.acceptor;
        let Some(front) = c.toward_acceptor.front().cloned() else {
            return;
        };
        c.toward_acceptor.push_front(front);
        let at = c.last_delivery[0].max(self.now) + 1;
        c.last_delivery[0] = at;
        self.log(|| format!("duplicate a frame on link {}", link.0));
        self.schedule(at, SimEvent::Deliver { link, to });
    }

    /// Primaries open links to members they have none with.
    fn connect_links(&mut self) {
        for id in self.node_ids() {
            let Some(targets) = self.nodes[id.0 as usize]
                .state
                .as_ref()
                .filter(|s| s.is_primary())
                .map(|s| s.link_targets())
            else {
                continue;
            };
            for peer in targets {
                if peer == id
                    || !self.alive(peer)
                    || self.net.partitioned(id, peer, self.now)
                    || self.net.outbound(id, peer).is_some()
                    || !self.rng.chance(200)
                {
                    continue;
                }
                let link = LinkId(self.net.next_link);
                self.net.next_link += 1;
                self.net.connections.insert(
                    link,
                    Connection {
                        initiator: id,
                        acceptor: peer,
                        toward_acceptor: Default::default(),
                        toward_initiator: Default::default(),
                        last_delivery: [0; 2],
                        closing: false,
                    },
                );
                let at = self.now + self.rng.between(10_000, 200_000);
                // The acceptor learns first (it answers the handshake).
                self.schedule(
                    at,
                    SimEvent::LinkUp {
                        link,
                        node: peer,
                        peer: id,
                        direction: LinkDirection::Inbound,
                    },
                );
                self.schedule(
                    at + 1,
                    SimEvent::LinkUp {
                        link,
                        node: id,
                        peer,
                        direction: LinkDirection::Outbound,
                    },
                );
                // Deliveries on the link come after its set-up.
                if let Some(c) = self.net.connections.get_mut(&link) {
                    c.last_delivery = [at + 1; 2];
                }
            }
        }
    }

    fn process(&mut self, event: SimEvent) -> Check {
        match event {
            SimEvent::Deliver { link, to } => {
                let Some(c) = self.net.connections.get_mut(&link) else {
                    return Ok(());
                };
                let from = c.other(to);
                let Some((epoch, frame)) = c.queue_toward(to).pop_front() else {
                    return Ok(());
                };
                self.log(|| {
                    format!(
                        "n{} -> n{} link {} epoch {}: {}",
                        from.0,
                        to.0,
                        link.0,
                        epoch,
                        brief(&frame)
                    )
                });
                self.deliver(
                    to,
                    Event::Received {
                        peer: from,
                        link,
                        epoch,
                        frame,
                    },
                )
            }
            SimEvent::LinkUp {
                link,
                node,
                peer,
                direction,
            } => {
                if !self.net.connections.contains_key(&link) {
                    return Ok(());
                }
                self.log(|| {
                    format!(
                        "n{} link {} up to n{} {:?}",
                        node.0, link.0, peer.0, direction
                    )
                });
                self.deliver(
                    node,
                    Event::LinkUp {
                        peer,
                        link,
                        direction,
                    },
                )
            }
            SimEvent::LinkDown { link, node, peer } => {
                self.log(|| format!("n{} link {} down", node.0, link.0));
                self.deliver(node, Event::LinkDown { peer, link })
            }
            SimEvent::Close { link } => {
                self.reset(link);
                Ok(())
            }
            SimEvent::Disk {
                node,
                incarnation,
                token,
            } => {
                let n = &mut self.nodes[node.0 as usize];
                if n.incarnation != incarnation || n.state.is_none() {
                    return Ok(());
                }
                let Some(done) = n.disk.complete(token, &mut self.rng) else {
                    return Ok(());
                };
                let event = match done {
                    Completion::Write(ok) => Event::LocalWriteDone {
                        token,
                        result: if ok {
                            Ok(())
                        } else {
                            Err(crate::core::IoError)
                        },
                    },
                    Completion::Read(data) => Event::LocalReadDone {
                        token,
                        result: data.ok_or(crate::core::IoError),
                    },
                    Completion::Persisted => Event::Persisted { token },
                };
                self.deliver(node, event)
            }
        }
    }

    /// Feeds an event to a live node and carries out its actions.
    fn deliver(&mut self, node: NodeId, event: Event<Payload>) -> Check {
        let mut actions = Vec::new();
        {
            let Some(state) = self.nodes[node.0 as usize].state.as_mut() else {
                return Ok(());
            };
            state.handle(self.now, event, &mut actions);
        }
        for action in actions {
            self.perform(node, action)?;
        }
        Ok(())
    }

    fn perform(&mut self, node: NodeId, action: Action<Payload>) -> Check {
        let faults = self.step <= self.cfg.steps;
        match action {
            Action::Note { standing } => {
                self.nodes[node.0 as usize].disk.noted = Some(standing);
            }
            Action::LocalWrite {
                token,
                range,
                data,
                fua,
            } => {
                let first = (range.offset / u64::from(BLOCK_SIZE)) as usize;
                let fails = faults && self.rng.chance(5);
                let io = PendingIo::Write {
                    first,
                    data,
                    fua,
                    fails,
                };
                self.submit_io(node, token, io);
            }
            Action::LocalRead { token, range } => {
                let first = (range.offset / u64::from(BLOCK_SIZE)) as usize;
                let blocks = (range.len / BLOCK_SIZE) as usize;
                let fails = faults && self.rng.chance(5);
                self.submit_io(
                    node,
                    token,
                    PendingIo::Read {
                        first,
                        blocks,
                        fails,
                    },
                );
            }
            Action::Persist { token, record } => {
                self.submit_io(node, token, PendingIo::Persist { record })
            }
            Action::Send {
                peer,
                link,
                epoch,
                frame,
            } => {
                let slow = self.rng.chance(20);
                let delay = if slow {
                    self.rng.between(1_000_000, 8_000_000)
                } else {
                    self.rng.between(20_000, 300_000)
                };
                let Some(c) = self.net.connections.get_mut(&link) else {
                    return Ok(());
                };
                if c.closing || c.other(node) != peer {
                    return Ok(());
                }
                let dir = usize::from(peer != c.acceptor);
                let at = (self.now + delay).max(c.last_delivery[dir] + 1);
                c.last_delivery[dir] = at;
                c.queue_toward(peer).push_back((epoch, frame));
                self.schedule(at, SimEvent::Deliver { link, to: peer });
            }
            Action::CloseLink { link, .. } => {
                if let Some(c) = self.net.connections.get_mut(&link) {
                    c.closing = true;
                    let at = c.last_delivery[0].max(c.last_delivery[1]).max(self.now) + 1;
                    self.schedule(at, SimEvent::Close { link });
                }
            }
            Action::CompleteHost { id, status } => self.host_completion(node, id, status)?,
            Action::CompleteRead { id, data } => self.read_completion(node, id, &data)?,
        }
        Ok(())
    }

    fn submit_io(&mut self, node: NodeId, token: IoToken, io: PendingIo) {
        let slow = self.rng.chance(20);
        let latency = if slow {
            self.rng.between(500_000, 5_000_000)
        } else {
            self.rng.between(5_000, 100_000)
        };
        let n = &mut self.nodes[node.0 as usize];
        n.disk.pending.insert(token, io);
        let incarnation = n.incarnation;
        self.schedule(
            self.now + latency,
            SimEvent::Disk {
                node,
                incarnation,
                token,
            },
        );
    }

    fn release(&mut self, id: HostOpId) {
        if let Some(HostOp {
            write: Some((first, len, _)),
            ..
        }) = self.host_ops.remove(&id)
        {
            for b in first..first + len {
                self.locked.remove(&b);
            }
        }
    }

    fn host_completion(&mut self, node: NodeId, id: HostOpId, status: HostStatus) -> Check {
        let Some(op) = self.host_ops.get(&id) else {
            return Err(format!(
                "n{} completed host command {} the host never sent it (or twice)",
                node.0, id.0
            ));
        };
        if op.node != node {
            return Err(format!(
                "n{} completed host command {} sent to n{}",
                node.0, id.0, op.node.0
            ));
        }
        let (write, fua, flushes) = (op.write, op.fua, op.flushes.clone());
        if op.read.is_some() && status == HostStatus::Success {
            return Err(format!(
                "n{} completed read {} with success but no data",
                node.0, id.0
            ));
        }
        self.log(|| format!("n{} completes #{} {:?}", node.0, id.0, status));
        let epoch = self.nodes[node.0 as usize]
            .state
            .as_ref()
            .map(|s| s.epoch())
            .unwrap_or_default();
        if let (HostStatus::Success, Some((first, len, write_id))) = (status, write) {
            self.check_acknowledged_write(node, first, len, write_id, fua)?;
            for b in first..first + len {
                if write_id > self.acked[b] {
                    self.acked[b] = write_id;
                    self.acked_epoch[b] = epoch;
                }
                if fua {
                    self.guaranteed[b] = self.guaranteed[b].max(write_id);
                }
            }
            self.stats.acked_writes += 1;
        }
        if let (HostStatus::Success, Some(flushes)) = (status, flushes) {
            self.check_flush(node, epoch, &flushes)?;
            for (b, (write_id, _)) in flushes.iter().enumerate() {
                self.guaranteed[b] = self.guaranteed[b].max(*write_id);
            }
        }
        if status == HostStatus::PathError {
            self.stats.path_errors += 1;
        }
        self.release(id);
        Ok(())
    }

    /// (d) the write is on at least W copies when acknowledged — in their
    /// devices' durable state for FUA, at least in their caches otherwise —
    /// and (c) no newer serving primary lacks it: a deposed primary never
    /// acknowledges a write the new epoch would lose.
    fn check_acknowledged_write(
        &self,
        node: NodeId,
        first: usize,
        len: usize,
        id: u64,
        fua: bool,
    ) -> Check {
        // A copy whose device was replaced after the write was submitted
        // may have held it when it acknowledged: the loss came later.
        let copies = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(i, n)| {
                self.replaced_before_write[*i].is_some_and(|next_id| next_id > id)
                    || (!fua && self.power_lost_at[*i] > id)
                    || (first..first + len).all(|b| {
                        if fua {
                            n.disk.durable[b] >= id
                        } else {
                            n.disk.visible(b) >= id
                        }
                    })
            })
            .count();
        let quorum = self.write_quorum_of(node);
        if copies < quorum {
            return Err(format!(
                "(d) write #{id} (fua {fua}) acknowledged by n{} on {copies} copies, write quorum {quorum}",
                node.0
            ));
        }
        let epoch = self.nodes[node.0 as usize]
            .state
            .as_ref()
            .map(|s| s.epoch())
            .unwrap_or_default();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(state) = &n.state else { continue };
            if state.is_serving()
                && state.epoch() > epoch
                && (first..first + len).any(|b| n.disk.visible(b) < id)
            {
                return Err(format!(
                    "(c) n{} acknowledged write #{id} in epoch {epoch}, but n{i} serves epoch {} without it",
                    node.0,
                    state.epoch()
                ));
            }
        }
        Ok(())
    }

    /// (e) a flush completed by the primary of `epoch`: every write that
    /// primary acknowledged before the flush was sent is durable on at
    /// least W copies. (Writes a former primary acknowledged are durable at
    /// least on the new primary once it serves — the election persisted
    /// them — and on the others once resynced.)
    fn check_flush(&self, node: NodeId, epoch: Epoch, flushes: &[(u64, Epoch)]) -> Check {
        let quorum = self.write_quorum_of(node);
        for (b, (id, acked_in)) in flushes.iter().enumerate() {
            if *acked_in != epoch || *id == 0 {
                continue;
            }
            let copies = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(i, n)| {
                    self.replaced_before_write[*i].is_some_and(|next_id| next_id > *id)
                        || n.disk.durable[b] >= *id
                })
                .count();
            if copies < quorum {
                return Err(format!(
                    "(e) n{} completed a flush in epoch {epoch} with block {b} (write #{id}) durable on {copies} copies, write quorum {quorum}",
                    node.0
                ));
            }
        }
        Ok(())
    }

    /// (a) the serving primary of the newest epoch reads every acknowledged
    /// write (or something newer) for every block.
    ///
    /// The current primary is the node serving the newest epoch that ever
    /// served; while it is down there is none (a deposed primary that has
    /// not noticed yet may still serve its stale epoch).
    fn check_newest_primary_has_acked_writes(&mut self) -> Check {
        let newest = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.state
                    .as_ref()
                    .filter(|s| s.is_serving())
                    .map(|s| (s.epoch(), i))
            })
            .max();
        let Some((epoch, i)) = newest else {
            return Ok(());
        };
        if epoch < self.newest_serving_epoch {
            return Ok(());
        }
        if epoch > self.newest_serving_epoch {
            self.stats.primaries_served += 1;
        }
        self.newest_serving_epoch = epoch;
        let disk = &self.nodes[i].disk;
        for b in 0..BLOCKS {
            if disk.visible(b) < self.acked[b] {
                return Err(format!(
                    "(a) n{i}, serving epoch {epoch}, reads block {b} as write #{} but write #{} was acknowledged",
                    disk.visible(b),
                    self.acked[b]
                ));
            }
        }
        Ok(())
    }

    fn is_converged(&self) -> bool {
        let primaries: Vec<&Node<Payload>> = self
            .nodes
            .iter()
            .filter_map(|n| n.state.as_ref())
            .filter(|s| s.is_primary())
            .collect();
        primaries.len() == 1
            && primaries[0].is_quiet()
            && self.host_ops.is_empty()
            && self
                .queue
                .values()
                .all(|e| !matches!(e, SimEvent::Deliver { .. } | SimEvent::Disk { .. }))
            && self.nodes.iter().all(|n| n.disk.pending.is_empty())
    }

    /// (b) healed and quiet, every copy is identical, durably (every
    /// member's: a node removed from the membership keeps what it had).
    fn check_converged(&mut self) -> Check {
        self.check_newest_primary_has_acked_writes()?;
        let (reference, membership): (Vec<u64>, Membership) = {
            let (p, state) = self
                .nodes
                .iter()
                .find_map(|n| n.state.as_ref().filter(|s| s.is_primary()).map(|s| (n, s)))
                .expect("primary");
            (
                (0..BLOCKS).map(|b| p.disk.visible(b)).collect(),
                state.membership().clone(),
            )
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if membership.mode_of(NodeId(i as u64)).is_none() {
                continue;
            }
            for (b, expected) in reference.iter().enumerate() {
                if n.disk.visible(b) != *expected || n.disk.durable[b] != *expected {
                    return Err(format!(
                        "(b) n{i} block {b} holds #{} (durable #{}), the primary #{expected}; {}",
                        n.disk.visible(b),
                        n.disk.durable[b],
                        self.describe()
                    ));
                }
            }
        }
        self.stats.max_epoch = self
            .nodes
            .iter()
            .filter_map(|n| n.state.as_ref())
            .map(|s| s.epoch().0)
            .max()
            .unwrap_or(0);
        Ok(())
    }
}

/// The bytes of `len` blocks from block `first`.
fn block_range(first: usize, len: u64) -> ByteRange {
    ByteRange::new(
        first as u64 * u64::from(BLOCK_SIZE),
        len as u32 * BLOCK_SIZE,
    )
}

/// A one-line description of a frame for traces.
fn brief(frame: &crate::core::Frame<Payload>) -> String {
    use crate::core::Frame;
    match frame {
        Frame::Write {
            seq,
            position,
            range,
            data,
            ..
        } => format!(
            "Write seq {} pos {:?} block {} data {:?}",
            seq.0,
            position.map(|p| (p.epoch.0, p.index)),
            range.offset / u64::from(BLOCK_SIZE),
            data
        ),
        Frame::Resync { seq, op } => format!("Resync seq {} {:?}", seq.0, op),
        Frame::EpochChange { seq, .. } => format!("EpochChange seq {}", seq.0),
        Frame::Ack {
            durable_through,
            standing,
        } => format!("Ack {} {:?}", durable_through.0, standing),
        Frame::Applied { applied_through } => format!("Applied {}", applied_through.0),
        Frame::Flush { seq } => format!("Flush seq {}", seq.0),
        Frame::Nack { seq, reason } => format!("Nack {} {:?}", seq.0, reason),
        Frame::ReadRequest { seq, range } => format!(
            "ReadRequest seq {} block {}",
            seq.0,
            range.offset / u64::from(BLOCK_SIZE)
        ),
        Frame::ReadResponse { seq, data, .. } => format!("ReadResponse {} {:?}", seq.0, data),
    }
}
