//! Codec tests: byte-exact encodings checked against hand-written bytes
//! (digests computed independently), decoder errors for malformed input,
//! and streaming behaviour.

use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;
use crate::tcp::*;

const LIMITS: DecoderLimits = DecoderLimits {
    max_in_capsule_data: 16384,
    max_data_per_pdu: 1 << 20,
};

const DIGESTS: ConnectionParams = ConnectionParams {
    header_digest: true,
    data_digest: true,
    rx_pda: 0,
};

const TX_DIGESTS: TxParams = TxParams {
    header_digest: true,
    data_digest: true,
    pda: 0,
};

fn fresh(role: Role) -> PduDecoder {
    PduDecoder::new(role, LIMITS)
}

fn established(role: Role, params: ConnectionParams) -> PduDecoder {
    let mut decoder = PduDecoder::new(role, LIMITS);
    decoder.establish(params).unwrap();
    decoder
}

fn encode(header: &PduHeader, tx: &TxParams, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0xEE; 512 + data.len()];
    let len = header.encode(tx, data, &mut out).unwrap();
    out.truncate(len);
    out
}

fn decode_ok<'a>(decoder: &PduDecoder, bytes: &'a [u8]) -> Pdu<'a> {
    match decoder.decode(bytes) {
        Ok(Decoded::Ready(pdu)) => pdu,
        other => panic!("expected a PDU, got {other:?}"),
    }
}

fn decode_err(decoder: &PduDecoder, bytes: &[u8]) -> PduError {
    match decoder.decode(bytes) {
        Err(error) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn le32(value: u32) -> [u8; 4] {
    value.to_le_bytes()
}

/// The 64-byte SQE of a 1-block Write with 8 bytes of in-capsule data.
fn write_sqe() -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: 0x01,
        flags: 0x40,
        cid: 2,
        nsid: 1,
        cdw10: 0x10,
        ..Default::default()
    };
    sqe.set_sgl1(SglDescriptor::InCapsule {
        offset: 0,
        length: 8,
    });
    sqe
}

fn write_sqe_bytes() -> Vec<u8> {
    let mut sqe = vec![0u8; 64];
    sqe[0] = 0x01;
    sqe[1] = 0x40;
    sqe[2] = 0x02;
    sqe[4] = 0x01;
    sqe[32] = 0x08;
    sqe[39] = 0x01;
    sqe[40] = 0x10;
    sqe
}

// ---------------------------------------------------------------- encoding

#[test]
fn icreq_bytes() {
    let icreq = PduHeader::IcReq(IcReq {
        pfv: 0,
        hpda: 0,
        digest: DigestOptions {
            header: true,
            data: true,
        },
        maxr2t: 0,
    });
    let bytes = encode(&icreq, &TX_DIGESTS, &[]);
    let mut expected = vec![0x00, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00]);
    expected.resize(128, 0);
    assert_eq!(bytes, expected, "IC PDUs never carry digests");
    let pdu = decode_ok(&fresh(Role::Controller), &bytes);
    assert_eq!(pdu.header(), &icreq);
    assert_eq!(pdu.wire_len(), 128);
}

#[test]
fn icresp_bytes() {
    // What nvmet answers: CPDA 0, digests echoed, MAXH2CDATA 4 MiB.
    let icresp = PduHeader::IcResp(IcResp {
        pfv: 0,
        cpda: 0,
        digest: DigestOptions {
            header: true,
            data: true,
        },
        maxh2cdata: 4 * 1024 * 1024,
    });
    let bytes = encode(&icresp, &TxParams::PLAIN, &[]);
    let mut expected = vec![0x01, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x40, 0x00]);
    expected.resize(128, 0);
    assert_eq!(bytes, expected);
    assert_eq!(decode_ok(&fresh(Role::Host), &bytes).header(), &icresp);
}

