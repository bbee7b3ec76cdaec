//! keel-bench: Keel's load generator.

mod demo;
mod fio;
mod local;
mod nvmf;
mod plot;
mod progress;
mod report;
mod verify;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use workload::{parse_duration, parse_size, Pattern, Workload};

#[derive(Parser)]
#[command(
    name = "keel-bench",
    version,
    about = "Keel's benchmark: the local engine, side by side with fio"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Keel's main job: keeld on loopback over a file-backed volume, driven
    /// over NVMe/TCP (random write, random read, verified mix), one table.
    Demo {
        /// Where the volume file goes (a filesystem with O_DIRECT: not tmpfs).
        #[arg(long, default_value = "build/keel-demo")]
        data_dir: PathBuf,
        #[arg(long, default_value = "256M", value_parser = parse_size)]
        size: u64,
        /// Length of each phase.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        time: Duration,
        #[arg(long, default_value_t = 32)]
        qd: usize,
        #[arg(long, default_value = "4k", value_parser = parse_size)]
        bs: u64,
    },
    /// Drive Keel's io_uring engine directly against a file, device or memory.
    Local(LocalCli),
    /// Load an NVMe/TCP target through Keel's userspace initiator.
    Nvmf(NvmfCli),
    /// Run `local` and fio's io_uring engine alternately on the same file and
    /// print the medians and the keel/fio ratio.
    CompareFio(CompareCli),
    /// Draw one SVG (IOPS bars, latency percentile lines) from `--json`
    /// results, one per file.
    Plot {
        /// Results written by `local --json` or `nvmf --json`.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long, default_value = "keel-bench.svg")]
        out: PathBuf,
        #[arg(long, default_value = "keel-bench")]
        title: String,
    },
    /// Start the engine with nothing to do and report the CPU it uses.
    Idle {
        #[arg(long, default_value_t = 1)]
        cores: usize,
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        time: Duration,
        #[arg(long, default_value = "200us", value_parser = parse_spin)]
        spin: Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
struct WorkloadCli {
    #[arg(long, value_enum, default_value_t = Pattern::Randread)]
    rw: Pattern,
    /// Percentage of reads in randrw.
    #[arg(long, default_value_t = 70, value_parser = clap::value_parser!(u8).range(0..=100))]
    rwmix: u8,
    #[arg(long, default_value = "4k", value_parser = parse_size)]
    bs: u64,
    #[arg(long, default_value_t = 32)]
    qd: usize,
    /// One shard (pinned thread with its own ring) per core.
    #[arg(long, default_value_t = 1)]
    cores: usize,
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    time: Duration,
}

impl WorkloadCli {
    fn workload(&self) -> anyhow::Result<Workload> {
        anyhow::ensure!(self.qd > 0 && self.qd <= 4096, "--qd must be in 1..=4096");
        anyhow::ensure!(
            self.cores > 0 && self.cores <= 1024,
            "--cores must be in 1..=1024"
        );
        anyhow::ensure!(
            self.bs > 0 && self.bs <= (16 << 20),
            "--bs must be in 1..=16M"
        );
        Ok(Workload {
            pattern: self.rw,
            rwmix_read: self.rwmix,
            block_size: self.bs,
            queue_depth: self.qd,
            runtime: self.time,
        })
    }

    fn to_args(&self) -> Vec<String> {
        vec![
            format!("--rw={}", self.rw.name()),
            format!("--rwmix={}", self.rwmix),
            format!("--bs={}", self.bs),
            format!("--qd={}", self.qd),
            format!("--cores={}", self.cores),
            format!("--time={}ms", self.time.as_millis()),
        ]
    }
}

#[derive(Args)]
struct LocalCli {
    /// File or block device (opened O_DIRECT); `memory` for a RAM volume.
    #[arg(long, default_value = "build/keel-bench.dat")]
    file: String,
    /// Volume size; a file that does not exist is created and laid out.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    #[command(flatten)]
    workload: WorkloadCli,
    /// Poll this long after the last work before sleeping (e.g. 200us, 1ms).
    #[arg(long, default_value = "1ms", value_parser = parse_spin)]
    spin: Duration,
    /// Let a kernel thread poll the submission queue (costs a core).
    #[arg(long)]
    sqpoll: bool,
    /// When completion task work runs: deferred (DEFER_TASKRUN, the
    /// default), cooperative (COOP_TASKRUN) or immediate (neither).
    #[arg(long, value_enum, default_value_t = TaskRunCli::Deferred)]
    task_run: TaskRunCli,
    /// Where the kernel's io_uring workers run (fsync, and every I/O a file
    /// cannot do without blocking, e.g. on tmpfs): other-cpus (the CPUs no
    /// shard polls) or shard-cpu (the shard's own, the kernel's default).
    #[arg(long, value_enum, default_value_t = IoWorkersCli::OtherCpus)]
    io_workers: IoWorkersCli,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Write the latency distribution (HdrHistogram percentile format) here.
    #[arg(long)]
    hist_out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum IoWorkersCli {
    OtherCpus,
    ShardCpu,
}

impl IoWorkersCli {
    fn engine(self) -> keel_engine::IoWorkers {
        match self {
            IoWorkersCli::OtherCpus => keel_engine::IoWorkers::OtherCpus,
            IoWorkersCli::ShardCpu => keel_engine::IoWorkers::ShardCpu,
        }
    }

    fn name(self) -> &'static str {
        match self {
            IoWorkersCli::OtherCpus => "other-cpus",
            IoWorkersCli::ShardCpu => "shard-cpu",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TaskRunCli {
    Deferred,
    Cooperative,
    Immediate,
}

impl TaskRunCli {
    fn engine(self) -> keel_engine::TaskRun {
        match self {
            TaskRunCli::Deferred => keel_engine::TaskRun::Deferred,
            TaskRunCli::Cooperative => keel_engine::TaskRun::Cooperative,
            TaskRunCli::Immediate => keel_engine::TaskRun::Immediate,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TaskRunCli::Deferred => "deferred",
            TaskRunCli::Cooperative => "cooperative",
            TaskRunCli::Immediate => "immediate",
        }
    }
}

#[derive(Args)]
struct NvmfCli {
    /// Target address (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:4420")]
    addr: String,
    /// Subsystem NQN.
    #[arg(long)]
    nqn: String,
    /// Namespace ID.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    #[command(flatten)]
    workload: WorkloadCli,
    /// I/O queues (one TCP connection and one thread each).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Write self-describing blocks and check every read against the last
    /// acknowledged write; any mismatch fails the run.
    #[arg(long)]
    verify: bool,
    /// Ask for header and data digests (CRC32C).
    #[arg(long)]
    digests: bool,
    /// Busy-poll each queue's socket (a core per connection) instead of
    /// sleeping in the kernel, as SPDK's perf does: measures the target,
    /// not the initiator's wake-ups.
    #[arg(long)]
    poll: bool,
    /// Host NQN to present (default nqn.2014-08.io.keel:host:keel-bench).
    #[arg(long)]
    hostnqn: Option<String>,
    #[arg(long)]
    json: bool,
    /// Write the latency distribution (HdrHistogram percentile format) here.
    #[arg(long)]
    hist_out: Option<PathBuf>,
}

#[derive(Args)]
struct CompareCli {
    #[arg(long, default_value = "build/keel-bench.dat")]
    file: PathBuf,
    #[arg(long, default_value = "4G", value_parser = parse_size)]
    size: u64,
    #[command(flatten)]
    workload: WorkloadCli,
    /// Runs of each tool (alternating).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value = "fio")]
    fio: String,
    /// keel's ring task-work mode (see `local --help`).
    #[arg(long, value_enum, default_value_t = TaskRunCli::Deferred)]
    task_run: TaskRunCli,
    /// Where keel's io_uring workers run (see `local --help`).
    #[arg(long, value_enum, default_value_t = IoWorkersCli::OtherCpus)]
    io_workers: IoWorkersCli,
    /// keel's poll time after the last work (see `local --help`).
    #[arg(long, default_value = "1ms", value_parser = parse_spin)]
    spin: Duration,
    #[arg(long)]
    json: bool,
}

fn parse_spin(text: &str) -> Result<Duration, String> {
    if let Some(us) = text.strip_suffix("us") {
        return us
            .parse()
            .map(Duration::from_micros)
            .map_err(|_| format!("'{text}' is not a duration"));
    }
    parse_duration(text)
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("keel-bench: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Demo {
            data_dir,
            size,
            time,
            qd,
            bs,
        } => demo::run(&demo::DemoArgs {
            data_dir,
            size,
            phase_time: time,
            qd,
            bs,
        }),
        Cmd::Local(args) => run_local(args),
        Cmd::Nvmf(args) => run_nvmf(args),
        Cmd::CompareFio(args) => run_compare(args),
        Cmd::Plot { inputs, out, title } => plot::run(&inputs, &out, &title),
        Cmd::Idle {
            cores,
            time,
            spin,
            json,
        } => run_idle(cores, time, spin, json),
    }
}

fn run_local(args: LocalCli) -> anyhow::Result<()> {
    let workload = args.workload.workload()?;
    let file = (args.file != "memory").then(|| PathBuf::from(&args.file));
    let size = match (&file, args.size) {
        (Some(path), None) if !path.exists() => Some(1 << 30),
        (_, size) => size,
    };
    let local = local::LocalArgs {
        file: file.clone(),
        size,
        workload,
        cores: args.workload.cores,
        spin: args.spin,
        sqpoll: args.sqpoll,
        task_run: args.task_run.engine(),
        io_workers: args.io_workers.engine(),
        quiet: args.json,
    };
    if file.as_ref().is_some_and(|p| !p.exists()) {
        if let Some(parent) = file
            .as_ref()
            .and_then(|p| p.parent())
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
    }
    if !args.json {
        eprintln!(
            "keel-bench local: {} bs={} qd={} cores={} for {:?} on {}",
            workload.pattern.name(),
            workload.block_size,
            workload.queue_depth,
            args.workload.cores,
            workload.runtime,
            file.as_ref()
                .map_or("memory".into(), |p| p.display().to_string())
        );
    }
    let run = local::run(&local)?;
    write_hist(args.hist_out.as_deref(), &run.results)?;
    let busy: f64 = run
        .shards
        .iter()
        .map(|s| s.cpu_time.as_secs_f64() / s.wall_time.as_secs_f64().max(1e-9))
        .sum::<f64>()
        / run.shards.len().max(1) as f64;
    if args.json {
        let context = json!({
            "tool": "keel-bench local",
            "rw": workload.pattern.name(),
            "bs": workload.block_size,
            "qd": workload.queue_depth,
            "cores": args.workload.cores,
            "backend": run.backend,
            "ring": run.ring,
            "hugepages": run.hugepages,
            "shard_cpu_pct": (busy * 1000.0).round() / 10.0,
        });
        println!("{}", report::to_json(&run.results, context));
    } else {
        println!(
            "backend: {}\nring: {} | hugepages: {}",
            run.backend, run.ring, run.hugepages
        );
        print!("{}", report::to_table(&run.results));
    }
    anyhow::ensure!(run.results.errors == 0, "{} I/O errors", run.results.errors);
    Ok(())
}

fn run_nvmf(args: NvmfCli) -> anyhow::Result<()> {
    let workload = args.workload.workload()?;
    anyhow::ensure!(
        args.connections > 0 && args.connections <= 1024,
        "--connections must be in 1..=1024"
    );
    anyhow::ensure!(workload.queue_depth < 65535, "--qd must be below 65535");
    let nvmf_args = nvmf::NvmfArgs {
        addr: args.addr.clone(),
        nqn: args.nqn.clone(),
        nsid: args.nsid,
        workload,
        connections: args.connections,
        verify: args.verify,
        digests: args.digests,
        poll: args.poll,
        hostnqn: args.hostnqn.clone(),
        quiet: args.json,
    };
    if !args.json {
        eprintln!(
            "keel-bench nvmf: {} bs={} qd={} connections={} for {:?} on {} {}{}",
            workload.pattern.name(),
            workload.block_size,
            workload.queue_depth,
            args.connections,
            workload.runtime,
            args.addr,
            args.nqn,
            if args.verify { " (verify)" } else { "" }
        );
    }
    let run = nvmf::run(&nvmf_args)?;
    write_hist(args.hist_out.as_deref(), &run.results)?;
    if args.json {
        let context = json!({
            "tool": "keel-bench nvmf",
            "rw": workload.pattern.name(),
            "bs": workload.block_size,
            "qd": workload.queue_depth,
            "connections": args.connections,
            "addr": args.addr,
            "nqn": args.nqn,
            "digests": args.digests,
            "verify": args.verify,
            "verified_reads": run.verified_reads,
            "namespace": {"block_size": run.namespace.block_size, "blocks": run.namespace.blocks},
        });
        println!("{}", report::to_json(&run.results, context));
    } else {
        println!(
            "target: serial {:?} model {:?}; namespace {} x {} B{}",
            run.target.0,
            run.target.1,
            run.namespace.blocks,
            run.namespace.block_size,
            if args.verify {
                format!("; {} reads verified", run.verified_reads)
            } else {
                String::new()
            }
        );
        print!("{}", report::to_table(&run.results));
    }
    anyhow::ensure!(run.results.errors == 0, "{} I/O errors", run.results.errors);
    Ok(())
}

fn run_compare(args: CompareCli) -> anyhow::Result<()> {
    let workload = args.workload.workload()?;
    anyhow::ensure!(args.runs > 0, "--runs must be positive");
    let compare = fio::CompareArgs {
        file: args.file.clone(),
        size: args.size,
        workload,
        cores: args.workload.cores,
        runs: args.runs,
        fio: args.fio.clone(),
    };
    let mut keel_args = vec![
        "local".to_string(),
        format!("--file={}", args.file.display()),
        format!("--size={}", args.size),
        "--json".to_string(),
        format!("--task-run={}", args.task_run.name()),
        format!("--io-workers={}", args.io_workers.name()),
        format!("--spin={}us", args.spin.as_micros()),
    ];
    keel_args.extend(args.workload.to_args());
    let result = fio::compare(&compare, &keel_args, !args.json)?;
    if args.json {
        println!("{}", result.to_json(&compare));
    } else {
        print!("{}", result.to_table(&compare));
    }
    Ok(())
}

fn write_hist(path: Option<&std::path::Path>, results: &report::Results) -> anyhow::Result<()> {
    if let Some(path) = path {
        let text = report::percentile_distribution(&results.total().latency_ns);
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn run_idle(cores: usize, time: Duration, spin: Duration, json: bool) -> anyhow::Result<()> {
    struct Nothing;
    impl keel_engine::Handler<()> for Nothing {
        fn on_completion(&mut self, _: &mut keel_engine::Shard<()>, _: keel_engine::Completion) {}
    }
    let config = keel_engine::EngineConfig {
        shards: cores,
        spin,
        ..Default::default()
    };
    let engine = keel_engine::Engine::start(config, |_| Ok(Nothing))?;
    std::thread::sleep(time);
    let reports = engine.stop()?;
    let cpu: f64 = reports.iter().map(|r| r.cpu_time.as_secs_f64()).sum();
    let wall: f64 = reports.iter().map(|r| r.wall_time.as_secs_f64()).sum();
    let sleeps: u64 = reports.iter().map(|r| r.stats.sleeps).sum();
    let pct = 100.0 * cpu / wall.max(1e-9);
    if json {
        println!(
            "{}",
            json!({"cores": cores, "cpu_pct_per_core": (pct * 100.0).round() / 100.0, "sleeps": sleeps, "wall_s": wall / cores as f64})
        );
    } else {
        println!(
            "idle engine, {cores} shard(s), {:.1} s: {pct:.2}% CPU per core, {sleeps} sleeps",
            wall / cores as f64
        );
    }
    Ok(())
}
