//! Every status the I/O front end can answer, and the commands it builds.

use super::*;
use crate::controller::subsystem::Namespace;
use crate::nvme::command::DsmRange;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::Psdt;
use crate::nvme::status::Status;

const BLOCKS: u64 = 1000;

fn subsystem() -> Subsystem {
    let mut subsystem = Subsystem::new("nqn.2024-01.dev.keel:io", "S", "M", "F").unwrap();
    let geometry = BlockGeometry::new(512, BLOCKS).unwrap();
    subsystem
        .add_namespace(1, Namespace::new(geometry, [1; 16], [2; 16]))
        .unwrap();
    let mut not_ready = Namespace::new(geometry, [3; 16], [4; 16]);
    not_ready.ready = false;
    subsystem.add_namespace(2, not_ready).unwrap();
    subsystem
}

fn limits() -> IoLimits {
    IoLimits {
        max_transfer_bytes: 128 * 1024,
        in_capsule_data_size: 8192,
    }
}

fn sqe(
    opcode: IoOpcode,
    nsid: u32,
    slba: u64,
    blocks: u32,
    sgl: SglDescriptor,
) -> SubmissionQueueEntry {
    let mut sqe = SubmissionQueueEntry {
        opcode: opcode.as_u8(),
        cid: 0x2005,
        nsid,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: blocks.wrapping_sub(1) & 0xFFFF,
        ..Default::default()
    };
    sqe.set_psdt(Psdt::SglMetadataBuffer);
    sqe.set_sgl1(sgl);
    sqe
}

fn transport(len: u32) -> SglDescriptor {
    SglDescriptor::TransportDataBlock { length: len }
}

fn in_capsule(len: u32) -> SglDescriptor {
    SglDescriptor::InCapsule {
        offset: 0,
        length: len,
    }
}

fn parse(sqe: &SubmissionQueueEntry, data: &[u8]) -> Result<IoCommand, IoError> {
    parse_io_command(sqe, data, &subsystem(), &limits())
}

fn status(sqe: &SubmissionQueueEntry, data: &[u8]) -> Status {
    parse(sqe, data).map_or_else(|error| error.status(), |_| Status::SUCCESS)
}

#[test]
fn read_write_compare_build_byte_ranges() {
    let read = parse(&sqe(IoOpcode::Read, 1, 10, 8, transport(4096)), &[]).unwrap();
    assert_eq!(read.cid, 0x2005);
    assert_eq!(
        read.operation,
        IoOperation::Read {
            range: ByteRange {
                offset: 5120,
                len: 4096
            },
            fua: false
        }
    );
    let data = [7u8; 4096];
    let mut write = sqe(IoOpcode::Write, 1, 0, 8, in_capsule(4096));
    write.cdw12 |= 1 << 30;
    assert_eq!(
        parse(&write, &data).unwrap().operation,
        IoOperation::Write {
            range: ByteRange {
                offset: 0,
                len: 4096
            },
            fua: true,
            data: DataSource::InCapsule {
                offset: 0,
                len: 4096
            },
        }
    );
    let big = sqe(IoOpcode::Write, 1, 0, 128, transport(65536));
    assert!(matches!(
        parse(&big, &[]).unwrap().operation,
        IoOperation::Write {
            data: DataSource::FromHost { len: 65536 },
            ..
        }
    ));
    let compare = sqe(IoOpcode::Compare, 1, BLOCKS - 1, 1, in_capsule(512));
    assert!(matches!(
        parse(&compare, &data).unwrap().operation,
        IoOperation::Compare { .. }
    ));
}

#[test]
fn lba_out_of_range() {
    for (slba, blocks) in [
        (BLOCKS, 1),
        (BLOCKS - 1, 2),
        (u64::MAX, 1),
        (u64::MAX - 2, 8),
    ] {
        let read = sqe(IoOpcode::Read, 1, slba, blocks, transport(blocks * 512));
        assert_eq!(
            status(&read, &[]),
            Status::LBA_OUT_OF_RANGE,
            "{slba}+{blocks}"
        );
        let zeroes = sqe(IoOpcode::WriteZeroes, 1, slba, blocks, transport(0));
        assert_eq!(status(&zeroes, &[]), Status::LBA_OUT_OF_RANGE);
    }
    let last = sqe(IoOpcode::Read, 1, BLOCKS - 1, 1, transport(512));
    assert_eq!(status(&last, &[]), Status::SUCCESS);
}

#[test]
fn invalid_opcodes() {
    for opcode in [0x04u8, 0x0C, 0x0D, 0x19, 0x7F, 0x80, 0xFF] {
        let mut command = sqe(IoOpcode::Read, 1, 0, 1, transport(512));
        command.opcode = opcode;
        assert_eq!(status(&command, &[]), Status::INVALID_OPCODE, "{opcode:#x}");
    }
}

