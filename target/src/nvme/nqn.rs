//! NVMe Qualified Names (NVMe Base 2.0, "NVMe Qualified Names").
//!
//! An NQN is a UTF-8 string of at most 223 bytes in one of two forms:
//!
//! - `nqn.yyyy-mm.<reverse domain of the naming authority>[:<anything>]`,
//!   for example `nqn.2014-08.org.nvmexpress.discovery`;
//! - `nqn.2014-08.org.nvmexpress:uuid:<8-4-4-4-12 hex UUID>`, the form the
//!   Linux host generates for its host NQN.
//!
//! On the wire (Connect data, Identify SUBNQN, Discovery Log entries) it sits
//! in a 256-byte field, NUL-terminated and NUL-padded. Subsystem and host
//! NQNs decide who may connect to what, so they are validated strictly.

use thiserror::Error;

/// Maximum NQN length in bytes, not counting the terminating NUL.
pub const NQN_MAX_LEN: usize = 223;
/// Size of the on-wire NQN field.
pub const NQN_FIELD_LEN: usize = 256;
/// The well-known NQN of a discovery subsystem.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";
/// Prefix of the UUID form of an NQN.
pub const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Why a string or field is not a valid NQN.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum NqnError {
    /// No NUL byte within the 256-byte field.
    #[error("NQN is not NUL-terminated within its 256-byte field")]
    NotTerminated,
    /// Zero-length NQN.
    #[error("NQN is empty")]
    Empty,
    /// Longer than [`NQN_MAX_LEN`].
    #[error("NQN is {len} bytes long; the limit is 223")]
    TooLong {
        /// Length found, in bytes.
        len: usize,
    },
    /// Not valid UTF-8.
    #[error("NQN is not valid UTF-8")]
    NotUtf8,
    /// Contains a control character (NUL included).
    #[error("NQN contains a control character")]
    ControlCharacter,
    /// Does not start with `nqn.`.
    #[error("NQN does not start with \"nqn.\"")]
    MissingPrefix,
    /// The `yyyy-mm.` date after the prefix is malformed.
    #[error("NQN date is not of the form yyyy-mm.")]
    BadDate,
    /// Nothing follows the date.
    #[error("NQN has no naming authority after its date")]
    MissingAuthority,
    /// The UUID form carries a malformed UUID.
    #[error("UUID-form NQN does not end in an 8-4-4-4-12 hex UUID")]
    BadUuid,
}

/// Checks that `nqn` is a valid NQN.
pub fn validate_nqn(nqn: &str) -> Result<(), NqnError> {
    if nqn.is_empty() {
        return Err(NqnError::Empty);
    }
    if nqn.len() > NQN_MAX_LEN {
        return Err(NqnError::TooLong { len: nqn.len() });
    }
    if nqn.chars().any(char::is_control) {
        return Err(NqnError::ControlCharacter);
    }
    let Some(rest) = nqn.strip_prefix("nqn.") else {
        return Err(NqnError::MissingPrefix);
    };
    if let Some(uuid) = nqn.strip_prefix(UUID_NQN_PREFIX) {
        return if is_uuid(uuid) {
            Ok(())
        } else {
            Err(NqnError::BadUuid)
        };
    }
    let authority = strip_date(rest).ok_or(NqnError::BadDate)?;
    if authority.is_empty() {
        return Err(NqnError::MissingAuthority);
    }
    Ok(())
}

/// Reads the NQN in a 256-byte field: the bytes before the first NUL, which
/// must exist. Bytes after the NUL are ignored (senders pad with NULs but
/// the spec gives them no meaning).
pub fn parse_nqn_field(field: &[u8; NQN_FIELD_LEN]) -> Result<&str, NqnError> {
    let len = field
        .iter()
        .position(|&byte| byte == 0)
        .ok_or(NqnError::NotTerminated)?;
    let nqn = std::str::from_utf8(&field[..len]).map_err(|_| NqnError::NotUtf8)?;
    validate_nqn(nqn)?;
    Ok(nqn)
}

