//! Replication between real keeld processes on loopback: three copies of a
//! file-backed volume, a write quorum, a replica killed and restarted, and
//! the copies compared byte for byte at the end; a replica with the wrong
//! pre-shared key never counts toward the quorum.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_target::initiator::{Controller, HostOptions, IoKind, IoQueue};
use keel_target::nvme::Status;

mod support;

use support::cluster::{free_port, open_queue, replica_sample, start, stop_all, Cluster, NQN};
use support::io::{fill, read_back, run_one, write_read_verify};
use support::{scrape, Keeld};

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
        assert_eq!(status, Status::ANA_INACCESSIBLE);
        let status = run_one(&mut queue, IoKind::Write { fua: false }, 0, 8);
        assert_eq!(status, Status::ANA_INACCESSIBLE);
        let status = run_one(&mut queue, IoKind::Flush, 0, 0);
        assert_eq!(status, Status::ANA_INACCESSIBLE);
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

    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// Connections on `keeld`'s shard `index`, as its metrics last published
/// them (every second).
fn shard_connections(keeld: &Keeld, index: usize) -> f64 {
    let index = index.to_string();
    scrape(keeld)
        .samples
        .iter()
        .find(|s| {
            s.metric == "keel_shard_connections" && s.labels.get("shard") == Some(index.as_str())
        })
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
}

