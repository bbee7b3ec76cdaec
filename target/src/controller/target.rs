//! The registry of subsystems, listeners and live controllers, and its
//! configuration API. Command processing is in `dispatch`, controller
//! lifetime in `lifetime`.

use std::collections::BTreeMap;

use crate::controller::admin;
use crate::controller::config::TargetLimits;
use crate::controller::discovery::Listener;
use crate::controller::error::ConfigError;
use crate::controller::events::AsyncEvent;
use crate::controller::response::{AsyncCompletion, Completion};
use crate::controller::state::{Controller, ControllerKind};
use crate::controller::stats::IoStatistics;
use crate::controller::subsystem::{BlockGeometry, HostedSubsystem, Namespace, Subsystem};

/// Dynamic controller IDs are 1..=FFEFh (NVMe Base 2.0 §6.3; FFF0h and up
/// are reserved, 0 is avoided because some hosts treat it as unset).
pub const CNTLID_MIN: u16 = 1;
/// Largest dynamic controller ID.
pub const CNTLID_MAX: u16 = 0xFFEF;

/// An NVMe-oF target: subsystems, listeners and controllers.
#[derive(Debug)]
pub struct Target {
    pub(super) limits: TargetLimits,
    pub(super) subsystems: BTreeMap<String, HostedSubsystem>,
    pub(super) listeners: Vec<Listener>,
    pub(super) controllers: BTreeMap<u16, Controller>,
    pub(super) next_cntlid: u16,
    pub(super) next_instance: u64,
    pub(super) discovery_genctr: u64,
    pub(super) outbox: Vec<AsyncCompletion>,
}

