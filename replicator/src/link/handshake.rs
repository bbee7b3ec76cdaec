//! The blocking connection setup keeld's control thread runs on a freshly
//! connected (or accepted) `TcpStream` before handing the socket to the
//! reactor: the authenticated handshake of [`crate::auth`], carried by the
//! wire's `Hello` / `Challenge` / `Response` frames.
//!
//! Both sides speak exactly [`LINK_VERSION`] (1.2): the
//! core state machines need its fields, so an older peer is refused during the
//! handshake (`Nack(UnsupportedVersion)`) rather than failing later.
//!
//! The whole handshake must finish within `timeout`; the socket's own read
//! and write timeouts are restored afterwards. Bytes are read no further
//! than the end of the handshake's last frame, so nothing the peer sends
//! after it is lost when the socket changes hands. Nonces come from the
//! operating system's CSPRNG (`/dev/urandom`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A blocking byte stream the handshake can run on: a `TcpStream`, or an
/// RDMA link behind a blocking adapter (`rdma::BlockingLink`). Timeouts
/// behave like a socket's: `None` blocks, an expired one fails the read or
/// write with `WouldBlock` or `TimedOut`.
pub trait HandshakeStream: Read + Write {
    /// The current read timeout.
    fn read_timeout(&self) -> std::io::Result<Option<Duration>>;
    /// The current write timeout.
    fn write_timeout(&self) -> std::io::Result<Option<Duration>>;
    /// Sets the read timeout (never zero).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()>;
    /// Sets the write timeout (never zero).
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl HandshakeStream for TcpStream {
    fn read_timeout(&self) -> std::io::Result<Option<Duration>> {
        TcpStream::read_timeout(self)
    }
    fn write_timeout(&self) -> std::io::Result<Option<Duration>> {
        TcpStream::write_timeout(self)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_write_timeout(self, timeout)
    }
}

use crate::auth::{
    Acceptor, AcceptorConfig, Initiator, InitiatorConfig, Outcome, Outgoing, PeerInfo,
    PreSharedKey, Step, VolumeCatalog,
};
use crate::link::{LinkError, LINK_VERSION};
use crate::wire::{
    Decoded, Epoch, Frame, FrameDecoder, Limits, NodeId, Nonce, VersionRange, VolumeId, NONCE_LEN,
};

/// Handshake frames are small (48 bytes at most in 1.1); anything larger
/// is refused before it is waited for.
const MAX_HANDSHAKE_PAYLOAD: u32 = 1024;

/// The versions a link offers and accepts: only [`LINK_VERSION`].
pub fn link_versions() -> VersionRange {
    VersionRange::new(LINK_VERSION, LINK_VERSION).unwrap_or(VersionRange::SUPPORTED)
}

/// Opens a link as the initiator (the primary `me`, at `epoch` of
/// `volume`): sends `Hello`, answers the `Challenge`, checks the acceptor's
/// proof. Returns who is on the other end.
pub fn connect(
    stream: &mut impl HandshakeStream,
    key: &PreSharedKey,
    me: NodeId,
    volume: VolumeId,
    epoch: Epoch,
    timeout: Duration,
) -> Result<PeerInfo, LinkError> {
    let config = InitiatorConfig {
        key: key.clone(),
        node: me,
        volume,
        epoch,
        versions: link_versions(),
    };
    let (mut initiator, hello) = Initiator::start(config, fresh_nonce()?)?;
    with_connection(stream, timeout, |conn| {
        conn.send(&hello)?;
        conn.run(|frame| initiator.receive(frame))
    })
}

/// Takes a link as the acceptor (the replica `me`): waits for `Hello`,
/// checks it against `volumes` (the volumes held here and their epochs),
/// challenges, checks the initiator's proof and proves itself. Returns who
/// is on the other end.
pub fn accept(
    stream: &mut impl HandshakeStream,
    key: &PreSharedKey,
    me: NodeId,
    volumes: &impl VolumeCatalog,
    timeout: Duration,
) -> Result<PeerInfo, LinkError> {
    let config = AcceptorConfig {
        key: key.clone(),
        node: me,
        versions: link_versions(),
    };
    let mut acceptor = Acceptor::new(config, fresh_nonce()?)?;
    with_connection(stream, timeout, |conn| {
        conn.run(|frame| acceptor.receive(frame, volumes))
    })
}

fn fresh_nonce() -> Result<Nonce, LinkError> {
    let mut nonce = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut nonce))
        .map_err(LinkError::Random)?;
    Ok(Nonce(nonce))
}

