//! Completion status: Status Code Type, Status Code and Do Not Retry.
//!
//! NVMe Base 2.0 §4.2.3 ("Status Field Definition"): the 15 bits above the
//! phase tag of CQE dword 3 carry SC (bits 8:1), SCT (11:9), CRD (13:12),
//! More (14) and DNR (15). [`Status`] is the part a command handler chooses
//! (SCT, SC, DNR); the completion entry adds phase, CRD and More.
//!
//! The constants set DNR when retrying the same command on the same
//! controller cannot succeed (a malformed command, an address outside the
//! namespace); they leave it clear where a retry, possibly on another path,
//! may succeed (namespace not ready, ANA states, transport errors), because
//! the Linux host only fails over or retries when DNR is clear.

use std::fmt;

code_enum! {
    /// Status Code Type (SCT), NVMe Base 2.0 "Status Code – Status Code Type Values".
    pub enum StatusCodeType {
        /// Generic command status (0h).
        Generic = 0x0,
        /// Command specific status (1h); meaning depends on the opcode.
        CommandSpecific = 0x1,
        /// Media and data integrity errors (2h).
        MediaError = 0x2,
        /// Path related status (3h): ANA and transport path errors.
        PathRelated = 0x3,
        /// Vendor specific (7h).
        VendorSpecific = 0x7,
    }
}

/// What a command handler reports: SCT, SC and DNR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status Code Type (3 bits on the wire).
    pub sct: StatusCodeType,
    /// Status Code, interpreted within `sct`.
    pub sc: u8,
    /// Do Not Retry: the host must not resubmit the command.
    pub dnr: bool,
}

const fn generic(sc: u8, dnr: bool) -> Status {
    Status::new(StatusCodeType::Generic, sc, dnr)
}

const fn command_specific(sc: u8, dnr: bool) -> Status {
    Status::new(StatusCodeType::CommandSpecific, sc, dnr)
}

const fn media(sc: u8, dnr: bool) -> Status {
    Status::new(StatusCodeType::MediaError, sc, dnr)
}

const fn path(sc: u8) -> Status {
    Status::new(StatusCodeType::PathRelated, sc, false)
}

impl Status {
    /// Builds a status from its parts.
    pub const fn new(sct: StatusCodeType, sc: u8, dnr: bool) -> Self {
        Self { sct, sc, dnr }
    }

    // --- Generic command status (SCT 0h), NVMe Base 2.0 §4.2.3.1 ---

    /// Successful completion (00h).
    pub const SUCCESS: Self = generic(0x00, false);
    /// Invalid Command Opcode (01h).
    pub const INVALID_OPCODE: Self = generic(0x01, true);
    /// Invalid Field in Command (02h).
    pub const INVALID_FIELD: Self = generic(0x02, true);
    /// Command ID Conflict (03h): the CID is already outstanding on this queue.
    pub const COMMAND_ID_CONFLICT: Self = generic(0x03, true);
    /// Data Transfer Error (04h).
    pub const DATA_TRANSFER_ERROR: Self = generic(0x04, false);
    /// Commands Aborted due to Power Loss Notification (05h).
    pub const ABORTED_POWER_LOSS: Self = generic(0x05, false);
    /// Internal Error (06h).
    pub const INTERNAL_ERROR: Self = generic(0x06, false);
    /// Command Abort Requested (07h).
    pub const ABORT_REQUESTED: Self = generic(0x07, false);
    /// Command Aborted due to SQ Deletion (08h).
    pub const ABORTED_SQ_DELETION: Self = generic(0x08, false);
    /// Invalid Namespace or Format (0Bh).
    pub const INVALID_NAMESPACE: Self = generic(0x0B, true);
    /// Command Sequence Error (0Ch).
    pub const COMMAND_SEQUENCE_ERROR: Self = generic(0x0C, true);
    /// Invalid SGL Segment Descriptor (0Dh).
    pub const INVALID_SGL_SEGMENT_DESCRIPTOR: Self = generic(0x0D, true);
    /// Invalid Number of SGL Descriptors (0Eh).
    pub const INVALID_SGL_DESCRIPTOR_COUNT: Self = generic(0x0E, true);
    /// Data SGL Length Invalid (0Fh).
    pub const DATA_SGL_LENGTH_INVALID: Self = generic(0x0F, true);
    /// Metadata SGL Length Invalid (10h).
    pub const METADATA_SGL_LENGTH_INVALID: Self = generic(0x10, true);
    /// SGL Descriptor Type Invalid (11h).
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Self = generic(0x11, true);
    /// SGL Offset Invalid (16h).
    pub const SGL_OFFSET_INVALID: Self = generic(0x16, true);
    /// Host Identifier Inconsistent Format (18h).
    pub const HOST_ID_INCONSISTENT_FORMAT: Self = generic(0x18, true);
    /// Keep Alive Timer Expired (19h).
    pub const KEEP_ALIVE_TIMER_EXPIRED: Self = generic(0x19, false);
    /// Keep Alive Timeout Invalid (1Ah).
    pub const KEEP_ALIVE_TIMEOUT_INVALID: Self = generic(0x1A, true);
    /// Namespace is Write Protected (20h).
    pub const NAMESPACE_WRITE_PROTECTED: Self = generic(0x20, true);
    /// Command Interrupted (21h): retry later.
    pub const COMMAND_INTERRUPTED: Self = generic(0x21, false);
    /// Transient Transport Error (22h), e.g. a data digest mismatch.
    pub const TRANSIENT_TRANSPORT_ERROR: Self = generic(0x22, false);

