//! The reactor loop: cross-core hand-off under contention, timers, sleeping
//! when idle and waking for a message.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Duration;

use keel_engine::{Completion, Engine, EngineConfig, Handler, Origin, Shard, ShardId};

#[derive(Debug)]
enum Msg {
    Request { from: ShardId, value: u64 },
    Reply { value: u64 },
}

/// Sends `total` requests spread over every shard (itself included) and
/// expects each back incremented by one; serves other shards' requests.
struct PingPong {
    total: u64,
    sent: u64,
    replies: u64,
    reply_sum: u64,
    /// Messages refused by a full queue, retried from `poll`.
    backlog: VecDeque<(ShardId, Msg)>,
    done_reported: bool,
    results: mpsc::Sender<(u64, u64, usize)>,
    max_backlog: usize,
}

impl PingPong {
    fn push(&mut self, shard: &mut Shard<Msg>, dst: ShardId, msg: Msg) {
        if !self.backlog.is_empty() {
            self.backlog.push_back((dst, msg));
            return;
        }
        if let Err(msg) = shard.send(dst, msg) {
            self.backlog.push_back((dst, msg));
        }
        self.max_backlog = self.max_backlog.max(self.backlog.len());
    }
}

impl Handler<Msg> for PingPong {
    fn on_completion(&mut self, _: &mut Shard<Msg>, _: Completion) {
        unreachable!("no I/O in this test");
    }

    fn on_message(&mut self, shard: &mut Shard<Msg>, from: Origin, msg: Msg) {
        match msg {
            Msg::Request { from: src, value } => {
                assert_eq!(from, Origin::Shard(src), "mailbox names the real sender");
                self.push(shard, src, Msg::Reply { value: value + 1 });
            }
            Msg::Reply { value } => {
                self.replies += 1;
                self.reply_sum += value;
            }
        }
    }

    fn poll(&mut self, shard: &mut Shard<Msg>) -> bool {
        let mut worked = false;
        while let Some((dst, msg)) = self.backlog.pop_front() {
            if let Err(msg) = shard.send(dst, msg) {
                self.backlog.push_front((dst, msg));
                break;
            }
            worked = true;
        }
        // A burst per iteration, to keep the queues full.
        let shards = shard.shards() as u64;
        for _ in 0..64 {
            if self.sent == self.total || !self.backlog.is_empty() {
                break;
            }
            let dst = ShardId((self.sent % shards) as usize);
            let me = shard.id();
            self.push(
                shard,
                dst,
                Msg::Request {
                    from: me,
                    value: self.sent,
                },
            );
            self.sent += 1;
            worked = true;
        }
        if self.replies == self.total && !self.done_reported {
            self.done_reported = true;
            let _ = self
                .results
                .send((self.replies, self.reply_sum, self.max_backlog));
        }
        // Held-back messages wait for room, which no event announces: keep
        // polling until they are gone.
        worked || !self.backlog.is_empty()
    }
}

#[test]
fn every_cross_core_request_gets_exactly_one_reply_under_contention() {
    const SHARDS: usize = 4;
    const PER_SHARD: u64 = 20_000;
    let (tx, rx) = mpsc::channel();
    let config = EngineConfig {
        shards: SHARDS,
        pin: false,
        mesh_capacity: 8, // tiny: senders must see backpressure and retry
        ..Default::default()
    };
    let engine = Engine::start(config, move |_| {
        Ok(PingPong {
            total: PER_SHARD,
            sent: 0,
            replies: 0,
            reply_sum: 0,
            backlog: VecDeque::new(),
            done_reported: false,
            results: tx.clone(),
            max_backlog: 0,
        })
    })
    .unwrap();
    let expected_sum: u64 = (1..=PER_SHARD).sum();
    let mut saw_backpressure = false;
    for _ in 0..SHARDS {
        let (replies, sum, max_backlog) = rx.recv_timeout(Duration::from_secs(120)).unwrap();
        assert_eq!(replies, PER_SHARD);
        assert_eq!(sum, expected_sum);
        saw_backpressure |= max_backlog > 0;
    }
    assert!(
        saw_backpressure,
        "queues of 8 never filled: the test did not contend"
    );
    let reports = engine.stop().unwrap();
    assert_eq!(reports.len(), SHARDS);
    let messages: u64 = reports.iter().map(|r| r.stats.messages).sum();
    assert_eq!(messages, 2 * PER_SHARD * SHARDS as u64);
}