#[test]
fn a_primary_on_two_cores_replicates_the_writes_of_host_queues_on_both_shards() {
    // keeld spreads connections over its shards; only shard 0 runs the
    // state machine, so a write arriving on shard 1 that went straight to
    // the local disk would leave the replicas different.
    let cluster = Cluster::new("replication-cores", 2);
    let primary = cluster.start_with(1, &["--cores", "2"]);
    let replica2 = cluster.start_with(2, &["--cores", "2"]);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    // The replica refuses host I/O on every shard.
    {
        let mut ctrl =
            Controller::connect(replica2.addr, NQN, &HostOptions::default(), 2).expect("connect");
        let ns = ctrl.namespace(1).expect("identify");
        for qid in 1..=2 {
            let mut queue = ctrl.io_queue(qid, 4, ns).expect("I/O queue");
            for kind in [IoKind::Read, IoKind::Write { fua: false }, IoKind::Flush] {
                let status = run_one(&mut queue, kind, 0, 8);
                assert_eq!(status, Status::ANA_INACCESSIBLE, "queue {qid}");
            }
        }
    }

    // Admin queue, then two I/O queues: at least one I/O queue on each of
    // the primary's two shards, all writing at once.
    let mut ctrl =
        Controller::connect(primary.addr, NQN, &HostOptions::default(), 4).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let queues: Vec<IoQueue> = (1..=2)
        .map(|qid| ctrl.io_queue(qid, 4, ns).expect("I/O queue"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while shard_connections(&primary, 1) < 1.0 {
        assert!(Instant::now() < deadline, "no connection on shard 1");
        std::thread::sleep(Duration::from_millis(100));
    }
    let writers: Vec<_> = queues
        .into_iter()
        .enumerate()
        .map(|(index, mut queue)| {
            std::thread::spawn(move || {
                let base = 1024 + index as u64 * 8192;
                for generation in 1..=3 {
                    write_read_verify(&mut queue, base, generation);
                    assert_eq!(run_one(&mut queue, IoKind::Flush, 0, 0), Status::SUCCESS);
                }
                queue
            })
        })
        .collect();
    let queues: Vec<IoQueue> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    for (index, mut queue) in queues.into_iter().enumerate() {
        read_back(&mut queue, 1024 + index as u64 * 8192, 3);
    }
    ctrl.shutdown().expect("shutdown");
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));
    stop_all([primary, replica2, replica3]);
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
    stop_all([primary, replica2, replica3]);
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
    stop_all([primary, replica2, replica3]);
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
    assert_eq!(now["failed"], false, "{now}");
    assert_eq!(now["write_quorum"], 2);
    let replicas = now["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2, "{now}");
    for (node, entry) in [2u64, 3].iter().zip(replicas) {
        assert_eq!(entry["node"], *node);
        assert_eq!(entry["mode"], "sync");
        assert_eq!(entry["transport"], "tcp");
        assert_eq!(entry["state"], "in_sync", "{now}");
        assert_eq!(entry["resync_percent"], 100.0);
        // The link counters: the initial full copy went over one link.
        assert_eq!(entry["link_connects"], 1, "{now}");
        assert_eq!(entry["drops"], 0, "{now}");
        assert_eq!(entry["link_timeouts"], 0, "{now}");
        assert!(entry["frames_acked"].as_u64() > Some(0), "{now}");
        assert!(entry["frames_applied"].as_u64() >= entry["frames_acked"].as_u64());
        assert!(entry["bytes_sent"].as_u64() > Some(16 << 20), "{now}");
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

/// A replica that comes back without its note (as after a power loss or a
/// reboot: the note lives only as long as the boot) may have acknowledged
/// writes it lost: it says it is amnesiac until the primary brought it in
/// sync, and no longer after. One killed with its note intact is not.
#[test]
fn a_replica_back_without_its_note_is_amnesiac_until_resynced() {
    use keel_target::rpc::RpcClient;
    use nix::sys::signal::Signal;
    use serde_json::Value;

    let cluster = Cluster::new("replication-amnesiac", 2);
    let with_socket = |node: usize| {
        let socket = cluster.socket(node);
        let path = socket.to_str().expect("utf-8").to_string();
        cluster.start_with(node, &["--rpc-socket", &path])
    };
    let status = |node: usize| -> Value {
        RpcClient::connect(&cluster.socket(node))
            .expect("control socket")
            .call("volume_status", None)
            .expect("volume_status")
    };
    let primary = cluster.start(1);
    let replica2 = with_socket(2);
    let replica3 = with_socket(3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(status(3)["amnesiac"], false, "a bootstrapped copy");
    {
        let (ctrl, mut queue) = open_queue(&primary);
        write_read_verify(&mut queue, 100, 1);
        drop(queue);
        ctrl.shutdown().expect("shutdown");
    }
    // Killed: its note survives, and it is not amnesiac.
    replica2.kill9();
    let replica2 = with_socket(2);
    assert_eq!(status(2)["amnesiac"], false, "{}", status(2));
    // Node 3 loses its note; the primary is frozen so nothing resyncs it
    // before it is looked at.
    replica3.kill9();
    primary.signal(Signal::SIGSTOP);
    let note = PathBuf::from(format!("{}.keelnote", cluster.image(3).display()));
    std::fs::remove_file(&note).expect("remove the note");
    let replica3 = with_socket(3);
    assert_eq!(status(3)["amnesiac"], true, "{}", status(3));
    primary.signal(Signal::SIGCONT);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(3)["amnesiac"] != false {
        assert!(Instant::now() < deadline, "still amnesiac: {}", status(3));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[1, 2, 3]);
    // Stopped cleanly (SIGTERM), each copy marked its last note clean, so
    // a reboot would not make it amnesiac. (Note slots: 128 bytes, the
    // sequence at bytes 8..16, the flags at byte 96, bit 2 clean.)
    for node in 1..=3 {
        let note = PathBuf::from(format!("{}.keelnote", cluster.image(node).display()));
        let bytes = std::fs::read(&note).expect("note");
        let newest = bytes
            .chunks(128)
            .filter(|slot| slot.starts_with(b"KEELNOTE"))
            .max_by_key(|slot| {
                let mut sequence = [0u8; 8];
                sequence.copy_from_slice(&slot[8..16]);
                u64::from_le_bytes(sequence)
            })
            .expect("a note");
        assert_eq!(newest[96] & 4, 4, "node {node}'s last note is not clean");
    }
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
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// Large writes from several queues, more data in flight than the
/// primary's buffer pool holds, while a replica is frozen: every write
/// succeeds, and neither the host's connections nor the link to the live
/// replica break. Host commands used to keep their pool buffers until the
/// quorum answered, and the state machine's own local writes then found
/// the pool empty and failed host writes (Write Fault); later the local
/// writes emptied the pool and a connection or link with something to send
/// was closed ("buffer pool exhausted": in CI, the host's queues).
#[test]
fn large_writes_beyond_the_buffer_pool_never_fail_while_a_replica_is_frozen() {
    use nix::sys::signal::Signal;

    const BYTES: usize = 1 << 20;
    const DEPTH: u16 = 16;
    let cluster = Cluster::new("replication-pool", 2);
    // 96 buffers of 128 KiB (12 MiB) against 4 queues x 16 x 1 MiB in
    // flight: the host's writes take the pool down to their reserve, the
    // local writes take the rest.
    // A larger volume than the cluster's usual: enough 1 MiB slots that the
    // writes in flight never overlap (overlapping ones wait for each other).
    let primary = cluster.start_with(1, &["--buffers", "96", "--size", "64M"]);
    let replica2 = cluster.start_with(2, &["--size", "64M"]);
    let replica3 = cluster.start_with(3, &["--size", "64M"]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    replica3.signal(Signal::SIGSTOP);

    let mut ctrl =
        Controller::connect(primary.addr, NQN, &HostOptions::default(), 4).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let blocks = (BYTES / ns.block_size as usize) as u32;
    // Each queue writes its own half of the volume, a slot per 1 MiB.
    let slots_per_queue = ns.blocks / u64::from(blocks) / 4;
    let writers: Vec<_> = (0..4u16)
        .map(|index| {
            let mut queue = ctrl.io_queue(index + 1, DEPTH, ns).expect("I/O queue");
            // A primary that stops answering fails the test, not hangs it.
            queue
                .set_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            std::thread::spawn(move || {
                let first = u64::from(index) * slots_per_queue;
                let mut done = Vec::new();
                let mut last = std::collections::BTreeMap::new();
                for round in 0..3u64 {
                    for slot in 0..DEPTH {
                        let target =
                            first + (round * u64::from(DEPTH) + u64::from(slot)) % slots_per_queue;
                        let lba = target * u64::from(blocks);
                        fill(queue.buffer(slot, BYTES), lba, round + 1);
                        queue
                            .submit(slot, IoKind::Write { fua: false }, lba, blocks)
                            .expect("submit");
                        last.insert(lba, round + 1);
                    }
                    let mut finished = 0;
                    while finished < DEPTH as usize {
                        done.clear();
                        queue.wait(&mut done).expect("wait");
                        for io in &done {
                            assert!(io.status.is_success(), "a 1 MiB write: {}", io.status);
                        }
                        finished += done.len();
                    }
                }
                (queue, last)
            })
        })
        .collect();
    let results: Vec<_> = writers
        .into_iter()
        .map(|w| w.join().expect("writer"))
        .collect();
    let metrics = scrape(&primary);
    let links = replica_sample(&metrics, "keel_replica_link_connects_total", 2, None);
    assert_eq!(links, Some(1.0), "the link to the live replica broke");
    let empty = metrics
        .samples
        .iter()
        .find(|s| s.metric == "keel_shard_pool_empty_total")
        .map(|s| s.value.clone());
    eprintln!("the primary's pool found empty: {empty:?} times");
    replica3.signal(Signal::SIGCONT);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    for (mut queue, last) in results {
        for (lba, generation) in last {
            assert_eq!(
                run_one(&mut queue, IoKind::Read, lba, blocks),
                Status::SUCCESS
            );
            let mut expected = vec![0u8; BYTES];
            fill(&mut expected, lba, generation);
            assert!(queue.buffer(0, BYTES) == expected.as_slice(), "LBA {lba}");
        }
    }
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// A real partition (the TCP link to node 3 stops carrying anything either
/// way, both ends keep it open): W = 2 of 3 keeps completing verified
/// writes on the other copies at the unpartitioned pace, node 3 falls
/// behind (its frames pile up until the primary drops and later resyncs
/// it), and after the partition heals the copies converge, byte-identical.
#[test]
fn a_partitioned_replica_does_not_stop_a_quorum_and_converges_after_the_heal() {
    let cluster = Cluster::new("replication-partition", 2);
    let (args3, partition) = behind_delay_line(&cluster, 3, Duration::ZERO);
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = start(&args3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_queue(&primary);

    let (p50, p99) = timed_writes(&mut queue, 200, 1);
    eprintln!("4 KiB writes, QD 1, W=2/3, connected: p50 {p50:?}, p99 {p99:?}");

    partition.set(true);
    let (p50, p99) = timed_writes(&mut queue, 200, 2);
    eprintln!("4 KiB writes, QD 1, W=2/3, node 3 partitioned: p50 {p50:?}, p99 {p99:?}");
    // Larger writes across the volume, verified, while it lasts.
    for base in (0..5u64).map(|i| 8 + i * 6000) {
        write_read_verify(&mut queue, base, 3);
    }
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));
    assert_eq!(run_one(&mut queue, IoKind::Flush, 0, 0), Status::SUCCESS);

    partition.set(false);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(90));
    for base in (0..5u64).map(|i| 8 + i * 6000) {
        read_back(&mut queue, base, 3);
    }
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// A partition of an idle volume: no write is in flight, so only the
/// heartbeats can tell. Within the link timeout (1 s here) the primary
/// closes the link, reports node 3 down and counts a link timeout; after
/// the heal node 3 links again and the volume is back in sync. Before the
/// partition the heartbeats measure the round trip.
#[test]
fn an_idle_partitioned_replica_is_noticed_by_heartbeats_and_rejoins_after_the_heal() {
    let cluster = Cluster::new("replication-heartbeat", 2);
    let timeout = ["--link-timeout-ms".to_string(), "1000".to_string()];
    let with_timeout = |mut args: Vec<String>| {
        args.extend(timeout.iter().cloned());
        args
    };
    let (args3, partition) = behind_delay_line(&cluster, 3, Duration::ZERO);
    let primary = start(&with_timeout(cluster.args(1, "psk")));
    let replica2 = start(&with_timeout(cluster.args(2, "psk")));
    let replica3 = start(&with_timeout(args3));
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    // Links beat every 250 ms; the reply gives the round trip.
    let sample = |name: &str, node: usize| replica_sample(&scrape(&primary), name, node, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample("keel_replica_round_trip_seconds", 3).is_none() {
        assert!(
            Instant::now() < deadline,
            "no heartbeat round trip measured"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let round_trip = sample("keel_replica_round_trip_seconds", 3).unwrap_or(f64::NAN);
    assert!(
        round_trip > 0.0 && round_trip < 1.0,
        "round trip {round_trip} s"
    );
    assert_eq!(sample("keel_replica_link_timeouts_total", 3), Some(0.0));

    partition.set(true);
    let cut = Instant::now();
    let down = |node: usize| {
        replica_sample(
            &scrape(&primary),
            "keel_replica_state",
            node,
            Some(("state", "down")),
        ) == Some(1.0)
    };
    while !down(3) {
        assert!(
            cut.elapsed() < Duration::from_secs(10),
            "node 3 still not down {:?} into the partition",
            cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let noticed = cut.elapsed();
    eprintln!("idle partition noticed after {noticed:?} (link timeout 1 s)");
    // The timeout runs from the last frame heard, which may have come up
    // to one heartbeat (250 ms) before the cut: measured from the cut, the
    // link may close from 750 ms on, never sooner.
    assert!(
        noticed >= Duration::from_millis(750),
        "closed before the timeout: {noticed:?}"
    );
    assert!(!down(2), "node 2 is not partitioned");
    assert_eq!(sample("keel_replica_link_timeouts_total", 3), Some(1.0));
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));

    partition.set(false);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// A tmpfs of limited size mounted for the test's life: a disk that fills
/// up, so writes to unallocated blocks fail with ENOSPC (a real I/O error,
/// through the real kernel path), and that can be grown while in use.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts it, or `None` when not root (mounting needs it; CI is root).
    fn mount(path: PathBuf, size: &str) -> Option<SmallDisk> {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's effective user.
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return None;
        }
        std::fs::create_dir_all(&path).expect("mount point");
        // One left by an interrupted run would hide the new one's size.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&path)
            .status();
        let disk = SmallDisk { path };
        disk.mount_with(&format!("size={size}"), &[]);
        Some(disk)
    }

    /// Grows (or shrinks) it in place, files open.
    fn resize(&self, size: &str) {
        self.mount_with(&format!("remount,size={size}"), &[]);
    }

    fn mount_with(&self, options: &str, extra: &[&str]) {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options])
            .args(extra)
            .arg("tmpfs")
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -o {options} failed: {status}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// A replica whose disk fills up: its writes fail (ENOSPC), it refuses its
/// stream with a media error each time and never counts toward the quorum,
/// while the host's verified writes go on with W = 2 on the other two
/// copies; once its disk is grown it is resynced and the copies end
/// byte-identical.
#[test]
fn a_replica_whose_disk_fails_writes_never_stalls_the_quorum_and_is_resynced_once_fixed() {
    let cluster = Cluster::new("replication-full-disk", 2);
    // 6 MiB for a 16 MiB volume (its record sidecar included): the first
    // full copy to it fails part way.
    let Some(disk) = SmallDisk::mount(cluster.dir.join("disk3"), "6M") else {
        return;
    };
    let cluster = cluster.with_image(3, disk.path.join("node3.img"));
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = cluster.start(3);
    primary.wait_gauge("keel_replication_serving", 1, Duration::from_secs(30));
    let (ctrl, mut queue) = open_queue(&primary);
    for generation in 1..=2u64 {
        for base in (0..6u64).map(|i| 8 + i * 5000) {
            write_read_verify(&mut queue, base, generation);
        }
    }
    assert_eq!(run_one(&mut queue, IoKind::Flush, 0, 0), Status::SUCCESS);
    // Node 3 cannot have kept up: it is not in sync, and writes still
    // completed on the other two copies.
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));

    disk.resize("64M");
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(90));
    for base in (0..6u64).map(|i| 8 + i * 5000) {
        read_back(&mut queue, base, 2);
    }
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
    assert!(replica2.terminate().success());
    assert!(
        replica3.terminate().success(),
        "replica 3 exits 0 after its disk failed"
    );
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
            Status::ANA_INACCESSIBLE,
            "the deposed primary refuses writes"
        );
    }
    read_back(&mut queue, 8, 1);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    new_primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));
    stop_all([old, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// One replica 50 ms away (25 ms each way through a delay line): with
/// quorum 2 of 3 the host's writes complete at the near replica's pace, not
/// the far one's, and the far one still ends identical.
#[test]
fn a_replica_50_ms_away_does_not_slow_a_quorum_of_2() {
    let cluster = Cluster::new("replication-delayed", 2);
    // Node 3's member address is the delay line; node 3 listens behind it.
    let (args3, _) = behind_delay_line(&cluster, 3, Duration::from_millis(25));
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
    let primary = cluster.start(1);
    let replica2 = cluster.start(2);
    let replica3 = start(&args3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    let (ctrl, mut queue) = open_queue(&primary);
    let (p50, p99) = timed_writes(&mut queue, 100, 1);
    eprintln!("4 KiB writes, QD 1, W=2/3, node 3 at 50 ms RTT: p50 {p50:?}, p99 {p99:?}");
    // Waiting for node 3 would take at least its 50 ms round trip.
    assert!(
        p50 < Duration::from_millis(25),
        "writes wait for the far replica: p50 {p50:?}"
    );
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// `count` sequential 4 KiB writes (LBAs 8, 72, ...; content of
/// `generation`), each acknowledged successfully; their p50 and p99.
fn timed_writes(queue: &mut IoQueue, count: u64, generation: u64) -> (Duration, Duration) {
    let mut latencies = Vec::new();
    for i in 0..count {
        let lba = 8 + i * 64;
        fill(queue.buffer(0, 4096), lba, generation);
        let started = std::time::Instant::now();
        assert!(run_one(queue, IoKind::Write { fua: false }, lba, 8).is_success());
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    (p50, p99)
}

/// Node `node`'s command line with its member address served by a delay
/// line (`one_way` each way) that forwards to where it really listens, and
/// the line's partition switch.
fn behind_delay_line(
    cluster: &Cluster,
    node: usize,
    one_way: Duration,
) -> (Vec<String>, support::delay::Partition) {
    let behind = free_port();
    let partition = support::delay::start(
        format!("127.0.0.1:{}", cluster.ports[node - 1])
            .parse()
            .expect("addr"),
        format!("127.0.0.1:{behind}").parse().expect("addr"),
        one_way,
    );
    let mut args = cluster.args(node, "psk");
    let at = args
        .iter()
        .position(|a| a == "--replica-listen")
        .expect("--replica-listen");
    args[at + 1] = format!("127.0.0.1:{behind}");
    (args, partition)
}

/// Node 3's report in `volume_status`: (state, lag_bytes, lag_ms).
#[derive(Debug, Clone)]
struct LagSample {
    state: String,
    lag_bytes: u64,
    lag_ms: u64,
}

fn async_replica_status(socket: &std::path::Path) -> Option<LagSample> {
    let status = keel_target::rpc::RpcClient::connect(socket)
        .ok()?
        .call("volume_status", None)
        .ok()?;
    let entry = status["replicas"]
        .as_array()?
        .iter()
        .find(|e| e["node"] == 3)?
        .clone();
    Some(LagSample {
        state: entry["state"].as_str()?.to_owned(),
        lag_bytes: entry["lag_bytes"].as_u64()?,
        lag_ms: entry["lag_ms"].as_u64()?,
    })
}

/// Bytes per write of the async load, and the queue depth.
const LOAD_WRITE: usize = 16 * 1024;
const LOAD_DEPTH: u16 = 8;
/// The core's window (`PrimaryLimits::window_frames`): frames in flight
/// per replica.
const WINDOW_FRAMES: u64 = 32;

/// What a write load did.
struct LoadResult {
    writes: u64,
    elapsed: Duration,
    /// Every 16 KiB slot written, with the generation last acknowledged.
    written: std::collections::BTreeMap<u64, u64>,
}

/// Random 16 KiB writes at queue depth [`LOAD_DEPTH`] over the whole
/// volume, self-describing (slot and generation in the bytes), never two
/// in flight on the same slot, for `duration` or `max_writes` writes,
/// paced to at most `per_second` when given. Every write must succeed.
fn write_load(
    queue: &mut IoQueue,
    duration: Duration,
    max_writes: u64,
    per_second: Option<u64>,
) -> LoadResult {
    use std::collections::{BTreeMap, HashMap};
    let block = queue.namespace().block_size as usize;
    let blocks = (LOAD_WRITE / block) as u32;
    let slots = queue.namespace().blocks / u64::from(blocks);
    let started = std::time::Instant::now();
    let mut written = BTreeMap::new();
    let mut in_flight: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut generation = 0u64;
    let mut done = Vec::new();
    loop {
        let stop = started.elapsed() >= duration || generation >= max_writes;
        for slot in 0..LOAD_DEPTH {
            if stop || generation >= max_writes || in_flight.contains_key(&slot) {
                continue;
            }
            if let Some(rate) = per_second {
                let due = Duration::from_micros(generation * 1_000_000 / rate);
                if started.elapsed() < due {
                    break;
                }
            }
            let target = loop {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let target = rng % slots;
                if !in_flight.values().any(|(t, _)| *t == target) {
                    break target;
                }
            };
            generation += 1;
            let lba = target * u64::from(blocks);
            fill(queue.buffer(slot, LOAD_WRITE), lba, generation);
            queue
                .submit(slot, IoKind::Write { fua: false }, lba, blocks)
                .expect("submit");
            in_flight.insert(slot, (target, generation));
        }
        if in_flight.is_empty() {
            if stop {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        done.clear();
        queue.wait(&mut done).expect("wait");
        for io in &done {
            let (target, generation) = in_flight.remove(&io.slot).expect("a slot in flight");
            assert!(
                io.status.is_success(),
                "write {generation} to slot {target}: {}",
                io.status
            );
            written.insert(target * u64::from(blocks), generation);
        }
    }
    LoadResult {
        writes: generation,
        elapsed: started.elapsed(),
        written,
    }
}

/// Reads back every slot `load` wrote and checks its last generation.
fn verify_load(queue: &mut IoQueue, load: &LoadResult) {
    let block = queue.namespace().block_size as usize;
    let blocks = (LOAD_WRITE / block) as u32;
    for (&lba, &generation) in &load.written {
        let status = run_one(queue, IoKind::Read, lba, blocks);
        assert!(status.is_success(), "read at LBA {lba}: {status}");
        let mut expected = vec![0u8; LOAD_WRITE];
        fill(&mut expected, lba, generation);
        assert!(
            queue.buffer(0, LOAD_WRITE) == expected.as_slice(),
            "LBA {lba} does not hold generation {generation}"
        );
    }
}

/// A cluster of nodes 1 (primary) and 2 (sync, W = 2) and node 3 (async)
/// behind a delay line of `one_way` each way, with the async lag bound
/// `lag_bytes` / `lag_ms`; `load` runs on the primary while a sampler asks
/// `volume_status` for node 3 every 50 ms. Returns the samples, the load
/// and the primary's metrics before and after it; afterwards node 3 is back
/// in sync, the load reads back, and the three copies are identical.
struct AsyncRun {
    samples: Vec<LagSample>,
    load: LoadResult,
    before: prometheus_parse::Scrape,
    after: prometheus_parse::Scrape,
    catch_up: Duration,
}

/// How node 3 is slowed: a delay line, or frozen (SIGSTOP) during the load.
#[derive(Clone, Copy)]
enum Slow {
    Away(Duration),
    Frozen,
}

/// How the primary gets its async lag bound.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Configured {
    /// `--async-max-lag-bytes` and `--async-max-lag-ms`.
    Flags,
    /// keel.toml's `[replication]` table.
    File,
}

fn async_replica_under_load(
    name: &str,
    lag_bytes: u64,
    lag_ms: u64,
    slow: Slow,
    configured: Configured,
    load: impl FnOnce(&mut IoQueue) -> LoadResult,
) -> AsyncRun {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let cluster = Cluster::new(name, 2).with_async(3);
    let lag_flags = [
        "--async-max-lag-bytes".to_string(),
        lag_bytes.to_string(),
        "--async-max-lag-ms".to_string(),
        lag_ms.to_string(),
    ];
    let socket = cluster.dir.join("primary.sock");
    let mut args1 = match configured {
        Configured::Flags => {
            let mut args = cluster.args(1, "psk");
            args.extend_from_slice(&lag_flags);
            args
        }
        Configured::File => cluster.config_file_args(
            1,
            &format!("async_max_lag_bytes = {lag_bytes}\nasync_max_lag_ms = {lag_ms}"),
        ),
    };
    args1.push("--rpc-socket".into());
    args1.push(socket.to_str().expect("utf-8").into());
    let mut args3 = match slow {
        Slow::Away(one_way) => behind_delay_line(&cluster, 3, one_way).0,
        Slow::Frozen => cluster.args(3, "psk"),
    };
    args3.extend_from_slice(&lag_flags);
    let primary = match configured {
        Configured::Flags => start(&args1),
        Configured::File => {
            Keeld::spawn(&args1).unwrap_or_else(|status| panic!("keeld exited early: {status}"))
        }
    };
    let replica2 = cluster.start(2);
    let replica3 = start(&args3);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    let (ctrl, ns) = {
        let mut ctrl =
            Controller::connect(primary.addr, NQN, &HostOptions::default(), 1).expect("connect");
        let ns = ctrl.namespace(1).expect("identify");
        (ctrl, ns)
    };
    let mut queue = ctrl.io_queue(1, LOAD_DEPTH, ns).expect("I/O queue");
    // The views behind the per-replica gauges refresh every 50 ms tick.
    std::thread::sleep(Duration::from_millis(200));
    let before = scrape(&primary);

    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let socket = socket.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if let Some(sample) = async_replica_status(&socket) {
                    samples.push(sample);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        })
    };
    if let Slow::Frozen = slow {
        replica3.signal(nix::sys::signal::Signal::SIGSTOP);
    }
    let load = load(&mut queue);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler");
    let after = scrape(&primary);
    if let Slow::Frozen = slow {
        replica3.signal(nix::sys::signal::Signal::SIGCONT);
    }

    // Once the load stops, node 3 catches up (resynced if it was dropped).
    let quiet = std::time::Instant::now();
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(120));
    let catch_up = quiet.elapsed();
    // The views volume_status reports refresh every 50 ms tick: they may
    // be a tick behind the gauge.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let now = async_replica_status(&socket).expect("volume_status");
        if now.state == "in_sync" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{now:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    verify_load(&mut queue, &load);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
    AsyncRun {
        samples,
        load,
        before,
        after,
        catch_up,
    }
}

fn describe(run: &AsyncRun) -> String {
    let max_bytes = run.samples.iter().map(|s| s.lag_bytes).max().unwrap_or(0);
    let max_ms = run.samples.iter().map(|s| s.lag_ms).max().unwrap_or(0);
    let mut states: Vec<&str> = run.samples.iter().map(|s| s.state.as_str()).collect();
    states.dedup();
    format!(
        "{} writes of 16 KiB at QD {LOAD_DEPTH} in {:?} ({:.0}/s); {} samples; max lag {max_bytes} bytes, \
         {max_ms} ms; states in order {states:?}; back in sync {:?} after the load",
        run.load.writes,
        run.load.elapsed,
        run.load.writes as f64 / run.load.elapsed.as_secs_f64(),
        run.samples.len(),
        run.catch_up
    )
}

/// Issue 4: an async replica under a sustained write load keeps its lag
/// under the configured bound, or is marked out of date and resynced.
/// Node 3 is async and 200 ms away (100 ms each way): its window of 32
/// frames drains at most 160 writes a second, far below what the primary
/// takes, so its lag grows to the 6 MiB bound. The lag reported never
/// exceeds the bound by more than one window; the replica is dropped and
/// resynced (reported `out_of_date` or `resyncing`, counted in
/// `keel_replica_dropped_total`), the host's writes all succeed, and once
/// the load stops it is back in sync with three identical copies.
#[test]
fn an_async_replica_past_its_lag_bound_is_marked_out_of_date_and_resynced() {
    let bound: u64 = 6 << 20;
    let run = async_replica_under_load(
        "replication-async-tight",
        bound,
        5_000,
        Slow::Away(Duration::from_millis(100)),
        Configured::File,
        |queue| write_load(queue, Duration::from_secs(6), u64::MAX, None),
    );
    let summary = describe(&run);
    eprintln!("async, bound 6 MiB / 5 s, 200 ms away: {summary}");
    let window = WINDOW_FRAMES * LOAD_WRITE as u64;
    for sample in &run.samples {
        assert!(
            sample.lag_bytes <= bound + window,
            "lag {} bytes past the {bound} byte bound (+ one window) in state {}: {summary}",
            sample.lag_bytes,
            sample.state
        );
        assert!(
            sample.lag_ms <= 5_000 + 100,
            "lag {} ms past the 5 s bound: {summary}",
            sample.lag_ms
        );
    }
    assert!(
        run.samples
            .iter()
            .any(|s| s.state == "out_of_date" || s.state == "resyncing"),
        "node 3 was never reported out of date or resyncing: {summary}"
    );
    // It got close to the bound before it was dropped: the bound, not
    // something else, is what dropped it.
    assert!(
        run.samples.iter().any(|s| s.lag_bytes > bound / 2),
        "node 3 never lagged near the bound: {summary}"
    );
    let dropped = replica_sample(&run.after, "keel_replica_dropped_total", 3, None);
    assert!(dropped >= Some(1.0), "dropped {dropped:?}: {summary}");
    let dropped2 = replica_sample(&run.after, "keel_replica_dropped_total", 2, None);
    assert_eq!(dropped2, Some(0.0), "the sync replica was never dropped");
    let connects = replica_sample(&run.after, "keel_replica_link_connects_total", 3, None);
    assert!(connects >= Some(2.0), "node 3 reconnected: {connects:?}");
}

/// The same distance and an async bound the load cannot reach (32 MiB,
/// 10 s; fewer writes than the send queue holds, paced to 200 a second):
/// node 3 lags (its lag is reported) but never leaves `in_sync`, and is
/// never dropped. Also checks the per-replica Prometheus series: present
/// for both replicas, parsed by a real parser, and moving under writes.
#[test]
fn an_async_replica_within_its_lag_bound_stays_in_sync_and_its_metrics_move() {
    let bound: u64 = 32 << 20;
    let run = async_replica_under_load(
        "replication-async-generous",
        bound,
        10_000,
        Slow::Away(Duration::from_millis(100)),
        Configured::Flags,
        |queue| write_load(queue, Duration::from_secs(30), 800, Some(200)),
    );
    let summary = describe(&run);
    eprintln!("async, bound 32 MiB / 10 s, 200 ms away: {summary}");
    assert!(!run.samples.is_empty());
    for sample in &run.samples {
        assert_eq!(sample.state, "in_sync", "{summary}");
        assert!(sample.lag_bytes <= bound, "{summary}");
    }
    assert!(
        run.samples.iter().any(|s| s.lag_bytes > 0),
        "node 3 never lagged at all: the test shows nothing: {summary}"
    );

    // The per-replica series, before and after the load.
    for node in [2usize, 3] {
        for name in [
            "keel_replica_frames_sent_total",
            "keel_replica_bytes_sent_total",
            "keel_replica_frames_applied_total",
            "keel_replica_frames_acked_total",
        ] {
            let before = replica_sample(&run.before, name, node, None).expect(name);
            let after = replica_sample(&run.after, name, node, None).expect(name);
            assert!(
                after
                    >= before
                        + run.load.writes as f64
                            * if name.contains("bytes") {
                                LOAD_WRITE as f64
                            } else {
                                1.0
                            }
                            * 0.5,
                "{name}{{replica={node}}} moved from {before} to {after} under {} writes",
                run.load.writes
            );
        }
        let mode = if node == 3 { "async" } else { "sync" };
        let sample = run
            .after
            .samples
            .iter()
            .find(|s| {
                s.metric == "keel_replica_lag_bytes"
                    && s.labels.get("replica") == Some(node.to_string().as_str())
            })
            .expect("lag gauge");
        assert_eq!(sample.labels.get("mode"), Some(mode));
        assert!(sample.labels.get("addr").is_some());
        for name in [
            "keel_replica_lag_seconds",
            "keel_replica_resync_regions_remaining",
        ] {
            assert!(
                replica_sample(&run.after, name, node, None).is_some(),
                "{name}"
            );
        }
        assert_eq!(
            replica_sample(
                &run.before,
                "keel_replica_state",
                node,
                Some(("state", "in_sync"))
            ),
            Some(1.0)
        );
        assert_eq!(
            replica_sample(
                &run.before,
                "keel_replica_state",
                node,
                Some(("state", "down"))
            ),
            Some(0.0)
        );
        assert_eq!(
            replica_sample(&run.after, "keel_replica_dropped_total", node, None),
            Some(0.0)
        );
        assert_eq!(
            replica_sample(&run.after, "keel_replica_link_connects_total", node, None),
            Some(1.0)
        );
    }
}

/// The time bound: node 3 (async, 1 s bound, 64 MiB) frozen by SIGSTOP
/// under a load paced to 200 writes a second — too few to reach the bytes
/// bound or overflow its queue within a second, so only the age of its
/// oldest unacknowledged frame can drop it. The reported lag never exceeds
/// 1 s by more than a tick, it is dropped (reported `down` or
/// `connecting`, counted), and once thawed it is resynced and identical.
#[test]
fn a_frozen_async_replica_is_dropped_at_its_lag_time_bound() {
    let run = async_replica_under_load(
        "replication-async-frozen",
        64 << 20,
        1_000,
        Slow::Frozen,
        Configured::Flags,
        |queue| write_load(queue, Duration::from_secs(30), 800, Some(200)),
    );
    let summary = describe(&run);
    eprintln!("async, bound 64 MiB / 1 s, frozen: {summary}");
    for sample in &run.samples {
        assert!(
            sample.lag_ms <= 1_000 + 100,
            "lag {} ms past the 1 s bound in state {}: {summary}",
            sample.lag_ms,
            sample.state
        );
    }
    assert!(
        run.samples.iter().any(|s| s.lag_ms >= 500),
        "node 3 never lagged near the time bound: {summary}"
    );
    assert!(
        run.samples.iter().all(|s| s.lag_bytes < 16 << 20),
        "the bytes bound or the queue could have dropped it: {summary}"
    );
    assert!(
        run.samples
            .iter()
            .any(|s| s.state == "down" || s.state == "connecting"),
        "node 3 was never dropped: {summary}"
    );
    let dropped = replica_sample(&run.after, "keel_replica_dropped_total", 3, None);
    assert!(dropped >= Some(1.0), "dropped {dropped:?}: {summary}");
}