/// Runs `f` with the socket's timeouts under the handshake's control, then
/// puts them back whatever happened.
fn with_connection<S: HandshakeStream, T>(
    stream: &mut S,
    timeout: Duration,
    f: impl FnOnce(&mut Connection<'_, S>) -> Result<T, LinkError>,
) -> Result<T, LinkError> {
    let read_timeout = stream.read_timeout()?;
    let write_timeout = stream.write_timeout()?;
    let deadline = Instant::now().checked_add(timeout);
    let result = f(&mut Connection {
        stream: &mut *stream,
        deadline,
        received: Vec::new(),
        decoder: FrameDecoder::new(Limits::with_max_payload(MAX_HANDSHAKE_PAYLOAD)),
    });
    let restored = stream
        .set_read_timeout(read_timeout)
        .and_then(|()| stream.set_write_timeout(write_timeout));
    let value = result?;
    restored?;
    Ok(value)
}

struct Connection<'a, S> {
    stream: &'a mut S,
    /// `None` if the timeout is too large to represent: no deadline.
    deadline: Option<Instant>,
    /// Bytes of the frame being received.
    received: Vec<u8>,
    decoder: FrameDecoder,
}

impl<S: HandshakeStream> Connection<'_, S> {
    /// Time left, as a socket timeout (never zero, which would mean
    /// "block forever").
    fn remaining(&self) -> Result<Option<Duration>, LinkError> {
        match self.deadline {
            None => Ok(None),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    Err(LinkError::Timeout)
                } else {
                    Ok(Some(left))
                }
            }
        }
    }

    fn send(&mut self, outgoing: &Outgoing) -> Result<(), LinkError> {
        let mut bytes = vec![0u8; outgoing.message.encoded_len()];
        let len = outgoing.encode(&mut bytes)?;
        self.stream.set_write_timeout(self.remaining()?)?;
        self.stream
            .write_all(bytes.get(..len).unwrap_or_default())
            .map_err(io_error)?;
        self.stream.flush().map_err(io_error)
    }

    /// Feeds frames to `receive` and sends what it answers until the
    /// handshake is over.
    fn run(&mut self, mut receive: impl FnMut(&Frame<'_>) -> Step) -> Result<PeerInfo, LinkError> {
        loop {
            let step = self.next_frame(&mut receive)?;
            let failed = matches!(step.outcome, Outcome::Failed(_));
            if let Some(outgoing) = &step.send {
                let sent = self.send(outgoing);
                // A failed handshake's Nack is a courtesy: its own error is
                // the one to report.
                if !failed {
                    sent?;
                }
            }
            match step.outcome {
                Outcome::Pending => {}
                Outcome::Authenticated(peer) => return Ok(peer),
                Outcome::Failed(failure) => return Err(LinkError::Auth(failure)),
            }
        }
    }

    /// Receives the next frame and hands it to `receive`. Reads exactly the
    /// bytes the decoder asks for, never past the frame's end.
    fn next_frame(&mut self, receive: impl FnOnce(&Frame<'_>) -> Step) -> Result<Step, LinkError> {
        self.received.clear();
        loop {
            let more = match self.decoder.decode(&self.received)? {
                Decoded::Frame(frame) => return Ok(receive(&frame)),
                // Only a newer minor's frames are skipped: nothing a 1.1
                // handshake partner may send.
                Decoded::Skipped(header) => {
                    return Err(LinkError::VersionMismatch {
                        expected: LINK_VERSION,
                        got: header.version,
                    })
                }
                Decoded::NeedMore(more) => more,
            };
            self.read_more(more)?;
        }
    }

    /// Reads at least one and at most `wanted` bytes, so that the decoder
    /// sees garbage as soon as it arrives (the magic is checked on the
    /// first byte) and nothing past the frame is taken from the socket.
    fn read_more(&mut self, wanted: usize) -> Result<(), LinkError> {
        let start = self.received.len();
        self.received.resize(start.saturating_add(wanted), 0);
        loop {
            self.stream.set_read_timeout(self.remaining()?)?;
            let target = self.received.get_mut(start..).unwrap_or_default();
            match self.stream.read(target) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => {
                    self.received.truncate(start.saturating_add(n));
                    return Ok(());
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(io_error(error)),
            }
        }
    }
}

/// A socket timeout is the handshake's deadline passing.
fn io_error(error: std::io::Error) -> LinkError {
    match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => LinkError::Timeout,
        _ => LinkError::Io(error),
    }
}
