//! `EpochChange`: a new epoch and the membership that comes with it.

use std::ops::Deref;

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError, FieldProblem, Violation};
use crate::wire::handshake::Role;
use crate::wire::header::FrameHeader;
use crate::wire::ids::{Epoch, NodeId, Sequence, StreamId};
use crate::wire::limits::{MAX_ADDRESS_LEN, MAX_COPIES};
use crate::wire::message::{HeaderFields, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::tolerance::Tolerance;
use crate::wire::version::Version;

/// Fixed part of the body: write quorum (1) | copy count (1) | reserved (2).
const MEMBERSHIP_PREFIX_LEN: usize = 4;
/// Fixed part of one copy: node (8) | role (1) | mode (1) | address length (2).
const COPY_FIXED_LEN: usize = 12;
/// The 1.3 suffix: the epoch the membership was introduced in.
const SINCE_LEN: usize = 8;
/// Fixed part of the 1.4 suffix: previous write quorum (1) | previous copy
/// count (1) | reserved (2).
const PREVIOUS_PREFIX_LEN: usize = 4;
/// The largest list of copies with their addresses.
const MAX_COPIES_LEN: usize = MAX_COPIES * (COPY_FIXED_LEN + MAX_ADDRESS_LEN);

pub(crate) const EPOCH_CHANGE_MIN_BODY_LEN: usize = MEMBERSHIP_PREFIX_LEN;
pub(crate) const EPOCH_CHANGE_MAX_BODY_LEN: usize =
    MEMBERSHIP_PREFIX_LEN + MAX_COPIES_LEN + SINCE_LEN + PREVIOUS_PREFIX_LEN + MAX_COPIES_LEN;

/// How a replica takes part in the write path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ReplicationMode {
    /// Counts toward the write quorum: the host waits for it (up to the
    /// quorum).
    Sync = 1,
    /// Streamed behind the host's acknowledgement with a bounded lag; never
    /// counts toward the quorum.
    Async = 2,
}

impl ReplicationMode {
    fn from_code(code: u8) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Self::Sync),
            2 => Ok(Self::Async),
            _ => Err(DecodeError::malformed(
                "EpochChange.mode",
                FieldProblem::UnknownValue,
            )),
        }
    }
}

/// One copy of the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyInfo<'a> {
    /// The node holding it.
    pub node: NodeId,
    /// Primary or replica.
    pub role: Role,
    /// Sync or async (the primary's own copy is always sync).
    pub mode: ReplicationMode,
    /// Where its replication listener is (`10.0.0.7:4421`, `[fd00::7]:4421`,
    /// `store-7.example:4421`); 1 to `MAX_ADDRESS_LEN` bytes of UTF-8.
    pub address: &'a str,
}

/// A list of copies: borrowed from the caller when encoding, collected when
/// decoding (at most `MAX_COPIES` entries, their addresses still borrowed
/// from the receive buffer). That collection is the only allocation in the
/// decoder, on a path taken once per membership change.
///
/// (Not a `Cow`: `Cow<'a, [T]>` would make every message invariant in its
/// lifetime, so messages borrowed from different buffers could not even be
/// compared.)
#[derive(Debug, Clone)]
pub enum CopyList<'a> {
    /// A caller's slice.
    Borrowed(&'a [CopyInfo<'a>]),
    /// A decoded list.
    Owned(Vec<CopyInfo<'a>>),
}

impl<'a> Deref for CopyList<'a> {
    type Target = [CopyInfo<'a>];

    fn deref(&self) -> &Self::Target {
        match self {
            Self::Borrowed(copies) => copies,
            Self::Owned(copies) => copies,
        }
    }
}

impl PartialEq for CopyList<'_> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for CopyList<'_> {}

impl<'a> From<&'a [CopyInfo<'a>]> for CopyList<'a> {
    fn from(copies: &'a [CopyInfo<'a>]) -> Self {
        Self::Borrowed(copies)
    }
}

impl<'a> From<Vec<CopyInfo<'a>>> for CopyList<'a> {
    fn from(copies: Vec<CopyInfo<'a>>) -> Self {
        Self::Owned(copies)
    }
}

