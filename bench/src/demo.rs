//! `keel-bench demo`: Keel's main job in one command. Starts three keeld
//! nodes in this process on loopback — a primary and two sync replicas,
//! write quorum 2, each with its own file-backed volume under a data folder
//! — waits for the replicas' first full copy, drives the primary over
//! NVMe/TCP with Keel's initiator (random write, random read, a verified
//! mixed run), waits until both replicas hold every write, stops the three
//! cleanly and checks that the three copies are byte-identical.
//!
//! Everything runs in this one process, so Ctrl-C at any point leaves
//! nothing behind; the data folder stays for inspection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use keel_replicator::wire::{NodeId, ReplicationMode, VolumeId};
use keel_target::daemon::config::{
    Backend, DaemonConfig, ListenerConfig, NamespaceConfig, SubsystemConfig,
};
use keel_target::daemon::replication::{FreshCopy, MemberAddress, ReplicationOptions, Transport};
use keel_target::daemon::{Daemon, RuntimeOptions};

use crate::nvmf::{self, NvmfArgs};
use crate::report::{percentiles_us, Results};
use crate::workload::{Pattern, Workload};

pub const NQN: &str = "nqn.2026-11.io.keel:demo";
const NODES: usize = 3;
const WRITE_QUORUM: u8 = 2;

pub struct DemoArgs {
    pub data_dir: PathBuf,
    pub size: u64,
    pub phase_time: Duration,
    pub qd: usize,
    pub bs: u64,
}

struct Phase {
    name: &'static str,
    pattern: Pattern,
    verify: bool,
}

const PHASES: [Phase; 3] = [
    Phase {
        name: "random write",
        pattern: Pattern::Randwrite,
        verify: false,
    },
    Phase {
        name: "random read",
        pattern: Pattern::Randread,
        verify: false,
    },
    Phase {
        name: "mixed 70/30, verified",
        pattern: Pattern::Randrw,
        verify: true,
    },
];

/// Loopback ports the kernel has just handed out (and we let go of).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let sockets = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    sockets.iter().map(|s| Ok(s.local_addr()?.port())).collect()
}

fn random_key() -> anyhow::Result<Vec<u8>> {
    let mut key = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .context("reading a pre-shared key from /dev/urandom")?;
    Ok(key)
}

