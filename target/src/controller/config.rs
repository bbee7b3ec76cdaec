//! Limits and advertised capabilities shared by every controller of a
//! [`crate::controller::Target`].
//!
//! Everything a host can make the target allocate is bounded here: queues
//! per controller, queue depth, controllers, outstanding AERs, transfer
//! sizes, namespaces, subsystems and listeners.

use crate::nvme::identify::nvme_version;

/// Smallest minimum memory page size (CAP.MPSMIN = 0): 4 KiB. MDTS is
/// expressed in units of it (NVMe Base 2.0 §5.17.2.1, MDTS).
pub const MIN_PAGE_SIZE: u64 = 4096;

/// Target-wide limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetLimits {
    /// CAP.MQES: largest queue size a host may ask for, 0's based.
    pub mqes: u16,
    /// I/O queues granted to a controller at most (Number of Queues feature).
    pub max_io_queues: u16,
    /// MDTS: largest data transfer, as a power of two of [`MIN_PAGE_SIZE`].
    /// Zero ("no limit") is not allowed here: every buffer must be bounded.
    pub mdts: u8,
    /// In-capsule data an I/O command may carry (bytes); sets IOCCSZ.
    pub in_capsule_data_size: u32,
    /// Keep Alive Support granularity in units of 100 ms (KAS).
    pub kas: u16,
    /// Asynchronous Event Request Limit, 0's based (AERL).
    pub aerl: u8,
    /// Controllers that may exist at once across all subsystems.
    pub max_controllers: u16,
    /// Smallest controller ID handed out (at least 1).
    pub cntlid_min: u16,
    /// Largest controller ID handed out (at most FFEFh). Targets that
    /// expose the same subsystem NQN (replicas of one volume) must use
    /// disjoint ranges: the Linux host refuses a second controller of a
    /// subsystem with a CNTLID it already knows.
    pub cntlid_max: u16,
    /// Number of Namespaces (NN): the largest NSID a subsystem may use.
    pub max_nsid: u32,
    /// Subsystems a target may hold (the discovery log grows with them).
    pub max_subsystems: usize,
    /// Listeners (ports) a target may hold.
    pub max_listeners: usize,
    /// Version reported in VS and Identify VER (1.3 or 1.4).
    pub version: u32,
    /// CAP.TO: worst-case time to ready, in 500 ms units.
    pub ready_timeout: u8,
}

impl Default for TargetLimits {
    fn default() -> Self {
        Self {
            // 128 entries: nvme-cli's default I/O queue size (SQSIZE=127).
            mqes: 127,
            max_io_queues: 64,
            // 2^8 * 4 KiB = 1 MiB, the largest transfer the kernel host
            // was seen sending in one command.
            mdts: 8,
            // IOCCSZ = 1028 like nvmet: 16 KiB of in-capsule write data.
            in_capsule_data_size: 16 * 1024,
            // 1 s granularity, as nvmet.
            kas: 10,
            aerl: 3,
            max_controllers: 1024,
            cntlid_min: 1,
            cntlid_max: 0xFFEF,
            max_nsid: 1024,
            max_subsystems: 256,
            max_listeners: 16,
            version: nvme_version(1, 3, 0),
            ready_timeout: 15,
        }
    }
}

impl TargetLimits {
    /// MDTS in bytes.
    pub fn max_transfer_bytes(&self) -> u64 {
        MIN_PAGE_SIZE << u32::from(self.mdts.min(20))
    }

    /// Number of AERs one controller may hold (AERL is 0's based).
    pub fn max_outstanding_aers(&self) -> usize {
        usize::from(self.aerl) + 1
    }

    /// IOCCSZ: command capsule size in 16-byte units (64-byte SQE plus
    /// in-capsule data).
    pub fn ioccsz(&self) -> u32 {
        (self.in_capsule_data_size.saturating_add(64)) / 16
    }

    /// Queue entries a host may ask for (MQES + 1).
    pub fn max_queue_entries(&self) -> u32 {
        u32::from(self.mqes) + 1
    }
}
