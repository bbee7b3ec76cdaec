//! A small file mapped shared into memory: stores into it reach the page
//! cache at once, so they outlive the process (not a power loss) without a
//! system call. keeld keeps its noted replication standing in one.

use std::fs::{File, OpenOptions};
use std::path::Path;

use memmap2::MmapMut;

/// A file of a fixed length, mapped read-write and shared.
pub struct SharedFileMap {
    map: MmapMut,
    // Kept open for as long as the mapping is used.
    _file: File,
}

impl SharedFileMap {
    /// Opens (or creates) `path`, sets its length to `len` bytes (zeros
    /// where it grows) and maps it.
    pub fn open(path: &Path, len: usize) -> std::io::Result<SharedFileMap> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if file.metadata()?.len() != len as u64 {
            file.set_len(len as u64)?;
        }
        // SAFETY: mapping a file is unsafe because another process could
        // truncate or change it under the mapping. Callers map their own
        // sidecar files, which nothing else writes while they run; the
        // length was just set, so the whole mapping is backed by the file.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(SharedFileMap { map, _file: file })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The mapped bytes, for stores.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }

    /// Makes the stores so far durable (msync), for a power loss too.
    pub fn flush(&self) -> std::io::Result<()> {
        self.map.flush()
    }
}