#[test]
fn capsule_cmd_without_data_bytes() {
    let mut sqe = write_sqe();
    sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: 65536 });
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe });
    let bytes = encode(&cmd, &TxParams::PLAIN, &[]);
    let mut expected = vec![0x04, 0x00, 0x48, 0x00, 0x48, 0x00, 0x00, 0x00];
    let mut sqe_bytes = write_sqe_bytes();
    sqe_bytes[32..36].copy_from_slice(&le32(65536));
    sqe_bytes[39] = 0x5A;
    expected.extend_from_slice(&sqe_bytes);
    assert_eq!(bytes, expected);
    let decoder = established(Role::Controller, ConnectionParams::default());
    let pdu = decode_ok(&decoder, &bytes);
    assert_eq!(pdu.header(), &cmd);
    assert_eq!(pdu.data(), Ok(&[][..]));
}

#[test]
fn capsule_cmd_with_in_capsule_data_and_digests_bytes() {
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let data = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let bytes = encode(&cmd, &TX_DIGESTS, &data);
    // HDGSTF|DDGSTF, HLEN 72, PDO 76 (= 72 + header digest), PLEN 88.
    let mut expected = vec![0x04, 0x03, 0x48, 0x4C, 0x58, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&write_sqe_bytes());
    expected.extend_from_slice(&le32(0xD88A_C59B)); // CRC32C of bytes 0..72
    expected.extend_from_slice(&data);
    expected.extend_from_slice(&le32(0x4689_1F81)); // CRC32C of the data
    assert_eq!(bytes, expected);
    let pdu = decode_ok(&established(Role::Controller, DIGESTS), &bytes);
    assert_eq!(pdu.header(), &cmd);
    assert_eq!(pdu.data(), Ok(&data[..]));
}

#[test]
fn capsule_cmd_padding_follows_the_receivers_alignment() {
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let data = [9u8; 8];
    let tx = TxParams {
        header_digest: false,
        data_digest: false,
        pda: 31,
    };
    let bytes = encode(&cmd, &tx, &data);
    assert_eq!(bytes[3], 128, "PDO rounded up to 128");
    assert_eq!(&bytes[4..8], &le32(136));
    assert!(bytes[72..128].iter().all(|&b| b == 0), "zero padding");
    assert_eq!(&bytes[128..], &data);
    let params = ConnectionParams {
        rx_pda: 31,
        ..Default::default()
    };
    assert_eq!(
        decode_ok(&established(Role::Controller, params), &bytes).data(),
        Ok(&data[..])
    );
    // A receiver that asked for 8-byte alignment (PDA 1) rejects PDO 76.
    let tight = encode(&cmd, &TX_DIGESTS, &data);
    let eight = ConnectionParams {
        rx_pda: 1,
        ..DIGESTS
    };
    assert_eq!(
        decode_err(&established(Role::Controller, eight), &tight),
        PduError::InvalidHeaderField {
            offset: 3,
            field: "PDO"
        }
    );
}

#[test]
fn capsule_resp_bytes() {
    let mut cqe = CompletionQueueEntry::new(2, Status::SUCCESS);
    cqe.dw0 = 1;
    cqe.sqhd = 1;
    let resp = PduHeader::CapsuleResp(CapsuleResp { cqe });
    let cqe_bytes = [1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0];

    let plain = encode(&resp, &TxParams::PLAIN, &[]);
    let mut expected = vec![0x05, 0x00, 0x18, 0x00, 0x18, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&cqe_bytes);
    assert_eq!(plain, expected);

    let digested = encode(&resp, &TX_DIGESTS, &[]);
    let mut expected = vec![0x05, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&cqe_bytes);
    expected.extend_from_slice(&le32(0x8D54_41C3));
    assert_eq!(digested, expected);
    assert_eq!(
        decode_ok(&established(Role::Host, DIGESTS), &digested).header(),
        &resp
    );
}

