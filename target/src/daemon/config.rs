//! `keeld`'s configuration: the model of `keel.toml`, its parser and its
//! validation.
//!
//! The file is read in two steps. Private serde structs (every table
//! `deny_unknown_fields`) take the TOML as written; validation then turns them
//! into the public [`DaemonConfig`], checking every rule a running daemon
//! relies on. Every error names the file, the field path
//! (`subsystem[0].namespace[1].block_size`) and what is wrong, and no input
//! can make the parser panic.
//!
//! The quick-start flags build a [`DaemonConfig`] directly and check it with
//! [`DaemonConfig::validate`], so both paths obey the same rules.
//! `docs/configuration.md` documents every field.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use keel_replicator::wire::{NodeId, VolumeId};

use crate::daemon::replication::{
    parse_member, AsyncLagBound, FreshCopy, MemberAddress, ReplicationOptions,
};
use crate::nvme::nqn::{validate_nqn, DISCOVERY_NQN};

/// Reactor cores when `cores` is not given.
pub const DEFAULT_CORES: usize = 1;
/// Most reactor cores `cores` may ask for.
pub const MAX_CORES: usize = 1024;
/// Highest namespace ID a subsystem may use (namespace IDs start at 1).
pub const MAX_NSID: u32 = 1024;
/// Logical block size when `block_size` is not given.
pub const DEFAULT_BLOCK_SIZE: u32 = 512;
/// The logical block sizes a namespace may have.
pub const BLOCK_SIZES: [u32; 2] = [512, 4096];
/// Longest serial number, in bytes (Identify Controller SN).
pub const SERIAL_MAX_LEN: usize = 20;
/// Longest model number, in bytes (Identify Controller MN).
pub const MODEL_MAX_LEN: usize = 40;
/// Largest memory-backed namespace, in bytes (4 TiB, the engine's limit).
pub const MEMORY_MAX_SIZE: u64 = 1 << 42;

/// The whole daemon configuration (from keel.toml or from the quick-start
/// flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Reactor cores (threads) to run; 1..=[`MAX_CORES`], default 1.
    pub cores: usize,
    /// Addresses to accept NVMe/TCP connections on; at least one.
    pub listeners: Vec<ListenerConfig>,
    /// Subsystems to export; at least one.
    pub subsystems: Vec<SubsystemConfig>,
    /// Replication of the (single) volume (`[replication]`), if any.
    pub replication: Option<ReplicationConfig>,
}

/// `[replication]`: the same settings as the replication flags
/// (`docs/replication-keeld.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `node_id`: this node.
    pub node: NodeId,
    /// `members`: every copy, `"ID@IP:PORT[:sync|:async]"`.
    pub members: Vec<MemberAddress>,
    /// `primary`: the primary of the first epoch.
    pub primary: NodeId,
    /// `replica_listen`: where this node accepts replication links.
    pub listen: SocketAddr,
    /// `write_quorum`: copies durable before a write completes.
    pub write_quorum: u8,
    /// `psk_file`: the file holding the pre-shared key (read at start).
    pub psk_file: PathBuf,
    /// `volume_id` (default 1).
    pub volume: VolumeId,
    /// `fresh`: `"bootstrap"` or `"new_copy"` (default: refuse to start
    /// without a record).
    pub fresh: FreshCopy,
    /// `async_max_lag_bytes` and `async_max_lag_ms`.
    pub async_lag: AsyncLagBound,
    /// `link_timeout_ms` (default 5000).
    pub link_timeout: std::time::Duration,
    /// `read_lease` (default false).
    pub read_lease: bool,
    /// `resync_rate_mib` in bytes per second (default: unlimited).
    pub resync_rate: Option<u64>,
}

impl ReplicationConfig {
    /// The daemon's options, with the key read from `psk_file`.
    pub fn options(&self, psk: Vec<u8>) -> ReplicationOptions {
        ReplicationOptions {
            node: self.node,
            members: self.members.clone(),
            primary: self.primary,
            listen: self.listen,
            write_quorum: self.write_quorum,
            psk,
            volume: self.volume,
            fresh: self.fresh,
            async_lag: self.async_lag,
            link_timeout: self.link_timeout,
            read_lease: self.read_lease,
            resync_rate: self.resync_rate,
        }
    }
}

/// One `[[listener]]`: an address to accept NVMe/TCP connections on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// IP address and TCP port (`listen = "127.0.0.1:4420"`).
    pub addr: SocketAddr,
}

/// One `[[subsystem]]`: an NVM subsystem and its namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubsystemConfig {
    /// Subsystem NQN: a valid NQN of at most 223 bytes, unique, and not the
    /// discovery NQN.
    pub nqn: String,
    /// Serial number: at most 20 bytes of printable ASCII.
    pub serial: Option<String>,
    /// Model number: at most 40 bytes of printable ASCII.
    pub model: Option<String>,
    /// Host NQNs allowed to connect; empty means any host (keeld logs a
    /// warning).
    pub allowed_hosts: Vec<String>,
    /// Namespaces; at least one.
    pub namespaces: Vec<NamespaceConfig>,
}

/// One `[[subsystem.namespace]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceConfig {
    /// Namespace ID: 1..=[`MAX_NSID`], unique in the subsystem.
    pub nsid: u32,
    /// Where the blocks live.
    pub backend: Backend,
    /// Capacity in bytes; required for [`Backend::Memory`], a multiple of
    /// `block_size` and never zero.
    pub size: Option<u64>,
    /// Logical block size: 512 or 4096, default 512.
    pub block_size: u32,
}

/// Where a namespace keeps its blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// RAM (`backend = "memory"`); the data is lost when keeld stops.
    Memory,
    /// A regular file or a block device (`backend = "/path"`).
    Path(PathBuf),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Memory => f.write_str("memory"),
            Backend::Path(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a configuration file could not be used.
///
/// The Display form always starts with the file, e.g.
/// `/etc/keel.toml: subsystem[0].namespace[1].block_size: 1000 is not 512 or 4096`.
#[derive(Debug, Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{}: TOML parse error at line {line}, column {column}: {message}", origin.display())]
    Syntax {
        /// The file.
        origin: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// toml's description of the error.
        message: String,
    },
    /// A field is unknown, missing, of the wrong type or breaks a rule.
    #[error("{}: {field}: {message}{}", origin.display(), at_location(*location))]
    Invalid {
        /// The file.
        origin: PathBuf,
        /// Path of the field, e.g. `subsystem[0].namespace[1].block_size`.
        field: String,
        /// What is wrong.
        message: String,
        /// 1-based line and column, where the error comes from the TOML
        /// reader (unknown field, wrong type).
        location: Option<(usize, usize)>,
    },
}

fn at_location(location: Option<(usize, usize)>) -> String {
    match location {
        Some((line, column)) => format!(" (line {line}, column {column})"),
        None => String::new(),
    }
}

