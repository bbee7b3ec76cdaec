//! I/O Command Set specific Identify Controller for the NVM command set
//! (CNS 06h, CSI 00h), NVM Command Set Specification 1.0. The Linux host
//! reads it for its Write Zeroes and Dataset Management limits.

use crate::nvme::identify::IDENTIFY_DATA_LEN;
use crate::wire::{put_u32, put_u64, u32_at, u64_at};

/// NVM command set controller limits. Zero means "no limit reported".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdentifyControllerNvm {
    /// Verify Size Limit (power of two of the minimum page size).
    pub vsl: u8,
    /// Write Zeroes Size Limit (power of two of the minimum page size).
    pub wzsl: u8,
    /// Write Uncorrectable Size Limit.
    pub wusl: u8,
    /// Dataset Management Ranges Limit.
    pub dmrl: u8,
    /// Dataset Management Range Size Limit, in logical blocks.
    pub dmrsl: u32,
    /// Dataset Management Size Limit, in logical blocks.
    pub dmsl: u64,
}

impl IdentifyControllerNvm {
    /// Writes the 4096-byte structure.
    pub fn write_into(&self, out: &mut [u8; IDENTIFY_DATA_LEN]) {
        out.fill(0);
        out[0] = self.vsl;
        out[1] = self.wzsl;
        out[2] = self.wusl;
        out[3] = self.dmrl;
        put_u32(out, 4, self.dmrsl);
        put_u64(out, 8, self.dmsl);
    }

    /// Reads the structure.
    pub fn parse(bytes: &[u8; IDENTIFY_DATA_LEN]) -> Self {
        Self {
            vsl: bytes[0],
            wzsl: bytes[1],
            wusl: bytes[2],
            dmrl: bytes[3],
            dmrsl: u32_at(bytes, 4),
            dmsl: u64_at(bytes, 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let nvm = IdentifyControllerNvm {
            vsl: 1,
            wzsl: 2,
            wusl: 3,
            dmrl: 4,
            dmrsl: 0x0807_0605,
            dmsl: 0x100F_0E0D_0C0B_0A09,
        };
        let mut b = Box::new([0xFFu8; IDENTIFY_DATA_LEN]);
        nvm.write_into(&mut b);
        assert_eq!(
            &b[..16],
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
        );
        assert!(b[16..].iter().all(|&c| c == 0));
        assert_eq!(IdentifyControllerNvm::parse(&b), nvm);
    }
}
