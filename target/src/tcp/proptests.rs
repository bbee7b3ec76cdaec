//! Property tests of the PDU codec: every PDU type round-trips through
//! encoder and decoder with any digests and alignment, and the decoder
//! survives arbitrary and corrupted input with consistent answers.

use proptest::prelude::*;

use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::tcp::*;

const LIMITS: DecoderLimits = DecoderLimits {
    max_in_capsule_data: 16384,
    max_data_per_pdu: 1 << 20,
};

fn any_sqe() -> impl Strategy<Value = SubmissionQueueEntry> {
    proptest::array::uniform32(any::<u8>()).prop_flat_map(|low| {
        proptest::array::uniform32(any::<u8>()).prop_map(move |high| {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&low);
            bytes[32..].copy_from_slice(&high);
            SubmissionQueueEntry::decode(&bytes)
        })
    })
}

fn any_cqe() -> impl Strategy<Value = CompletionQueueEntry> {
    proptest::array::uniform16(any::<u8>()).prop_map(|bytes| CompletionQueueEntry::decode(&bytes))
}

fn any_digest_options() -> impl Strategy<Value = DigestOptions> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| DigestOptions { header, data })
}

fn any_tx() -> impl Strategy<Value = TxParams> {
    (any::<bool>(), any::<bool>(), 0..=31u8).prop_map(|(header_digest, data_digest, pda)| {
        TxParams {
            header_digest,
            data_digest,
            pda,
        }
    })
}

/// A valid PDU: header and data consistent with each other.
fn any_pdu() -> impl Strategy<Value = (PduHeader, Vec<u8>)> {
    let data = proptest::collection::vec(any::<u8>(), 0..600);
    let some_data = proptest::collection::vec(any::<u8>(), 1..600);
    prop_oneof![
        (0..=31u8, any_digest_options(), any::<u32>()).prop_map(|(hpda, digest, maxr2t)| {
            (
                PduHeader::IcReq(IcReq {
                    pfv: 0,
                    hpda,
                    digest,
                    maxr2t,
                }),
                Vec::new(),
            )
        }),
        (0..=31u8, any_digest_options(), 1024..=u32::MAX / 4).prop_map(|(cpda, digest, words)| {
            (
                PduHeader::IcResp(IcResp {
                    pfv: 0,
                    cpda,
                    digest,
                    maxh2cdata: words * 4,
                }),
                Vec::new(),
            )
        }),
        (
            any::<u16>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..=128),
            any::<bool>()
        )
            .prop_map(|(fes, fei, data, h2c)| {
                let term = TermReq {
                    fes: FatalErrorStatus::from_u16(fes),
                    fei,
                };
                let header = if h2c {
                    PduHeader::H2cTermReq(term)
                } else {
                    PduHeader::C2hTermReq(term)
                };
                (header, data)
            }),
        (any_sqe(), data).prop_map(|(sqe, data)| (PduHeader::CapsuleCmd(CapsuleCmd { sqe }), data)),
        any_cqe().prop_map(|cqe| (PduHeader::CapsuleResp(CapsuleResp { cqe }), Vec::new())),
        (
            any::<u16>(),
            any::<u16>(),
            0..u32::MAX / 2,
            any::<bool>(),
            some_data.clone()
        )
            .prop_map(|(cccid, ttag, datao, last, data)| {
                let datal = data.len() as u32;
                (
                    PduHeader::H2cData(DataPdu {
                        cccid,
                        ttag,
                        datao,
                        datal,
                        last,
                        success: false,
                    }),
                    data,
                )
            }),
        (
            any::<u16>(),
            any::<u16>(),
            0..u32::MAX / 2,
            any::<bool>(),
            any::<bool>(),
            some_data
        )
            .prop_map(|(cccid, ttag, datao, last, success, data)| {
                let datal = data.len() as u32;
                (
                    PduHeader::C2hData(DataPdu {
                        cccid,
                        ttag,
                        datao,
                        datal,
                        last: last || success,
                        success,
                    }),
                    data,
                )
            }),
        (any::<u16>(), any::<u16>(), 0..u32::MAX / 2, 1..u32::MAX / 2).prop_map(
            |(cccid, ttag, r2to, r2tl)| {
                (
                    PduHeader::R2t(R2t {
                        cccid,
                        ttag,
                        r2to,
                        r2tl,
                    }),
                    Vec::new(),
                )
            }
        ),
    ]
}

