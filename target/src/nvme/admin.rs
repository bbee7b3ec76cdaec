//! Code points carried inside admin commands: Identify CNS values, log page
//! identifiers and feature identifiers.

code_enum! {
    /// Identify Controller or Namespace Structure (CNS, CDW10 bits 7:0).
    pub enum IdentifyCns {
        /// Identify Namespace data structure for the NSID (NVM command set).
        Namespace = 0x00,
        /// Identify Controller data structure.
        Controller = 0x01,
        /// Active Namespace ID list: NSIDs greater than CDW1.NSID.
        ActiveNamespaceList = 0x02,
        /// Namespace Identification Descriptor list for the NSID.
        NamespaceIdDescriptors = 0x03,
        /// NVM Set list.
        NvmSetList = 0x04,
        /// I/O command set specific Identify Namespace (CSI in CDW11).
        IoCommandSetNamespace = 0x05,
        /// I/O command set specific Identify Controller (CSI in CDW11).
        IoCommandSetController = 0x06,
        /// I/O command set specific Active Namespace ID list.
        IoCommandSetActiveNamespaceList = 0x07,
        /// I/O command set independent Identify Namespace.
        IndependentNamespace = 0x08,
        /// Identify I/O Command Set data structure.
        IoCommandSets = 0x1C,
    }
}

code_enum! {
    /// Log Page Identifier (Get Log Page CDW10 bits 7:0).
    pub enum LogPageId {
        /// Error Information.
        ErrorInformation = 0x01,
        /// SMART / Health Information.
        SmartHealth = 0x02,
        /// Firmware Slot Information.
        FirmwareSlot = 0x03,
        /// Changed Namespace List.
        ChangedNamespaceList = 0x04,
        /// Commands Supported and Effects.
        CommandsSupportedAndEffects = 0x05,
        /// Device Self-test.
        DeviceSelfTest = 0x06,
        /// Asymmetric Namespace Access.
        AsymmetricNamespaceAccess = 0x0C,
        /// Discovery log page (discovery controllers only).
        Discovery = 0x70,
    }
}

code_enum! {
    /// Feature Identifier (Set/Get Features CDW10 bits 7:0).
    pub enum FeatureId {
        /// Arbitration.
        Arbitration = 0x01,
        /// Power Management.
        PowerManagement = 0x02,
        /// Temperature Threshold.
        TemperatureThreshold = 0x04,
        /// Error Recovery.
        ErrorRecovery = 0x05,
        /// Volatile Write Cache.
        VolatileWriteCache = 0x06,
        /// Number of Queues (NSQR/NCQR, both 0's based).
        NumberOfQueues = 0x07,
        /// Interrupt Coalescing.
        InterruptCoalescing = 0x08,
        /// Interrupt Vector Configuration.
        InterruptVectorConfiguration = 0x09,
        /// Write Atomicity Normal.
        WriteAtomicityNormal = 0x0A,
        /// Asynchronous Event Configuration.
        AsyncEventConfiguration = 0x0B,
        /// Autonomous Power State Transition.
        AutonomousPowerStateTransition = 0x0C,
        /// Timestamp.
        Timestamp = 0x0E,
        /// Keep Alive Timer.
        KeepAliveTimer = 0x0F,
        /// Host Identifier.
        HostIdentifier = 0x81,
        /// Reservation Notification Mask.
        ReservationNotificationMask = 0x82,
        /// Reservation Persistence.
        ReservationPersistence = 0x83,
    }
}

/// Command Set Identifier (CSI): the NVM command set.
pub const CSI_NVM: u8 = 0x00;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        for byte in 0..=u8::MAX {
            assert_eq!(IdentifyCns::from_u8(byte).as_u8(), byte);
            assert_eq!(LogPageId::from_u8(byte).as_u8(), byte);
            assert_eq!(FeatureId::from_u8(byte).as_u8(), byte);
        }
        assert_eq!(LogPageId::from_u8(0x70), LogPageId::Discovery);
        assert_eq!(FeatureId::from_u8(0x07), FeatureId::NumberOfQueues);
        assert_eq!(
            IdentifyCns::from_u8(0x03),
            IdentifyCns::NamespaceIdDescriptors
        );
    }
}