impl ConfigFileError {
    /// The field path the error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigFileError::Invalid { field, .. } => Some(field),
            ConfigFileError::Read { .. } | ConfigFileError::Syntax { .. } => None,
        }
    }
}

impl DaemonConfig {
    /// Parses and validates the text of a configuration file. `origin` names
    /// the file in error messages; it is not read.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<DaemonConfig, ConfigFileError> {
        let raw: RawConfig = toml::from_str(text).map_err(|err| toml_error(text, origin, &err))?;
        let config = raw.into_config(&Errors { origin })?;
        config.validate(origin)?;
        Ok(config)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        DaemonConfig::from_toml_str(&text, path)
    }

    /// Checks every rule of the configuration (ranges, NQNs, identify
    /// strings, sizes, uniqueness). [`DaemonConfig::from_toml_str`] calls it;
    /// code that builds a `DaemonConfig` itself (the quick-start flags) should
    /// too. `origin` names the source in the error, e.g. `command line`;
    /// field paths are those of the TOML file.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigFileError> {
        let errors = Errors { origin };
        if !(1..=MAX_CORES).contains(&self.cores) {
            return Err(errors.invalid(
                "cores",
                format!("{} is out of range 1..={MAX_CORES}", self.cores),
            ));
        }

        if self.listeners.is_empty() {
            return Err(errors.invalid("listener", "at least one [[listener]] is required"));
        }
        let mut addrs: HashMap<SocketAddr, usize> = HashMap::new();
        for (index, listener) in self.listeners.iter().enumerate() {
            if let Some(first) = addrs.insert(listener.addr, index) {
                return Err(errors.invalid(
                    format!("listener[{index}].listen"),
                    format!("{} is already used by listener[{first}]", listener.addr),
                ));
            }
        }

        if self.subsystems.is_empty() {
            return Err(errors.invalid("subsystem", "at least one [[subsystem]] is required"));
        }
        let mut nqns: HashMap<&str, usize> = HashMap::new();
        for (index, subsystem) in self.subsystems.iter().enumerate() {
            let field = format!("subsystem[{index}]");
            subsystem.validate(&field, &errors)?;
            if let Some(first) = nqns.insert(&subsystem.nqn, index) {
                return Err(errors.invalid(
                    format!("{field}.nqn"),
                    format!("{:?} is already used by subsystem[{first}]", subsystem.nqn),
                ));
            }
        }
        if let Some(replication) = &self.replication {
            self.validate_replication(replication, &errors)?;
        }
        Ok(())
    }

    /// What replication needs of the rest of the file, and its settings
    /// against each other (the key is read only at start).
    fn validate_replication(
        &self,
        replication: &ReplicationConfig,
        errors: &Errors<'_>,
    ) -> Result<(), ConfigFileError> {
        let namespaces: Vec<(String, &NamespaceConfig)> = self
            .subsystems
            .iter()
            .enumerate()
            .flat_map(|(s, subsystem)| {
                subsystem
                    .namespaces
                    .iter()
                    .enumerate()
                    .map(move |(n, ns)| (format!("subsystem[{s}].namespace[{n}]"), ns))
            })
            .collect();
        let [(field, namespace)] = namespaces.as_slice() else {
            return Err(errors.invalid(
                "replication",
                format!(
                    "replicates exactly one namespace ({} configured)",
                    namespaces.len()
                ),
            ));
        };
        if namespace.backend == Backend::Memory {
            return Err(errors.invalid(
                format!("{field}.backend"),
                "a replicated volume needs a file or block device, not memory",
            ));
        }
        // The key itself is read at start; a placeholder of the minimum
        // length stands in for it here.
        let options = replication.options(vec![0; keel_replicator::auth::MIN_KEY_LEN]);
        options.check(true).map_err(|error| {
            errors.invalid(
                format!("replication.{}", error.setting.key()),
                error.message,
            )
        })
    }
}

