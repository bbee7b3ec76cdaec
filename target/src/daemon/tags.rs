//! The 64-bit tag on every ring operation keeld submits: what it is and
//! whose. A connection's slot is reused only after all of its operations
//! have completed, and a command's only after all of its disk operations,
//! so a tag never reaches the wrong owner.

/// What a completed operation was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TagKind {
    /// Accept on listener `conn`.
    Accept = 1,
    Recv = 2,
    Send = 3,
    /// Disk operation for command `command`, buffer `segment`.
    Disk = 4,
    /// Disk read for a Compare into buffer `segment`.
    CompareRead = 5,
    /// Replication: receive on peer link `conn`.
    ReplRecv = 6,
    /// Replication: send on peer link `conn`.
    ReplSend = 7,
    /// Replication: local I/O `conn`, buffer `segment`.
    ReplLocal = 8,
    /// Replication: persist step `segment` (0 flush, 1 record write).
    ReplPersist = 9,
    /// Replication: the RDMA link `conn`'s completion channel became
    /// readable (a poll on its descriptor).
    ReplWake = 10,
}

/// Most connections one shard serves (24 bits of tag).
pub(crate) const MAX_CONNECTIONS_PER_SHARD: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    pub kind: TagKind,
    pub conn: usize,
    pub command: usize,
    pub segment: usize,
}

impl Tag {
    pub fn new(kind: TagKind, conn: usize, command: usize, segment: usize) -> Tag {
        debug_assert!(conn < 1 << 24 && command < 1 << 16 && segment < 1 << 16);
        Tag {
            kind,
            conn,
            command,
            segment,
        }
    }

    pub fn raw(self) -> u64 {
        ((self.kind as u64) << 56)
            | ((self.conn as u64 & 0xFF_FFFF) << 32)
            | ((self.command as u64 & 0xFFFF) << 16)
            | (self.segment as u64 & 0xFFFF)
    }

    pub fn parse(raw: u64) -> Option<Tag> {
        let kind = match raw >> 56 {
            1 => TagKind::Accept,
            2 => TagKind::Recv,
            3 => TagKind::Send,
            4 => TagKind::Disk,
            5 => TagKind::CompareRead,
            6 => TagKind::ReplRecv,
            7 => TagKind::ReplSend,
            8 => TagKind::ReplLocal,
            9 => TagKind::ReplPersist,
            10 => TagKind::ReplWake,
            _ => return None,
        };
        Some(Tag {
            kind,
            conn: ((raw >> 32) & 0xFF_FFFF) as usize,
            command: ((raw >> 16) & 0xFFFF) as usize,
            segment: (raw & 0xFFFF) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        for kind in [
            TagKind::Accept,
            TagKind::Recv,
            TagKind::Send,
            TagKind::Disk,
            TagKind::CompareRead,
            TagKind::ReplRecv,
            TagKind::ReplSend,
            TagKind::ReplLocal,
            TagKind::ReplPersist,
            TagKind::ReplWake,
        ] {
            let tag = Tag::new(kind, 0xAB_CDEF, 0x1234, 15);
            assert_eq!(Tag::parse(tag.raw()), Some(tag));
        }
        assert_eq!(Tag::parse(0), None);
    }
}
