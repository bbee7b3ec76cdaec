//! keeld's control methods, served on the control socket by
//! [`crate::rpc::RpcServer`]. The reference is `docs/rpc.md`.
//!
//! Every method checks its parameters first (types, NQN syntax, ranges;
//! -32602 naming the parameter) and then works on the shared [`Target`]
//! under its lock, for a few microseconds. Events a change raises (an
//! Asynchronous Event for Namespace Attribute Changed or Discovery Log
//! Changed) wait in the target's outbox until a shard next drains it, at
//! its keep-alive check at the latest.
//!
//! [`Target`]: crate::controller::Target

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use keel_replicator::core::Membership;
use keel_replicator::wire::{NodeId, ReplicationMode, MAX_COPIES};

use super::faults::{self, FaultPlans};
use super::replication::change::{self, ChangeErrorKind, MembershipChange};
use super::replication::driver::{MembershipView, Published};
use super::replication::roster::Roster;
use super::replication::{self, ReplicationOptions};
use super::shared::Shared;
use crate::controller::{BlockGeometry, ConfigError, IoStatistics, Namespace, Subsystem, Target};
use crate::rpc::{Params, RpcError, RpcService};

/// Grows the backend of namespace (nqn, nsid) to a capacity in bytes,
/// making it usable on every shard before it returns. keeld installs one
/// with [`ControlService::with_backend_resizer`] once its backends can grow.
pub(crate) type BackendResizer = Box<dyn Fn(&str, u32, u64) -> Result<(), String> + Send + Sync>;

/// Methods served, and whether this keeld can serve them now.
pub(crate) const METHODS: &[(&str, bool)] = &[
    ("rpc_get_methods", true),
    ("status", true),
    ("volume_list", true),
    ("volume_resize", true),
    ("volume_create", false),
    ("volume_delete", false),
    ("subsystem_list", true),
    ("subsystem_add_host", true),
    ("subsystem_remove_host", true),
    ("stats", true),
    ("replica_add", true),
    ("replica_remove", true),
    ("replica_mode", true),
    ("replica_list", true),
    ("volume_status", true),
    ("quorum_set", true),
    ("promote", true),
    ("volume_scrub", true),
    ("resync_status", true),
    // Available only with --fault-injection (see `ControlService::methods`).
    ("fault_inject", false),
    ("fault_media_error", false),
    ("fault_clear", false),
    ("fault_list", false),
];

/// How long a membership change waits for shard 0's answer (it answers
/// within one turn of its loop; longer means it is wedged or stopping).
const RECONFIGURE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const NOT_REPLICATED: &str =
    "this keeld replicates no volume (start it with --node-id and --member)";
const NO_VOLUME_LIFECYCLE: &str = "keeld cannot open or close a backend at run time yet; \
     add or remove the namespace in keel.toml and restart keeld";

/// The replicated volume's published state and its options.
type ReplicationState = (Arc<Published>, ReplicationOptions);

/// keeld's [`RpcService`].
pub(crate) struct ControlService {
    shared: Arc<Shared>,
    /// Shard 0's queue, for control actions the shard carries out.
    sender: std::sync::OnceLock<keel_engine::EngineSender<crate::daemon::Message>>,
    /// The replicated volume's published state and options, if any.
    replication: Option<ReplicationState>,
    resize_backend: Option<BackendResizer>,
    /// Serializes resizes: the backend grows outside the target lock.
    resizing: Mutex<()>,
    /// The devices' fault plans (`--fault-injection`, tests only).
    faults: Option<Arc<FaultPlans>>,
}