#[test]
fn namespaces() {
    for nsid in [0, 3, 1024, u32::MAX] {
        let read = sqe(IoOpcode::Read, nsid, 0, 1, transport(512));
        assert_eq!(status(&read, &[]), Status::INVALID_NAMESPACE, "nsid {nsid}");
    }
    let read = sqe(IoOpcode::Read, 2, 0, 1, transport(512));
    let not_ready = status(&read, &[]);
    assert_eq!(not_ready, Status::ANA_INACCESSIBLE);
    assert!(!not_ready.dnr, "the host may retry on another path");
    // Flush: one namespace or all of them.
    let flush = sqe(IoOpcode::Flush, 1, 0, 1, transport(0));
    assert_eq!(parse(&flush, &[]).unwrap().operation, IoOperation::Flush);
    let all = sqe(IoOpcode::Flush, u32::MAX, 0, 1, transport(0));
    assert_eq!(parse(&all, &[]).unwrap().nsid, NSID_BROADCAST);
    let flush = sqe(IoOpcode::Flush, 2, 0, 1, transport(0));
    assert_eq!(status(&flush, &[]), Status::ANA_INACCESSIBLE);
    let flush = sqe(IoOpcode::Flush, 1, 0, 1, transport(512));
    assert_eq!(status(&flush, &[]), Status::DATA_SGL_LENGTH_INVALID);
}

#[test]
fn transfer_larger_than_mdts() {
    let read = sqe(IoOpcode::Read, 1, 0, 257, transport(257 * 512));
    assert_eq!(
        parse(&read, &[]),
        Err(IoError::TransferTooLarge {
            bytes: 257 * 512,
            max: 128 * 1024
        })
    );
    assert_eq!(status(&read, &[]), Status::INVALID_FIELD);
    let exact = sqe(IoOpcode::Read, 1, 0, 256, transport(256 * 512));
    assert_eq!(status(&exact, &[]), Status::SUCCESS);
    // Write Zeroes moves no data: MDTS does not apply.
    let zeroes = sqe(IoOpcode::WriteZeroes, 1, 0, 1000, transport(0));
    assert_eq!(status(&zeroes, &[]), Status::SUCCESS);
}

#[test]
fn unsupported_fields() {
    let base = sqe(IoOpcode::Read, 1, 0, 1, transport(512));
    let mut fused = base;
    fused.flags |= 0x1;
    let mut prp = base;
    prp.set_psdt(Psdt::Prp);
    let mut segment_psdt = base;
    segment_psdt.set_psdt(Psdt::SglMetadataSegment);
    let mut prinfo = base;
    prinfo.cdw12 |= 1 << 29;
    let mut stc = base;
    stc.cdw12 |= 1 << 24;
    let mut dtype = sqe(IoOpcode::Write, 1, 0, 1, transport(512));
    dtype.cdw12 |= 1 << 20;
    let mut dsm = sqe(IoOpcode::DatasetManagement, 1, 0, 1, transport(16));
    dsm.cdw10 = 0;
    dsm.cdw11 = 1 << 3;
    for command in [fused, prp, segment_psdt, prinfo, stc, dtype, dsm] {
        assert_eq!(status(&command, &[]), Status::INVALID_FIELD, "{command:?}");
    }
}

#[test]
fn data_pointer_checks() {
    let keyed = SglDescriptor::KeyedDataBlock {
        address: 0,
        length: 512,
        key: 1,
        invalidate: false,
    };
    let segment = SglDescriptor::Segment {
        address: 0,
        length: 16,
        last: true,
    };
    for sgl in [
        keyed,
        segment,
        SglDescriptor::DataBlock {
            address: 0,
            length: 512,
        },
    ] {
        let read = sqe(IoOpcode::Read, 1, 0, 1, sgl);
        assert_eq!(status(&read, &[]), Status::SGL_DESCRIPTOR_TYPE_INVALID);
        let write = sqe(IoOpcode::Write, 1, 0, 1, sgl);
        assert_eq!(
            status(&write, &[0; 512]),
            Status::SGL_DESCRIPTOR_TYPE_INVALID
        );
    }
    let mut raw = [0u8; 16];
    raw[15] = 0xE0;
    let unknown = sqe(IoOpcode::Read, 1, 0, 1, SglDescriptor::Unsupported(raw));
    assert_eq!(status(&unknown, &[]), Status::SGL_DESCRIPTOR_TYPE_INVALID);
    // Read data never travels in the capsule.
    let read = sqe(IoOpcode::Read, 1, 0, 1, in_capsule(512));
    assert_eq!(status(&read, &[0; 512]), Status::INVALID_FIELD);
    // Length must match NLB.
    let read = sqe(IoOpcode::Read, 1, 0, 2, transport(512));
    assert_eq!(status(&read, &[]), Status::DATA_SGL_LENGTH_INVALID);
    let write = sqe(IoOpcode::Write, 1, 0, 2, in_capsule(512));
    assert_eq!(status(&write, &[0; 1024]), Status::DATA_SGL_LENGTH_INVALID);
    // In-capsule data must be there and within the capsule limit.
    let write = sqe(IoOpcode::Write, 1, 0, 2, in_capsule(1024));
    assert_eq!(status(&write, &[0; 512]), Status::SGL_OFFSET_INVALID);
    let write = sqe(IoOpcode::Write, 1, 0, 32, in_capsule(16384));
    assert_eq!(status(&write, &[0; 16384]), Status::SGL_OFFSET_INVALID);
    let mut offset = sqe(IoOpcode::Write, 1, 0, 1, in_capsule(512));
    offset.set_sgl1(SglDescriptor::InCapsule {
        offset: 512,
        length: 512,
    });
    let command = parse(&offset, &[0; 1024]).unwrap();
    let IoOperation::Write { data, .. } = command.operation else {
        panic!("not a write");
    };
    assert_eq!(
        data,
        DataSource::InCapsule {
            offset: 512,
            len: 512
        }
    );
    assert_eq!(data.in_capsule(&[0; 1024]).map(<[u8]>::len), Some(512));
    // Write Zeroes must not describe data.
    let zeroes = sqe(IoOpcode::WriteZeroes, 1, 0, 1, transport(512));
    assert_eq!(status(&zeroes, &[]), Status::DATA_SGL_LENGTH_INVALID);
}

