//! keeld as a real process on loopback, driven by Keel's initiator and by
//! raw sockets: verified I/O through every data path, hostile PDUs, hosts
//! that are not allowed, kill -9 with a file backend, clean SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use std::process::Command;
use std::time::Duration;

use keel_target::initiator::{Controller, HostOptions, InitiatorError, IoKind};
use keel_target::nvme::Status;
use keel_target::tcp::DigestOptions;
use support::io::{fill, read_back, run_one, scratch_dir, write_read_verify};
use support::Keeld;

const NQN: &str = "nqn.2026-11.io.keel:test";

mod support;

/// keeld on an ephemeral loopback port serving subsystem [`NQN`] with
/// `args` (backend, size, ...).
fn start(args: &[&str]) -> Keeld {
    let mut all = vec!["--listen", "127.0.0.1:0", "--nqn", NQN, "--no-pin"];
    all.extend_from_slice(args);
    Keeld::spawn(&all).unwrap_or_else(|status| panic!("keeld exited early: {status}"))
}

fn host(digests: bool) -> HostOptions {
    HostOptions {
        digests: DigestOptions {
            header: digests,
            data: digests,
        },
        ..HostOptions::default()
    }
}

#[test]
fn verified_io_in_capsule_r2t_and_multi_buffer_with_and_without_digests() {
    let keeld = start(&["--backend", "memory", "--size", "64M"]);
    for digests in [false, true] {
        let mut ctrl = Controller::connect(keeld.addr, NQN, &host(digests), 1).expect("connect");
        let ns = ctrl.namespace(1).expect("identify namespace");
        assert_eq!(ns.blocks * u64::from(ns.block_size), 64 << 20);
        let mut queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
        write_read_verify(&mut queue, 8, u64::from(digests) + 1);
        drop(queue);
        ctrl.shutdown().expect("shutdown");
    }
    assert!(keeld.terminate().success(), "keeld exits 0 on SIGTERM");
}

/// More write data in flight than keeld's buffer pool minus its reserve
/// (64 buffers of 128 KiB; 64 writes of 128 KiB, all sent at once): the
/// commands short of buffers wait for them while the connection goes on
/// being read, so the host data of the admitted ones still arrives. Before,
/// keeld stopped reading the connection at the first command it could not
/// give buffers, the admitted writes' data stayed unread behind it, and
/// nothing ever completed.
#[test]
fn more_write_data_in_flight_than_the_buffer_pool_completes() {
    let keeld = start(&["--backend", "memory", "--size", "64M", "--buffers", "64"]);
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = keeld.addr;
    std::thread::spawn(move || {
        let mut ctrl = Controller::connect(addr, NQN, &host(false), 1).expect("connect");
        let ns = ctrl.namespace(1).expect("identify namespace");
        let mut queue = ctrl.io_queue(1, 64, ns).expect("I/O queue");
        let blocks = (128 << 10) / ns.block_size;
        let lba_of = |slot: u16| u64::from(slot) * u64::from(blocks);
        for slot in 0..64u16 {
            let len = (blocks * ns.block_size) as usize;
            fill(queue.buffer(slot, len), lba_of(slot), 7);
            queue
                .submit(slot, IoKind::Write { fua: false }, lba_of(slot), blocks)
                .expect("submit");
        }
        let mut done = Vec::new();
        while done.len() < 64 {
            queue.wait(&mut done).expect("wait");
        }
        let statuses: Vec<Status> = done.iter().map(|d| d.status).collect();
        for slot in 0..64u16 {
            let lba = lba_of(slot);
            let status = run_one(&mut queue, IoKind::Read, lba, blocks);
            assert_eq!(status, Status::SUCCESS);
            let mut expected = vec![0u8; (blocks * ns.block_size) as usize];
            fill(&mut expected, lba, 7);
            let len = expected.len();
            assert!(
                queue.buffer(0, len) == expected.as_slice(),
                "LBA {lba} reads back wrong"
            );
        }
        let _ = tx.send(statuses);
    });
    let statuses = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the writes never completed: keeld is stuck");
    assert!(
        statuses.iter().all(|s| *s == Status::SUCCESS),
        "{statuses:?}"
    );
    assert!(keeld.terminate().success(), "keeld exits 0 on SIGTERM");
}

