//! Handshake messages: `Hello`, `Challenge` and `Response`.
//!
//! Their meaning (who sends what, what the MAC covers) lives in
//! [`crate::auth`]; this module only puts them on the wire.

use std::fmt;

use subtle::ConstantTimeEq;

use crate::wire::bytes::{Reader, Required, Writer};
use crate::wire::error::{DecodeError, EncodeError, FieldProblem};
use crate::wire::header::FrameHeader;
use crate::wire::ids::NodeId;
use crate::wire::message::{HeaderFields, WireMessage};
use crate::wire::message_type::MessageType;
use crate::wire::tolerance::Tolerance;
use crate::wire::version::{Version, VersionRange};

/// Bytes in a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes in an authentication tag (HMAC-SHA256 output).
pub const AUTH_TAG_LEN: usize = 32;

pub(crate) const HELLO_BODY_LEN: usize = 48;
pub(crate) const CHALLENGE_BODY_LEN: usize = 48;
pub(crate) const RESPONSE_BODY_LEN: usize = AUTH_TAG_LEN;

/// A one-time random value contributed by one side of a handshake. It must
/// come from a cryptographically secure generator and never be reused: the
/// freshness of both nonces is what makes a recorded handshake useless.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; NONCE_LEN]);

/// An HMAC-SHA256 tag proving knowledge of the pre-shared key. Equality is
/// constant-time so that comparing tags leaks nothing about them.
#[derive(Clone, Copy)]
pub struct AuthTag(pub [u8; AUTH_TAG_LEN]);

impl PartialEq for AuthTag {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for AuthTag {}

fn write_hex(f: &mut fmt::Formatter<'_>, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(f, "{name}(")?;
    for byte in bytes {
        write!(f, "{byte:02x}")?;
    }
    write!(f, ")")
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, "Nonce", &self.0)
    }
}

impl fmt::Debug for AuthTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, "AuthTag", &self.0)
    }
}

/// What a node is on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Role {
    /// The copy that serves host writes and streams them.
    Primary = 1,
    /// A copy that applies the primary's stream.
    Replica = 2,
}

impl Role {
    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(code: u8, field: &'static str) -> Result<Self, DecodeError> {
        match code {
            1 => Ok(Self::Primary),
            2 => Ok(Self::Replica),
            _ => Err(DecodeError::malformed(field, FieldProblem::UnknownValue)),
        }
    }
}

fn read_version(r: &mut Reader<'_>, field: &'static str) -> Result<Version, DecodeError> {
    Ok(Version::new(r.u8().field(field)?, r.u8().field(field)?))
}

fn write_version(w: &mut Writer<'_>, version: Version) -> Result<(), EncodeError> {
    w.u8(version.major)?;
    w.u8(version.minor)
}

/// Initiator -> acceptor, first frame of a link. The header carries the
/// volume the link is for and the initiator's epoch of it.
///
/// Body (48 bytes): min version (2) | max version (2) | role (1) |
/// reserved (3) | node id (8) | nonce (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Hello {
    /// Versions the initiator can speak.
    pub versions: VersionRange,
    /// The initiator's role (a primary, in this version).
    pub role: Role,
    /// The initiator's node.
    pub node: NodeId,
    /// The initiator's fresh nonce.
    pub nonce: Nonce,
}

impl<'a> WireMessage<'a> for Hello {
    const TYPE: MessageType = MessageType::Hello;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields::default()
    }

    fn body_len(&self) -> usize {
        HELLO_BODY_LEN
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_version(w, self.versions.min())?;
        write_version(w, self.versions.max())?;
        w.u8(self.role.code())?;
        w.zeros::<3>()?;
        w.u64(self.node.0)?;
        w.put(&self.nonce.0)
    }

    fn read(_: &FrameHeader, body: &'a [u8], tolerance: Tolerance) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let min = read_version(&mut r, "Hello.versions")?;
        let max = read_version(&mut r, "Hello.versions")?;
        let versions = VersionRange::new(min, max).ok_or(DecodeError::malformed(
            "Hello.versions",
            FieldProblem::Inconsistent,
        ))?;
        let role = Role::from_code(r.u8().field("Hello.role")?, "Hello.role")?;
        let reserved = r.array::<3>().field("Hello.reserved")?;
        tolerance.reserved_zero(reserved == [0; 3], "Hello.reserved")?;
        let node = NodeId(r.u64().field("Hello.node")?);
        let nonce = Nonce(r.array().field("Hello.nonce")?);
        tolerance.end_of_body(&r, "Hello")?;
        Ok(Self {
            versions,
            role,
            node,
            nonce,
        })
    }
}

/// Acceptor -> initiator, answering `Hello`. The header carries the chosen
/// version and the acceptor's epoch of the volume.
///
/// Body (48 bytes): chosen version (2) | role (1) | reserved (5) |
/// node id (8) | nonce (32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Challenge {
    /// The version the link will use: the highest both sides speak.
    pub version: Version,
    /// The acceptor's role (a replica, in this version).
    pub role: Role,
    /// The acceptor's node.
    pub node: NodeId,
    /// The acceptor's fresh nonce.
    pub nonce: Nonce,
}

impl<'a> WireMessage<'a> for Challenge {
    const TYPE: MessageType = MessageType::Challenge;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields::default()
    }

    fn body_len(&self) -> usize {
        CHALLENGE_BODY_LEN
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        write_version(w, self.version)?;
        w.u8(self.role.code())?;
        w.zeros::<5>()?;
        w.u64(self.node.0)?;
        w.put(&self.nonce.0)
    }

    fn read(_: &FrameHeader, body: &'a [u8], tolerance: Tolerance) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let version = read_version(&mut r, "Challenge.version")?;
        let role = Role::from_code(r.u8().field("Challenge.role")?, "Challenge.role")?;
        let reserved = r.array::<5>().field("Challenge.reserved")?;
        tolerance.reserved_zero(reserved == [0; 5], "Challenge.reserved")?;
        let node = NodeId(r.u64().field("Challenge.node")?);
        let nonce = Nonce(r.array().field("Challenge.nonce")?);
        tolerance.end_of_body(&r, "Challenge")?;
        Ok(Self {
            version,
            role,
            node,
            nonce,
        })
    }
}

/// Either side's proof of the key: first the initiator's, then (only once
/// that one verified) the acceptor's.
///
/// Body (32 bytes): HMAC-SHA256 tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response {
    /// The tag.
    pub tag: AuthTag,
}

impl<'a> WireMessage<'a> for Response {
    const TYPE: MessageType = MessageType::Response;

    fn header_fields(&self) -> HeaderFields {
        HeaderFields::default()
    }

    fn body_len(&self) -> usize {
        RESPONSE_BODY_LEN
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.put(&self.tag.0)
    }

    fn read(_: &FrameHeader, body: &'a [u8], tolerance: Tolerance) -> Result<Self, DecodeError> {
        let mut r = Reader::new(body);
        let tag = AuthTag(r.array().field("Response.tag")?);
        tolerance.end_of_body(&r, "Response")?;
        Ok(Self { tag })
    }
}
