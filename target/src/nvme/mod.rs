//! NVMe wire structures shared by the target and Keel's initiator.
//!
//! Pure data: every type decodes from and encodes to the little-endian
//! layouts of NVMe Base 2.0, the NVM Command Set Specification 1.0 and
//! NVMe over Fabrics 1.1. Decoders of network input are total (every byte
//! pattern maps to a value or a typed error); builders write into
//! caller-provided buffers.

pub mod admin;
pub mod command;
pub mod cqe;
pub mod discovery;
pub mod fabrics;
pub mod identify;
pub mod nqn;
pub mod opcode;
pub mod sgl;
pub mod sqe;
pub mod status;
pub mod text;

#[cfg(test)]
mod proptests;

pub use cqe::{CompletionQueueEntry, CQE_LEN};
pub use opcode::{AdminOpcode, FabricsCommandType, IoOpcode};
pub use sgl::SglDescriptor;
pub use sqe::{SubmissionQueueEntry, SQE_LEN};
pub use status::{Status, StatusCodeType};
