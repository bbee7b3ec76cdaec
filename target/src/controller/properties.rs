//! Controller properties over Fabrics (NVMe Base 2.0 §3.1.4 and §6.5/§6.6):
//! CAP, VS, CC and CSTS, and the enable / reset / shutdown handshakes the
//! host drives by writing CC and polling CSTS.
//!
//! Enabling and shutting down take no time here, so CSTS.RDY and
//! CSTS.SHST reflect a CC write immediately; the host's polling loop ends
//! on its first read.

use crate::controller::config::TargetLimits;
use crate::nvme::fabrics::{property, PropertyGetCommand, PropertySetCommand, PropertySize};
use crate::nvme::status::Status;

/// Controller Configuration (CC) fields.
pub mod cc {
    /// Enable.
    pub const EN: u32 = 1 << 0;
    /// I/O Command Set Selected, bits 6:4.
    pub const fn css(cc: u32) -> u32 {
        (cc >> 4) & 0x7
    }
    /// Memory Page Size, bits 10:7 (2^(12+MPS)).
    pub const fn mps(cc: u32) -> u32 {
        (cc >> 7) & 0xF
    }
    /// Arbitration Mechanism Selected, bits 13:11.
    pub const fn ams(cc: u32) -> u32 {
        (cc >> 11) & 0x7
    }
    /// Shutdown Notification, bits 15:14.
    pub const fn shn(cc: u32) -> u32 {
        (cc >> 14) & 0x3
    }
    /// I/O Submission Queue Entry Size, bits 19:16 (log2).
    pub const fn iosqes(cc: u32) -> u32 {
        (cc >> 16) & 0xF
    }
    /// I/O Completion Queue Entry Size, bits 23:20 (log2).
    pub const fn iocqes(cc: u32) -> u32 {
        (cc >> 20) & 0xF
    }
    /// CSS 000b: NVM command set.
    pub const CSS_NVM: u32 = 0b000;
    /// CSS 110b: all supported I/O command sets (CAP.CSS bit 6 set).
    pub const CSS_ALL_IO_SETS: u32 = 0b110;
}

/// Controller Status (CSTS) fields.
pub mod csts {
    /// Ready.
    pub const RDY: u32 = 1 << 0;
    /// Controller Fatal Status.
    pub const CFS: u32 = 1 << 1;
    /// Shutdown Status mask (bits 3:2).
    pub const SHST_MASK: u32 = 0b11 << 2;
    /// Shutdown processing complete (SHST = 10b).
    pub const SHST_COMPLETE: u32 = 0b10 << 2;
}

/// CAP.CSS bit 0: NVM command set (CAP bit 37).
const CAP_CSS_NVM: u64 = 1 << 37;
/// CAP.CSS bit 6: one or more I/O command sets, so the host selects CSS 110b
/// and reads the command set of each namespace from CNS 03h (CAP bit 43).
const CAP_CSS_IO_SETS: u64 = 1 << 43;

/// What a CC write did, for the controller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CcTransition {
    /// Nothing that changes controller state.
    None,
    /// EN 0 → 1 with a valid configuration: CSTS.RDY is now 1.
    Enabled,
    /// EN 1 → 0: a Controller Level Reset (NVMe Base 2.0 §3.7.2); I/O
    /// queues are gone, features return to defaults.
    Reset,
    /// SHN went non-zero: shutdown complete.
    Shutdown,
}

/// The property registers of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Registers {
    /// Whether the controller has I/O queues whose entry sizes CC must
    /// set (not a discovery controller).
    has_io_queues: bool,
    cap: u64,
    vs: u32,
    cc: u32,
    csts: u32,
}

impl Registers {
    pub(crate) fn new(limits: &TargetLimits, has_io_queues: bool) -> Self {
        let cap = u64::from(limits.mqes)
            | (u64::from(limits.ready_timeout) << 24)
            | CAP_CSS_NVM
            | CAP_CSS_IO_SETS;
        Self {
            has_io_queues,
            cap,
            vs: limits.version,
            cc: 0,
            csts: 0,
        }
    }

    /// CC.EN = 1, CSTS.RDY = 1 and no fatal error: admin and I/O commands
    /// may run.
    pub(crate) fn is_ready(&self) -> bool {
        self.cc & cc::EN != 0 && self.csts & (csts::RDY | csts::CFS) == csts::RDY
    }

    #[cfg(test)]
    pub(crate) fn csts(&self) -> u32 {
        self.csts
    }

    /// Marks a fatal controller error (keep alive expired, NVMe Base 2.0
    /// §3.9.5: the controller treats it as a fatal condition).
    pub(crate) fn set_fatal(&mut self) {
        self.csts |= csts::CFS;
    }

