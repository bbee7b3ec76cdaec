//! The pre-shared key of a replication link.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Shortest key accepted: 128 bits. A shorter secret would be the weakest
/// part of the scheme.
pub const MIN_KEY_LEN: usize = 16;

/// The secret both ends of a replication link hold. It is only ever used as
/// an HMAC-SHA256 key, so the keyed state is prepared once here and cloned
/// for each tag.
#[derive(Clone)]
pub struct PreSharedKey {
    keyed: HmacSha256,
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is shorter than [`MIN_KEY_LEN`].
    #[error("pre-shared key of {len} bytes is shorter than the minimum of {min}")]
    TooShort {
        /// Length given.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The MAC implementation refused the key.
    #[error("pre-shared key rejected by HMAC")]
    Rejected,
}

impl PreSharedKey {
    /// A key from raw secret bytes (at least [`MIN_KEY_LEN`]).
    pub fn new(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                len: secret.len(),
                min: MIN_KEY_LEN,
            });
        }
        let keyed = HmacSha256::new_from_slice(secret).map_err(|_| KeyError::Rejected)?;
        Ok(Self { keyed })
    }

    /// A fresh HMAC computation under this key.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }
}

impl fmt::Debug for PreSharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreSharedKey(<redacted>)")
    }
}
