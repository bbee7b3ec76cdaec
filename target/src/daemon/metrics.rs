//! keeld's Prometheus endpoint: per-volume command counters, bytes, errors
//! and latency histograms, and per-shard loop counters with busy vs idle
//! time. Shards update atomics with relaxed stores (no lock, no allocation
//! on the I/O path); an HTTP thread renders the text format on request.
//! Off unless `--metrics ADDR` is given; loopback is the documented default.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use keel_engine::ShardStats;

/// Upper bounds of the latency buckets, in microseconds.
const BUCKETS_US: [u64; 16] = [
    10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000,
    500_000, 1_000_000,
];

/// Command classes counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpClass {
    Read = 0,
    Write = 1,
    Other = 2,
}

const OP_NAMES: [&str; 3] = ["read", "write", "other"];

/// A per-volume counter: name, help, how to read it.
type VolumeCounter = (&'static str, &'static str, fn(&OpMetrics) -> u64);
/// A per-shard metric: name, type, help, how to read it.
type ShardMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardMetrics) -> f64,
);

#[derive(Default)]
struct OpMetrics {
    commands: AtomicU64,
    errors: AtomicU64,
    bytes: AtomicU64,
    latency_sum_ns: AtomicU64,
    /// Cumulative counts are computed when rendering; each slot counts
    /// commands whose latency fell in (previous bound, bound]; the last
    /// slot is +Inf.
    buckets: [AtomicU64; BUCKETS_US.len() + 1],
}

pub(crate) struct VolumeMetrics {
    nqn: String,
    nsid: u32,
    ops: [OpMetrics; 3],
}

#[derive(Default)]
pub(crate) struct ShardMetrics {
    loops: AtomicU64,
    completions: AtomicU64,
    sleeps: AtomicU64,
    slept_ns: AtomicU64,
    wall_ns: AtomicU64,
    connections: AtomicU64,
    short_transfers: AtomicU64,
    pool_empty: AtomicU64,
}

/// Every metric keeld exports.
pub(crate) struct Metrics {
    volumes: Vec<VolumeMetrics>,
    shards: Vec<ShardMetrics>,
    started: Instant,
}

impl Metrics {
    pub fn new(volumes: &[(String, u32)], shards: usize) -> Metrics {
        Metrics {
            volumes: volumes
                .iter()
                .map(|(nqn, nsid)| VolumeMetrics {
                    nqn: nqn.clone(),
                    nsid: *nsid,
                    ops: Default::default(),
                })
                .collect(),
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            started: Instant::now(),
        }
    }