impl SubsystemConfig {
    fn validate(&self, field: &str, errors: &Errors<'_>) -> Result<(), ConfigFileError> {
        if let Err(err) = validate_nqn(&self.nqn) {
            return Err(errors.invalid(
                format!("{field}.nqn"),
                format!("{:?} is not a valid NQN: {err}", self.nqn),
            ));
        }
        if self.nqn == DISCOVERY_NQN {
            return Err(errors.invalid(
                format!("{field}.nqn"),
                format!("{DISCOVERY_NQN} is reserved for the discovery subsystem"),
            ));
        }
        if let Some(serial) = &self.serial {
            check_identify_string(serial, SERIAL_MAX_LEN)
                .map_err(|message| errors.invalid(format!("{field}.serial"), message))?;
        }
        if let Some(model) = &self.model {
            check_identify_string(model, MODEL_MAX_LEN)
                .map_err(|message| errors.invalid(format!("{field}.model"), message))?;
        }

        let mut hosts: HashMap<&str, usize> = HashMap::new();
        for (index, host) in self.allowed_hosts.iter().enumerate() {
            let host_field = format!("{field}.allowed_hosts[{index}]");
            if let Err(err) = validate_nqn(host) {
                return Err(
                    errors.invalid(host_field, format!("{host:?} is not a valid NQN: {err}"))
                );
            }
            if let Some(first) = hosts.insert(host, index) {
                return Err(errors.invalid(
                    host_field,
                    format!("{host:?} is already listed as allowed_hosts[{first}]"),
                ));
            }
        }

        if self.namespaces.is_empty() {
            return Err(errors.invalid(
                format!("{field}.namespace"),
                "at least one [[subsystem.namespace]] is required",
            ));
        }
        let mut nsids: HashMap<u32, usize> = HashMap::new();
        for (index, namespace) in self.namespaces.iter().enumerate() {
            let ns_field = format!("{field}.namespace[{index}]");
            namespace.validate(&ns_field, errors)?;
            if let Some(first) = nsids.insert(namespace.nsid, index) {
                return Err(errors.invalid(
                    format!("{ns_field}.nsid"),
                    format!(
                        "nsid {} is already used by {field}.namespace[{first}]",
                        namespace.nsid
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl NamespaceConfig {
    fn validate(&self, field: &str, errors: &Errors<'_>) -> Result<(), ConfigFileError> {
        if !(1..=MAX_NSID).contains(&self.nsid) {
            return Err(errors.invalid(
                format!("{field}.nsid"),
                format!("{} is out of range 1..={MAX_NSID}", self.nsid),
            ));
        }
        if let Backend::Path(path) = &self.backend {
            if path.as_os_str().is_empty() {
                return Err(errors.invalid(
                    format!("{field}.backend"),
                    "must be \"memory\" or the path of a file or block device",
                ));
            }
        }
        if !BLOCK_SIZES.contains(&self.block_size) {
            return Err(errors.invalid(
                format!("{field}.block_size"),
                format!("{} is not 512 or 4096", self.block_size),
            ));
        }
        match (self.size, &self.backend) {
            (None, Backend::Memory) => {
                return Err(
                    errors.invalid(format!("{field}.size"), "is required for a memory backend")
                );
            }
            (None, Backend::Path(_)) => {}
            (Some(0), _) => {
                return Err(errors.invalid(format!("{field}.size"), "must be greater than zero"));
            }
            (Some(size), backend) => {
                if !size.is_multiple_of(u64::from(self.block_size)) {
                    return Err(errors.invalid(
                        format!("{field}.size"),
                        format!(
                            "{size} bytes is not a multiple of block_size {}",
                            self.block_size
                        ),
                    ));
                }
                if *backend == Backend::Memory && size > MEMORY_MAX_SIZE {
                    return Err(errors.invalid(
                        format!("{field}.size"),
                        format!("{size} bytes is more than a memory backend's limit of 4 TiB"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks an Identify Controller ASCII field (serial or model number).
fn check_identify_string(text: &str, max_len: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if !text.bytes().all(|byte| (0x20..=0x7E).contains(&byte)) {
        return Err(format!("{text:?} may hold only printable ASCII"));
    }
    if text.len() > max_len {
        return Err(format!(
            "{text:?} is {} bytes long; the limit is {max_len}",
            text.len()
        ));
    }
    Ok(())
}

/// Parses a size in bytes: a plain number (`4096`), or a number followed by
/// `K`, `M`, `G` or `T` (powers of 1024) with an optional `iB` or `B`
/// (`512M`, `4GiB`, `1TB`). The unit is case-insensitive and may be separated
/// from the number by spaces; a lone `B` means bytes. Zero is refused.
///
/// Shared by `size` in keel.toml and the `--size` flag.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(digits);
    let shift = match unit.trim_start().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(not_a_size(text)),
    };
    if number.is_empty() {
        return Err(not_a_size(text));
    }
    let too_large = || format!("{text:?} is too large: the limit is 2^64 - 1 bytes");
    let bytes = number
        .parse::<u64>()
        .map_err(|_| too_large())?
        .checked_mul(1u64 << shift)
        .ok_or_else(too_large)?;
    if bytes == 0 {
        return Err("size must be greater than zero".to_owned());
    }
    Ok(bytes)
}

fn not_a_size(text: &str) -> String {
    format!(
        "{text:?} is not a size: expected a number of bytes, optionally followed by \
         K, M, G or T (powers of 1024, optionally with \"iB\" or \"B\"), e.g. \"512M\" or \"4G\""
    )
}

/// Builds errors that name the file.
struct Errors<'a> {
    origin: &'a Path,
}

impl Errors<'_> {
    fn invalid(&self, field: impl Into<String>, message: impl Into<String>) -> ConfigFileError {
        ConfigFileError::Invalid {
            origin: self.origin.to_owned(),
            field: field.into(),
            message: message.into(),
            location: None,
        }
    }

    fn required(&self, field: String, example: &str) -> ConfigFileError {
        self.invalid(field, format!("is required (e.g. {example})"))
    }
}

// ---------------------------------------------------------------------------
// The file as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cores: Option<i64>,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    subsystem: Vec<RawSubsystem>,
    replication: Option<RawReplication>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    node_id: Option<i64>,
    #[serde(default)]
    members: Vec<String>,
    primary: Option<i64>,
    replica_listen: Option<String>,
    write_quorum: Option<i64>,
    psk_file: Option<String>,
    volume_id: Option<i64>,
    fresh: Option<String>,
    /// An integer (bytes) or a string for [`parse_size`].
    async_max_lag_bytes: Option<toml::Value>,
    async_max_lag_ms: Option<i64>,
    link_timeout_ms: Option<i64>,
    read_lease: Option<bool>,
    resync_rate_mib: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubsystem {
    nqn: Option<String>,
    serial: Option<String>,
    model: Option<String>,
    #[serde(default)]
    allowed_hosts: Vec<String>,
    #[serde(default)]
    namespace: Vec<RawNamespace>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    nsid: Option<i64>,
    backend: Option<String>,
    /// An integer (bytes) or a string for [`parse_size`].
    size: Option<toml::Value>,
    block_size: Option<i64>,
}

impl RawConfig {
    fn into_config(self, errors: &Errors<'_>) -> Result<DaemonConfig, ConfigFileError> {
        let cores = match self.cores {
            None => DEFAULT_CORES,
            Some(cores) => usize::try_from(cores).map_err(|_| {
                errors.invalid("cores", format!("{cores} is out of range 1..={MAX_CORES}"))
            })?,
        };
        let listeners = self
            .listener
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.into_config(&format!("listener[{index}]"), errors))
            .collect::<Result<_, _>>()?;
        let subsystems = self
            .subsystem
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.into_config(&format!("subsystem[{index}]"), errors))
            .collect::<Result<_, _>>()?;
        let replication = self
            .replication
            .map(|raw| raw.into_config(errors))
            .transpose()?;
        Ok(DaemonConfig {
            cores,
            listeners,
            subsystems,
            replication,
        })
    }
}

impl RawReplication {
    fn into_config(self, errors: &Errors<'_>) -> Result<ReplicationConfig, ConfigFileError> {
        let field = |key: &str| format!("replication.{key}");
        let id = |key: &str, value: Option<i64>, example: &str| match value {
            None => Err(errors.required(field(key), example)),
            Some(id) => u64::try_from(id)
                .map_err(|_| errors.invalid(field(key), format!("{id} is negative"))),
        };
        let node = NodeId(id("node_id", self.node_id, "node_id = 1")?);
        let primary = NodeId(id("primary", self.primary, "primary = 1")?);
        if self.members.is_empty() {
            return Err(errors.required(
                field("members"),
                "members = [\"1@10.0.0.1:4421\", \"2@10.0.0.2:4421\", \"3@10.0.0.3:4421:async\"]",
            ));
        }
        let members = self
            .members
            .iter()
            .enumerate()
            .map(|(index, text)| {
                parse_member(text)
                    .map_err(|e| errors.invalid(format!("replication.members[{index}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let Some(listen) = self.replica_listen else {
            return Err(errors.required(
                field("replica_listen"),
                "replica_listen = \"10.0.0.1:4421\"",
            ));
        };
        let listen = listen.trim().parse::<SocketAddr>().map_err(|_| {
            errors.invalid(
                field("replica_listen"),
                format!("{listen:?} is not an IP address and port, e.g. \"10.0.0.1:4421\""),
            )
        })?;
        let Some(write_quorum) = self.write_quorum else {
            return Err(errors.required(field("write_quorum"), "write_quorum = 2"));
        };
        let write_quorum = u8::try_from(write_quorum).map_err(|_| {
            errors.invalid(
                field("write_quorum"),
                format!("{write_quorum} must be between 1 and the number of sync copies"),
            )
        })?;
        let Some(psk_file) = self.psk_file else {
            return Err(errors.required(field("psk_file"), "psk_file = \"/etc/keel/vol0.psk\""));
        };
        if psk_file.is_empty() {
            return Err(errors.invalid(field("psk_file"), "must be the path of a file"));
        }
        let volume = match self.volume_id {
            None => VolumeId(1),
            Some(v) => VolumeId(
                u64::try_from(v)
                    .map_err(|_| errors.invalid(field("volume_id"), format!("{v} is negative")))?,
            ),
        };
        let fresh = match self.fresh.as_deref() {
            None => FreshCopy::Refuse,
            Some("bootstrap") => FreshCopy::Bootstrap,
            Some("new_copy") => FreshCopy::Blank,
            Some(other) => {
                return Err(errors.invalid(
                    field("fresh"),
                    format!("{other:?} is not \"bootstrap\" or \"new_copy\""),
                ))
            }
        };
        let mut async_lag = AsyncLagBound::default();
        if let Some(value) = self.async_max_lag_bytes {
            async_lag.bytes = size_value(&value)
                .map_err(|message| errors.invalid(field("async_max_lag_bytes"), message))?;
        }
        if let Some(ms) = self.async_max_lag_ms {
            let ms = u64::try_from(ms).map_err(|_| {
                errors.invalid(field("async_max_lag_ms"), format!("{ms} is negative"))
            })?;
            async_lag.time = std::time::Duration::from_millis(ms);
        }
        let link_timeout = match self.link_timeout_ms {
            None => super::replication::DEFAULT_LINK_TIMEOUT,
            Some(ms) => std::time::Duration::from_millis(u64::try_from(ms).map_err(|_| {
                errors.invalid(field("link_timeout_ms"), format!("{ms} is negative"))
            })?),
        };
        let resync_rate = match self.resync_rate_mib {
            None => None,
            Some(mib) => Some(
                u64::try_from(mib)
                    .ok()
                    .filter(|mib| (1..=super::replication::MAX_RESYNC_RATE_MIB).contains(mib))
                    .map(|mib| mib << 20)
                    .ok_or_else(|| {
                        errors.invalid(
                            field("resync_rate_mib"),
                            format!(
                                "{mib} is outside 1..={} (MiB/s)",
                                super::replication::MAX_RESYNC_RATE_MIB
                            ),
                        )
                    })?,
            ),
        };
        Ok(ReplicationConfig {
            node,
            members,
            primary,
            listen,
            write_quorum,
            psk_file: PathBuf::from(psk_file),
            volume,
            fresh,
            async_lag,
            link_timeout,
            read_lease: self.read_lease.unwrap_or(false),
            resync_rate,
        })
    }
}

impl RawListener {
    fn into_config(
        self,
        field: &str,
        errors: &Errors<'_>,
    ) -> Result<ListenerConfig, ConfigFileError> {
        let field = format!("{field}.listen");
        let Some(listen) = self.listen else {
            return Err(errors.required(field, "listen = \"127.0.0.1:4420\""));
        };
        let addr = listen.trim().parse::<SocketAddr>().map_err(|_| {
            errors.invalid(
                field,
                format!(
                    "{listen:?} is not an IP address and port, e.g. \"127.0.0.1:4420\", \
                     \"0.0.0.0:4420\" or \"[::1]:4420\" (host names are not resolved)"
                ),
            )
        })?;
        Ok(ListenerConfig { addr })
    }
}

impl RawSubsystem {
    fn into_config(
        self,
        field: &str,
        errors: &Errors<'_>,
    ) -> Result<SubsystemConfig, ConfigFileError> {
        let Some(nqn) = self.nqn else {
            return Err(
                errors.required(format!("{field}.nqn"), "nqn = \"nqn.2026-11.io.keel:vol0\"")
            );
        };
        let namespaces = self
            .namespace
            .into_iter()
            .enumerate()
            .map(|(index, raw)| raw.into_config(&format!("{field}.namespace[{index}]"), errors))
            .collect::<Result<_, _>>()?;
        Ok(SubsystemConfig {
            nqn,
            serial: self.serial,
            model: self.model,
            allowed_hosts: self.allowed_hosts,
            namespaces,
        })
    }
}

impl RawNamespace {
    fn into_config(
        self,
        field: &str,
        errors: &Errors<'_>,
    ) -> Result<NamespaceConfig, ConfigFileError> {
        let Some(nsid) = self.nsid else {
            return Err(errors.required(format!("{field}.nsid"), "nsid = 1"));
        };
        let nsid = u32::try_from(nsid).map_err(|_| {
            errors.invalid(
                format!("{field}.nsid"),
                format!("{nsid} is out of range 1..={MAX_NSID}"),
            )
        })?;
        let backend = match self.backend.as_deref() {
            None => {
                return Err(errors.required(
                    format!("{field}.backend"),
                    "backend = \"memory\" or backend = \"/var/lib/keel/vol0.img\"",
                ))
            }
            Some("memory") => Backend::Memory,
            Some(path) => Backend::Path(PathBuf::from(path)),
        };
        let block_size = match self.block_size {
            None => DEFAULT_BLOCK_SIZE,
            Some(block_size) => u32::try_from(block_size).map_err(|_| {
                errors.invalid(
                    format!("{field}.block_size"),
                    format!("{block_size} is not 512 or 4096"),
                )
            })?,
        };
        let size = match self.size {
            None => None,
            Some(value) => Some(
                size_value(&value)
                    .map_err(|message| errors.invalid(format!("{field}.size"), message))?,
            ),
        };
        Ok(NamespaceConfig {
            nsid,
            backend,
            size,
            block_size,
        })
    }
}

/// `size` is either an integer number of bytes or a string for
/// [`parse_size`]. Zero passes here and is refused by validation.
fn size_value(value: &toml::Value) -> Result<u64, String> {
    match value {
        toml::Value::Integer(bytes) => {
            u64::try_from(*bytes).map_err(|_| format!("{bytes} is negative"))
        }
        toml::Value::String(text) => parse_size(text),
        other => Err(format!(
            "expected a number of bytes or a size string such as \"4G\", found a {}",
            other.type_str()
        )),
    }
}

// ---------------------------------------------------------------------------
// toml's errors, with a field path.

/// Turns an error of `toml::from_str` into a [`ConfigFileError`]: a syntax
/// error keeps toml's message with its line and column; a schema error
/// (unknown field, wrong type) also gets the path of the field at its span.
fn toml_error(text: &str, origin: &Path, err: &toml::de::Error) -> ConfigFileError {
    let location = err.span().map(|span| line_column(text, span.start));
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(syntax) => {
            let (line, column) = syntax
                .span()
                .map(|span| line_column(text, span.start))
                .or(location)
                .unwrap_or((1, 1));
            return ConfigFileError::Syntax {
                origin: origin.to_owned(),
                line,
                column,
                message: syntax.message().to_owned(),
            };
        }
    };
    let mut field = String::new();
    let found = match err.span() {
        Some(span) => find_in_table(document.get_ref(), &span, &mut field),
        None => false,
    };
    if !found {
        field = "(top level)".to_owned();
    }
    ConfigFileError::Invalid {
        origin: origin.to_owned(),
        field,
        // The raw structs read integers as i64; say what the user wrote.
        message: err.message().replace("expected i64", "expected an integer"),
        location,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Appends to `path` the path of the innermost key or value of `table` whose
/// span holds `target`; false (and `path` unchanged) if there is none.
fn find_in_table(table: &DeTable<'_>, target: &Range<usize>, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let mark = path.len();
        push_key(path, key.get_ref());
        if find_in_value(value, target, path) || holds(&key.span(), target) {
            return true;
        }
        path.truncate(mark);
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, target: &Range<usize>, path: &mut String) -> bool {
    let inside = match value.get_ref() {
        DeValue::Table(table) => find_in_table(table, target, path),
        DeValue::Array(items) => items.iter().enumerate().any(|(index, item)| {
            let mark = path.len();
            path.push_str(&format!("[{index}]"));
            let found = find_in_value(item, target, path);
            if !found {
                path.truncate(mark);
            }
            found
        }),
        _ => false,
    };
    inside || holds(&value.span(), target)
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start < outer.end && outer.start <= inner.start && inner.end <= outer.end
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/keel.example.toml");

    const MINIMAL: &str = r#"
[[listener]]
listen = "127.0.0.1:4420"

[[subsystem]]
nqn = "nqn.2026-11.io.keel:vol0"

[[subsystem.namespace]]
nsid = 1
backend = "memory"
size = "64M"
"#;

    fn parse(text: &str) -> Result<DaemonConfig, ConfigFileError> {
        DaemonConfig::from_toml_str(text, Path::new("/etc/keel.toml"))
    }

    /// Parses `text`, expects an error about `field`, and returns its message.
    fn error_about(text: &str, field: &str) -> String {
        let err = match parse(text) {
            Ok(config) => panic!("expected an error about {field}, got {config:?}"),
            Err(err) => err,
        };
        let message = err.to_string();
        assert_eq!(err.field(), Some(field), "{message}");
        assert!(
            message.starts_with(&format!("/etc/keel.toml: {field}: ")),
            "{message}"
        );
        message
    }

    #[test]
    fn example_file_parses() {
        let config = DaemonConfig::from_toml_str(EXAMPLE, Path::new("docs/keel.example.toml"))
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.cores, 2);
        assert_eq!(
            config.listeners,
            vec![
                ListenerConfig {
                    addr: "127.0.0.1:4420".parse().unwrap()
                },
                ListenerConfig {
                    addr: "[::1]:4420".parse().unwrap()
                },
            ]
        );
        assert_eq!(config.subsystems.len(), 2);
        let vol0 = &config.subsystems[0];
        assert_eq!(vol0.nqn, "nqn.2026-11.io.keel:vol0");
        assert_eq!(vol0.serial.as_deref(), Some("KEEL0001"));
        assert_eq!(vol0.model.as_deref(), Some("Keel volume"));
        assert_eq!(
            vol0.allowed_hosts,
            vec!["nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"]
        );
        assert_eq!(
            vol0.namespaces,
            vec![
                NamespaceConfig {
                    nsid: 1,
                    backend: Backend::Path("/var/lib/keel/vol0.img".into()),
                    size: Some(4 << 30),
                    block_size: 512,
                },
                NamespaceConfig {
                    nsid: 2,
                    backend: Backend::Path("/dev/nvme1n1".into()),
                    size: None,
                    block_size: 4096,
                },
            ]
        );
        let scratch = &config.subsystems[1];
        assert_eq!(scratch.nqn, "nqn.2026-11.io.keel:scratch");
        assert_eq!(scratch.serial, None);
        assert_eq!(scratch.model, None);
        assert!(scratch.allowed_hosts.is_empty());
        assert_eq!(
            scratch.namespaces,
            vec![NamespaceConfig {
                nsid: 1,
                backend: Backend::Memory,
                size: Some(1 << 30),
                block_size: 512,
            }]
        );
    }

    #[test]
    fn minimal_file_takes_the_defaults() {
        let config = parse(MINIMAL).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(config.cores, DEFAULT_CORES);
        let namespace = &config.subsystems[0].namespaces[0];
        assert_eq!(namespace.block_size, DEFAULT_BLOCK_SIZE);
        assert_eq!(namespace.size, Some(64 << 20));
        assert_eq!(namespace.backend.to_string(), "memory");
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = std::env::temp_dir().join(format!("keel-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, MINIMAL).unwrap();
        assert_eq!(DaemonConfig::load(&good).unwrap(), parse(MINIMAL).unwrap());

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, MINIMAL.replace("nsid = 1", "nsid = 0")).unwrap();
        let message = DaemonConfig::load(&bad).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "{}: subsystem[0].namespace[0].nsid: 0 is out of range 1..=1024",
                bad.display()
            )
        );

        let missing = dir.join("missing.toml");
        let err = DaemonConfig::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigFileError::Read { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with(&format!("{}: cannot read: ", missing.display())));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_error_gives_line_and_column() {
        let err = parse("cores = 2\n[[subsystem]\n").unwrap_err();
        match &err {
            ConfigFileError::Syntax { line, column, .. } => assert_eq!((*line, *column), (2, 13)),
            other => panic!("not a syntax error: {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.starts_with("/etc/keel.toml: TOML parse error at line 2, column 13: "),
            "{message}"
        );
    }

    /// One namespace on a file: what replication needs.
    const REPLICATED: &str = r#"
[[listener]]
listen = "127.0.0.1:4420"

[[subsystem]]
nqn = "nqn.2026-11.io.keel:vol0"

[[subsystem.namespace]]
nsid = 1
backend = "/var/lib/keel/vol0.img"
size = "64M"

[replication]
node_id = 1
members = ["1@10.0.0.1:4421", "2@10.0.0.2:4421", "3@10.0.0.3:4421:async"]
primary = 1
replica_listen = "10.0.0.1:4421"
write_quorum = 2
psk_file = "/etc/keel/vol0.psk"
"#;

    /// The example's commented-out `[replication]` table, uncommented.
    fn example_replication_table() -> String {
        let at = EXAMPLE
            .find("#[replication]")
            .expect("a [replication] table in the example");
        EXAMPLE[at..]
            .lines()
            .map(|line| line.strip_prefix('#').unwrap_or(line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_example_replication_table_parses() {
        let minimal = REPLICATED
            .split("[replication]")
            .next()
            .expect("the file part");
        let text = format!("{minimal}\n{}", example_replication_table());
        let config = parse(&text).unwrap_or_else(|err| panic!("{err}\n{text}"));
        let replication = config.replication.expect("[replication]");
        assert_eq!(replication.node, NodeId(1));
        assert_eq!(replication.members.len(), 3);
        assert_eq!(
            replication.members[2].mode,
            keel_replicator::wire::ReplicationMode::Async
        );
        assert_eq!(replication.primary, NodeId(1));
        assert_eq!(replication.write_quorum, 2);
        assert_eq!(replication.volume, VolumeId(1));
        assert_eq!(replication.fresh, FreshCopy::Bootstrap);
        assert_eq!(replication.async_lag.bytes, 64 << 20);
        assert_eq!(
            replication.async_lag.time,
            std::time::Duration::from_millis(5000)
        );
        // The example proper has no replication.
        assert_eq!(parse(EXAMPLE).expect("example").replication, None);
    }

    #[test]
    fn replication_settings_are_checked_with_their_field() {
        let config = parse(REPLICATED).unwrap_or_else(|err| panic!("{err}"));
        let replication = config.replication.expect("[replication]");
        assert_eq!(replication.async_lag, AsyncLagBound::default());
        assert_eq!(replication.fresh, FreshCopy::Refuse);
        let with = |line: &str| format!("{REPLICATED}{line}\n");
        let message = error_about(
            &with("async_max_lag_bytes = \"1M\""),
            "replication.async_max_lag_bytes",
        );
        assert!(message.contains("resync"), "{message}");
        assert_eq!(
            parse(&with("async_max_lag_bytes = \"8M\""))
                .expect("8M")
                .replication
                .expect("replication")
                .async_lag
                .bytes,
            8 << 20
        );
        error_about(
            &with("async_max_lag_bytes = \"lots\""),
            "replication.async_max_lag_bytes",
        );
        let message = error_about(
            &with("async_max_lag_ms = 50"),
            "replication.async_max_lag_ms",
        );
        assert!(message.contains("between 100 and"), "{message}");
        error_about(
            &with("async_max_lag_ms = -1"),
            "replication.async_max_lag_ms",
        );
        error_about(
            &with("async_max_lag_ms = \"1s\""),
            "replication.async_max_lag_ms",
        );
        let message = error_about(
            &with("link_timeout_ms = 100"),
            "replication.link_timeout_ms",
        );
        assert!(message.contains("between 400 and"), "{message}");
        error_about(&with("link_timeout_ms = -5"), "replication.link_timeout_ms");
        let replication = parse(&with("link_timeout_ms = 1500"))
            .expect("1500")
            .replication
            .expect("replication");
        assert_eq!(
            replication.link_timeout,
            std::time::Duration::from_millis(1500)
        );
        for bad in [
            "resync_rate_mib = 0",
            "resync_rate_mib = -3",
            "resync_rate_mib = 1000001",
        ] {
            let message = error_about(&with(bad), "replication.resync_rate_mib");
            assert!(message.contains("MiB/s"), "{message}");
        }
        error_about(
            &with("resync_rate_mib = \"fast\""),
            "replication.resync_rate_mib",
        );
        let replication = parse(&with("resync_rate_mib = 200"))
            .expect("200")
            .replication
            .expect("replication");
        assert_eq!(replication.resync_rate, Some(200 << 20));
        error_about(&with("fresh = \"maybe\""), "replication.fresh");
        error_about(&with("colour = 1"), "replication.colour");
        let text = REPLICATED.replace("write_quorum = 2", "write_quorum = 3");
        let message = error_about(&text, "replication.write_quorum");
        assert!(
            message.contains("write_quorum 3 must be between 1 and the 2 sync copies"),
            "{message}"
        );
        let text = REPLICATED.replace("\"2@10.0.0.2:4421\"", "\"2@nowhere\"");
        error_about(&text, "replication.members[1]");
        let text = REPLICATED.replace("2@10.0.0.2:4421\"", "2@10.0.0.1:4421\"");
        let message = error_about(&text, "replication.members");
        assert!(message.contains("given twice"), "{message}");
        // A copy reached over RDMA: taken by a build with the feature, named
        // as the field at fault by one without.
        let text = REPLICATED.replace("\"2@10.0.0.2:4421\"", "\"2@rdma://10.0.0.2:4421\"");
        if cfg!(feature = "rdma") {
            parse(&text).unwrap_or_else(|err| panic!("{err}"));
        } else {
            let message = error_about(&text, "replication.members");
            assert!(message.contains("feature `rdma`"), "{message}");
        }
        let text = REPLICATED.replace("node_id = 1", "node_id = 9");
        error_about(&text, "replication.node_id");
        let text = REPLICATED.replace("primary = 1", "primary = 3");
        error_about(&text, "replication.primary");
        let text = REPLICATED.replace("psk_file = \"/etc/keel/vol0.psk\"\n", "");
        error_about(&text, "replication.psk_file");
        // What replication needs of the rest of the file.
        // Any number of cores: shard 0 owns the replicated volume.
        parse(&format!("cores = 2\n{REPLICATED}")).unwrap_or_else(|err| panic!("{err}"));
        let text = REPLICATED.replace(
            "backend = \"/var/lib/keel/vol0.img\"",
            "backend = \"memory\"",
        );
        error_about(&text, "subsystem[0].namespace[0].backend");
        let text = REPLICATED.replace(
            "[replication]",
            "[[subsystem.namespace]]\nnsid = 2\nbackend = \"/dev/null\"\n\n[replication]",
        );
        let message = error_about(&text, "replication");
        assert!(message.contains("exactly one namespace"), "{message}");
    }

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        let message = error_about(&format!("colors = 3\n{MINIMAL}"), "colors");
        assert!(message.contains("unknown field `colors`"), "{message}");
        assert!(message.ends_with("(line 1, column 1)"), "{message}");

        let text = MINIMAL.replace("nsid = 1", "nsid = 1\nbogus = true");
        let message = error_about(&text, "subsystem[0].namespace[0].bogus");
        assert!(message.contains("unknown field `bogus`"), "{message}");

        let text = MINIMAL.replace("listen =", "port = 4420\nlisten =");
        error_about(&text, "listener[0].port");

        let text = MINIMAL.replace("[[subsystem]]", "[[subsystem]]\nallowed_host = []");
        error_about(&text, "subsystem[0].allowed_host");
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        let text =
            format!("{MINIMAL}\n[[subsystem.namespace]]\nnsid = \"two\"\nbackend = \"memory\"\n");
        let message = error_about(&text, "subsystem[0].namespace[1].nsid");
        assert!(message.contains("invalid type"), "{message}");

        let message = error_about(&format!("cores = 1.5\n{MINIMAL}"), "cores");
        assert!(message.contains("invalid type"), "{message}");

        let text = MINIMAL.replace(
            "[[listener]]\nlisten = \"127.0.0.1:4420\"",
            "[listener]\nlisten = \"127.0.0.1:4420\"",
        );
        error_about(&text, "listener");

        let text = MINIMAL.replace("size = \"64M\"", "size = true");
        let message = error_about(&text, "subsystem[0].namespace[0].size");
        assert!(message.contains("found a boolean"), "{message}");
    }

    #[test]
    fn block_size_must_be_512_or_4096() {
        let text = format!(
            "{MINIMAL}\n[[subsystem.namespace]]\nnsid = 2\nbackend = \"memory\"\nsize = \"1M\"\nblock_size = 1000\n"
        );
        let message = error_about(&text, "subsystem[0].namespace[1].block_size");
        assert_eq!(
            message,
            "/etc/keel.toml: subsystem[0].namespace[1].block_size: 1000 is not 512 or 4096"
        );
        let text = MINIMAL.replace("nsid = 1", "nsid = 1\nblock_size = -512");
        error_about(&text, "subsystem[0].namespace[0].block_size");
        let text = MINIMAL.replace("nsid = 1", "nsid = 1\nblock_size = 4096");
        assert_eq!(
            parse(&text).unwrap().subsystems[0].namespaces[0].block_size,
            4096
        );
    }

    #[test]
    fn cores_out_of_range() {
        for cores in ["0", "1025", "-1", "99999999999999"] {
            let message = error_about(&format!("cores = {cores}\n{MINIMAL}"), "cores");
            assert!(message.contains("out of range 1..=1024"), "{message}");
        }
        assert_eq!(
            parse(&format!("cores = 1024\n{MINIMAL}")).unwrap().cores,
            1024
        );
    }

    #[test]
    fn listeners_are_required_valid_and_unique() {
        let without = MINIMAL.replace("[[listener]]\nlisten = \"127.0.0.1:4420\"", "");
        let message = error_about(&without, "listener");
        assert!(message.contains("at least one"), "{message}");

        let text = MINIMAL.replace("listen = \"127.0.0.1:4420\"", "");
        let message = error_about(&text, "listener[0].listen");
        assert!(message.contains("is required"), "{message}");

        let text = MINIMAL.replace("127.0.0.1:4420", "localhost:4420");
        let message = error_about(&text, "listener[0].listen");
        assert!(message.contains("not an IP address and port"), "{message}");

        let text = MINIMAL.replace("127.0.0.1:4420", "127.0.0.1");
        error_about(&text, "listener[0].listen");

        let text = format!("[[listener]]\nlisten = \"0.0.0.0:4420\"\n[[listener]]\nlisten = \"[::]:4420\"\n[[listener]]\nlisten = \"0.0.0.0:4420\"\n{MINIMAL}");
        let message = error_about(&text, "listener[2].listen");
        assert!(
            message.contains("0.0.0.0:4420 is already used by listener[0]"),
            "{message}"
        );
    }

    #[test]
    fn subsystems_are_required_and_nqns_valid_and_unique() {
        let message = error_about("[[listener]]\nlisten = \"127.0.0.1:4420\"\n", "subsystem");
        assert!(message.contains("at least one"), "{message}");

        let text = MINIMAL.replace("nqn = \"nqn.2026-11.io.keel:vol0\"", "");
        let message = error_about(&text, "subsystem[0].nqn");
        assert!(message.contains("is required"), "{message}");

        for bad in [
            "vol0",
            "",
            "nqn.26-11.io.keel:vol0",
            "nqn.2014-08.org.nvmexpress:uuid:not-a-uuid",
        ] {
            let text = MINIMAL.replace("nqn.2026-11.io.keel:vol0", bad);
            let message = error_about(&text, "subsystem[0].nqn");
            assert!(message.contains("is not a valid NQN"), "{message}");
        }
        let long = format!("nqn.2026-11.io.keel:{}", "x".repeat(210));
        let text = MINIMAL.replace("nqn.2026-11.io.keel:vol0", &long);
        let message = error_about(&text, "subsystem[0].nqn");
        assert!(message.contains("223"), "{message}");

        let text = MINIMAL.replace("nqn.2026-11.io.keel:vol0", DISCOVERY_NQN);
        let message = error_about(&text, "subsystem[0].nqn");
        assert!(message.contains("reserved"), "{message}");

        let uuid_form = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        let text = MINIMAL.replace("nqn.2026-11.io.keel:vol0", uuid_form);
        assert_eq!(parse(&text).unwrap().subsystems[0].nqn, uuid_form);

        let second = "\n[[subsystem]]\nnqn = \"nqn.2026-11.io.keel:vol0\"\n[[subsystem.namespace]]\nnsid = 1\nbackend = \"memory\"\nsize = 4096\n";
        let message = error_about(&format!("{MINIMAL}{second}"), "subsystem[1].nqn");
        assert!(
            message.contains("already used by subsystem[0]"),
            "{message}"
        );
    }

    #[test]
    fn serial_and_model_are_short_printable_ascii() {
        let with = |field: &str, value: &str| {
            MINIMAL.replace(
                "[[subsystem]]",
                &format!("[[subsystem]]\n{field} = {value:?}"),
            )
        };
        let message = error_about(&with("serial", &"1".repeat(21)), "subsystem[0].serial");
        assert!(message.contains("the limit is 20"), "{message}");
        let message = error_about(&with("model", &"m".repeat(41)), "subsystem[0].model");
        assert!(message.contains("the limit is 40"), "{message}");
        let message = error_about(&with("serial", "KEEL\u{e9}"), "subsystem[0].serial");
        assert!(message.contains("printable ASCII"), "{message}");
        let message = error_about(&with("model", "a\tb"), "subsystem[0].model");
        assert!(message.contains("printable ASCII"), "{message}");
        let message = error_about(&with("serial", ""), "subsystem[0].serial");
        assert!(message.contains("must not be empty"), "{message}");

        let config = parse(&with("serial", &"1".repeat(20))).unwrap();
        assert_eq!(
            config.subsystems[0].serial.as_deref(),
            Some("11111111111111111111")
        );
        let config = parse(&with("model", &"m".repeat(40))).unwrap();
        assert_eq!(
            config.subsystems[0].model.as_ref().map(String::len),
            Some(40)
        );
    }

    #[test]
    fn allowed_hosts_are_valid_unique_nqns() {
        let with = |hosts: &str| {
            MINIMAL.replace(
                "[[subsystem]]",
                &format!("[[subsystem]]\nallowed_hosts = {hosts}"),
            )
        };
        let host = "nqn.2014-08.org.nvmexpress:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        let message = error_about(
            &with(&format!("[{host:?}, \"host1\"]")),
            "subsystem[0].allowed_hosts[1]",
        );
        assert!(message.contains("is not a valid NQN"), "{message}");
        let message = error_about(
            &with(&format!("[{host:?}, {host:?}]")),
            "subsystem[0].allowed_hosts[1]",
        );
        assert!(
            message.contains("already listed as allowed_hosts[0]"),
            "{message}"
        );
        error_about(&with("[1]"), "subsystem[0].allowed_hosts[0]");
        let config = parse(&with(&format!("[{host:?}]"))).unwrap();
        assert_eq!(config.subsystems[0].allowed_hosts, vec![host]);
    }

    #[test]
    fn namespaces_are_required_and_nsids_valid_and_unique() {
        let without = MINIMAL
            .split("[[subsystem.namespace]]")
            .next()
            .unwrap_or_default()
            .to_owned();
        let message = error_about(&without, "subsystem[0].namespace");
        assert!(message.contains("at least one"), "{message}");

        for nsid in ["0", "1025", "-1", "4294967296"] {
            let text = MINIMAL.replace("nsid = 1", &format!("nsid = {nsid}"));
            let message = error_about(&text, "subsystem[0].namespace[0].nsid");
            assert!(message.contains("out of range 1..=1024"), "{message}");
        }

        let text = MINIMAL.replace("nsid = 1\n", "");
        let message = error_about(&text, "subsystem[0].namespace[0].nsid");
        assert!(message.contains("is required"), "{message}");

        let text = format!(
            "{MINIMAL}\n[[subsystem.namespace]]\nnsid = 1\nbackend = \"memory\"\nsize = \"1M\"\n"
        );
        let message = error_about(&text, "subsystem[0].namespace[1].nsid");
        assert!(
            message.contains("already used by subsystem[0].namespace[0]"),
            "{message}"
        );

        let text = format!("{MINIMAL}\n[[subsystem.namespace]]\nnsid = 1024\nbackend = \"memory\"\nsize = \"1M\"\n");
        assert_eq!(parse(&text).unwrap().subsystems[0].namespaces[1].nsid, 1024);
    }

    #[test]
    fn backends() {
        let text = MINIMAL.replace("backend = \"memory\"\n", "");
        let message = error_about(&text, "subsystem[0].namespace[0].backend");
        assert!(message.contains("is required"), "{message}");

        let text = MINIMAL.replace("backend = \"memory\"", "backend = \"\"");
        error_about(&text, "subsystem[0].namespace[0].backend");

        let text = MINIMAL
            .replace("backend = \"memory\"", "backend = \"./vol0.img\"")
            .replace("size = \"64M\"\n", "");
        let namespace = &parse(&text).unwrap().subsystems[0].namespaces[0];
        assert_eq!(namespace.backend, Backend::Path("./vol0.img".into()));
        assert_eq!(namespace.backend.to_string(), "./vol0.img");
        assert_eq!(namespace.size, None);
    }

    #[test]
    fn sizes() {
        let with = |size: &str| MINIMAL.replace("size = \"64M\"", &format!("size = {size}"));
        let field = "subsystem[0].namespace[0].size";

        let message = error_about(&MINIMAL.replace("size = \"64M\"\n", ""), field);
        assert!(
            message.contains("required for a memory backend"),
            "{message}"
        );
        for zero in ["0", "\"0\"", "\"0G\""] {
            let message = error_about(&with(zero), field);
            assert!(message.contains("greater than zero"), "{message}");
        }
        let message = error_about(&with("-4096"), field);
        assert!(message.contains("negative"), "{message}");
        let message = error_about(&with("1000"), field);
        assert!(
            message.contains("1000 bytes is not a multiple of block_size 512"),
            "{message}"
        );
        let text = with("\"6K\"").replace("nsid = 1", "nsid = 1\nblock_size = 4096");
        let message = error_about(&text, field);
        assert!(
            message.contains("not a multiple of block_size 4096"),
            "{message}"
        );
        let message = error_about(&with("\"4X\""), field);
        assert!(message.contains("is not a size"), "{message}");
        let message = error_about(&with("\"5T\""), field);
        assert!(message.contains("4 TiB"), "{message}");

        let bytes = |size: &str| parse(&with(size)).unwrap().subsystems[0].namespaces[0].size;
        assert_eq!(bytes("1048576"), Some(1 << 20));
        assert_eq!(bytes("\"512M\""), Some(512 << 20));
        assert_eq!(bytes("\"4GiB\""), Some(4 << 30));
        assert_eq!(bytes("\"4T\""), Some(4 << 40));
    }

    #[test]
    fn parse_size_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4K"), Ok(4 << 10));
        assert_eq!(parse_size("4KiB"), Ok(4 << 10));
        assert_eq!(parse_size("4KB"), Ok(4 << 10));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size(" 4 G "), Ok(4 << 30));
        assert_eq!(parse_size("4g"), Ok(4 << 30));
        assert_eq!(parse_size("4gib"), Ok(4 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("16777215T"), Ok(16_777_215 << 40));
        for bad in [
            "", "G", "4X", "1.5G", "-1", "4 G B", "4GiBs", "0x10", "4\u{e9}",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("is not a size"), "{bad:?}: {err}");
        }
        for huge in [
            "16777216T",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let err = parse_size(huge).unwrap_err();
            assert!(err.contains("too large"), "{huge:?}: {err}");
        }
        assert_eq!(
            parse_size("0"),
            Err("size must be greater than zero".to_owned())
        );
    }

    #[test]
    fn validate_checks_configs_built_in_code() {
        let mut config = parse(MINIMAL).unwrap();
        let origin = Path::new("command line");
        assert!(config.validate(origin).is_ok());
        config.subsystems[0].namespaces[0].block_size = 1024;
        let message = config.validate(origin).unwrap_err().to_string();
        assert_eq!(
            message,
            "command line: subsystem[0].namespace[0].block_size: 1024 is not 512 or 4096"
        );
        config.subsystems[0].namespaces[0].block_size = 512;
        config.cores = 0;
        assert_eq!(config.validate(origin).unwrap_err().field(), Some("cores"));
    }

    fn mutated_example() -> impl Strategy<Value = String> {
        (0..EXAMPLE.len(), 0usize..40, ".{0,40}").prop_map(|(start, len, insert)| {
            let mut start = start;
            while !EXAMPLE.is_char_boundary(start) {
                start -= 1;
            }
            let mut end = (start + len).min(EXAMPLE.len());
            while !EXAMPLE.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}{insert}{}", &EXAMPLE[..start], &EXAMPLE[end..])
        })
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn toml_like_text_never_panics(
            text in "([\\[\\]{}=,.\"' \n#a-z0-9_:-]|cores|listen|nqn|subsystem|namespace|size|nsid|backend|block_size){0,120}"
        ) {
            let _ = parse(&text);
        }

        #[test]
        fn mutated_example_never_panics(text in mutated_example()) {
            if let Err(err) = parse(&text) {
                let message = err.to_string();
                prop_assert!(message.starts_with("/etc/keel.toml: "), "{}", message);
            }
        }

        #[test]
        fn parse_size_never_panics(text in any::<String>()) {
            let _ = parse_size(&text);
        }

        #[test]
        fn parse_size_scales_by_powers_of_1024(number in 1u64..1_000_000, unit in 0usize..5) {
            let suffix = ["", "K", "M", "G", "T"][unit];
            prop_assert_eq!(
                parse_size(&format!("{number}{suffix}")),
                Ok(number << (10 * unit))
            );
        }
    }
}
