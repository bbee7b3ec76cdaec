//! Keel's NVMe/TCP initiator (host side): connects to any NVMe/TCP target —
//! Keel's own, the Linux kernel's nvmet, SPDK — with the same wire code the
//! target uses. Blocking sockets, one thread per queue: simple, and fast
//! enough to load a target from `keel-bench nvmf`.
//!
//! - [`connection`]: one TCP connection: ICReq/ICResp, PDU send/receive.
//! - [`controller`]: the admin queue: Connect, enable, Identify, queues.
//! - [`io_queue`]: an I/O queue with many commands in flight.

pub mod connection;
pub mod controller;
pub mod io_queue;

pub use connection::Connection;
pub use controller::{Controller, HostOptions, NamespaceInfo};
pub use io_queue::{IoDone, IoKind, IoQueue};

use crate::nvme::Status;
use crate::tcp::{EncodeError, FatalErrorStatus, PduError};

/// Why the initiator gave up.
#[derive(Debug, thiserror::Error)]
pub enum InitiatorError {
    /// The socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// The target closed the connection.
    #[error("the target closed the connection")]
    Closed,
    /// The target sent a PDU the codec refuses.
    #[error("malformed PDU from the target: {0}")]
    Pdu(#[from] PduError),
    /// A PDU could not be built (a bug or an absurd parameter).
    #[error("cannot encode PDU: {0}")]
    Encode(#[from] EncodeError),
    /// The target terminated the connection.
    #[error("the target terminated the connection: {fes:?} (FEI {fei:#x})")]
    Terminated {
        /// Fatal error status.
        fes: FatalErrorStatus,
        /// Fatal error information.
        fei: u32,
    },
    /// A command failed with an NVMe status.
    #[error("{command} failed: {status}")]
    Command {
        /// Which command.
        command: &'static str,
        /// The status the target returned.
        status: Status,
    },
    /// The target broke the protocol in a way the codec cannot see.
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// Result of initiator operations.
pub type Result<T> = std::result::Result<T, InitiatorError>;
