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
//! receive buffer, send queue), `command` (one I/O command's buffers and
//! state), `shared` (the target behind its lock), `tags` (ring operation
//! tags), [`config`] (keel.toml and the quick-start flags).

pub mod config;

mod command;
mod connection;
mod control;
mod handler;
mod metrics;
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
use handler::{ShardHandler, Volume};
use metrics::{Metrics, MetricsServer};
use shared::Shared;

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
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            buffers_per_shard: 1024,
            spin: Duration::from_micros(200),
            pin: true,
            metrics: None,
            rpc_socket: None,
        }
    }
}

/// A running keeld.
pub struct Daemon {
    engine: Engine<Message>,
    addrs: Vec<SocketAddr>,
    metrics_server: Option<MetricsServer>,
    rpc: Option<RpcServer>,
}

struct OpenVolume {
    nqn: String,
    nsid: u32,
    backend: Arc<dyn BlockBackend>,
}

impl Daemon {
    /// Opens every volume, binds every listener and starts the shards.
    pub fn start(config: &DaemonConfig, runtime: &RuntimeOptions) -> Result<Daemon, DaemonError> {
        let mut target = Target::new(TargetLimits::default());
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

        let shared = Arc::new(Shared::new(target));
        let control = Arc::new(ControlService::new(shared.clone()));
        let listeners = Arc::new(listeners);
        let names: Vec<(String, u32)> = volumes.iter().map(|v| (v.nqn.clone(), v.nsid)).collect();
        let metrics = Arc::new(Metrics::new(&names, config.cores.max(1)));
        let volumes = Arc::new(volumes);
        let metrics_server = match runtime.metrics {
            Some(addr) => {
                let metrics = metrics.clone();
                let shared = shared.clone();
                let server = MetricsServer::start(addr, move || {
                    let controllers = shared.lock().target.controller_count();
                    metrics.render(controllers)
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
            Ok(ShardHandler::new(
                shard,
                shared.clone(),
                handler_metrics.clone(),
                listeners.clone(),
                attached,
            ))
        })?;
        // After the shards run, so no control call arrives before them.
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
        Ok(Daemon {
            engine,
            addrs,
            metrics_server,
            rpc,
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
