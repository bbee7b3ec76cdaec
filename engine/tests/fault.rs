//! The fault-injecting backend on a real O_DIRECT file through a real
//! engine shard: failed and stalled operations, the shard staying
//! responsive meanwhile, and the data around them intact.

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use keel_engine::backend::{FaultAction, FaultBackend, FaultOp, FaultPlan, FaultRule, OpenOptions};
use keel_engine::{BlockBackend, FileBackend, IoError, IoOp};

mod support;

use support::ShardVolume;

const BLOCK: usize = 4096;

struct Volume {
    shard: ShardVolume,
    plan: Arc<FaultPlan>,
    _dir: tempfile::TempDir,
}

impl Volume {
    fn start() -> Volume {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let file = FileBackend::open(
            &dir.path().join("vol"),
            &OpenOptions {
                size: Some(1 << 20),
                block_size: Some(BLOCK as u32),
            },
        )
        .expect("an O_DIRECT file (not tmpfs)");
        let plan = FaultPlan::new();
        let backend: Arc<dyn BlockBackend> =
            Arc::new(FaultBackend::new(Arc::new(file), plan.clone()));
        assert!(backend.describe().contains("fault injection"));
        Volume {
            shard: ShardVolume::start(backend),
            plan,
            _dir: dir,
        }
    }

    fn start_op(&self, op: IoOp, data: Vec<u8>) -> mpsc::Receiver<Result<Vec<u8>, IoError>> {
        self.shard.start_op(op, data)
    }

    fn run(&self, op: IoOp, data: Vec<u8>) -> Result<Vec<u8>, IoError> {
        self.shard.run(op, data)
    }

    fn write(&self, block: u64, fill: u8) -> Result<Vec<u8>, IoError> {
        self.run(
            IoOp::Write {
                offset: block * BLOCK as u64,
                fua: false,
            },
            vec![fill; BLOCK],
        )
    }

    fn read(&self, block: u64) -> Vec<u8> {
        self.run(
            IoOp::Read {
                offset: block * BLOCK as u64,
            },
            vec![0; BLOCK],
        )
        .expect("read")
    }
}

fn eio(op: &'static str) -> IoError {
    IoError::Os {
        op,
        errno: libc::EIO,
    }
}

#[test]
fn a_fail_rule_with_a_count_fails_exactly_that_many_writes() {
    let v = Volume::start();
    v.write(0, 0xA1).unwrap();
    v.plan
        .inject(FaultRule {
            op: FaultOp::Write,
            action: FaultAction::Fail { errno: libc::EIO },
            count: Some(2),
        })
        .unwrap();
    // Reads are not writes: untouched.
    assert_eq!(v.read(0), vec![0xA1; BLOCK]);
    assert_eq!(v.write(1, 0xB1), Err(eio("write")));
    assert_eq!(v.write(2, 0xB2), Err(eio("write")));
    // The failed writes never reached the file.
    assert_eq!(v.read(1), vec![0; BLOCK]);
    assert_eq!(v.read(2), vec![0; BLOCK]);
    // The third passes, and the rule is gone.
    v.write(3, 0xB3).unwrap();
    assert!(v.plan.rules().is_empty());
    assert_eq!(v.read(0), vec![0xA1; BLOCK]);
    assert_eq!(v.read(3), vec![0xB3; BLOCK]);

    // Another errno, on flushes, until cleared.
    v.plan
        .inject(FaultRule {
            op: FaultOp::Flush,
            action: FaultAction::Fail {
                errno: libc::ENOSPC,
            },
            count: None,
        })
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            v.run(IoOp::Flush, Vec::new()),
            Err(IoError::Os {
                op: "flush",
                errno: libc::ENOSPC
            })
        );
    }
    assert_eq!(v.plan.rules()[0].hits, 3);
    v.plan.clear();
    v.run(IoOp::Flush, Vec::new()).unwrap();
}