/// The copies of a volume and its write quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership<'a> {
    /// Copies, the primary's own included, that must be durable before the
    /// host is acknowledged: 1 to the number of sync copies.
    pub write_quorum: u8,
    /// Every copy: exactly one primary, node ids unique.
    pub copies: CopyList<'a>,
    /// From 1.3: the epoch this membership was introduced in (a copy refuses
    /// an older membership than its own). Absent before 1.3.
    pub since: Option<Epoch>,
    /// From 1.4: the membership this one replaced, while the change may not
    /// have reached a write quorum of its sync copies. Absent before 1.4.
    pub previous: Option<PreviousCopies<'a>>,
}

/// The 1.4 suffix of an `EpochChange`: the copies and write quorum of the
/// membership a change replaced, or none (`write_quorum` 0, no copies) once
/// the change reached a write quorum of the old sync copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCopies<'a> {
    /// The old write quorum: 0 with no copies, else 1 to the old sync copies.
    pub write_quorum: u8,
    /// The old copies; exactly one has role `Primary`: the old primary,
    /// the node that made the change (it holds the new membership).
    pub copies: CopyList<'a>,
}

impl PreviousCopies<'_> {
    /// The suffix saying there is no previous membership.
    pub const NONE: PreviousCopies<'static> = PreviousCopies {
        write_quorum: 0,
        copies: CopyList::Borrowed(&[]),
    };

    fn validate(&self) -> Result<(), Violation> {
        let copies: &[CopyInfo<'_>] = &self.copies;
        if copies.is_empty() {
            return match self.write_quorum {
                0 => Ok(()),
                _ => Err(Violation::new(
                    "EpochChange.previous_write_quorum",
                    FieldProblem::Inconsistent,
                )),
            };
        }
        validate_list(copies, self.write_quorum, PREVIOUS_FIELDS)
    }
}

/// The names a list of copies' violations are reported under.
struct ListFields {
    copies: &'static str,
    role: &'static str,
    write_quorum: &'static str,
}

const MEMBERSHIP_FIELDS: ListFields = ListFields {
    copies: "EpochChange.copies",
    role: "EpochChange.role",
    write_quorum: "EpochChange.write_quorum",
};

const PREVIOUS_FIELDS: ListFields = ListFields {
    copies: "EpochChange.previous_copies",
    role: "EpochChange.previous_role",
    write_quorum: "EpochChange.previous_write_quorum",
};

