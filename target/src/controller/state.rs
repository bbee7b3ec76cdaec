//! The state of one controller: what the host negotiated on its admin
//! queue and everything later commands depend on.

use std::collections::BTreeSet;

use crate::controller::admin::features::FeatureValues;
use crate::controller::clock::Timestamp;
use crate::controller::config::TargetLimits;
use crate::controller::events::AsyncEvents;
use crate::controller::keep_alive::KeepAlive;
use crate::controller::properties::Registers;
use crate::nvme::admin::LogPageId;
use crate::nvme::identify::MAX_NAMESPACE_LIST;

/// Discovery or NVM (I/O) controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerKind {
    /// A discovery controller: admin queue only, serves the discovery log.
    Discovery,
    /// An I/O controller of an NVM subsystem.
    Nvm,
}

/// Who created a controller (checked again by every I/O queue Connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostIdentity {
    pub subnqn: String,
    pub hostnqn: String,
    pub host_id: [u8; 16],
}

/// I/O queue bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IoQueues {
    /// I/O queues the host may connect (QIDs 1..=granted).
    pub granted: u16,
    /// QIDs connected now.
    pub connected: BTreeSet<u16>,
    /// Bumped by a controller reset, which ends every I/O queue; queue
    /// sessions of an older epoch are stale.
    pub epoch: u32,
}

/// Namespaces changed since the host last read log page 04h.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ChangedNamespaces {
    nsids: BTreeSet<u32>,
    overflow: bool,
}

impl ChangedNamespaces {
    pub(crate) fn record(&mut self, nsid: u32) {
        if self.nsids.len() >= MAX_NAMESPACE_LIST && !self.nsids.contains(&nsid) {
            self.overflow = true;
        } else {
            self.nsids.insert(nsid);
        }
    }

    /// The Changed Namespace List (NVMe Base 2.0 §5.16.1.5): up to 1024
    /// NSIDs, or FFFFFFFFh first when more changed. Clears the list.
    pub(crate) fn take(&mut self) -> Vec<u32> {
        let list = if self.overflow {
            vec![u32::MAX]
        } else {
            self.nsids.iter().copied().collect()
        };
        *self = Self::default();
        list
    }
}

/// One controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Controller {
    pub cntlid: u16,
    /// Unique for the life of the target, unlike CNTLID which is reused:
    /// a queue session bound to a torn-down controller never reaches a
    /// new one with the same CNTLID.
    pub instance: u64,
    pub kind: ControllerKind,
    pub host: HostIdentity,
    pub registers: Registers,
    pub keep_alive: KeepAlive,
    pub events: AsyncEvents,
    pub features: FeatureValues,
    pub queues: IoQueues,
    pub changed_namespaces: ChangedNamespaces,
}

impl Controller {
    pub(crate) fn new(
        cntlid: u16,
        instance: u64,
        kind: ControllerKind,
        host: HostIdentity,
        kato_ms: u32,
        limits: &TargetLimits,
        now: Timestamp,
    ) -> Self {
        let granted = match kind {
            ControllerKind::Discovery => 0,
            ControllerKind::Nvm => limits.max_io_queues,
        };
        Self {
            cntlid,
            instance,
            kind,
            host,
            registers: Registers::new(limits, kind == ControllerKind::Nvm),
            keep_alive: KeepAlive::new(kato_ms, limits.kas, now),
            events: AsyncEvents::new(limits.max_outstanding_aers()),
            features: FeatureValues::default(),
            queues: IoQueues {
                granted,
                connected: BTreeSet::new(),
                epoch: 0,
            },
            changed_namespaces: ChangedNamespaces::default(),
        }
    }

    /// Controller Level Reset (CC.EN 1 → 0, NVMe Base 2.0 §3.7.2): I/O
    /// queues end, features return to their defaults. The admin queue and
    /// its association (KATO, host identity) stay. Returns the CIDs of the
    /// AERs to abort.
    pub(crate) fn reset(&mut self, limits: &TargetLimits) -> Vec<u16> {
        self.queues.connected.clear();
        self.queues.epoch = self.queues.epoch.wrapping_add(1);
        if self.kind == ControllerKind::Nvm {
            self.queues.granted = limits.max_io_queues;
        }
        self.features = FeatureValues::default();
        let aborted = self.events.take_parked();
        self.events = AsyncEvents::new(limits.max_outstanding_aers());
        aborted
    }

    /// The host read `log_page` with RAE = 0.
    pub(crate) fn log_page_read(&mut self, log_page: LogPageId) {
        self.events.log_page_read(log_page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_namespace_list_overflows_to_ffffffff() {
        let mut changed = ChangedNamespaces::default();
        changed.record(3);
        changed.record(1);
        changed.record(3);
        assert_eq!(changed.take(), vec![1, 3]);
        assert!(changed.take().is_empty());
        for nsid in 1..=1025 {
            changed.record(nsid);
        }
        assert_eq!(changed.take(), vec![u32::MAX]);
    }
}