struct TimerProbe {
    fired: Vec<u64>,
    out: mpsc::Sender<Vec<u64>>,
}

impl Handler<()> for TimerProbe {
    fn on_completion(&mut self, _: &mut Shard<()>, _: Completion) {}

    fn on_message(&mut self, shard: &mut Shard<()>, _: Origin, _: ()) {
        shard.add_timer(Duration::from_millis(30), 3).unwrap();
        let cancelled = shard.add_timer(Duration::from_millis(20), 99).unwrap();
        shard.add_timer(Duration::from_millis(10), 1).unwrap();
        assert!(shard.cancel_timer(cancelled));
    }

    fn on_timer(&mut self, shard: &mut Shard<()>, tag: u64) {
        self.fired.push(tag);
        if tag == 3 {
            let _ = self.out.send(self.fired.clone());
            shard.stop();
        }
    }
}

#[test]
fn timers_fire_in_order_even_while_the_shard_sleeps() {
    let (tx, rx) = mpsc::channel();
    let engine = Engine::start(
        EngineConfig {
            pin: false,
            ..Default::default()
        },
        move |_| {
            Ok(TimerProbe {
                fired: vec![],
                out: tx.clone(),
            })
        },
    )
    .unwrap();
    let start = std::time::Instant::now();
    engine.send(ShardId(0), ()).unwrap();
    let fired = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(fired, vec![1, 3]);
    assert!(start.elapsed() >= Duration::from_millis(30));
    let reports = engine.join().unwrap();
    assert!(
        reports[0].stats.sleeps > 0,
        "waiting for a timer should sleep, not spin"
    );
}

struct Echo(mpsc::Sender<u32>);

impl Handler<u32> for Echo {
    fn on_completion(&mut self, _: &mut Shard<u32>, _: Completion) {}
    fn on_message(&mut self, _: &mut Shard<u32>, _: Origin, msg: u32) {
        let _ = self.0.send(msg);
    }
}

#[test]
fn an_idle_shard_sleeps_and_wakes_for_a_message() {
    let (tx, rx) = mpsc::channel();
    let config = EngineConfig {
        pin: false,
        spin: Duration::from_micros(50),
        ..Default::default()
    };
    let engine = Engine::start(config, move |_| Ok(Echo(tx.clone()))).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    engine.send(ShardId(0), 7).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)).unwrap(), 7);
    std::thread::sleep(Duration::from_millis(100));
    engine.send(ShardId(0), 8).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(2)).unwrap(), 8);
    let report = &engine.stop().unwrap()[0];
    assert!(report.stats.sleeps >= 2);
    // Idle for ~0.4 s: asleep most of it, not burning the core.
    assert!(report.stats.slept * 2 > report.wall_time, "{report:?}");
    assert!(report.cpu_time * 4 < report.wall_time, "{report:?}");
}

#[test]
fn a_shard_that_fails_to_start_reports_why() {
    let config = EngineConfig {
        pin: false,
        pool: keel_engine::PoolConfig {
            slot_size: 4096,
            slots: 0,
            hugepages: false,
        },
        ..Default::default()
    };
    let err = Engine::<()>::start(config, |_| Ok(Echo(mpsc::channel().0)))
        .err()
        .expect("zero-slot pool must be refused");
    assert!(err.to_string().contains("could not start"), "{err}");
}

impl Handler<()> for Echo {
    fn on_completion(&mut self, _: &mut Shard<()>, _: Completion) {}
}
