//! The accepting side of the handshake: a replica taking a link from a
//! primary.

use crate::auth::initiator::{check_versions, ConfigError};
use crate::auth::key::PreSharedKey;
use crate::auth::transcript::{Party, Prover, Transcript};
use crate::auth::{fail, AuthFailure, Outcome, Outgoing, PeerInfo, Step};
use crate::wire::{
    Challenge, Envelope, Epoch, Frame, Hello, Message, NodeId, Nonce, Response, Role, VersionRange,
    VolumeId,
};

/// What the acceptor needs to know.
#[derive(Debug, Clone)]
pub struct AcceptorConfig {
    /// The link's key.
    pub key: PreSharedKey,
    /// This node.
    pub node: NodeId,
    /// Versions to accept; must lie within [`VersionRange::SUPPORTED`].
    pub versions: VersionRange,
}

/// The volumes this node holds a copy of, and its current epoch of each.
/// Consulted once, when the `Hello` names the volume.
pub trait VolumeCatalog {
    /// This node's epoch of `volume`, or `None` if it holds no copy.
    fn epoch_of(&self, volume: VolumeId) -> Option<Epoch>;
}

impl<F: Fn(VolumeId) -> Option<Epoch>> VolumeCatalog for F {
    fn epoch_of(&self, volume: VolumeId) -> Option<Epoch> {
        self(volume)
    }
}

#[derive(Debug, Clone)]
enum State {
    AwaitingHello,
    AwaitingProof {
        transcript: Transcript,
        peer: PeerInfo,
    },
    Over,
}

/// The replica's side of a handshake.
#[derive(Debug, Clone)]
pub struct Acceptor {
    config: AcceptorConfig,
    nonce: Nonce,
    state: State,
    /// Volume and epoch to stamp on frames once the `Hello` named them.
    envelope: Envelope,
}

impl Acceptor {
    /// A machine waiting for a `Hello`. `nonce` must be fresh from a secure
    /// random generator.
    pub fn new(config: AcceptorConfig, nonce: Nonce) -> Result<Self, ConfigError> {
        check_versions(config.versions)?;
        let envelope = Envelope {
            // Until a version is chosen, speak the highest we know.
            version: config.versions.max(),
            volume: VolumeId(0),
            epoch: Epoch(0),
        };
        Ok(Self {
            config,
            nonce,
            state: State::AwaitingHello,
            envelope,
        })
    }

    /// Feeds one frame from the initiator. `volumes` is consulted for the
    /// volume the `Hello` names.
    pub fn receive(&mut self, frame: &Frame<'_>, volumes: &impl VolumeCatalog) -> Step {
        let step = self.step(frame, volumes);
        if !matches!(step.outcome, Outcome::Pending) {
            self.state = State::Over;
        }
        step
    }

    fn step(&mut self, frame: &Frame<'_>, volumes: &impl VolumeCatalog) -> Step {
        if matches!(self.state, State::Over) {
            return Step::failed(None, AuthFailure::Finished);
        }
        if let Message::Nack(nack) = &frame.message {
            return Step::failed(None, AuthFailure::Rejected(nack.reason));
        }
        match (&self.state, &frame.message) {
            (State::AwaitingHello, Message::Hello(hello)) => self.on_hello(frame, hello, volumes),
            (State::AwaitingProof { transcript, peer }, Message::Response(response)) => {
                if frame.header.volume != peer.volume {
                    return self.fail(AuthFailure::VolumeMismatch {
                        expected: peer.volume,
                        got: frame.header.volume,
                    });
                }
                if frame.header.version != peer.version {
                    return self.fail(AuthFailure::VersionMismatch {
                        expected: peer.version,
                        got: frame.header.version,
                    });
                }
                if !transcript.verify(&self.config.key, Prover::Initiator, &response.tag) {
                    return self.fail(AuthFailure::BadProof);
                }
                let proof = Outgoing {
                    envelope: self.envelope,
                    message: Message::Response(Response {
                        tag: transcript.tag(&self.config.key, Prover::Acceptor),
                    }),
                };
                Step {
                    send: Some(proof),
                    outcome: Outcome::Authenticated(*peer),
                }
            }
            (_, other) => self.fail(AuthFailure::UnexpectedMessage(other.message_type())),
        }
    }

    fn on_hello(&mut self, frame: &Frame<'_>, hello: &Hello, volumes: &impl VolumeCatalog) -> Step {
        let volume = frame.header.volume;
        self.envelope.volume = volume;
        let Some(version) = self.config.versions.highest_common(&hello.versions) else {
            return self.fail(AuthFailure::NoCommonVersion {
                offered: hello.versions,
            });
        };
        if hello.role != Role::Primary {
            return self.fail(AuthFailure::WrongRole { role: hello.role });
        }
        let Some(current) = volumes.epoch_of(volume) else {
            return self.fail(AuthFailure::UnknownVolume(volume));
        };
        self.envelope.epoch = current;
        if frame.header.epoch < current {
            return self.fail(AuthFailure::StaleEpoch {
                initiator: frame.header.epoch,
                acceptor: current,
            });
        }
        if hello.nonce == self.nonce {
            return self.fail(AuthFailure::NonceReflected);
        }
        self.envelope.version = version;
        let transcript = Transcript {
            version,
            offered: hello.versions,
            volume,
            initiator: Party {
                node: hello.node,
                role: hello.role,
                epoch: frame.header.epoch,
                nonce: hello.nonce,
            },
            acceptor: Party {
                node: self.config.node,
                role: Role::Replica,
                epoch: current,
                nonce: self.nonce,
            },
        };
        let peer = PeerInfo {
            node: hello.node,
            role: hello.role,
            volume,
            epoch: frame.header.epoch,
            version,
        };
        self.state = State::AwaitingProof { transcript, peer };
        Step::pending(Outgoing {
            envelope: self.envelope,
            message: Message::Challenge(Challenge {
                version,
                role: Role::Replica,
                node: self.config.node,
                nonce: self.nonce,
            }),
        })
    }

    fn fail(&self, failure: AuthFailure) -> Step {
        fail(self.envelope, self.config.versions, failure)
    }
}
