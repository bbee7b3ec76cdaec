//! Handshake tests. Every frame goes through the real encoder and decoder,
//! as it would on a socket.

use super::*;
use crate::wire::tests::{decode_one, RawFrame};
use crate::wire::{AuthTag, Challenge, Hello, Message, Nonce, Response, Write, PROTOCOL_VERSION};

const VOLUME: VolumeId = VolumeId(7);
const PRIMARY: NodeId = NodeId(1);
const REPLICA: NodeId = NodeId(2);

fn key(secret: &[u8]) -> PreSharedKey {
    PreSharedKey::new(secret).unwrap()
}

fn shared_key() -> PreSharedKey {
    key(b"correct horse battery staple!!")
}

fn initiator_config(key: PreSharedKey, epoch: u64) -> InitiatorConfig {
    InitiatorConfig {
        key,
        node: PRIMARY,
        volume: VOLUME,
        epoch: Epoch(epoch),
        versions: VersionRange::SUPPORTED,
    }
}

fn acceptor(key: PreSharedKey, nonce: u8) -> Acceptor {
    let config = AcceptorConfig {
        key,
        node: REPLICA,
        versions: VersionRange::SUPPORTED,
    };
    Acceptor::new(config, Nonce([nonce; 32])).unwrap()
}

/// The replica holds volume 7 at epoch 5.
fn volumes(volume: VolumeId) -> Option<Epoch> {
    (volume == VOLUME).then_some(Epoch(5))
}

fn wire(out: &Outgoing) -> Vec<u8> {
    let mut bytes = vec![0u8; out.message.encoded_len()];
    out.encode(&mut bytes).unwrap();
    bytes
}

fn to_acceptor(acceptor: &mut Acceptor, out: &Outgoing) -> Step {
    let bytes = wire(out);
    acceptor.receive(&decode_one(&bytes), &volumes)
}

fn to_initiator(initiator: &mut Initiator, out: &Outgoing) -> Step {
    let bytes = wire(out);
    initiator.receive(&decode_one(&bytes))
}

fn sent(step: &Step) -> &Outgoing {
    step.send.as_ref().expect("step sends a frame")
}

fn nack_reason(step: &Step) -> NackReason {
    match &sent(step).message {
        Message::Nack(nack) => {
            assert_eq!((nack.stream, nack.sequence), (StreamId(0), Sequence(0)));
            nack.reason
        }
        other => panic!("expected a Nack, got {other:?}"),
    }
}