/// One gauge from a node's metrics endpoint.
fn gauge(metrics: SocketAddr, name: &str) -> Option<u64> {
    let mut stream = TcpStream::connect(metrics).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: keel\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

fn wait_gauge(metrics: SocketAddr, name: &str, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while gauge(metrics, name) != Some(1) {
        if Instant::now() > deadline {
            bail!("{name} did not reach 1 within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn node_config(image: &Path, size: u64) -> anyhow::Result<DaemonConfig> {
    Ok(DaemonConfig {
        cores: 1,
        listeners: vec![ListenerConfig {
            // A replica's listener refuses I/O (ANA inaccessible) until
            // it is promoted; only the primary's is used here.
            addr: "127.0.0.1:0".parse().context("loopback address")?,
        }],
        subsystems: vec![SubsystemConfig {
            nqn: NQN.into(),
            serial: None,
            model: None,
            // Only the host this demo connects as.
            allowed_hosts: vec![keel_target::initiator::HostOptions::default().hostnqn],
            namespaces: vec![NamespaceConfig {
                nsid: 1,
                backend: Backend::Path(image.to_path_buf()),
                size: Some(size),
                block_size: 512,
            }],
        }],
        replication: None,
    })
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let ports = free_ports(NODES)?;
    let members: Vec<MemberAddress> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| MemberAddress {
            node: NodeId(i as u64 + 1),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            mode: ReplicationMode::Sync,
            transport: Transport::Tcp,
        })
        .collect();
    let psk = random_key()?;
    let images: Vec<PathBuf> = (1..=NODES)
        .map(|n| args.data_dir.join(format!("node{n}")).join("vol0.img"))
        .collect();
    for image in &images {
        let dir = image.parent().context("image folder")?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!(
        "keel demo: 3 keeld nodes on loopback (primary + 2 sync replicas, write quorum {WRITE_QUORUM}), \
         {} MiB O_DIRECT volume each under {}; keel-bench over NVMe/TCP: {} x {:?}, bs {} qd {}",
        args.size >> 20,
        args.data_dir.display(),
        PHASES.len(),
        args.phase_time,
        args.bs,
        args.qd
    );
    // Replicas first, so the primary's links find them listening.
    let mut daemons: Vec<Daemon> = Vec::with_capacity(NODES);
    for index in (0..NODES).rev() {
        let member = &members[index];
        let runtime = RuntimeOptions {
            pin: false,
            metrics: Some("127.0.0.1:0".parse().context("metrics address")?),
            replication: Some(ReplicationOptions {
                node: member.node,
                members: members.clone(),
                primary: NodeId(1),
                listen: member.addr,
                write_quorum: WRITE_QUORUM,
                psk: psk.clone(),
                volume: VolumeId(1),
                // A new volume; on a rerun the records in the data folder win.
                fresh: FreshCopy::Bootstrap,
                async_lag: Default::default(),
                link_timeout: keel_target::daemon::replication::DEFAULT_LINK_TIMEOUT,
                read_lease: false,
                resync_rate: None,
            }),
            ..RuntimeOptions::default()
        };
        let config = node_config(&images[index], args.size)?;
        let daemon = Daemon::start(&config, &runtime)
            .with_context(|| format!("starting keeld node {}", member.node))?;
        daemons.push(daemon);
    }
    daemons.reverse();
    let result = drive(args, &daemons);
    // Stop the primary first (no new writes), then the replicas.
    for (index, daemon) in daemons.into_iter().enumerate() {
        daemon
            .shutdown()
            .with_context(|| format!("stopping keeld node {}", index + 1))?;
    }
    result?;
    compare_copies(&images)?;
    println!(
        "all three keeld nodes stopped cleanly; the volumes are kept under {}",
        args.data_dir.display()
    );
    Ok(())
}

fn drive(args: &DemoArgs, daemons: &[Daemon]) -> anyhow::Result<()> {
    let primary = &daemons[0];
    let addr = *primary.local_addrs().first().context("no listener")?;
    let metrics = primary.metrics_addr().context("no metrics endpoint")?;
    print!("-- waiting for the replicas' first full copy ... ");
    std::io::stdout().flush().ok();
    let started = Instant::now();
    wait_gauge(metrics, "keel_replication_serving", Duration::from_secs(60))?;
    wait_gauge(
        metrics,
        "keel_replication_in_sync",
        Duration::from_secs(300),
    )?;
    println!("in sync after {:.1} s", started.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    for phase in &PHASES {
        println!("-- {} ...", phase.name);
        let nvmf_args = NvmfArgs {
            addr: addr.to_string(),
            nqn: NQN.into(),
            nsid: 1,
            workload: Workload {
                pattern: phase.pattern,
                rwmix_read: 70,
                block_size: args.bs,
                queue_depth: args.qd,
                runtime: args.phase_time,
            },
            connections: 1,
            verify: phase.verify,
            digests: false,
            poll: false,
            hostnqn: None,
            quiet: true,
        };
        let run = nvmf::run(&nvmf_args).with_context(|| phase.name)?;
        if run.results.errors > 0 {
            bail!("{}: {} I/O errors", phase.name, run.results.errors);
        }
        rows.push((phase.name, run.results, run.verified_reads));
    }
    print_table(&rows);
    print!("-- waiting until both replicas hold every acknowledged write ... ");
    std::io::stdout().flush().ok();
    wait_gauge(
        metrics,
        "keel_replication_in_sync",
        Duration::from_secs(120),
    )?;
    println!("done");
    Ok(())
}

/// The three backing files must be byte-identical.
fn compare_copies(images: &[PathBuf]) -> anyhow::Result<()> {
    let open =
        |p: &PathBuf| std::fs::File::open(p).with_context(|| format!("opening {}", p.display()));
    let mut files = images
        .iter()
        .map(open)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut bufs = vec![vec![0u8; 1 << 20]; files.len()];
    let mut offset = 0u64;
    loop {
        let mut lens = Vec::with_capacity(files.len());
        for (file, buf) in files.iter_mut().zip(bufs.iter_mut()) {
            lens.push(read_full(file, buf)?);
        }
        if lens.iter().any(|&l| l != lens[0]) {
            bail!("the copies differ in length near byte {offset}");
        }
        if lens[0] == 0 {
            break;
        }
        for (n, buf) in bufs.iter().enumerate().skip(1) {
            if buf[..lens[0]] != bufs[0][..lens[0]] {
                bail!(
                    "copy {} differs from the primary's in the MiB at byte {offset}",
                    n + 1
                );
            }
        }
        offset += lens[0] as u64;
    }
    println!(
        "copies: the primary's and both replicas' volumes are byte-identical ({} MiB each)",
        offset >> 20
    );
    Ok(())
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> anyhow::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = file.read(&mut buf[filled..]).context("reading a copy")?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn print_table(rows: &[(&str, Results, u64)]) {
    println!(
        "\n{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  checked",
        "phase (primary, W=2/3)", "IOPS", "MiB/s", "p50 us", "p99 us", "p99.9 us", "max us"
    );
    for (name, results, verified) in rows {
        let total = results.total();
        let secs = results.elapsed.as_secs_f64().max(1e-9);
        let p = percentiles_us(&total.latency_ns);
        let checked = if *verified > 0 {
            format!("{verified} reads verified")
        } else {
            String::new()
        };
        println!(
            "{:<24} {:>10.0} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {}",
            name,
            total.ops as f64 / secs,
            total.bytes as f64 / secs / f64::from(1 << 20),
            p.p50,
            p.p99,
            p.p999,
            p.max,
            checked
        );
    }
    println!();
}