#[test]
fn c2h_data_bytes() {
    let c2h = PduHeader::C2hData(DataPdu {
        cccid: 5,
        ttag: 0,
        datao: 0,
        datal: 4,
        last: true,
        success: false,
    });
    let data = [0xDE, 0xAD, 0xBE, 0xEF];

    // nvmet's shape without digests: LAST_PDU, HLEN 24, PDO 24.
    let plain = encode(&c2h, &TxParams::PLAIN, &data);
    let mut expected = vec![0x07, 0x04, 0x18, 0x18, 0x1C, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&data);
    assert_eq!(plain, expected);

    let digested = encode(&c2h, &TX_DIGESTS, &data);
    let mut expected = vec![0x07, 0x07, 0x18, 0x1C, 0x24, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&le32(0x6953_B83F));
    expected.extend_from_slice(&data);
    expected.extend_from_slice(&le32(0xF1DC_778E));
    assert_eq!(digested, expected);
    let pdu = decode_ok(&established(Role::Host, DIGESTS), &digested);
    assert_eq!(pdu.header(), &c2h);
    assert_eq!(pdu.data(), Ok(&data[..]));
}

#[test]
fn r2t_bytes() {
    let r2t = PduHeader::R2t(R2t {
        cccid: 3,
        ttag: 0x10,
        r2to: 0,
        r2tl: 65536,
    });
    let bytes = encode(&r2t, &TX_DIGESTS, &[]);
    let mut expected = vec![0x09, 0x01, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[3, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
    expected.extend_from_slice(&le32(0x0527_BEBB));
    assert_eq!(bytes, expected);
    assert_eq!(
        decode_ok(&established(Role::Host, DIGESTS), &bytes).header(),
        &r2t
    );
}

#[test]
fn term_req_bytes() {
    // A controller rejecting a PDU whose PDO (byte 3) was bad, echoing the
    // first 8 bytes it got; termination requests never carry digests.
    let offending = [0x04, 0x00, 0x48, 0x07, 0x50, 0x00, 0x00, 0x00];
    let term = PduHeader::C2hTermReq(TermReq {
        fes: FatalErrorStatus::InvalidHeaderField,
        fei: 3,
    });
    let bytes = encode(&term, &TX_DIGESTS, &offending);
    let mut expected = vec![0x03, 0x00, 0x18, 0x00, 0x20, 0x00, 0x00, 0x00];
    expected.extend_from_slice(&[0x01, 0x00, 0x03, 0x00, 0x00, 0x00]);
    expected.extend_from_slice(&[0; 10]);
    expected.extend_from_slice(&offending);
    assert_eq!(bytes, expected);
    // Accepted before and after connection initialization.
    for decoder in [fresh(Role::Host), established(Role::Host, DIGESTS)] {
        let pdu = decode_ok(&decoder, &bytes);
        assert_eq!(pdu.header(), &term);
        assert_eq!(pdu.data(), Ok(&offending[..]));
    }
}

#[test]
fn encode_header_leaves_data_to_the_caller() {
    let c2h = PduHeader::C2hData(DataPdu {
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 4096,
        last: true,
        success: true,
    });
    let data = vec![0x5Au8; 4096];
    let mut prefix = [0u8; 28];
    let layout = c2h
        .encode_header(&TX_DIGESTS, data.len(), &mut prefix)
        .unwrap();
    assert_eq!(layout.data_offset, 28);
    assert_eq!(layout.pdu_len, 28 + 4096 + 4);
    let mut whole = prefix.to_vec();
    whole.extend_from_slice(&data);
    whole.extend_from_slice(&digest_bytes(&data));
    assert_eq!(whole, encode(&c2h, &TX_DIGESTS, &data));
}

#[test]
fn encoder_rejects_inconsistent_requests() {
    let mut out = [0u8; 256];
    let r2t = PduHeader::R2t(R2t {
        cccid: 0,
        ttag: 0,
        r2to: 0,
        r2tl: 1,
    });
    assert_eq!(
        r2t.encode(&TxParams::PLAIN, &[1], &mut out),
        Err(EncodeError::UnexpectedData)
    );
    let data = DataPdu {
        cccid: 0,
        ttag: 0,
        datao: 0,
        datal: 2,
        last: false,
        success: false,
    };
    assert!(matches!(
        PduHeader::H2cData(data).encode(&TxParams::PLAIN, &[1], &mut out),
        Err(EncodeError::DataLengthMismatch { .. })
    ));
    let success_without_last = DataPdu {
        success: true,
        ..data
    };
    assert_eq!(
        PduHeader::C2hData(success_without_last).encode(&TxParams::PLAIN, &[1, 2], &mut out),
        Err(EncodeError::InvalidDataFlags)
    );
    let h2c_success = DataPdu {
        success: true,
        last: true,
        ..data
    };
    assert_eq!(
        PduHeader::H2cData(h2c_success).encode(&TxParams::PLAIN, &[1, 2], &mut out),
        Err(EncodeError::InvalidDataFlags)
    );
    let term = PduHeader::H2cTermReq(TermReq {
        fes: FatalErrorStatus::PduSequenceError,
        fei: 0,
    });
    assert_eq!(
        term.encode(&TxParams::PLAIN, &[0; 129], &mut [0u8; 512]),
        Err(EncodeError::TermReqDataTooLong { len: 129 })
    );
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    assert_eq!(
        cmd.encode(&TxParams::PLAIN, &[0; 8], &mut [0u8; 79]),
        Err(EncodeError::BufferTooSmall {
            needed: 80,
            available: 79
        })
    );
    let bad_alignment = TxParams {
        pda: 32,
        ..TxParams::PLAIN
    };
    assert_eq!(
        cmd.encode(&bad_alignment, &[], &mut out),
        Err(EncodeError::InvalidAlignment(32))
    );
}

// ---------------------------------------------------------------- decoding

#[test]
fn streaming_needs_exactly_the_missing_bytes() {
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let data = [7u8; 8];
    let bytes = encode(&cmd, &TX_DIGESTS, &data);
    let decoder = established(Role::Controller, DIGESTS);
    for len in 0..bytes.len() {
        let expected = if len < 8 {
            8 - len
        } else if len < 76 {
            76 - len
        } else {
            bytes.len() - len
        };
        assert_eq!(
            decoder.decode(&bytes[..len]),
            Ok(Decoded::NeedMore(expected)),
            "{len}"
        );
        if len >= 76 {
            // The header alone is enough for decode_header.
            let header = decoder.decode_header(&bytes[..len]).unwrap();
            assert!(
                matches!(header, Decoded::Ready(ReceivedHeader { header, .. }) if header == cmd)
            );
        }
    }
    assert_eq!(decode_ok(&decoder, &bytes).data(), Ok(&data[..]));
}

#[test]
fn back_to_back_pdus_in_one_buffer() {
    let decoder = established(Role::Host, DIGESTS);
    let mut stream = Vec::new();
    let r2t = PduHeader::R2t(R2t {
        cccid: 1,
        ttag: 2,
        r2to: 0,
        r2tl: 8192,
    });
    let resp = PduHeader::CapsuleResp(CapsuleResp {
        cqe: CompletionQueueEntry::new(1, Status::SUCCESS),
    });
    stream.extend_from_slice(&encode(&r2t, &TX_DIGESTS, &[]));
    stream.extend_from_slice(&encode(&resp, &TX_DIGESTS, &[]));
    let mut rest = &stream[..];
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let pdu = decode_ok(&decoder, rest);
        seen.push(*pdu.header());
        rest = &rest[pdu.wire_len()..];
    }
    assert_eq!(seen, vec![r2t, resp]);
}

#[test]
fn type_errors() {
    let controller = established(Role::Controller, ConnectionParams::default());
    let mut resp = encode(
        &PduHeader::CapsuleResp(CapsuleResp {
            cqe: CompletionQueueEntry::new(1, Status::SUCCESS),
        }),
        &TxParams::PLAIN,
        &[],
    );
    // A controller never receives a CapsuleResp.
    assert_eq!(
        decode_err(&controller, &resp),
        PduError::InvalidHeaderField {
            offset: 0,
            field: "PDU-Type"
        }
    );
    // Type 08h does not exist.
    resp[0] = 0x08;
    assert_eq!(
        decode_err(&established(Role::Host, ConnectionParams::default()), &resp)
            .fatal_error()
            .map(|f| f.info),
        Some(0)
    );
}

#[test]
fn sequence_errors() {
    let cmd = encode(
        &PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() }),
        &TxParams::PLAIN,
        &[],
    );
    let error = decode_err(&fresh(Role::Controller), &cmd);
    assert!(matches!(error, PduError::SequenceError(_)));
    assert_eq!(
        error.fatal_error().map(|f| f.status),
        Some(FatalErrorStatus::PduSequenceError)
    );
    let icreq = encode(
        &PduHeader::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digest: DigestOptions::default(),
            maxr2t: 0,
        }),
        &TxParams::PLAIN,
        &[],
    );
    assert!(matches!(
        decode_err(
            &established(Role::Controller, ConnectionParams::default()),
            &icreq
        ),
        PduError::SequenceError(_)
    ));
}

