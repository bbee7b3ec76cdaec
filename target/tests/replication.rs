//! Replication between real keeld processes on loopback: three copies of a
//! file-backed volume, a write quorum, a replica killed and restarted, and
//! the copies compared byte for byte at the end; a replica with the wrong
//! pre-shared key never counts toward the quorum.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use keel_target::initiator::{Controller, HostOptions, IoKind, IoQueue};
use keel_target::nvme::Status;

const NQN: &str = "nqn.2026-11.io.keel:replicated";
const SIZE: &str = "16M";

mod support;

use support::io::{fill, read_back, run_one, scratch_dir, write_read_verify};
use support::Keeld;

/// keeld serving [`NQN`] on an ephemeral port, with its metrics endpoint
/// (the replication gauges) and `args` (backend, replication flags).
fn start(args: &[String]) -> Keeld {
    let mut all: Vec<String> = [
        "--listen",
        "127.0.0.1:0",
        "--nqn",
        NQN,
        "--no-pin",
        "--metrics",
        "127.0.0.1:0",
        "--buffers",
        "256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend_from_slice(args);
    Keeld::spawn(&all).unwrap_or_else(|status| panic!("keeld exited early: {status}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The three-node cluster's command lines.
struct Cluster {
    dir: PathBuf,
    ports: Vec<u16>,
    quorum: u8,
}

impl Cluster {
    fn new(name: &str, quorum: u8) -> Cluster {
        let dir = scratch_dir(name);
        std::fs::write(dir.join("psk"), b"keel replication test key 0123456789\n").expect("psk");
        std::fs::write(dir.join("bad-psk"), b"some other key entirely, 987654321\n").expect("psk");
        Cluster {
            dir,
            ports: (0..3).map(|_| free_port()).collect(),
            quorum,
        }
    }

    fn image(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}.img"))
    }

    fn args(&self, node: usize, psk: &str) -> Vec<String> {
        let mut args = vec![
            "--backend".to_string(),
            self.image(node).to_str().expect("utf-8").to_string(),
            "--size".into(),
            SIZE.into(),
            "--node-id".into(),
            node.to_string(),
            "--primary".into(),
            "1".into(),
            "--replica-listen".into(),
            format!("127.0.0.1:{}", self.ports[node - 1]),
            "--write-quorum".into(),
            self.quorum.to_string(),
            "--psk-file".into(),
            self.dir.join(psk).to_str().expect("utf-8").to_string(),
        ];
        for (index, port) in self.ports.iter().enumerate() {
            args.push("--member".into());
            args.push(format!("{}@127.0.0.1:{port}:sync", index + 1));
        }
        // Every copy of these volumes starts together (ignored by a node
        // that already has its record).
        args.push("--bootstrap".into());
        args
    }

    fn start(&self, node: usize) -> Keeld {
        start(&self.args(node, "psk"))
    }

    /// Every copy in `nodes` is byte-identical to node 1's (all stopped).
    fn assert_identical(&self, nodes: &[usize]) {
        let one = std::fs::read(self.image(1)).expect("image 1");
        for &node in nodes {
            let other = std::fs::read(self.image(node)).expect("image");
            assert_eq!(
                one.len(),
                other.len(),
                "node {node}'s copy has another size"
            );
            let first = one.iter().zip(&other).position(|(a, b)| a != b);
            assert_eq!(first, None, "node {node}'s copy differs from node 1's");
        }
    }
}

/// A host connected to `keeld` with one I/O queue of depth 4.
fn open_queue(keeld: &Keeld) -> (Controller, IoQueue) {
    let mut ctrl =
        Controller::connect(keeld.addr, NQN, &HostOptions::default(), 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
    (ctrl, queue)
}

#[test]
fn three_keeld_replicate_with_quorum_2_through_a_replica_kill_and_converge() {
    let cluster = Cluster::new("replication-3", 2);
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    // The first epoch: the primary copies the whole volume to both.
    primary.wait_gauge("keel_replication_serving", 1, Duration::from_secs(30));
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(replica2.gauge("keel_replication_serving"), Some(0));

    // A replica refuses host I/O (it is not the serving primary).
    {
        let (_ctrl, mut queue) = open_queue(&replica2);
        let status = run_one(&mut queue, IoKind::Read, 0, 8);
        assert_eq!(status, Status::NAMESPACE_NOT_READY);
        let status = run_one(&mut queue, IoKind::Write { fua: false }, 0, 8);
        assert_eq!(status, Status::NAMESPACE_NOT_READY);
        let status = run_one(&mut queue, IoKind::Flush, 0, 0);
        assert_eq!(status, Status::NAMESPACE_NOT_READY);
    }

    let (ctrl, mut queue) = open_queue(&primary);
    write_read_verify(&mut queue, 8, 1);
    // A flush goes through the state machine (HostFlush) too.
    assert_eq!(run_one(&mut queue, IoKind::Flush, 0, 0), Status::SUCCESS);

    // One replica dies: quorum 2 of 3 still holds.
    replica3.kill9();
    write_read_verify(&mut queue, 4096, 2);
    write_read_verify(&mut queue, 8, 3);
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));

    // It comes back and is resynced from the primary's bitmap.
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    read_back(&mut queue, 4096, 2);
    read_back(&mut queue, 8, 3);
    drop(queue);
    ctrl.shutdown().expect("shutdown");

    assert!(primary.terminate().success(), "primary exits 0 on SIGTERM");
    assert!(replica2.terminate().success(), "replica 2 exits 0");
    assert!(replica3.terminate().success(), "replica 3 exits 0");
    cluster.assert_identical(&[2, 3]);
}

#[test]
fn a_replica_with_the_wrong_key_never_counts_toward_the_quorum() {
    let cluster = Cluster::new("replication-bad-psk", 3);
    let primary = cluster.start(1);
    let _replica2 = cluster.start(2);
    let _impostor = start(&cluster.args(3, "bad-psk"));
    // W = 3 of 3: the fence quorum is the primary alone, so it serves, but
    // no write can complete without node 3.
    primary.wait_gauge("keel_replication_serving", 1, Duration::from_secs(30));
    primary.wait_gauge("keel_replication_links", 1, Duration::from_secs(30));
    let (ctrl, mut queue) = open_queue(&primary);
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        fill(queue.buffer(0, 4096), 8, 1);
        queue
            .submit(0, IoKind::Write { fua: false }, 8, 8)
            .expect("submit");
        let mut done = Vec::new();
        while done.is_empty() {
            if queue.wait(&mut done).is_err() {
                return;
            }
        }
        let _ = tx.send(done[0].status);
    });
    match rx.recv_timeout(Duration::from_secs(3)) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("a write completed without node 3 in a quorum of 3: {other:?}"),
    }
    // Node 3 was never linked.
    assert_eq!(primary.gauge("keel_replication_links"), Some(1));
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));
    primary.kill9();
    let _ = writer.join();
    drop(ctrl);
}