impl ControlService {
    /// Serves the target in `shared`. Without a backend resizer,
    /// `volume_resize` answers "not available".
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            sender: std::sync::OnceLock::new(),
            replication: None,
            resize_backend: None,
            resizing: Mutex::new(()),
            faults: None,
        }
    }

    /// Serves the fault methods (`faults::METHODS`) on `plans`.
    pub(crate) fn with_faults(mut self, plans: Arc<FaultPlans>) -> Self {
        self.faults = Some(plans);
        self
    }

    /// Lets `volume_resize` grow namespaces, with `resizer` growing their
    /// backends first.
    #[allow(dead_code)] // Until keeld's backends can grow.
    pub(crate) fn with_backend_resizer(mut self, resizer: BackendResizer) -> Self {
        self.resize_backend = Some(resizer);
        self
    }

    fn methods(&self, params: Option<Value>) -> Result<Value, RpcError> {
        Params::new(params)?.finish()?;
        let faults = self.faults.is_some();
        Ok(Value::Array(
            METHODS
                .iter()
                .map(|&(name, available)| {
                    let available = available || (faults && faults::METHODS.contains(&name));
                    json!({ "name": name, "available": available })
                })
                .collect(),
        ))
    }

    /// Lets control calls reach the shards (set once the engine runs).
    pub(crate) fn set_sender(&self, sender: keel_engine::EngineSender<crate::daemon::Message>) {
        let _ = self.sender.set(sender);
    }

    /// `promote`: this node takes over as primary of the replicated volume
    /// in the next epoch of its own class. Answers at once; the election
    /// follows (`volume_status` shows the outcome: a copy that lacks
    /// acknowledged writes retires again).
    fn promote(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let (published, options) = self.replicated(nqn.as_deref())?;
        use std::sync::atomic::Ordering;
        let epoch = published.epoch.load(Ordering::SeqCst);
        if published.primary.load(Ordering::SeqCst) {
            return Ok(json!({ "node": options.node.0, "already_primary": true, "epoch": epoch }));
        }
        self.send_to_shard0(crate::daemon::Message::Promote)?;
        Ok(json!({
            "node": options.node.0,
            "from_epoch": epoch,
            "to_epoch": crate::daemon::replication::next_epoch(epoch, options.node),
        }))
    }

    /// `volume_scrub`: the serving primary compares every region of its
    /// copy with each replica holding it; a replica found different gets
    /// the region copied again.
    fn volume_scrub(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let (published, options) = self.replicated(nqn.as_deref())?;
        use std::sync::atomic::Ordering;
        if !published.serving.load(Ordering::SeqCst) {
            return Err(RpcError::refused(
                "only the serving primary scrubs (its copy is the one compared against)",
            ));
        }
        let running = published.scrub_next_region.load(Ordering::Relaxed) != u64::MAX;
        if !running {
            self.send_to_shard0(crate::daemon::Message::Scrub)?;
        }
        Ok(json!({
            "node": options.node.0,
            "already_running": running,
            "passes": published.scrub_passes.load(Ordering::Relaxed),
        }))
    }

    /// Queues `msg` for shard 0, retrying for about a second while its
    /// queue is full.
    fn send_to_shard0(&self, mut msg: crate::daemon::Message) -> Result<(), RpcError> {
        let sender = self
            .sender
            .get()
            .ok_or_else(|| RpcError::not_available("keeld is still starting".to_string()))?;
        for _ in 0..1000 {
            match sender.send(keel_engine::ShardId(0), msg) {
                Ok(()) => return Ok(()),
                Err(back) => {
                    msg = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
        Err(RpcError::not_available(
            "shard 0's queue stays full".to_string(),
        ))
    }

    /// The replicated volume's published state and options, after checking
    /// that `nqn` (if given) names it.
    fn replicated(&self, nqn: Option<&str>) -> Result<&ReplicationState, RpcError> {
        let replication = self
            .replication
            .as_ref()
            .ok_or_else(|| RpcError::not_available(NOT_REPLICATED.to_string()))?;
        if let Some(asked) = nqn {
            let volume = self.replicated_nqn();
            if volume.as_deref() != Some(asked) {
                return Err(RpcError::not_found(format!(
                    "{asked} is not the replicated volume ({})",
                    volume.unwrap_or_default()
                )));
            }
        }
        Ok(replication)
    }

    /// The replicated volume's NQN (keeld replicates its only subsystem).
    fn replicated_nqn(&self) -> Option<String> {
        let control = self.shared.lock();
        let nqn = control
            .target
            .subsystems()
            .next()
            .map(|s| s.nqn().to_owned());
        nqn
    }

    /// `replica_add`: a new copy (node, address, mode) joins the volume.
    fn replica_add(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        let node = NodeId(params.u64_in("node", 0, u64::MAX)?);
        let address = params.str("address")?;
        let mode = params.opt_str("mode")?;
        params.finish()?;
        let (addr, transport) = replication::parse_address(&address).map_err(|e| {
            RpcError::invalid_params(format!(
                "parameter \"address\": {e} (expected [tcp://|rdma://]IP:PORT)"
            ))
        })?;
        if transport == replication::Transport::Rdma && !cfg!(feature = "rdma") {
            return Err(RpcError::invalid_params(
                "parameter \"address\": an rdma:// copy needs keeld built with the cargo \
                 feature `rdma`",
            ));
        }
        let mode = match mode.as_deref() {
            None | Some("sync") => ReplicationMode::Sync,
            Some("async") => ReplicationMode::Async,
            Some(other) => {
                return Err(RpcError::invalid_params(format!(
                    "parameter \"mode\" must be \"sync\" or \"async\", got {other:?}"
                )))
            }
        };
        self.replicated(nqn.as_deref())?;
        let copy = replication::MemberAddress {
            node,
            addr,
            mode,
            transport,
        };
        self.reconfigure(MembershipChange::Add(copy))
    }

    /// `replica_remove`: a copy leaves the volume.
    fn replica_remove(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        let node = NodeId(params.u64_in("node", 0, u64::MAX)?);
        params.finish()?;
        self.replicated(nqn.as_deref())?;
        self.reconfigure(MembershipChange::Remove(node))
    }

    /// `replica_mode`: a copy becomes sync or async.
    fn replica_mode(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        let node = NodeId(params.u64_in("node", 0, u64::MAX)?);
        let mode = params.str("mode")?;
        params.finish()?;
        let mode = match mode.as_str() {
            "sync" => ReplicationMode::Sync,
            "async" => ReplicationMode::Async,
            other => {
                return Err(RpcError::invalid_params(format!(
                    "parameter \"mode\" must be \"sync\" or \"async\", got {other:?}"
                )))
            }
        };
        self.replicated(nqn.as_deref())?;
        self.reconfigure(MembershipChange::SetMode(node, mode))
    }

    /// `quorum_set`: copies durable before a write completes.
    fn quorum_set(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        let w = params.u64_in("write_quorum", 1, MAX_COPIES as u64)?;
        params.finish()?;
        self.replicated(nqn.as_deref())?;
        let w = u8::try_from(w).map_err(|_| {
            RpcError::invalid_params(format!("parameter \"write_quorum\" {w} is too large"))
        })?;
        self.reconfigure(MembershipChange::SetQuorum(w))
    }

    /// Asks shard 0 to make `change` and answers with its outcome.
    fn reconfigure(&self, change: MembershipChange) -> Result<Value, RpcError> {
        let (published, options) = self.replicated(None)?;
        let (reply, outcome) = std::sync::mpsc::sync_channel(1);
        self.send_to_shard0(crate::daemon::Message::Reconfigure { change, reply })?;
        let outcome = outcome.recv_timeout(RECONFIGURE_TIMEOUT).map_err(|_| {
            RpcError::not_available(format!(
                "shard 0 did not answer within {} s",
                RECONFIGURE_TIMEOUT.as_secs()
            ))
        })?;
        let outcome = outcome.map_err(|e| match e.kind {
            ChangeErrorKind::InvalidParams => RpcError::invalid_params(e.message),
            ChangeErrorKind::NotFound => RpcError::not_found(e.message),
            ChangeErrorKind::Refused => RpcError::refused(e.message),
        })?;
        Ok(json!({
            "node": options.node.0,
            "from_epoch": outcome.from_epoch.0,
            "to_epoch": outcome.to_epoch.0,
            "membership": membership_json(&outcome.membership, &published.roster),
        }))
    }

    /// Serves the replication state of this keeld's replicated volume.
    pub(crate) fn with_replication(
        mut self,
        published: Arc<crate::daemon::replication::driver::Published>,
        options: crate::daemon::replication::ReplicationOptions,
    ) -> Self {
        self.replication = Some((published, options));
        self
    }

    /// `volume_status`: the replicated volume, its membership (as the
    /// state machine works with it), whether a change is in progress, and
    /// per replica its address, mode, state (`in_sync`, `resyncing` with
    /// progress, `out_of_date`, `connecting`, `down`), lag and epoch.
    fn volume_status(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let (published, options) = self.replicated(nqn.as_deref())?;
        use std::sync::atomic::Ordering;
        let epoch = published.epoch.load(Ordering::SeqCst);
        let serving = published.serving.load(Ordering::SeqCst);
        let view = published.membership_view();
        let membership = view
            .membership
            .clone()
            .unwrap_or_else(|| options.membership());
        let volume = self.replicated_nqn();
        let replicas: Vec<Value> = listed_copies(options.node, &membership, &view)
            .into_iter()
            .map(|(node, mode, change)| {
                let mut entry = replica_json(published, node, mode, epoch, serving);
                entry["nqn"] = json!(volume);
                entry["role"] = json!("replica");
                if let Some(change) = change {
                    entry["change"] = json!(change);
                }
                entry
            })
            .collect();
        let mut status = json!({
            "nqn": volume,
            "volume_id": options.volume.0,
            "node": options.node.0,
            "role": if serving { "primary" } else { "replica" },
            "epoch": epoch,
            "primary": membership.primary.0,
            "write_quorum": membership.write_quorum,
            "sync_copies": membership.sync_count(),
            "reconfiguring": view.reconfiguring,
            "membership": membership_json(&membership, &published.roster),
            "in_sync": published.in_sync.load(Ordering::SeqCst),
            "failed": published.failed.load(Ordering::SeqCst),
            "amnesiac": published.amnesiac.load(Ordering::Relaxed),
            "read_lease": options.read_lease,
            "links": published.links.load(Ordering::SeqCst),
            "scrub": scrub_json(published),
            "replicas": replicas,
        });
        if let Some(pending) = &view.pending {
            status["pending_membership"] = membership_json(pending, &published.roster);
        }
        Ok(status)
    }

    fn status(&self, params: Option<Value>) -> Result<Value, RpcError> {
        Params::new(params)?.finish()?;
        let uptime = self.shared.now().since_origin();
        let control = self.shared.lock();
        let target = &control.target;
        let listeners: Vec<Value> = target
            .listeners()
            .iter()
            .map(|listener| {
                json!({
                    "port_id": listener.port_id(),
                    "traddr": listener.traddr(),
                    "trsvcid": listener.trsvcid(),
                })
            })
            .collect();
        Ok(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": uptime.as_secs(),
            "subsystems": target.subsystems().count(),
            "namespaces": target.subsystems().map(|s| s.namespaces().count()).sum::<usize>(),
            "controllers": target.controller_count(),
            "listeners": listeners,
            "discovery_generation": target.discovery_generation(),
        }))
    }

    fn volume_list(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let control = self.shared.lock();
        let volumes: Vec<Value> = selected(&control.target, nqn.as_deref())?
            .into_iter()
            .flat_map(|subsystem| {
                subsystem
                    .namespaces()
                    .map(|(nsid, namespace)| volume_json(subsystem.nqn(), nsid, namespace))
            })
            .collect();
        Ok(Value::Array(volumes))
    }

    fn volume_resize(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.nqn("nqn")?;
        let nsid = params.nsid("nsid")?;
        let size = params.size("size")?;
        params.finish()?;
        let _serial = self
            .resizing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (block_size, current) = {
            let control = self.shared.lock();
            let namespace = namespace(&control.target, &nqn, nsid)?;
            (namespace.geometry.block_size(), namespace.geometry)
        };
        if size % u64::from(block_size) != 0 {
            return Err(RpcError::invalid_params(format!(
                "parameter \"size\" ({size} bytes) must be a multiple of the block size, {block_size}"
            )));
        }
        let blocks = size / u64::from(block_size);
        if blocks < current.blocks() {
            return Err(RpcError::invalid_params(format!(
                "parameter \"size\" ({size} bytes) is smaller than the namespace ({} bytes): \
                 namespaces can only grow",
                current.bytes()
            )));
        }
        BlockGeometry::new(block_size, blocks)
            .map_err(|e| RpcError::invalid_params(format!("parameter \"size\": {e}")))?;
        if blocks == current.blocks() {
            let control = self.shared.lock();
            let namespace = namespace(&control.target, &nqn, nsid)?;
            let mut volume = volume_json(&nqn, nsid, namespace);
            volume["changed"] = json!(false);
            return Ok(volume);
        }
        let Some(resize_backend) = &self.resize_backend else {
            return Err(RpcError::not_available(format!(
                "resizing needs backend support: keeld cannot grow a namespace's backend \
                 at run time yet, so namespace {nsid} of {nqn} stays at {} bytes",
                current.bytes()
            )));
        };
        // The backend grows first and outside the lock (it may allocate
        // on disk): hosts must never see a capacity the backend lacks.
        resize_backend(&nqn, nsid, size).map_err(|e| {
            RpcError::refused(format!(
                "growing the backend of {nqn} namespace {nsid}: {e}"
            ))
        })?;
        let mut control = self.shared.lock();
        control
            .target
            .resize_namespace(&nqn, nsid, blocks)
            .map_err(config_error)?;
        tracing::info!(%nqn, nsid, bytes = size, "namespace resized");
        let namespace = namespace(&control.target, &nqn, nsid)?;
        let mut volume = volume_json(&nqn, nsid, namespace);
        volume["changed"] = json!(true);
        Ok(volume)
    }

    fn subsystem_list(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let control = self.shared.lock();
        let target = &control.target;
        let subsystems: Vec<Value> = selected(target, nqn.as_deref())?
            .into_iter()
            .map(|subsystem| {
                let controllers: Vec<Value> = target
                    .controller_ids()
                    .filter_map(|cntlid| target.controller_info(cntlid).map(|c| (cntlid, c)))
                    .filter(|(_, info)| info.subnqn == subsystem.nqn())
                    .map(|(cntlid, info)| {
                        json!({
                            "cntlid": cntlid,
                            "hostnqn": info.hostnqn,
                            "io_queues": info.io_queues,
                            "kato_ms": info.kato_ms,
                        })
                    })
                    .collect();
                let hosts: Vec<&str> = subsystem.allowed_hosts().collect();
                json!({
                    "nqn": subsystem.nqn(),
                    "serial": subsystem.serial(),
                    "model": subsystem.model(),
                    "firmware": subsystem.firmware(),
                    "namespaces": subsystem.namespaces().map(|(nsid, _)| nsid).collect::<Vec<_>>(),
                    "allow_any_host": hosts.is_empty(),
                    "allowed_hosts": hosts,
                    "controllers": controllers,
                })
            })
            .collect();
        Ok(Value::Array(subsystems))
    }

    fn subsystem_add_host(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.nqn("nqn")?;
        let host = params.nqn("host")?;
        params.finish()?;
        let mut control = self.shared.lock();
        let target = &mut control.target;
        let subsystem = subsystem_ref(target, &nqn)?;
        let added = !subsystem.allowed_hosts().any(|h| h == host);
        if added {
            target.allow_host(&nqn, &host).map_err(config_error)?;
            tracing::info!(%nqn, %host, "host allowed");
        }
        Ok(hosts_json(
            subsystem_ref(target, &nqn)?,
            &host,
            "added",
            added,
        ))
    }

    fn subsystem_remove_host(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.nqn("nqn")?;
        let host = params.nqn("host")?;
        params.finish()?;
        let mut control = self.shared.lock();
        let target = &mut control.target;
        let subsystem = subsystem_ref(target, &nqn)?;
        let hosts: Vec<&str> = subsystem.allowed_hosts().collect();
        if !hosts.contains(&host.as_str()) {
            return Err(RpcError::not_found(format!(
                "host {host} is not on the allowed list of {nqn}"
            )));
        }
        if hosts.len() == 1 {
            // An empty list means "any host": removing the last one would
            // open the subsystem, the opposite of what was asked.
            return Err(RpcError::refused(format!(
                "{host} is the last allowed host of {nqn}; removing it would let ANY host \
                 connect. Allow another host first"
            )));
        }
        target.disallow_host(&nqn, &host).map_err(config_error)?;
        tracing::info!(%nqn, %host, "host no longer allowed (its live connections stay)");
        Ok(hosts_json(
            subsystem_ref(target, &nqn)?,
            &host,
            "removed",
            true,
        ))
    }

    fn stats(&self, params: Option<Value>) -> Result<Value, RpcError> {
        let mut params = Params::new(params)?;
        let nqn = params.opt_nqn("nqn")?;
        params.finish()?;
        let control = self.shared.lock();
        let target = &control.target;
        let stats: Vec<Value> = selected(target, nqn.as_deref())?
            .into_iter()
            .map(|subsystem| {
                let stats = target.statistics(subsystem.nqn()).unwrap_or_default();
                stats_json(subsystem.nqn(), &stats)
            })
            .collect();
        Ok(Value::Array(stats))
    }
}

