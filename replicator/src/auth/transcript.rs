//! What the handshake MACs cover, and computing and checking them.
//!
//! Each side's tag is HMAC-SHA256 under the pre-shared key over a fixed
//! layout of everything the handshake established: the chosen version, the
//! versions offered (so a downgrade is detected), the volume, both nodes,
//! roles and epochs, and both nonces. The first byte after the label says
//! which side the tag proves, so one side's tag can never be reflected back
//! as the other's. Every field has a fixed size, so two different
//! transcripts can never serialize to the same bytes.

use hmac::Mac;

use crate::auth::key::PreSharedKey;
use crate::wire::{AuthTag, Epoch, NodeId, Nonce, Role, Version, VersionRange, VolumeId};

/// Domain separation: these MACs mean nothing in any other protocol.
const LABEL: &[u8] = b"keel replication link auth v1\0";

/// Which side a tag proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prover {
    Initiator,
    Acceptor,
}

impl Prover {
    fn code(self) -> u8 {
        match self {
            Self::Initiator => b'I',
            Self::Acceptor => b'A',
        }
    }
}

/// One side's contribution to the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Party {
    pub(crate) node: NodeId,
    pub(crate) role: Role,
    pub(crate) epoch: Epoch,
    pub(crate) nonce: Nonce,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transcript {
    pub(crate) version: Version,
    pub(crate) offered: VersionRange,
    pub(crate) volume: VolumeId,
    pub(crate) initiator: Party,
    pub(crate) acceptor: Party,
}

impl Transcript {
    fn keyed(&self, key: &PreSharedKey, prover: Prover) -> crate::auth::key::HmacSha256 {
        let mut mac = key.mac();
        mac.update(LABEL);
        mac.update(&[prover.code()]);
        for version in [self.version, self.offered.min(), self.offered.max()] {
            mac.update(&[version.major, version.minor]);
        }
        mac.update(&self.volume.0.to_le_bytes());
        for party in [&self.initiator, &self.acceptor] {
            mac.update(&party.node.0.to_le_bytes());
            mac.update(&[party.role as u8]);
            mac.update(&party.epoch.0.to_le_bytes());
            mac.update(&party.nonce.0);
        }
        mac
    }

    /// The tag `prover` sends.
    pub(crate) fn tag(&self, key: &PreSharedKey, prover: Prover) -> AuthTag {
        AuthTag(self.keyed(key, prover).finalize().into_bytes().into())
    }

    /// Whether `tag` is `prover`'s tag, compared in constant time.
    pub(crate) fn verify(&self, key: &PreSharedKey, prover: Prover, tag: &AuthTag) -> bool {
        self.keyed(key, prover).verify_slice(&tag.0).is_ok()
    }
}
