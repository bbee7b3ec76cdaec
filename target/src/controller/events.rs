//! Asynchronous events (NVMe Base 2.0 §5.2, Asynchronous Event Request).
//!
//! The host parks up to AERL+1 AER commands; an event completes the oldest
//! one. After an event is reported, that event type stays masked until the
//! host reads its log page with RAE = 0, so repeated changes coalesce into
//! one notice. Events raised while no AER is parked wait, bounded, for the
//! next AER.

use std::collections::VecDeque;

use crate::nvme::admin::LogPageId;
use crate::nvme::identify::oaes;
use crate::nvme::status::Status;

/// Asynchronous Event Type "Notice" (completion DW0 bits 2:0).
const EVENT_TYPE_NOTICE: u32 = 0b010;

/// An event the controller can report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// Namespace Attribute Changed: namespaces appeared, went away or
    /// changed; details in the Changed Namespace List log (04h).
    NamespaceAttributeChanged,
    /// Discovery Log Page Change: subsystems or listeners changed; the
    /// host re-reads the discovery log (70h).
    DiscoveryLogChanged,
    /// Asymmetric Namespace Access Change: a namespace's ANA state on this
    /// path changed; the host re-reads the ANA log (0Ch).
    AnaChange,
}

impl AsyncEvent {
    /// Event information (DW0 bits 15:8) per §5.2, "Notice" events.
    const fn info(self) -> u32 {
        match self {
            Self::NamespaceAttributeChanged => 0x00,
            Self::AnaChange => 0x03,
            Self::DiscoveryLogChanged => 0xF0,
        }
    }

    /// The log page the host reads to learn more and unmask the event.
    pub const fn log_page(self) -> LogPageId {
        match self {
            Self::NamespaceAttributeChanged => LogPageId::ChangedNamespaceList,
            Self::AnaChange => LogPageId::AsymmetricNamespaceAccess,
            Self::DiscoveryLogChanged => LogPageId::Discovery,
        }
    }

    /// The Asynchronous Event Configuration bit that enables it.
    const fn config_bit(self) -> u32 {
        match self {
            Self::NamespaceAttributeChanged => oaes::NAMESPACE_ATTRIBUTE,
            Self::AnaChange => oaes::ANA_CHANGE,
            Self::DiscoveryLogChanged => oaes::DISCOVERY_LOG_CHANGE,
        }
    }

    /// Completion DW0: type, information and log page identifier.
    pub const fn dw0(self) -> u32 {
        EVENT_TYPE_NOTICE | (self.info() << 8) | ((self.log_page().as_u8() as u32) << 16)
    }
}

/// Most events held while no AER is parked (one per event type suffices,
/// since a type is masked until its log page is read).
const MAX_PENDING_EVENTS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AsyncEvents {
    /// CIDs of parked AERs, oldest first.
    parked: VecDeque<u16>,
    limit: usize,
    /// Events not yet reported, oldest first.
    pending: VecDeque<AsyncEvent>,
    /// Event types reported (or pending) whose log page the host has not
    /// read yet.
    masked: Vec<AsyncEvent>,
    /// Asynchronous Event Configuration (Set Features 0Bh).
    config: u32,
}

impl AsyncEvents {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            parked: VecDeque::new(),
            limit,
            pending: VecDeque::new(),
            masked: Vec::new(),
            config: 0,
        }
    }

    pub(crate) fn config(&self) -> u32 {
        self.config
    }

    pub(crate) fn set_config(&mut self, config: u32) {
        self.config = config;
    }

    /// Parks an AER. Returns the (CID, DW0) of an AER completed at once
    /// because an event was waiting, or the error status for this one.
    pub(crate) fn park(&mut self, cid: u16) -> Result<Option<(u16, u32)>, Status> {
        if self.parked.len() >= self.limit {
            return Err(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED);
        }
        self.parked.push_back(cid);
        Ok(self.dispatch())
    }

    /// Raises an event; returns the (CID, DW0) of the AER it completes, if
    /// one was parked. Disabled or masked events are dropped.
    pub(crate) fn raise(&mut self, event: AsyncEvent) -> Option<(u16, u32)> {
        let enabled = self.config & event.config_bit() != 0;
        if !enabled || self.masked.contains(&event) || self.pending.len() >= MAX_PENDING_EVENTS {
            return None;
        }
        self.masked.push(event);
        self.pending.push_back(event);
        self.dispatch()
    }

    /// The host read `log_page` with RAE = 0: its events are unmasked.
    pub(crate) fn log_page_read(&mut self, log_page: LogPageId) {
        self.masked.retain(|event| event.log_page() != log_page);
    }

    /// Takes every parked AER (teardown or reset): their CIDs, oldest first.
    pub(crate) fn take_parked(&mut self) -> Vec<u16> {
        self.parked.drain(..).collect()
    }

    fn dispatch(&mut self) -> Option<(u16, u32)> {
        if self.parked.is_empty() {
            return None;
        }
        let event = self.pending.pop_front()?;
        let cid = self.parked.pop_front()?;
        Some((cid, event.dw0()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dw0_layout() {
        assert_eq!(AsyncEvent::NamespaceAttributeChanged.dw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::DiscoveryLogChanged.dw0(), 0x0070_F002);
        assert_eq!(AsyncEvent::AnaChange.dw0(), 0x000C_0302);
    }

    #[test]
    fn park_raise_mask_unmask() {
        let mut events = AsyncEvents::new(2);
        events.set_config(oaes::NAMESPACE_ATTRIBUTE);
        assert_eq!(events.park(31), Ok(None));
        assert_eq!(events.park(30), Ok(None));
        assert_eq!(
            events.park(29),
            Err(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED)
        );
        let ns = AsyncEvent::NamespaceAttributeChanged;
        assert_eq!(events.raise(ns), Some((31, ns.dw0())));
        // Masked until the changed namespace list is read.
        assert_eq!(events.raise(ns), None);
        events.log_page_read(LogPageId::ChangedNamespaceList);
        assert_eq!(events.raise(ns), Some((30, ns.dw0())));
        // Disabled events are dropped.
        assert_eq!(events.raise(AsyncEvent::DiscoveryLogChanged), None);
    }

    #[test]
    fn pending_event_completes_the_next_aer() {
        let mut events = AsyncEvents::new(4);
        events.set_config(oaes::DISCOVERY_LOG_CHANGE);
        let disc = AsyncEvent::DiscoveryLogChanged;
        assert_eq!(events.raise(disc), None);
        assert_eq!(events.park(31), Ok(Some((31, disc.dw0()))));
        assert_eq!(events.park(31), Ok(None));
        assert_eq!(events.take_parked(), vec![31]);
    }
}