/// A command that waited for buffers gets its R2T once it has them, even
/// on a connection where nothing else happens: queue 1's 32 writes of 128
/// KiB take the pool (64 buffers), then queue 2's one write waits; only
/// then does the host answer queue 1's R2Ts. Once queue 1's writes are
/// done, queue 2's gets its buffers — and, before the fix, its R2T stayed
/// queued in keeld for ever (with 8 connections of 32 writes of 1 MiB at
/// the default pool, keeld stopped at the 128th write).
#[test]
fn a_command_granted_buffers_later_gets_its_r2t() {
    let keeld = start(&["--backend", "memory", "--size", "64M", "--buffers", "64"]);
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = keeld.addr;
    std::thread::spawn(move || {
        let mut ctrl = Controller::connect(addr, NQN, &host(false), 2).expect("connect");
        let ns = ctrl.namespace(1).expect("identify namespace");
        let mut first = ctrl.io_queue(1, 32, ns).expect("I/O queue 1");
        let mut second = ctrl.io_queue(2, 2, ns).expect("I/O queue 2");
        let blocks = (128 << 10) / ns.block_size;
        let len = (blocks * ns.block_size) as usize;
        for slot in 0..32u16 {
            let lba = u64::from(slot) * u64::from(blocks);
            fill(first.buffer(slot, len), lba, 5);
            first
                .submit(slot, IoKind::Write { fua: false }, lba, blocks)
                .expect("submit");
        }
        first.send().expect("send queue 1's commands");
        std::thread::sleep(Duration::from_millis(200));
        let lba = 40 * u64::from(blocks);
        fill(second.buffer(0, len), lba, 5);
        second
            .submit(0, IoKind::Write { fua: false }, lba, blocks)
            .expect("submit");
        // And a small write whose data comes in the capsule: it waits with
        // that data copied aside.
        let small_lba = 50 * u64::from(blocks);
        let small_blocks = 4096 / ns.block_size;
        fill(second.buffer(1, 4096), small_lba, 6);
        second
            .submit(1, IoKind::Write { fua: false }, small_lba, small_blocks)
            .expect("submit");
        second.send().expect("send queue 2's commands");
        std::thread::sleep(Duration::from_millis(200));
        let mut done = Vec::new();
        while done.len() < 32 {
            first.wait(&mut done).expect("wait on queue 1");
        }
        while done.len() < 34 {
            second.wait(&mut done).expect("wait on queue 2");
        }
        let _ = tx.send(done.iter().map(|d| d.status).collect::<Vec<_>>());
        for (lba, blocks, generation) in [(lba, blocks, 5), (small_lba, small_blocks, 6)] {
            let status = run_one(&mut second, IoKind::Read, lba, blocks);
            assert_eq!(status, Status::SUCCESS);
            let bytes = (blocks * ns.block_size) as usize;
            let mut expected = vec![0u8; bytes];
            fill(&mut expected, lba, generation);
            assert!(
                second.buffer(0, bytes) == expected.as_slice(),
                "LBA {lba} reads back wrong"
            );
        }
    });
    let statuses = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("queue 2's write never completed: its R2T was not sent");
    assert_eq!(statuses.len(), 34);
    assert!(
        statuses.iter().all(|s| *s == Status::SUCCESS),
        "{statuses:?}"
    );
    assert!(keeld.terminate().success(), "keeld exits 0 on SIGTERM");
}

#[test]
fn out_of_range_lba_gets_lba_out_of_range_and_the_queue_lives_on() {
    let keeld = start(&[
        "--backend",
        "memory",
        "--size",
        "8M",
        "--block-size",
        "4096",
    ]);
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    assert_eq!(ns.block_size, 4096);
    let mut queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
    let status = run_one(&mut queue, IoKind::Read, ns.blocks - 1, 2);
    assert!(status.same_code(Status::LBA_OUT_OF_RANGE), "got {status}");
    let status = run_one(&mut queue, IoKind::Read, ns.blocks - 1, 1);
    assert!(status.is_success(), "last block readable: {status}");
}