#[test]
fn a_restarted_primary_takes_a_new_epoch_and_the_copies_stay_identical() {
    let cluster = Cluster::new("replication-primary-restart", 2);
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(primary.gauge("keel_replication_epoch"), Some(65));
    {
        let (ctrl, mut queue) = open_queue(&primary);
        write_read_verify(&mut queue, 100, 1);
        drop(queue);
        ctrl.shutdown().expect("shutdown");
    }
    // The primary stops and comes back: from its record it promotes itself
    // to a new epoch, wins the election and serves again.
    assert!(primary.terminate().success());
    let primary = cluster.start(1);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(primary.gauge("keel_replication_epoch"), Some(129));
    assert_eq!(replica2.gauge("keel_replication_epoch"), Some(129));
    let (ctrl, mut queue) = open_queue(&primary);
    read_back(&mut queue, 100, 1);
    write_read_verify(&mut queue, 9000, 2);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));
    assert!(primary.terminate().success());
    assert!(replica2.terminate().success());
    assert!(replica3.terminate().success());
    cluster.assert_identical(&[2, 3]);
}

/// A replica whose disk is replaced (backing file and record gone, a new
/// empty file of the same size) rejoins a running cluster. Whatever path
/// the primary takes, the new copy must end byte-identical to the primary's
/// — an incremental resync onto an empty disk would leave holes.
#[test]
fn a_replica_on_a_new_empty_disk_ends_identical_to_the_primary() {
    let cluster = Cluster::new("replication-new-disk", 2);
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_queue(&primary);
    write_read_verify(&mut queue, 8, 1);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));

    // Replica 3's disk dies: a new, empty one takes its place.
    assert!(replica3.terminate().success());
    let image = cluster.image(3);
    let size = std::fs::metadata(&image).expect("image").len();
    let mut record = image.clone().into_os_string();
    record.push(".keelrec");
    std::fs::remove_file(&record).expect("remove the record");
    std::fs::remove_file(&image).expect("remove the image");
    std::fs::File::create(&image)
        .and_then(|f| f.set_len(size))
        .expect("a new empty image");
    write_read_verify(&mut queue, 4096, 2);
    // Without saying what it is, a copy with no record refuses to start.
    let mut args = cluster.args(3, "psk");
    args.retain(|a| a != "--bootstrap");
    let refused = support::Keeld::spawn(&args).map(drop);
    assert!(
        refused.is_err(),
        "a replica with no record and no flag started"
    );
    args.push("--new-copy".into());
    let replica3 = start(&args);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
    assert!(replica2.terminate().success());
    assert!(replica3.terminate().success());
    cluster.assert_identical(&[3]);
}

