//! Membership changes on a running volume, between real keeld processes on
//! loopback, through the control socket (the calls `keelctl replica add`,
//! `keelctl quorum set` and `keelctl replica remove` make; keelctl itself is
//! tested against a replicating keeld in tools/keelctl/tests/cli.rs): a
//! blank copy on a new disk is added to a volume of two copies and brought
//! complete while the host writes, the write quorum is raised and lowered
//! again, the first replica is made async (the write quorum lowered with it),
//! then removed and stopped (and refuses to start again), and the host's verified writes go
//! on throughout. At the end the
//! two remaining copies are byte-identical and every acknowledged write
//! reads back. Then a failover after a copy was added: the promoted replica
//! reaches the added copy by the address it learned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_target::initiator::IoQueue;
use keel_target::rpc::{codes, ClientError, RpcClient, RpcError};
use serde_json::{json, Value};

mod support;

use support::cluster::{open_queue_on, stop_all};
use support::io::{read_back, scratch_dir, write_read_verify};
use support::{free_ports, scrape, Keeld};

const NQN: &str = "nqn.2026-11.io.keel:membership";
const SIZE: &str = "16M";

/// The copies' ports, folder and command lines.
struct Volume {
    dir: PathBuf,
    /// Replication ports of nodes 1, 2 and 3.
    ports: [u16; 3],
    /// The write quorum of the first epoch.
    quorum: u8,
}

impl Volume {
    fn new(name: &str) -> Volume {
        let dir = scratch_dir(name);
        std::fs::write(dir.join("psk"), b"keel membership test key 0123456789\n").expect("psk");
        Volume {
            dir,
            ports: free_ports::<3>(),
            quorum: 2,
        }
    }

    fn image(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}.img"))
    }

    fn socket(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}.sock"))
    }

    fn member(&self, node: usize) -> String {
        format!("{node}@127.0.0.1:{}", self.ports[node - 1])
    }

    /// Node `node` of a volume whose copies are `members` (W = `quorum`,
    /// node 1 primary of the first epoch), with `fresh` saying what a copy
    /// with no record is.
    fn start(&self, node: usize, members: &[usize], fresh: &str) -> Keeld {
        self.try_start(node, members, fresh)
            .unwrap_or_else(|status| panic!("keeld {node} exited early: {status}"))
    }

    /// [`Volume::start`], or keeld's exit status if it stopped before
    /// listening.
    fn try_start(
        &self,
        node: usize,
        members: &[usize],
        fresh: &str,
    ) -> Result<Keeld, std::process::ExitStatus> {
        let path = |p: PathBuf| p.to_str().expect("utf-8").to_string();
        let mut args: Vec<String> = vec![
            "--backend".into(),
            path(self.image(node)),
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
            path(self.dir.join("psk")),
            "--rpc-socket".into(),
            path(self.socket(node)),
            fresh.into(),
        ];
        for &member in members {
            args.push("--member".into());
            args.push(self.member(member));
        }
        Keeld::spawn(&support::serve_args(NQN, &args))
    }

    /// Nodes 1 and 3's copies are byte-identical (both stopped).
    fn assert_identical(&self) {
        let one = std::fs::read(self.image(1)).expect("image 1");
        let three = std::fs::read(self.image(3)).expect("image 3");
        assert_eq!(one.len(), three.len(), "the copies differ in size");
        let first = one.iter().zip(&three).position(|(a, b)| a != b);
        assert_eq!(first, None, "node 3's copy differs from node 1's");
    }
}

/// One call on `socket`: the result, or the server's error.
fn call(socket: &Path, method: &str, params: Value) -> Result<Value, RpcError> {
    let mut client = RpcClient::connect(socket).expect("control socket");
    match client.call(method, Some(params)) {
        Ok(result) => Ok(result),
        Err(ClientError::Rpc(error)) => Err(error),
        Err(other) => panic!("{method}: {other}"),
    }
}

