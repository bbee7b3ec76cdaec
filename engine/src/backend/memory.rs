//! A volume in RAM, for tests and for benchmarking the layers above the disk.
//!
//! Memory is taken a chunk at a time on first write, so a large volume that
//! is mostly unwritten costs little. Each chunk has its own lock: shards own
//! disjoint chunks, so the locks are uncontended on the data path, and a
//! request crossing chunks takes them one after another.

use std::sync::Mutex;

use super::{BlockBackend, Geometry, IoOp, Prepared, Request};

const CHUNK: u64 = 1 << 20;
/// Bounds the chunk table (and so the bookkeeping a bogus size can cost).
pub const MAX_CAPACITY: u64 = 1 << 42;

pub struct MemoryBackend {
    geometry: Geometry,
    chunks: Vec<Mutex<Option<Box<[u8]>>>>,
}

impl MemoryBackend {
    pub fn new(capacity: u64, block_size: u32) -> Result<MemoryBackend, String> {
        if !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
            return Err(format!(
                "block size {block_size} must be a power of two in 512..=65536"
            ));
        }
        if capacity == 0 || !capacity.is_multiple_of(block_size as u64) || capacity > MAX_CAPACITY {
            return Err(format!(
                "capacity {capacity} must be a non-zero multiple of {block_size} up to {MAX_CAPACITY}"
            ));
        }
        let chunks = capacity.div_ceil(CHUNK) as usize;
        Ok(MemoryBackend {
            geometry: Geometry {
                block_size,
                capacity,
            },
            chunks: (0..chunks).map(|_| Mutex::new(None)).collect(),
        })
    }

    /// Calls `each(chunk index, offset in chunk, range in request)` for every
    /// piece of `[offset, offset+len)`.
    fn for_pieces(
        offset: u64,
        len: u64,
        mut each: impl FnMut(usize, usize, std::ops::Range<usize>),
    ) {
        let mut done = 0u64;
        while done < len {
            let pos = offset + done;
            let in_chunk = pos % CHUNK;
            let take = (CHUNK - in_chunk).min(len - done);
            each(
                (pos / CHUNK) as usize,
                in_chunk as usize,
                done as usize..(done + take) as usize,
            );
            done += take;
        }
    }

    fn chunk_len(&self, index: usize) -> usize {
        let start = index as u64 * CHUNK;
        (self.geometry.capacity - start).min(CHUNK) as usize
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        Self::for_pieces(offset, out.len() as u64, |c, at, range| {
            let chunk = lock(&self.chunks[c]);
            match chunk.as_ref() {
                Some(bytes) => out[range.clone()].copy_from_slice(&bytes[at..at + range.len()]),
                None => out[range].fill(0),
            }
        });
    }

    fn write(&self, offset: u64, data: &[u8]) {
        Self::for_pieces(offset, data.len() as u64, |c, at, range| {
            let mut chunk = lock(&self.chunks[c]);
            let len = self.chunk_len(c);
            let bytes = chunk.get_or_insert_with(|| vec![0u8; len].into_boxed_slice());
            bytes[at..at + range.len()].copy_from_slice(&data[range]);
        });
    }

    fn zero(&self, offset: u64, len: u64) {
        Self::for_pieces(offset, len, |c, at, range| {
            let mut chunk = lock(&self.chunks[c]);
            if at == 0 && range.len() == self.chunk_len(c) {
                *chunk = None; // a whole chunk: give the memory back
            } else if let Some(bytes) = chunk.as_mut() {
                bytes[at..at + range.len()].fill(0);
            }
        });
    }
}

/// A poisoned chunk lock only means another thread panicked mid-copy; the
/// bytes are still the bytes, so carry on rather than spread the panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BlockBackend for MemoryBackend {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }

    fn describe(&self) -> String {
        format!("memory ({} bytes)", self.geometry.capacity)
    }

    fn prepare(&self, req: Request<'_>) -> Prepared {
        let moved = req.data.len() as u32;
        match req.op {
            IoOp::Read { offset } => self.read(offset, req.data),
            IoOp::Write { offset, .. } => self.write(offset, req.data),
            IoOp::WriteZeroes { offset, len } | IoOp::Discard { offset, len } => {
                self.zero(offset, len)
            }
            IoOp::Flush => {}
        }
        Prepared::Done(if req.op.has_data() { Ok(moved) } else { Ok(0) })
    }
}