fn failure(step: &Step) -> &AuthFailure {
    match &step.outcome {
        Outcome::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn tag_of(out: &Outgoing) -> AuthTag {
    match &out.message {
        Message::Response(response) => response.tag,
        other => panic!("expected a Response, got {other:?}"),
    }
}

#[test]
fn both_sides_authenticate_with_the_same_key() {
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([0x11; 32])).unwrap();
    let mut acceptor = acceptor(shared_key(), 0x22);

    let challenge = to_acceptor(&mut acceptor, &hello);
    assert_eq!(challenge.outcome, Outcome::Pending);
    let proof = to_initiator(&mut initiator, sent(&challenge));
    assert_eq!(proof.outcome, Outcome::Pending);
    let accepted = to_acceptor(&mut acceptor, sent(&proof));
    assert_eq!(
        accepted.outcome,
        Outcome::Authenticated(PeerInfo {
            node: PRIMARY,
            role: Role::Primary,
            volume: VOLUME,
            epoch: Epoch(5),
            version: PROTOCOL_VERSION,
        })
    );
    let done = to_initiator(&mut initiator, sent(&accepted));
    assert_eq!(done.send, None);
    assert_eq!(
        done.outcome,
        Outcome::Authenticated(PeerInfo {
            node: REPLICA,
            role: Role::Replica,
            volume: VOLUME,
            epoch: Epoch(5),
            version: PROTOCOL_VERSION,
        })
    );
    // The machines are spent once they have decided.
    assert_eq!(
        failure(&to_initiator(&mut initiator, sent(&accepted))),
        &AuthFailure::Finished
    );
}

#[test]
fn a_newer_initiator_is_accepted_at_the_acceptors_epoch_or_later() {
    let (_, hello) =
        Initiator::start(initiator_config(shared_key(), 9), Nonce([0x11; 32])).unwrap();
    let step = to_acceptor(&mut acceptor(shared_key(), 0x22), &hello);
    assert_eq!(step.outcome, Outcome::Pending);
    // The Challenge tells the initiator the replica's (older) epoch.
    assert_eq!(sent(&step).envelope.epoch, Epoch(5));
}

#[test]
fn a_wrong_key_is_refused_by_the_acceptor() {
    let (mut initiator, hello) = Initiator::start(
        initiator_config(key(b"not the right key at all"), 5),
        Nonce([1; 32]),
    )
    .unwrap();
    let mut acceptor = acceptor(shared_key(), 2);
    let challenge = to_acceptor(&mut acceptor, &hello);
    let proof = to_initiator(&mut initiator, sent(&challenge));
    let refused = to_acceptor(&mut acceptor, sent(&proof));
    assert_eq!(failure(&refused), &AuthFailure::BadProof);
    assert_eq!(nack_reason(&refused), NackReason::AuthFailed);
    // The initiator learns why and gives up.
    let given_up = to_initiator(&mut initiator, sent(&refused));
    assert_eq!(
        failure(&given_up),
        &AuthFailure::Rejected(NackReason::AuthFailed)
    );
    assert_eq!(given_up.send, None);
}

#[test]
fn an_impostor_acceptor_is_refused_by_the_initiator() {
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    // The impostor runs the protocol with a key of its own and skips
    // checking the initiator's proof.
    let mut impostor = acceptor(key(b"impostor's own key 123"), 2);
    let challenge = to_acceptor(&mut impostor, &hello);
    to_initiator(&mut initiator, sent(&challenge));
    let forged = Outgoing {
        envelope: sent(&challenge).envelope,
        message: Message::Response(Response {
            tag: AuthTag([0x5a; 32]),
        }),
    };
    let refused = to_initiator(&mut initiator, &forged);
    assert_eq!(failure(&refused), &AuthFailure::BadProof);
    assert_eq!(nack_reason(&refused), NackReason::AuthFailed);
}

#[test]
fn a_replayed_initiator_proof_is_refused() {
    // An eavesdropper records a whole successful handshake...
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let mut first = acceptor(shared_key(), 2);
    let challenge = to_acceptor(&mut first, &hello);
    let recorded_proof = sent(&to_initiator(&mut initiator, sent(&challenge))).clone();
    // ...and replays the initiator's frames to the replica later. The
    // replica's new nonce makes the recorded proof worthless.
    let mut second = acceptor(shared_key(), 3);
    assert_eq!(to_acceptor(&mut second, &hello).outcome, Outcome::Pending);
    let refused = to_acceptor(&mut second, &recorded_proof);
    assert_eq!(failure(&refused), &AuthFailure::BadProof);
    assert_eq!(nack_reason(&refused), NackReason::AuthFailed);
}

#[test]
fn a_replayed_acceptor_proof_is_refused() {
    // A full handshake is recorded...
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let mut replica = acceptor(shared_key(), 2);
    let challenge = sent(&to_acceptor(&mut replica, &hello)).clone();
    let proof = to_initiator(&mut initiator, &challenge);
    let recorded_acceptor_proof = sent(&to_acceptor(&mut replica, sent(&proof))).clone();
    // ...then a fake replica answers a new primary handshake with the
    // recorded frames. The primary's new nonce makes them worthless.
    let (mut initiator, _) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([9; 32])).unwrap();
    assert_eq!(
        to_initiator(&mut initiator, &challenge).outcome,
        Outcome::Pending
    );
    let refused = to_initiator(&mut initiator, &recorded_acceptor_proof);
    assert_eq!(failure(&refused), &AuthFailure::BadProof);
}