#[track_caller]
fn refused(result: Result<Value, RpcError>, code: i64, words: &str) -> String {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.code, code, "{error:?}");
    assert!(error.message.contains(words), "{error:?}");
    error.message
}

/// Waits (bounded) until the primary's `volume_status` satisfies `done`;
/// returns it.
#[track_caller]
fn wait_status(socket: &Path, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = call(socket, "volume_status", json!({})).expect("volume_status");
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "still {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The state the primary reports for `node`.
fn state_of(status: &Value, node: u64) -> Option<&str> {
    status["replicas"]
        .as_array()?
        .iter()
        .find(|r| r["node"] == node)?["state"]
        .as_str()
}

/// Nodes of the membership `volume_status` reports.
fn members_of(status: &Value) -> Vec<u64> {
    status["membership"]["members"]
        .as_array()
        .map(|m| m.iter().filter_map(|c| c["node"].as_u64()).collect())
        .unwrap_or_default()
}

/// The change is done: no change in progress, and every copy in sync.
fn settled(status: &Value) -> bool {
    status["reconfiguring"] == false
        && status["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().all(|c| c["state"] == "in_sync"))
}

/// Verified writes, remembered for the final read-back.
struct Writes {
    done: Vec<(u64, u64)>,
    next_base: u64,
}

impl Writes {
    /// A verified write of every size class at the next free place (the
    /// extents from one base span 2,620 blocks: 3,000 apart never overlap).
    fn write(&mut self, queue: &mut IoQueue, generation: u64) {
        let base = self.next_base;
        self.next_base += 3000;
        write_read_verify(queue, base, generation);
        self.done.push((base, generation));
    }

    fn read_back_all(&self, queue: &mut IoQueue) {
        for &(base, generation) in &self.done {
            read_back(queue, base, generation);
        }
    }
}

#[test]
fn a_new_copy_is_added_the_quorum_changed_and_an_old_copy_removed_while_the_host_writes() {
    let volume = Volume::new("membership-add-remove");
    let primary = volume.start(1, &[1, 2], "--bootstrap");
    let replica2 = volume.start(2, &[1, 2], "--bootstrap");
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    let socket = volume.socket(1);

    let (ctrl, mut queue) = open_queue_on(&primary, NQN);
    let mut writes = Writes {
        done: Vec::new(),
        next_base: 8,
    };
    writes.write(&mut queue, 1);
    writes.write(&mut queue, 2);

    // What multipath hosts see: the primary's path is ANA optimized, the
    // replica's inaccessible.
    for (node, state) in [(1, "optimized"), (2, "inaccessible")] {
        let list = call(&volume.socket(node), "volume_list", json!({})).expect("volume_list");
        assert_eq!(list[0]["ana_state"], state, "node {node}: {list}");
        assert_eq!(list[0]["ana_group"], 1, "{list}");
    }

    // Replicas refuse changes: only the serving primary makes them.
    let message = refused(
        call(&volume.socket(2), "quorum_set", json!({"write_quorum": 1})),
        codes::REFUSED,
        "not the serving primary",
    );
    assert!(message.contains("node 1"), "{message}");

    // Node 2 is a copy already; node 1's address is taken.
    refused(
        call(
            &socket,
            "replica_add",
            json!({"node": 2, "address": "127.0.0.1:1"}),
        ),
        codes::REFUSED,
        "already a copy",
    );
    let taken = format!("127.0.0.1:{}", volume.ports[0]);
    refused(
        call(&socket, "replica_add", json!({"node": 3, "address": taken})),
        codes::REFUSED,
        "node 1's replication address",
    );
    refused(
        call(&socket, "quorum_set", json!({"write_quorum": 3})),
        codes::INVALID_PARAMS,
        "1..=2",
    );

    // Node 2 frozen (SIGSTOP, no host writes meanwhile): the new epoch
    // cannot reach a write quorum of the old membership (nodes 1 and 2), so
    // the change stays in progress, whatever stage it reached.
    replica2.signal(nix::sys::signal::Signal::SIGSTOP);
    let before = call(&socket, "volume_status", json!({})).expect("status");
    let address = format!("tcp://127.0.0.1:{}", volume.ports[2]);
    let added = call(
        &socket,
        "replica_add",
        json!({"node": 3, "address": address, "mode": "sync", "nqn": NQN}),
    )
    .expect("replica_add");
    assert_eq!(added["from_epoch"], before["epoch"], "{added}");
    assert!(
        added["to_epoch"].as_u64() > before["epoch"].as_u64(),
        "{added}"
    );
    assert_eq!(
        members_of(&json!({"membership": added["membership"]})),
        [1, 2, 3]
    );
    let status = call(&socket, "volume_status", json!({})).expect("status");
    assert_eq!(status["reconfiguring"], true, "{status:#}");
    assert_eq!(
        members_of(&json!({"membership": status["pending_membership"]})),
        [1, 2, 3],
        "{status:#}"
    );
    assert!(
        state_of(&status, 3).is_some(),
        "node 3 is listed: {status:#}"
    );
    // One change at a time.
    refused(
        call(&socket, "quorum_set", json!({"write_quorum": 1})),
        codes::REFUSED,
        "in progress",
    );
    refused(
        call(
            &socket,
            "replica_add",
            json!({"node": 4, "address": "127.0.0.1:9"}),
        ),
        codes::REFUSED,
        "in progress",
    );
    replica2.signal(nix::sys::signal::Signal::SIGCONT);
    // Writes go on meanwhile (W = 2 of the old and of the new membership).
    writes.write(&mut queue, 3);

    // Node 3: a blank copy on a new disk, knowing the primary and itself.
    std::fs::File::create(volume.image(3))
        .and_then(|f| f.set_len(16 << 20))
        .expect("a new empty image");
    let replica3 = volume.start(3, &[1, 3], "--new-copy");
    // The host keeps writing while node 3 gets its full copy.
    writes.write(&mut queue, 4);
    let status = wait_status(&socket, Duration::from_secs(60), |s| {
        settled(s) && state_of(s, 3) == Some("in_sync")
    });
    assert_eq!(members_of(&status), [1, 2, 3], "{status:#}");
    assert_eq!(status["epoch"], added["to_epoch"], "{status:#}");
    assert_eq!(status["write_quorum"], 2);
    let entry = status["replicas"]
        .as_array()
        .and_then(|r| r.iter().find(|c| c["node"] == 3))
        .expect("node 3 listed");
    assert_eq!(entry["address"], format!("127.0.0.1:{}", volume.ports[2]));
    assert_eq!(entry["mode"], "sync");
    assert!(entry.get("change").is_none(), "{status:#}");
    writes.write(&mut queue, 5);

    // Per-replica series now cover node 3, in valid Prometheus text.
    let scrape = scrape(&primary);
    for node in ["2", "3"] {
        let sent = scrape.samples.iter().find(|s| {
            s.metric == "keel_replica_frames_sent_total" && s.labels.get("replica") == Some(node)
        });
        assert!(sent.is_some(), "no series for replica {node}");
    }

    // W raised to every copy, then lowered again: each a change of its
    // own, taken while the host writes.
    for w in [3, 2] {
        let set = call(&socket, "quorum_set", json!({"write_quorum": w})).expect("quorum_set");
        assert_eq!(set["membership"]["write_quorum"], w, "{set}");
        let status = wait_status(&socket, Duration::from_secs(30), |s| {
            settled(s) && s["write_quorum"] == w
        });
        assert_eq!(status["epoch"], set["to_epoch"], "{status:#}");
        writes.write(&mut queue, 6);
    }

    refused(
        call(&socket, "replica_remove", json!({"node": 1})),
        codes::REFUSED,
        "primary",
    );
    refused(
        call(&socket, "replica_remove", json!({"node": 7})),
        codes::NOT_FOUND,
        "not a copy",
    );
    // Node 2 made async: one sync copy fewer takes W from 2 to 1 in the same
    // change (every write of the old membership, on 2 of nodes 1..3, is then
    // on node 1 or 3, which an election under the new one hears from).
    let demoted =
        call(&socket, "replica_mode", json!({"node": 2, "mode": "async"})).expect("replica_mode");
    assert_eq!(demoted["membership"]["write_quorum"], 1, "{demoted}");
    wait_status(&socket, Duration::from_secs(30), |s| {
        settled(s) && s["write_quorum"] == 1
    });
    refused(
        call(&socket, "replica_mode", json!({"node": 2, "mode": "async"})),
        codes::REFUSED,
        "async already",
    );
    writes.write(&mut queue, 9);
    // Removing async node 2 leaves W alone.
    let removed = call(&socket, "replica_remove", json!({"node": 2})).expect("replica_remove");
    assert_eq!(
        members_of(&json!({"membership": removed["membership"]})),
        [1, 3]
    );
    assert_eq!(removed["membership"]["write_quorum"], 1, "{removed}");
    let status = wait_status(&socket, Duration::from_secs(30), |s| {
        settled(s) && members_of(s) == [1, 3]
    });
    let listed: Vec<u64> = status["replicas"]
        .as_array()
        .map(|r| r.iter().filter_map(|c| c["node"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(listed, [3], "{status:#}");
    // Node 2 took the epoch that removed it (it was up and linked): its
    // record says it is no member, so it never starts again.
    wait_status(&volume.socket(2), Duration::from_secs(10), |s| {
        members_of(s) == [1, 3]
    });
    assert!(
        replica2.terminate().success(),
        "the removed copy stops cleanly"
    );
    let again = volume.try_start(2, &[1, 2], "--bootstrap");
    assert!(again.is_err(), "a removed copy started again");

    // W = 1 on the two copies left (node 3 still gets every write).
    writes.write(&mut queue, 7);
    writes.write(&mut queue, 8);
    writes.read_back_all(&mut queue);
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(30));
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([primary, replica3]);
    volume.assert_identical();
}

/// A volume of nodes 1 and 2 (their flags name only them) to which node 3,
/// a blank copy whose flags name nodes 1 and 3, was added at run time and
/// is in sync: the keelds of nodes 1, 2 and 3.
fn two_copies_and_a_third_added(name: &str) -> (Volume, [Keeld; 3]) {
    let volume = Volume::new(name);
    let primary = volume.start(1, &[1, 2], "--bootstrap");
    let replica2 = volume.start(2, &[1, 2], "--bootstrap");
    primary.wait_gauge("keel_replication_in_sync", 1, Duration::from_secs(60));
    std::fs::File::create(volume.image(3))
        .and_then(|f| f.set_len(16 << 20))
        .expect("a new empty image");
    let replica3 = volume.start(3, &[1, 3], "--new-copy");
    let address = format!("127.0.0.1:{}", volume.ports[2]);
    call(
        &volume.socket(1),
        "replica_add",
        json!({"node": 3, "address": address}),
    )
    .expect("replica_add");
    wait_status(&volume.socket(1), Duration::from_secs(60), |s| {
        settled(s) && members_of(s) == [1, 2, 3]
    });
    (volume, [primary, replica2, replica3])
}

/// The primary dies after a copy was added at run time; node 2, whose
/// flags name only nodes 1 and 2, is promoted: it learned node 3's address
/// from the primary's epoch announcement, and node 3 (whose flags name
/// nodes 1 and 3) learned node 2's, so the election reaches node 3, the
/// new primary serves every acknowledged write and keeps node 3 in sync.
#[test]
fn after_a_copy_was_added_a_promoted_replica_reaches_it_by_a_learned_address() {
    let (volume, [primary, replica2, replica3]) =
        two_copies_and_a_third_added("membership-failover");
    let address = format!("127.0.0.1:{}", volume.ports[2]);
    let mut writes = Writes {
        done: Vec::new(),
        next_base: 8,
    };
    {
        let (_ctrl, mut queue) = open_queue_on(&primary, NQN);
        writes.write(&mut queue, 1);
        writes.write(&mut queue, 2);
        // Killed with those writes acknowledged by W = 2 copies.
        primary.kill9();
    }
    // Node 2 knows node 3 now, from node 1's announcement.
    let status = wait_status(&volume.socket(2), Duration::from_secs(10), |s| {
        members_of(s) == [1, 2, 3]
    });
    let listed = status["membership"]["members"][2]["address"].clone();
    assert_eq!(listed, address, "{status:#}");

    let promoted = call(&volume.socket(2), "promote", json!({})).expect("promote");
    assert!(promoted["to_epoch"].as_u64().is_some(), "{promoted}");
    replica2.wait_gauge("keel_replication_serving", 1, Duration::from_secs(20));
    let status = wait_status(&volume.socket(2), Duration::from_secs(60), |s| {
        s["role"] == "primary" && state_of(s, 3) == Some("in_sync")
    });
    assert_eq!(status["write_quorum"], 2, "{status:#}");

    let (ctrl, mut queue) = open_queue_on(&replica2, NQN);
    writes.read_back_all(&mut queue);
    writes.write(&mut queue, 3);
    wait_status(&volume.socket(2), Duration::from_secs(30), |s| {
        state_of(s, 3) == Some("in_sync")
            && s["replicas"]
                .as_array()
                .and_then(|r| r.iter().find(|c| c["node"] == 3))
                .is_some_and(|c| c["lag_bytes"] == 0)
    });
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([replica2, replica3]);
    let two = std::fs::read(volume.image(2)).expect("image 2");
    let three = std::fs::read(volume.image(3)).expect("image 3");
    assert!(two == three, "nodes 2 and 3 differ");
}

/// A copy added at run time survives a restart of the primary whose flags
/// still name only the first copies: the record keeps where the copies
/// are, so the restarted primary reaches node 3, resyncs it and keeps
/// every acknowledged write (without it, it could not even announce its
/// new epoch: it has no address for a member).
#[test]
fn a_primary_restarted_with_its_first_flags_still_reaches_a_copy_added_at_run_time() {
    let (volume, [primary, replica2, replica3]) =
        two_copies_and_a_third_added("membership-restart");
    let mut writes = Writes {
        done: Vec::new(),
        next_base: 8,
    };
    let write_some = |keeld: &Keeld, writes: &mut Writes, generation: u64| {
        let (ctrl, mut queue) = open_queue_on(keeld, NQN);
        writes.read_back_all(&mut queue);
        writes.write(&mut queue, generation);
        drop(queue);
        ctrl.shutdown().expect("shutdown");
    };
    write_some(&primary, &mut writes, 1);
    assert!(primary.terminate().success(), "node 1 stops cleanly");

    // Restarted with the same flags as at the start: nodes 1 and 2 only.
    let primary = volume.start(1, &[1, 2], "--bootstrap");
    let status = wait_status(&volume.socket(1), Duration::from_secs(60), |s| {
        s["role"] == "primary" && settled(s) && members_of(s) == [1, 2, 3]
    });
    let listed = status["membership"]["members"][2]["address"].clone();
    assert_eq!(
        listed,
        format!("127.0.0.1:{}", volume.ports[2]),
        "{status:#}"
    );
    write_some(&primary, &mut writes, 2);
    wait_status(&volume.socket(1), Duration::from_secs(30), settled);
    stop_all([primary, replica2, replica3]);
    volume.assert_identical();
}

/// A change that cannot finish outlives its primary: nodes 1..3 with
/// W = 3, node 3 down, node 3 removed (W lowered to 2 with it). The change
/// needs all three old copies to know it, so it is still open when node 1
/// is killed. Node 2, promoted, inherits it from its record: its writes
/// wait for the old quorum, which takes node 3, although the new one
/// (nodes 1 and 2) is there. (Before, node 2 acknowledged on nodes 1 and
/// 2, and node 3, restarted, could elect itself alone under the old
/// membership without those writes.) Node 3 comes back; node 2 reaches it
/// by its recorded address and hands it the epoch that removed it; the
/// change ends and the write completes.
#[test]
fn a_replica_promoted_mid_change_finishes_it_before_it_acknowledges_a_write() {
    let mut volume = Volume::new("membership-mid-change");
    volume.quorum = 3;
    let primary = volume.start(1, &[1, 2, 3], "--bootstrap");
    let replica2 = volume.start(2, &[1, 2, 3], "--bootstrap");
    let replica3 = volume.start(3, &[1, 2, 3], "--bootstrap");
    let socket = volume.socket(1);
    wait_status(&socket, Duration::from_secs(30), |s| {
        state_of(s, 2) == Some("in_sync") && state_of(s, 3) == Some("in_sync")
    });
    let mut writes = Writes {
        done: Vec::new(),
        next_base: 8,
    };
    {
        let (ctrl, mut queue) = open_queue_on(&primary, NQN);
        writes.write(&mut queue, 1);
        drop(queue);
        ctrl.shutdown().expect("shutdown");
    }
    replica3.kill9();
    let removed = call(&socket, "replica_remove", json!({"node": 3})).expect("replica_remove");
    assert_eq!(removed["membership"]["write_quorum"], 2, "{removed}");
    // Node 2 took the new epoch, and with it the unfinished change.
    let status = wait_status(&volume.socket(2), Duration::from_secs(30), |s| {
        members_of(s) == [1, 2]
    });
    assert_eq!(
        status["membership"]["previous"]["write_quorum"], 3,
        "{status:#}"
    );
    let status = call(&socket, "volume_status", json!({})).expect("status");
    assert_eq!(status["reconfiguring"], true, "{status:#}");
    primary.kill9();

    let promoted = call(&volume.socket(2), "promote", json!({})).expect("promote");
    assert!(promoted["to_epoch"].as_u64().is_some(), "{promoted}");
    replica2.wait_gauge("keel_replication_serving", 1, Duration::from_secs(20));
    // Node 1 back (as a replica: node 2's epoch reaches it first).
    let replica1 = volume.start(1, &[1, 2, 3], "--bootstrap");
    let status = wait_status(&volume.socket(2), Duration::from_secs(30), |s| {
        s["role"] == "primary" && s["reconfiguring"] == true && state_of(s, 1).is_some()
    });
    assert_eq!(status["write_quorum"], 2, "{status:#}");

    let (ctrl, mut queue) = open_queue_on(&replica2, NQN);
    writes.read_back_all(&mut queue);
    let (tx, rx) = std::sync::mpsc::channel();
    let base = writes.next_base;
    let writer = std::thread::spawn(move || {
        write_read_verify(&mut queue, base, 2);
        let _ = tx.send(());
        queue
    });
    match rx.recv_timeout(Duration::from_secs(3)) {
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("a write completed without the old write quorum: {other:?}"),
    }
    let replica3 = volume.start(3, &[1, 2, 3], "--bootstrap");
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the write completes once node 3 took the change");
    let mut queue = writer.join().expect("writer");
    writes.done.push((base, 2));
    writes.next_base += 3000;
    let status = wait_status(&volume.socket(2), Duration::from_secs(30), |s| {
        settled(s) && members_of(s) == [1, 2] && state_of(s, 1) == Some("in_sync")
    });
    assert!(status["membership"]["previous"].is_null(), "{status:#}");
    // Node 3 learned it left.
    wait_status(&volume.socket(3), Duration::from_secs(10), |s| {
        members_of(s) == [1, 2]
    });
    writes.write(&mut queue, 3);
    writes.read_back_all(&mut queue);
    drop(queue);
    ctrl.shutdown().expect("shutdown");
    stop_all([replica2, replica1, replica3]);
    let one = std::fs::read(volume.image(1)).expect("image 1");
    let two = std::fs::read(volume.image(2)).expect("image 2");
    assert!(one == two, "nodes 1 and 2 differ");
}
