//! Namespace Identification Descriptor list (CNS 03h), NVMe Base 2.0 §5.17.2.
//!
//! A sequence of descriptors — NIDT (type), NIDL (length), two reserved
//! bytes, then NIDL bytes of identifier — ended by a descriptor with NIDT 0
//! or the end of the 4096-byte page. The Linux host takes the namespace's
//! multipath identity from the NGUID and UUID here, so every replica of a
//! volume must report the same values.

use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::nvme::text::FieldError;

/// Namespace Identifier Types (NIDT).
pub mod nidt {
    /// IEEE Extended Unique Identifier, 8 bytes.
    pub const EUI64: u8 = 0x1;
    /// Namespace Globally Unique Identifier, 16 bytes.
    pub const NGUID: u8 = 0x2;
    /// Namespace UUID, 16 bytes.
    pub const UUID: u8 = 0x3;
    /// Command Set Identifier, 1 byte.
    pub const CSI: u8 = 0x4;
}

const DESCRIPTOR_HEADER_LEN: usize = 4;

/// The identifiers of one namespace; absent ones are not listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NamespaceIdDescriptors {
    /// EUI-64.
    pub eui64: Option<[u8; 8]>,
    /// NGUID.
    pub nguid: Option<[u8; 16]>,
    /// UUID.
    pub uuid: Option<[u8; 16]>,
    /// Command set identifier (0 for NVM).
    pub csi: Option<u8>,
}

impl NamespaceIdDescriptors {
    /// Writes the list (at most 61 bytes) followed by zeros.
    pub fn write_into(&self, out: &mut [u8; IDENTIFY_DATA_LEN]) {
        out.fill(0);
        let mut at = 0;
        let mut push = |nidt: u8, id: &[u8]| {
            out[at] = nidt;
            // Identifiers are 1, 8 or 16 bytes.
            out[at + 1] = id.len() as u8;
            let start = at + DESCRIPTOR_HEADER_LEN;
            out[start..start + id.len()].copy_from_slice(id);
            at = start + id.len();
        };
        if let Some(eui64) = &self.eui64 {
            push(nidt::EUI64, eui64);
        }
        if let Some(nguid) = &self.nguid {
            push(nidt::NGUID, nguid);
        }
        if let Some(uuid) = &self.uuid {
            push(nidt::UUID, uuid);
        }
        if let Some(csi) = self.csi {
            push(nidt::CSI, &[csi]);
        }
    }

    /// Reads a list (for the initiator). Unknown descriptor types are
    /// skipped; a known type with the wrong length, or a descriptor running
    /// past the page, is an error.
    pub fn parse(bytes: &[u8; IDENTIFY_DATA_LEN]) -> Result<Self, FieldError> {
        let mut list = Self::default();
        let mut at = 0;
        while at + DESCRIPTOR_HEADER_LEN <= bytes.len() {
            let (nidt, nidl) = (bytes[at], usize::from(bytes[at + 1]));
            if nidt == 0 {
                break;
            }
            let start = at + DESCRIPTOR_HEADER_LEN;
            let id = bytes.get(start..start + nidl).ok_or(FieldError::Invalid {
                field: "NIDL",
                reason: "descriptor runs past the end of the list",
            })?;
            let wrong_length = FieldError::Invalid {
                field: "NIDL",
                reason: "wrong length for the identifier type",
            };
            match nidt {
                nidt::EUI64 => list.eui64 = Some(id.try_into().map_err(|_| wrong_length)?),
                nidt::NGUID => list.nguid = Some(id.try_into().map_err(|_| wrong_length)?),
                nidt::UUID => list.uuid = Some(id.try_into().map_err(|_| wrong_length)?),
                nidt::CSI => match id {
                    [csi] => list.csi = Some(*csi),
                    _ => return Err(wrong_length),
                },
                _ => {}
            }
            at = start + nidl;
        }
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_layout() {
        let list = NamespaceIdDescriptors {
            eui64: None,
            nguid: Some([0x10; 16]),
            uuid: Some([0x20; 16]),
            csi: Some(0),
        };
        let mut b = Box::new([0xFFu8; IDENTIFY_DATA_LEN]);
        list.write_into(&mut b);
        assert_eq!(&b[0..4], &[0x02, 16, 0, 0], "NGUID header");
        assert_eq!(&b[4..20], &[0x10; 16], "NGUID");
        assert_eq!(&b[20..24], &[0x03, 16, 0, 0], "UUID header");
        assert_eq!(&b[24..40], &[0x20; 16], "UUID");
        assert_eq!(&b[40..45], &[0x04, 1, 0, 0, 0], "CSI descriptor");
        assert!(b[45..].iter().all(|&c| c == 0), "terminator and padding");
        assert_eq!(NamespaceIdDescriptors::parse(&b), Ok(list));
    }

    #[test]
    fn all_descriptors_round_trip() {
        let list = NamespaceIdDescriptors {
            eui64: Some([1, 2, 3, 4, 5, 6, 7, 8]),
            nguid: Some([9; 16]),
            uuid: Some([7; 16]),
            csi: Some(0),
        };
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        list.write_into(&mut b);
        assert_eq!(&b[0..2], &[0x01, 8]);
        assert_eq!(NamespaceIdDescriptors::parse(&b), Ok(list));
    }

    #[test]
    fn parse_rejects_bad_lengths() {
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        b[0] = nidt::NGUID;
        b[1] = 8;
        assert!(NamespaceIdDescriptors::parse(&b).is_err());
        // A descriptor running off the end of the page.
        // Unknown 255-byte descriptors start every 259 bytes; the 16th, at
        // byte 3885, would end at 4144.
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        for start in (0..IDENTIFY_DATA_LEN - 4).step_by(259) {
            b[start] = 0x7;
            b[start + 1] = 255;
        }
        assert!(NamespaceIdDescriptors::parse(&b).is_err());
        // Unknown types are skipped.
        let mut b = Box::new([0u8; IDENTIFY_DATA_LEN]);
        b[0] = 0x9;
        b[1] = 2;
        b[6] = nidt::CSI;
        b[7] = 1;
        assert_eq!(
            NamespaceIdDescriptors::parse(&b).map(|list| list.csi),
            Ok(Some(0))
        );
    }
}
