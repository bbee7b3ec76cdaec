//! Errors of the configuration API (subsystems, namespaces, listeners).
//!
//! Command processing never returns these: a bad command from a host is
//! answered with an NVMe status, see [`crate::nvme::Status`].

use thiserror::Error;

use crate::nvme::nqn::NqnError;

/// Why a subsystem, namespace or listener cannot be added or changed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// Not a valid NQN.
    #[error("invalid NQN {nqn:?}: {source}")]
    InvalidNqn {
        /// The name given.
        nqn: String,
        /// What is wrong with it.
        source: NqnError,
    },
    /// The discovery NQN is reserved for the discovery subsystem.
    #[error("{0} is reserved for the discovery subsystem")]
    ReservedNqn(String),
    /// A subsystem with this NQN exists already.
    #[error("subsystem {0} exists already")]
    DuplicateSubsystem(String),
    /// No subsystem with this NQN.
    #[error("no subsystem {0}")]
    UnknownSubsystem(String),
    /// Identify text fields must be printable ASCII of bounded length.
    #[error("{field} must be 1..={max} printable ASCII characters")]
    InvalidText {
        /// Which field (serial, model, firmware).
        field: &'static str,
        /// Its capacity.
        max: usize,
    },
    /// NSID 0, FFFFFFFFh or above the configured maximum.
    #[error("NSID {nsid} is not within 1..={max}")]
    InvalidNsid {
        /// NSID given.
        nsid: u32,
        /// Largest NSID allowed.
        max: u32,
    },
    /// The NSID is in use.
    #[error("namespace {0} exists already")]
    DuplicateNamespace(u32),
    /// Neither an NGUID nor a UUID was given.
    #[error("namespace {0} needs a non-zero NGUID or UUID")]
    MissingNamespaceIdentity(u32),
    /// No namespace with this NSID.
    #[error("no namespace {0}")]
    UnknownNamespace(u32),
    /// Block size is not a power of two in 512..=65536, or capacity is 0.
    #[error("invalid geometry: {0}")]
    InvalidGeometry(&'static str),
    /// A configured limit would be exceeded.
    #[error("too many {what} (limit {limit})")]
    LimitReached {
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A listener with this port ID exists already.
    #[error("listener with port ID {0} exists already")]
    DuplicateListener(u16),
    /// No listener with this port ID.
    #[error("no listener with port ID {0}")]
    UnknownListener(u16),
    /// Listener address or service does not fit its discovery log field.
    #[error("invalid listener: {0}")]
    InvalidListener(&'static str),
}
