//! Two ends of Keel's RDMA replication link exchanging real wire frames, for
//! the soft-RoCE guest test (`target/tests/guest/rdma-transport.sh`).
//!
//! ```sh
//! rdma_frames serve 192.0.2.1:4791 --frames 600 --links 2
//! rdma_frames send  192.0.2.1:4791 --frames 600 --window 64
//! ```
//!
//! `send` streams `--frames` `Write` frames (encoded by `link::encode`,
//! payloads of 4 KiB to 128 KiB filled from a per-sequence pattern) keeping
//! up to `--window` unacknowledged, and waits for an `Ack` of each. `serve`
//! accepts `--links` links one after the other, decodes every frame with
//! `link::decode` (which checks the CRC32C of header and payload), checks
//! the sequence and the payload against the pattern, and acks each. Its
//! first link must bring exactly `--frames` frames and then disconnect; the
//! later ones (whose sender the test kills with SIGKILL) only have to end in
//! a link-down error. Both print counters and a CRC32C over every payload,
//! and `PASS` when all held.

use std::error::Error;
use std::time::{Duration, Instant};

use keel_replicator::core::Frame;
use keel_replicator::link::{self, Decoded, Envelope, NoAddresses};
use keel_replicator::rdma::{RdmaConfig, RdmaError, RdmaLink, RdmaListener, RdmaStats};
use keel_replicator::wire::{ByteRange, Epoch, Sequence, StreamId, VolumeId};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const ENVELOPE: Envelope = Envelope {
    volume: VolumeId(1),
    stream: StreamId(1),
    epoch: Epoch(1),
};

