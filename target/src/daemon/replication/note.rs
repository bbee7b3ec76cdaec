//! The noted standing (`core::Action::Note`): what this copy last reported,
//! kept where the next start of keeld finds it after a kill, at the cost of
//! a memory store.
//!
//! A replica acknowledges writes as applied before any flush, and its
//! durable record is written only at each persist. Killed in between, it
//! holds the data (a killed process loses no completed write) but its
//! record under-reports it, and an election that trusted the record could
//! overlook a write the host saw acknowledged. So every standing the state
//! machine reports or persists is first stored in a small file mapped
//! shared: the page cache outlives the process. A power loss or a reboot
//! may lose or tear it — and the unflushed data with it — so a note counts
//! only in the boot it was written in (the kernel's boot id), otherwise the
//! record alone does and the copy is amnesiac (`Standing::amnesiac`),
//! unless keeld stopped cleanly: then, after the shards stopped and the
//! data device was flushed, the last note was stored again marked clean and
//! made durable (msync). It says exactly what the copy holds, in any later
//! boot, until a newer note (whose sequence is higher) supersedes it.
//!
//! Layout: two slots of [`SLOT_LEN`] bytes written in turn (a kill in the
//! middle of a store tears at most the slot being written; a reader takes
//! the valid slot with the highest sequence). Slot (little endian): magic
//! `KEELNOTE` (8) | sequence (8) | volume id (8) | boot id (40, the UUID
//! text, zero padded) | standing: epoch (8), synced (8), applied epoch (8),
//! applied index (8), flags (1: bit 0 consistent, bit 1 amnesiac, bit 2
//! clean stop) | zeros up to 120 | CRC32C of bytes 0..120 (4) | zeros (4).

use std::path::{Path, PathBuf};

use keel_engine::sys::shared_map::SharedFileMap;

use keel_replicator::core::{Position, Standing};
use keel_replicator::wire::{Epoch, VolumeId};

use crate::daemon::replication::record::{standing_flags, STANDING_AMNESIAC, STANDING_CONSISTENT};

const MAGIC: &[u8; 8] = b"KEELNOTE";
/// Flag bit 2, beside the record's standing flags: stored at a clean stop.
const CLEAN_STOP: u8 = 0b100;
const SLOT_LEN: usize = 128;
const FILE_LEN: usize = 2 * SLOT_LEN;
const BOOT_LEN: usize = 40;
const CRC_AT: usize = 120;
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The note file of the backend at `backend` (`<backend>.keelnote`).
pub fn note_path(backend: &Path) -> PathBuf {
    let mut name = backend.as_os_str().to_owned();
    name.push(".keelnote");
    PathBuf::from(name)
}

/// The mapped note file.
pub(crate) struct NoteFile {
    map: SharedFileMap,
    volume: VolumeId,
    boot: [u8; BOOT_LEN],
    sequence: u64,
    /// The standing last stored (or found at open), for the clean mark.
    last: Option<Standing>,
}

impl std::fmt::Debug for NoteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteFile")
            .field("volume", &self.volume)
            .field("sequence", &self.sequence)
            .finish()
    }
}

/// This boot's id, as the kernel gives it.
fn boot_id() -> std::io::Result<[u8; BOOT_LEN]> {
    let text = std::fs::read_to_string(BOOT_ID)?;
    let text = text.trim().as_bytes();
    let mut id = [0u8; BOOT_LEN];
    let len = text.len().min(BOOT_LEN);
    id[..len].copy_from_slice(&text[..len]);
    Ok(id)
}

impl NoteFile {
    /// Opens (or creates) the note file at `path` for `volume` and returns
    /// it with the standing noted in this boot, or at a clean stop in any
    /// boot, if any.
    pub(crate) fn open(
        path: &Path,
        volume: VolumeId,
    ) -> Result<(NoteFile, Option<Standing>), String> {
        let boot = boot_id().map_err(|e| format!("{BOOT_ID}: {e}"))?;
        let map = SharedFileMap::open(path, FILE_LEN)
            .map_err(|e| format!("note file {}: {e}", path.display()))?;
        // The newest slot of any boot: notes of this boot continue its
        // sequence, so an older boot's clean note never outranks them.
        let newest = (0..2)
            .filter_map(|i| read_slot(&map.bytes()[i * SLOT_LEN..(i + 1) * SLOT_LEN]))
            .filter(|slot| slot.volume == volume)
            .max_by_key(|slot| slot.sequence);
        let sequence = newest.as_ref().map_or(0, |s| s.sequence);
        let found = newest
            .filter(|s| s.boot == boot || s.clean)
            .map(|s| s.standing);
        let note = NoteFile {
            map,
            volume,
            boot,
            sequence,
            last: found,
        };
        Ok((note, found))
    }

