//! Verified block I/O through Keel's initiator, shared by the keeld and
//! replication tests: self-describing blocks (a block's LBA and a
//! generation are in its bytes, so a misplaced or stale block is caught),
//! one command at a time, and extents of every size class.

use std::path::{Path, PathBuf};

use keel_target::initiator::{IoDone, IoKind, IoQueue};
use keel_target::nvme::Status;

/// Sizes covering every data path: in-capsule (4 KiB), one R2T (64 KiB),
/// several engine buffers and a replication region boundary (1 MiB), and
/// sizes that are not a multiple of a buffer.
pub const SIZES: [usize; 5] = [4096, 8192, 65536, 200 * 1024, 1 << 20];

/// Fills `buf` with the pattern of (`lba`, `generation`).
pub fn fill(buf: &mut [u8], lba: u64, generation: u64) {
    for (index, chunk) in buf.chunks_mut(8).enumerate() {
        let word = lba
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(generation << 32)
            .wrapping_add(index as u64);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

/// Runs one command in slot 0 and returns its status.
pub fn run_one(queue: &mut IoQueue, kind: IoKind, lba: u64, blocks: u32) -> Status {
    queue.submit(0, kind, lba, blocks).expect("submit");
    let mut done: Vec<IoDone> = Vec::new();
    while done.is_empty() {
        queue.wait(&mut done).expect("wait");
    }
    done[0].status
}

/// The extents [`write_read_verify`] uses from `base`: (LBA, bytes).
fn extents(queue: &IoQueue, base: u64) -> Vec<(u64, usize)> {
    let block = queue.namespace().block_size as usize;
    let mut lba = base;
    SIZES
        .iter()
        .map(|&bytes| {
            let at = lba;
            lba += (bytes / block) as u64 + 3;
            (at, bytes)
        })
        .collect()
}

/// Writes every size class from `base` (FUA on every other one) and reads
/// each back.
pub fn write_read_verify(queue: &mut IoQueue, base: u64, generation: u64) {
    let block = queue.namespace().block_size as usize;
    for (round, (lba, bytes)) in extents(queue, base).into_iter().enumerate() {
        let blocks = (bytes / block) as u32;
        fill(queue.buffer(0, bytes), lba, generation);
        let fua = round % 2 == 1;
        let status = run_one(queue, IoKind::Write { fua }, lba, blocks);
        assert!(status.is_success(), "write of {bytes} bytes: {status}");
        queue.buffer(0, bytes).fill(0);
        let status = run_one(queue, IoKind::Read, lba, blocks);
        assert!(status.is_success(), "read of {bytes} bytes: {status}");
        let mut expected = vec![0u8; bytes];
        fill(&mut expected, lba, generation);
        assert!(
            queue.buffer(0, bytes) == expected.as_slice(),
            "read back of {bytes} bytes at LBA {lba} differs"
        );
    }
}

/// Reads back what [`write_read_verify`] wrote from `base`.
pub fn read_back(queue: &mut IoQueue, base: u64, generation: u64) {
    let block = queue.namespace().block_size as usize;
    for (lba, bytes) in extents(queue, base) {
        let status = run_one(queue, IoKind::Read, lba, (bytes / block) as u32);
        assert!(status.is_success(), "read of {bytes} bytes: {status}");
        let mut expected = vec![0u8; bytes];
        fill(&mut expected, lba, generation);
        assert!(
            queue.buffer(0, bytes) == expected.as_slice(),
            "{bytes} bytes at LBA {lba} differ"
        );
    }
}

/// A fresh folder for backing files: under the build tree, since O_DIRECT
/// needs a real filesystem and /tmp may be tmpfs.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
