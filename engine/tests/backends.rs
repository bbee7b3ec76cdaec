//! Block operations through a real engine shard, on both backends, checked
//! against an in-memory model of what the volume must contain.

use std::path::Path;
use std::sync::Arc;

use keel_engine::{BlockBackend, FileBackend, IoError, IoOp, MemoryBackend};
use proptest::prelude::*;

mod support;

use support::ShardVolume;

/// One shard serving the volume's backend.
struct Volume(ShardVolume);

impl Volume {
    fn start(backend: Arc<dyn BlockBackend>) -> Volume {
        Volume(ShardVolume::start(backend))
    }

    /// Runs `op` with `data` to write, or reading `read_len` bytes.
    fn run(&self, op: IoOp, data: Vec<u8>, read_len: usize) -> Result<Vec<u8>, IoError> {
        let data = if read_len > 0 {
            vec![0; read_len]
        } else {
            data
        };
        self.0.run(op, data)
    }
}

const BLOCK: u64 = 4096;
const BLOCKS: u64 = 64;

#[derive(Debug, Clone)]
enum ModelOp {
    Read {
        block: u64,
        count: u64,
    },
    Write {
        block: u64,
        count: u64,
        fill: u8,
        fua: bool,
    },
    Zero {
        block: u64,
        count: u64,
    },
    Discard {
        block: u64,
        count: u64,
    },
    Flush,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    let range = (0..BLOCKS).prop_flat_map(|b| (Just(b), 1..=(BLOCKS - b).min(16)));
    prop_oneof![
        4 => range.clone().prop_map(|(block, count)| ModelOp::Read { block, count }),
        4 => (range.clone(), any::<u8>(), any::<bool>())
            .prop_map(|((block, count), fill, fua)| ModelOp::Write { block, count, fill, fua }),
        1 => range.clone().prop_map(|(block, count)| ModelOp::Zero { block, count }),
        1 => range.prop_map(|(block, count)| ModelOp::Discard { block, count }),
        1 => Just(ModelOp::Flush),
    ]
}

/// A pattern that differs per block and per write, so a misplaced block shows.
fn pattern(block: u64, count: u64, fill: u8) -> Vec<u8> {
    let mut v = vec![0u8; (count * BLOCK) as usize];
    for (i, chunk) in v.chunks_mut(BLOCK as usize).enumerate() {
        for (j, byte) in chunk.iter_mut().enumerate() {
            *byte = fill ^ ((block + i as u64) as u8) ^ (j as u8);
        }
    }
    v
}

fn check_against_model(volume: &Volume, ops: &[ModelOp]) {
    let mut model = vec![0u8; (BLOCKS * BLOCK) as usize];
    for op in ops {
        match *op {
            ModelOp::Read { block, count } => {
                let got = volume
                    .run(
                        IoOp::Read {
                            offset: block * BLOCK,
                        },
                        Vec::new(),
                        (count * BLOCK) as usize,
                    )
                    .unwrap();
                let at = (block * BLOCK) as usize;
                assert!(
                    got == model[at..at + got.len()],
                    "read of {count} blocks at {block} differs from the model"
                );
            }
            ModelOp::Write {
                block,
                count,
                fill,
                fua,
            } => {
                let data = pattern(block, count, fill);
                let at = (block * BLOCK) as usize;
                model[at..at + data.len()].copy_from_slice(&data);
                volume
                    .run(
                        IoOp::Write {
                            offset: block * BLOCK,
                            fua,
                        },
                        data,
                        0,
                    )
                    .unwrap();
            }
            ModelOp::Zero { block, count } | ModelOp::Discard { block, count } => {
                let (offset, len) = (block * BLOCK, count * BLOCK);
                model[offset as usize..(offset + len) as usize].fill(0);
                let op = if matches!(op, ModelOp::Zero { .. }) {
                    IoOp::WriteZeroes { offset, len }
                } else {
                    IoOp::Discard { offset, len }
                };
                volume.run(op, Vec::new(), 0).unwrap();
            }
            ModelOp::Flush => {
                volume.run(IoOp::Flush, Vec::new(), 0).unwrap();
            }
        }
    }
    // Finally the whole volume must equal the model.
    let all = volume
        .run(
            IoOp::Read { offset: 0 },
            Vec::new(),
            (BLOCKS * BLOCK) as usize / 2,
        )
        .unwrap();
    assert!(all == model[..all.len()]);
    let rest = volume
        .run(
            IoOp::Read {
                offset: BLOCKS * BLOCK / 2,
            },
            Vec::new(),
            (BLOCKS * BLOCK) as usize / 2,
        )
        .unwrap();
    assert!(rest == model[all.len()..]);
}

