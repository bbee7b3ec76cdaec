//! Aligned I/O buffers carved out of one mapping, registered with the ring.
//!
//! The pool is one anonymous mapping (2 MiB huge pages when the kernel has
//! them reserved, normal pages otherwise) cut into equal slots. Every slot is
//! page aligned, so it satisfies O_DIRECT alignment for any logical block size
//! up to 4 KiB, and the whole mapping is registered with the ring once so
//! reads and writes use READ_FIXED/WRITE_FIXED and skip per-I/O page pinning.

use std::io;

use memmap2::{MmapMut, MmapOptions};

/// Alignment of every slot: a page, which covers any logical block size.
pub const SLOT_ALIGN: usize = 4096;
/// The kernel caps one registered buffer at 1 GiB.
const MAX_REGISTERED_REGION: usize = 1 << 30;
const HUGE_PAGE: usize = 2 << 20;

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Bytes per slot (rounded up to [`SLOT_ALIGN`]).
    pub slot_size: usize,
    /// Number of slots.
    pub slots: usize,
    /// Try MAP_HUGETLB first.
    pub hugepages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            slot_size: 128 << 10,
            slots: 256,
            hugepages: true,
        }
    }
}

/// A slot checked out of a [`BufferPool`]. It is only a handle: its bytes are
/// reached through the pool, and it goes back with [`BufferPool::put`].
#[derive(Debug, PartialEq, Eq)]
pub struct Buf {
    slot: u32,
    len: u32,
}

impl Buf {
    pub fn slot(&self) -> u32 {
        self.slot
    }
    /// Bytes in use (what an I/O on this buffer transfers).
    pub fn len(&self) -> usize {
        self.len as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

pub struct BufferPool {
    map: MmapMut,
    slot_size: usize,
    slots: usize,
    free: Vec<u32>,
    huge: bool,
}

impl BufferPool {
    pub fn new(config: &PoolConfig) -> io::Result<BufferPool> {
        if config.slots == 0 || config.slots > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer pool needs 1..=u32::MAX slots",
            ));
        }
        let slot_size = config.slot_size.max(1).next_multiple_of(SLOT_ALIGN);
        if slot_size > MAX_REGISTERED_REGION || slot_size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer slot larger than 1 GiB",
            ));
        }
        let bytes = slot_size.checked_mul(config.slots).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "buffer pool size overflows")
        })?;
        let (map, huge) = map_anonymous(bytes, config.hugepages)?;
        // Hand out low slots first: they are the ones most likely in cache.
        let free = (0..config.slots as u32).rev().collect();
        Ok(BufferPool {
            map,
            slot_size,
            slots: config.slots,
            free,
            huge,
        })
    }

    pub fn slot_size(&self) -> usize {
        self.slot_size
    }
    pub fn capacity(&self) -> usize {
        self.slots
    }
    pub fn available(&self) -> usize {
        self.free.len()
    }
    pub fn uses_hugepages(&self) -> bool {
        self.huge
    }

    /// Checks out a slot with `len` bytes in use, or `None` when the pool is
    /// empty or `len` exceeds a slot.
    pub fn get(&mut self, len: usize) -> Option<Buf> {
        if len > self.slot_size {
            return None;
        }
        let slot = self.free.pop()?;
        Some(Buf {
            slot,
            len: len as u32,
        })
    }

    /// Returns a slot to the pool.
    pub fn put(&mut self, buf: Buf) {
        debug_assert!((buf.slot as usize) < self.capacity());
        debug_assert!(!self.free.contains(&buf.slot), "slot returned twice");
        self.free.push(buf.slot);
    }

    /// Changes how many bytes of the slot an I/O will use.
    pub fn set_len(&self, buf: &mut Buf, len: usize) -> Result<(), BufTooSmall> {
        if len > self.slot_size {
            return Err(BufTooSmall {
                wanted: len,
                slot_size: self.slot_size,
            });
        }
        buf.len = len as u32;
        Ok(())
    }

    pub fn bytes(&self, buf: &Buf) -> &[u8] {
        let start = buf.slot as usize * self.slot_size;
        &self.map[start..start + buf.len()]
    }

    pub fn bytes_mut(&mut self, buf: &Buf) -> &mut [u8] {
        let start = buf.slot as usize * self.slot_size;
        &mut self.map[start..start + buf.len()]
    }

    /// Copies `src[range]` into `dst` at `dst_offset` (two slots of this
    /// pool, or the same one). Panics when a range leaves its buffer: the
    /// callers compute both from lengths they checked.
    pub fn copy(&mut self, src: &Buf, range: std::ops::Range<usize>, dst: &Buf, dst_offset: usize) {
        assert!(
            range.start <= range.end && range.end <= src.len(),
            "copy source out of range"
        );
        let len = range.end - range.start;
        assert!(
            dst_offset + len <= dst.len(),
            "copy destination out of range"
        );
        let src_start = src.slot as usize * self.slot_size + range.start;
        let dst_start = dst.slot as usize * self.slot_size + dst_offset;
        self.map.copy_within(src_start..src_start + len, dst_start);
    }

    /// Address of the buffer's first byte, for building an SQE.
    pub fn as_ptr(&mut self, buf: &Buf) -> *mut u8 {
        self.bytes_mut(buf).as_mut_ptr()
    }

    /// Index of the registered region holding `buf` (for `buf_index`).
    pub fn region_of(&self, buf: &Buf) -> u16 {
        ((buf.slot as usize * self.slot_size) / MAX_REGISTERED_REGION) as u16
    }

    /// The regions to register with a ring: at most 1 GiB each, so slot
    /// boundaries never straddle two regions.
    pub fn regions(&mut self) -> Vec<libc::iovec> {
        let base = self.map.as_mut_ptr();
        let total = self.slots * self.slot_size;
        let per_region = (MAX_REGISTERED_REGION / self.slot_size) * self.slot_size;
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < total {
            let len = per_region.min(total - offset);
            out.push(libc::iovec {
                // SAFETY: offset < total, so the pointer stays inside the mapping.
                iov_base: unsafe { base.add(offset) }.cast(),
                iov_len: len,
            });
            offset += per_region;
        }
        out
    }
}