    // --- Generic status, NVM command set specific values (80h-BFh) ---

    /// LBA Out of Range (80h).
    pub const LBA_OUT_OF_RANGE: Self = generic(0x80, true);
    /// Capacity Exceeded (81h).
    pub const CAPACITY_EXCEEDED: Self = generic(0x81, true);
    /// Namespace Not Ready (82h): retryable, e.g. a replica not yet promoted.
    pub const NAMESPACE_NOT_READY: Self = generic(0x82, false);
    /// Reservation Conflict (83h).
    pub const RESERVATION_CONFLICT: Self = generic(0x83, true);
    /// Format In Progress (84h).
    pub const FORMAT_IN_PROGRESS: Self = generic(0x84, false);

    // --- Command specific status (SCT 1h), admin commands ---

    /// Invalid Queue Identifier (01h).
    pub const INVALID_QUEUE_IDENTIFIER: Self = command_specific(0x01, true);
    /// Invalid Queue Size (02h).
    pub const INVALID_QUEUE_SIZE: Self = command_specific(0x02, true);
    /// Asynchronous Event Request Limit Exceeded (05h).
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Self = command_specific(0x05, true);
    /// Invalid Log Page (09h).
    pub const INVALID_LOG_PAGE: Self = command_specific(0x09, true);
    /// Feature Identifier Not Saveable (0Dh).
    pub const FEATURE_NOT_SAVEABLE: Self = command_specific(0x0D, true);
    /// Feature Not Changeable (0Eh).
    pub const FEATURE_NOT_CHANGEABLE: Self = command_specific(0x0E, true);
    /// Feature Not Namespace Specific (0Fh).
    pub const FEATURE_NOT_NAMESPACE_SPECIFIC: Self = command_specific(0x0F, true);

    // --- Command specific status, Fabrics commands (NVMe Base 2.0 §6, Connect) ---

    /// Connect: Incompatible Format (80h), unsupported RECFMT.
    pub const CONNECT_INCOMPATIBLE_FORMAT: Self = command_specific(0x80, true);
    /// Connect: Controller Busy (81h), e.g. the queue already exists; retryable.
    pub const CONNECT_CONTROLLER_BUSY: Self = command_specific(0x81, false);
    /// Connect: Invalid Parameters (82h); DW0 names the parameter
    /// (see [`crate::nvme::fabrics::ConnectInvalidParameter`]).
    pub const CONNECT_INVALID_PARAMETERS: Self = command_specific(0x82, true);
    /// Connect: Restart Discovery (83h).
    pub const CONNECT_RESTART_DISCOVERY: Self = command_specific(0x83, true);
    /// Connect: Invalid Host (84h), the host NQN is not allowed.
    pub const CONNECT_INVALID_HOST: Self = command_specific(0x84, true);
    /// Connect: Invalid Queue Type (85h).
    pub const CONNECT_INVALID_QUEUE_TYPE: Self = command_specific(0x85, true);
    /// Discover Restart (90h).
    pub const DISCOVER_RESTART: Self = command_specific(0x90, false);
    /// Authentication Required (91h).
    pub const AUTHENTICATION_REQUIRED: Self = command_specific(0x91, true);

    // --- Command specific status, NVM I/O commands ---

    /// Conflicting Attributes (80h), e.g. Dataset Management attributes.
    pub const CONFLICTING_ATTRIBUTES: Self = command_specific(0x80, true);
    /// Invalid Protection Information (81h).
    pub const INVALID_PROTECTION_INFO: Self = command_specific(0x81, true);
    /// Attempted Write to Read Only Range (82h).
    pub const WRITE_TO_READ_ONLY_RANGE: Self = command_specific(0x82, true);

    // --- Media and data integrity errors (SCT 2h) ---

