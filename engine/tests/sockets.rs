//! Sockets on the shard's ring: an echo server on one shard, many real TCP
//! clients on loopback, every byte checked.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::Duration;

use keel_engine::{Completion, Engine, EngineConfig, Handler, NetOp, Op, PoolConfig, Shard};
use rand::{Rng, SeedableRng};

const ACCEPT: u64 = u64::MAX - 1000;

struct Echo {
    listener: TcpListener,
    conns: slab::Slab<OwnedFd>,
    started: bool,
}

impl Echo {
    fn recv(&mut self, shard: &mut Shard<()>, conn: usize, buf: keel_engine::Buf) {
        let fd = &self.conns[conn];
        if let Err((e, buf)) =
            shard.submit_net(fd, NetOp::Recv { offset: 0 }, Some(buf), conn as u64)
        {
            panic!("recv submit: {e} {buf:?}");
        }
    }
}

impl Handler<()> for Echo {
    fn poll(&mut self, shard: &mut Shard<()>) -> bool {
        if !self.started {
            self.started = true;
            shard
                .submit_net(&self.listener, NetOp::Accept, None, ACCEPT)
                .unwrap();
        }
        false
    }

    fn on_completion(&mut self, shard: &mut Shard<()>, done: Completion) {
        match (done.op, done.tag) {
            (Op::Net(NetOp::Accept), _) => {
                let Some(fd) = done.accepted else {
                    return; // cancelled at stop
                };
                let conn = self.conns.insert(fd);
                let buf = shard.alloc(4096).unwrap();
                self.recv(shard, conn, buf);
                shard
                    .submit_net(&self.listener, NetOp::Accept, None, ACCEPT)
                    .unwrap();
            }
            (Op::Net(NetOp::Recv { .. }), conn) => {
                let conn = conn as usize;
                let mut buf = done.buf.unwrap();
                match done.result {
                    // End of stream, an error, or cancelled at stop.
                    Ok(0) | Err(_) => {
                        shard.free(buf);
                        self.conns.remove(conn); // closes the socket
                    }
                    Ok(n) => {
                        shard.pool().set_len(&mut buf, n as usize).unwrap();
                        let fd = &self.conns[conn];
                        shard
                            .submit_net(fd, NetOp::Send { offset: 0 }, Some(buf), conn as u64)
                            .unwrap();
                    }
                }
            }
            (Op::Net(NetOp::Send { offset }), conn) => {
                let conn = conn as usize;
                let mut buf = done.buf.unwrap();
                let sent = offset + done.result.expect("send succeeds");
                if (sent as usize) < buf.len() {
                    let fd = &self.conns[conn];
                    shard
                        .submit_net(fd, NetOp::Send { offset: sent }, Some(buf), conn as u64)
                        .unwrap();
                } else {
                    shard.pool().set_len(&mut buf, 4096).unwrap();
                    self.recv(shard, conn, buf);
                }
            }
            other => panic!("unexpected completion {other:?}"),
        }
    }
}

#[test]
fn an_echo_server_on_the_ring_serves_many_clients_byte_exact() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let config = EngineConfig {
        pin: false,
        pool: PoolConfig {
            slot_size: 4096,
            slots: 64,
            hugepages: false,
        },
        ..Default::default()
    };
    let listener_cell = std::sync::Mutex::new(Some(listener));
    let engine = Engine::start(config, move |_| {
        let listener = listener_cell.lock().unwrap().take().expect("one shard");
        Ok(Echo {
            listener,
            conns: slab::Slab::new(),
            started: false,
        })
    })
    .unwrap();

    let clients: Vec<_> = (0..8u64)
        .map(|seed| {
            std::thread::spawn(move || {
                let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                for _ in 0..300 {
                    let len = rng.gen_range(1..20_000);
                    let msg: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    stream.write_all(&msg).unwrap();
                    let mut back = vec![0u8; len];
                    stream.read_exact(&mut back).unwrap();
                    assert!(back == msg, "echo differs");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client saw its bytes echoed");
    }
    // The accept (and any idle receive) stays outstanding: stop must cancel
    // them rather than wait forever.
    let idle = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let reports = engine.stop().unwrap();
    assert!(reports[0].stats.completions > 8 * 300 * 2);
    drop(idle);
}
