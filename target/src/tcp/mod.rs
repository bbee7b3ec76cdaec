//! NVMe/TCP transport codec (NVMe/TCP Transport Specification 1.0), sans IO.
//!
//! - [`pdu`]: PDU types and typed headers.
//! - [`decoder`]: incremental, validating decoder for a streaming socket.
//! - [`encoder`]: encoders into caller-provided buffers.
//! - [`digest`]: CRC32C header and data digests.
//! - [`negotiation`]: ICReq / ICResp outcome as receive and send parameters.
//! - [`error`]: decode errors and the termination status each maps to.

pub mod decoder;
pub mod digest;
pub mod encoder;
pub mod error;
pub mod negotiation;
pub mod pdu;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use decoder::{
    check_data_digest, ConnectionParams, Decoded, DecoderLimits, Pdu, PduDecoder, PduLayout,
    ReceivedHeader, Role,
};
pub use digest::{crc32c, digest_bytes, DataDigest};
pub use encoder::TxParams;
pub use error::{EncodeError, FatalError, FatalErrorStatus, PduError};
pub use negotiation::{check_icresp_digests, negotiated, Negotiated};
pub use pdu::{
    flags, CapsuleCmd, CapsuleResp, CommonHeader, DataPdu, DigestOptions, IcReq, IcResp, PduHeader,
    PduType, R2t, TermReq,
};