/// One replica's entry in `volume_status`: address, mode, state as the
/// primary sees it, link counters and resync progress.
fn replica_json(
    published: &Published,
    node: NodeId,
    mode: ReplicationMode,
    epoch: u64,
    serving: bool,
) -> Value {
    use std::sync::atomic::Ordering;
    let view = published
        .replicas
        .lock()
        .ok()
        .and_then(|views| views.iter().find(|v| v.node == node).cloned());
    let state = if serving {
        view.as_ref().map_or("down", |v| v.state.name())
    } else {
        "unknown"
    };
    let copy = published.roster.get(node);
    let mut entry = json!({
        "node": node.0,
        "address": copy.as_ref().map(|c| c.addr.to_string()),
        "transport": copy.as_ref().map(|c| transport_name(c.transport)),
        "mode": change::mode_name(mode),
        "state": state,
        "epoch": epoch,
        "lag_bytes": view.as_ref().map_or(0, |v| v.lag_bytes),
        "lag_ms": view.as_ref().map_or(0, |v| v.lag_time / 1_000_000),
    });
    if let Some(c) = published.counters(node) {
        entry["frames_sent"] = json!(c.frames_sent.load(Ordering::Relaxed));
        entry["bytes_sent"] = json!(c.bytes_sent.load(Ordering::Relaxed));
        entry["frames_applied"] = json!(c.frames_applied.load(Ordering::Relaxed));
        entry["frames_acked"] = json!(c.frames_acked.load(Ordering::Relaxed));
        entry["link_connects"] = json!(c.connects.load(Ordering::Relaxed));
        entry["drops"] = json!(c.dropped.load(Ordering::Relaxed));
        entry["link_timeouts"] = json!(c.silent.load(Ordering::Relaxed));
        let round_trip_ns = c.round_trip_ns.load(Ordering::Relaxed);
        entry["round_trip_us"] = if round_trip_ns == 0 {
            serde_json::Value::Null
        } else {
            json!((round_trip_ns as f64 / 100.0).round() / 10.0)
        };
    }
    if let Some(v) = view {
        let done = v.regions.saturating_sub(v.regions_to_resync);
        let region = u64::from(replication::REGION_SIZE);
        entry["done_bytes"] = json!(done * region);
        entry["total_bytes"] = json!(v.regions * region);
        entry["resync_percent"] = json!(if v.regions == 0 {
            100.0
        } else {
            (done as f64 * 1000.0 / v.regions as f64).round() / 10.0
        });
    }
    entry
}

