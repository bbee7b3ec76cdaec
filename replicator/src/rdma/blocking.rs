//! [`BlockingLink`]: an [`RdmaLink`] as a blocking `Read + Write` stream
//! with socket-like timeouts, for the control threads' PSK handshake
//! (`link::handshake` runs on it exactly as on a `TcpStream`) before the
//! link goes to its reactor.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use super::error::RdmaError;
use super::link::RdmaLink;
use crate::link::handshake::HandshakeStream;

/// Pause between two polls while waiting (control threads only).
const WAIT: Duration = Duration::from_micros(100);

/// A blocking view of an RDMA link.
pub struct BlockingLink {
    link: RdmaLink,
    rx: Vec<u8>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

fn io_error(error: RdmaError) -> io::Error {
    let kind = if error.closes_link() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, error)
}

impl BlockingLink {
    /// Wraps `link` (no timeouts: block until done).
    pub fn new(link: RdmaLink) -> Self {
        BlockingLink {
            link,
            rx: Vec::new(),
            read_timeout: None,
            write_timeout: None,
        }
    }

    /// The link and the bytes received but not read yet (the start of the
    /// stream after the handshake), for the reactor.
    pub fn into_parts(self) -> (RdmaLink, Vec<u8>) {
        (self.link, self.rx)
    }

    fn expired(deadline: Option<Instant>) -> bool {
        deadline.is_some_and(|deadline| Instant::now() >= deadline)
    }
}

impl Read for BlockingLink {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self
            .read_timeout
            .and_then(|t| Instant::now().checked_add(t));
        while self.rx.is_empty() {
            self.link.poll(&mut self.rx).map_err(io_error)?;
            if !self.rx.is_empty() {
                break;
            }
            if Self::expired(deadline) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(WAIT);
        }
        let n = buf.len().min(self.rx.len());
        for (to, from) in buf.iter_mut().zip(self.rx.drain(..n)) {
            *to = from;
        }
        Ok(n)
    }
}

impl Write for BlockingLink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self
            .write_timeout
            .and_then(|t| Instant::now().checked_add(t));
        loop {
            let n = self.link.send(buf).map_err(io_error)?;
            if n > 0 {
                return Ok(n);
            }
            // Credits come back with what the peer sends: keep it.
            self.link.poll(&mut self.rx).map_err(io_error)?;
            if Self::expired(deadline) {
                return Err(io::ErrorKind::TimedOut.into());
            }
            std::thread::sleep(WAIT);
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Every byte taken is already posted as a SEND.
        Ok(())
    }
}

impl HandshakeStream for BlockingLink {
    fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_timeout)
    }
    fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_timeout)
    }
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout = timeout;
        Ok(())
    }
}