/// Payload size of frame `seq`: a multiple of 4 KiB from 4 KiB to 128 KiB.
fn size_of(seq: u64) -> usize {
    4096 * (1 + (mix(seq) % 32) as usize)
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The payload of frame `seq`.
fn pattern(seq: u64, out: &mut Vec<u8>) {
    out.clear();
    let len = size_of(seq);
    let mut state = mix(seq ^ 0x5eed);
    while out.len() < len {
        state = mix(state);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a value").into()),
    }
}

fn config(args: &[String]) -> Result<RdmaConfig> {
    let default = RdmaConfig::default();
    Ok(RdmaConfig {
        recv_depth: arg(args, "--recv-depth", default.recv_depth)?,
        send_depth: arg(args, "--send-depth", default.send_depth)?,
        slot_size: arg(args, "--slot-size", default.slot_size)?,
        ..default
    })
}

fn print_stats(who: &str, stats: &RdmaStats, crc: u32, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!(
        "{who}: RDMA SENDs: data {} + credit-only {}, received {}; stream bytes sent {}, \
         received {}; send calls stopped by credits {}; payload crc32c {crc:08x}; {:.1} s, \
         {:.1} MB/s out, {:.1} MB/s in",
        stats.messages_sent,
        stats.credit_messages_sent,
        stats.messages_received,
        stats.bytes_sent,
        stats.bytes_received,
        stats.credit_stalls,
        secs,
        stats.bytes_sent as f64 / secs / 1e6,
        stats.bytes_received as f64 / secs / 1e6,
    );
}

/// Sends `tx` as far as the link takes it.
fn flush(link: &mut RdmaLink, tx: &mut Vec<u8>) -> std::result::Result<(), RdmaError> {
    let taken = link.send(tx)?;
    tx.drain(..taken);
    Ok(())
}

fn send(address: &str, args: &[String]) -> Result<()> {
    let frames: u64 = arg(args, "--frames", 600)?;
    let window: u64 = arg(args, "--window", 64)?;
    let config = config(args)?;
    let deadline = Instant::now() + Duration::from_secs(arg(args, "--connect-timeout", 30)?);
    let mut link = loop {
        match RdmaLink::connect(address, &config) {
            Ok(link) => break link,
            Err(error) if Instant::now() < deadline => {
                eprintln!("send: connect: {error}; retrying");
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(error) => return Err(error.into()),
        }
    };
    println!("send: connected to {address} (credits {})", link.credits());
    let start = Instant::now();
    let (mut next, mut acked) = (1u64, 0u64);
    let (mut tx, mut rx, mut payload) = (Vec::new(), Vec::new(), Vec::new());
    let mut crc = 0u32;
    let mut payload_bytes = 0u64;
    while acked < frames {
        while next <= frames && next - acked <= window && tx.len() < (1 << 20) {
            pattern(next, &mut payload);
            crc = crc32c::crc32c_append(crc, &payload);
            payload_bytes += payload.len() as u64;
            let frame: Frame<()> = Frame::Write {
                seq: Sequence(next),
                position: None,
                range: ByteRange::new(next << 20, u32::try_from(payload.len())?),
                data: (),
                fua: false,
            };
            link::encode(&ENVELOPE, &frame, &payload, &NoAddresses, &mut tx)?;
            next += 1;
        }
        flush(&mut link, &mut tx)?;
        link.poll(&mut rx)?;
        loop {
            match link::decode(&rx)? {
                Decoded::NeedMore(_) => break,
                Decoded::Frame {
                    frame:
                        Frame::Ack {
                            durable_through, ..
                        },
                    consumed,
                    ..
                } => {
                    if durable_through.0 <= acked || durable_through.0 >= next {
                        return Err(format!("ack {durable_through} out of order").into());
                    }
                    acked = durable_through.0;
                    rx.drain(..consumed);
                }
                other => return Err(format!("unexpected frame {other:?}").into()),
            }
        }
    }
    // Let the last SENDs complete before disconnecting.
    let drain = Instant::now();
    while !link.sends_idle() && drain.elapsed() < Duration::from_secs(10) {
        link.poll(&mut rx)?;
    }
    print_stats("send", &link.stats(), crc, start.elapsed());
    println!("send: frames {frames} acked {acked}, payload bytes {payload_bytes}");
    if arg(args, "--hang", 0u8)? == 1 {
        println!("send: holding the link open");
        loop {
            link.poll(&mut rx)?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    link.close();
    println!("send: PASS");
    Ok(())
}

/// Serves one link; returns the frames it got and how it ended.
fn serve_link(mut link: RdmaLink) -> Result<(u64, u32, RdmaError)> {
    let start = Instant::now();
    let (mut tx, mut rx, mut expected) = (Vec::new(), Vec::new(), Vec::new());
    let mut crc = 0u32;
    let mut last = 0u64;
    let mut payload_bytes = 0u64;
    let ended = loop {
        if let Err(error) = flush(&mut link, &mut tx) {
            break error;
        }
        match link.poll(&mut rx) {
            Ok(_) => {}
            Err(error) => break error,
        }
        loop {
            match link::decode(&rx)? {
                Decoded::NeedMore(_) => break,
                Decoded::Frame {
                    envelope,
                    frame:
                        Frame::Write {
                            seq, range, data, ..
                        },
                    consumed,
                    ..
                } => {
                    if envelope != ENVELOPE || seq.0 != last + 1 || range.offset != seq.0 << 20 {
                        return Err(format!("frame {seq} out of order after {last}").into());
                    }
                    let got = rx.get(data).ok_or("write data outside the buffer")?;
                    pattern(seq.0, &mut expected);
                    if got != expected.as_slice() {
                        return Err(format!("frame {seq}: payload differs").into());
                    }
                    crc = crc32c::crc32c_append(crc, got);
                    payload_bytes += got.len() as u64;
                    last = seq.0;
                    rx.drain(..consumed);
                    let ack: Frame<()> = Frame::Ack {
                        durable_through: seq,
                        standing: None,
                    };
                    link::encode(&ENVELOPE, &ack, &[], &NoAddresses, &mut tx)?;
                }
                other => return Err(format!("unexpected frame {other:?}").into()),
            }
        }
    };
    print_stats("serve", &link.stats(), crc, start.elapsed());
    println!("serve: frames {last}, payload bytes {payload_bytes}");
    Ok((last, crc, ended))
}

fn serve(address: &str, args: &[String]) -> Result<()> {
    let frames: u64 = arg(args, "--frames", 600)?;
    let links: u32 = arg(args, "--links", 1)?;
    let listener = RdmaListener::bind(address, config(args)?)?;
    println!("serve: listening on {address}");
    for n in 1..=links {
        let link = listener.accept()?;
        println!("serve: link {n} up (credits {})", link.credits());
        let (got, _crc, ended) = serve_link(link)?;
        println!(
            "serve: link {n} down: {ended} (closes link: {})",
            ended.closes_link()
        );
        if !ended.closes_link() {
            return Err("link ended without a link-down error".into());
        }
        if n == 1 && got != frames {
            return Err(format!("link 1 brought {got} frames, expected {frames}").into());
        }
    }
    println!("serve: PASS");
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match (args.first().map(String::as_str), args.get(1)) {
        (Some("serve"), Some(address)) => serve(address, &args),
        (Some("send"), Some(address)) => send(address, &args),
        _ => Err(
            "usage: rdma_frames serve|send IP:PORT [--frames N] [--links N] \
                  [--window N] [--recv-depth N] [--send-depth N] [--slot-size BYTES] [--hang 1]"
                .into(),
        ),
    }
}
