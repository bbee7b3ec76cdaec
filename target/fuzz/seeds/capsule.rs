//! Writes the seed corpus of the `capsule` fuzz target: scripts in its
//! input format (see `fuzz_targets/capsule.rs`) that Connect, enable the
//! controller and run the commands the Linux host sends, so the fuzzer
//! starts from the admin and I/O command handlers rather than from the
//! refusal of everything before Connect.
//!
//!   cargo run --manifest-path target/fuzz/Cargo.toml --bin capsule_seeds -- target/fuzz/corpus/capsule

use std::path::PathBuf;

use keel_target::nvme::admin::{FeatureId, IdentifyCns, LogPageId};
use keel_target::nvme::command::{
    FeatureCommand, GetLogPageCommand, IdentifyCommand, ReadWriteCommand,
};
use keel_target::nvme::fabrics::{
    property, ConnectCommand, ConnectData, FabricsCommand, PropertyGetCommand, PropertySetCommand,
    PropertySize, CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use keel_target::nvme::nqn::DISCOVERY_NQN;
use keel_target::nvme::opcode::{AdminOpcode, IoOpcode};
use keel_target::nvme::sgl::SglDescriptor;
use keel_target::nvme::sqe::{Psdt, SubmissionQueueEntry};

const SUBNQN: &str = "nqn.2024-01.dev.keel:vol0";
const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";

/// Controller ID the first admin Connect gets (IDs start at 1).
const FIRST_CNTLID: u16 = 1;

struct Script {
    bytes: Vec<u8>,
    cid: u16,
}

impl Script {
    fn new(config: u8) -> Self {
        Self {
            bytes: vec![config],
            cid: 0x100,
        }
    }

    fn cid(&mut self) -> u16 {
        self.cid += 1;
        self.cid
    }

    fn submit(&mut self, session: u8, sqe: &SubmissionQueueEntry, data: &[u8]) -> &mut Self {
        self.bytes.push(session << 3);
        self.bytes.extend_from_slice(&sqe.encode());
        let len = u16::try_from(data.len()).expect("data fits a u16 length");
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(data);
        self
    }

    fn complete_io(&mut self, p: u8) -> &mut Self {
        self.bytes.push(p << 3 | 2);
        self
    }

    fn tick(&mut self, step_100ms: u8) -> &mut Self {
        self.bytes.extend_from_slice(&[3, step_100ms]);
        self
    }

    fn drain(&mut self) -> &mut Self {
        self.bytes.push(4);
        self
    }

    fn close(&mut self, session: u8) -> &mut Self {
        self.bytes.push(session << 3 | 5);
        self
    }

    fn configure(&mut self, p: u8) -> &mut Self {
        self.bytes.push(p << 3 | 6);
        self
    }

    fn teardown(&mut self, session: u8) -> &mut Self {
        self.bytes.push(session << 3 | 7);
        self
    }

    fn connect(&mut self, session: u8, qid: u16, cntlid: u16, subnqn: &str) -> &mut Self {
        let sqe = ConnectCommand {
            recfmt: 0,
            qid,
            sqsize: 31,
            cattr: 0,
            kato: if qid == 0 { 5000 } else { 0 },
        }
        .to_sqe(self.cid());
        let mut data = [0u8; CONNECT_DATA_LEN];
        ConnectData {
            host_id: [0x11; 16],
            cntlid,
            subnqn,
            hostnqn: HOSTNQN,
        }
        .write_into(&mut data)
        .expect("valid Connect data");
        self.submit(session, &sqe, &data)
    }

    fn fabrics(&mut self, session: u8, command: FabricsCommand) -> &mut Self {
        let sqe = command.to_sqe(self.cid());
        self.submit(session, &sqe, &[])
    }

    fn get_property(&mut self, offset: u32, size: PropertySize) -> &mut Self {
        self.fabrics(
            0,
            FabricsCommand::PropertyGet(PropertyGetCommand { size, offset }),
        )
    }

    fn set_cc(&mut self, value: u32) -> &mut Self {
        self.fabrics(
            0,
            FabricsCommand::PropertySet(PropertySetCommand {
                size: PropertySize::Four,
                offset: property::CC,
                value: u64::from(value),
            }),
        )
    }

    /// Admin Connect on session 0 and the kernel's enable sequence.
    fn connect_and_enable(&mut self, subnqn: &str) -> &mut Self {
        self.connect(0, 0, CNTLID_DYNAMIC, subnqn)
            .get_property(property::CAP, PropertySize::Eight)
            .set_cc(0x46_0060)
            .get_property(property::CC, PropertySize::Four)
            .set_cc(0x46_0061)
            .get_property(property::CSTS, PropertySize::Four)
    }

    fn admin(&mut self, opcode: AdminOpcode, nsid: u32, len: u32) -> SubmissionQueueEntry {
        let mut sqe = SubmissionQueueEntry {
            opcode: opcode.as_u8(),
            cid: self.cid(),
            nsid,
            ..Default::default()
        };
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        sqe.set_sgl1(SglDescriptor::TransportDataBlock { length: len });
        sqe
    }

    fn identify(&mut self, cns: IdentifyCns, nsid: u32) -> &mut Self {
        let mut sqe = self.admin(AdminOpcode::Identify, nsid, 4096);
        IdentifyCommand {
            cns,
            cntid: 0,
            cns_specific_id: 0,
            csi: 0,
        }
        .write_to(&mut sqe);
        self.submit(0, &sqe, &[])
    }

    fn log_page(&mut self, lid: LogPageId, nsid: u32, len: u32) -> &mut Self {
        let mut sqe = self.admin(AdminOpcode::GetLogPage, nsid, len);
        GetLogPageCommand {
            lid,
            lsp: 0,
            rae: false,
            numd: len / 4 - 1,
            lsi: 0,
            lpo: 0,
            csi: 0,
        }
        .write_to(&mut sqe);
        self.submit(0, &sqe, &[])
    }

    fn feature(&mut self, opcode: AdminOpcode, fid: FeatureId, value: u32) -> &mut Self {
        let mut sqe = self.admin(opcode, 0, 0);
        FeatureCommand {
            fid,
            save: false,
            select: 0,
            value,
        }
        .write_to(&mut sqe);
        self.submit(0, &sqe, &[])
    }

    fn aer(&mut self) -> &mut Self {
        let sqe = self.admin(AdminOpcode::AsyncEventRequest, 0, 0);
        self.submit(0, &sqe, &[])
    }

    fn keep_alive(&mut self) -> &mut Self {
        let sqe = self.admin(AdminOpcode::KeepAlive, 0, 0);
        self.submit(0, &sqe, &[])
    }

    /// An I/O command on `session`: `len` bytes in the capsule (writes)
    /// or by transport data block.
    fn io(
        &mut self,
        session: u8,
        opcode: IoOpcode,
        nsid: u32,
        slba: u64,
        nlb: u16,
        data: Option<&[u8]>,
        len: u32,
    ) -> &mut Self {
        let mut sqe = SubmissionQueueEntry {
            opcode: opcode.as_u8(),
            cid: self.cid(),
            nsid,
            ..Default::default()
        };
        ReadWriteCommand {
            slba,
            nlb,
            fua: false,
            limited_retry: false,
            deallocate: false,
        }
        .write_to(&mut sqe);
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        sqe.set_sgl1(match data {
            Some(data) => SglDescriptor::InCapsule {
                offset: 0,
                length: data.len() as u32,
            },
            None => SglDescriptor::TransportDataBlock { length: len },
        });
        self.submit(session, &sqe, data.unwrap_or(&[]))
    }

    fn dsm(&mut self, session: u8, ranges: &[(u32, u64)]) -> &mut Self {
        let mut sqe = SubmissionQueueEntry {
            opcode: IoOpcode::DatasetManagement.as_u8(),
            cid: self.cid(),
            nsid: 1,
            ..Default::default()
        };
        // NR (0's based) and the Deallocate attribute.
        sqe.cdw10 = (ranges.len() - 1) as u32;
        sqe.cdw11 = 1 << 2;
        let mut data = Vec::new();
        for &(blocks, slba) in ranges {
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&blocks.to_le_bytes());
            data.extend_from_slice(&slba.to_le_bytes());
        }
        sqe.set_psdt(Psdt::SglMetadataBuffer);
        sqe.set_sgl1(SglDescriptor::InCapsule {
            offset: 0,
            length: data.len() as u32,
        });
        self.submit(session, &sqe, &data)
    }
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/fuzz/corpus/capsule".into()),
    );
    std::fs::create_dir_all(&dir).expect("create corpus directory");
    let block = vec![0xC3u8; 4096];
    let mut seeds: Vec<(&str, Script)> = Vec::new();

    // The kernel's connect: admin queue, enable, identify, I/O queue, I/O.
    let mut s = Script::new(0);
    s.connect_and_enable(SUBNQN)
        .identify(IdentifyCns::Controller, 0)
        .identify(IdentifyCns::ActiveNamespaceList, 0)
        .identify(IdentifyCns::Namespace, 1)
        .identify(IdentifyCns::NamespaceIdDescriptors, 1)
        .feature(
            AdminOpcode::SetFeatures,
            FeatureId::NumberOfQueues,
            0x0001_0001,
        )
        .feature(
            AdminOpcode::SetFeatures,
            FeatureId::AsyncEventConfiguration,
            0x900,
        )
        .aer()
        .connect(1, 1, FIRST_CNTLID, SUBNQN)
        .connect(2, 2, FIRST_CNTLID, SUBNQN)
        .io(1, IoOpcode::Write, 1, 0, 0, Some(&block), 0)
        .io(1, IoOpcode::Read, 1, 0, 0, None, 4096)
        .io(2, IoOpcode::Write, 1, 8, 1, None, 8192)
        .complete_io(0)
        .complete_io(0)
        .complete_io(0)
        .keep_alive()
        .tick(10)
        .close(1)
        .close(0)
        .drain();
    seeds.push(("kernel_connect", s));

    // Discovery: connect to the discovery NQN, read the log page.
    let mut s = Script::new(0);
    s.connect(0, 0, CNTLID_DYNAMIC, DISCOVERY_NQN)
        .get_property(property::CAP, PropertySize::Eight)
        .set_cc(0x46_0001)
        .get_property(property::CSTS, PropertySize::Four)
        .identify(IdentifyCns::Controller, 0)
        .log_page(LogPageId::Discovery, 0, 1024)
        .aer()
        .configure(4)
        .drain()
        .configure(5)
        .close(0);
    seeds.push(("discovery", s));

    // Set up by the harness: admin commands.
    let mut s = Script::new(1);
    s.log_page(LogPageId::SmartHealth, 0xFFFF_FFFF, 512)
        .log_page(LogPageId::ErrorInformation, 0, 64)
        .log_page(LogPageId::ChangedNamespaceList, 0, 4096)
        .log_page(LogPageId::CommandsSupportedAndEffects, 0, 4096)
        .log_page(LogPageId::FirmwareSlot, 0, 512)
        .log_page(LogPageId::AsymmetricNamespaceAccess, 0, 4096)
        .feature(AdminOpcode::GetFeatures, FeatureId::KeepAliveTimer, 0)
        .feature(AdminOpcode::SetFeatures, FeatureId::KeepAliveTimer, 10000)
        .feature(AdminOpcode::GetFeatures, FeatureId::VolatileWriteCache, 0)
        .feature(AdminOpcode::GetFeatures, FeatureId::NumberOfQueues, 0)
        .feature(AdminOpcode::SetFeatures, FeatureId::Timestamp, 0)
        .identify(IdentifyCns::IoCommandSets, 0)
        .identify(IdentifyCns::IoCommandSetController, 0);
    seeds.push(("admin", s));

    // Set up by the harness: AERs answered by namespace events, resets.
    let mut s = Script::new(1);
    s.aer()
        .aer()
        .configure(0)
        .drain()
        .log_page(LogPageId::ChangedNamespaceList, 0, 4096)
        .configure(1)
        .configure(2)
        .configure(3)
        .drain()
        .aer()
        .set_cc(0x46_0060)
        .drain()
        .teardown(1)
        .configure(7);
    seeds.push(("events", s));

    // Set up by the harness: I/O commands.
    let mut s = Script::new(1);
    s.io(1, IoOpcode::Write, 1, 1, 0, Some(&block), 0)
        .io(1, IoOpcode::Read, 1, 0, 1, None, 8192)
        .io(2, IoOpcode::Compare, 1, 2, 0, Some(&block), 0)
        .io(2, IoOpcode::WriteZeroes, 1, 0, 15, None, 0)
        .io(1, IoOpcode::Flush, 0xFFFF_FFFF, 0, 0, None, 0)
        .io(2, IoOpcode::Read, 2, 100, 7, None, 4096)
        .dsm(1, &[(8, 0), (16, 64)])
        .complete_io(8)
        .complete_io(16)
        .complete_io(24)
        .complete_io(0)
        .fabrics(1, FabricsCommand::Disconnect)
        .tick(60)
        .drain();
    seeds.push(("io", s));

    // Tight limits, set up: exhaustion of controllers, AERs, queue depth.
    let mut s = Script::new(3);
    s.aer().aer().connect(3, 0, CNTLID_DYNAMIC, SUBNQN);
    for _ in 0..33 {
        s.io(1, IoOpcode::Read, 1, 0, 0, None, 4096);
    }
    s.complete_io(0)
        .connect(3, 3, FIRST_CNTLID, SUBNQN)
        .close(3)
        .teardown(0);
    seeds.push(("tight", s));

    for (name, script) in seeds {
        let path = dir.join(format!("seed_{name}"));
        std::fs::write(&path, &script.bytes).expect("write seed");
        println!("{} ({} bytes)", path.display(), script.bytes.len());
    }
}
