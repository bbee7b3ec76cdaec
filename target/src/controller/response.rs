//! What command processing hands back to the socket layer.

use crate::controller::io::IoCommand;
use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::status::Status;

/// A finished command: the CQE to send in a CapsuleResp, preceded by
/// `data_len` bytes of the caller's output buffer sent as C2HData (none
/// when `data_len` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The completion queue entry (CID, SQID and SQHD filled in).
    pub cqe: CompletionQueueEntry,
    /// Bytes at the start of the output buffer to send before the CQE.
    pub data_len: usize,
}

/// The outcome of one submitted command capsule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Done: send the data, if any, then the CQE.
    Complete(Response),
    /// A validated I/O command for the data path. When it finishes, the
    /// socket layer calls [`crate::controller::Target::complete_io`] for
    /// the CQE.
    Io(IoCommand),
    /// Held by the controller (an Asynchronous Event Request): its CQE
    /// arrives later as an [`AsyncCompletion`].
    Deferred,
}

impl Reply {
    /// The CQE of a completed command, if this is one.
    pub fn completion(&self) -> Option<&CompletionQueueEntry> {
        match self {
            Self::Complete(response) => Some(&response.cqe),
            Self::Io(_) | Self::Deferred => None,
        }
    }
}

/// A completion raised outside of command submission (an AER completing
/// because an event happened, or aborted at teardown). The socket layer
/// sends it on the admin queue of controller `cntlid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncCompletion {
    /// The controller whose admin queue carries it.
    pub cntlid: u16,
    /// The completion, SQID 0.
    pub cqe: CompletionQueueEntry,
}

/// The command-specific part of a completion: what a handler produces
/// before the queue adds CID, SQID and SQHD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub status: Status,
    pub dw0: u32,
    pub dw1: u32,
    pub data_len: usize,
}

impl Completion {
    pub(crate) const fn success() -> Self {
        Self::with_dw0(0)
    }

    pub(crate) const fn with_dw0(dw0: u32) -> Self {
        Self {
            status: Status::SUCCESS,
            dw0,
            dw1: 0,
            data_len: 0,
        }
    }

    pub(crate) const fn with_data(data_len: usize) -> Self {
        Self {
            status: Status::SUCCESS,
            dw0: 0,
            dw1: 0,
            data_len,
        }
    }

    pub(crate) const fn with_status(status: Status) -> Self {
        Self {
            status,
            dw0: 0,
            dw1: 0,
            data_len: 0,
        }
    }

    pub(crate) fn from_result(result: Result<Completion, Status>) -> Self {
        result.unwrap_or_else(Self::with_status)
    }
}
