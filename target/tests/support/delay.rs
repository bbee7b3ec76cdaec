//! A TCP delay line for fault tests: everything it forwards, in both
//! directions, arrives `one_way` later than it was sent, without limiting
//! throughput (a reader timestamps chunks, a writer releases them when due).
//!
//! It can also partition the link: while partitioned nothing moves either
//! way and nothing is read, yet both connections stay open — what a network
//! partition shorter than TCP's retransmission timeout looks like to both
//! ends (the bytes sent meanwhile arrive once it heals, as retransmissions
//! would bring them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The switch of a running delay line.
#[derive(Clone, Default)]
pub struct Partition(Arc<AtomicBool>);

impl Partition {
    /// Cuts (`true`) or heals (`false`) every connection of the line.
    pub fn set(&self, cut: bool) {
        self.0.store(cut, Ordering::SeqCst);
    }

    fn wait_healed(&self) {
        while self.0.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Listens on `listen` and forwards every connection to `target`.
pub fn start(listen: SocketAddr, target: SocketAddr, one_way: Duration) -> Partition {
    let partition = Partition::default();
    let switch = partition.clone();
    let listener = TcpListener::bind(listen).expect("bind the delay line");
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(target) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            pump(&client, &server, one_way, &switch);
            pump(&server, &client, one_way, &switch);
        }
    });
    partition
}

fn pump(from: &TcpStream, to: &TcpStream, one_way: Duration, partition: &Partition) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    let (reading, writing) = (partition.clone(), partition.clone());
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            reading.wait_healed();
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .send((Instant::now() + one_way, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            writing.wait_healed();
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}
