//! How strictly a frame is checked, which depends on who wrote it.
//!
//! A frame from the same or an older minor version is held to every rule:
//! reserved bytes are zero, nothing trails the last field, no unknown flag
//! is set. A frame from a newer minor version may legitimately carry things
//! this implementation does not know about, so those are skipped instead.

use crate::wire::bytes::Reader;
use crate::wire::error::{DecodeError, FieldProblem};
use crate::wire::version::{Version, PROTOCOL_VERSION};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tolerance {
    /// Same or older minor: every rule applies.
    Strict,
    /// Newer minor: additions are skipped.
    Lenient,
}

impl Tolerance {
    pub(crate) fn for_version(version: Version) -> Self {
        if version.major == PROTOCOL_VERSION.major && version.minor > PROTOCOL_VERSION.minor {
            Self::Lenient
        } else {
            Self::Strict
        }
    }

    /// Reserved fields must be zero unless a newer minor may have given
    /// them a meaning.
    pub(crate) fn reserved_zero(
        self,
        is_zero: bool,
        field: &'static str,
    ) -> Result<(), DecodeError> {
        if is_zero || self == Self::Lenient {
            Ok(())
        } else {
            Err(DecodeError::malformed(field, FieldProblem::ReservedNotZero))
        }
    }

    /// After the last known field of a body: nothing may follow, unless a
    /// newer minor appended fields.
    pub(crate) fn end_of_body(
        self,
        r: &Reader<'_>,
        field: &'static str,
    ) -> Result<(), DecodeError> {
        if r.remaining() == 0 || self == Self::Lenient {
            Ok(())
        } else {
            Err(DecodeError::malformed(field, FieldProblem::TrailingBytes))
        }
    }
}
