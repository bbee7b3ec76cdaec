//! One NVMe/TCP connection (one queue) from the host side.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{InitiatorError, Result};
use crate::tcp::{
    check_icresp_digests, negotiated, Decoded, DecoderLimits, DigestOptions, IcReq, PduDecoder,
    PduHeader, Role, TxParams,
};

/// Receive buffer slack beyond the largest PDU we accept.
const HEADER_SLACK: usize = 512;

/// A connected, initialized NVMe/TCP queue.
pub struct Connection {
    stream: TcpStream,
    decoder: PduDecoder,
    tx: TxParams,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    tx_buf: Vec<u8>,
    maxh2cdata: u32,
    busy_poll: bool,
}

impl Connection {
    /// Connects and runs the ICReq/ICResp exchange. `max_data` bounds the
    /// data one C2HData PDU may carry (the largest transfer we issue).
    pub fn open(addr: SocketAddr, digests: DigestOptions, max_data: u32) -> Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        stream.set_nodelay(true)?;
        let limits = DecoderLimits {
            max_in_capsule_data: 0,
            max_data_per_pdu: max_data,
        };
        let rx_len = 2 * (max_data as usize + HEADER_SLACK);
        let mut conn = Connection {
            stream,
            decoder: PduDecoder::new(Role::Host, limits),
            tx: TxParams::PLAIN,
            rx: vec![0; rx_len],
            rx_start: 0,
            rx_end: 0,
            tx_buf: Vec::with_capacity(max_data as usize + HEADER_SLACK),
            maxh2cdata: 0,
            busy_poll: false,
        };
        let icreq = IcReq {
            pfv: 0,
            hpda: 0,
            digest: digests,
            maxr2t: 0,
        };
        conn.send(&PduHeader::IcReq(icreq), &[])?;
        let icresp = match conn.recv()?.0 {
            PduHeader::IcResp(icresp) => icresp,
            other => {
                return Err(InitiatorError::Protocol(format!(
                    "expected ICResp, got {:?}",
                    other.pdu_type()
                )))
            }
        };
        check_icresp_digests(&icreq, &icresp)?;
        let agreed = negotiated(Role::Host, &icreq, &icresp);
        conn.decoder.establish(agreed.rx)?;
        conn.tx = agreed.tx;
        conn.maxh2cdata = icresp.maxh2cdata;
        Ok(conn)
    }

    /// Spin on a non-blocking socket instead of sleeping in the kernel:
    /// a core per connection, for measuring a target's latency without the
    /// initiator's wake-ups (SPDK's perf polls the same way).
    pub fn set_busy_poll(&mut self, on: bool) -> Result<()> {
        self.stream.set_nonblocking(on)?;
        self.busy_poll = on;
        Ok(())
    }

    /// Most data per H2CData PDU the target accepts.
    pub fn maxh2cdata(&self) -> u32 {
        self.maxh2cdata
    }

    /// Sends one PDU with `data` now (with anything queued before it).
    pub fn send(&mut self, header: &PduHeader, data: &[u8]) -> Result<()> {
        self.queue(header, data)?;
        self.flush()
    }

    /// Queues one PDU; it goes out with the next [`Self::flush`], or
    /// before this connection next waits for the target. Commands issued
    /// together then cost one write, not one each.
    pub fn queue(&mut self, header: &PduHeader, data: &[u8]) -> Result<()> {
        let layout = header.layout(&self.tx, data.len())?;
        let start = self.tx_buf.len();
        self.tx_buf.resize(start + layout.pdu_len, 0);
        header.encode(&self.tx, data, &mut self.tx_buf[start..])?;
        Ok(())
    }

    /// Bounds how long a receive may block (`None`: for ever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<()> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> Result<()> {
        let mut sent = 0;
        while sent < self.tx_buf.len() {
            match self.stream.write(&self.tx_buf[sent..]) {
                Ok(0) => return Err(InitiatorError::Closed),
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.tx_buf.clear();
        Ok(())
    }

    /// Receives the next PDU: its header and its data (valid until the next
    /// call). A data digest mismatch or a TermReq is an error.
    pub fn recv(&mut self) -> Result<(PduHeader, &[u8])> {
        loop {
            let buffered = &self.rx[self.rx_start..self.rx_end];
            match self.decoder.decode(buffered)? {
                Decoded::Ready(pdu) => {
                    let header = *pdu.header();
                    if let PduHeader::C2hTermReq(term) = header {
                        return Err(InitiatorError::Terminated {
                            fes: term.fes,
                            fei: term.fei,
                        });
                    }
                    let data_range = pdu.layout().data_range();
                    pdu.data()?;
                    let start = self.rx_start;
                    self.rx_start += pdu.wire_len();
                    let data = &self.rx[start + data_range.start..start + data_range.end];
                    return Ok((header, data));
                }
                Decoded::NeedMore(more) => self.fill(more)?,
            }
        }
    }

    /// Whether a whole PDU is already buffered (so `recv` will not block).
    pub fn has_buffered_pdu(&self) -> bool {
        matches!(
            self.decoder.decode(&self.rx[self.rx_start..self.rx_end]),
            Ok(Decoded::Ready(_)) | Err(_)
        )
    }

    /// Reads at least `more` bytes into the receive buffer.
    fn fill(&mut self, more: usize) -> Result<()> {
        // Whatever we owe the target goes out before we wait for it.
        self.flush()?;
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
        if self.rx_end + more > self.rx.len() {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx_end + more > self.rx.len() {
            return Err(InitiatorError::Protocol(format!(
                "PDU larger than the {}-byte receive buffer",
                self.rx.len()
            )));
        }
        let target = self.rx_end + more;
        while self.rx_end < target {
            let n = match self.stream.read(&mut self.rx[self.rx_end..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                return Err(InitiatorError::Closed);
            }
            self.rx_end += n;
        }
        Ok(())
    }
}