/// The copies `volume_status` lists besides `me`: the members, then copies
/// linked during a change that are not members (yet, or any more); each
/// with its mode and, during a change, `"adding"` or `"removing"`.
fn listed_copies(
    me: NodeId,
    membership: &Membership,
    view: &MembershipView,
) -> Vec<(NodeId, ReplicationMode, Option<&'static str>)> {
    let pending = view.pending.as_ref();
    let leaving = |node: NodeId| pending.is_some_and(|p| p.mode_of(node).is_none());
    let mut copies: Vec<(NodeId, ReplicationMode, Option<&'static str>)> = membership
        .members
        .iter()
        .filter(|m| m.node != me)
        .map(|m| (m.node, m.mode, leaving(m.node).then_some("removing")))
        .collect();
    for &node in &view.link_targets {
        if node == me || copies.iter().any(|(n, _, _)| *n == node) {
            continue;
        }
        let mode = view.changing_mode(node).unwrap_or(ReplicationMode::Sync);
        // Not a member (yet, or since the change was announced).
        let change = if leaving(node) { "removing" } else { "adding" };
        copies.push((node, mode, Some(change)));
    }
    copies
}

/// Where scrubbing stands, for `volume_status`.
fn scrub_json(published: &crate::daemon::replication::driver::Published) -> Value {
    use std::sync::atomic::Ordering;
    let next = published.scrub_next_region.load(Ordering::Relaxed);
    json!({
        "running": next != u64::MAX,
        "next_region": (next != u64::MAX).then_some(next),
        "passes": published.scrub_passes.load(Ordering::Relaxed),
        "checked": published.scrub_checked.load(Ordering::Relaxed),
        "mismatches": published.scrub_mismatches.load(Ordering::Relaxed),
    })
}

/// A membership as the control socket shows it: the primary, W, and each
/// copy with its mode and (from the roster) address and transport.
fn membership_json(membership: &Membership, roster: &Roster) -> Value {
    let members: Vec<Value> = membership
        .members
        .iter()
        .map(|m| {
            let copy = roster.get(m.node);
            json!({
                "node": m.node.0,
                "mode": change::mode_name(m.mode),
                "address": copy.as_ref().map(|c| c.addr.to_string()),
                "transport": copy.as_ref().map(|c| transport_name(c.transport)),
            })
        })
        .collect();
    // A change not yet known to a write quorum of the old copies: writes
    // need the old write quorum too until it is.
    let previous = membership.previous.as_ref().map(|p| {
        let members: Vec<Value> = p
            .members
            .iter()
            .map(|m| json!({"node": m.node.0, "mode": change::mode_name(m.mode)}))
            .collect();
        json!({"write_quorum": p.write_quorum, "primary": p.primary.0, "members": members})
    });
    json!({
        "primary": membership.primary.0,
        "write_quorum": membership.write_quorum,
        "members": members,
        "previous": previous,
    })
}

fn transport_name(transport: replication::Transport) -> &'static str {
    match transport {
        replication::Transport::Tcp => "tcp",
        replication::Transport::Rdma => "rdma",
    }
}

