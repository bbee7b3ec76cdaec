//! Arbitrary bytes through the streaming PDU decoder, and every parser a
//! decoded PDU leads to (SQE, SGL, Fabrics command, Connect data, CQE).
//!
//! Input: one configuration byte, then the byte stream.
//! - bit 0: role (0 controller, 1 host)
//! - bit 1: start established (else the stream must begin with ICReq / ICResp)
//! - bit 2, 3: header / data digests when starting established
//! - bits 4..8: receive alignment (PDA) when starting established
//!
//! Invariants checked: no panic; `NeedMore(n)` has `n > 0`; a decoded PDU
//! fits in the buffer; re-encoding a decoded PDU and decoding it again
//! gives the same header and data; errors map to an encodable termination.

#![no_main]

use keel_target::nvme::cqe::CompletionQueueEntry;
use keel_target::nvme::fabrics::{ConnectData, FabricsCommand, CONNECT_DATA_LEN};
use keel_target::nvme::sqe::SubmissionQueueEntry;
use keel_target::nvme::SglDescriptor;
use keel_target::tcp::{
    ConnectionParams, Decoded, DecoderLimits, Pdu, PduDecoder, PduHeader, Role, TxParams,
};
use libfuzzer_sys::fuzz_target;

const LIMITS: DecoderLimits = DecoderLimits {
    max_in_capsule_data: 16384,
    max_data_per_pdu: 65536,
};

fuzz_target!(|input: &[u8]| {
    let Some((&config, mut stream)) = input.split_first() else {
        return;
    };
    let role = if config & 1 == 0 {
        Role::Controller
    } else {
        Role::Host
    };
    let mut decoder = PduDecoder::new(role, LIMITS);
    if config & 2 != 0 {
        let params = ConnectionParams {
            header_digest: config & 4 != 0,
            data_digest: config & 8 != 0,
            rx_pda: config >> 4,
        };
        decoder.establish(params).expect("PDA <= 15 is valid");
    }
    loop {
        match decoder.decode(stream) {
            Ok(Decoded::NeedMore(needed)) => {
                assert!(needed > 0);
                return;
            }
            Ok(Decoded::Ready(pdu)) => {
                assert!(pdu.wire_len() > 0 && pdu.wire_len() <= stream.len());
                exercise_parsers(&pdu);
                check_re_encoding(&decoder, &pdu);
                // Follow the Initialize Connection exchange like a real
                // connection would, so later PDUs are decoded established.
                let params = match pdu.header() {
                    PduHeader::IcReq(req) => Some((req.digest, req.hpda)),
                    PduHeader::IcResp(resp) => Some((resp.digest, resp.cpda)),
                    _ => None,
                };
                if let Some((digest, pda)) = params {
                    let params = ConnectionParams {
                        header_digest: digest.header,
                        data_digest: digest.data,
                        rx_pda: pda,
                    };
                    decoder
                        .establish(params)
                        .expect("decoder accepts only PDA <= 31");
                }
                stream = &stream[pdu.wire_len()..];
            }
            Err(error) => {
                if let Some((term, echoed)) = decoder.termination_for(&error, stream) {
                    let mut out = [0u8; 152];
                    term.encode(&TxParams::PLAIN, echoed, &mut out)
                        .expect("termination requests always encode");
                }
                return;
            }
        }
    }
});

fn exercise_parsers(pdu: &Pdu<'_>) {
    match pdu.header() {
        PduHeader::CapsuleCmd(cmd) => {
            let sqe = cmd.sqe;
            assert_eq!(SubmissionQueueEntry::decode(&sqe.encode()), sqe);
            let sgl = sqe.sgl1();
            if let SglDescriptor::Unsupported(raw) = sgl {
                assert_eq!(raw, sqe.dptr);
            }
            let _ = sgl.data_length();
            let fabrics = FabricsCommand::from_sqe(&sqe);
            // Fabrics commands re-encode to an SQE that decodes the same.
            if let Some(command) = fabrics {
                let again = FabricsCommand::from_sqe(&command.to_sqe(sqe.cid));
                assert_eq!(again, Some(command));
            }
            if let Ok(data) = pdu.data() {
                if let Ok(connect) = ConnectData::parse(data) {
                    let mut out = [0u8; CONNECT_DATA_LEN];
                    connect.write_into(&mut out).expect("parsed NQNs are valid");
                    assert_eq!(ConnectData::parse(&out), Ok(connect));
                }
            }
        }
        PduHeader::CapsuleResp(resp) => {
            assert_eq!(CompletionQueueEntry::decode(&resp.cqe.encode()), resp.cqe);
        }
        _ => {}
    }
}

/// Encoding what was decoded, with the decoder's own parameters, must give
/// a PDU the decoder reads back identically.
fn check_re_encoding(decoder: &PduDecoder, pdu: &Pdu<'_>) {
    let Ok(data) = pdu.data() else {
        return;
    };
    let tx = decoder.params().map_or(TxParams::PLAIN, |params| TxParams {
        header_digest: params.header_digest,
        data_digest: params.data_digest,
        pda: params.rx_pda,
    });
    let mut out = vec![0u8; pdu.wire_len() + 256];
    let len = pdu
        .header()
        .encode(&tx, data, &mut out)
        .expect("a decoded PDU re-encodes");
    match decoder.decode(&out[..len]) {
        Ok(Decoded::Ready(again)) => {
            assert_eq!(again.header(), pdu.header());
            assert_eq!(again.data(), Ok(data));
        }
        other => panic!("re-encoded PDU does not decode: {other:?}"),
    }
}