    /// Write Fault (80h).
    pub const WRITE_FAULT: Self = media(0x80, false);
    /// Unrecovered Read Error (81h).
    pub const UNRECOVERED_READ_ERROR: Self = media(0x81, false);
    /// Compare Failure (85h): the Compare command found different data.
    pub const COMPARE_FAILURE: Self = media(0x85, true);
    /// Access Denied (86h).
    pub const ACCESS_DENIED: Self = media(0x86, true);
    /// Deallocated or Unwritten Logical Block (87h).
    pub const DEALLOCATED_OR_UNWRITTEN: Self = media(0x87, true);

    // --- Path related status (SCT 3h): never DNR, so multipath fails over ---

    /// Internal Path Error (00h).
    pub const INTERNAL_PATH_ERROR: Self = path(0x00);
    /// Asymmetric Access Persistent Loss (01h).
    pub const ANA_PERSISTENT_LOSS: Self = path(0x01);
    /// Asymmetric Access Inaccessible (02h): this path may not serve I/O now.
    pub const ANA_INACCESSIBLE: Self = path(0x02);
    /// Asymmetric Access Transition (03h).
    pub const ANA_TRANSITION: Self = path(0x03);
    /// Controller Pathing Error (60h).
    pub const CONTROLLER_PATH_ERROR: Self = path(0x60);
    /// Host Pathing Error (70h).
    pub const HOST_PATH_ERROR: Self = path(0x70);
    /// Command Aborted By Host (71h).
    pub const ABORTED_BY_HOST: Self = path(0x71);

    /// Whether this is successful completion.
    pub const fn is_success(self) -> bool {
        matches!(self.sct, StatusCodeType::Generic) && self.sc == 0
    }

    /// The same status with DNR set or cleared.
    #[must_use]
    pub const fn with_dnr(self, dnr: bool) -> Self {
        Self { dnr, ..self }
    }

    /// Whether SCT and SC match `other`, ignoring DNR.
    pub fn same_code(self, other: Status) -> bool {
        self.sct == other.sct && self.sc == other.sc
    }

    /// Bits 15:1 of the CQE status field (SC, SCT, DNR), with phase, CRD and
    /// More cleared.
    pub const fn to_field_bits(self) -> u16 {
        ((self.sc as u16) << 1)
            | (((self.sct.as_u8() & 0x7) as u16) << 9)
            | ((self.dnr as u16) << 15)
    }

    /// Extracts SC, SCT and DNR from a CQE status field (phase, CRD and More
    /// are ignored).
    pub const fn from_field_bits(field: u16) -> Self {
        Self {
            sc: (field >> 1) as u8,
            sct: StatusCodeType::from_u8(((field >> 9) & 0x7) as u8),
            dnr: field & (1 << 15) != 0,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sct {:#x} sc {:#04x}{}",
            self.sct.as_u8(),
            self.sc,
            if self.dnr { " dnr" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_bits_place_sc_sct_dnr() {
        // SCT 3h (path), SC 02h, no DNR: 0b0000_0110_0000_0100
        assert_eq!(
            Status::ANA_INACCESSIBLE.to_field_bits(),
            (0x3 << 9) | (0x02 << 1)
        );
        // Invalid field with DNR: SC 02h, DNR bit 15.
        assert_eq!(Status::INVALID_FIELD.to_field_bits(), 0x8004);
        // Connect invalid host: SCT 1h, SC 84h, DNR.
        assert_eq!(
            Status::CONNECT_INVALID_HOST.to_field_bits(),
            0x8000 | (1 << 9) | (0x84 << 1)
        );
        // The AER completion nvmet sends on teardown: sct 0 / sc 06h.
        assert_eq!(Status::INTERNAL_ERROR.to_field_bits(), 0x000c);
    }

    #[test]
    fn field_bits_round_trip_for_every_value() {
        for field in 0..=u16::MAX {
            let status = Status::from_field_bits(field);
            // Phase (bit 0), CRD (13:12) and More (14) are not part of Status.
            assert_eq!(status.to_field_bits(), field & !0x7001);
        }
    }

    #[test]
    fn success_is_success() {
        assert!(Status::SUCCESS.is_success());
        assert!(!Status::INVALID_OPCODE.is_success());
        assert!(!Status::INTERNAL_PATH_ERROR.is_success());
        const { assert!(Status::LBA_OUT_OF_RANGE.dnr) };
        const { assert!(!Status::NAMESPACE_NOT_READY.dnr) };
        const { assert!(!Status::ANA_INACCESSIBLE.dnr) };
        assert!(Status::INVALID_FIELD
            .with_dnr(false)
            .same_code(Status::INVALID_FIELD));
    }
}
