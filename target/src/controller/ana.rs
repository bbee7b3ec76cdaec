//! Asymmetric Namespace Access (NVMe Base 2.0 §8.1): which paths to a
//! namespace may serve it now, so that a host with native NVMe multipath
//! connected to every copy of a replicated volume sends I/O to the serving
//! primary alone and moves to another path by itself after a failover.
//!
//! Each namespace is its own ANA group (ANAGRPID = NSID, never changing):
//! a replicated namespace is optimized on the node that serves it and
//! inaccessible on the others, whatever the other namespaces of the
//! subsystem do. A change of state bumps the subsystem's change count and
//! raises an ANA Change notice, after which the host reads this log.

use crate::controller::subsystem::Namespace;
use crate::wire::put_u32;

/// ANA Transition Time (ANATT, seconds): how long a host waits for a group
/// in the change state. Keel never reports that state, so this only bounds
/// what a host assumes.
pub const TRANSITION_TIME_S: u8 = 10;

/// Asymmetric Namespace Access Capabilities (ANACAP) Keel reports.
pub mod anacap {
    /// Reports the optimized state.
    pub const OPTIMIZED: u8 = 1 << 0;
    /// Reports the inaccessible state.
    pub const INACCESSIBLE: u8 = 1 << 2;
    /// A namespace's ANAGRPID does not change while it is attached.
    pub const GROUP_ID_STATIC: u8 = 1 << 6;
}

/// Log Specific Field bit of the ANA log: Return Groups Only (no NSID
/// lists).
pub const LSP_GROUPS_ONLY: u8 = 1 << 0;

/// An ANA group's state (descriptor byte 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum AnaState {
    /// This path serves the namespace.
    Optimized = 0x01,
    /// This path may not serve it now (a replica, not the primary).
    Inaccessible = 0x03,
}

impl AnaState {
    /// Its name in the control socket's answers.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Optimized => "optimized",
            Self::Inaccessible => "inaccessible",
        }
    }

    /// The state of `namespace` on this path.
    pub const fn of(namespace: &Namespace) -> Self {
        Self::of_serving(namespace.ready)
    }

    /// The state of a path whose node serves the namespace, or not.
    pub const fn of_serving(serving: bool) -> Self {
        if serving {
            Self::Optimized
        } else {
            Self::Inaccessible
        }
    }
}

/// The ANA group of namespace `nsid`.
pub const fn group_of(nsid: u32) -> u32 {
    nsid
}

const HEADER_LEN: usize = 16;
const DESCRIPTOR_LEN: usize = 32;

/// The ANA log page (LID 0Ch): a header (change count, group count), then
/// one descriptor per active namespace's group, in NSID order, each with
/// its NSID unless `groups_only`.
pub fn build_log<'a>(
    namespaces: impl Iterator<Item = (u32, &'a Namespace)>,
    change_count: u64,
    groups_only: bool,
) -> Vec<u8> {
    let namespaces: Vec<(u32, &Namespace)> = namespaces.collect();
    let nsid_len = if groups_only { 0 } else { 4 };
    let mut page = vec![0; HEADER_LEN + namespaces.len() * (DESCRIPTOR_LEN + nsid_len)];
    page[..8].copy_from_slice(&change_count.to_le_bytes());
    let groups = u16::try_from(namespaces.len()).unwrap_or(u16::MAX);
    page[8..10].copy_from_slice(&groups.to_le_bytes());
    let mut at = HEADER_LEN;
    for (nsid, namespace) in namespaces.into_iter().take(usize::from(groups)) {
        put_u32(&mut page, at, group_of(nsid));
        put_u32(&mut page, at + 4, u32::from(!groups_only));
        page[at + 8..at + 16].copy_from_slice(&change_count.to_le_bytes());
        page[at + 16] = AnaState::of(namespace) as u8;
        at += DESCRIPTOR_LEN;
        if !groups_only {
            put_u32(&mut page, at, nsid);
            at += 4;
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::subsystem::BlockGeometry;

    fn namespace(ready: bool) -> Namespace {
        let geometry = BlockGeometry::new(4096, 256).expect("geometry");
        Namespace {
            ready,
            ..Namespace::new(geometry, [1; 16], [2; 16])
        }
    }

    fn le32(page: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]])
    }

    #[test]
    fn the_log_has_one_group_per_namespace_with_its_state() {
        let (one, three) = (namespace(true), namespace(false));
        let page = build_log([(1, &one), (3, &three)].into_iter(), 7, false);
        assert_eq!(page.len(), 16 + 2 * 36);
        assert_eq!(u64::from_le_bytes(page[..8].try_into().expect("8")), 7);
        assert_eq!(u16::from_le_bytes([page[8], page[9]]), 2);
        // Group 1: one NSID, optimized.
        assert_eq!(le32(&page, 16), 1);
        assert_eq!(le32(&page, 20), 1);
        assert_eq!(u64::from_le_bytes(page[24..32].try_into().expect("8")), 7);
        assert_eq!(page[32], 0x01);
        assert!(page[33..48].iter().all(|&b| b == 0), "reserved");
        assert_eq!(le32(&page, 48), 1);
        // Group 3: inaccessible.
        assert_eq!(le32(&page, 52), 3);
        assert_eq!(page[52 + 16], 0x03);
        assert_eq!(le32(&page, 52 + 32), 3);
    }

    #[test]
    fn groups_only_leaves_out_the_nsid_lists() {
        let one = namespace(true);
        let page = build_log([(1, &one)].into_iter(), 0, true);
        assert_eq!(page.len(), 16 + 32);
        assert_eq!(le32(&page, 20), 0, "NNSIDS");
    }
}
