//! Fault injection against real keeld processes (`--fault-injection`,
//! driven over the control socket): a failed write on a plain keeld, and a
//! replica whose disk stalls in a replicated volume, dropped by the
//! primary's link timeout while the host's writes go on, then resynced.

use std::path::Path;
use std::time::{Duration, Instant};

use keel_target::initiator::{Controller, IoKind, IoQueue};
use keel_target::nvme::Status;
use keel_target::rpc::{codes, ClientError, RpcClient};
use serde_json::{json, Value};

mod support;

use support::cluster::{
    open_queue as open_replicated_queue, open_queue_on, replica_sample, stop_all, Cluster,
};
use support::io::{fill, read_back, run_one, scratch_dir, write_read_verify};
use support::{scrape, Keeld};

const NQN: &str = "nqn.2026-11.io.keel:faults";
const SIZE: &str = "16M";

/// keeld serving [`NQN`] on an ephemeral port with its metrics endpoint,
/// plus `args`.
fn start(args: &[String]) -> Keeld {
    support::serve(NQN, args)
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn path_arg(path: &Path) -> String {
    path.to_str().expect("utf-8").to_string()
}

/// One control call to the keeld serving `socket`.
fn rpc(socket: &Path, method: &str, params: Value) -> Result<Value, ClientError> {
    RpcClient::connect(socket)?.call(method, Some(params))
}

/// A host connected to `keeld` with one I/O queue of depth 4.
fn open_queue(keeld: &Keeld) -> (Controller, IoQueue) {
    open_queue_on(keeld, NQN)
}

/// Writes 8 blocks at `lba` filled with (`lba`, `generation`); the status.
fn write_blocks(queue: &mut IoQueue, lba: u64, generation: u64) -> Status {
    let bytes = 8 * queue.namespace().block_size as usize;
    fill(queue.buffer(0, bytes), lba, generation);
    run_one(queue, IoKind::Write { fua: false }, lba, 8)
}

/// Whether the 8 blocks at `lba` hold (`lba`, `generation`).
fn holds(queue: &mut IoQueue, lba: u64, generation: u64) -> bool {
    let bytes = 8 * queue.namespace().block_size as usize;
    queue.buffer(0, bytes).fill(0);
    let status = run_one(queue, IoKind::Read, lba, 8);
    assert!(status.is_success(), "read at LBA {lba}: {status}");
    let mut expected = vec![0u8; bytes];
    fill(&mut expected, lba, generation);
    queue.buffer(0, bytes) == expected.as_slice()
}

#[test]
fn an_injected_write_failure_fails_one_nvme_write_and_the_next_succeeds() {
    let dir = scratch_dir("faults-plain");
    let socket = dir.join("keeld.sock");
    let mut args = strings(&["--size", SIZE, "--fault-injection", "--backend"]);
    args.push(path_arg(&dir.join("vol.img")));
    args.push("--rpc-socket".into());
    args.push(path_arg(&socket));
    let keeld = start(&args);
    let (ctrl, mut queue) = open_queue(&keeld);
    assert_eq!(write_blocks(&mut queue, 64, 1), Status::SUCCESS);

    let rules = rpc(
        &socket,
        "fault_inject",
        json!({"device": "data", "op": "write", "action": "fail", "count": 1}),
    )
    .expect("fault_inject");
    assert_eq!(rules[0]["count"], 1, "{rules}");

    // Reads are untouched by a write rule.
    assert!(holds(&mut queue, 64, 1));
    let status = write_blocks(&mut queue, 64, 2);
    assert_eq!(status, Status::WRITE_FAULT, "the injected failure");
    // It never reached the disk; the rule is used up.
    assert!(holds(&mut queue, 64, 1));
    assert_eq!(rpc(&socket, "fault_list", json!({})).unwrap(), json!([]));
    assert_eq!(write_blocks(&mut queue, 64, 3), Status::SUCCESS);
    assert!(holds(&mut queue, 64, 3));
    write_read_verify(&mut queue, 1000, 4);

    // Until cleared: every flush fails, then none.
    rpc(
        &socket,
        "fault_inject",
        json!({"device": "data", "op": "flush", "action": "fail", "errno": 28}),
    )
    .expect("fault_inject");
    for _ in 0..2 {
        assert_eq!(
            run_one(&mut queue, IoKind::Flush, 0, 0),
            Status::WRITE_FAULT
        );
    }
    let cleared = rpc(&socket, "fault_clear", json!({})).expect("fault_clear");
    assert_eq!(cleared, json!({"cleared": ["data"]}));
    assert_eq!(run_one(&mut queue, IoKind::Flush, 0, 0), Status::SUCCESS);

    // A disk that completes reads and writes short (one block at a time):
    // keeld submits the rest, and the host sees every command succeed whole.
    rpc(
        &socket,
        "fault_inject",
        json!({"device": "data", "op": "any", "action": "short"}),
    )
    .expect("fault_inject");
    assert_eq!(write_blocks(&mut queue, 64, 5), Status::SUCCESS);
    assert!(holds(&mut queue, 64, 5));
    write_read_verify(&mut queue, 2000, 6);
    let rules = rpc(&socket, "fault_list", json!({})).expect("fault_list");
    let hits = rules[0]["hits"].as_u64().unwrap_or(0);
    assert!(hits >= 16, "8-block transfers cut at every block: {rules}");
    rpc(&socket, "fault_clear", json!({})).expect("fault_clear");
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(keeld.terminate().success());

    // Without the flag: nothing to inject into, and it says why.
    let mut args = strings(&["--size", SIZE, "--backend"]);
    args.push(path_arg(&dir.join("vol.img")));
    args.push("--rpc-socket".into());
    args.push(path_arg(&socket));
    let keeld = start(&args);
    match rpc(
        &socket,
        "fault_inject",
        json!({"device": "data", "op": "write", "action": "fail"}),
    ) {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, codes::NOT_AVAILABLE);
            assert!(e.message.contains("--fault-injection"), "{}", e.message);
        }
        other => panic!("fault_inject without --fault-injection: {other:?}"),
    }
    let (ctrl, mut queue) = open_queue(&keeld);
    assert!(holds(&mut queue, 64, 5));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(keeld.terminate().success());
}

