//! Three keeld processes replicating one file-backed volume on loopback,
//! for the replication and fault tests: their command lines, start and
//! stop, a host queue on a node, per-replica metrics, and the byte-for-byte
//! comparison of the copies.

use std::path::PathBuf;

use keel_target::initiator::{Controller, HostOptions, IoQueue};

use super::io::scratch_dir;
use super::{free_ports, Keeld};

/// The replicated volume's subsystem.
pub const NQN: &str = "nqn.2026-11.io.keel:replicated";
/// Its size.
pub const SIZE: &str = "16M";

/// keeld serving [`NQN`] on an ephemeral port, with its metrics endpoint
/// (the replication gauges) and `args` (backend, replication flags).
pub fn start(args: &[String]) -> Keeld {
    super::serve(NQN, args)
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// The three-node cluster's command lines.
pub struct Cluster {
    pub dir: PathBuf,
    pub ports: Vec<u16>,
    pub quorum: u8,
    /// Nodes that are async members (the others are sync).
    pub async_nodes: Vec<usize>,
    /// Nodes whose image lies elsewhere than in `dir`.
    pub images: Vec<(usize, PathBuf)>,
}

impl Cluster {
    pub fn new(name: &str, quorum: u8) -> Cluster {
        let dir = scratch_dir(name);
        std::fs::write(dir.join("psk"), b"keel replication test key 0123456789\n").expect("psk");
        std::fs::write(dir.join("bad-psk"), b"some other key entirely, 987654321\n").expect("psk");
        Cluster {
            dir,
            ports: free_ports::<3>().to_vec(),
            quorum,
            async_nodes: Vec::new(),
            images: Vec::new(),
        }
    }

    /// The same cluster with node `node`'s image at `path`.
    pub fn with_image(mut self, node: usize, path: PathBuf) -> Cluster {
        self.images.push((node, path));
        self
    }

    /// The same cluster with `node` an async member.
    pub fn with_async(mut self, node: usize) -> Cluster {
        self.async_nodes.push(node);
        self
    }

    pub fn image(&self, node: usize) -> PathBuf {
        match self.images.iter().find(|(n, _)| *n == node) {
            Some((_, path)) => path.clone(),
            None => self.dir.join(format!("node{node}.img")),
        }
    }

    pub fn args(&self, node: usize, psk: &str) -> Vec<String> {
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
            let mode = if self.async_nodes.contains(&(index + 1)) {
                "async"
            } else {
                "sync"
            };
            args.push("--member".into());
            args.push(format!("{}@127.0.0.1:{port}:{mode}", index + 1));
        }
        // Every copy of these volumes starts together (ignored by a node
        // that already has its record).
        args.push("--bootstrap".into());
        args
    }

    /// Node `node`'s control socket (given with `--rpc-socket` by the
    /// tests that use it).
    pub fn socket(&self, node: usize) -> PathBuf {
        self.dir.join(format!("node{node}.sock"))
    }

    /// Starts node `node` with `extra` flags after its usual ones.
    pub fn start_with(&self, node: usize, extra: &[&str]) -> Keeld {
        let mut args = self.args(node, "psk");
        args.extend(extra.iter().map(|a| a.to_string()));
        start(&args)
    }

    pub fn start(&self, node: usize) -> Keeld {
        start(&self.args(node, "psk"))
    }

    /// Node `node`'s keeld command line with everything but the runtime
    /// flags in a keel.toml (replication in its `[replication]` table, with
    /// the lines `replication_extra` added to it).
    pub fn config_file_args(&self, node: usize, replication_extra: &str) -> Vec<String> {
        let members: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(index, port)| {
                let mode = if self.async_nodes.contains(&(index + 1)) {
                    "async"
                } else {
                    "sync"
                };
                format!("\"{}@127.0.0.1:{port}:{mode}\"", index + 1)
            })
            .collect();
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\n\n\
             [[subsystem]]\nnqn = \"{NQN}\"\n\n\
             [[subsystem.namespace]]\nnsid = 1\nbackend = {:?}\nsize = \"{SIZE}\"\n\n\
             [replication]\nnode_id = {node}\nmembers = [{}]\nprimary = 1\n\
             replica_listen = \"127.0.0.1:{}\"\nwrite_quorum = {}\npsk_file = {:?}\n\
             fresh = \"bootstrap\"\n{replication_extra}\n",
            self.image(node).to_str().expect("utf-8"),
            members.join(", "),
            self.ports[node - 1],
            self.quorum,
            self.dir.join("psk").to_str().expect("utf-8"),
        );
        let path = self.dir.join(format!("node{node}.toml"));
        std::fs::write(&path, text).expect("write keel.toml");
        ["--config", path.to_str().expect("utf-8")]
            .into_iter()
            .chain(super::RUNTIME_ARGS)
            .map(str::to_string)
            .collect()
    }

    /// Every copy in `nodes` is byte-identical to node 1's (all stopped).
    pub fn assert_identical(&self, nodes: &[usize]) {
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

/// SIGTERMs each keeld in turn; each must drain and exit 0.
pub fn stop_all<const N: usize>(keelds: [Keeld; N]) {
    for (index, keeld) in keelds.into_iter().enumerate() {
        let status = keeld.terminate();
        assert!(
            status.success(),
            "keeld #{index} of the cluster exited {status}"
        );
    }
}

/// A host connected to `keeld` with one I/O queue of depth 4.
pub fn open_queue(keeld: &Keeld) -> (Controller, IoQueue) {
    open_queue_on(keeld, NQN)
}

/// A host connected to subsystem `nqn` of `keeld` with one I/O queue of
/// depth 4.
pub fn open_queue_on(keeld: &Keeld, nqn: &str) -> (Controller, IoQueue) {
    let mut ctrl =
        Controller::connect(keeld.addr, nqn, &HostOptions::default(), 1).expect("connect");
    let ns = ctrl.namespace(1).expect("identify");
    let queue = ctrl.io_queue(1, 4, ns).expect("I/O queue");
    (ctrl, queue)
}

/// The value of `name` for replica `node` (and the extra label, if any).
pub fn replica_sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    node: usize,
    extra: Option<(&str, &str)>,
) -> Option<f64> {
    let node = node.to_string();
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.get("replica") == Some(node.as_str())
                && extra.is_none_or(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}