/// Writes `nqn` NUL-terminated and NUL-padded into a 256-byte field.
pub fn write_nqn_field(nqn: &str, out: &mut [u8; NQN_FIELD_LEN]) -> Result<(), NqnError> {
    validate_nqn(nqn)?;
    out.fill(0);
    out[..nqn.len()].copy_from_slice(nqn.as_bytes());
    Ok(())
}

/// Strips `yyyy-mm.` (month 01..=12) and returns the rest.
fn strip_date(rest: &str) -> Option<&str> {
    let date = rest.as_bytes().get(..8)?;
    let digits = |range: std::ops::Range<usize>| date[range].iter().all(u8::is_ascii_digit);
    if !(digits(0..4) && date[4] == b'-' && digits(5..7) && date[7] == b'.') {
        return None;
    }
    let month = (date[5] - b'0') * 10 + (date[6] - b'0');
    if !(1..=12).contains(&month) {
        return None;
    }
    rest.get(8..)
}

/// Whether `text` is a UUID in 8-4-4-4-12 hex form.
fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_forms_hosts_use() {
        for nqn in [
            DISCOVERY_NQN,
            "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "nqn.2016-06.io.spdk:cnode1",
            "nqn.2024-01.dev.keel:vol0",
        ] {
            assert_eq!(validate_nqn(nqn), Ok(()), "{nqn}");
        }
    }

    #[test]
    fn rejects_malformed_names() {
        let too_long = format!("nqn.2024-01.dev.keel:{}", "x".repeat(NQN_MAX_LEN));
        let cases: [(&str, NqnError); 9] = [
            ("", NqnError::Empty),
            (
                &too_long,
                NqnError::TooLong {
                    len: too_long.len(),
                },
            ),
            ("iqn.2024-01.dev.keel", NqnError::MissingPrefix),
            ("nqn.24-01.dev.keel", NqnError::BadDate),
            ("nqn.2024-13.dev.keel", NqnError::BadDate),
            ("nqn.2024-00.dev.keel", NqnError::BadDate),
            ("nqn.2024-01.", NqnError::MissingAuthority),
            (
                "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
                NqnError::BadUuid,
            ),
            ("nqn.2024-01.dev\tkeel", NqnError::ControlCharacter),
        ];
        for (nqn, error) in cases {
            assert_eq!(validate_nqn(nqn), Err(error), "{nqn:?}");
        }
    }

    #[test]
    fn length_limit_is_223_bytes() {
        let base = "nqn.2024-01.dev.keel:";
        let exact = format!("{base}{}", "a".repeat(NQN_MAX_LEN - base.len()));
        assert_eq!(validate_nqn(&exact), Ok(()));
        let over = format!("{exact}a");
        assert_eq!(validate_nqn(&over), Err(NqnError::TooLong { len: 224 }));
    }

    #[test]
    fn field_round_trip_and_termination() {
        let mut field = [0xFFu8; NQN_FIELD_LEN];
        write_nqn_field(DISCOVERY_NQN, &mut field).unwrap();
        assert_eq!(field[DISCOVERY_NQN.len()], 0);
        assert!(field[DISCOVERY_NQN.len()..].iter().all(|&b| b == 0));
        assert_eq!(parse_nqn_field(&field), Ok(DISCOVERY_NQN));

        let unterminated = [b'a'; NQN_FIELD_LEN];
        assert_eq!(parse_nqn_field(&unterminated), Err(NqnError::NotTerminated));

        let mut bad_utf8 = [0u8; NQN_FIELD_LEN];
        bad_utf8[..6].copy_from_slice(b"nqn.\xC3\x28");
        assert_eq!(parse_nqn_field(&bad_utf8), Err(NqnError::NotUtf8));

        assert_eq!(parse_nqn_field(&[0u8; NQN_FIELD_LEN]), Err(NqnError::Empty));
    }
}