/// A membership's list of copies: 1 to `MAX_COPIES` copies, addresses of
/// 1 to `MAX_ADDRESS_LEN` bytes, node ids unique, exactly one primary and
/// that one sync, and 1 <= `write_quorum` <= the sync copies.
fn validate_list(
    copies: &[CopyInfo<'_>],
    write_quorum: u8,
    fields: ListFields,
) -> Result<(), Violation> {
    if copies.is_empty() || copies.len() > MAX_COPIES {
        return Err(Violation::new(fields.copies, FieldProblem::OutOfBounds));
    }
    for (i, copy) in copies.iter().enumerate() {
        if copy.address.is_empty() || copy.address.len() > MAX_ADDRESS_LEN {
            return Err(Violation::new(
                "EpochChange.address",
                FieldProblem::OutOfBounds,
            ));
        }
        let earlier = copies.get(..i).unwrap_or_default();
        if earlier.iter().any(|other| other.node == copy.node) {
            return Err(Violation::new(
                "EpochChange.node",
                FieldProblem::Inconsistent,
            ));
        }
    }
    let mut primaries = copies.iter().filter(|c| c.role == Role::Primary);
    match (primaries.next(), primaries.next()) {
        (Some(primary), None) if primary.mode == ReplicationMode::Sync => {}
        _ => return Err(Violation::new(fields.role, FieldProblem::Inconsistent)),
    }
    let sync = copies
        .iter()
        .filter(|c| c.mode == ReplicationMode::Sync)
        .count();
    if write_quorum == 0 || usize::from(write_quorum) > sync {
        return Err(Violation::new(
            fields.write_quorum,
            FieldProblem::Inconsistent,
        ));
    }
    Ok(())
}

/// Bytes of a list of copies on the wire.
fn copies_len(copies: &[CopyInfo<'_>]) -> usize {
    copies
        .iter()
        .map(|c| COPY_FIXED_LEN.saturating_add(c.address.len()))
        .fold(0, usize::saturating_add)
}

fn write_copies(copies: &[CopyInfo<'_>], w: &mut Writer<'_>) -> Result<(), EncodeError> {
    for copy in copies {
        let address_len = u16::try_from(copy.address.len())
            .map_err(|_| EncodeError::invalid("EpochChange.address", FieldProblem::OutOfBounds))?;
        w.u64(copy.node.0)?;
        w.u8(copy.role.code())?;
        w.u8(copy.mode as u8)?;
        w.u16(address_len)?;
        w.put(copy.address.as_bytes())?;
    }
    Ok(())
}

fn read_copies<'a>(
    r: &mut Reader<'a>,
    count: usize,
    field: &'static str,
) -> Result<Vec<CopyInfo<'a>>, DecodeError> {
    // Checked before allocating: the count sizes the list.
    if count > MAX_COPIES {
        return Err(DecodeError::malformed(field, FieldProblem::OutOfBounds));
    }
    let mut copies = Vec::with_capacity(count);
    for _ in 0..count {
        copies.push(read_copy(r)?);
    }
    Ok(copies)
}

impl<'a> Membership<'a> {
    /// The primary's entry.
    pub fn primary(&self) -> Option<&CopyInfo<'a>> {
        self.copies.iter().find(|c| c.role == Role::Primary)
    }

    /// Copies that count toward the quorum.
    pub fn sync_copies(&self) -> impl Iterator<Item = &CopyInfo<'a>> {
        self.copies
            .iter()
            .filter(|c| c.mode == ReplicationMode::Sync)
    }

    fn validate(&self) -> Result<(), Violation> {
        validate_list(&self.copies, self.write_quorum, MEMBERSHIP_FIELDS)?;
        match &self.previous {
            Some(previous) => previous.validate(),
            None => Ok(()),
        }
    }
}

/// Announces epoch `E` (the epoch in this frame's header) and the volume's
/// membership from `E` on. Sequenced: its `Ack` means the receiver has
/// durably stored the new epoch and membership, and from then on refuses
/// frames of older epochs with `StaleEpoch`. Header: stream, sequence,
/// epoch = the new epoch.
///
/// Body: write quorum (1) | copy count (1) | reserved (2), then per copy:
/// node id (8) | role (1) | mode (1) | address length (2) | address bytes;
/// from 1.3 then since (8), the epoch the membership was introduced in;
/// from 1.4 then the previous membership: write quorum (1) | copy count (1)
/// | reserved (2), then its copies as above (the one with role `Primary`
/// made the change), count and write quorum 0 when there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochChange<'a> {
    /// Stream carrying the change.
    pub stream: StreamId,
    /// Position in the stream.
    pub sequence: Sequence,
    /// The membership of the new epoch.
    pub membership: Membership<'a>,
}