#[derive(Debug, thiserror::Error)]
#[error("buffer of {wanted} bytes does not fit a {slot_size}-byte slot")]
pub struct BufTooSmall {
    pub wanted: usize,
    pub slot_size: usize,
}

fn map_anonymous(bytes: usize, hugepages: bool) -> io::Result<(MmapMut, bool)> {
    if hugepages && bytes >= HUGE_PAGE {
        let rounded = bytes.next_multiple_of(HUGE_PAGE);
        // 21 = log2(2 MiB). Fails with ENOMEM when no huge pages are reserved.
        match MmapOptions::new().len(rounded).huge(Some(21)).map_anon() {
            Ok(map) => return Ok((map, true)),
            Err(err) => {
                tracing::debug!(%err, "no huge pages for the buffer pool, using 4 KiB pages")
            }
        }
    }
    let map = MmapOptions::new().len(bytes).populate().map_anon()?;
    Ok((map, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_pool(slots: usize) -> BufferPool {
        BufferPool::new(&PoolConfig {
            slot_size: 8192,
            slots,
            hugepages: false,
        })
        .unwrap()
    }

    #[test]
    fn slots_are_page_aligned_and_disjoint() {
        let mut pool = small_pool(8);
        let bufs: Vec<Buf> = (0..8).map(|_| pool.get(8192).unwrap()).collect();
        let mut addrs: Vec<usize> = bufs.iter().map(|b| pool.as_ptr(b) as usize).collect();
        for a in &addrs {
            assert_eq!(a % SLOT_ALIGN, 0);
        }
        addrs.sort_unstable();
        for w in addrs.windows(2) {
            assert!(w[1] - w[0] >= 8192);
        }
    }

    #[test]
    fn exhausted_pool_says_none_and_refills_on_put() {
        let mut pool = small_pool(2);
        let a = pool.get(10).unwrap();
        let b = pool.get(10).unwrap();
        assert!(pool.get(10).is_none());
        pool.put(a);
        assert_eq!(pool.available(), 1);
        let c = pool.get(10).unwrap();
        pool.put(b);
        pool.put(c);
        assert_eq!(pool.available(), 2);
    }

    #[test]
    fn oversized_requests_are_refused() {
        let mut pool = small_pool(1);
        assert!(pool.get(8193).is_none());
        let mut b = pool.get(0).unwrap();
        assert!(pool.set_len(&mut b, 8193).is_err());
        pool.set_len(&mut b, 4096).unwrap();
        assert_eq!(pool.bytes(&b).len(), 4096);
    }

    #[test]
    fn writes_through_one_handle_are_read_back() {
        let mut pool = small_pool(2);
        let a = pool.get(4096).unwrap();
        let b = pool.get(4096).unwrap();
        pool.bytes_mut(&a).fill(0xAB);
        pool.bytes_mut(&b).fill(0xCD);
        assert!(pool.bytes(&a).iter().all(|&x| x == 0xAB));
        assert!(pool.bytes(&b).iter().all(|&x| x == 0xCD));
    }

    #[test]
    fn regions_cover_the_pool_in_at_most_1gib_pieces() {
        let mut pool = small_pool(16);
        let regions = pool.regions();
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].iov_len, 16 * 8192);
        let b = pool.get(1).unwrap();
        assert_eq!(pool.region_of(&b), 0);
    }

    #[test]
    fn pool_registers_with_a_ring() {
        let mut pool = small_pool(4);
        let mut ring = super::super::ring::Ring::new(&Default::default()).unwrap();
        let regions = pool.regions();
        // SAFETY: the pool outlives the ring in this test.
        unsafe { ring.register_buffers(&regions) }.unwrap();
    }

    #[test]
    fn hugepage_request_falls_back_when_none_are_reserved() {
        let pool = BufferPool::new(&PoolConfig {
            slot_size: 1 << 20,
            slots: 4,
            hugepages: true,
        })
        .unwrap();
        assert_eq!(pool.capacity(), 4);
    }
}