#[test]
fn a_reflected_proof_is_refused() {
    // A fake replica that sends the primary's own proof back: the prover
    // byte in the transcript tells the two proofs apart.
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let mut replica = acceptor(shared_key(), 2);
    let challenge = to_acceptor(&mut replica, &hello);
    let proof = to_initiator(&mut initiator, sent(&challenge));
    let reflected = Outgoing {
        envelope: sent(&challenge).envelope,
        message: Message::Response(Response {
            tag: tag_of(sent(&proof)),
        }),
    };
    assert_eq!(
        failure(&to_initiator(&mut initiator, &reflected)),
        &AuthFailure::BadProof
    );
}

#[test]
fn a_reflected_nonce_is_refused() {
    let nonce = Nonce([1; 32]);
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), nonce).unwrap();
    let challenge = Outgoing {
        envelope: Envelope::new(VOLUME, Epoch(5)),
        message: Message::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            role: Role::Replica,
            node: REPLICA,
            nonce,
        }),
    };
    let step = to_initiator(&mut initiator, &challenge);
    assert_eq!(failure(&step), &AuthFailure::NonceReflected);
    // Same on the other side.
    let mut replica = acceptor(shared_key(), 1);
    let step = to_acceptor(&mut replica, &hello);
    assert_eq!(failure(&step), &AuthFailure::NonceReflected);
}

#[test]
fn a_tampered_hello_is_detected() {
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    // A man in the middle rewrites the offered versions (a downgrade
    // attempt) and the claimed node.
    let Message::Hello(original) = hello.message.clone() else {
        unreachable!()
    };
    let tampered = Outgoing {
        envelope: hello.envelope,
        message: Message::Hello(Hello {
            versions: VersionRange::new(crate::wire::Version::new(0, 1), PROTOCOL_VERSION).unwrap(),
            node: NodeId(99),
            ..original
        }),
    };
    let mut replica = acceptor(shared_key(), 2);
    let challenge = to_acceptor(&mut replica, &tampered);
    let proof = to_initiator(&mut initiator, sent(&challenge));
    assert_eq!(
        failure(&to_acceptor(&mut replica, sent(&proof))),
        &AuthFailure::BadProof
    );
}

#[test]
fn no_common_version_is_refused_with_the_supported_range() {
    // A Hello from a future peer that only speaks major 2.
    let mut payload = vec![2, 0, 2, 3, 1, 0, 0, 0];
    payload.extend_from_slice(&PRIMARY.0.to_le_bytes());
    payload.extend_from_slice(&[1; 32]);
    let bytes = RawFrame::new(crate::wire::MessageType::Hello, &payload).bytes();
    let mut replica = acceptor(shared_key(), 2);
    let refused = replica.receive(&decode_one(&bytes), &volumes);
    assert!(matches!(
        failure(&refused),
        AuthFailure::NoCommonVersion { offered } if offered.min() == crate::wire::Version::new(2, 0)
    ));
    assert_eq!(
        nack_reason(&refused),
        NackReason::UnsupportedVersion {
            supported: VersionRange::SUPPORTED
        }
    );
    // An initiator told so gives up.
    let (mut initiator, _) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    assert_eq!(
        failure(&to_initiator(&mut initiator, sent(&refused))),
        &AuthFailure::Rejected(NackReason::UnsupportedVersion {
            supported: VersionRange::SUPPORTED
        })
    );
}

#[test]
fn a_version_that_was_not_offered_is_refused() {
    let (mut initiator, _) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let mut payload = vec![1, 7, 2, 0, 0, 0, 0, 0];
    payload.extend_from_slice(&REPLICA.0.to_le_bytes());
    payload.extend_from_slice(&[2; 32]);
    let bytes = RawFrame::new(crate::wire::MessageType::Challenge, &payload).bytes();
    let step = initiator.receive(&decode_one(&bytes));
    assert_eq!(
        failure(&step),
        &AuthFailure::VersionNotOffered {
            chosen: crate::wire::Version::new(1, 7)
        }
    );
}