#[test]
fn write_zeroes_flags() {
    let mut zeroes = sqe(IoOpcode::WriteZeroes, 1, 8, 16, transport(0));
    zeroes.cdw12 |= (1 << 25) | (1 << 30);
    assert_eq!(
        parse(&zeroes, &[]).unwrap().operation,
        IoOperation::WriteZeroes {
            range: ByteRange {
                offset: 4096,
                len: 8192
            },
            deallocate: true,
            fua: true,
        }
    );
}

fn ranges(list: &[(u64, u32)]) -> Vec<u8> {
    let mut bytes = vec![0u8; list.len() * 16];
    for (chunk, &(slba, blocks)) in bytes.chunks_exact_mut(16).zip(list) {
        DsmRange {
            context_attributes: 0,
            blocks,
            slba,
        }
        .write_into(chunk.try_into().unwrap());
    }
    bytes
}

#[test]
fn dataset_management_in_capsule_and_transferred() {
    let list = ranges(&[(0, 8), (100, 0), (992, 8)]);
    let mut dsm = sqe(IoOpcode::DatasetManagement, 1, 0, 1, in_capsule(48));
    dsm.cdw10 = 2;
    dsm.cdw11 = 1 << 2;
    let command = parse(&dsm, &list).unwrap();
    let IoOperation::DatasetManagement(request) = command.operation else {
        panic!("not DSM");
    };
    assert!(request.deallocate);
    assert_eq!(request.range_count, 3);
    let in_capsule = request.data.in_capsule(&list).unwrap();
    assert_eq!(
        request.byte_ranges(in_capsule).unwrap(),
        vec![
            ByteRange {
                offset: 0,
                len: 4096
            },
            ByteRange {
                offset: 992 * 512,
                len: 4096
            }
        ]
    );

    // The same list after R2T.
    dsm.set_sgl1(transport(48));
    let IoOperation::DatasetManagement(request) = parse(&dsm, &[]).unwrap().operation else {
        panic!("not DSM");
    };
    assert_eq!(request.data, DataSource::FromHost { len: 48 });
    assert_eq!(request.byte_ranges(&list).unwrap().len(), 2);
    assert_eq!(
        request.byte_ranges(&list[..32]),
        Err(IoError::DataPointer(Status::DATA_SGL_LENGTH_INVALID))
    );
    let beyond = ranges(&[(0, 1), (999, 2), (u64::MAX, 1)]);
    assert_eq!(
        request.byte_ranges(&beyond).map_err(|e| e.status()),
        Err(Status::LBA_OUT_OF_RANGE)
    );

    // Wrong list length in the SGL.
    dsm.set_sgl1(transport(32));
    assert_eq!(status(&dsm, &[]), Status::DATA_SGL_LENGTH_INVALID);
}

/// The Linux host sends a discard's range list in a whole 4 KiB buffer
/// (room for 256 ranges) with NR = 0: seen from `blkdiscard` and mkfs.ext4
/// in the guest. Only NR + 1 ranges count; shorter than that, or longer
/// than 256 ranges, is still refused.
#[test]
fn dataset_management_accepts_the_linux_hosts_4k_range_buffer() {
    let mut list = ranges(&[(8, 16)]);
    list.resize(4096, 0xEE);
    let mut dsm = sqe(IoOpcode::DatasetManagement, 1, 0, 1, transport(4096));
    dsm.cdw10 = 0;
    dsm.cdw11 = 1 << 2;
    let IoOperation::DatasetManagement(request) = parse(&dsm, &[]).unwrap().operation else {
        panic!("not DSM");
    };
    assert_eq!(request.data, DataSource::FromHost { len: 4096 });
    assert_eq!(
        request.byte_ranges(&list).unwrap(),
        vec![ByteRange {
            offset: 8 * 512,
            len: 16 * 512
        }]
    );
    dsm.set_sgl1(transport(8));
    assert_eq!(
        parse(&dsm, &[]).map(|_| ()),
        Err(IoError::DataPointer(Status::DATA_SGL_LENGTH_INVALID))
    );
    dsm.set_sgl1(transport(4112));
    assert_eq!(
        parse(&dsm, &[]).map(|_| ()),
        Err(IoError::DataPointer(Status::DATA_SGL_LENGTH_INVALID))
    );
}
