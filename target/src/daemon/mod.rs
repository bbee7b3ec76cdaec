//! keeld: the NVMe/TCP target daemon on the engine.
//!
//! [`Daemon::start`] opens the volumes, binds the listeners and starts one
//! engine shard per core. Shard 0 accepts connections and hands them out
//! round robin; each connection lives on one shard from ICReq to close, and
//! its commands run on that shard's ring (sockets and disk alike) with the
//! shard's registered buffers. Subsystems, controllers and discovery are the
//! sans-IO [`crate::controller::Target`], shared by the shards.
//!
//! Modules: `handler` (the per-shard state machine), `connection` (socket,
//! receive buffer, PDUs out), `send_queue` (bytes out through pool
//! buffers, for connections and replication links), `command` (one I/O command's buffers and
//! state), `shared` (the target behind its lock), `tags` (ring operation
//! tags), [`config`] (keel.toml and the quick-start flags).

pub mod config;

mod command;
mod connection;
mod control;
mod faults;
mod handler;
mod metrics;
pub mod replication;
mod send_queue;
mod shared;
mod tags;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use keel_engine::backend::OpenOptions;
use keel_engine::{
    BlockBackend, Engine, EngineConfig, EngineError, FileBackend, MemoryBackend, PoolConfig,
    ShardId,
};

use crate::controller::{BlockGeometry, Listener, Namespace, Subsystem, Target, TargetLimits};
use crate::nvme::discovery::AddressFamily;
use crate::rpc::RpcServer;
use config::{Backend, DaemonConfig};
use control::ControlService;
pub use handler::Message;
use handler::{ReplicatedVolume, ShardHandler, Volume};
use metrics::{Metrics, MetricsServer};
use shared::Shared;

use std::path::{Path, PathBuf};

use keel_replicator::auth::PreSharedKey;
use keel_replicator::core::{DurableRecord, Geometry as ReplGeometry, Position, Standing};
use keel_replicator::wire::{Epoch, RegionIndex};
use replication::driver::{Published, Replicator, ReplicatorSetup};
use replication::links::{LinkControl, LinkSetup};
use replication::record::{self as repl_record, StoredRecord};
use replication::{FreshCopy, Transport};
use replication::{ReplicationOptions, REGION_SIZE};

/// Bytes per engine buffer. Commands larger than this use several.
const BUFFER_SIZE: usize = 128 << 10;
/// Firmware revision reported in Identify Controller.
const FIRMWARE: &str = env!("CARGO_PKG_VERSION");

/// Why keeld could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be opened.
    #[error("control socket {path}: {source}")]
    Rpc {
        /// The socket's path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics endpoint could not be started.
    #[error("{0}")]
    Metrics(std::io::Error),
    /// A namespace's backend could not be opened.
    #[error("subsystem {nqn} namespace {nsid}: {message}")]
    Backend {
        /// Subsystem.
        nqn: String,
        /// Namespace.
        nsid: u32,
        /// What went wrong.
        message: String,
    },
    /// The configuration was refused by the target.
    #[error("{0}")]
    Config(String),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Engine settings keeld picks (the rest comes from the configuration).
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Engine buffers per shard (each [`BUFFER_SIZE`] bytes).
    pub buffers_per_shard: usize,
    /// How long a shard keeps polling after its last event.
    pub spin: Duration,
    /// Pin each shard to a CPU.
    pub pin: bool,
    /// Serve Prometheus metrics over HTTP here (off when None).
    pub metrics: Option<SocketAddr>,
    /// Serve the JSON-RPC control API (keelctl) on this Unix socket.
    pub rpc_socket: Option<std::path::PathBuf>,
    /// Replicate the (single) volume to other keeld nodes.
    pub replication: Option<ReplicationOptions>,
    /// Wrap every backend in a fault-injecting one, driven over the control
    /// socket (`fault_inject`). For tests only.
    pub fault_injection: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            buffers_per_shard: 1024,
            spin: Duration::from_micros(200),
            pin: true,
            metrics: None,
            rpc_socket: None,
            replication: None,
            fault_injection: false,
        }
    }
}