impl Target {
    /// An empty target. Limits are brought into range: at least one I/O
    /// queue, a controller ID range within 1..=FFEFh, at least one and at
    /// most as many controllers as IDs, MDTS within 1..=12 (8 KiB..=16 MiB,
    /// so output buffers stay bounded) and MQES at least 31 (the Linux
    /// host's 32-entry admin queue).
    pub fn new(mut limits: TargetLimits) -> Self {
        limits.max_io_queues = limits.max_io_queues.max(1);
        limits.cntlid_min = limits.cntlid_min.clamp(CNTLID_MIN, CNTLID_MAX);
        limits.cntlid_max = limits.cntlid_max.clamp(limits.cntlid_min, CNTLID_MAX);
        let ids = limits.cntlid_max - limits.cntlid_min + 1;
        limits.max_controllers = limits.max_controllers.clamp(1, ids);
        limits.mdts = limits.mdts.clamp(1, 12);
        // The admin queue of the Linux host has 32 entries.
        limits.mqes = limits.mqes.max(31);
        Self {
            limits,
            subsystems: BTreeMap::new(),
            listeners: Vec::new(),
            controllers: BTreeMap::new(),
            next_cntlid: limits.cntlid_min,
            next_instance: 1,
            discovery_genctr: 0,
            outbox: Vec::new(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &TargetLimits {
        &self.limits
    }

    /// Size the `out` buffer passed to [`Self::submit`] must have so that
    /// any admin command's data fits: MDTS.
    pub fn output_buffer_len(&self) -> usize {
        usize::try_from(self.limits.max_transfer_bytes()).unwrap_or(usize::MAX)
    }

    // ----- configuration -------------------------------------------------

    /// Adds a listener; discovery controllers are told the log changed.
    pub fn add_listener(&mut self, listener: Listener) -> Result<(), ConfigError> {
        if self.listeners.len() >= self.limits.max_listeners {
            return Err(ConfigError::LimitReached {
                what: "listeners",
                limit: self.limits.max_listeners,
            });
        }
        if self
            .listeners
            .iter()
            .any(|l| l.port_id() == listener.port_id())
        {
            return Err(ConfigError::DuplicateListener(listener.port_id()));
        }
        self.listeners.push(listener);
        self.discovery_changed();
        Ok(())
    }

    /// Removes the listener with `port_id`; discovery controllers are told
    /// the log changed. Connections accepted on it are the socket layer's
    /// to close.
    pub fn remove_listener(&mut self, port_id: u16) -> Result<Listener, ConfigError> {
        let index = self
            .listeners
            .iter()
            .position(|listener| listener.port_id() == port_id)
            .ok_or(ConfigError::UnknownListener(port_id))?;
        let listener = self.listeners.remove(index);
        self.discovery_changed();
        Ok(listener)
    }

    /// Adds a subsystem (with the namespaces it already has).
    pub fn add_subsystem(&mut self, subsystem: Subsystem) -> Result<(), ConfigError> {
        if self.subsystems.len() >= self.limits.max_subsystems {
            return Err(ConfigError::LimitReached {
                what: "subsystems",
                limit: self.limits.max_subsystems,
            });
        }
        if self.subsystems.contains_key(subsystem.nqn()) {
            return Err(ConfigError::DuplicateSubsystem(subsystem.nqn().to_owned()));
        }
        let max = self.limits.max_nsid;
        if let Some((nsid, _)) = subsystem.namespaces().find(|(nsid, _)| *nsid > max) {
            return Err(ConfigError::InvalidNsid { nsid, max });
        }
        let nqn = subsystem.nqn().to_owned();
        self.subsystems.insert(
            nqn,
            HostedSubsystem {
                subsystem,
                stats: IoStatistics::default(),
                ana_changes: 0,
            },
        );
        self.discovery_changed();
        Ok(())
    }

    /// Removes a subsystem and tears down its controllers. Returns their
    /// IDs so the socket layer can close their connections.
    pub fn remove_subsystem(&mut self, nqn: &str) -> Result<Vec<u16>, ConfigError> {
        self.subsystems
            .remove(nqn)
            .ok_or_else(|| ConfigError::UnknownSubsystem(nqn.to_owned()))?;
        let doomed: Vec<u16> = self
            .controllers
            .values()
            .filter(|controller| controller.host.subnqn == nqn)
            .map(|controller| controller.cntlid)
            .collect();
        for &cntlid in &doomed {
            self.teardown(cntlid);
        }
        self.discovery_changed();
        Ok(doomed)
    }

    /// Lets `hostnqn` connect to subsystem `nqn` (see
    /// [`Subsystem::allow_host`]).
    pub fn allow_host(&mut self, nqn: &str, hostnqn: &str) -> Result<(), ConfigError> {
        self.hosted_mut(nqn)?.subsystem.allow_host(hostnqn)?;
        self.discovery_changed();
        Ok(())
    }

    /// Takes `hostnqn` off subsystem `nqn`'s access list (see
    /// [`Subsystem::disallow_host`]); returns whether it was on it.
    /// Controllers the host has now stay until they disconnect; its next
    /// Connect is refused.
    pub fn disallow_host(&mut self, nqn: &str, hostnqn: &str) -> Result<bool, ConfigError> {
        let removed = self.hosted_mut(nqn)?.subsystem.disallow_host(hostnqn);
        if removed {
            self.discovery_changed();
        }
        Ok(removed)
    }

    /// Adds a namespace to a live subsystem; its controllers get a
    /// Namespace Attribute Changed event.
    pub fn add_namespace(
        &mut self,
        nqn: &str,
        nsid: u32,
        namespace: Namespace,
    ) -> Result<(), ConfigError> {
        let max = self.limits.max_nsid;
        self.hosted_mut(nqn)?
            .subsystem
            .insert_namespace(nsid, namespace, max)?;
        self.namespace_changed(nqn, nsid);
        Ok(())
    }

    /// Removes a namespace; its controllers get a Namespace Attribute
    /// Changed event.
    pub fn remove_namespace(&mut self, nqn: &str, nsid: u32) -> Result<Namespace, ConfigError> {
        let namespace = self.hosted_mut(nqn)?.subsystem.remove_namespace(nsid)?;
        self.namespace_changed(nqn, nsid);
        Ok(namespace)
    }

    /// Changes the capacity of a namespace (online resize); controllers
    /// get a Namespace Attribute Changed event so hosts re-read Identify
    /// Namespace.
    pub fn resize_namespace(
        &mut self,
        nqn: &str,
        nsid: u32,
        blocks: u64,
    ) -> Result<(), ConfigError> {
        let namespace = self.hosted_mut(nqn)?.subsystem.namespace_mut(nsid)?;
        namespace.geometry = BlockGeometry::new(namespace.geometry.block_size(), blocks)?;
        self.namespace_changed(nqn, nsid);
        Ok(())
    }

    /// Marks a namespace ready (ANA optimized) or not (inaccessible) on
    /// this path: a replica promoted or deposed. A change bumps the
    /// subsystem's ANA change count and raises an ANA Change notice on its
    /// controllers, so multipath hosts re-read the ANA log and move their
    /// I/O.
    pub fn set_namespace_ready(
        &mut self,
        nqn: &str,
        nsid: u32,
        ready: bool,
    ) -> Result<(), ConfigError> {
        let hosted = self.hosted_mut(nqn)?;
        let namespace = hosted.subsystem.namespace_mut(nsid)?;
        if namespace.ready == ready {
            return Ok(());
        }
        namespace.ready = ready;
        hosted.ana_changes = hosted.ana_changes.wrapping_add(1);
        for controller in self.controllers.values_mut() {
            if controller.kind == ControllerKind::Nvm && controller.host.subnqn == nqn {
                raise(controller, AsyncEvent::AnaChange, &mut self.outbox);
            }
        }
        Ok(())
    }

    /// The subsystem named `nqn`.
    pub fn subsystem(&self, nqn: &str) -> Option<&Subsystem> {
        self.subsystems.get(nqn).map(|hosted| &hosted.subsystem)
    }

    /// Every subsystem, in NQN order.
    pub fn subsystems(&self) -> impl Iterator<Item = &Subsystem> {
        self.subsystems.values().map(|hosted| &hosted.subsystem)
    }

    /// The listeners, in the order they were added.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// IDs of the live controllers, ascending.
    pub fn controller_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.controllers.keys().copied()
    }

    /// I/O counters of subsystem `nqn`.
    pub fn statistics(&self, nqn: &str) -> Option<IoStatistics> {
        self.subsystems.get(nqn).map(|hosted| hosted.stats)
    }

    /// Number of live controllers.
    pub fn controller_count(&self) -> usize {
        self.controllers.len()
    }

    /// The discovery log's generation counter (GENCTR).
    pub fn discovery_generation(&self) -> u64 {
        self.discovery_genctr
    }

    fn hosted_mut(&mut self, nqn: &str) -> Result<&mut HostedSubsystem, ConfigError> {
        self.subsystems
            .get_mut(nqn)
            .ok_or_else(|| ConfigError::UnknownSubsystem(nqn.to_owned()))
    }

    fn discovery_changed(&mut self) {
        self.discovery_genctr = self.discovery_genctr.wrapping_add(1);
        for controller in self.controllers.values_mut() {
            if controller.kind == ControllerKind::Discovery {
                raise(
                    controller,
                    AsyncEvent::DiscoveryLogChanged,
                    &mut self.outbox,
                );
            }
        }
    }

    fn namespace_changed(&mut self, nqn: &str, nsid: u32) {
        for controller in self.controllers.values_mut() {
            if controller.kind == ControllerKind::Nvm && controller.host.subnqn == nqn {
                controller.changed_namespaces.record(nsid);
                raise(
                    controller,
                    AsyncEvent::NamespaceAttributeChanged,
                    &mut self.outbox,
                );
            }
        }
    }

    /// What the socket layer may want to know about controller `cntlid`.
    pub fn controller_info(&self, cntlid: u16) -> Option<ControllerInfo<'_>> {
        self.controllers
            .get(&cntlid)
            .map(|controller| ControllerInfo {
                kind: controller.kind,
                subnqn: &controller.host.subnqn,
                hostnqn: &controller.host.hostnqn,
                host_id: controller.host.host_id,
                kato_ms: controller.keep_alive.timeout_ms(),
                io_queues: controller.queues.connected.len(),
            })
    }
}

/// A live controller, as [`Target::controller_info`] describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerInfo<'a> {
    /// Discovery or NVM.
    pub kind: ControllerKind,
    /// Subsystem NQN it belongs to.
    pub subnqn: &'a str,
    /// Host NQN that created it.
    pub hostnqn: &'a str,
    /// Host identifier from Connect.
    pub host_id: [u8; 16],
    /// Keep alive timeout in ms (0: disabled).
    pub kato_ms: u32,
    /// I/O queues connected now.
    pub io_queues: usize,
}

fn raise(controller: &mut Controller, event: AsyncEvent, outbox: &mut Vec<AsyncCompletion>) {
    if let Some((cid, dw0)) = controller.events.raise(event) {
        outbox.push(admin::aer_completion(
            controller.cntlid,
            cid,
            Completion::with_dw0(dw0),
        ));
    }
}