    pub(crate) fn get(&self, command: PropertyGetCommand) -> Result<u64, Status> {
        match (command.offset, command.size) {
            (property::CAP, PropertySize::Eight) => Ok(self.cap),
            (property::VS, PropertySize::Four) => Ok(u64::from(self.vs)),
            (property::CC, PropertySize::Four) => Ok(u64::from(self.cc)),
            (property::CSTS, PropertySize::Four) => Ok(u64::from(self.csts)),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    pub(crate) fn set(&mut self, command: PropertySetCommand) -> Result<CcTransition, Status> {
        match (command.offset, command.size) {
            (property::CC, PropertySize::Four) => Ok(self.write_cc(command.value as u32)),
            // CAP, VS and CSTS are read-only; NSSR is not supported
            // (CAP.NSSRS = 0); anything else is not a property.
            _ => Err(Status::INVALID_FIELD),
        }
    }

    fn write_cc(&mut self, new: u32) -> CcTransition {
        let old = self.cc;
        self.cc = new;
        let mut transition = CcTransition::None;
        if new & cc::EN != 0 && old & cc::EN == 0 {
            if self.valid_enable(new) {
                self.csts |= csts::RDY;
                transition = CcTransition::Enabled;
            } else {
                // An invalid configuration makes the enable fail with
                // CSTS.CFS, as nvmet does; the host reports the failure.
                self.csts |= csts::CFS;
            }
        }
        if new & cc::EN == 0 && old & cc::EN != 0 {
            self.csts = 0;
            transition = CcTransition::Reset;
        }
        if cc::shn(new) != 0 && cc::shn(old) == 0 {
            self.csts = (self.csts & !(csts::RDY | csts::SHST_MASK)) | csts::SHST_COMPLETE;
            transition = CcTransition::Shutdown;
        }
        if cc::shn(new) == 0 && cc::shn(old) != 0 {
            self.csts &= !csts::SHST_MASK;
        }
        transition
    }

    /// CC values a fabrics controller can run with: NVM or "all I/O command
    /// sets", 4 KiB pages (CAP.MPSMIN = MPSMAX = 0), round robin, and
    /// 64/16-byte queue entries. A discovery controller has no I/O queues,
    /// so its entry sizes are not checked (hosts leave them 0; nvmet does
    /// not enforce them either).
    fn valid_enable(&self, value: u32) -> bool {
        let css = matches!(cc::css(value), cc::CSS_NVM | cc::CSS_ALL_IO_SETS);
        let entries = !self.has_io_queues || (cc::iosqes(value), cc::iocqes(value)) == (6, 4);
        css && entries && cc::mps(value) == 0 && cc::ams(value) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(registers: &Registers, offset: u32, size: PropertySize) -> Result<u64, Status> {
        registers.get(PropertyGetCommand { size, offset })
    }

    fn set_cc(registers: &mut Registers, value: u32) -> Result<CcTransition, Status> {
        registers.set(PropertySetCommand {
            size: PropertySize::Four,
            offset: property::CC,
            value: u64::from(value),
        })
    }

    #[test]
    fn cap_matches_what_the_host_expects() {
        let registers = Registers::new(
            &TargetLimits {
                mqes: 1023,
                ..TargetLimits::default()
            },
            true,
        );
        // nvmet's CAP from the kernel notes: MQES 1023, TO 15, CSS 0x41.
        assert_eq!(
            get(&registers, property::CAP, PropertySize::Eight),
            Ok(0x8200f0003ff)
        );
        assert_eq!(
            get(&registers, property::CAP, PropertySize::Four),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            get(&registers, property::VS, PropertySize::Four),
            Ok(0x10300)
        );
        assert_eq!(
            get(&registers, 0x40, PropertySize::Four),
            Err(Status::INVALID_FIELD)
        );
    }

    #[test]
    fn enable_disable_shutdown() {
        let mut r = Registers::new(&TargetLimits::default(), true);
        assert_eq!(set_cc(&mut r, 0x460060), Ok(CcTransition::None));
        assert_eq!(get(&r, property::CC, PropertySize::Four), Ok(0x460060));
        assert_eq!(set_cc(&mut r, 0x460061), Ok(CcTransition::Enabled));
        assert_eq!(r.csts() & csts::RDY, csts::RDY);
        assert!(r.is_ready());
        assert_eq!(set_cc(&mut r, 0x464061), Ok(CcTransition::Shutdown));
        assert_eq!(r.csts(), csts::SHST_COMPLETE);
        assert_eq!(set_cc(&mut r, 0x460060), Ok(CcTransition::Reset));
        assert_eq!(r.csts(), 0);
    }

    #[test]
    fn discovery_controllers_ignore_queue_entry_sizes() {
        let mut r = Registers::new(&TargetLimits::default(), false);
        assert_eq!(set_cc(&mut r, 0x000061), Ok(CcTransition::Enabled));
        let mut r = Registers::new(&TargetLimits::default(), true);
        assert_eq!(set_cc(&mut r, 0x000061), Ok(CcTransition::None));
        assert_eq!(r.csts(), csts::CFS);
    }

    #[test]
    fn bad_enable_sets_cfs_and_read_only_properties() {
        let mut r = Registers::new(&TargetLimits::default(), true);
        assert_eq!(set_cc(&mut r, 0x450061), Ok(CcTransition::None));
        assert_eq!(r.csts(), csts::CFS);
        assert!(!r.is_ready());
        let write = |offset| PropertySetCommand {
            size: PropertySize::Four,
            offset,
            value: 1,
        };
        assert_eq!(r.set(write(property::CSTS)), Err(Status::INVALID_FIELD));
        assert_eq!(r.set(write(property::NSSR)), Err(Status::INVALID_FIELD));
        let wide = PropertySetCommand {
            size: PropertySize::Eight,
            offset: property::CC,
            value: 1,
        };
        assert_eq!(r.set(wide), Err(Status::INVALID_FIELD));
    }
}