#[test]
fn flag_errors() {
    let resp = PduHeader::CapsuleResp(CapsuleResp {
        cqe: CompletionQueueEntry::new(1, Status::SUCCESS),
    });
    let flags_error = PduError::InvalidHeaderField {
        offset: 1,
        field: "FLAGS",
    };
    // Header digest missing although negotiated.
    let plain = encode(&resp, &TxParams::PLAIN, &[]);
    assert_eq!(
        decode_err(&established(Role::Host, DIGESTS), &plain),
        flags_error
    );
    // Header digest present although not negotiated.
    let digested = encode(&resp, &TX_DIGESTS, &[]);
    assert_eq!(
        decode_err(
            &established(Role::Host, ConnectionParams::default()),
            &digested
        ),
        flags_error
    );
    // A flag CapsuleResp does not have (LAST_PDU).
    let mut bad = plain.clone();
    bad[1] = flags::DATA_LAST;
    assert_eq!(
        decode_err(&established(Role::Host, ConnectionParams::default()), &bad),
        flags_error
    );
    // SUCCESS without LAST_PDU.
    let c2h = PduHeader::C2hData(DataPdu {
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 4,
        last: true,
        success: true,
    });
    let mut bytes = encode(&c2h, &TxParams::PLAIN, &[1, 2, 3, 4]);
    bytes[1] = flags::DATA_SUCCESS;
    assert_eq!(
        decode_err(
            &established(Role::Host, ConnectionParams::default()),
            &bytes
        ),
        flags_error
    );
    // DDGSTF on a capsule without data.
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let mut bytes = encode(&cmd, &TX_DIGESTS, &[]);
    bytes[1] |= flags::DDGST;
    // Re-digest so the only error is the flag.
    let digest = crc32c(&bytes[..72]).to_le_bytes();
    bytes[72..76].copy_from_slice(&digest);
    assert_eq!(
        decode_err(&established(Role::Controller, DIGESTS), &bytes),
        flags_error
    );
    // Data digest missing on a capsule with data.
    let no_ddgst = TxParams {
        data_digest: false,
        ..TX_DIGESTS
    };
    let bytes = encode(&cmd, &no_ddgst, &[1; 8]);
    assert_eq!(
        decode_err(&established(Role::Controller, DIGESTS), &bytes),
        flags_error
    );
}