/// The decoder on the receiving side of `header`, in the matching state.
fn receiver_for(header: &PduHeader, tx: &TxParams) -> PduDecoder {
    let pdu_type = header.pdu_type();
    let role = if pdu_type.is_host_to_controller() {
        Role::Controller
    } else {
        Role::Host
    };
    let mut decoder = PduDecoder::new(role, LIMITS);
    if !pdu_type.is_initialize_connection() {
        decoder
            .establish(ConnectionParams {
                header_digest: tx.header_digest,
                data_digest: tx.data_digest,
                rx_pda: tx.pda,
            })
            .unwrap();
    }
    decoder
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_pdu_round_trips((header, data) in any_pdu(), tx in any_tx()) {
        let mut out = vec![0u8; 1024];
        let len = header.encode(&tx, &data, &mut out).unwrap();
        let decoder = receiver_for(&header, &tx);
        let pdu = match decoder.decode(&out[..len]) {
            Ok(Decoded::Ready(pdu)) => pdu,
            other => panic!("{other:?}"),
        };
        prop_assert_eq!(pdu.header(), &header);
        prop_assert_eq!(pdu.data(), Ok(&data[..]));
        prop_assert_eq!(pdu.wire_len(), len);
        // Every shorter prefix asks for more, never errs.
        for cut in [0, 1, 7, 8, 23, 24, 71, 72, 75, 76, 127, len - 1] {
            if cut < len {
                let answer = decoder.decode(&out[..cut]);
                prop_assert!(matches!(answer, Ok(Decoded::NeedMore(n)) if n > 0 && cut + n <= len), "{:?}", answer);
            }
        }
        // encode_header writes exactly the bytes before the data.
        let mut prefix = vec![0u8; 256];
        let layout = header.encode_header(&tx, data.len(), &mut prefix).unwrap();
        prop_assert_eq!(&prefix[..layout.data_offset], &out[..layout.data_offset]);
        prop_assert_eq!(layout.pdu_len, len);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        role in prop_oneof![Just(Role::Controller), Just(Role::Host)],
        params in proptest::option::of((any::<bool>(), any::<bool>(), 0..=31u8)),
    ) {
        let mut decoder = PduDecoder::new(role, LIMITS);
        if let Some((header_digest, data_digest, rx_pda)) = params {
            decoder.establish(ConnectionParams { header_digest, data_digest, rx_pda }).unwrap();
        }
        check_decoder_on(&decoder, &bytes)?;
    }

    #[test]
    fn corrupted_valid_pdus_never_panic(
        (header, data) in any_pdu(),
        tx in any_tx(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut out = vec![0u8; 1024];
        let len = header.encode(&tx, &data, &mut out).unwrap();
        out.truncate(len);
        for (index, value) in flips {
            let at = index.index(len);
            out[at] = value;
        }
        check_decoder_on(&receiver_for(&header, &tx), &out)?;
    }
}

/// Invariants of any decoder answer on any input.
fn check_decoder_on(decoder: &PduDecoder, bytes: &[u8]) -> Result<(), TestCaseError> {
    match decoder.decode(bytes) {
        Ok(Decoded::NeedMore(needed)) => prop_assert!(needed > 0),
        Ok(Decoded::Ready(pdu)) => {
            prop_assert!(pdu.wire_len() <= bytes.len());
            prop_assert!(pdu.layout().data_range().end <= pdu.wire_len());
            if let Ok(data) = pdu.data() {
                prop_assert_eq!(data.len(), pdu.layout().data_len);
            }
        }
        Err(error) => {
            // Every error either names a termination or is one of the two
            // that end the connection silently / fail one command.
            let silent = matches!(
                error,
                PduError::MalformedTermReq(_) | PduError::DataDigest { .. }
            );
            prop_assert_eq!(error.fatal_error().is_none(), silent);
            if let Some((term, echoed)) = decoder.termination_for(&error, bytes) {
                prop_assert!(echoed.len() <= 128);
                let mut out = [0u8; 152];
                prop_assert!(term.encode(&TxParams::PLAIN, echoed, &mut out).is_ok());
            }
        }
    }
    // decode_header agrees with decode on the header part.
    match (decoder.decode_header(bytes), decoder.decode(bytes)) {
        (Ok(Decoded::Ready(header)), Ok(Decoded::Ready(pdu))) => {
            prop_assert_eq!(&header.header, pdu.header());
        }
        (Err(a), Err(b)) => prop_assert_eq!(a, b),
        (Ok(Decoded::NeedMore(a)), Ok(Decoded::NeedMore(b))) => prop_assert_eq!(a, b),
        (Ok(Decoded::Ready(_)), Ok(Decoded::NeedMore(_))) => {}
        (header, whole) => prop_assert!(false, "disagree: {:?} vs {:?}", header, whole),
    }
    Ok(())
}
