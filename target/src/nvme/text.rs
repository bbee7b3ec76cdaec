//! Fixed-width text fields of NVMe data structures.
//!
//! NVMe has two conventions: Identify's SN, MN and FR are ASCII padded with
//! spaces (NVMe Base 2.0, "ASCII string" convention), while Fabrics strings
//! (NQNs, TRADDR, TRSVCID) are NUL-padded.

use thiserror::Error;

use crate::nvme::nqn::{validate_nqn, NqnError};

/// A value that does not fit the field it is written to.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FieldError {
    /// Longer than the field.
    #[error("{field}: {len} bytes do not fit in {max}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Length given.
        len: usize,
        /// Field capacity.
        max: usize,
    },
    /// Identify strings must be printable ASCII (20h..=7Eh).
    #[error("{field}: only printable ASCII is allowed")]
    NotPrintableAscii {
        /// Field name.
        field: &'static str,
    },
    /// Invalid NQN.
    #[error("{field}: {source}")]
    Nqn {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        source: NqnError,
    },
    /// Any other field-specific rule.
    #[error("{field}: {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
}

/// Writes printable ASCII `text` into `out`, padding with spaces.
pub(crate) fn write_ascii_space_padded(
    field: &'static str,
    text: &str,
    out: &mut [u8],
) -> Result<(), FieldError> {
    if !text.bytes().all(|byte| (0x20..=0x7E).contains(&byte)) {
        return Err(FieldError::NotPrintableAscii { field });
    }
    write_padded(field, text.as_bytes(), b' ', out)
}

/// Writes `text` into `out`, padding with NULs. When `text` fills the field
/// exactly there is no terminator, which the ASCII Fabrics fields allow.
pub(crate) fn write_nul_padded(
    field: &'static str,
    text: &str,
    out: &mut [u8],
) -> Result<(), FieldError> {
    if text.bytes().any(|byte| byte == 0) {
        return Err(FieldError::Invalid {
            field,
            reason: "contains a NUL byte",
        });
    }
    write_padded(field, text.as_bytes(), 0, out)
}

/// Writes a validated NQN, NUL-terminated, into `out` (a 256-byte field).
pub(crate) fn write_nqn(field: &'static str, nqn: &str, out: &mut [u8]) -> Result<(), FieldError> {
    validate_nqn(nqn).map_err(|source| FieldError::Nqn { field, source })?;
    // validate_nqn bounds the length to 223 < 256, so a NUL always follows.
    write_padded(field, nqn.as_bytes(), 0, out)
}

fn write_padded(
    field: &'static str,
    bytes: &[u8],
    pad: u8,
    out: &mut [u8],
) -> Result<(), FieldError> {
    if bytes.len() > out.len() {
        return Err(FieldError::TooLong {
            field,
            len: bytes.len(),
            max: out.len(),
        });
    }
    let (text, padding) = out.split_at_mut(bytes.len());
    text.copy_from_slice(bytes);
    padding.fill(pad);
    Ok(())
}

/// Reads a space-padded ASCII field, trimming trailing spaces. Returns
/// `None` when the bytes are not printable ASCII.
pub(crate) fn read_ascii_space_padded(bytes: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(bytes).ok()?;
    if !text.bytes().all(|byte| (0x20..=0x7E).contains(&byte)) {
        return None;
    }
    Some(text.trim_end_matches(' '))
}

/// Reads a NUL-padded field up to its first NUL (or its end). Returns `None`
/// when the text is not UTF-8.
pub(crate) fn read_nul_padded(bytes: &[u8]) -> Option<&str> {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    std::str::from_utf8(&bytes[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fields_are_space_padded() {
        let mut out = [0u8; 8];
        write_ascii_space_padded("FR", "1.0", &mut out).unwrap();
        assert_eq!(&out, b"1.0     ");
        assert_eq!(read_ascii_space_padded(&out), Some("1.0"));
        assert_eq!(
            write_ascii_space_padded("FR", "123456789", &mut out),
            Err(FieldError::TooLong {
                field: "FR",
                len: 9,
                max: 8
            })
        );
        assert_eq!(
            write_ascii_space_padded("FR", "é", &mut out),
            Err(FieldError::NotPrintableAscii { field: "FR" })
        );
    }

    #[test]
    fn nul_padded_fields() {
        let mut out = [0xAAu8; 32];
        write_nul_padded("TRSVCID", "4420", &mut out).unwrap();
        assert_eq!(&out[..5], b"4420\0");
        assert!(out[4..].iter().all(|&b| b == 0));
        assert_eq!(read_nul_padded(&out), Some("4420"));
        assert!(write_nul_padded("TRSVCID", "a\0b", &mut out).is_err());
    }
}