#[test]
fn hlen_pdo_plen_errors() {
    let decoder = established(Role::Controller, ConnectionParams::default());
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let good = encode(&cmd, &TxParams::PLAIN, &[1; 8]);

    let mut bytes = good.clone();
    bytes[2] = 71;
    assert_eq!(
        decode_err(&decoder, &bytes),
        PduError::InvalidHeaderField {
            offset: 2,
            field: "HLEN"
        }
    );
    let pdo_error = PduError::InvalidHeaderField {
        offset: 3,
        field: "PDO",
    };
    for pdo in [0u8, 68, 74, 80, 200] {
        let mut bytes = good.clone();
        bytes[3] = pdo;
        assert_eq!(decode_err(&decoder, &bytes), pdo_error, "PDO {pdo}");
    }
    let plen_error = PduError::InvalidHeaderField {
        offset: 4,
        field: "PLEN",
    };
    let mut bytes = good.clone();
    bytes[4..8].copy_from_slice(&le32(71));
    assert_eq!(decode_err(&decoder, &bytes), plen_error);

    // Data on a PDU type that carries none.
    let host = established(Role::Host, ConnectionParams::default());
    let mut resp = encode(
        &PduHeader::CapsuleResp(CapsuleResp {
            cqe: CompletionQueueEntry::new(1, Status::SUCCESS),
        }),
        &TxParams::PLAIN,
        &[],
    );
    resp[4..8].copy_from_slice(&le32(28));
    resp.extend_from_slice(&[0; 4]);
    assert_eq!(decode_err(&host, &resp), plen_error);

    // An ICReq must be exactly 128 bytes.
    let mut icreq = encode(
        &PduHeader::IcReq(IcReq {
            pfv: 0,
            hpda: 0,
            digest: DigestOptions::default(),
            maxr2t: 0,
        }),
        &TxParams::PLAIN,
        &[],
    );
    icreq[4..8].copy_from_slice(&le32(132));
    assert_eq!(decode_err(&fresh(Role::Controller), &icreq), plen_error);
    // ...and data digests leave no data.
    let mut bytes = encode(&cmd, &TX_DIGESTS, &[1; 8]);
    bytes[4..8].copy_from_slice(&le32(80));
    let digest = crc32c(&bytes[..72]).to_le_bytes();
    bytes[72..76].copy_from_slice(&digest);
    assert_eq!(
        decode_err(&established(Role::Controller, DIGESTS), &bytes),
        plen_error
    );
}

