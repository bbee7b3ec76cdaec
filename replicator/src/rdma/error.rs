//! What can go wrong on an RDMA link.

use std::io;

/// An RDMA link error. [`RdmaError::closes_link`] says whether the link is
/// gone: every error about the connection, the peer or a work completion
/// ends it (the replicator treats that as a link down: the copy falls out of
/// the quorum and is resynced from the write-intent bitmap when it returns,
/// so nothing acknowledged is lost).
#[derive(Debug, thiserror::Error)]
pub enum RdmaError {
    /// A verbs or rdma_cm call failed (setup or teardown).
    #[error("{call} failed: {source}")]
    Verbs {
        /// The library call, e.g. `rdma_connect`.
        call: &'static str,
        /// errno at the time.
        source: io::Error,
    },
    /// `host:port` could not be resolved, or has no port.
    #[error("bad address {address:?}: {reason}")]
    Address {
        /// What was given.
        address: String,
        /// Why it is unusable.
        reason: &'static str,
    },
    /// The configuration is unusable (a local bug or a bad flag).
    #[error("bad RDMA link configuration: {0}")]
    Config(&'static str),
    /// Connection setup got another event from the connection manager than
    /// the one it waited for (refused, unreachable, address or route
    /// error).
    #[error("{step}: {event} (status {status})")]
    SetupFailed {
        /// What was being set up.
        step: &'static str,
        /// The event that came instead (`rdma_event_str`).
        event: String,
        /// Its status (for a rejection, the reason).
        status: i32,
    },
    /// Connection setup did not finish within the setup timeout.
    #[error("{0} timed out")]
    SetupTimeout(&'static str),
    /// The peer's connection parameters (rdma_cm private data) are missing
    /// or not Keel's.
    #[error("peer's connection parameters are unusable: {0}")]
    Handshake(&'static str),
    /// A work request completed with an error status: the queue pair is in
    /// the error state and the link is down.
    #[error(
        "{kind} work completion failed: {status} (status {code}, vendor error {vendor_err:#x})"
    )]
    WorkCompletion {
        /// `send` or `receive`.
        kind: &'static str,
        /// `ibv_wc_status_str` of the status.
        status: String,
        /// The raw `ibv_wc_status`.
        code: u32,
        /// The provider's vendor error.
        vendor_err: u32,
    },
    /// The connection manager reported the connection gone (the peer
    /// disconnected, its process died, the device went away).
    #[error("connection lost: {0}")]
    Disconnected(&'static str),
    /// The peer broke the link protocol (bad message header, more credits
    /// than it can have, a message longer than agreed).
    #[error("peer broke the RDMA link protocol: {0}")]
    Protocol(&'static str),
    /// The link was already closed by an earlier error or by `close`.
    #[error("link is closed")]
    Closed,
}

impl RdmaError {
    /// Whether the link must be treated as down. Only configuration and
    /// address errors, which happen before there is a link, are not.
    pub fn closes_link(&self) -> bool {
        !matches!(self, RdmaError::Config(_) | RdmaError::Address { .. })
    }

    /// The last OS error, for the verbs call `call`.
    pub(super) fn last_os(call: &'static str) -> Self {
        RdmaError::Verbs {
            call,
            source: io::Error::last_os_error(),
        }
    }

    /// A verbs call that returned an errno value itself (positive or
    /// negative, as the providers differ).
    pub(super) fn errno(call: &'static str, code: i32) -> Self {
        RdmaError::Verbs {
            call,
            source: io::Error::from_raw_os_error(code.saturating_abs()),
        }
    }
}