#[test]
fn a_stale_primary_is_fenced_at_the_handshake() {
    let (mut initiator, hello) =
        Initiator::start(initiator_config(shared_key(), 4), Nonce([1; 32])).unwrap();
    let refused = to_acceptor(&mut acceptor(shared_key(), 2), &hello);
    assert_eq!(
        failure(&refused),
        &AuthFailure::StaleEpoch {
            initiator: Epoch(4),
            acceptor: Epoch(5)
        }
    );
    assert_eq!(
        nack_reason(&refused),
        NackReason::StaleEpoch { current: Epoch(5) }
    );
    assert_eq!(
        failure(&to_initiator(&mut initiator, sent(&refused))),
        &AuthFailure::Rejected(NackReason::StaleEpoch { current: Epoch(5) })
    );
}

#[test]
fn unknown_volumes_and_wrong_roles_are_refused() {
    let config = InitiatorConfig {
        volume: VolumeId(8),
        ..initiator_config(shared_key(), 5)
    };
    let (_, hello) = Initiator::start(config, Nonce([1; 32])).unwrap();
    let refused = to_acceptor(&mut acceptor(shared_key(), 2), &hello);
    assert_eq!(failure(&refused), &AuthFailure::UnknownVolume(VolumeId(8)));
    assert_eq!(nack_reason(&refused), NackReason::UnknownVolume);

    let (_, hello) = Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let Message::Hello(original) = hello.message.clone() else {
        unreachable!()
    };
    let from_a_replica = Outgoing {
        envelope: hello.envelope,
        message: Message::Hello(Hello {
            role: Role::Replica,
            ..original
        }),
    };
    let refused = to_acceptor(&mut acceptor(shared_key(), 2), &from_a_replica);
    assert_eq!(
        failure(&refused),
        &AuthFailure::WrongRole {
            role: Role::Replica
        }
    );
    assert_eq!(nack_reason(&refused), NackReason::WrongRole);
}

#[test]
fn data_before_authentication_is_a_protocol_violation() {
    let write = Outgoing {
        envelope: Envelope::new(VOLUME, Epoch(5)),
        message: Message::Write(Write {
            stream: StreamId(1),
            sequence: Sequence(1),
            offset: 0,
            data: b"sneaky",
            fua: false,
            position: None,
        }),
    };
    let bytes = wire(&write);
    let mut replica = acceptor(shared_key(), 2);
    let refused = replica.receive(&decode_one(&bytes), &volumes);
    assert_eq!(
        failure(&refused),
        &AuthFailure::UnexpectedMessage(crate::wire::MessageType::Write)
    );
    assert_eq!(nack_reason(&refused), NackReason::ProtocolViolation);

    let (mut initiator, _) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let refused = initiator.receive(&decode_one(&bytes));
    assert_eq!(
        failure(&refused),
        &AuthFailure::UnexpectedMessage(crate::wire::MessageType::Write)
    );
}

#[test]
fn frames_for_another_volume_are_refused() {
    let (mut initiator, _) =
        Initiator::start(initiator_config(shared_key(), 5), Nonce([1; 32])).unwrap();
    let challenge = Outgoing {
        envelope: Envelope::new(VolumeId(8), Epoch(5)),
        message: Message::Challenge(Challenge {
            version: PROTOCOL_VERSION,
            role: Role::Replica,
            node: REPLICA,
            nonce: Nonce([2; 32]),
        }),
    };
    assert_eq!(
        failure(&to_initiator(&mut initiator, &challenge)),
        &AuthFailure::VolumeMismatch {
            expected: VOLUME,
            got: VolumeId(8)
        }
    );
}

#[test]
fn configuration_is_checked() {
    assert_eq!(
        PreSharedKey::new(b"short").unwrap_err(),
        KeyError::TooShort {
            len: 5,
            min: MIN_KEY_LEN
        }
    );
    assert_eq!(format!("{:?}", shared_key()), "PreSharedKey(<redacted>)");
    let future = VersionRange::new(PROTOCOL_VERSION, crate::wire::Version::new(1, 9)).unwrap();
    let config = InitiatorConfig {
        versions: future,
        ..initiator_config(shared_key(), 5)
    };
    assert!(matches!(
        Initiator::start(config, Nonce([1; 32])),
        Err(ConfigError::UnsupportedVersions { .. })
    ));
}