/// A running keeld.
pub struct Daemon {
    engine: Engine<Message>,
    addrs: Vec<SocketAddr>,
    metrics_server: Option<MetricsServer>,
    rpc: Option<RpcServer>,
    links: Option<LinkControl>,
    clean_stop: Option<CleanStop>,
}

/// What a clean stop of a replicating keeld marks: its note, once its
/// backend is flushed (`NoteFile::mark_clean`).
struct CleanStop {
    note: Arc<std::sync::Mutex<replication::note::NoteFile>>,
    backend: PathBuf,
}

impl CleanStop {
    /// Every write this copy acknowledged completed before its shards
    /// stopped; after a device flush its last note says exactly what it
    /// holds, in the next boot too, so a reboot does not make it amnesiac.
    fn mark(&self) {
        let flushed = std::fs::File::open(&self.backend).and_then(|f| f.sync_all());
        let marked = flushed.and_then(|()| {
            self.note
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .mark_clean()
        });
        match marked {
            Ok(()) => {
                tracing::info!("replication: stopped cleanly, the note holds across a reboot")
            }
            Err(error) => tracing::warn!(
                %error,
                backend = %self.backend.display(),
                "replication: not marked as stopped cleanly (the copy will be amnesiac after a reboot)"
            ),
        }
    }
}

/// Replication prepared before the shards start.
struct ReplPlan {
    setup: ReplicatorSetup,
    backend_path: PathBuf,
    record_backend: Arc<dyn BlockBackend>,
    listener: TcpListener,
    options: ReplicationOptions,
}

/// Controller IDs per node: the copies of a replicated volume expose one
/// NVM subsystem, and a multipath host refuses a second controller of a
/// subsystem with a CNTLID it already holds ("Duplicate cntlid"), so each
/// node hands out its own block of `max_controllers` IDs, chosen by its
/// node id (node ids equal modulo the number of blocks share one).
fn controller_ids(
    limits: TargetLimits,
    node: Option<keel_replicator::wire::NodeId>,
) -> TargetLimits {
    let Some(node) = node else {
        return limits;
    };
    let block = limits.max_controllers.max(1);
    let blocks = u64::from((limits.cntlid_max - limits.cntlid_min + 1) / block).max(1);
    let index = u16::try_from(node.0 % blocks).unwrap_or(0);
    let cntlid_min = limits.cntlid_min + index * block;
    TargetLimits {
        cntlid_min,
        cntlid_max: cntlid_min + (block - 1),
        ..limits
    }
}

struct OpenVolume {
    nqn: String,
    nsid: u32,
    backend: Arc<dyn BlockBackend>,
}