#[test]
fn limits_bound_every_data_pdu() {
    let decoder = established(Role::Controller, ConnectionParams::default());
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    // A capsule announcing 16 KiB + 1 of in-capsule data: rejected from the
    // first 72 bytes, without waiting for the data.
    let mut header = [0u8; 72];
    cmd.encode_header(&TxParams::PLAIN, 16385, &mut header)
        .unwrap();
    assert_eq!(
        decoder.decode(&header),
        Err(PduError::DataLimitExceeded {
            length: 16385,
            limit: 16384
        })
    );
    // A 4 GiB H2CData.
    let h2c = PduHeader::H2cData(DataPdu {
        cccid: 1,
        ttag: 1,
        datao: 0,
        datal: u32::MAX - 24,
        last: true,
        success: false,
    });
    let mut header = [0u8; 24];
    h2c.encode_header(&TxParams::PLAIN, (u32::MAX - 24) as usize, &mut header)
        .unwrap();
    let error = decoder.decode_header(&header).unwrap_err();
    assert_eq!(
        error.fatal_error().map(|f| f.status),
        Some(FatalErrorStatus::DataTransferLimitExceeded)
    );
    // Exactly at the limit is fine.
    let mut header = [0u8; 72];
    cmd.encode_header(&TxParams::PLAIN, 16384, &mut header)
        .unwrap();
    assert_eq!(decoder.decode(&header), Ok(Decoded::NeedMore(16384)));
}

#[test]
fn header_digest_error() {
    let decoder = established(Role::Host, DIGESTS);
    let mut bytes = encode(
        &PduHeader::R2t(R2t {
            cccid: 3,
            ttag: 0x10,
            r2to: 0,
            r2tl: 65536,
        }),
        &TX_DIGESTS,
        &[],
    );
    bytes[12] ^= 1; // corrupt R2TO
    let error = decode_err(&decoder, &bytes);
    assert!(matches!(error, PduError::HeaderDigest { .. }));
    assert_eq!(
        error.fatal_error().map(|f| (f.status, f.info)),
        Some((FatalErrorStatus::HeaderDigestError, 0))
    );
}

