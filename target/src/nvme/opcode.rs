//! Command opcodes: admin, NVM I/O and Fabrics command types.
//!
//! Which table an opcode belongs to depends on the queue it arrived on
//! (queue 0 is the admin queue), so [`crate::nvme::SubmissionQueueEntry`]
//! keeps the raw byte and the caller picks the interpretation.

code_enum! {
    /// Admin command opcodes (NVMe Base 2.0, "Opcodes for Admin Commands").
    pub enum AdminOpcode {
        /// Delete I/O Submission Queue (PCIe only).
        DeleteIoSq = 0x00,
        /// Create I/O Submission Queue (PCIe only).
        CreateIoSq = 0x01,
        /// Get Log Page.
        GetLogPage = 0x02,
        /// Delete I/O Completion Queue (PCIe only).
        DeleteIoCq = 0x04,
        /// Create I/O Completion Queue (PCIe only).
        CreateIoCq = 0x05,
        /// Identify.
        Identify = 0x06,
        /// Abort.
        Abort = 0x08,
        /// Set Features.
        SetFeatures = 0x09,
        /// Get Features.
        GetFeatures = 0x0A,
        /// Asynchronous Event Request.
        AsyncEventRequest = 0x0C,
        /// Namespace Management.
        NamespaceManagement = 0x0D,
        /// Firmware Commit.
        FirmwareCommit = 0x10,
        /// Firmware Image Download.
        FirmwareImageDownload = 0x11,
        /// Device Self-test.
        DeviceSelfTest = 0x14,
        /// Namespace Attachment.
        NamespaceAttachment = 0x15,
        /// Keep Alive.
        KeepAlive = 0x18,
        /// Directive Send.
        DirectiveSend = 0x19,
        /// Directive Receive.
        DirectiveReceive = 0x1A,
        /// Virtualization Management.
        VirtualizationManagement = 0x1C,
        /// NVMe-MI Send.
        NvmeMiSend = 0x1D,
        /// NVMe-MI Receive.
        NvmeMiReceive = 0x1E,
        /// Doorbell Buffer Config (PCIe only).
        DoorbellBufferConfig = 0x7C,
        /// Fabrics command; the command type is in byte 4 (FCTYPE).
        Fabrics = 0x7F,
        /// Format NVM.
        FormatNvm = 0x80,
        /// Security Send.
        SecuritySend = 0x81,
        /// Security Receive.
        SecurityReceive = 0x82,
        /// Sanitize.
        Sanitize = 0x84,
        /// Get LBA Status.
        GetLbaStatus = 0x86,
    }
}

code_enum! {
    /// NVM command set I/O opcodes (NVM Command Set Specification 1.0).
    pub enum IoOpcode {
        /// Flush.
        Flush = 0x00,
        /// Write.
        Write = 0x01,
        /// Read.
        Read = 0x02,
        /// Write Uncorrectable.
        WriteUncorrectable = 0x04,
        /// Compare.
        Compare = 0x05,
        /// Write Zeroes.
        WriteZeroes = 0x08,
        /// Dataset Management (deallocate / TRIM).
        DatasetManagement = 0x09,
        /// Verify.
        Verify = 0x0C,
        /// Reservation Register.
        ReservationRegister = 0x0D,
        /// Reservation Report.
        ReservationReport = 0x0E,
        /// Reservation Acquire.
        ReservationAcquire = 0x11,
        /// Reservation Release.
        ReservationRelease = 0x15,
        /// Copy.
        Copy = 0x19,
        /// Fabrics command (Connect is sent on every I/O queue too).
        Fabrics = 0x7F,
    }
}

code_enum! {
    /// Fabrics command type (FCTYPE, SQE byte 4), NVMe Base 2.0 §6.
    pub enum FabricsCommandType {
        /// Property Set (§6.6).
        PropertySet = 0x00,
        /// Connect (§6.3).
        Connect = 0x01,
        /// Property Get (§6.5).
        PropertyGet = 0x04,
        /// Authentication Send (§6.2).
        AuthenticationSend = 0x05,
        /// Authentication Receive (§6.1).
        AuthenticationReceive = 0x06,
        /// Disconnect (§6.4).
        Disconnect = 0x08,
    }
}

/// The opcode byte that marks every Fabrics command.
pub const FABRICS_OPCODE: u8 = 0x7F;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=u8::MAX {
            assert_eq!(AdminOpcode::from_u8(byte).as_u8(), byte);
            assert_eq!(IoOpcode::from_u8(byte).as_u8(), byte);
            assert_eq!(FabricsCommandType::from_u8(byte).as_u8(), byte);
        }
    }

    #[test]
    fn named_values() {
        assert_eq!(AdminOpcode::from_u8(0x06), AdminOpcode::Identify);
        assert_eq!(AdminOpcode::from_u8(0x18), AdminOpcode::KeepAlive);
        assert_eq!(AdminOpcode::from_u8(0x03), AdminOpcode::Unknown(0x03));
        assert_eq!(IoOpcode::from_u8(0x02), IoOpcode::Read);
        assert_eq!(IoOpcode::from_u8(0x08), IoOpcode::WriteZeroes);
        assert_eq!(
            FabricsCommandType::from_u8(0x04),
            FabricsCommandType::PropertyGet
        );
        assert_eq!(u8::from(IoOpcode::DatasetManagement), 0x09);
    }
}
