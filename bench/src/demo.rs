//! `keel-bench demo`: Keel's main job in one command. Starts keeld's
//! target in this process on loopback over a file-backed volume under a
//! data folder, drives it over NVMe/TCP with Keel's initiator (random
//! write, random read, a verified mixed run) and prints one table.
//!
//! Everything runs in this one process, so Ctrl-C at any point leaves
//! nothing behind; the data folder stays for inspection.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use keel_target::daemon::config::{
    Backend, DaemonConfig, ListenerConfig, NamespaceConfig, SubsystemConfig,
};
use keel_target::daemon::{Daemon, RuntimeOptions};

use crate::nvmf::{self, NvmfArgs};
use crate::report::{percentiles_us, Results};
use crate::workload::{Pattern, Workload};

pub const NQN: &str = "nqn.2026-11.io.keel:demo";

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

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let image = args.data_dir.join("vol0.img");
    let config = DaemonConfig {
        cores: 1,
        listeners: vec![ListenerConfig {
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
                backend: Backend::Path(image.clone()),
                size: Some(args.size),
                block_size: 512,
            }],
        }],
    };
    println!(
        "keel demo: keeld on 127.0.0.1 (1 core), volume {} ({} MiB, O_DIRECT), \
         keel-bench over NVMe/TCP: {} x {:?}, bs {} qd {}",
        image.display(),
        args.size >> 20,
        PHASES.len(),
        args.phase_time,
        args.bs,
        args.qd
    );
    let daemon = Daemon::start(&config, &RuntimeOptions::default()).context("starting keeld")?;
    let addr = *daemon
        .local_addrs()
        .first()
        .context("keeld has no listener")?;
    let mut rows = Vec::new();
    let mut outcome = Ok(());
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
        match nvmf::run(&nvmf_args) {
            Ok(run) if run.results.errors == 0 => {
                rows.push((phase.name, run.results, run.verified_reads))
            }
            Ok(run) => {
                outcome = Err(anyhow::anyhow!(
                    "{}: {} I/O errors",
                    phase.name,
                    run.results.errors
                ));
                break;
            }
            Err(error) => {
                outcome = Err(error.context(phase.name));
                break;
            }
        }
    }
    daemon.shutdown().context("stopping keeld")?;
    print_table(&rows);
    outcome?;
    println!(
        "keeld stopped cleanly; the volume is kept at {}",
        image.display()
    );
    Ok(())
}

fn print_table(rows: &[(&str, Results, u64)]) {
    println!(
        "\n{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}  checked",
        "phase", "IOPS", "MiB/s", "p50 us", "p99 us", "p99.9 us", "max us"
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
}