/// Node `node` of `cluster` (three copies, W = 2) with a 1 s link
/// timeout, its control socket, and `extra` flags.
fn start_node(cluster: &Cluster, node: usize, extra: &[&str]) -> Keeld {
    let socket = path_arg(&cluster.socket(node));
    let mut flags = vec!["--link-timeout-ms", "1000", "--rpc-socket", &socket];
    flags.extend_from_slice(extra);
    cluster.start_with(node, &flags)
}

/// A per-replica sample from `keeld`'s metrics, in state `state` if given.
fn sample(keeld: &Keeld, name: &str, node: usize, state: Option<&str>) -> Option<f64> {
    replica_sample(&scrape(keeld), name, node, state.map(|s| ("state", s)))
}

#[test]
fn a_replica_whose_disk_stalls_is_dropped_while_writes_go_on_and_is_resynced_once_cleared() {
    let cluster = Cluster::new("faults-replicated", 2);
    let primary = start_node(&cluster, 1, &[]);
    let replica2 = start_node(&cluster, 2, &[]);
    let mut replica3 = start_node(&cluster, 3, &["--fault-injection"]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    write_read_verify(&mut queue, 8, 1);
    assert_eq!(
        sample(&primary, "keel_replica_dropped_total", 3, None),
        Some(0.0)
    );

    // Node 3's disk: every data write hangs 5 s, then fails.
    let socket3 = cluster.socket(3);
    rpc(
        &socket3,
        "fault_inject",
        json!({"device": "data", "op": "write", "action": "stall", "delay_ms": 5000}),
    )
    .expect("fault_inject on node 3");
    let listed = rpc(&socket3, "fault_list", json!({})).expect("fault_list");
    assert_eq!(listed[0]["delay_ms"], 5000, "{listed}");
    // A replicating keeld has a record device too; nothing is set on it.
    let cleared = rpc(&socket3, "fault_clear", json!({"device": "record"})).expect("record");
    assert_eq!(cleared, json!({"cleared": ["record"]}));

    // The host keeps writing verified data through the primary: W = 2 of
    // 3 holds with node 2, whatever node 3's disk does.
    let stalled = Instant::now();
    let mut generation = 2;
    let mut bases = Vec::new();
    let dropped = loop {
        let base = 3000 + (generation % 8) * 3000;
        let started = Instant::now();
        write_read_verify(&mut queue, base, generation);
        bases.retain(|&(b, _)| b != base);
        bases.push((base, generation));
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "a round of writes took {:?}: the stalled replica held the quorum up",
            started.elapsed()
        );
        let dropped = sample(&primary, "keel_replica_dropped_total", 3, None);
        let in_sync = sample(&primary, "keel_replica_state", 3, Some("in_sync"));
        generation += 1;
        if dropped.is_some_and(|d| d >= 1.0) && in_sync == Some(0.0) {
            break stalled.elapsed();
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(20),
            "node 3 not dropped {:?} into its stall (dropped {dropped:?}, in_sync {in_sync:?})",
            stalled.elapsed()
        );
    };
    eprintln!("node 3 dropped {dropped:?} into its disk stall (link timeout 1 s)");
    assert_eq!(primary.gauge("keel_replication_in_sync"), Some(0));
    assert_eq!(
        sample(&primary, "keel_replica_dropped_total", 2, None),
        Some(0.0),
        "node 2 was dropped too"
    );
    // More writes while node 3 is out, to 3 s into the stall.
    while stalled.elapsed() < Duration::from_secs(3) {
        let base = 3000 + (generation % 8) * 3000;
        write_read_verify(&mut queue, base, generation);
        bases.retain(|&(b, _)| b != base);
        bases.push((base, generation));
        generation += 1;
    }
    assert!(replica3.is_running(), "node 3's keeld stopped");

    // The disk recovers: node 3 is resynced.
    let cleared = rpc(&socket3, "fault_clear", json!({"device": "data"})).expect("fault_clear");
    assert_eq!(cleared, json!({"cleared": ["data"]}));
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    for &(base, generation) in &bases {
        read_back(&mut queue, base, generation);
    }
    read_back(&mut queue, 8, 1);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(replica3.is_running(), "node 3's keeld stopped");

    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// The primary's record device fails its writes: the next persist (an
/// intent bit for a write, or clearing settled ones) fails, and the primary
/// stops instead of stalling — the write in flight and every later one fail
/// with Asymmetric Access Inaccessible (a path error: retry elsewhere), it reports
/// itself failed. Node 2, promoted, serves every write node 1 had
/// acknowledged; node 1 restarted without the fault rejoins as a replica
/// and the three copies end byte-identical.
#[test]
fn a_primary_whose_record_fails_stops_and_a_promoted_replica_serves_every_acknowledged_write() {
    let cluster = Cluster::new("faults-persist", 2);
    let primary = start_node(&cluster, 1, &["--fault-injection"]);
    let replica2 = start_node(&cluster, 2, &[]);
    let replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    write_read_verify(&mut queue, 8, 1);
    let mut acknowledged = Vec::new();

    rpc(
        &cluster.socket(1),
        "fault_inject",
        json!({"device": "record", "op": "write", "action": "fail"}),
    )
    .expect("fault_inject on node 1's record");
    // Writes to the last regions (their intent bits not set yet) until one
    // fails: its intent bit cannot be made durable.
    let started = Instant::now();
    let mut lba = 30_000;
    let refused = loop {
        let status = write_blocks(&mut queue, lba, 2);
        if !status.is_success() {
            break status;
        }
        acknowledged.push(lba);
        lba += 64;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "every write still succeeds"
        );
    };
    assert_eq!(refused, Status::ANA_INACCESSIBLE);
    assert_eq!(write_blocks(&mut queue, 8, 3), Status::ANA_INACCESSIBLE);
    primary.wait_gauge("keel_replication_failed", 1, Duration::from_secs(5));
    let status = rpc(&cluster.socket(1), "volume_status", json!({})).expect("status");
    assert_eq!(status["failed"], true, "{status}");
    assert_eq!(status["links"], 0, "a failed node keeps no link: {status}");
    drop(queue);
    let _ = ctrl.shutdown();

    // The operator promotes node 2: every acknowledged write is there.
    rpc(&cluster.socket(2), "promote", json!({})).expect("promote node 2");
    replica2.wait_gauge("keel_replication_serving", 1, Duration::from_secs(20));
    let (ctrl, mut queue) = open_replicated_queue(&replica2);
    read_back(&mut queue, 8, 1);
    for &lba in &acknowledged {
        assert!(
            holds(&mut queue, lba, 2),
            "acknowledged write at LBA {lba} lost"
        );
    }
    write_read_verify(&mut queue, 6000, 4);

    // Node 1, its device fixed (restarted without the fault), rejoins.
    assert!(primary.terminate().success(), "node 1 stops cleanly");
    let node1 = start_node(&cluster, 1, &[]);
    replica2.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(node1.gauge("keel_replication_serving"), Some(0));
    read_back(&mut queue, 6000, 4);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([node1, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// A replica whose device fails a flush (a persist of its record) stops:
/// it closes its links and takes no new one, so the primary counts it down
/// and the host's writes go on with W = 2; restarted without the fault it
/// is resynced and the copies end byte-identical.
#[test]
fn a_replica_whose_flush_fails_stops_and_is_resynced_after_a_restart() {
    let cluster = Cluster::new("faults-replica-persist", 2);
    let primary = start_node(&cluster, 1, &[]);
    let replica2 = start_node(&cluster, 2, &[]);
    let replica3 = start_node(&cluster, 3, &["--fault-injection"]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    rpc(
        &cluster.socket(3),
        "fault_inject",
        json!({"device": "data", "op": "flush", "action": "fail"}),
    )
    .expect("fault_inject on node 3");
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    // Writes without FUA make node 3 flush before it can acknowledge them
    // durable: that persist fails.
    let mut generation = 1;
    let started = Instant::now();
    while replica3.gauge("keel_replication_failed") != Some(1) {
        write_read_verify(&mut queue, 8 + (generation % 4) * 3000, generation);
        generation += 1;
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "node 3 never failed its persist"
        );
    }
    let status = rpc(&cluster.socket(3), "volume_status", json!({})).expect("status");
    assert_eq!(status["failed"], true, "{status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&primary, "keel_replica_state", 3, Some("in_sync")) != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the primary still counts node 3 in sync"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // W = 2 goes on with node 2.
    for _ in 0..3 {
        write_read_verify(&mut queue, 8 + (generation % 4) * 3000, generation);
        generation += 1;
    }
    assert!(replica3.terminate().success(), "node 3 stops cleanly");
    let replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    assert_eq!(replica3.gauge("keel_replication_failed"), Some(0));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// The primary's disk fails every read: the host's reads are answered by a
/// replica instead (degraded reads), whole and correct, a read across a
/// region boundary included; writes go on meanwhile. With no replica left
/// to ask, the host sees the read error.
#[test]
fn reads_the_primarys_disk_fails_are_answered_by_a_replica() {
    let cluster = Cluster::new("faults-degraded-read", 2);
    let primary = start_node(&cluster, 1, &["--fault-injection"]);
    let replica2 = start_node(&cluster, 2, &[]);
    let replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    let block = u64::from(queue.namespace().block_size);
    // 8 blocks from 4 before the first 1 MiB region boundary.
    let across = (1 << 20) / block - 4;
    for (lba, generation) in [(64, 1), (across, 1)] {
        assert_eq!(write_blocks(&mut queue, lba, generation), Status::SUCCESS);
    }

    let socket = cluster.socket(1);
    rpc(
        &socket,
        "fault_inject",
        json!({"device": "data", "op": "read", "action": "fail"}),
    )
    .expect("fault_inject on the primary");
    assert!(holds(&mut queue, 64, 1), "a degraded read");
    assert!(
        holds(&mut queue, across, 1),
        "a degraded read across regions"
    );
    // Writes are untouched by a read rule; what they write reads back
    // through a replica too.
    assert_eq!(write_blocks(&mut queue, 64, 2), Status::SUCCESS);
    assert!(holds(&mut queue, 64, 2));
    let rules = rpc(&socket, "fault_list", json!({})).expect("fault_list");
    assert!(
        rules[0]["hits"].as_u64().unwrap_or(0) >= 3,
        "the primary's disk failed the reads: {rules}"
    );
    // Three reads, one of them in two regions.
    assert_eq!(
        primary.gauge("keel_replication_degraded_reads_total"),
        Some(4)
    );

    // Both replicas gone: nobody can answer.
    replica2.kill9();
    replica3.kill9();
    let status = {
        let bytes = 8 * block as usize;
        queue.buffer(0, bytes).fill(0);
        run_one(&mut queue, IoKind::Read, 64, 8)
    };
    assert_eq!(status, Status::UNRECOVERED_READ_ERROR);
    assert_eq!(
        primary.gauge("keel_replication_degraded_reads_failed_total"),
        Some(1)
    );
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
}

/// A latent sector error on the primary's disk (`fault_media_error`: reads
/// of it fail until a write covers it): the read is answered by a replica
/// and the answer written back, which remaps the sector, so the next read
/// of it is served from the local copy again.
#[test]
fn a_media_error_on_the_primary_is_repaired_from_a_replica() {
    let cluster = Cluster::new("faults-read-repair", 2);
    let primary = start_node(&cluster, 1, &["--fault-injection"]);
    let _replica2 = start_node(&cluster, 2, &[]);
    let _replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    let block = u64::from(queue.namespace().block_size);
    assert_eq!(write_blocks(&mut queue, 64, 1), Status::SUCCESS);

    let socket = cluster.socket(1);
    let bad = 66 * block;
    rpc(
        &socket,
        "fault_media_error",
        json!({"device": "data", "offset": bad, "length": block}),
    )
    .expect("fault_media_error on the primary");
    assert!(holds(&mut queue, 64, 1), "a read across the bad block");
    assert_eq!(
        primary.gauge("keel_replication_degraded_reads_total"),
        Some(1)
    );
    primary.wait_gauge(
        "keel_replication_read_repairs_total",
        1,
        Duration::from_secs(10),
    );
    let listed = rpc(&socket, "fault_list", json!({})).expect("fault_list");
    assert_eq!(listed, json!([]), "the repair rewrote the bad block");
    assert!(holds(&mut queue, 64, 1));
    assert_eq!(
        primary.gauge("keel_replication_degraded_reads_total"),
        Some(1),
        "read from the local copy again"
    );
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    assert!(primary.terminate().success());
}

/// A replica's copy changed behind keeld's back (bit rot on its disk, a
/// bug): nothing notices until a scrub (`volume_scrub`) compares every
/// region with the primary's; it finds that one, copies it to the replica
/// again, and the copies end byte-identical. A second pass finds nothing.
#[test]
fn a_scrub_finds_a_region_a_replica_lost_behind_its_back_and_copies_it_again() {
    use std::os::unix::fs::FileExt;

    let cluster = Cluster::new("faults-scrub", 2);
    let primary = start_node(&cluster, 1, &[]);
    let replica2 = start_node(&cluster, 2, &[]);
    let replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    write_read_verify(&mut queue, 2048, 1);

    // 4 KiB of node 3's copy, in the fourth region, behind its keeld.
    let image = std::fs::OpenOptions::new()
        .write(true)
        .open(cluster.image(3))
        .expect("node 3's image");
    image
        .write_all_at(&[0xA5; 4096], (3 << 20) + 8192)
        .expect("corrupt");
    image.sync_all().expect("sync");
    drop(image);

    let socket = cluster.socket(1);
    let started = rpc(&socket, "volume_scrub", json!({})).expect("volume_scrub");
    assert_eq!(started["already_running"], false, "{started}");
    primary.wait_gauge(
        "keel_replication_scrub_passes_total",
        1,
        Duration::from_secs(60),
    );
    assert_eq!(
        primary.gauge("keel_replication_scrub_mismatches_total"),
        Some(1)
    );
    let status = rpc(&socket, "volume_status", json!({})).expect("volume_status");
    assert_eq!(status["scrub"]["running"], false, "{status}");
    assert_eq!(status["scrub"]["mismatches"], 1, "{status}");
    assert!(
        status["scrub"]["checked"].as_u64() > Some(2),
        "every region of both replicas: {status}"
    );
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));

    rpc(&socket, "volume_scrub", json!({})).expect("volume_scrub");
    primary.wait_gauge(
        "keel_replication_scrub_passes_total",
        2,
        Duration::from_secs(60),
    );
    assert_eq!(
        primary.gauge("keel_replication_scrub_mismatches_total"),
        Some(1),
        "the copy made them identical"
    );
    // A replica does not scrub.
    let (code, _) = match rpc(&cluster.socket(2), "volume_scrub", json!({})) {
        Err(ClientError::Rpc(e)) => (e.code, e.message),
        other => panic!("a replica scrubbed: {other:?}"),
    };
    assert_eq!(code, codes::REFUSED);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2, replica3]);
    cluster.assert_identical(&[2, 3]);
}

/// `--resync-rate-mib` paces scrubs (and resyncs): at 16 MiB/s a pass over
/// two replicas of a 16 MiB volume (32 region checks of 1 MiB) takes about
/// two seconds, where unpaced it takes a fraction of one. A slow machine
/// only checks fewer regions by the sample, never more.
#[test]
fn a_paced_scrub_keeps_to_its_rate() {
    let cluster = Cluster::new("faults-scrub-paced", 2);
    let primary = start_node(&cluster, 1, &["--resync-rate-mib", "16"]);
    let replica2 = start_node(&cluster, 2, &[]);
    let replica3 = start_node(&cluster, 3, &[]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let socket = cluster.socket(1);
    let started = Instant::now();
    rpc(&socket, "volume_scrub", json!({})).expect("volume_scrub");
    std::thread::sleep(Duration::from_millis(500));
    let checked = primary
        .gauge("keel_replication_scrub_checks_total")
        .expect("scrub checks");
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("{checked} regions checked {elapsed:.2} s into the pass");
    // The rate's worth, the grants banked before the pass (four), a
    // region's checks started on credit (two) and a region's carry.
    let allowed = (16.0 * elapsed).ceil() as u64 + 8;
    assert!(
        checked <= allowed,
        "{checked} regions checked in {elapsed:.2} s at 16 MiB/s"
    );
    primary.wait_gauge(
        "keel_replication_scrub_passes_total",
        1,
        Duration::from_secs(60),
    );
    assert_eq!(
        primary.gauge("keel_replication_scrub_checks_total"),
        Some(32)
    );
    stop_all([primary, replica2, replica3]);
}

/// With read leases (`--read-lease`) the primary serves only while a write
/// quorum of copies answers it: with one replica killed it goes on (W = 2
/// of 3); with both, it stops serving within a link timeout (reads refused
/// with Asymmetric Access Inaccessible, the ANA state a multipath host
/// follows), although nothing deposed it; once a replica is back it
/// serves again, every write in place.
#[test]
fn with_read_leases_a_primary_cut_off_from_the_copies_stops_serving() {
    let cluster = Cluster::new("faults-read-lease", 2);
    let primary = start_node(&cluster, 1, &["--read-lease"]);
    let replica2 = start_node(&cluster, 2, &["--read-lease"]);
    let replica3 = start_node(&cluster, 3, &["--read-lease"]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let (ctrl, mut queue) = open_replicated_queue(&primary);
    write_read_verify(&mut queue, 8, 1);

    replica3.kill9();
    // Two link timeouts: node 3's link is gone, node 2's heartbeats keep
    // the lease.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(primary.gauge("keel_replication_serving"), Some(1));
    read_back(&mut queue, 8, 1);

    replica2.kill9();
    let cut = Instant::now();
    primary.wait_gauge("keel_replication_serving", 0, Duration::from_secs(10));
    eprintln!(
        "stopped serving {:?} after its last copy went",
        cut.elapsed()
    );
    let bytes = 8 * queue.namespace().block_size as usize;
    queue.buffer(0, bytes).fill(0);
    assert_eq!(
        run_one(&mut queue, IoKind::Read, 8, 8),
        Status::ANA_INACCESSIBLE
    );
    let status = rpc(&cluster.socket(1), "volume_status", json!({})).expect("volume_status");
    assert_eq!(status["read_lease"], true, "{status}");
    assert_eq!(status["role"], "replica", "no lease, no serving: {status}");

    let replica2 = start_node(&cluster, 2, &["--read-lease"]);
    primary.wait_gauge("keel_replication_serving", 1, Duration::from_secs(30));
    read_back(&mut queue, 8, 1);
    write_read_verify(&mut queue, 3000, 2);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica2]);
}

/// With read leases a promoted replica serves only a lease (one link
/// timeout, 1 s here) after its election: the old primary, were it alive
/// and cut off, would have stopped serving reads by then.
#[test]
fn with_read_leases_a_promoted_replica_waits_out_the_old_lease() {
    let cluster = Cluster::new("faults-lease-failover", 2);
    let primary = start_node(&cluster, 1, &["--read-lease"]);
    let replica2 = start_node(&cluster, 2, &["--read-lease"]);
    let replica3 = start_node(&cluster, 3, &["--read-lease"]);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    {
        let (_ctrl, mut queue) = open_replicated_queue(&primary);
        write_read_verify(&mut queue, 8, 1);
    }
    // Every copy holds the writes, so node 2 wins its election.
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    primary.kill9();

    let promoted = Instant::now();
    RpcClient::connect(&cluster.socket(2))
        .expect("control socket")
        .call("promote", None)
        .expect("promote");
    replica2.wait_gauge("keel_replication_serving", 1, Duration::from_secs(20));
    let waited = promoted.elapsed();
    eprintln!("the promoted replica served {waited:?} after its promotion");
    assert!(
        waited >= Duration::from_millis(1000),
        "served {waited:?} after the promotion, inside a lease the old primary may hold"
    );
    let (ctrl, mut queue) = open_replicated_queue(&replica2);
    read_back(&mut queue, 8, 1);
    write_read_verify(&mut queue, 3000, 2);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([replica2, replica3]);
}