    /// One finished command of volume `volume`.
    pub fn record(&self, volume: usize, class: OpClass, bytes: u64, ok: bool, latency: Duration) {
        let Some(metrics) = self.volumes.get(volume) else {
            return;
        };
        let op = &metrics.ops[class as usize];
        op.commands.fetch_add(1, Ordering::Relaxed);
        if ok {
            op.bytes.fetch_add(bytes, Ordering::Relaxed);
        } else {
            op.errors.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        op.latency_sum_ns.fetch_add(nanos, Ordering::Relaxed);
        let micros = nanos / 1000;
        let slot = BUCKETS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKETS_US.len());
        op.buckets[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// A shard's own counters, published about once a second.
    pub fn publish_shard(&self, shard: usize, stats: ShardStats, connections: usize) {
        let Some(metrics) = self.shards.get(shard) else {
            return;
        };
        metrics.loops.store(stats.loops, Ordering::Relaxed);
        metrics
            .completions
            .store(stats.completions, Ordering::Relaxed);
        metrics.sleeps.store(stats.sleeps, Ordering::Relaxed);
        metrics
            .short_transfers
            .store(stats.short_transfers, Ordering::Relaxed);
        metrics
            .pool_empty
            .store(stats.pool_empty, Ordering::Relaxed);
        let slept = u64::try_from(stats.slept.as_nanos()).unwrap_or(u64::MAX);
        metrics.slept_ns.store(slept, Ordering::Relaxed);
        let wall = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        metrics.wall_ns.store(wall, Ordering::Relaxed);
        metrics
            .connections
            .store(connections as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, controllers: usize) -> String {
        let mut out = String::with_capacity(8192);
        let _ = writeln!(out, "# HELP keel_up_seconds Seconds since keeld started.");
        let _ = writeln!(out, "# TYPE keel_up_seconds gauge");
        let _ = writeln!(
            out,
            "keel_up_seconds {:.3}",
            self.started.elapsed().as_secs_f64()
        );
        let _ = writeln!(out, "# HELP keel_controllers NVMe controllers alive.");
        let _ = writeln!(out, "# TYPE keel_controllers gauge");
        let _ = writeln!(out, "keel_controllers {controllers}");

        let counters: [VolumeCounter; 3] = [
            ("keel_volume_commands_total", "Commands completed.", |op| {
                op.commands.load(Ordering::Relaxed)
            }),
            (
                "keel_volume_errors_total",
                "Commands completed with an error status.",
                |op| op.errors.load(Ordering::Relaxed),
            ),
            (
                "keel_volume_bytes_total",
                "Bytes moved by successful commands.",
                |op| op.bytes.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for volume in &self.volumes {
                for (index, op) in volume.ops.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}{{nqn=\"{}\",nsid=\"{}\",op=\"{}\"}} {}",
                        escape(&volume.nqn),
                        volume.nsid,
                        OP_NAMES[index],
                        value(op)
                    );
                }
            }
        }

        let name = "keel_volume_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Command latency from capsule to completion."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for volume in &self.volumes {
            for (index, op) in volume.ops.iter().enumerate() {
                let labels = format!(
                    "nqn=\"{}\",nsid=\"{}\",op=\"{}\"",
                    escape(&volume.nqn),
                    volume.nsid,
                    OP_NAMES[index]
                );
                let mut cumulative = 0u64;
                for (slot, bound) in BUCKETS_US.iter().enumerate() {
                    cumulative += op.buckets[slot].load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{}\"}} {cumulative}",
                        *bound as f64 / 1e6
                    );
                }
                cumulative += op.buckets[BUCKETS_US.len()].load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                let sum = op.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
            }
        }

        let shard_metrics: [ShardMetric; 7] = [
            (
                "keel_shard_loops_total",
                "counter",
                "Reactor loop iterations.",
                |s| s.loops.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_shard_completions_total",
                "counter",
                "Ring completions handled.",
                |s| s.completions.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_shard_sleeps_total",
                "counter",
                "Times the shard slept in the kernel.",
                |s| s.sleeps.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_shard_idle_seconds_total",
                "counter",
                "Time asleep waiting for work (the rest is polling or working).",
                |s| s.slept_ns.load(Ordering::Relaxed) as f64 / 1e9,
            ),
            (
                "keel_shard_short_transfers_total",
                "counter",
                "Disk reads and writes that completed short and were continued.",
                |s| s.short_transfers.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_shard_pool_empty_total",
                "counter",
                "Buffers asked of the shard's pool while it had none left (the asker waits: a send, a replication link).",
                |s| s.pool_empty.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_shard_connections",
                "gauge",
                "NVMe/TCP connections owned.",
                |s| s.connections.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in shard_metrics {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (index, shard) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{index}\"}} {}", value(shard));
            }
        }
        let name = "keel_shard_busy_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} Time polling or working (wall time minus idle)."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (index, shard) in self.shards.iter().enumerate() {
            let wall = shard.wall_ns.load(Ordering::Relaxed);
            let idle = shard.slept_ns.load(Ordering::Relaxed);
            let busy = wall.saturating_sub(idle) as f64 / 1e9;
            let _ = writeln!(out, "{name}{{shard=\"{index}\"}} {busy}");
        }
        out
    }
}

/// Label values escape backslash, quote and newline.
pub(crate) fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HTTP side: GET /metrics on a thread of its own.
pub(crate) struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl MetricsServer {
    pub fn start(
        addr: SocketAddr,
        render: impl Fn() -> String + Send + 'static,
    ) -> std::io::Result<MetricsServer> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| std::io::Error::other(format!("metrics endpoint {addr}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| std::io::Error::other("metrics endpoint has no IP address"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("keel-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.method() == &tiny_http::Method::Get
                        && (request.url() == "/metrics" || request.url() == "/")
                    {
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4; charset=utf-8"[..],
                        );
                        let mut response = tiny_http::Response::from_string(render());
                        if let Ok(header) = header {
                            response.add_header(header);
                        }
                        response
                    } else {
                        tiny_http::Response::from_string("only GET /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