impl RpcService for ControlService {
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        match method {
            "rpc_get_methods" => self.methods(params),
            "status" => self.status(params),
            "volume_list" => self.volume_list(params),
            "volume_resize" => self.volume_resize(params),
            "subsystem_list" => self.subsystem_list(params),
            "subsystem_add_host" => self.subsystem_add_host(params),
            "subsystem_remove_host" => self.subsystem_remove_host(params),
            "stats" => self.stats(params),
            "volume_create" | "volume_delete" => Err(RpcError::not_available(format!(
                "{method}: {NO_VOLUME_LIFECYCLE}"
            ))),
            "volume_status" => self.volume_status(params),
            // The same report: the replicas, and their resync progress.
            "replica_list" | "resync_status" => self
                .volume_status(params)
                .map(|status| status["replicas"].clone()),
            "promote" => self.promote(params),
            "volume_scrub" => self.volume_scrub(params),
            "replica_add" => self.replica_add(params),
            "replica_remove" => self.replica_remove(params),
            "replica_mode" => self.replica_mode(params),
            "quorum_set" => self.quorum_set(params),
            fault if faults::METHODS.contains(&fault) => {
                faults::call(self.faults.as_deref(), method, params)
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

/// The subsystem `nqn`, or every subsystem.
fn selected<'a>(target: &'a Target, nqn: Option<&str>) -> Result<Vec<&'a Subsystem>, RpcError> {
    match nqn {
        Some(nqn) => Ok(vec![subsystem_ref(target, nqn)?]),
        None => Ok(target.subsystems().collect()),
    }
}

fn subsystem_ref<'a>(target: &'a Target, nqn: &str) -> Result<&'a Subsystem, RpcError> {
    target
        .subsystem(nqn)
        .ok_or_else(|| RpcError::not_found(format!("no subsystem {nqn}")))
}