#[test]
fn data_digest_error_keeps_the_header() {
    let decoder = established(Role::Controller, DIGESTS);
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let mut bytes = encode(&cmd, &TX_DIGESTS, &[1; 8]);
    bytes[80] ^= 0xFF; // corrupt the data
    let pdu = decode_ok(&decoder, &bytes);
    assert_eq!(pdu.header(), &cmd, "the command can still be failed");
    assert_eq!(pdu.wire_len(), bytes.len(), "and the stream goes on");
    let error = pdu.data().unwrap_err();
    assert!(matches!(error, PduError::DataDigest { .. }));
    assert_eq!(error.fatal_error(), None);
    // Pieces through DataDigest give the same verdict.
    let mut digest = DataDigest::new();
    digest.update(&bytes[76..80]);
    digest.update(&bytes[80..84]);
    assert_ne!(digest.to_bytes(), bytes[84..88]);
    let received: [u8; 4] = bytes[84..88].try_into().unwrap();
    assert!(check_data_digest(&bytes[76..84], received).is_err());
}

#[test]
fn initialize_connection_parameter_errors() {
    let decoder = fresh(Role::Controller);
    let icreq = IcReq {
        pfv: 0,
        hpda: 0,
        digest: DigestOptions::default(),
        maxr2t: 0,
    };
    let bad_pfv = encode(
        &PduHeader::IcReq(IcReq { pfv: 1, ..icreq }),
        &TxParams::PLAIN,
        &[],
    );
    assert_eq!(
        decode_err(&decoder, &bad_pfv),
        PduError::UnsupportedParameter {
            offset: 8,
            field: "PFV"
        }
    );
    let bad_hpda = encode(
        &PduHeader::IcReq(IcReq { hpda: 32, ..icreq }),
        &TxParams::PLAIN,
        &[],
    );
    assert_eq!(
        decode_err(&decoder, &bad_hpda)
            .fatal_error()
            .map(|f| (f.status, f.info)),
        Some((FatalErrorStatus::UnsupportedParameter, 10))
    );
    let host = fresh(Role::Host);
    let icresp = IcResp {
        pfv: 0,
        cpda: 0,
        digest: DigestOptions::default(),
        maxh2cdata: 4096,
    };
    for maxh2cdata in [0, 4095, 4098, 8190] {
        let bytes = encode(
            &PduHeader::IcResp(IcResp {
                maxh2cdata,
                ..icresp
            }),
            &TxParams::PLAIN,
            &[],
        );
        assert_eq!(
            decode_err(&host, &bytes),
            PduError::UnsupportedParameter {
                offset: 12,
                field: "MAXH2CDATA"
            }
        );
    }
    let mut with_flags = encode(&PduHeader::IcResp(icresp), &TxParams::PLAIN, &[]);
    with_flags[1] = flags::HDGST;
    assert_eq!(
        decode_err(&host, &with_flags),
        PduError::InvalidHeaderField {
            offset: 1,
            field: "FLAGS"
        }
    );
    let mut decoder = fresh(Role::Controller);
    assert!(decoder
        .establish(ConnectionParams {
            rx_pda: 32,
            ..Default::default()
        })
        .is_err());
    assert_eq!(decoder.params(), None);
}

