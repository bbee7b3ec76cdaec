//! Replication links over RDMA verbs (cargo feature `rdma`; libibverbs and
//! librdmacm through `rdma-sys`).
//!
//! The link carries exactly what a TCP link carries: the byte stream of
//! wire frames that [`crate::link::encode`] produces and
//! [`crate::link::decode`] reads, so the replication core, its ordering,
//! quorum, resync and fencing are the same code over both transports.
//!
//! **Setup** ([`RdmaListener::accept`], [`RdmaLink::connect`]): the replica
//! listens, the primary connects, both through the RDMA connection manager
//! (rdma_cm, TCP port space: `ip:port` addresses like TCP). Each end
//! creates one RC queue pair, one completion queue for sends and receives,
//! a protection domain and its buffer ring, registered once; posts every
//! receive buffer; then connects or accepts, trading its receive depth and
//! buffer size in the rdma_cm private data (`params.rs`). Setup blocks and
//! runs on control threads, like the TCP handshake.
//!
//! **Which verb carries the payload, and why: SEND/RECV.** Every message —
//! frame headers, write data, acks — is a SEND into a receive buffer the
//! peer posted in advance (`message.rs` for the 8-byte message header,
//! `credit.rs` for the flow control that keeps a buffer posted for every
//! SEND). RDMA WRITE would save the receiver one copy for large payloads,
//! but it needs the sender to know where in the receiver's memory to put
//! them: remote keys handed out for (part of) the replica's buffer pool,
//! a protocol to allocate and recycle that space, and a notification
//! (WRITE with immediate, or a SEND after it) ordered behind the data.
//! SEND/RECV needs none of that, leaves no remote access to any memory
//! (our regions are registered for local write only), keeps the receive
//! side's order and framing identical to TCP's, and costs one memcpy per
//! side into and out of the registered ring — small next to the write to
//! disk the frame is going to. Zero-copy (registering the engine's buffer
//! pool and WRITE for payloads) can come later behind the same API.
//!
//! **Data path**: [`RdmaLink::send`] copies stream bytes into free send
//! buffers (one SEND each, as far as credits allow) and returns how much it
//! took, like a non-blocking socket write; [`RdmaLink::poll`] drains the
//! completion queue, appends received stream bytes to the caller's buffer,
//! reposts the receive buffers, frees send buffers and returns credits.
//! Neither blocks, so the owning reactor calls `poll` every loop iteration.
//!
//! **Failure**: a work completion with an error status, a DISCONNECTED or
//! DEVICE_REMOVAL event from the connection manager, or a message breaking
//! the link protocol is an [`RdmaError`] for which
//! [`RdmaError::closes_link`] is true: the caller handles it as a link
//! down, exactly like a TCP reset. Dropping an [`RdmaLink`] disconnects and
//! frees everything in order (QP, CQ, MR, PD).

mod blocking;
#[allow(unsafe_code)]
mod cm;
mod credit;
mod error;
mod link;
mod message;
mod params;
#[allow(unsafe_code)]
mod verbs;

pub use blocking::BlockingLink;
pub use credit::Credits;
pub use error::RdmaError;
pub use link::{Progress, RdmaLink, RdmaListener, RdmaStats};
pub use message::{MessageHeader, HEADER_LEN};
pub use params::{ConnParams, RdmaConfig, RDMA_LINK_VERSION};