impl<'a> WireMessage<'a> for EpochChange<'a> {
    const TYPE: MessageType = MessageType::EpochChange;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields {
            stream: self.stream,
            sequence: self.sequence,
            ..HeaderFields::default()
        }
    }

    fn body_len(&self) -> usize {
        let since = if self.membership.since.is_some() {
            SINCE_LEN
        } else {
            0
        };
        let previous = self.membership.previous.as_ref().map_or(0, |p| {
            PREVIOUS_PREFIX_LEN.saturating_add(copies_len(&p.copies))
        });
        (MEMBERSHIP_PREFIX_LEN + since + previous)
            .saturating_add(copies_len(&self.membership.copies))
    }

    fn validate(&self) -> Result<(), Violation> {
        self.membership.validate()
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let copies: &[CopyInfo<'a>] = &self.membership.copies;
        let count = u8::try_from(copies.len())
            .map_err(|_| EncodeError::invalid("EpochChange.copies", FieldProblem::OutOfBounds))?;
        w.u8(self.membership.write_quorum)?;
        w.u8(count)?;
        w.zeros::<2>()?;
        write_copies(copies, w)?;
        if let Some(since) = self.membership.since {
            w.u64(since.0)?;
        }
        if let Some(previous) = &self.membership.previous {
            let count = u8::try_from(previous.copies.len()).map_err(|_| {
                EncodeError::invalid("EpochChange.previous_copies", FieldProblem::OutOfBounds)
            })?;
            w.u8(previous.write_quorum)?;
            w.u8(count)?;
            w.zeros::<2>()?;
            write_copies(&previous.copies, w)?;
        }
        Ok(())
    }

    fn read(
        header: &FrameHeader,
        body: &'a [u8],
        tolerance: Tolerance,
    ) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let write_quorum = r.u8().field("EpochChange.write_quorum")?;
        let count = usize::from(r.u8().field("EpochChange.copies")?);
        let reserved = r.u16().field("EpochChange.reserved")?;
        tolerance.reserved_zero(reserved == 0, "EpochChange.reserved")?;
        if count == 0 {
            return Err(DecodeError::malformed(
                "EpochChange.copies",
                FieldProblem::OutOfBounds,
            ));
        }
        let copies = read_copies(&mut r, count, "EpochChange.copies")?;
        let since = if header.version >= Version::V1_3 {
            Some(Epoch(r.u64().field("EpochChange.since")?))
        } else {
            None
        };
        let previous = if header.version >= Version::V1_4 {
            let write_quorum = r.u8().field("EpochChange.previous_write_quorum")?;
            let count = usize::from(r.u8().field("EpochChange.previous_copies")?);
            let reserved = r.u16().field("EpochChange.reserved")?;
            tolerance.reserved_zero(reserved == 0, "EpochChange.reserved")?;
            let copies = read_copies(&mut r, count, "EpochChange.previous_copies")?;
            Some(PreviousCopies {
                write_quorum,
                copies: CopyList::Owned(copies),
            })
        } else {
            None
        };
        tolerance.end_of_body(&r, "EpochChange")?;
        let membership = Membership {
            write_quorum,
            copies: CopyList::Owned(copies),
            since,
            previous,
        };
        membership.validate()?;
        Ok(Self {
            stream: header.stream,
            sequence: header.sequence,
            membership,
        })
    }
}

fn read_copy<'a>(r: &mut Reader<'a>) -> Result<CopyInfo<'a>, DecodeError> {
    let node = NodeId(r.u64().field("EpochChange.node")?);
    let role = Role::from_code(r.u8().field("EpochChange.role")?, "EpochChange.role")?;
    let mode = ReplicationMode::from_code(r.u8().field("EpochChange.mode")?)?;
    let address_len = usize::from(r.u16().field("EpochChange.address")?);
    if address_len == 0 || address_len > MAX_ADDRESS_LEN {
        return Err(DecodeError::malformed(
            "EpochChange.address",
            FieldProblem::OutOfBounds,
        ));
    }
    let address = std::str::from_utf8(r.bytes(address_len).field("EpochChange.address")?)
        .map_err(|_| DecodeError::malformed("EpochChange.address", FieldProblem::NotUtf8))?;
    Ok(CopyInfo {
        node,
        role,
        mode,
        address,
    })
}
