//! NVM subsystems and their namespaces: what a host can connect to and
//! what it sees there.

use std::collections::{BTreeMap, BTreeSet};

use crate::controller::error::ConfigError;
use crate::nvme::nqn::{validate_nqn, DISCOVERY_NQN};

/// Serial Number field width in Identify Controller (SN).
pub const SERIAL_MAX_LEN: usize = 20;
/// Model Number field width (MN).
pub const MODEL_MAX_LEN: usize = 40;
/// Firmware Revision field width (FR).
pub const FIRMWARE_MAX_LEN: usize = 8;
/// Hosts one subsystem may list as allowed.
pub const MAX_ALLOWED_HOSTS: usize = 1024;

/// Logical block size and capacity of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockGeometry {
    block_size_shift: u8,
    blocks: u64,
}

impl BlockGeometry {
    /// `blocks` logical blocks of `block_size` bytes. The block size must be
    /// a power of two from 512 to 64 KiB (LBADS is 9..=16 in practice);
    /// capacity must be non-zero and its byte size must fit in a u64.
    pub fn new(block_size: u32, blocks: u64) -> Result<Self, ConfigError> {
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(ConfigError::InvalidGeometry(
                "block size must be a power of two in 512..=65536",
            ));
        }
        if blocks == 0 {
            return Err(ConfigError::InvalidGeometry("capacity must not be zero"));
        }
        // A power of two in 512..=65536: the shift is 9..=16.
        let block_size_shift = block_size.trailing_zeros() as u8;
        if blocks > u64::MAX >> block_size_shift {
            return Err(ConfigError::InvalidGeometry("capacity in bytes overflows"));
        }
        Ok(Self {
            block_size_shift,
            blocks,
        })
    }

    /// Bytes per logical block.
    pub const fn block_size(&self) -> u32 {
        1 << self.block_size_shift
    }

    /// log2 of the block size (LBADS in Identify Namespace LBAF0).
    pub const fn block_size_shift(&self) -> u8 {
        self.block_size_shift
    }

    /// Capacity in logical blocks (NSZE).
    pub const fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Capacity in bytes.
    pub const fn bytes(&self) -> u64 {
        self.blocks << self.block_size_shift
    }
}

/// One namespace: geometry, the identifiers multipath hosts match on, and
/// whether it may serve I/O now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Namespace {
    /// Block size and capacity.
    pub geometry: BlockGeometry,
    /// Namespace Globally Unique Identifier; the same on every replica.
    pub nguid: [u8; 16],
    /// Namespace UUID; the same on every replica.
    pub uuid: [u8; 16],
    /// IEEE EUI-64 (all zero: not reported).
    pub eui64: [u8; 8],
    /// Whether I/O is served on this path: ANA optimized, or inaccessible
    /// on a replica that is not the primary, which answers I/O with
    /// Asymmetric Access Inaccessible (a path error: the host never reads a
    /// stale copy and moves to another path; ARCHITECTURE.md, "Failover
    /// path for hosts").
    pub ready: bool,
}

impl Namespace {
    /// A ready namespace with the given identity.
    pub fn new(geometry: BlockGeometry, nguid: [u8; 16], uuid: [u8; 16]) -> Self {
        Self {
            geometry,
            nguid,
            uuid,
            eui64: [0; 8],
            ready: true,
        }
    }
}

/// An NVM subsystem: identity strings, access list and namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subsystem {
    nqn: String,
    serial: String,
    model: String,
    firmware: String,
    allowed_hosts: BTreeSet<String>,
    namespaces: BTreeMap<u32, Namespace>,
}

impl Subsystem {
    /// A subsystem with no namespaces that any host may connect to.
    pub fn new(nqn: &str, serial: &str, model: &str, firmware: &str) -> Result<Self, ConfigError> {
        validate_nqn(nqn).map_err(|source| ConfigError::InvalidNqn {
            nqn: nqn.to_owned(),
            source,
        })?;
        if nqn == DISCOVERY_NQN {
            return Err(ConfigError::ReservedNqn(nqn.to_owned()));
        }
        check_text("serial", serial, SERIAL_MAX_LEN)?;
        check_text("model", model, MODEL_MAX_LEN)?;
        check_text("firmware", firmware, FIRMWARE_MAX_LEN)?;
        Ok(Self {
            nqn: nqn.to_owned(),
            serial: serial.to_owned(),
            model: model.to_owned(),
            firmware: firmware.to_owned(),
            allowed_hosts: BTreeSet::new(),
            namespaces: BTreeMap::new(),
        })
    }

    /// Restricts access to the listed hosts (plus any added before). An
    /// empty list means any host may connect.
    pub fn allow_host(&mut self, hostnqn: &str) -> Result<(), ConfigError> {
        validate_nqn(hostnqn).map_err(|source| ConfigError::InvalidNqn {
            nqn: hostnqn.to_owned(),
            source,
        })?;
        if self.allowed_hosts.len() >= MAX_ALLOWED_HOSTS {
            return Err(ConfigError::LimitReached {
                what: "allowed hosts",
                limit: MAX_ALLOWED_HOSTS,
            });
        }
        self.allowed_hosts.insert(hostnqn.to_owned());
        Ok(())
    }

    /// Removes `hostnqn` from the access list; false if it was not on it.
    /// Removing the last host leaves the list empty, which lets ANY host
    /// connect: callers that do not mean that must check first.
    pub fn disallow_host(&mut self, hostnqn: &str) -> bool {
        self.allowed_hosts.remove(hostnqn)
    }

