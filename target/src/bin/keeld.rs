//! keeld: Keel's NVMe/TCP storage target.
//!
//! `keeld --config keel.toml` (replication in its `[replication]` table),
//! or one volume from flags:
//! `keeld --listen HOST:PORT --nqn NQN --backend PATH|memory [--size SIZE]
//! [--block-size 512|4096] [--cores N] [--allow-host HOSTNQN]...`
//!
//! Replication of the quick-start volume (see docs/replication-keeld.md):
//! `--node-id N --member ID@HOST:PORT[:sync|:async]... --primary ID
//! --replica-listen HOST:PORT --write-quorum W --psk-file FILE
//! [--volume-id V] [--async-max-lag-bytes SIZE] [--async-max-lag-ms MS]`
//!
//! For tests only: `--fault-injection` wraps every backend in a
//! fault-injecting one driven over the control socket (docs/rpc.md).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keel_replicator::wire::{NodeId, VolumeId};
use keel_target::daemon::config::{
    parse_size, Backend, DaemonConfig, ListenerConfig, NamespaceConfig, ReplicationConfig,
    SubsystemConfig,
};
use keel_target::daemon::replication::{
    self, parse_member, AsyncLagBound, FreshCopy, MemberAddress, ReplicationOptions,
};
use keel_target::daemon::{Daemon, RuntimeOptions};
use nix::sys::signal::{SigSet, Signal};

#[derive(Parser)]
// A flag given twice takes its last value (scripts append overrides).
#[command(
    name = "keeld",
    version,
    about = "Keel's NVMe/TCP storage target",
    args_override_self = true
)]
struct Cli {
    /// Configuration file (keel.toml). Excludes the quick-start flags.
    #[arg(long, conflicts_with_all = ["listen", "nqn", "backend"])]
    config: Option<PathBuf>,
    /// Address to listen on (quick start).
    #[arg(long, requires_all = ["nqn", "backend"])]
    listen: Option<SocketAddr>,
    /// Subsystem NQN of the volume (quick start).
    #[arg(long)]
    nqn: Option<String>,
    /// File or block device backing the volume, or `memory`.
    #[arg(long)]
    backend: Option<String>,
    /// Volume size (e.g. 1G); needed for memory or to create a file.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Logical block size.
    #[arg(long, default_value_t = 512)]
    block_size: u32,
    /// Shards (cores) to run.
    #[arg(long)]
    cores: Option<usize>,
    /// Host NQN allowed to connect (repeatable; none: any host).
    #[arg(long = "allow-host")]
    allow_hosts: Vec<String>,
    /// Engine buffers per shard (128 KiB each).
    #[arg(long, default_value_t = 1024)]
    buffers: usize,
    /// How long an idle shard keeps polling before it sleeps (e.g. 200us).
    #[arg(long, default_value = "200us", value_parser = parse_micros)]
    spin: Duration,
    /// Do not pin shards to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default;
    /// `--metrics` alone listens on 127.0.0.1:9464).
    #[arg(long, num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    metrics: Option<SocketAddr>,
    /// Serve the JSON-RPC control API (keelctl) on this Unix socket.
    #[arg(long, value_name = "PATH")]
    rpc_socket: Option<PathBuf>,
    /// Replication: this node's id (turns replication on).
    #[arg(long, requires_all = ["members", "primary", "replica_listen", "write_quorum", "psk_file"])]
    node_id: Option<u64>,
    /// Replication: a copy of the volume, ID@HOST:PORT[:sync|:async]
    /// (repeatable; every copy, this node's included, the same list on
    /// every node).
    #[arg(long = "member", value_parser = parse_member, requires = "node_id")]
    members: Vec<MemberAddress>,
    /// Replication: the node that is primary in the first epoch.
    #[arg(long, requires = "node_id")]
    primary: Option<u64>,
    /// Replication: where this node accepts replication links (its own
    /// --member address).
    #[arg(long, requires = "node_id")]
    replica_listen: Option<SocketAddr>,
    /// Replication: copies durable before a write completes (the
    /// primary's included).
    #[arg(long, requires = "node_id")]
    write_quorum: Option<u8>,
    /// Replication: file holding the pre-shared key of the links (at least
    /// 16 bytes; one trailing newline is ignored).
    #[arg(long, requires = "node_id")]
    psk_file: Option<PathBuf>,
    /// Replication: the volume's id, the same on every copy.
    #[arg(long, default_value_t = 1, requires = "node_id")]
    volume_id: u64,
    /// Replication: this replica (with no record yet) is part of a brand
    /// new volume; every copy of a new volume starts with it.
    #[arg(long, requires = "node_id", conflicts_with = "new_copy")]
    bootstrap: bool,
    /// Replication: this replica (with no record yet) is a new, empty disk
    /// joining a running volume; it gets a full copy.
    #[arg(long, requires = "node_id")]
    new_copy: bool,
    /// Replication: an async replica with more than SIZE sent or queued and
    /// not acknowledged is marked out of date and resynced (e.g. 64M; at
    /// least 4M, the resync window).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "node_id")]
    async_max_lag_bytes: Option<u64>,
    /// Replication: an async replica whose oldest unacknowledged frame is
    /// older than MS milliseconds is marked out of date and resynced
    /// (100 to 86400000).
    #[arg(long, value_name = "MS", requires = "node_id")]
    async_max_lag_ms: Option<u64>,
    /// Replication: a link on which nothing arrives for MS milliseconds
    /// (heartbeats included) is closed, and a sync replica that acknowledges
    /// nothing for that long is dropped and resynced later (400 to 600000;
    /// default 5000).
    #[arg(long, value_name = "MS", requires = "node_id")]
    link_timeout_ms: Option<u64>,
    /// Replication: read leases of one link timeout. The primary serves
    /// only while a write quorum of copies answered it within half of one
    /// (so a primary cut off from the copies stops serving reads, and the
    /// host's multipath moves on), and a promotion waits one out before it
    /// serves. No stale reads from a deposed primary; a minority cannot
    /// serve. Off by default.
    #[arg(long, requires = "node_id")]
    read_lease: bool,
    /// Replication: the most a primary reads for resyncs and scrubs
    /// together, in MiB/s (region copies and scrub checks start only as
    /// the budget allows, so host I/O keeps the rest of the disk and link).
    /// Default: unlimited.
    #[arg(long, value_name = "MIB", requires = "node_id", value_parser = clap::value_parser!(u64).range(1..=replication::MAX_RESYNC_RATE_MIB))]
    resync_rate_mib: Option<u64>,
    /// For tests only: wrap every backend (the namespaces' data and the
    /// replication record) in a fault-injecting one that the control
    /// socket drives (fault_inject, fault_clear, fault_list). Off by
    /// default.
    #[arg(long)]
    fault_injection: bool,
}

