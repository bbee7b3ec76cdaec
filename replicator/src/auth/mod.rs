//! Authentication of a replication link: a pre-shared-key, mutual
//! challenge-response handshake, as one sans-IO state machine per side.
//!
//! ```text
//! initiator (primary)                          acceptor (replica)
//!   Hello { versions, role, node, Ni }  ---->
//!                                       <----  Challenge { version, role, node, Na }
//!   Response { HMAC(K, "I" | transcript) } --->   verified, else Nack(AuthFailed)
//!                                       <----  Response { HMAC(K, "A" | transcript) }
//!   verified, else dropped
//! ```
//!
//! The transcript holds both nonces (and everything else the handshake
//! agreed), so a tag recorded from one handshake is worthless in any other:
//! the acceptor's nonce makes the initiator's tag fresh and vice versa. The
//! acceptor proves itself only after the initiator has, so it never hands an
//! unauthenticated peer a tag over a nonce that peer chose.
//!
//! The machines never see a socket or a clock. The caller decodes frames,
//! feeds each to `receive`, sends what the returned [`Step`] says, and stops
//! on [`Outcome::Authenticated`] or [`Outcome::Failed`] (closing the link in
//! the second case). Handshake timeouts are the caller's to enforce.
//! Nonces are passed in and must come from a cryptographically secure
//! random generator.

mod acceptor;
mod initiator;
mod key;
mod transcript;

#[cfg(test)]
mod tests;

pub use acceptor::{Acceptor, AcceptorConfig, VolumeCatalog};
pub use initiator::{ConfigError, Initiator, InitiatorConfig};
pub use key::{KeyError, PreSharedKey, MIN_KEY_LEN};

use crate::wire::{
    EncodeError, Envelope, Epoch, Message, MessageType, Nack, NackReason, NodeId, Role, Sequence,
    StreamId, Version, VersionRange, VolumeId,
};

/// A frame a state machine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Version, volume and epoch to stamp it with.
    pub envelope: Envelope,
    /// The message.
    pub message: Message<'static>,
}

impl Outgoing {
    /// Encodes the frame into `out`; see [`Message::encode`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.message.encode(&self.envelope, out)
    }

    fn link_nack(envelope: Envelope, reason: NackReason) -> Self {
        Self {
            envelope,
            message: Message::Nack(Nack {
                stream: StreamId(0),
                sequence: Sequence(0),
                reason,
            }),
        }
    }
}

/// Who is on the other end of an authenticated link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The peer's node.
    pub node: NodeId,
    /// The peer's role.
    pub role: Role,
    /// The link's volume.
    pub volume: VolumeId,
    /// The peer's epoch of the volume when the handshake ran.
    pub epoch: Epoch,
    /// The version every later frame on the link must carry.
    pub version: Version,
}

/// Where a handshake stands after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Waiting for the peer's next frame.
    Pending,
    /// Both sides proved the key; the link is open.
    Authenticated(PeerInfo),
    /// The handshake failed; close the link (after sending the step's frame,
    /// if any).
    Failed(AuthFailure),
}

/// The result of feeding one frame to a state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// A frame to send, if any.
    pub send: Option<Outgoing>,
    /// What to do next.
    pub outcome: Outcome,
}

impl Step {
    fn pending(send: Outgoing) -> Self {
        Self {
            send: Some(send),
            outcome: Outcome::Pending,
        }
    }

    fn failed(send: Option<Outgoing>, failure: AuthFailure) -> Self {
        Self {
            send,
            outcome: Outcome::Failed(failure),
        }
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The peer's tag did not verify: it does not hold the key, or it
    /// replayed a tag from another handshake.
    #[error("peer failed to prove the pre-shared key")]
    BadProof,
    /// The acceptor shares no version with the initiator's offer.
    #[error("no common protocol version with offer {offered}")]
    NoCommonVersion {
        /// What the initiator offered.
        offered: VersionRange,
    },
    /// The acceptor chose a version the initiator did not offer.
    #[error("peer chose version {chosen}, which was not offered")]
    VersionNotOffered {
        /// What the acceptor chose.
        chosen: Version,
    },
    /// The peer claims a role this side does not accept from it.
    #[error("peer has role {role:?}, which is not allowed on this side of a link")]
    WrongRole {
        /// The role claimed.
        role: Role,
    },
    /// The acceptor holds no copy of the volume.
    #[error("unknown volume {0}")]
    UnknownVolume(VolumeId),
    /// The initiator's epoch is older than the acceptor's: it was deposed.
    #[error("initiator epoch {initiator} is older than the acceptor's {acceptor}")]
    StaleEpoch {
        /// The initiator's epoch.
        initiator: Epoch,
        /// The acceptor's epoch.
        acceptor: Epoch,
    },
    /// A frame names a different volume than the handshake.
    #[error("frame for volume {got} on a link for volume {expected}")]
    VolumeMismatch {
        /// The link's volume.
        expected: VolumeId,
        /// The frame's volume.
        got: VolumeId,
    },
    /// A frame's header version disagrees with what the handshake chose.
    #[error("frame has version {got}, the handshake chose {expected}")]
    VersionMismatch {
        /// The chosen version.
        expected: Version,
        /// The frame's version.
        got: Version,
    },
    /// The peer sent back this side's own nonce.
    #[error("peer reflected our nonce")]
    NonceReflected,
    /// The peer refused the handshake.
    #[error("peer refused the handshake: {0:?}")]
    Rejected(NackReason),
    /// A frame that does not belong at this point of the handshake.
    #[error("unexpected {0:?} during the handshake")]
    UnexpectedMessage(MessageType),
    /// `receive` was called after the handshake had already ended.
    #[error("the handshake is already over")]
    Finished,
}

impl AuthFailure {
    /// The reason to report to the peer, if this side detected the failure.
    fn nack_reason(&self, supported: VersionRange, current: Epoch) -> Option<NackReason> {
        Some(match self {
            Self::BadProof => NackReason::AuthFailed,
            Self::NoCommonVersion { .. } | Self::VersionNotOffered { .. } => {
                NackReason::UnsupportedVersion { supported }
            }
            Self::WrongRole { .. } => NackReason::WrongRole,
            Self::UnknownVolume(_) => NackReason::UnknownVolume,
            Self::StaleEpoch { .. } => NackReason::StaleEpoch { current },
            Self::VolumeMismatch { .. }
            | Self::VersionMismatch { .. }
            | Self::NonceReflected
            | Self::UnexpectedMessage(_) => NackReason::ProtocolViolation,
            Self::Rejected(_) | Self::Finished => return None,
        })
    }
}

/// What a failed step sends: a link-level `Nack` if the failure is this
/// side's finding, nothing if the peer already said why.
fn fail(envelope: Envelope, supported: VersionRange, failure: AuthFailure) -> Step {
    let send = failure
        .nack_reason(supported, envelope.epoch)
        .map(|reason| Outgoing::link_nack(envelope, reason));
    Step::failed(send, failure)
}