    /// The hosts allowed to connect, sorted (empty: any host may).
    pub fn allowed_hosts(&self) -> impl Iterator<Item = &str> {
        self.allowed_hosts.iter().map(String::as_str)
    }

    /// Whether `hostnqn` may connect.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        self.allowed_hosts.is_empty() || self.allowed_hosts.contains(hostnqn)
    }

    /// Adds a namespace. `max_nsid` is the target's NN.
    pub(crate) fn insert_namespace(
        &mut self,
        nsid: u32,
        namespace: Namespace,
        max_nsid: u32,
    ) -> Result<(), ConfigError> {
        if nsid == 0 || nsid == u32::MAX || nsid > max_nsid {
            return Err(ConfigError::InvalidNsid {
                nsid,
                max: max_nsid,
            });
        }
        if self.namespaces.contains_key(&nsid) {
            return Err(ConfigError::DuplicateNamespace(nsid));
        }
        // Hosts match paths to a namespace by these identifiers; without
        // one the Linux host cannot build a multipath head for it.
        if namespace.nguid == [0; 16] && namespace.uuid == [0; 16] {
            return Err(ConfigError::MissingNamespaceIdentity(nsid));
        }
        self.namespaces.insert(nsid, namespace);
        Ok(())
    }

    /// Adds a namespace before the subsystem is handed to a target (no
    /// host can be told about it yet, so no event is raised). NSIDs above
    /// the target's NN are refused when the subsystem is added.
    pub fn add_namespace(&mut self, nsid: u32, namespace: Namespace) -> Result<(), ConfigError> {
        self.insert_namespace(nsid, namespace, u32::MAX - 1)
    }

    pub(crate) fn namespace_mut(&mut self, nsid: u32) -> Result<&mut Namespace, ConfigError> {
        self.namespaces
            .get_mut(&nsid)
            .ok_or(ConfigError::UnknownNamespace(nsid))
    }

    pub(crate) fn remove_namespace(&mut self, nsid: u32) -> Result<Namespace, ConfigError> {
        self.namespaces
            .remove(&nsid)
            .ok_or(ConfigError::UnknownNamespace(nsid))
    }

    /// Subsystem NQN.
    pub fn nqn(&self) -> &str {
        &self.nqn
    }

    /// Serial number (Identify SN).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Model number (Identify MN).
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Firmware revision (Identify FR).
    pub fn firmware(&self) -> &str {
        &self.firmware
    }

    /// The namespace with `nsid`, if active.
    pub fn namespace(&self, nsid: u32) -> Option<&Namespace> {
        self.namespaces.get(&nsid)
    }

    /// Active namespaces in NSID order.
    pub fn namespaces(&self) -> impl Iterator<Item = (u32, &Namespace)> {
        self.namespaces.iter().map(|(nsid, ns)| (*nsid, ns))
    }
}

fn check_text(field: &'static str, text: &str, max: usize) -> Result<(), ConfigError> {
    let printable = text.bytes().all(|byte| (0x20..=0x7E).contains(&byte));
    if text.is_empty() || text.len() > max || !printable {
        return Err(ConfigError::InvalidText { field, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NQN: &str = "nqn.2024-01.dev.keel:vol0";

    #[test]
    fn geometry_limits() {
        let g = BlockGeometry::new(4096, 256).unwrap();
        assert_eq!(
            (g.block_size(), g.block_size_shift(), g.bytes()),
            (4096, 12, 1 << 20)
        );
        assert!(BlockGeometry::new(4097, 1).is_err());
        assert!(BlockGeometry::new(256, 1).is_err());
        assert!(BlockGeometry::new(512, 0).is_err());
        assert!(BlockGeometry::new(4096, u64::MAX).is_err());
    }

    #[test]
    fn subsystem_validation_and_hosts() {
        assert!(Subsystem::new("bogus", "S", "M", "F").is_err());
        assert!(Subsystem::new(DISCOVERY_NQN, "S", "M", "F").is_err());
        assert!(Subsystem::new(NQN, "", "M", "F").is_err());
        assert!(Subsystem::new(NQN, "S", "M", "123456789").is_err());
        let mut s = Subsystem::new(NQN, "S", "M", "F").unwrap();
        let host = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        assert!(s.host_allowed(host));
        s.allow_host("nqn.2024-01.dev.keel:other").unwrap();
        assert!(!s.host_allowed(host));
        s.allow_host(host).unwrap();
        assert!(s.host_allowed(host));
    }

    #[test]
    fn namespace_ids() {
        let mut s = Subsystem::new(NQN, "S", "M", "F").unwrap();
        let ns = Namespace::new(BlockGeometry::new(512, 8).unwrap(), [1; 16], [2; 16]);
        assert!(s.add_namespace(0, ns).is_err());
        assert!(s.add_namespace(u32::MAX, ns).is_err());
        let anonymous = Namespace::new(ns.geometry, [0; 16], [0; 16]);
        assert_eq!(
            s.add_namespace(1, anonymous),
            Err(ConfigError::MissingNamespaceIdentity(1))
        );
        s.add_namespace(3, ns).unwrap();
        assert_eq!(
            s.add_namespace(3, ns),
            Err(ConfigError::DuplicateNamespace(3))
        );
        assert!(s.namespace(3).is_some());
    }
}

/// A subsystem as a target holds it: its configuration and the counters
/// its I/O feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostedSubsystem {
    pub subsystem: Subsystem,
    pub stats: crate::controller::stats::IoStatistics,
    /// ANA change count: bumped whenever a namespace's ANA state changes.
    pub ana_changes: u64,
}