#[test]
fn a_host_not_allowed_is_refused_at_connect() {
    let allowed = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";
    let keeld = start(&[
        "--backend",
        "memory",
        "--size",
        "8M",
        "--allow-host",
        allowed,
    ]);
    match Controller::connect(keeld.addr, NQN, &host(false), 1) {
        Err(InitiatorError::Command { status, .. }) => {
            assert!(
                status.same_code(Status::CONNECT_INVALID_HOST),
                "got {status}"
            )
        }
        Err(other) => panic!("refused the wrong way: {other}"),
        Ok(_) => panic!("a host not on the list connected"),
    }
    let options = HostOptions {
        hostnqn: allowed.into(),
        ..HostOptions::default()
    };
    Controller::connect(keeld.addr, NQN, &options, 1).expect("the allowed host connects");
}

/// A well-formed ICReq: PFV 0, no digests, HPDA 0.
fn icreq() -> Vec<u8> {
    let mut pdu = vec![0x00, 0, 128, 0];
    pdu.extend_from_slice(&128u32.to_le_bytes());
    pdu.resize(128, 0);
    pdu
}

/// Reads until the target closes, returning what it sent.
fn drain(mut stream: TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

#[test]
fn malformed_pdus_get_a_termination_request_and_only_that_connection_closes() {
    let keeld = start(&["--backend", "memory", "--size", "8M"]);
    // Keep a good controller connected across the attacks.
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let mut queue = ctrl.io_queue(1, 2, ns).expect("I/O queue");

    let attacks: Vec<(&str, Vec<u8>)> = vec![
        // A CapsuleCmd before ICReq: PDU sequence error.
        ("capsule before ICReq", {
            let mut pdu = vec![0x04, 0, 72, 0];
            pdu.extend_from_slice(&72u32.to_le_bytes());
            pdu.resize(72, 0);
            pdu
        }),
        // ICReq with a bad header length.
        ("ICReq with HLEN 99", {
            let mut pdu = vec![0x00, 0, 99, 0];
            pdu.extend_from_slice(&128u32.to_le_bytes());
            pdu.resize(128, 0);
            pdu
        }),
        // A PDU type that does not exist.
        ("unknown PDU type", {
            let mut pdu = vec![0x7F, 0, 8, 0];
            pdu.extend_from_slice(&8u32.to_le_bytes());
            pdu
        }),
        // A valid ICReq, then a command capsule claiming 1 GiB of
        // in-capsule data: far beyond IOCCSZ.
        ("oversized capsule", {
            let mut pdu = icreq();
            pdu.extend_from_slice(&[0x04, 0, 72, 72]);
            pdu.extend_from_slice(&(72u32 + (1 << 30)).to_le_bytes());
            pdu.resize(128 + 72, 0);
            pdu
        }),
    ];
    for (what, bytes) in attacks {
        let mut stream = TcpStream::connect(keeld.addr).expect("connect");
        stream.write_all(&bytes).expect("send");
        let mut reply = drain(stream);
        // After a valid ICReq the ICResp (type 1, 128 bytes) comes first.
        if reply.first() == Some(&0x01) && reply.len() > 128 {
            reply.drain(..128);
        }
        assert!(
            reply.first() == Some(&0x03),
            "{what}: expected a C2HTermReq (type 3), got {:02x?}",
            &reply[..reply.len().min(16)]
        );
    }
    // Garbage followed by a hang-up, and a PDU cut short by a hang-up, must
    // not take the target down either.
    let mut stream = TcpStream::connect(keeld.addr).expect("connect");
    let _ = stream.write_all(&[0xFF; 3]);
    drop(stream);
    let mut stream = TcpStream::connect(keeld.addr).expect("connect");
    let _ = stream.write_all(&icreq()[..60]);
    drop(stream);

    // The good connection never noticed.
    fill(queue.buffer(0, 4096), 1, 9);
    let status = run_one(&mut queue, IoKind::Write { fua: false }, 1, 8);
    assert!(status.is_success(), "{status}");
    assert!(keeld.terminate().success());
}

#[test]
fn acknowledged_writes_survive_kill_9_of_a_file_backed_keeld() {
    let dir = scratch_dir("keeld-kill9");
    let image = dir.join("vol.img");
    let image = image.to_str().expect("utf-8 path");
    let keeld = start(&["--backend", image, "--size", "32M"]);
    {
        let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("connect");
        let ns = ctrl.namespace(1).expect("identify");
        let mut queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
        write_read_verify(&mut queue, 8, 7);
        keeld.kill9();
    }
    let keeld = start(&["--backend", image]);
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("reconnect");
    let ns = ctrl.namespace(1).expect("identify");
    assert_eq!(ns.blocks * u64::from(ns.block_size), 32 << 20);
    let mut queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
    read_back(&mut queue, 8, 7);
    assert!(keeld.terminate().success());
}

#[test]
fn bad_command_lines_and_config_files_fail_with_a_message() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keeld"))
            .args(args)
            .output()
            .expect("run keeld")
    };
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--nqn",
        NQN,
        "--backend",
        "memory",
    ]);
    assert!(!out.status.success(), "memory without --size must fail");
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("size"), "{message}");

    let dir = scratch_dir("keeld-badconfig");
    let config = dir.join("keel.toml");
    std::fs::write(
        &config,
        "cores = 1\n[[listener]]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n",
    )
    .expect("write config");
    let out = run(&["--config", config.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(
        message.contains("keel.toml") && message.contains("bogus"),
        "the error names the file and the field: {message}"
    );

    // The async lag bound, as flags and in [replication].
    std::fs::write(dir.join("psk"), "a pre-shared key of some length\n").expect("psk");
    let psk = dir.join("psk").to_str().expect("utf-8").to_owned();
    let image = dir.join("vol.img").to_str().expect("utf-8").to_owned();
    let replicated = |extra: &[&str]| {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--nqn",
            NQN,
            "--backend",
            &image,
            "--size",
            "16M",
            "--node-id",
            "1",
            "--member",
            "1@127.0.0.1:7101",
            "--member",
            "2@127.0.0.1:7102:async",
            "--primary",
            "1",
            "--replica-listen",
            "127.0.0.1:7101",
            "--write-quorum",
            "1",
            "--psk-file",
            &psk,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    for (flags, expected) in [
        (
            &["--async-max-lag-bytes", "1M"][..],
            "--async-max-lag-bytes 1048576 is below",
        ),
        (
            &["--async-max-lag-ms", "10"][..],
            "--async-max-lag-ms 10 must be between 100",
        ),
        (
            &["--async-max-lag-bytes", "lots"][..],
            "--async-max-lag-bytes",
        ),
        (&["--async-max-lag-ms=-5"][..], "--async-max-lag-ms"),
    ] {
        let out = replicated(flags);
        assert!(!out.status.success(), "{flags:?} must fail");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains(expected), "{flags:?}: {message}");
    }
    let file = format!(
        "[[listener]]\nlisten = \"127.0.0.1:0\"\n[[subsystem]]\nnqn = \"{NQN}\"\n\
         [[subsystem.namespace]]\nnsid = 1\nbackend = {image:?}\nsize = \"16M\"\n\
         [replication]\nnode_id = 1\nmembers = [\"1@127.0.0.1:7101\", \"2@127.0.0.1:7102:async\"]\n\
         primary = 1\nreplica_listen = \"127.0.0.1:7101\"\nwrite_quorum = 1\npsk_file = {psk:?}\n"
    );
    for (extra, expected) in [
        (
            "async_max_lag_bytes = \"2M\"",
            "keel.toml: replication.async_max_lag_bytes: async_max_lag_bytes 2097152 is below",
        ),
        (
            "async_max_lag_ms = 99",
            "keel.toml: replication.async_max_lag_ms: async_max_lag_ms 99 must be between 100",
        ),
        (
            "psk_file = \"/nonexistent/psk\"",
            "keel.toml: replication.psk_file: cannot read /nonexistent/psk",
        ),
    ] {
        let text = if extra.starts_with("psk_file") {
            file.replace(&format!("psk_file = {psk:?}"), extra)
        } else {
            format!("{file}{extra}\n")
        };
        std::fs::write(&config, text).expect("write config");
        let out = run(&["--config", config.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "{extra} must fail");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(message.contains(expected), "{extra}: {message}");
    }
    // The file's [replication] excludes the flags.
    std::fs::write(&config, &file).expect("write config");
    let out = run(&[
        "--config",
        config.to_str().expect("utf-8"),
        "--node-id",
        "1",
        "--member",
        "1@127.0.0.1:7101",
        "--primary",
        "1",
        "--replica-listen",
        "127.0.0.1:7101",
        "--write-quorum",
        "1",
        "--psk-file",
        &psk,
    ]);
    assert!(!out.status.success());
    let message = String::from_utf8_lossy(&out.stderr);
    assert!(message.contains("[replication] table"), "{message}");
}

#[test]
fn a_controller_whose_host_stops_sending_keep_alives_is_torn_down() {
    let keeld = start(&["--backend", "memory", "--size", "8M"]);
    let options = HostOptions {
        kato_ms: 1000,
        ..HostOptions::default()
    };
    let mut ctrl = Controller::connect(keeld.addr, NQN, &options, 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let mut queue = ctrl.io_queue(1, 2, ns).expect("I/O queue");
    let status = run_one(&mut queue, IoKind::Read, 0, 1);
    assert!(status.is_success(), "{status}");
    // No Keep Alive for well over KATO (1 s, checked every second): the
    // controller goes, and with it the I/O queue's connection.
    std::thread::sleep(Duration::from_millis(3500));
    let _ = queue.submit(0, IoKind::Read, 0, 1);
    let mut done = Vec::new();
    match queue.wait(&mut done) {
        Err(_) => {}
        Ok(()) => panic!("the I/O queue outlived its controller: {done:?}"),
    }
    // The target itself is fine: a new controller works.
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("reconnect");
    let ns = ctrl.namespace(1).expect("identify");
    let mut queue = ctrl.io_queue(1, 2, ns).expect("I/O queue");
    assert!(run_one(&mut queue, IoKind::Read, 0, 1).is_success());
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: keel\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[test]
fn the_prometheus_endpoint_counts_commands_and_parses_with_a_real_parser() {
    let keeld = start(&[
        "--backend",
        "memory",
        "--size",
        "8M",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = keeld.metrics.expect("metrics address");
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let mut queue = ctrl.io_queue(1, 2, ns).expect("I/O queue");
    for lba in 0..10u64 {
        fill(queue.buffer(0, 4096), lba, 1);
        assert!(run_one(&mut queue, IoKind::Write { fua: false }, lba * 8, 8).is_success());
    }
    for lba in 0..3u64 {
        assert!(run_one(&mut queue, IoKind::Read, lba * 8, 8).is_success());
    }
    // Shards publish their own counters once a second.
    std::thread::sleep(Duration::from_millis(1200));
    let response = http_get(metrics, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert!(head.contains("text/plain"), "{head}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text format");
    let value = |name: &str, op: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == name
                    && s.labels.get("op") == Some(op)
                    && s.labels.get("nqn") == Some(NQN)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => f64::NAN,
            })
            .unwrap_or_else(|| panic!("no {name}{{op={op}}} in {body}"))
    };
    assert_eq!(value("keel_volume_commands_total", "write"), 10.0);
    assert_eq!(value("keel_volume_commands_total", "read"), 3.0);
    assert_eq!(value("keel_volume_bytes_total", "write"), 40960.0);
    let histogram = scrape
        .samples
        .iter()
        .find(|s| s.metric == "keel_volume_latency_seconds" && s.labels.get("op") == Some("write"))
        .expect("latency histogram");
    match &histogram.value {
        prometheus_parse::Value::Histogram(buckets) => {
            let total = buckets.last().map(|b| b.count).unwrap_or(0.0);
            assert_eq!(total, 10.0, "every write in the +Inf bucket");
        }
        other => panic!("latency is not a histogram: {other:?}"),
    }
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "keel_shard_busy_seconds_total"));
    assert!(http_get(metrics, "/nope").contains(" 404 "));
    assert!(keeld.terminate().success());
}

/// A plausible host session as bytes: ICReq, admin Connect, then an I/O
/// queue's worth of commands (a write with in-capsule data, a write that
/// needs R2T followed by its H2CData, a read, a flush).
fn session_transcript(io_queue: bool) -> Vec<u8> {
    use keel_target::nvme::fabrics::{ConnectCommand, ConnectData, CONNECT_DATA_LEN};
    use keel_target::nvme::{IoOpcode, SglDescriptor, SubmissionQueueEntry};
    use keel_target::tcp::{CapsuleCmd, DataPdu, PduHeader, TxParams};

    let mut out = icreq();
    let mut push = |header: PduHeader, data: &[u8]| {
        let mut buf = vec![0u8; 256 + data.len()];
        let len = header
            .encode(&TxParams::PLAIN, data, &mut buf)
            .expect("encode");
        out.extend_from_slice(&buf[..len]);
    };
    let connect = ConnectCommand {
        recfmt: 0,
        qid: if io_queue { 2 } else { 0 },
        sqsize: 31,
        cattr: 0,
        kato: 0,
    };
    let mut data = [0u8; CONNECT_DATA_LEN];
    ConnectData {
        host_id: HostOptions::default().hostid,
        cntlid: if io_queue { 1 } else { 0xFFFF },
        subnqn: NQN,
        hostnqn: &HostOptions::default().hostnqn,
    }
    .write_into(&mut data)
    .expect("connect data");
    push(
        PduHeader::CapsuleCmd(CapsuleCmd {
            sqe: connect.to_sqe(1),
        }),
        &data,
    );
    let rw = |opcode: IoOpcode, cid: u16, slba: u64, sgl: SglDescriptor| {
        let mut sqe = SubmissionQueueEntry {
            opcode: opcode.as_u8(),
            cid,
            nsid: 1,
            ..Default::default()
        };
        sqe.set_psdt(keel_target::nvme::sqe::Psdt::SglMetadataBuffer);
        sqe.cdw10 = slba as u32;
        sqe.cdw12 = 7; // 8 blocks
        sqe.set_sgl1(sgl);
        sqe
    };
    let block = [0x5Au8; 4096];
    push(
        PduHeader::CapsuleCmd(CapsuleCmd {
            sqe: rw(
                IoOpcode::Write,
                2,
                0,
                SglDescriptor::InCapsule {
                    offset: 0,
                    length: 4096,
                },
            ),
        }),
        &block,
    );
    push(
        PduHeader::CapsuleCmd(CapsuleCmd {
            sqe: rw(
                IoOpcode::Read,
                4,
                0,
                SglDescriptor::TransportDataBlock { length: 4096 },
            ),
        }),
        &[],
    );
    let mut flush = rw(
        IoOpcode::Flush,
        5,
        0,
        SglDescriptor::TransportDataBlock { length: 0 },
    );
    flush.cdw12 = 0;
    push(PduHeader::CapsuleCmd(CapsuleCmd { sqe: flush }), &[]);
    push(
        PduHeader::CapsuleCmd(CapsuleCmd {
            sqe: rw(
                IoOpcode::Write,
                3,
                8,
                SglDescriptor::TransportDataBlock { length: 4096 },
            ),
        }),
        &[],
    );
    push(
        PduHeader::H2cData(DataPdu {
            cccid: 3,
            ttag: 1,
            datao: 0,
            datal: 4096,
            last: true,
            success: false,
        }),
        &block,
    );
    out
}

/// CIDs of the successful CapsuleResps in a controller-to-host byte stream.
fn successful_cids(stream: &[u8]) -> Vec<u16> {
    let mut cids = Vec::new();
    let mut at = 0;
    while at + 8 <= stream.len() {
        let plen = u32::from_le_bytes(stream[at + 4..at + 8].try_into().unwrap()) as usize;
        if plen < 8 || at + plen > stream.len() {
            break;
        }
        if stream[at] == 0x05 && plen >= 24 {
            let cqe = &stream[at + 8..at + 24];
            let cid = u16::from_le_bytes([cqe[12], cqe[13]]);
            let status = u16::from_le_bytes([cqe[14], cqe[15]]) >> 1;
            if status == 0 {
                cids.push(cid);
            }
        }
        at += plen;
    }
    cids
}

/// Hundreds of mutated host sessions (bit flips, overwritten bytes,
/// truncation, duplication, splices) against a real keeld: each may get an
/// answer, a termination request or a closed connection, but keeld must
/// stay up and keep serving a well-behaved host with correct data.
#[test]
fn mutated_host_sessions_never_take_keeld_down() {
    let mut keeld = start(&["--backend", "memory", "--size", "8M"]);
    // Two I/O queues granted: ours is 1, the transcripts use 2.
    let mut ctrl = Controller::connect(keeld.addr, NQN, &host(false), 2).expect("connect");
    assert_eq!(
        ctrl.cntlid(),
        1,
        "the transcript's I/O Connect names controller 1"
    );
    let ns = ctrl.namespace(1).expect("identify");
    let mut queue = ctrl.io_queue(1, 2, ns).expect("I/O queue");
    fill(queue.buffer(0, 8192), 100, 3);
    assert!(run_one(&mut queue, IoKind::Write { fua: true }, 100, 16).is_success());

    // The unmutated transcript is a working session: Connect, the
    // in-capsule write, the read and the flush all succeed.
    let mut stream = TcpStream::connect(keeld.addr).expect("connect");
    stream.write_all(&session_transcript(true)).expect("send");
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let reply = drain(stream);
    let succeeded = successful_cids(&reply);
    for cid in [1, 2, 4, 5] {
        assert!(
            succeeded.contains(&cid),
            "cid {cid} did not succeed: {succeeded:?}"
        );
    }

    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..300u64 {
        let mut bytes = session_transcript(case % 3 == 2);
        let len = bytes.len() as u64;
        match case % 5 {
            0 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() % len) as usize;
                    bytes[at] ^= 1 << (next() % 8);
                }
            }
            1 => {
                let at = (next() % len) as usize;
                let end = (at + 1 + (next() % 16) as usize).min(bytes.len());
                for b in &mut bytes[at..end] {
                    *b = next() as u8;
                }
            }
            2 => bytes.truncate((next() % len) as usize),
            3 => {
                let at = (next() % len) as usize;
                let end = (at + (next() % 300) as usize).min(bytes.len());
                let copy = bytes[at..end].to_vec();
                let to = (next() % len) as usize;
                bytes.splice(to..to, copy);
            }
            _ => {
                // Header fields of the first PDUs are where parsers break.
                let at = (next() % 400.min(len)) as usize;
                bytes[at] = [0, 1, 0x7F, 0x80, 0xFF][(next() % 5) as usize];
            }
        }
        let Ok(mut stream) = TcpStream::connect(keeld.addr) else {
            panic!("case {case}: keeld stopped accepting");
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        assert!(keeld.is_running(), "keeld died on case {case}");
    }
    // The well-behaved host never noticed, and its data is intact.
    assert!(run_one(&mut queue, IoKind::Read, 100, 16).is_success());
    let mut expected = vec![0u8; 8192];
    fill(&mut expected, 100, 3);
    assert!(queue.buffer(0, 8192) == expected.as_slice(), "data changed");
    let mut ctrl =
        Controller::connect(keeld.addr, NQN, &host(false), 1).expect("a new host connects");
    assert!(ctrl.namespace(1).is_ok());
    assert!(
        keeld.terminate().success(),
        "and keeld still shuts down cleanly"
    );
}
