//! The durable record (`core::DurableRecord`) on disk: a sidecar file next
//! to the backing file (`<backend>.keelrec`) with two slots written in turn,
//! each a versioned, CRC32C-checked encoding with a generation number. A
//! torn write damages at most the slot being written; startup takes the
//! valid slot with the highest generation.
//!
//! Slot layout (little endian):
//!
//! | bytes | field |
//! |-------|-------|
//! | 8 | magic `KEELREC\0` |
//! | 2 | format version (4; 1 to 3 are read too) |
//! | 2 | reserved (0) |
//! | 4 | body length B (bytes after this header, CRC excluded) |
//! | B | body |
//! | 4 | CRC32C of everything before it |
//!
//! Body: generation u64, volume id u64, region size u32, region count u64,
//! primary u64, write quorum u8, member count u8, members (node u64, mode
//! u8) x count, standing (epoch u64, synced u64, applied epoch u64, applied
//! index u64, flags u8: bit 0 consistent, from format 4 bit 1 amnesiac),
//! intent bitmap (region count bits, LSB first),
//! and from format 2 the epoch the membership was introduced in (u64;
//! format 1 records read as 0, the volume's first membership). From format
//! 3, where the copies are: a count u8, then per copy node u64, transport
//! u8 (1 TCP, 2 RDMA), address length u8 and the address as text
//! (`IP:PORT`). A copy added at run time is then reached after a restart
//! whose flags do not name it. From format 4, the previous membership of
//! a change still in progress (`Membership::previous`): write quorum u8 (0
//! when there is none, and nothing follows), then its primary u64 (the node
//! that made the change), member count u8, members (node u64, mode u8) x
//! count. A node promoted from this record finishes that change.

use std::net::SocketAddr;

use keel_replicator::core::{DurableRecord, Member, Membership, Position, Previous, Standing};
use keel_replicator::wire::{Epoch, NodeId, RegionIndex, ReplicationMode, VolumeId};

use super::Transport;

/// Standing flags, in the record and in the note: bit 0 consistent; from
/// format 4, bit 1 amnesiac.
pub(crate) const STANDING_CONSISTENT: u8 = 0b01;
pub(crate) const STANDING_AMNESIAC: u8 = 0b10;

/// `standing`'s flags byte.
pub(crate) fn standing_flags(standing: &Standing) -> u8 {
    let mut flags = 0;
    if standing.consistent {
        flags |= STANDING_CONSISTENT;
    }
    if standing.amnesiac {
        flags |= STANDING_AMNESIAC;
    }
    flags
}
const MAGIC: &[u8; 8] = b"KEELREC\0";
const FORMAT_VERSION: u16 = 4;
/// The format before membership changes, still read.
const FORMAT_VERSION_1: u16 = 1;
/// The format before addresses were kept, still read.
const FORMAT_VERSION_2: u16 = 2;
/// The format before the previous membership was kept, still read.
const FORMAT_VERSION_3: u16 = 3;
const HEADER_LEN: usize = 16;

/// Bytes of one slot in the record file.
pub(crate) const SLOT_LEN: usize = 128 << 10;
/// Size of the record file: two slots.
pub(crate) const FILE_LEN: u64 = 2 * SLOT_LEN as u64;

/// What a record slot holds besides the core's record: enough to refuse a
/// record that belongs to another volume or geometry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredRecord {
    /// Written in turn to slot `generation % 2`; the highest valid wins.
    pub generation: u64,
    pub volume: VolumeId,
    pub region_size: u32,
    pub region_count: u64,
    pub record: DurableRecord,
    /// Where the copies were when it was written (none before format 3).
    pub addresses: Vec<CopyAddress>,
}

/// Where one copy is reached, as a record keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyAddress {
    pub node: NodeId,
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// Why a slot does not hold a usable record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("no record (bad magic)")]
    Magic,
    #[error("record format version {0} is not supported")]
    Version(u16),
    #[error("record truncated")]
    Truncated,
    #[error("record checksum mismatch")]
    Checksum,
    #[error("record field {0} is invalid")]
    Invalid(&'static str),
    #[error("record does not fit a slot ({0} bytes)")]
    TooLarge(usize),
}

fn mode_code(mode: ReplicationMode) -> u8 {
    match mode {
        ReplicationMode::Sync => 1,
        ReplicationMode::Async => 2,
    }
}

