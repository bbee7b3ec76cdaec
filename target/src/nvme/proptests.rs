//! Property tests: every NVMe structure round-trips, and parsers of
//! network input accept any bytes without panicking.

use proptest::prelude::*;

use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::discovery::{
    AddressFamily, DiscoveryLogEntry, SubsystemType, TcpSecurityType, TransportType,
};
use crate::nvme::fabrics::{ConnectData, FabricsCommand, CONNECT_DATA_LEN};
use crate::nvme::identify::{flbas, IdentifyController, IdentifyNamespace, LbaFormat};
use crate::nvme::nqn::{parse_nqn_field, write_nqn_field, NQN_FIELD_LEN};
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::SubmissionQueueEntry;

fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    proptest::collection::vec(any::<u8>(), N).prop_map(|v| {
        let mut out = [0u8; N];
        out.copy_from_slice(&v);
        out
    })
}

fn nqn() -> impl Strategy<Value = String> {
    prop_oneof![
        "nqn\\.20[0-9]{2}-(0[1-9]|1[0-2])\\.[a-z0-9][a-z0-9.:-]{0,150}",
        "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
            .prop_map(|uuid| format!("nqn.2014-08.org.nvmexpress:uuid:{uuid}")),
    ]
}

fn sgl() -> impl Strategy<Value = SglDescriptor> {
    prop_oneof![
        (any::<u64>(), any::<u32>())
            .prop_map(|(address, length)| SglDescriptor::DataBlock { address, length }),
        (any::<u64>(), any::<u32>())
            .prop_map(|(offset, length)| SglDescriptor::InCapsule { offset, length }),
        any::<u32>().prop_map(|length| SglDescriptor::BitBucket { length }),
        (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(|(address, length, last)| {
            SglDescriptor::Segment {
                address,
                length,
                last,
            }
        }),
        (
            any::<u64>(),
            0..=0x00FF_FFFFu32,
            any::<u32>(),
            any::<bool>()
        )
            .prop_map(
                |(address, length, key, invalidate)| SglDescriptor::KeyedDataBlock {
                    address,
                    length,
                    key,
                    invalidate,
                }
            ),
        any::<u32>().prop_map(|length| SglDescriptor::TransportDataBlock { length }),
    ]
}

proptest! {
    #[test]
    fn sqe_bytes_round_trip(raw in bytes::<64>()) {
        prop_assert_eq!(SubmissionQueueEntry::decode(&raw).encode(), raw);
    }

    #[test]
    fn cqe_bytes_round_trip(raw in bytes::<16>()) {
        prop_assert_eq!(CompletionQueueEntry::decode(&raw).encode(), raw);
    }

    #[test]
    fn typed_sgl_round_trips(sgl in sgl()) {
        prop_assert_eq!(SglDescriptor::decode(&sgl.encode()), sgl);
    }

    #[test]
    fn any_sgl_bytes_decode_stably(raw in bytes::<16>()) {
        let once = SglDescriptor::decode(&raw);
        prop_assert_eq!(SglDescriptor::decode(&once.encode()), once);
    }

    #[test]
    fn fabrics_commands_round_trip(raw in bytes::<64>()) {
        let sqe = SubmissionQueueEntry::decode(&raw);
        if let Some(command) = FabricsCommand::from_sqe(&sqe) {
            prop_assert_eq!(FabricsCommand::from_sqe(&command.to_sqe(sqe.cid)), Some(command));
        }
    }

    #[test]
    fn nqn_fields_never_panic(raw in bytes::<256>(), cut in 0..NQN_FIELD_LEN) {
        let mut field = raw;
        field[cut] = 0;
        if let Ok(nqn) = parse_nqn_field(&field) {
            let mut again = [0u8; NQN_FIELD_LEN];
            write_nqn_field(nqn, &mut again).unwrap();
            prop_assert_eq!(parse_nqn_field(&again), Ok(nqn));
        }
    }

    #[test]
    fn connect_data_round_trips(host_id in bytes::<16>(), cntlid in any::<u16>(), subnqn in nqn(), hostnqn in nqn()) {
        let data = ConnectData { host_id, cntlid, subnqn: &subnqn, hostnqn: &hostnqn };
        let mut out = [0u8; CONNECT_DATA_LEN];
        data.write_into(&mut out).unwrap();
        prop_assert_eq!(ConnectData::parse(&out), Ok(data));
    }

    #[test]
    fn connect_data_parse_never_panics(raw in proptest::collection::vec(any::<u8>(), 1000..1030)) {
        let _ = ConnectData::parse(&raw);
    }

    #[test]
    fn identify_controller_round_trips(
        numbers in bytes::<64>(),
        serial in "[A-Za-z0-9]{0,20}",
        model in "[A-Za-z0-9 ]{0,39}[A-Za-z0-9]",
        firmware in "[A-Za-z0-9.]{0,8}",
        subnqn in nqn(),
    ) {
        let n = |i: usize| numbers[i];
        let n16 = |i: usize| u16::from_le_bytes([numbers[i], numbers[i + 1]]);
        let n32 = |i: usize| u32::from_le_bytes([numbers[i], numbers[i + 1], numbers[i + 2], numbers[i + 3]]);
        let identify = IdentifyController {
            vid: n16(0), ssvid: n16(2), serial_number: &serial, model_number: &model,
            firmware_revision: &firmware, rab: n(4), ieee_oui: [n(5), n(6), n(7)], cmic: n(8),
            mdts: n(9), cntlid: n16(10), ver: n32(12), rtd3r: n32(16), rtd3e: n32(20),
            oaes: n32(24), ctratt: n32(28), cntrltype: n(32), fguid: [n(33); 16],
            crdt: [n16(34), n16(36), n16(38)], oacs: n16(40), acl: n(42), aerl: n(43),
            frmw: n(44), lpa: n(45), elpe: n(46), npss: n(47), kas: n16(48), anatt: n(50),
            anacap: n(51), anagrpmax: n32(52), nanagrpid: n32(56), sqes: n(60), cqes: n(61),
            maxcmd: n16(62), nn: n32(0), oncs: n16(4), fuses: n16(6), fna: n(8), vwc: n(9),
            awun: n16(10), awupf: n16(12), acwu: n16(14), sgls: n32(16), mnan: n32(20),
            subnqn: &subnqn, ioccsz: n32(24), iorcsz: n32(28), icdoff: n16(32), fcatt: n(34),
            msdbd: n(35), ofcs: n16(36),
        };
        let mut out = Box::new([0u8; 4096]);
        identify.write_into(&mut out).unwrap();
        prop_assert_eq!(IdentifyController::parse(&out), Ok(identify));
    }

    #[test]
    fn identify_namespace_round_trips(
        sizes in (any::<u64>(), any::<u64>(), any::<u64>(), any::<u128>()),
        small in bytes::<32>(),
        formats in proptest::collection::vec((any::<u16>(), any::<u8>(), 0..4u8), 1..=64),
        pick in any::<prop::sample::Index>(),
        extended in any::<bool>(),
    ) {
        let s = |i: usize| small[i];
        let s16 = |i: usize| u16::from_le_bytes([small[i], small[i + 1]]);
        let index = pick.index(formats.len()) as u8;
        let identify = IdentifyNamespace {
            nsze: sizes.0, ncap: sizes.1, nuse: sizes.2, nvmcap: sizes.3,
            nsfeat: s(0), flbas: flbas::for_index(index, extended), mc: s(1), dpc: s(2),
            dps: s(3), nmic: s(4), rescap: s(5), fpi: s(6), dlfeat: s(7), nawun: s16(8),
            nawupf: s16(10), nacwu: s16(12), nabsn: s16(14), nabo: s16(16), nabspf: s16(18),
            noiob: s16(20), npwg: s16(22), npwa: s16(24), npdg: s16(26), npda: s16(28),
            nows: s16(30), mssrl: s16(0), mcl: u32::from(s16(2)), msrc: s(4),
            anagrpid: u32::from(s16(6)), nsattr: s(8), nvmsetid: s16(9), endgid: s16(11),
            nguid: [s(13); 16], eui64: [s(14); 8],
            lba_formats: formats.iter().map(|&(ms, lbads, rp)| LbaFormat { ms, lbads, rp }).collect(),
        };
        let mut out = Box::new([0u8; 4096]);
        identify.write_into(&mut out).unwrap();
        prop_assert_eq!(IdentifyNamespace::parse(&out), identify);
    }

    #[test]
    fn identify_parsers_never_panic(raw in proptest::collection::vec(any::<u8>(), 4096)) {
        let page: &[u8; 4096] = raw.as_slice().try_into().unwrap();
        let _ = IdentifyController::parse(page);
        let _ = IdentifyNamespace::parse(page);
        let _ = crate::nvme::identify::NamespaceIdDescriptors::parse(page);
        let _ = crate::nvme::identify::read_namespace_list(page).count();
    }

    #[test]
    fn discovery_entry_round_trips(
        codes in bytes::<16>(),
        trsvcid in "[0-9]{1,5}",
        traddr in "[0-9a-f.:]{1,64}",
        subnqn in nqn(),
    ) {
        let c16 = |i: usize| u16::from_le_bytes([codes[i], codes[i + 1]]);
        let entry = DiscoveryLogEntry {
            trtype: TransportType::from_u8(codes[0]),
            adrfam: AddressFamily::from_u8(codes[1]),
            subtype: SubsystemType::from_u8(codes[2]),
            treq: codes[3],
            portid: c16(4), cntlid: c16(6), asqsz: c16(8), eflags: c16(10),
            trsvcid: &trsvcid, subnqn: &subnqn, traddr: &traddr,
            // TSAS is only written for TCP entries.
            tcp_security: if codes[0] == 3 { TcpSecurityType::from_u8(codes[12]) } else { TcpSecurityType::None },
        };
        let mut out = Box::new([0u8; 1024]);
        entry.write_into(&mut out).unwrap();
        prop_assert_eq!(DiscoveryLogEntry::parse(&out), Ok(entry));
    }
}
