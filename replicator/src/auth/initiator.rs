//! The initiating side of the handshake: the primary opening a link to a
//! replica.

use crate::auth::key::PreSharedKey;
use crate::auth::transcript::{Party, Prover, Transcript};
use crate::auth::{fail, AuthFailure, Outcome, Outgoing, PeerInfo, Step};
use crate::wire::{
    Challenge, Envelope, Epoch, Frame, Hello, Message, NodeId, Nonce, Response, Role, VersionRange,
    VolumeId,
};

/// What the initiator needs to know.
#[derive(Debug, Clone)]
pub struct InitiatorConfig {
    /// The link's key.
    pub key: PreSharedKey,
    /// This node.
    pub node: NodeId,
    /// The volume the link replicates.
    pub volume: VolumeId,
    /// This node's current epoch of that volume.
    pub epoch: Epoch,
    /// Versions to offer; must lie within [`VersionRange::SUPPORTED`].
    pub versions: VersionRange,
}

/// Why a configuration cannot start a handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configured versions include some this implementation cannot
    /// speak.
    #[error("versions {requested} are not all within the supported {supported}")]
    UnsupportedVersions {
        /// Configured.
        requested: VersionRange,
        /// What this implementation speaks.
        supported: VersionRange,
    },
}

pub(crate) fn check_versions(requested: VersionRange) -> Result<(), ConfigError> {
    if requested.is_within(&VersionRange::SUPPORTED) {
        Ok(())
    } else {
        Err(ConfigError::UnsupportedVersions {
            requested,
            supported: VersionRange::SUPPORTED,
        })
    }
}

#[derive(Debug, Clone)]
enum State {
    AwaitingChallenge,
    AwaitingProof {
        transcript: Transcript,
        peer: PeerInfo,
    },
    Over,
}

/// The primary's side of a handshake.
#[derive(Debug, Clone)]
pub struct Initiator {
    config: InitiatorConfig,
    nonce: Nonce,
    state: State,
}

impl Initiator {
    /// Starts a handshake: returns the machine and the `Hello` to send.
    /// `nonce` must be fresh from a secure random generator.
    pub fn start(config: InitiatorConfig, nonce: Nonce) -> Result<(Self, Outgoing), ConfigError> {
        check_versions(config.versions)?;
        let hello = Outgoing {
            // The version is not chosen yet: say the highest we speak.
            envelope: Envelope {
                version: config.versions.max(),
                volume: config.volume,
                epoch: config.epoch,
            },
            message: Message::Hello(Hello {
                versions: config.versions,
                role: Role::Primary,
                node: config.node,
                nonce,
            }),
        };
        let initiator = Self {
            config,
            nonce,
            state: State::AwaitingChallenge,
        };
        Ok((initiator, hello))
    }

    /// Feeds one frame from the acceptor.
    pub fn receive(&mut self, frame: &Frame<'_>) -> Step {
        let step = self.step(frame);
        if !matches!(step.outcome, Outcome::Pending) {
            self.state = State::Over;
        }
        step
    }

    fn step(&mut self, frame: &Frame<'_>) -> Step {
        if matches!(self.state, State::Over) {
            return Step::failed(None, AuthFailure::Finished);
        }
        if let Message::Nack(nack) = &frame.message {
            return Step::failed(None, AuthFailure::Rejected(nack.reason));
        }
        if frame.header.volume != self.config.volume {
            return self.fail(AuthFailure::VolumeMismatch {
                expected: self.config.volume,
                got: frame.header.volume,
            });
        }
        match (&self.state, &frame.message) {
            (State::AwaitingChallenge, Message::Challenge(challenge)) => {
                self.on_challenge(frame, challenge)
            }
            (State::AwaitingProof { transcript, peer }, Message::Response(response)) => {
                if frame.header.version != peer.version {
                    return self.fail(AuthFailure::VersionMismatch {
                        expected: peer.version,
                        got: frame.header.version,
                    });
                }
                if transcript.verify(&self.config.key, Prover::Acceptor, &response.tag) {
                    Step {
                        send: None,
                        outcome: Outcome::Authenticated(*peer),
                    }
                } else {
                    self.fail(AuthFailure::BadProof)
                }
            }
            (_, other) => self.fail(AuthFailure::UnexpectedMessage(other.message_type())),
        }
    }

    fn on_challenge(&mut self, frame: &Frame<'_>, challenge: &Challenge) -> Step {
        if !self.config.versions.contains(challenge.version) {
            return self.fail(AuthFailure::VersionNotOffered {
                chosen: challenge.version,
            });
        }
        if frame.header.version != challenge.version {
            return self.fail(AuthFailure::VersionMismatch {
                expected: challenge.version,
                got: frame.header.version,
            });
        }
        if challenge.role != Role::Replica {
            return self.fail(AuthFailure::WrongRole {
                role: challenge.role,
            });
        }
        if challenge.nonce == self.nonce {
            return self.fail(AuthFailure::NonceReflected);
        }
        let transcript = Transcript {
            version: challenge.version,
            offered: self.config.versions,
            volume: self.config.volume,
            initiator: Party {
                node: self.config.node,
                role: Role::Primary,
                epoch: self.config.epoch,
                nonce: self.nonce,
            },
            acceptor: Party {
                node: challenge.node,
                role: challenge.role,
                epoch: frame.header.epoch,
                nonce: challenge.nonce,
            },
        };
        let peer = PeerInfo {
            node: challenge.node,
            role: challenge.role,
            volume: self.config.volume,
            epoch: frame.header.epoch,
            version: challenge.version,
        };
        let proof = Outgoing {
            envelope: Envelope {
                version: challenge.version,
                volume: self.config.volume,
                epoch: self.config.epoch,
            },
            message: Message::Response(Response {
                tag: transcript.tag(&self.config.key, Prover::Initiator),
            }),
        };
        self.state = State::AwaitingProof { transcript, peer };
        Step::pending(proof)
    }

    fn fail(&self, failure: AuthFailure) -> Step {
        let version = match &self.state {
            State::AwaitingProof { peer, .. } => peer.version,
            _ => self.config.versions.max(),
        };
        let envelope = Envelope {
            version,
            volume: self.config.volume,
            epoch: self.config.epoch,
        };
        fail(envelope, self.config.versions, failure)
    }
}