/// `volume_status` over the control socket: per replica its address, mode
/// and state, `in_sync` when caught up and `down` once it is gone.
#[test]
fn volume_status_reports_each_replica_over_the_control_socket() {
    use keel_target::rpc::RpcClient;
    use serde_json::Value;

    let cluster = Cluster::new("replication-status", 2);
    let socket = cluster.dir.join("primary.sock");
    let mut args = cluster.args(1, "psk");
    args.push("--rpc-socket".into());
    args.push(socket.to_str().expect("utf-8").into());
    let primary = start(&args);
    let _replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let status = |socket: &std::path::Path| -> Value {
        RpcClient::connect(socket)
            .expect("control socket")
            .call("volume_status", None)
            .expect("volume_status")
    };
    let state_of = |status: &Value, node: u64| -> String {
        status["replicas"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["node"] == node))
            .map(|e| e["state"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    // The views refresh every 50 ms tick.
    std::thread::sleep(Duration::from_millis(200));
    let now = status(&socket);
    assert_eq!(now["role"], "primary", "{now}");
    assert_eq!(now["write_quorum"], 2);
    let replicas = now["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2, "{now}");
    for (node, entry) in [2u64, 3].iter().zip(replicas) {
        assert_eq!(entry["node"], *node);
        assert_eq!(entry["mode"], "sync");
        assert_eq!(entry["transport"], "tcp");
        assert_eq!(entry["state"], "in_sync", "{now}");
        assert_eq!(entry["resync_percent"], 100.0);
        assert_eq!(
            entry["address"],
            format!("127.0.0.1:{}", cluster.ports[*node as usize - 1])
        );
    }
    replica3.kill9();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = status(&socket);
        if state_of(&now, 3) == "down" {
            assert_eq!(state_of(&now, 2), "in_sync", "{now}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 never reported down: {now}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    primary.kill9();
}

/// A replica frozen (SIGSTOP: its sockets stay open, nothing is read or
/// acknowledged — a partition that TCP does not notice) while the host
/// keeps writing: with quorum 2 of 3 every write still completes, and once
/// it thaws the replica catches up and the copies end identical.
#[test]
fn a_frozen_replica_does_not_stop_a_quorum_and_catches_up_when_it_thaws() {
    use nix::sys::signal::Signal;

    let cluster = Cluster::new("replication-frozen", 2);
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_queue(&primary);

    replica3.signal(Signal::SIGSTOP);
    // Enough data that frames to the frozen replica pile up (about 40 MiB
    // over the 16 MiB volume: every region touched). Each base's extents
    // span 2,620 blocks, so bases 3,000 blocks apart never overlap.
    for generation in 1..=3u64 {
        for base in (0..10u64).map(|i| 8 + i * 3000) {
            write_read_verify(&mut queue, base, generation);
        }
    }
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));
    replica3.signal(Signal::SIGCONT);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    for base in (0..10u64).map(|i| 8 + i * 3000) {
        read_back(&mut queue, base, 3);
    }
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
    assert!(replica2.terminate().success());
    assert!(replica3.terminate().success());
    cluster.assert_identical(&[2, 3]);
}

/// Failover: the primary is killed (-9) right after the host's writes were
/// acknowledged; a replica is promoted over the control socket (the other
/// one if the first lacks acknowledged writes and retires), the host
/// reconnects to it and finds every acknowledged write; the old primary,
/// restarted, does not serve (it cannot acknowledge a write) and is brought
/// back as a replica; the three copies end byte-identical.
#[test]
fn after_the_primary_dies_a_promoted_replica_serves_every_acknowledged_write() {
    use keel_target::rpc::RpcClient;

    let cluster = Cluster::new("replication-failover", 2);
    let with_socket = |node: usize| {
        let mut args = cluster.args(node, "psk");
        args.push("--rpc-socket".into());
        let socket = cluster.dir.join(format!("node{node}.sock"));
        args.push(socket.to_str().expect("utf-8").into());
        (args, socket)
    };
    let primary = cluster.start(1);
    let (args2, socket2) = with_socket(2);
    let (args3, socket3) = with_socket(3);
    let replica2 = start(&args2);
    let replica3 = start(&args3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    {
        let (_ctrl, mut queue) = open_queue(&primary);
        for (i, base) in [8u64, 3000, 6000, 9000].into_iter().enumerate() {
            write_read_verify(&mut queue, base, i as u64 + 1);
        }
        // Killed with those writes acknowledged (quorum 2: on at least one
        // replica each), no clean shutdown.
        primary.kill9();
    }

    let promote = |socket: &std::path::Path| {
        RpcClient::connect(socket)
            .expect("control socket")
            .call("promote", None)
            .expect("promote")
    };
    let serving = |replica: &Keeld| replica.gauge("keel_replication_serving") == Some(1);
    promote(&socket2);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !serving(&replica2) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let new_primary = if serving(&replica2) {
        &replica2
    } else {
        // Node 2 lacked something node 3 acknowledged, and retired.
        promote(&socket3);
        replica3.wait_gauge("keel_replication_serving", 1, Duration::from_secs(20));
        &replica3
    };
    let epoch = new_primary.gauge("keel_replication_epoch").expect("epoch");
    assert!(epoch > 2, "the new primary took a new epoch: {epoch}");

    let (ctrl, mut queue) = open_queue(new_primary);
    for (i, base) in [8u64, 3000, 6000, 9000].into_iter().enumerate() {
        read_back(&mut queue, base, i as u64 + 1);
    }
    write_read_verify(&mut queue, 12000, 9);

    // The old primary comes back: it tries its own next epoch, loses to the
    // newer one, and serves nothing.
    let old = cluster.start(1);
    new_primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(old.gauge("keel_replication_serving"), Some(0));
    {
        let mut old_ctrl =
            Controller::connect(old.addr, NQN, &HostOptions::default(), 1).expect("connect");
        let ns = old_ctrl.namespace(1).expect("identify");
        let mut old_queue = old_ctrl.io_queue(1, 4, ns).expect("I/O queue");
        fill(old_queue.buffer(0, 4096), 8, 99);
        let status = run_one(&mut old_queue, IoKind::Write { fua: false }, 8, 8);
        assert_eq!(
            status,
            Status::NAMESPACE_NOT_READY,
            "the deposed primary refuses writes"
        );
    }
    read_back(&mut queue, 8, 1);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    new_primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));
    assert!(old.terminate().success());
    assert!(replica2.terminate().success());
    assert!(replica3.terminate().success());
    cluster.assert_identical(&[2, 3]);
}

/// One replica 50 ms away (25 ms each way through a delay line): with
/// quorum 2 of 3 the host's writes complete at the near replica's pace, not
/// the far one's, and the far one still ends identical.
#[test]
fn a_replica_50_ms_away_does_not_slow_a_quorum_of_2() {
    let cluster = Cluster::new("replication-delayed", 2);
    // Node 3's member address is the delay line; node 3 listens behind it.
    let behind = free_port();
    support::delay::start(
        format!("127.0.0.1:{}", cluster.ports[2])
            .parse()
            .expect("addr"),
        format!("127.0.0.1:{behind}").parse().expect("addr"),
        Duration::from_millis(25),
    );
    // The delay line really delays: an echo through one takes 50 ms.
    {
        use std::io::{Read, Write};
        let echo = TcpListener::bind("127.0.0.1:0").expect("echo");
        let echo_addr = echo.local_addr().expect("addr");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = echo.accept() {
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
            }
        });
        let front = free_port();
        let front_addr = format!("127.0.0.1:{front}").parse().expect("addr");
        support::delay::start(front_addr, echo_addr, Duration::from_millis(25));
        let mut s = std::net::TcpStream::connect(front_addr).expect("connect");
        let started = std::time::Instant::now();
        s.write_all(b"x").expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).expect("echo");
        assert!(
            started.elapsed() >= Duration::from_millis(50),
            "{:?}",
            started.elapsed()
        );
    }
    let mut args3 = cluster.args(3, "psk");
    let at = args3
        .iter()
        .position(|a| a == "--replica-listen")
        .expect("--replica-listen");
    args3[at + 1] = format!("127.0.0.1:{behind}");
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = start(&args3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    let (ctrl, mut queue) = open_queue(&primary);
    let mut latencies = Vec::new();
    for i in 0..100u64 {
        let lba = 8 + i * 64;
        fill(queue.buffer(0, 4096), lba, 1);
        let started = std::time::Instant::now();
        assert!(run_one(&mut queue, IoKind::Write { fua: false }, lba, 8).is_success());
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!("4 KiB writes, QD 1, W=2/3, node 3 at 50 ms RTT: p50 {p50:?}, p99 {p99:?}");
    // Waiting for node 3 would take at least its 50 ms round trip.
    assert!(
        p50 < Duration::from_millis(25),
        "writes wait for the far replica: p50 {p50:?}"
    );
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
    assert!(replica2.terminate().success());
    assert!(replica3.terminate().success());
    cluster.assert_identical(&[2, 3]);
}