    /// After a clean stop (no more acknowledgements; every completed write
    /// made durable by a device flush): stores the last standing again,
    /// marked clean, and makes it durable, so that it counts in the next
    /// boot too. Nothing to do if nothing was ever noted.
    pub(crate) fn mark_clean(&mut self) -> std::io::Result<()> {
        let Some(standing) = self.last else {
            return Ok(());
        };
        self.store(&standing, true);
        self.map.flush()
    }

    /// Stores `standing` (a memory store into the shared mapping; visible
    /// to the next start of keeld in this boot even if this process is
    /// killed right after).
    pub(crate) fn note(&mut self, standing: &Standing) {
        self.store(standing, false);
    }

    fn store(&mut self, standing: &Standing, clean: bool) {
        self.sequence = self.sequence.wrapping_add(1);
        self.last = Some(*standing);
        let at = (self.sequence % 2) as usize * SLOT_LEN;
        let slot = &mut self.map.bytes_mut()[at..at + SLOT_LEN];
        write_slot(
            slot,
            self.sequence,
            self.volume,
            &self.boot,
            standing,
            clean,
        );
    }
}

struct Slot {
    sequence: u64,
    volume: VolumeId,
    boot: [u8; BOOT_LEN],
    standing: Standing,
    clean: bool,
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn read_slot(slot: &[u8]) -> Option<Slot> {
    if &slot[..8] != MAGIC {
        return None;
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&slot[CRC_AT..CRC_AT + 4]);
    if crc32c::crc32c(&slot[..CRC_AT]) != u32::from_le_bytes(crc) {
        return None;
    }
    let mut boot = [0u8; BOOT_LEN];
    boot.copy_from_slice(&slot[24..24 + BOOT_LEN]);
    // The record's standing flags, and bit 2: clean stop.
    let flags = slot[96];
    if flags & !(STANDING_CONSISTENT | STANDING_AMNESIAC | CLEAN_STOP) != 0 {
        return None;
    }
    let consistent = flags & STANDING_CONSISTENT != 0;
    let amnesiac = flags & STANDING_AMNESIAC != 0;
    Some(Slot {
        sequence: u64_at(slot, 8),
        volume: VolumeId(u64_at(slot, 16)),
        boot,
        standing: Standing {
            epoch: Epoch(u64_at(slot, 64)),
            synced: Epoch(u64_at(slot, 72)),
            applied: Position {
                epoch: Epoch(u64_at(slot, 80)),
                index: u64_at(slot, 88),
            },
            consistent,
            amnesiac,
        },
        clean: flags & CLEAN_STOP != 0,
    })
}

fn write_slot(
    slot: &mut [u8],
    sequence: u64,
    volume: VolumeId,
    boot: &[u8; BOOT_LEN],
    standing: &Standing,
    clean: bool,
) {
    slot.fill(0);
    slot[..8].copy_from_slice(MAGIC);
    slot[8..16].copy_from_slice(&sequence.to_le_bytes());
    slot[16..24].copy_from_slice(&volume.0.to_le_bytes());
    slot[24..24 + BOOT_LEN].copy_from_slice(boot);
    slot[64..72].copy_from_slice(&standing.epoch.0.to_le_bytes());
    slot[72..80].copy_from_slice(&standing.synced.0.to_le_bytes());
    slot[80..88].copy_from_slice(&standing.applied.epoch.0.to_le_bytes());
    slot[88..96].copy_from_slice(&standing.applied.index.to_le_bytes());
    slot[96] = standing_flags(standing) | if clean { CLEAN_STOP } else { 0 };
    let crc = crc32c::crc32c(&slot[..CRC_AT]);
    slot[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(index: u64) -> Standing {
        Standing {
            epoch: Epoch(3),
            synced: Epoch(3),
            applied: Position {
                epoch: Epoch(3),
                index,
            },
            consistent: true,
            amnesiac: false,
        }
    }

    #[test]
    fn the_last_note_is_found_again_and_a_torn_one_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vol.keelnote");
        let (mut note, found) = NoteFile::open(&path, VolumeId(7)).expect("open");
        assert_eq!(found, None);
        note.note(&standing(1));
        // An amnesiac copy stays amnesiac across a kill.
        let amnesiac = Standing {
            amnesiac: true,
            ..standing(2)
        };
        note.note(&amnesiac);
        drop(note);
        let (mut note, found) = NoteFile::open(&path, VolumeId(7)).expect("reopen");
        assert_eq!(found, Some(amnesiac));
        note.note(&standing(2));
        // A store torn by a kill: the slot being written is damaged, the
        // other still holds the previous note.
        note.note(&standing(3));
        let at = (note.sequence % 2) as usize * SLOT_LEN;
        note.map.bytes_mut()[at + 70] ^= 0xff;
        drop(note);
        let (_, found) = NoteFile::open(&path, VolumeId(7)).expect("reopen");
        assert_eq!(found, Some(standing(2)));
    }

    proptest::proptest! {
        /// Any slot contents, checksummed or not, read as a note or as
        /// none, never a panic (the file survives kills and may be torn).
        #[test]
        fn any_slot_reads_or_is_skipped(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), SLOT_LEN),
            magic in proptest::prelude::any::<bool>(),
        ) {
            let _ = read_slot(&bytes);
            if magic {
                bytes[..8].copy_from_slice(MAGIC);
            }
            let crc = crc32c::crc32c(&bytes[..CRC_AT]);
            bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
            let read = read_slot(&bytes);
            proptest::prop_assert!(read.is_none() || magic);
        }
    }

    #[test]
    fn a_note_of_another_volume_or_boot_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vol.keelnote");
        let (mut note, _) = NoteFile::open(&path, VolumeId(7)).expect("open");
        note.note(&standing(5));
        drop(note);
        let (_, found) = NoteFile::open(&path, VolumeId(8)).expect("other volume");
        assert_eq!(found, None);
        let (mut note, _) = NoteFile::open(&path, VolumeId(7)).expect("open");
        note.boot[0] ^= 1; // As if written in another boot.
        note.note(&standing(6));
        drop(note);
        let (_, found) = NoteFile::open(&path, VolumeId(7)).expect("reopen");
        assert_eq!(
            found, None,
            "the newest note is another boot's, and not clean: nothing counts"
        );
    }

    /// Marked clean at a stop, the last note counts in the next boot too,
    /// until a newer note supersedes it; a stop that never noted anything
    /// marks nothing.
    #[test]
    fn a_note_marked_at_a_clean_stop_counts_in_the_next_boot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("vol.keelnote");
        let (mut note, _) = NoteFile::open(&path, VolumeId(7)).expect("open");
        note.mark_clean().expect("nothing to mark");
        note.boot[0] ^= 1; // This keeld ran in an earlier boot.
        note.note(&standing(8));
        note.note(&standing(9));
        note.mark_clean().expect("mark clean");
        drop(note);
        let (mut note, found) = NoteFile::open(&path, VolumeId(7)).expect("next boot");
        assert_eq!(found, Some(standing(9)));
        // This boot notes more, then is killed: its own note counts.
        note.note(&standing(10));
        drop(note);
        let (note, found) = NoteFile::open(&path, VolumeId(7)).expect("reopen");
        assert_eq!(found, Some(standing(10)));
        drop(note);
        // In yet another boot, that unclean note does not count, and the
        // older clean one no longer does either.
        let (mut note, _) = NoteFile::open(&path, VolumeId(7)).expect("open");
        note.boot[0] ^= 1;
        note.note(&standing(11));
        drop(note);
        let (_, found) = NoteFile::open(&path, VolumeId(7)).expect("after a power loss");
        assert_eq!(found, None);
    }
}