fn namespace<'a>(target: &'a Target, nqn: &str, nsid: u32) -> Result<&'a Namespace, RpcError> {
    subsystem_ref(target, nqn)?
        .namespace(nsid)
        .ok_or_else(|| RpcError::not_found(format!("subsystem {nqn} has no namespace {nsid}")))
}

fn config_error(error: ConfigError) -> RpcError {
    match error {
        ConfigError::UnknownSubsystem(_)
        | ConfigError::UnknownNamespace(_)
        | ConfigError::UnknownListener(_) => RpcError::not_found(error),
        ConfigError::InvalidNqn { .. }
        | ConfigError::InvalidNsid { .. }
        | ConfigError::InvalidGeometry(_)
        | ConfigError::InvalidText { .. }
        | ConfigError::InvalidListener(_) => RpcError::invalid_params(error),
        other => RpcError::refused(other),
    }
}

fn volume_json(nqn: &str, nsid: u32, namespace: &Namespace) -> Value {
    json!({
        "nqn": nqn,
        "nsid": nsid,
        "block_size": namespace.geometry.block_size(),
        "blocks": namespace.geometry.blocks(),
        "bytes": namespace.geometry.bytes(),
        "ready": namespace.ready,
        "ana_group": crate::controller::ana::group_of(nsid),
        "ana_state": crate::controller::ana::AnaState::of(namespace).name(),
        "nguid": hex(&namespace.nguid),
        "uuid": uuid(&namespace.uuid),
    })
}

fn hosts_json(subsystem: &Subsystem, host: &str, verb: &str, changed: bool) -> Value {
    let hosts: Vec<&str> = subsystem.allowed_hosts().collect();
    json!({
        "nqn": subsystem.nqn(),
        "host": host,
        verb: changed,
        "allow_any_host": hosts.is_empty(),
        "allowed_hosts": hosts,
    })
}