fn parse_micros(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "us"), |at| text.split_at(at));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 200us or 1ms"))?;
    match unit {
        "us" => Ok(Duration::from_micros(value)),
        "ms" => Ok(Duration::from_millis(value)),
        "s" => Ok(Duration::from_secs(value)),
        _ => Err(format!("{text:?}: unit must be us, ms or s")),
    }
}

fn quick_start_config(cli: &Cli) -> anyhow::Result<DaemonConfig> {
    let (Some(listen), Some(nqn), Some(backend)) = (cli.listen, &cli.nqn, &cli.backend) else {
        anyhow::bail!("give either --config FILE or --listen, --nqn and --backend");
    };
    let backend = if backend == "memory" {
        Backend::Memory
    } else {
        Backend::Path(PathBuf::from(backend))
    };
    let config = DaemonConfig {
        cores: cli.cores.unwrap_or(1),
        listeners: vec![ListenerConfig { addr: listen }],
        subsystems: vec![SubsystemConfig {
            nqn: nqn.clone(),
            serial: None,
            model: None,
            allowed_hosts: cli.allow_hosts.clone(),
            namespaces: vec![NamespaceConfig {
                nsid: 1,
                backend,
                size: cli.size,
                block_size: cli.block_size,
            }],
        }],
        replication: None,
    };
    config
        .validate(std::path::Path::new("command line"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(config)
}

/// The replication options: from the flags, or from the file's
/// `[replication]` table (never both).
fn replication_options(
    cli: &Cli,
    config: &DaemonConfig,
) -> anyhow::Result<Option<ReplicationOptions>> {
    let Some(node) = cli.node_id else {
        return match (&config.replication, &cli.config) {
            (Some(replication), Some(path)) => file_replication(replication, path).map(Some),
            _ => Ok(None),
        };
    };
    if let Some(path) = &cli.config {
        anyhow::bail!(
            "with --config, replication is configured in the [replication] table of {}, \
             not with --node-id and the other replication flags",
            path.display()
        );
    }
    let (Some(primary), Some(listen), Some(write_quorum), Some(psk_file)) = (
        cli.primary,
        cli.replica_listen,
        cli.write_quorum,
        &cli.psk_file,
    ) else {
        anyhow::bail!("replication needs --member, --primary, --replica-listen, --write-quorum and --psk-file");
    };
    let psk = read_psk(psk_file)
        .with_context(|| format!("reading the pre-shared key file {}", psk_file.display()))?;
    let options = ReplicationOptions {
        node: NodeId(node),
        members: cli.members.clone(),
        primary: NodeId(primary),
        listen,
        write_quorum,
        psk,
        volume: VolumeId(cli.volume_id),
        fresh: match (cli.bootstrap, cli.new_copy) {
            (true, _) => FreshCopy::Bootstrap,
            (_, true) => FreshCopy::Blank,
            _ => FreshCopy::Refuse,
        },
        async_lag: AsyncLagBound {
            bytes: cli
                .async_max_lag_bytes
                .unwrap_or(replication::DEFAULT_ASYNC_LAG_BYTES),
            time: cli
                .async_max_lag_ms
                .map_or(replication::DEFAULT_ASYNC_LAG, Duration::from_millis),
        },
        link_timeout: cli
            .link_timeout_ms
            .map_or(replication::DEFAULT_LINK_TIMEOUT, Duration::from_millis),
        read_lease: cli.read_lease,
        resync_rate: cli.resync_rate_mib.map(|mib| mib << 20),
    };
    options
        .validate()
        .map_err(|e| anyhow::anyhow!("replication: {e}"))?;
    Ok(Some(options))
}

/// The options of the file's `[replication]` table; errors name the file
/// and the field.
fn file_replication(
    replication: &ReplicationConfig,
    path: &std::path::Path,
) -> anyhow::Result<ReplicationOptions> {
    let psk = read_psk(&replication.psk_file).map_err(|e| {
        anyhow::anyhow!(
            "{}: replication.psk_file: cannot read {}: {e}",
            path.display(),
            replication.psk_file.display()
        )
    })?;
    let options = replication.options(psk);
    options.check(true).map_err(|e| {
        anyhow::anyhow!(
            "{}: replication.{}: {}",
            path.display(),
            e.setting.key(),
            e.message
        )
    })?;
    Ok(options)
}

/// A pre-shared key file's bytes, one trailing newline dropped.
fn read_psk(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut psk = std::fs::read(path)?;
    if psk.last() == Some(&b'\n') {
        psk.pop();
    }
    Ok(psk)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = match &cli.config {
        Some(path) => DaemonConfig::load(path).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => quick_start_config(&cli)?,
    };
    if let (Some(cores), Some(path)) = (cli.cores, &cli.config) {
        config.cores = cores;
        config.validate(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let replication = replication_options(&cli, &config)?;
    // Block the stop signals before any thread starts so every shard
    // inherits the mask and only this thread takes them.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("blocking SIGTERM/SIGINT")?;
    let runtime = RuntimeOptions {
        buffers_per_shard: cli.buffers,
        spin: cli.spin,
        pin: !cli.no_pin,
        metrics: cli.metrics,
        rpc_socket: cli.rpc_socket.clone(),
        replication,
        fault_injection: cli.fault_injection,
    };
    let daemon = Daemon::start(&config, &runtime).context("starting keeld")?;
    tracing::info!(addrs = ?daemon.local_addrs(), cores = config.cores, "keeld serving");
    // One line on stdout per listener, for scripts and tests that listen on
    // port 0.
    for addr in daemon.local_addrs() {
        println!("keeld listening on {addr}");
    }
    if let Some(addr) = daemon.metrics_addr() {
        println!("keeld metrics on http://{addr}/metrics");
    }
    let signal = signals.wait().context("waiting for a signal")?;
    tracing::info!(?signal, "stopping: draining connections");
    daemon.shutdown().context("stopping keeld")?;
    tracing::info!("keeld stopped");
    Ok(())
}
