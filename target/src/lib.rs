//! Keel NVMe/TCP target.
//!
//! This crate holds the pure, sans-IO wire layer that both the target and
//! Keel's own initiator use ("one concept lives in one place"):
//!
//! - [`nvme`]: NVMe structures — submission/completion queue entries, status
//!   codes, opcodes, SGL descriptors, Fabrics commands and Connect data, and
//!   builders for the Identify and Discovery Log data the host reads.
//! - [`tcp`]: the NVMe/TCP PDU codec — an incremental decoder for a streaming
//!   socket and encoders that write into caller-provided buffers.
//!
//! Nothing here touches a socket, a thread or the heap on the PDU path, and
//! no input can make it panic: malformed input yields typed errors that map
//! to the NVMe/TCP termination status the peer must be told.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[macro_use]
mod macros;
mod wire;

pub mod controller;
pub mod daemon;
pub mod initiator;
pub mod nvme;
pub mod rpc;
pub mod tcp;