/// The encoded slot (not padded).
pub(crate) fn encode(stored: &StoredRecord) -> Result<Vec<u8>, RecordError> {
    let record = &stored.record;
    let mut body = Vec::with_capacity(128);
    body.extend_from_slice(&stored.generation.to_le_bytes());
    body.extend_from_slice(&stored.volume.0.to_le_bytes());
    body.extend_from_slice(&stored.region_size.to_le_bytes());
    body.extend_from_slice(&stored.region_count.to_le_bytes());
    body.extend_from_slice(&record.membership.primary.0.to_le_bytes());
    body.push(record.membership.write_quorum);
    put_members(&mut body, &record.membership.members)?;
    let standing = &record.standing;
    body.extend_from_slice(&standing.epoch.0.to_le_bytes());
    body.extend_from_slice(&standing.synced.0.to_le_bytes());
    body.extend_from_slice(&standing.applied.epoch.0.to_le_bytes());
    body.extend_from_slice(&standing.applied.index.to_le_bytes());
    body.push(standing_flags(standing));
    let bitmap_len = usize::try_from(stored.region_count.div_ceil(8))
        .map_err(|_| RecordError::Invalid("region count"))?;
    let at = body.len();
    body.resize(at + bitmap_len, 0);
    for region in &record.intent {
        if region.0 >= stored.region_count {
            return Err(RecordError::Invalid("intent region"));
        }
        let bit = region.0 as usize;
        body[at + bit / 8] |= 1 << (bit % 8);
    }
    body.extend_from_slice(&record.membership.since.0.to_le_bytes());
    let count =
        u8::try_from(stored.addresses.len()).map_err(|_| RecordError::Invalid("addresses"))?;
    body.push(count);
    for copy in &stored.addresses {
        body.extend_from_slice(&copy.node.0.to_le_bytes());
        body.push(match copy.transport {
            Transport::Tcp => 1,
            Transport::Rdma => 2,
        });
        let text = copy.addr.to_string();
        let len = u8::try_from(text.len()).map_err(|_| RecordError::Invalid("address"))?;
        body.push(len);
        body.extend_from_slice(text.as_bytes());
    }
    match &record.membership.previous {
        Some(previous) => {
            body.push(previous.write_quorum);
            body.extend_from_slice(&previous.primary.0.to_le_bytes());
            put_members(&mut body, &previous.members)?;
        }
        None => body.push(0),
    }
    let total = HEADER_LEN + body.len() + 4;
    if total > SLOT_LEN {
        return Err(RecordError::TooLarge(total));
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Member count u8, then node u64 and mode u8 per member.
fn put_members(body: &mut Vec<u8>, members: &[Member]) -> Result<(), RecordError> {
    let count = u8::try_from(members.len()).map_err(|_| RecordError::Invalid("members"))?;
    body.push(count);
    for member in members {
        body.extend_from_slice(&member.node.0.to_le_bytes());
        body.push(mode_code(member.mode));
    }
    Ok(())
}

fn read_members(r: &mut Reader<'_>) -> Result<Vec<Member>, RecordError> {
    let count = r.u8()?;
    let mut members = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let node = NodeId(r.u64()?);
        let mode = match r.u8()? {
            1 => ReplicationMode::Sync,
            2 => ReplicationMode::Async,
            _ => return Err(RecordError::Invalid("member mode")),
        };
        members.push(Member { node, mode });
    }
    Ok(members)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], RecordError> {
        if self.bytes.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

/// Decodes one slot (trailing bytes after the record are ignored).
pub(crate) fn decode(slot: &[u8]) -> Result<StoredRecord, RecordError> {
    if slot.len() < HEADER_LEN || &slot[..8] != MAGIC {
        return Err(RecordError::Magic);
    }
    let version = u16::from_le_bytes([slot[8], slot[9]]);
    let known = [
        FORMAT_VERSION,
        FORMAT_VERSION_1,
        FORMAT_VERSION_2,
        FORMAT_VERSION_3,
    ];
    if !known.contains(&version) {
        return Err(RecordError::Version(version));
    }
    let body_len = u32::from_le_bytes([slot[12], slot[13], slot[14], slot[15]]) as usize;
    let end = HEADER_LEN
        .checked_add(body_len)
        .filter(|end| end + 4 <= slot.len() && end + 4 <= SLOT_LEN)
        .ok_or(RecordError::Truncated)?;
    let crc = u32::from_le_bytes([slot[end], slot[end + 1], slot[end + 2], slot[end + 3]]);
    if crc32c::crc32c(&slot[..end]) != crc {
        return Err(RecordError::Checksum);
    }
    let mut r = Reader {
        bytes: &slot[HEADER_LEN..end],
    };
    let generation = r.u64()?;
    let volume = VolumeId(r.u64()?);
    let region_size = r.u32()?;
    let region_count = r.u64()?;
    let primary = NodeId(r.u64()?);
    let write_quorum = r.u8()?;
    let members = read_members(&mut r)?;
    let (epoch, synced) = (Epoch(r.u64()?), Epoch(r.u64()?));
    let applied = Position {
        epoch: Epoch(r.u64()?),
        index: r.u64()?,
    };
    let flags = r.u8()?;
    let known = if version >= FORMAT_VERSION {
        STANDING_CONSISTENT | STANDING_AMNESIAC
    } else {
        STANDING_CONSISTENT
    };
    if flags & !known != 0 {
        return Err(RecordError::Invalid("standing flags"));
    }
    let standing = Standing {
        epoch,
        synced,
        applied,
        consistent: flags & STANDING_CONSISTENT != 0,
        amnesiac: flags & STANDING_AMNESIAC != 0,
    };
    let bitmap_len =
        usize::try_from(region_count.div_ceil(8)).map_err(|_| RecordError::Invalid("regions"))?;
    let bitmap = r.take(bitmap_len)?;
    let intent = (0..region_count)
        .filter(|&bit| bitmap[(bit / 8) as usize] & (1 << (bit % 8)) != 0)
        .map(RegionIndex)
        .collect();
    let since = if version == FORMAT_VERSION_1 {
        Epoch(0)
    } else {
        Epoch(r.u64()?)
    };
    let mut addresses = Vec::new();
    if version >= FORMAT_VERSION_3 {
        for _ in 0..r.u8()? {
            let node = NodeId(r.u64()?);
            let transport = match r.u8()? {
                1 => Transport::Tcp,
                2 => Transport::Rdma,
                _ => return Err(RecordError::Invalid("address transport")),
            };
            let len = usize::from(r.u8()?);
            let addr = std::str::from_utf8(r.take(len)?)
                .ok()
                .and_then(|text| text.parse::<SocketAddr>().ok())
                .ok_or(RecordError::Invalid("address"))?;
            addresses.push(CopyAddress {
                node,
                addr,
                transport,
            });
        }
    }
    let previous = if version >= FORMAT_VERSION {
        match r.u8()? {
            0 => None,
            write_quorum => Some(Previous {
                write_quorum,
                primary: NodeId(r.u64()?),
                members: read_members(&mut r)?,
            }),
        }
    } else {
        None
    };
    let membership = Membership {
        members,
        primary,
        write_quorum,
        since,
        previous,
    };
    if !membership.is_valid() {
        return Err(RecordError::Invalid("membership"));
    }
    Ok(StoredRecord {
        generation,
        volume,
        region_size,
        region_count,
        record: DurableRecord {
            membership,
            standing,
            intent,
        },
        addresses,
    })
}

/// The newest valid record in a record file's contents, if any, and a
/// description of why each slot was not used (for the log).
pub(crate) fn newest(file: &[u8]) -> (Option<StoredRecord>, Vec<String>) {
    let mut best: Option<StoredRecord> = None;
    let mut problems = Vec::new();
    for slot in 0..2 {
        let start = slot * SLOT_LEN;
        let Some(bytes) = file.get(start..(start + SLOT_LEN).min(file.len())) else {
            problems.push(format!("slot {slot}: missing"));
            continue;
        };
        match decode(bytes) {
            Ok(stored) => {
                if best
                    .as_ref()
                    .is_none_or(|b| stored.generation > b.generation)
                {
                    best = Some(stored);
                }
            }
            Err(e) => problems.push(format!("slot {slot}: {e}")),
        }
    }
    (best, problems)
}

/// Byte offset of the slot a record of `generation` is written to.
pub(crate) fn slot_offset(generation: u64) -> u64 {
    (generation % 2) * SLOT_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(generation: u64) -> StoredRecord {
        StoredRecord {
            generation,
            volume: VolumeId(7),
            region_size: 1 << 20,
            region_count: 70,
            record: DurableRecord {
                membership: Membership {
                    members: vec![
                        Member {
                            node: NodeId(1),
                            mode: ReplicationMode::Sync,
                        },
                        Member {
                            node: NodeId(2),
                            mode: ReplicationMode::Sync,
                        },
                        Member {
                            node: NodeId(3),
                            mode: ReplicationMode::Async,
                        },
                    ],
                    primary: NodeId(1),
                    write_quorum: 2,
                    since: Epoch(4),
                    previous: None,
                },
                standing: Standing {
                    epoch: Epoch(5),
                    synced: Epoch(4),
                    applied: Position {
                        epoch: Epoch(4),
                        index: 99,
                    },
                    consistent: true,
                    amnesiac: false,
                },
                intent: vec![RegionIndex(0), RegionIndex(9), RegionIndex(69)],
            },
            addresses: vec![
                CopyAddress {
                    node: NodeId(2),
                    addr: "192.0.2.2:4421".parse().expect("addr"),
                    transport: Transport::Tcp,
                },
                CopyAddress {
                    node: NodeId(3),
                    addr: "[2001:db8::3]:4421".parse().expect("addr"),
                    transport: Transport::Rdma,
                },
            ],
        }
    }

    #[test]
    fn a_record_round_trips() {
        let stored = sample(3);
        let bytes = encode(&stored).expect("encode");
        assert_eq!(decode(&bytes), Ok(stored.clone()));
        // Trailing padding (the slot is written in whole blocks) is ignored.
        let mut padded = bytes.clone();
        padded.resize(4096, 0);
        assert_eq!(decode(&padded), Ok(stored));
    }

    /// A record written mid-change keeps the previous membership.
    #[test]
    fn a_record_with_a_previous_membership_round_trips() {
        let mut stored = sample(4);
        let old = |node, mode| Member {
            node: NodeId(node),
            mode,
        };
        stored.record.membership.previous = Some(Previous {
            members: vec![
                old(1, ReplicationMode::Sync),
                old(2, ReplicationMode::Sync),
                old(4, ReplicationMode::Sync),
            ],
            write_quorum: 3,
            primary: NodeId(1),
        });
        stored.record.standing.amnesiac = true;
        let bytes = encode(&stored).expect("encode");
        assert_eq!(decode(&bytes), Ok(stored.clone()));
        // An invalid previous membership is refused under a valid checksum.
        if let Some(previous) = stored.record.membership.previous.as_mut() {
            previous.write_quorum = 4;
        }
        let bytes = encode(&stored).expect("encode");
        assert_eq!(decode(&bytes), Err(RecordError::Invalid("membership")));
    }

    /// A format 3 record (before the previous membership was kept) is
    /// still read, with none.
    #[test]
    fn a_format_3_record_reads_without_a_previous_membership() {
        let stored = StoredRecord {
            addresses: Vec::new(),
            ..sample(3)
        };
        // Format 3 is format 4 without the previous membership (here one
        // byte: quorum 0).
        let bytes = older_format(&stored, FORMAT_VERSION_3, 1);
        assert_eq!(decode(&bytes), Ok(stored));
    }

    /// `stored` (without addresses) as an older format writes it: the
    /// current encoding less its last `dropped` body bytes, with `version`.
    fn older_format(stored: &StoredRecord, version: u16, dropped: u32) -> Vec<u8> {
        assert!(stored.addresses.is_empty());
        let mut bytes = encode(stored).expect("encode");
        let body_len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) - dropped;
        bytes.truncate(HEADER_LEN + body_len as usize);
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        bytes[12..16].copy_from_slice(&body_len.to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A format 2 record (before addresses were kept) is still read, with
    /// no addresses.
    #[test]
    fn a_format_2_record_reads_without_addresses() {
        let stored = StoredRecord {
            addresses: Vec::new(),
            ..sample(3)
        };
        // Format 2 is format 4 without the address list (here a count 0)
        // and the previous membership (1 byte for none).
        let bytes = older_format(&stored, FORMAT_VERSION_2, 2);
        assert_eq!(decode(&bytes), Ok(stored));
    }

    /// A format 1 record (before membership changes) is still read: its
    /// membership is the volume's first (`since` 0).
    #[test]
    fn a_format_1_record_reads_with_the_first_membership() {
        let stored = StoredRecord {
            addresses: Vec::new(),
            ..sample(3)
        };
        // Format 1 is format 4 without the trailing `since`, address count
        // (0 here) and previous membership (1 byte for none).
        let bytes = older_format(&stored, FORMAT_VERSION_1, 10);
        let decoded = decode(&bytes).expect("decode");
        assert_eq!(decoded.record.membership.since, Epoch(0));
        assert_eq!(decoded.record.standing, stored.record.standing);
        assert_eq!(decoded.record.intent, stored.record.intent);
    }

    #[test]
    fn damage_is_detected() {
        let bytes = encode(&sample(1)).expect("encode");
        for at in [0, 9, 20, 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} went unnoticed");
        }
        assert_eq!(
            decode(&bytes[..bytes.len() - 3]),
            Err(RecordError::Truncated)
        );
        let mut version = bytes.clone();
        version[8] = 9;
        assert_eq!(decode(&version), Err(RecordError::Version(9)));
        assert_eq!(decode(&[0u8; 64]), Err(RecordError::Magic));
    }

    /// An address that is not `IP:PORT`, or an unknown transport, is
    /// refused even under a valid checksum.
    #[test]
    fn a_bad_address_is_refused() {
        let stored = sample(2);
        let bytes = encode(&stored).expect("encode");
        let text = b"192.0.2.2:4421";
        let at = bytes
            .windows(text.len())
            .position(|w| w == text)
            .expect("the address is in the slot");
        let with_crc = |mut bytes: Vec<u8>| {
            let end = bytes.len() - 4;
            let crc = crc32c::crc32c(&bytes[..end]);
            bytes[end..].copy_from_slice(&crc.to_le_bytes());
            bytes
        };
        let mut bad = bytes.clone();
        bad[at + 3] = b'x';
        assert_eq!(decode(&with_crc(bad)), Err(RecordError::Invalid("address")));
        let mut bad = bytes.clone();
        bad[at - 2] = 7; // the transport
        assert_eq!(
            decode(&with_crc(bad)),
            Err(RecordError::Invalid("address transport"))
        );
        let mut bad = bytes;
        bad[at - 1] = 200; // a length past the body
        assert_eq!(decode(&with_crc(bad)), Err(RecordError::Truncated));
    }

    proptest::proptest! {
        /// A record file is read at every start, damaged or not: any bytes
        /// decode to a record or an error, never a panic; so do valid
        /// records with bytes changed under a recomputed checksum (which
        /// reaches the field checks behind the CRC).
        #[test]
        fn any_slot_decodes_or_is_refused(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 1..6),
            generation in 0u64..8,
        ) {
            let _ = decode(&noise);
            let mut bytes = encode(&sample(generation)).expect("encode");
            let body_end = bytes.len() - 4;
            for (at, value) in flips {
                let at = at % body_end;
                bytes[at] = value;
            }
            let crc = crc32c::crc32c(&bytes[..body_end]);
            bytes[body_end..].copy_from_slice(&crc.to_le_bytes());
            let _ = decode(&bytes);
            let _ = newest(&bytes);
        }
    }

    #[test]
    fn the_newest_valid_slot_wins() {
        let mut file = vec![0u8; FILE_LEN as usize];
        assert_eq!(newest(&file).0, None);
        let older = encode(&sample(4)).expect("encode");
        let newer = encode(&sample(5)).expect("encode");
        let at4 = slot_offset(4) as usize;
        let at5 = slot_offset(5) as usize;
        file[at4..at4 + older.len()].copy_from_slice(&older);
        file[at5..at5 + newer.len()].copy_from_slice(&newer);
        assert_eq!(newest(&file).0.map(|s| s.generation), Some(5));
        // A torn newer slot falls back to the older one.
        file[at5 + 30] ^= 1;
        assert_eq!(newest(&file).0.map(|s| s.generation), Some(4));
    }

    #[test]
    fn a_big_volume_still_fits_a_slot() {
        let mut stored = sample(1);
        stored.region_count = 512 * 1024; // 512 GiB of 1 MiB regions
        stored.record.intent = (0..stored.region_count).map(RegionIndex).collect();
        let bytes = encode(&stored).expect("encode");
        assert!(bytes.len() <= SLOT_LEN);
        assert_eq!(
            decode(&bytes).map(|s| s.record.intent.len()),
            Ok(512 * 1024)
        );
    }
}