#[test]
fn data_header_field_errors() {
    let host = established(Role::Host, ConnectionParams::default());
    let c2h = DataPdu {
        cccid: 1,
        ttag: 0,
        datao: 0,
        datal: 4,
        last: true,
        success: false,
    };
    let mut bytes = encode(&PduHeader::C2hData(c2h), &TxParams::PLAIN, &[1, 2, 3, 4]);
    bytes[16] = 3; // DATAL 3 but 4 bytes of data
    assert_eq!(
        decode_err(&host, &bytes),
        PduError::InvalidHeaderField {
            offset: 16,
            field: "DATAL"
        }
    );
    // DATAO + DATAL beyond 4 GiB.
    let mut bytes = encode(&PduHeader::C2hData(c2h), &TxParams::PLAIN, &[1, 2, 3, 4]);
    bytes[12..16].copy_from_slice(&le32(u32::MAX - 1));
    assert_eq!(
        decode_err(&host, &bytes).fatal_error().map(|f| f.status),
        Some(FatalErrorStatus::DataTransferOutOfRange)
    );
    // A data PDU without data.
    let mut empty = bytes[..24].to_vec();
    empty[3] = 0;
    empty[4..8].copy_from_slice(&le32(24));
    empty[16..20].copy_from_slice(&le32(0));
    assert_eq!(
        decode_err(&host, &empty),
        PduError::InvalidHeaderField {
            offset: 16,
            field: "DATAL"
        }
    );
    // R2T for zero bytes.
    let mut r2t = encode(
        &PduHeader::R2t(R2t {
            cccid: 1,
            ttag: 1,
            r2to: 0,
            r2tl: 1,
        }),
        &TxParams::PLAIN,
        &[],
    );
    r2t[16] = 0;
    assert_eq!(
        decode_err(&host, &r2t),
        PduError::InvalidHeaderField {
            offset: 16,
            field: "R2TL"
        }
    );
}

#[test]
fn malformed_term_reqs_are_not_answered() {
    let decoder = established(Role::Controller, DIGESTS);
    let term = PduHeader::H2cTermReq(TermReq {
        fes: FatalErrorStatus::HeaderDigestError,
        fei: 0,
    });
    let good = encode(&term, &TxParams::PLAIN, &[0; 128]);
    assert_eq!(decode_ok(&decoder, &good).wire_len(), 152);
    for (byte, value) in [(1usize, 0x01u8), (2, 25), (4, 153), (4, 23)] {
        let mut bytes = good.clone();
        bytes[byte] = value;
        let error = decode_err(&decoder, &bytes);
        assert!(
            matches!(error, PduError::MalformedTermReq(_)),
            "byte {byte}"
        );
        assert_eq!(decoder.termination_for(&error, &bytes), None);
    }
}

#[test]
fn termination_for_echoes_the_offending_header() {
    let controller = established(Role::Controller, ConnectionParams::default());
    let cmd = PduHeader::CapsuleCmd(CapsuleCmd { sqe: write_sqe() });
    let mut bytes = encode(&cmd, &TxParams::PLAIN, &[1; 8]);
    bytes[3] = 73;
    let error = decode_err(&controller, &bytes);
    let (header, error_data) = controller.termination_for(&error, &bytes).unwrap();
    assert_eq!(
        header,
        PduHeader::C2hTermReq(TermReq {
            fes: FatalErrorStatus::InvalidHeaderField,
            fei: 3
        })
    );
    assert_eq!(error_data, &bytes[..72], "HLEN bytes of the bad PDU");
    let mut out = [0u8; 152];
    let len = header
        .encode(&TxParams::PLAIN, error_data, &mut out)
        .unwrap();
    assert_eq!(len, 96);
    // The host side answers with H2CTermReq and never copies more than 128.
    let host = established(Role::Host, ConnectionParams::default());
    let garbage = [0xFFu8; 300];
    let error = decode_err(&host, &garbage);
    let (header, error_data) = host.termination_for(&error, &garbage).unwrap();
    assert_eq!(header.pdu_type(), PduType::H2cTermReq);
    assert_eq!(error_data.len(), 128);
    // A 3-byte fragment is echoed as is.
    assert_eq!(
        host.termination_for(&error, &garbage[..3]).unwrap().1.len(),
        3
    );
    // Data digest errors do not terminate.
    let digest = PduError::DataDigest {
        computed: 0,
        received: 1,
    };
    assert_eq!(host.termination_for(&digest, &garbage), None);
}