fn stats_json(nqn: &str, stats: &IoStatistics) -> Value {
    // JSON numbers are read as doubles by many tools, and as u64 at most by
    // serde_json: 2^64 bytes (16 EiB) is beyond any uptime, so saturate.
    let clamp = |value: u128| u64::try_from(value).unwrap_or(u64::MAX);
    json!({
        "nqn": nqn,
        "bytes_read": clamp(stats.bytes_read),
        "bytes_written": clamp(stats.bytes_written),
        "read_commands": clamp(stats.host_read_commands),
        "write_commands": clamp(stats.host_write_commands),
        "data_units_read": clamp(stats.data_units_read()),
        "data_units_written": clamp(stats.data_units_written()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn uuid(bytes: &[u8; 16]) -> String {
    let h = hex(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::controller::TargetLimits;
    use crate::rpc::codes;

    const NQN: &str = "nqn.2026-11.io.keel:vol0";
    const OTHER: &str = "nqn.2026-11.io.keel:vol1";
    const HOST_A: &str = "nqn.2026-11.io.keel:host-a";
    const HOST_B: &str = "nqn.2026-11.io.keel:host-b";

    fn service() -> ControlService {
        let mut target = Target::new(TargetLimits::default());
        let mut vol0 = Subsystem::new(NQN, "SERIAL0", "Keel volume", "0.1.0").unwrap();
        let geometry = BlockGeometry::new(4096, 256).unwrap();
        vol0.add_namespace(1, Namespace::new(geometry, [1; 16], [2; 16]))
            .unwrap();
        vol0.allow_host(HOST_A).unwrap();
        target.add_subsystem(vol0).unwrap();
        target
            .add_subsystem(Subsystem::new(OTHER, "SERIAL1", "Keel volume", "0.1.0").unwrap())
            .unwrap();
        target
            .add_listener(
                crate::controller::Listener::new(
                    1,
                    crate::nvme::discovery::AddressFamily::Ipv4,
                    "127.0.0.1",
                    "4420",
                )
                .unwrap(),
            )
            .unwrap();
        ControlService::new(Arc::new(Shared::new(target)))
    }

    fn call(service: &ControlService, method: &str, params: Value) -> Result<Value, RpcError> {
        let params = if params.is_null() { None } else { Some(params) };
        service.call(method, params)
    }

    fn code(result: Result<Value, RpcError>) -> (i64, String) {
        let error = result.expect_err("expected an error");
        (error.code, error.message)
    }

    #[test]
    fn status_and_lists() {
        let s = service();
        let status = call(&s, "status", Value::Null).unwrap();
        assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(status["subsystems"], 2);
        assert_eq!(status["namespaces"], 1);
        assert_eq!(status["controllers"], 0);
        assert_eq!(status["listeners"][0]["trsvcid"], "4420");

        let volumes = call(&s, "volume_list", Value::Null).unwrap();
        assert_eq!(
            volumes,
            json!([{
                "nqn": NQN, "nsid": 1, "block_size": 4096, "blocks": 256,
                "bytes": 1 << 20, "ready": true,
                "ana_group": 1, "ana_state": "optimized",
                "nguid": "01".repeat(16),
                "uuid": "02020202-0202-0202-0202-020202020202",
            }])
        );
        assert_eq!(
            call(&s, "volume_list", json!({"nqn": OTHER})).unwrap(),
            json!([])
        );

        let subsystems = call(&s, "subsystem_list", Value::Null).unwrap();
        assert_eq!(subsystems.as_array().unwrap().len(), 2);
        assert_eq!(subsystems[0]["nqn"], NQN);
        assert_eq!(subsystems[0]["allowed_hosts"], json!([HOST_A]));
        assert_eq!(subsystems[0]["allow_any_host"], false);
        assert_eq!(subsystems[1]["allow_any_host"], true);
        assert_eq!(subsystems[0]["namespaces"], json!([1]));

        let stats = call(&s, "stats", json!({"nqn": NQN})).unwrap();
        assert_eq!(stats[0]["bytes_read"], 0);
        assert_eq!(stats[0]["write_commands"], 0);

        let methods = call(&s, "rpc_get_methods", Value::Null).unwrap();
        assert_eq!(methods.as_array().unwrap().len(), METHODS.len());
        let fault_inject = json!({"name": "fault_inject", "available": false});
        assert!(methods.as_array().unwrap().contains(&fault_inject));
    }

    #[test]
    fn fault_methods_are_served_with_fault_injection_only() {
        let s = service();
        let (c, m) = code(call(&s, "fault_list", Value::Null));
        assert_eq!(c, codes::NOT_AVAILABLE);
        assert!(m.contains("--fault-injection"), "{m}");
        let s = service().with_faults(Arc::new(FaultPlans::default()));
        let methods = call(&s, "rpc_get_methods", Value::Null).unwrap();
        for name in faults::METHODS {
            let entry = json!({"name": name, "available": true});
            assert!(methods.as_array().unwrap().contains(&entry), "{name}");
        }
        assert_eq!(call(&s, "fault_list", Value::Null).unwrap(), json!([]));
        call(
            &s,
            "fault_inject",
            json!({"device": "data", "op": "read", "action": "fail"}),
        )
        .unwrap();
        assert_eq!(
            call(&s, "fault_list", Value::Null).unwrap()[0]["op"],
            "read"
        );
    }

    #[test]
    fn arguments_are_checked() {
        let s = service();
        let (c, m) = code(call(&s, "status", json!({"verbose": true})));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"verbose\""), "{m}");
        let (c, m) = code(call(&s, "volume_list", json!({"nqn": "vol0"})));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"nqn\""), "{m}");
        let (c, _) = code(call(
            &s,
            "volume_list",
            json!({"nqn": "nqn.2026-11.io.keel:nope"}),
        ));
        assert_eq!(c, codes::NOT_FOUND);
        let (c, m) = code(call(&s, "subsystem_add_host", json!({"nqn": NQN})));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"host\"") && m.contains("required"), "{m}");
        let (c, m) = code(call(
            &s,
            "subsystem_add_host",
            json!({"nqn": NQN, "host": 5}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"host\"") && m.contains("string"), "{m}");
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 0, "size": 4096}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"nsid\""), "{m}");
        let (c, _) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 2, "size": 4096}),
        ));
        assert_eq!(c, codes::NOT_FOUND);
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": "lots"}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("\"size\""), "{m}");
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": (2 << 20) + 1}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("multiple of the block size"), "{m}");
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": 4096}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
        assert!(m.contains("only grow"), "{m}");
        let (c, _) = code(call(&s, "stats", json!([NQN])));
        assert_eq!(c, codes::INVALID_PARAMS);
        let (c, _) = code(call(&s, "nope", Value::Null));
        assert_eq!(c, codes::METHOD_NOT_FOUND);
    }

    #[test]
    fn hosts_are_added_and_removed_but_never_opened_by_accident() {
        let s = service();
        let added = call(
            &s,
            "subsystem_add_host",
            json!({"nqn": NQN, "host": HOST_B}),
        )
        .unwrap();
        assert_eq!(added["added"], true);
        assert_eq!(added["allowed_hosts"], json!([HOST_A, HOST_B]));
        let again = call(
            &s,
            "subsystem_add_host",
            json!({"nqn": NQN, "host": HOST_B}),
        )
        .unwrap();
        assert_eq!(again["added"], false);
        {
            let control = s.shared.lock();
            let subsystem = control.target.subsystem(NQN).unwrap();
            assert!(subsystem.host_allowed(HOST_B));
        }
        let removed = call(
            &s,
            "subsystem_remove_host",
            json!({"nqn": NQN, "host": HOST_A}),
        )
        .unwrap();
        assert_eq!(removed["allowed_hosts"], json!([HOST_B]));
        assert!(!s
            .shared
            .lock()
            .target
            .subsystem(NQN)
            .unwrap()
            .host_allowed(HOST_A));
        let (c, m) = code(call(
            &s,
            "subsystem_remove_host",
            json!({"nqn": NQN, "host": HOST_B}),
        ));
        assert_eq!(c, codes::REFUSED);
        assert!(m.contains("ANY host"), "{m}");
        let (c, _) = code(call(
            &s,
            "subsystem_remove_host",
            json!({"nqn": NQN, "host": HOST_A}),
        ));
        assert_eq!(c, codes::NOT_FOUND);
        let (c, _) = code(call(
            &s,
            "subsystem_add_host",
            json!({"nqn": NQN, "host": "not-an-nqn"}),
        ));
        assert_eq!(c, codes::INVALID_PARAMS);
    }

    #[test]
    fn resize_without_backend_support_is_refused_and_changes_nothing() {
        let s = service();
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": "2M"}),
        ));
        assert_eq!(c, codes::NOT_AVAILABLE);
        assert!(m.contains("backend"), "{m}");
        let volumes = call(&s, "volume_list", Value::Null).unwrap();
        assert_eq!(volumes[0]["bytes"], 1 << 20);
        // The same size is no change, and fine.
        let same = call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": "1M"}),
        )
        .unwrap();
        assert_eq!(same["changed"], false);
    }

    #[test]
    fn resize_grows_the_backend_then_the_namespace() {
        let grown = Arc::new(AtomicU64::new(0));
        let seen = grown.clone();
        let s = service().with_backend_resizer(Box::new(move |nqn, nsid, bytes| {
            assert_eq!((nqn, nsid), (NQN, 1));
            if bytes > 1 << 30 {
                return Err("no space".into());
            }
            seen.store(bytes, Ordering::SeqCst);
            Ok(())
        }));
        let resized = call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": "2M"}),
        )
        .unwrap();
        assert_eq!(resized["bytes"], 2 << 20);
        assert_eq!(resized["blocks"], 512);
        assert_eq!(resized["changed"], true);
        assert_eq!(grown.load(Ordering::SeqCst), 2 << 20);
        let (c, m) = code(call(
            &s,
            "volume_resize",
            json!({"nqn": NQN, "nsid": 1, "size": "2G"}),
        ));
        assert_eq!(c, codes::REFUSED);
        assert!(m.contains("no space"), "{m}");
        assert_eq!(
            call(&s, "volume_list", Value::Null).unwrap()[0]["bytes"],
            2 << 20
        );
    }

    #[test]
    fn membership_changes_check_their_arguments_first() {
        let s = service();
        for (method, params, name) in [
            (
                "replica_add",
                json!({"address": "127.0.0.1:7003"}),
                "\"node\"",
            ),
            ("replica_add", json!({"node": 3}), "\"address\""),
            (
                "replica_add",
                json!({"node": -1, "address": "127.0.0.1:7003"}),
                "\"node\"",
            ),
            (
                "replica_add",
                json!({"node": 3, "address": "host:7003"}),
                "\"address\"",
            ),
            (
                "replica_add",
                json!({"node": 3, "address": "127.0.0.1"}),
                "\"address\"",
            ),
            (
                "replica_add",
                json!({"node": 3, "address": "127.0.0.1:7003", "mode": "fast"}),
                "\"mode\"",
            ),
            (
                "replica_add",
                json!({"node": 3, "address": "127.0.0.1:7003", "extra": 1}),
                "\"extra\"",
            ),
            ("replica_remove", json!({}), "\"node\""),
            ("replica_mode", json!({"node": 2}), "\"mode\""),
            (
                "replica_mode",
                json!({"node": 2, "mode": "fast"}),
                "\"mode\"",
            ),
            ("replica_remove", json!({"node": "two"}), "\"node\""),
            ("quorum_set", json!({}), "\"write_quorum\""),
            ("quorum_set", json!({"write_quorum": 0}), "\"write_quorum\""),
            (
                "quorum_set",
                json!({"write_quorum": 17}),
                "\"write_quorum\"",
            ),
            (
                "quorum_set",
                json!({"write_quorum": 2, "nqn": "x"}),
                "\"nqn\"",
            ),
        ] {
            let (c, m) = code(call(&s, method, params.clone()));
            assert_eq!(c, codes::INVALID_PARAMS, "{method} {params}: {m}");
            assert!(m.contains(name), "{method} {params}: {m}");
        }
        // Well-formed, but this keeld replicates nothing.
        for (method, params) in [
            (
                "replica_add",
                json!({"node": 3, "address": "tcp://127.0.0.1:7003"}),
            ),
            ("replica_remove", json!({"node": 3})),
            ("replica_mode", json!({"node": 3, "mode": "async"})),
            ("quorum_set", json!({"write_quorum": 2})),
        ] {
            let (c, m) = code(call(&s, method, params));
            assert_eq!(c, codes::NOT_AVAILABLE, "{method}: {m}");
            assert!(m.contains("replicates no volume"), "{m}");
        }
    }

    #[test]
    fn copies_being_added_or_removed_are_listed_with_their_change() {
        use keel_replicator::core::Member;
        let membership = |nodes: &[u64]| Membership {
            members: nodes
                .iter()
                .map(|&n| Member {
                    node: NodeId(n),
                    mode: if n == 4 {
                        ReplicationMode::Async
                    } else {
                        ReplicationMode::Sync
                    },
                })
                .collect(),
            primary: NodeId(1),
            write_quorum: 1,
            since: keel_replicator::wire::Epoch(0),
            previous: None,
        };
        // Preparing: adding 4 (async) and removing 2; the current
        // membership is still the old one.
        let view = MembershipView {
            membership: Some(membership(&[1, 2, 3])),
            previous: Some(membership(&[1, 2, 3])),
            pending: Some(membership(&[1, 3, 4])),
            reconfiguring: true,
            link_targets: vec![NodeId(2), NodeId(3), NodeId(4)],
        };
        let current = membership(&[1, 2, 3]);
        assert_eq!(
            listed_copies(NodeId(1), &current, &view),
            vec![
                (NodeId(2), ReplicationMode::Sync, Some("removing")),
                (NodeId(3), ReplicationMode::Sync, None),
                (NodeId(4), ReplicationMode::Async, Some("adding")),
            ]
        );
        // Announced: node 2 is no member any more but still linked.
        let announced = membership(&[1, 3, 4]);
        let view = MembershipView {
            membership: Some(announced.clone()),
            ..view
        };
        assert_eq!(
            listed_copies(NodeId(1), &announced, &view),
            vec![
                (NodeId(3), ReplicationMode::Sync, None),
                (NodeId(4), ReplicationMode::Async, None),
                (NodeId(2), ReplicationMode::Sync, Some("removing")),
            ]
        );
    }

    #[test]
    fn replicator_methods_are_not_available_yet() {
        let s = service();
        for (method, available) in METHODS {
            let replication_report = ["volume_status", "replica_list", "resync_status", "promote"];
            if !available || replication_report.contains(method) {
                let (c, m) = code(call(&s, method, json!({})));
                assert_eq!(c, codes::NOT_AVAILABLE, "{method}");
                assert!(m.starts_with("not available: "), "{m}");
            }
        }
    }
}