#[test]
fn a_stalled_write_fails_after_its_delay_while_the_shard_serves_others() {
    let v = Volume::start();
    v.write(0, 0x11).unwrap();
    let delay = Duration::from_millis(1000);
    v.plan
        .inject(FaultRule {
            op: FaultOp::Write,
            action: FaultAction::Stall { delay },
            count: Some(1),
        })
        .unwrap();
    let started = Instant::now();
    let stalled = v.start_op(
        IoOp::Write {
            offset: BLOCK as u64,
            fua: false,
        },
        vec![0x22; BLOCK],
    );
    // Meanwhile the shard serves reads, writes and flushes at once.
    for round in 0..20u8 {
        let served = Instant::now();
        assert_eq!(v.read(0), vec![0x11; BLOCK]);
        v.write(2, round).unwrap();
        assert_eq!(v.read(2), vec![round; BLOCK]);
        assert!(
            served.elapsed() < delay / 2,
            "an op waited {:?} behind the stall",
            served.elapsed()
        );
    }
    assert!(
        started.elapsed() < delay,
        "the other ops took as long as the stall"
    );
    assert!(stalled.try_recv().is_err(), "the stall ended early");
    let outcome = stalled
        .recv_timeout(Duration::from_secs(20))
        .expect("the stalled write completes");
    let took = started.elapsed();
    assert_eq!(outcome, Err(eio("write")));
    assert!(took >= delay, "the stalled write failed after {took:?}");
    assert!(took < delay * 10, "the stalled write took {took:?}");
    // The stalled write never reached the file; the rule is used up.
    assert_eq!(v.read(1), vec![0; BLOCK]);
    v.write(1, 0x33).unwrap();
    assert_eq!(v.read(1), vec![0x33; BLOCK]);
    assert_eq!(v.read(0), vec![0x11; BLOCK]);
}

#[test]
fn clearing_a_stall_rule_restores_normal_io() {
    let v = Volume::start();
    v.plan
        .inject(FaultRule {
            op: FaultOp::Any,
            action: FaultAction::Stall {
                delay: Duration::from_millis(50),
            },
            count: None,
        })
        .unwrap();
    let started = Instant::now();
    assert_eq!(v.write(4, 0x44), Err(eio("write")));
    assert_eq!(
        v.run(IoOp::Read { offset: 0 }, vec![0; BLOCK]),
        Err(eio("read"))
    );
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(v.plan.rules()[0].hits, 2);
    v.plan.clear();
    v.write(4, 0x44).unwrap();
    assert_eq!(v.read(4), vec![0x44; BLOCK]);
    v.run(IoOp::Flush, Vec::new()).unwrap();
}

/// A file may complete a read or write short. The short rule makes the
/// real file move one block of each submission; the shard submits the rest
/// until the whole transfer is done, so the caller sees a plain success
/// and every byte lands (and reads back) where it belongs.
#[test]
fn reads_and_writes_completed_short_are_continued_to_the_end() {
    const BLOCKS: usize = 8;
    let v = Volume::start();
    v.plan
        .inject(FaultRule {
            op: FaultOp::Any,
            action: FaultAction::Short,
            count: None,
        })
        .unwrap();
    let data: Vec<u8> = (0..BLOCKS * BLOCK).map(|i| (i / BLOCK) as u8 + 1).collect();
    v.run(
        IoOp::Write {
            offset: BLOCK as u64,
            fua: true,
        },
        data.clone(),
    )
    .expect("a write completed short is continued");
    let read = v
        .run(
            IoOp::Read {
                offset: BLOCK as u64,
            },
            vec![0; BLOCKS * BLOCK],
        )
        .expect("a read completed short is continued");
    assert!(
        read == data,
        "the continued read returns every block in place"
    );
    // Each of the two transfers was cut at every block: 8 submissions.
    assert_eq!(v.plan.rules()[0].hits, 2 * BLOCKS as u64);
    v.plan.clear();
    for (i, chunk) in data.chunks(BLOCK).enumerate() {
        assert_eq!(v.read(1 + i as u64), chunk, "block {}", 1 + i);
    }
    assert_eq!(v.read(0), vec![0; BLOCK], "nothing before the range");
    assert_eq!(
        v.read(1 + BLOCKS as u64),
        vec![0; BLOCK],
        "nothing after it"
    );
}