fn file_backend(dir: &Path) -> Arc<dyn BlockBackend> {
    let opts = keel_engine::backend::OpenOptions {
        size: Some(BLOCKS * BLOCK),
        block_size: Some(BLOCK as u32),
    };
    Arc::new(FileBackend::open(&dir.join("vol"), &opts).unwrap())
}

fn tmpdir() -> tempfile::TempDir {
    // Not /tmp: it may be tmpfs, which refuses O_DIRECT.
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn memory_backend_matches_the_model(ops in prop::collection::vec(model_op(), 1..48)) {
        let volume = Volume::start(Arc::new(MemoryBackend::new(BLOCKS * BLOCK, BLOCK as u32).unwrap()));
        check_against_model(&volume, &ops);
    }

    #[test]
    fn file_backend_matches_the_model(ops in prop::collection::vec(model_op(), 1..48)) {
        let dir = tmpdir();
        let volume = Volume::start(file_backend(dir.path()));
        check_against_model(&volume, &ops);
    }
}

fn refuses_bad_requests(volume: &Volume) {
    let e = volume
        .run(IoOp::Read { offset: 100 }, Vec::new(), 4096)
        .unwrap_err();
    assert!(matches!(e, IoError::Misaligned { offset: 100, .. }), "{e}");
    let e = volume
        .run(
            IoOp::Write {
                offset: 0,
                fua: false,
            },
            vec![1; 1000],
            0,
        )
        .unwrap_err();
    assert!(matches!(e, IoError::Misaligned { len: 1000, .. }), "{e}");
    let e = volume
        .run(
            IoOp::Read {
                offset: BLOCKS * BLOCK,
            },
            Vec::new(),
            4096,
        )
        .unwrap_err();
    assert!(matches!(e, IoError::OutOfRange { .. }), "{e}");
    assert!(e.to_string().contains("beyond the volume"));
    let e = volume
        .run(
            IoOp::WriteZeroes {
                offset: (BLOCKS - 1) * BLOCK,
                len: 2 * BLOCK,
            },
            Vec::new(),
            0,
        )
        .unwrap_err();
    assert!(matches!(e, IoError::OutOfRange { .. }), "{e}");
    let e = volume
        .run(IoOp::Discard { offset: 0, len: 0 }, Vec::new(), 0)
        .unwrap_err();
    assert!(matches!(e, IoError::EmptyTransfer { .. }), "{e}");
    // The volume still works afterwards.
    volume
        .run(
            IoOp::Write {
                offset: 0,
                fua: true,
            },
            vec![7; 4096],
            0,
        )
        .unwrap();
    assert_eq!(
        volume
            .run(IoOp::Read { offset: 0 }, Vec::new(), 4096)
            .unwrap(),
        vec![7; 4096]
    );
}

#[test]
fn misaligned_or_out_of_range_requests_get_a_clear_error_on_memory() {
    refuses_bad_requests(&Volume::start(Arc::new(
        MemoryBackend::new(BLOCKS * BLOCK, BLOCK as u32).unwrap(),
    )));
}

#[test]
fn misaligned_or_out_of_range_requests_get_a_clear_error_on_file() {
    let dir = tmpdir();
    refuses_bad_requests(&Volume::start(file_backend(dir.path())));
}

#[test]
fn file_contents_are_on_disk_after_a_flush() {
    let dir = tmpdir();
    let volume = Volume::start(file_backend(dir.path()));
    volume
        .run(
            IoOp::Write {
                offset: 3 * BLOCK,
                fua: false,
            },
            vec![0x5A; BLOCK as usize],
            0,
        )
        .unwrap();
    volume.run(IoOp::Flush, Vec::new(), 0).unwrap();
    drop(volume);
    let bytes = std::fs::read(dir.path().join("vol")).unwrap();
    assert!(bytes[(3 * BLOCK) as usize..(4 * BLOCK) as usize]
        .iter()
        .all(|&b| b == 0x5A));
    assert!(bytes[..(3 * BLOCK) as usize].iter().all(|&b| b == 0));
}