impl Daemon {
    /// Opens every volume, binds every listener and starts the shards.
    pub fn start(config: &DaemonConfig, runtime: &RuntimeOptions) -> Result<Daemon, DaemonError> {
        let limits = controller_ids(
            TargetLimits::default(),
            runtime.replication.as_ref().map(|r| r.node),
        );
        let mut target = Target::new(limits);
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut addrs = Vec::with_capacity(config.listeners.len());
        for (index, listener) in config.listeners.iter().enumerate() {
            let socket =
                TcpListener::bind(listener.addr).map_err(|source| DaemonError::Listen {
                    addr: listener.addr,
                    source,
                })?;
            let addr = socket.local_addr().map_err(|source| DaemonError::Listen {
                addr: listener.addr,
                source,
            })?;
            let family = if addr.is_ipv4() {
                AddressFamily::Ipv4
            } else {
                AddressFamily::Ipv6
            };
            let port_id = u16::try_from(index + 1).unwrap_or(u16::MAX);
            let entry = Listener::new(
                port_id,
                family,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            )
            .map_err(|e| DaemonError::Config(format!("listener {addr}: {e}")))?;
            target
                .add_listener(entry)
                .map_err(|e| DaemonError::Config(format!("listener {addr}: {e}")))?;
            tracing::info!(%addr, "listening");
            listeners.push(socket);
            addrs.push(addr);
        }

        let mut fault_plans = runtime.fault_injection.then(|| {
            tracing::warn!("fault injection is on: for tests only");
            faults::FaultPlans::default()
        });
        let mut volumes = Vec::new();
        for sub in &config.subsystems {
            let serial = sub
                .serial
                .clone()
                .unwrap_or_else(|| default_serial(&sub.nqn));
            let model = sub
                .model
                .clone()
                .unwrap_or_else(|| "Keel volume".to_string());
            let config_error = |e: crate::controller::ConfigError| {
                DaemonError::Config(format!("subsystem {}: {e}", sub.nqn))
            };
            let mut subsystem =
                Subsystem::new(&sub.nqn, &serial, &model, FIRMWARE).map_err(config_error)?;
            if sub.allowed_hosts.is_empty() {
                tracing::warn!(nqn = %sub.nqn, "no allowed hosts configured: ANY host may connect");
            }
            for host in &sub.allowed_hosts {
                subsystem.allow_host(host).map_err(config_error)?;
            }
            for ns in &sub.namespaces {
                let backend_error = |message: String| DaemonError::Backend {
                    nqn: sub.nqn.clone(),
                    nsid: ns.nsid,
                    message,
                };
                let backend: Arc<dyn BlockBackend> = match &ns.backend {
                    Backend::Memory => {
                        let size = ns
                            .size
                            .ok_or_else(|| backend_error("a memory backend needs a size".into()))?;
                        Arc::new(MemoryBackend::new(size, ns.block_size).map_err(backend_error)?)
                    }
                    Backend::Path(path) => {
                        let options = OpenOptions {
                            size: ns.size,
                            block_size: Some(ns.block_size),
                        };
                        Arc::new(
                            FileBackend::open(path, &options)
                                .map_err(|e| backend_error(format!("{}: {e}", path.display())))?,
                        )
                    }
                };
                let backend = match &fault_plans {
                    Some(plans) => faults::wrap(&plans.data, backend),
                    None => backend,
                };
                let geometry = backend.geometry();
                let blocks = geometry.capacity / u64::from(geometry.block_size);
                let block_geometry =
                    BlockGeometry::new(geometry.block_size, blocks).map_err(config_error)?;
                let (nguid, uuid) = namespace_identity(&sub.nqn, ns.nsid);
                subsystem
                    .add_namespace(ns.nsid, Namespace::new(block_geometry, nguid, uuid))
                    .map_err(config_error)?;
                tracing::info!(
                    nqn = %sub.nqn,
                    nsid = ns.nsid,
                    backend = %backend.describe(),
                    bytes = geometry.capacity,
                    block_size = geometry.block_size,
                    "namespace ready"
                );
                volumes.push(OpenVolume {
                    nqn: sub.nqn.clone(),
                    nsid: ns.nsid,
                    backend,
                });
            }
            target.add_subsystem(subsystem).map_err(config_error)?;
        }

        let mut repl_plan = match &runtime.replication {
            Some(options) => Some(plan_replication(config, options, &volumes)?),
            None => None,
        };
        if let (Some(plans), Some(repl)) = (&mut fault_plans, &mut repl_plan) {
            let plan = keel_engine::backend::FaultPlan::new();
            repl.record_backend = faults::wrap(&plan, repl.record_backend.clone());
            plans.record = Some(plan);
        }
        let published = repl_plan.as_ref().map(|p| p.setup.published.clone());
        let repl_setup = repl_plan
            .as_ref()
            .map(|p| (p.setup.clone(), p.record_backend.clone()));

        let shared = Arc::new(Shared::new(target));
        let control = ControlService::new(shared.clone());
        let control = match fault_plans {
            Some(plans) => control.with_faults(Arc::new(plans)),
            None => control,
        };
        let control = Arc::new(match (&published, &runtime.replication) {
            (Some(published), Some(options)) => {
                control.with_replication(published.clone(), options.clone())
            }
            _ => control,
        });
        let listeners = Arc::new(listeners);
        let names: Vec<(String, u32)> = volumes.iter().map(|v| (v.nqn.clone(), v.nsid)).collect();
        let metrics = Arc::new(Metrics::new(&names, config.cores.max(1)));
        let volumes = Arc::new(volumes);
        let metrics_server = match runtime.metrics {
            Some(addr) => {
                let metrics = metrics.clone();
                let shared = shared.clone();
                let published = published.clone();
                let server = MetricsServer::start(addr, move || {
                    let controllers = shared.lock().target.controller_count();
                    let mut text = metrics.render(controllers);
                    if let Some(published) = &published {
                        text.push_str(&published.render());
                    }
                    text
                })
                .map_err(DaemonError::Metrics)?;
                tracing::info!(addr = %server.addr(), "metrics at http://{}/metrics", server.addr());
                Some(server)
            }
            None => None,
        };
        let handler_metrics = metrics.clone();
        let engine_config = EngineConfig {
            shards: config.cores.max(1),
            pin: runtime.pin,
            spin: runtime.spin,
            pool: PoolConfig {
                slot_size: BUFFER_SIZE,
                slots: runtime.buffers_per_shard.max(64),
                hugepages: true,
            },
            max_inflight: 64 * 1024,
            ..EngineConfig::default()
        };
        let engine = Engine::start(engine_config, move |shard| {
            let mut attached = Vec::with_capacity(volumes.len());
            for (index, volume) in volumes.iter().enumerate() {
                let device = shard.attach(volume.backend.clone())?;
                attached.push(Volume {
                    nqn: volume.nqn.clone(),
                    nsid: volume.nsid,
                    device,
                    index,
                });
            }
            // Every shard serves the replicated volume's host queues; shard 0
            // owns its state machine and the others hand it their writes.
            let repl = match &repl_setup {
                Some((setup, record_backend)) => {
                    let data = attached
                        .first()
                        .map(|v| v.device)
                        .ok_or_else(|| std::io::Error::other("no volume to replicate"))?;
                    let replicator = if shard.id() == ShardId(0) {
                        let record = shard.attach(record_backend.clone())?;
                        Some(Replicator::new(shard, setup.clone(), data, record))
                    } else {
                        None
                    };
                    Some(ReplicatedVolume {
                        device: data,
                        published: setup.published.clone(),
                        replicator,
                    })
                }
                None => None,
            };
            Ok(ShardHandler::new(
                shard,
                shared.clone(),
                handler_metrics.clone(),
                listeners.clone(),
                attached,
                repl,
            ))
        })?;
        // After the shards run, so no control call arrives before them.
        control.set_sender(engine.sender());
        let rpc = match &runtime.rpc_socket {
            Some(path) => {
                Some(
                    RpcServer::start(path, control).map_err(|source| DaemonError::Rpc {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let clean_stop = repl_plan.as_ref().map(|p| CleanStop {
            note: p.setup.note.clone(),
            backend: p.backend_path.clone(),
        });
        let links = match repl_plan {
            Some(plan) => {
                let key = PreSharedKey::new(&plan.options.psk)
                    .map_err(|e| DaemonError::Config(format!("pre-shared key: {e}")))?;
                let setup = LinkSetup {
                    me: plan.options.node,
                    volume: plan.options.volume,
                    key,
                    listener: plan.listener,
                    rdma_listen: plan
                        .options
                        .members
                        .iter()
                        .any(|m| m.node == plan.options.node && m.transport == Transport::Rdma)
                        .then_some(plan.options.listen),
                    // Every node dials, but only while it is primary: a
                    // promoted replica must reach the others too.
                    dial: true,
                    published: plan.setup.published.clone(),
                    sender: engine.sender(),
                };
                Some(
                    LinkControl::start(setup)
                        .map_err(|e| DaemonError::Config(format!("replication threads: {e}")))?,
                )
            }
            None => None,
        };
        Ok(Daemon {
            engine,
            addrs,
            metrics_server,
            rpc,
            links,
            clean_stop,
        })
    }

    /// The addresses listened on (with the port the kernel chose for 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Where the metrics endpoint listens, if it runs.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::addr)
    }

    /// Stops accepting, lets every connection finish the commands it has
    /// (up to a grace period), closes them and stops the shards.
    pub fn shutdown(mut self) -> Result<(), DaemonError> {
        // No control calls while draining.
        if let Some(rpc) = self.rpc.take() {
            rpc.stop();
        }
        if let Some(server) = self.metrics_server.take() {
            server.stop();
        }
        if let Some(links) = self.links.take() {
            links.stop();
        }
        for index in 0..self.engine.shards() {
            let mut msg = Message::Shutdown;
            loop {
                match self.engine.send(ShardId(index), msg) {
                    Ok(()) => break,
                    Err(back) => {
                        msg = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        let reports = self.engine.join()?;
        for report in reports {
            tracing::info!(
                shard = report.shard.0,
                cpu = ?report.cpu,
                ring = %report.ring,
                cpu_time = ?report.cpu_time,
                loops = report.stats.loops,
                completions = report.stats.completions,
                sleeps = report.stats.sleeps,
                wall_time = ?report.wall_time,
                "shard stopped"
            );
        }
        if let Some(clean) = self.clean_stop.take() {
            clean.mark();
        }
        Ok(())
    }
}

/// A serial number that is stable for a subsystem NQN.
fn default_serial(nqn: &str) -> String {
    let a = crc32c::crc32c(nqn.as_bytes());
    let b = crc32c::crc32c_append(a, b"serial");
    format!("{a:08X}{b:08X}")
}

/// NGUID and UUID stable for (NQN, NSID): every copy of a volume, and every
/// restart, shows the host the same namespace identity.
fn namespace_identity(nqn: &str, nsid: u32) -> ([u8; 16], [u8; 16]) {
    let mut words = [0u32; 8];
    let mut crc = crc32c::crc32c_append(crc32c::crc32c(nqn.as_bytes()), &nsid.to_le_bytes());
    for word in &mut words {
        crc = crc32c::crc32c_append(crc, b"keel-namespace");
        *word = crc;
    }
    let mut nguid = [0u8; 16];
    let mut uuid = [0u8; 16];
    for (index, word) in words.iter().enumerate() {
        let bytes = word.to_be_bytes();
        if index < 4 {
            nguid[index * 4..index * 4 + 4].copy_from_slice(&bytes);
        } else {
            uuid[(index - 4) * 4..(index - 4) * 4 + 4].copy_from_slice(&bytes);
        }
    }
    // RFC 9562 version 8 (vendor-defined), variant 10.
    uuid[6] = (uuid[6] & 0x0F) | 0x80;
    uuid[8] = (uuid[8] & 0x3F) | 0x80;
    (nguid, uuid)
}

/// The sidecar file holding a replicated volume's durable record.
pub fn record_path(backend: &Path) -> PathBuf {
    let mut name = backend.as_os_str().to_owned();
    name.push(".keelrec");
    PathBuf::from(name)
}

/// Checks that replication can run with this configuration, reads (or
/// creates) the durable record, binds the replication listener.
fn plan_replication(
    config: &DaemonConfig,
    options: &ReplicationOptions,
    volumes: &[OpenVolume],
) -> Result<ReplPlan, DaemonError> {
    let err = |m: String| DaemonError::Config(format!("replication: {m}"));
    options.validate().map_err(err)?;
    let [volume] = volumes else {
        return Err(err(format!(
            "replicates exactly one namespace ({} configured)",
            volumes.len()
        )));
    };
    let backend_path = config
        .subsystems
        .iter()
        .flat_map(|s| s.namespaces.iter())
        .find_map(|ns| match &ns.backend {
            Backend::Path(path) => Some(path.clone()),
            Backend::Memory => None,
        })
        .ok_or_else(|| err("needs a file or block device backend (not memory)".into()))?;
    let geometry = volume.backend.geometry();
    if geometry.capacity == 0 || !geometry.capacity.is_multiple_of(u64::from(REGION_SIZE)) {
        return Err(err(format!(
            "the volume size ({} bytes) must be a multiple of the {} byte region",
            geometry.capacity, REGION_SIZE
        )));
    }
    let repl_geometry = ReplGeometry::new(
        geometry.block_size,
        REGION_SIZE,
        geometry.capacity / u64::from(REGION_SIZE),
    )
    .ok_or_else(|| err("volume too large for the write-intent bitmap".into()))?;

    let path = record_path(&backend_path);
    let stored = read_record(&path, options, repl_geometry).map_err(err)?;
    let (note, noted) = replication::note::NoteFile::open(
        &replication::note::note_path(&backend_path),
        options.volume,
    )
    .map_err(err)?;
    // A record created just now (generation 0; every written one is 1 or
    // more) acknowledged nothing yet: its standing is exactly known, so no
    // note is needed to say the copy is not amnesiac.
    let noted = noted.or_else(|| (stored.generation == 0).then_some(stored.record.standing));
    let me = options.node;
    // A new volume's first primary takes over at once; restarted, it first
    // gives a primary promoted meanwhile 3 s (60 ticks; the dialers back
    // off to 2 s) to reach it.
    let promote = (options.primary == me).then_some(replication::driver::PendingPromote {
        recorded: stored.record.standing.epoch,
        after_ticks: if stored.generation == 0 { 0 } else { 60 },
    });
    tracing::info!(
        record = %path.display(),
        generation = stored.generation,
        epoch = %stored.record.standing.epoch,
        synced = %stored.record.standing.synced,
        consistent = stored.record.standing.consistent,
        ?promote,
        "replication record"
    );
    let record_backend: Arc<dyn BlockBackend> = Arc::new(
        FileBackend::open(
            &path,
            &OpenOptions {
                size: Some(repl_record::FILE_LEN),
                block_size: None,
            },
        )
        .map_err(|e| err(format!("record file {}: {e}", path.display())))?,
    );
    if record_backend.geometry().capacity < repl_record::FILE_LEN {
        return Err(err(format!("record file {} is too short", path.display())));
    }
    let published = Published::new(me, &options.members);
    learn_recorded_addresses(&published, &stored);
    let listener = TcpListener::bind(options.listen).map_err(|source| DaemonError::Listen {
        addr: options.listen,
        source,
    })?;
    tracing::info!(addr = %options.listen, node = %me, "replication listening");
    let setup = ReplicatorSetup {
        me,
        volume: options.volume,
        geometry: repl_geometry,
        stored,
        note: Arc::new(std::sync::Mutex::new(note)),
        noted,
        promote,
        published: Arc::new(published),
        async_lag: options.async_lag,
        link_timeout: options.link_timeout,
        read_lease: options.read_lease,
        resync_rate: options.resync_rate,
    };
    Ok(ReplPlan {
        setup,
        backend_path,
        record_backend,
        listener,
        options: options.clone(),
    })
}

/// Copies of the recorded membership that the flags do not name (added at
/// run time) are reached where the record says; the flags win for the
/// others, so an operator can move a copy by changing them.
fn learn_recorded_addresses(published: &Published, stored: &StoredRecord) {
    let membership = &stored.record.membership;
    for copy in &stored.addresses {
        let Some(mode) = membership.mode_of(copy.node) else {
            continue;
        };
        let member = replication::MemberAddress {
            node: copy.node,
            addr: copy.addr,
            mode,
            transport: copy.transport,
        };
        if published.roster.learn(member) {
            tracing::info!(node = %copy.node, addr = %copy.addr, "replication: a copy's address from the record");
        }
    }
}

/// The node's durable record: the newest valid slot of the record file, or
/// for a node that has none yet the record of a fresh volume.
///
/// Fresh, for a new volume (`--bootstrap`, and always for the first
/// primary): every copy is in epoch 1, synced in epoch 1, and consistent,
/// as if node `--primary` had been their primary; that primary's bitmap
/// marks every region dirty, so when it takes epoch 2 it copies the whole
/// volume to every replica (the backing files need not be identical at the
/// start). A replica marked blank (`synced = 0`) instead could never count
/// toward the election's fence quorum, and no new volume could start.
///
/// Fresh, for a copy on a new disk joining a running volume (`--new-copy`):
/// blank. Claiming "synced in epoch 1" there would make the primary (the
/// primary of epoch 1 in its own record) resync it from its bitmap only,
/// leaving every region written since as holes on the new disk — the test
/// `a_replica_on_a_new_empty_disk_ends_identical_to_the_primary` caught it.
/// With neither flag a replica without a record refuses to start.
fn read_record(
    path: &Path,
    options: &ReplicationOptions,
    geometry: ReplGeometry,
) -> Result<StoredRecord, String> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("record file {}: {e}", path.display())),
    };
    if let Some(bytes) = &bytes {
        let (newest, problems) = repl_record::newest(bytes);
        if let Some(stored) = newest {
            if stored.volume != options.volume {
                return Err(format!(
                    "record file {} belongs to volume {}, not {}",
                    path.display(),
                    stored.volume,
                    options.volume
                ));
            }
            if stored.region_size != geometry.region_size()
                || stored.region_count != geometry.region_count()
            {
                return Err(format!(
                    "record file {} describes {} regions of {} bytes, the volume has {} of {}",
                    path.display(),
                    stored.region_count,
                    stored.region_size,
                    geometry.region_count(),
                    geometry.region_size()
                ));
            }
            if stored.record.membership.mode_of(options.node).is_none() {
                // Removed by a membership change: serving again could
                // resurrect data the volume moved past.
                return Err(format!(
                    "record file {}: node {} is not a member of the volume (removed from it, or \
                     the wrong --node-id for this disk); a removed copy cannot serve again: to \
                     reuse this disk, delete the record, start keeld with --new-copy and add it \
                     with replica_add",
                    path.display(),
                    options.node
                ));
            }
            if stored.record.membership.members != options.membership().members {
                tracing::warn!(
                    "the --member list differs from the recorded membership; the record wins"
                );
            }
            return Ok(stored);
        }
        if bytes.iter().any(|&b| b != 0) {
            return Err(format!(
                "record file {} is damaged ({}); refusing to start",
                path.display(),
                problems.join("; ")
            ));
        }
    }
    let primary = options.primary == options.node;
    if !primary {
        match options.fresh {
            FreshCopy::Bootstrap => {}
            FreshCopy::Blank => {
                return Ok(StoredRecord {
                    generation: 0,
                    volume: options.volume,
                    region_size: geometry.region_size(),
                    region_count: geometry.region_count(),
                    record: DurableRecord {
                        membership: options.membership(),
                        standing: Standing::BLANK,
                        intent: Vec::new(),
                    },
                    addresses: Vec::new(),
                });
            }
            FreshCopy::Refuse => {
                return Err(format!(
                    "no replication record at {}: start every copy of a new volume with \
                     --bootstrap, or a copy on a new disk joining a running volume with \
                     --new-copy",
                    path.display()
                ))
            }
        }
    }
    let standing = Standing {
        epoch: Epoch(1),
        synced: Epoch(1),
        applied: if primary {
            Position::all_of(Epoch(1))
        } else {
            Position::ZERO
        },
        consistent: true,
        amnesiac: false,
    };
    let intent = if primary {
        geometry.regions().collect()
    } else {
        Vec::<RegionIndex>::new()
    };
    Ok(StoredRecord {
        generation: 0,
        volume: options.volume,
        region_size: geometry.region_size(),
        region_count: geometry.region_count(),
        record: DurableRecord {
            membership: options.membership(),
            standing,
            intent,
        },
        addresses: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_replicator::wire::NodeId;

    #[test]
    fn each_node_hands_out_its_own_controller_ids() {
        let all = TargetLimits::default();
        let plain = controller_ids(all, None);
        assert_eq!((plain.cntlid_min, plain.cntlid_max), (1, 0xFFEF));
        let ranges: Vec<(u16, u16)> = (1..=3)
            .map(|n| controller_ids(all, Some(NodeId(n))))
            .map(|l| (l.cntlid_min, l.cntlid_max))
            .collect();
        assert_eq!(ranges, [(1025, 2048), (2049, 3072), (3073, 4096)]);
        let last = controller_ids(all, Some(NodeId(62)));
        assert_eq!(last.cntlid_max, 63 * 1024);
        assert!(last.cntlid_max <= 0xFFEF);
        let wrapped = controller_ids(all, Some(NodeId(63)));
        assert_eq!(wrapped.cntlid_min, 1, "63 blocks of 1024");
    }
}
