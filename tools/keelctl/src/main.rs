//! keelctl: talks to keeld's JSON-RPC control socket (see docs/rpc.md).
//!
//! `keelctl [--socket PATH] [--json] <command>`. Prints an aligned table,
//! or with `--json` the method's raw result. Exit status: 0 on success, 1
//! when keeld cannot be reached or answers an error, 2 for a usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use keel_target::daemon::config::parse_size;
use keel_target::daemon::replication::parse_address;
use keel_target::nvme::nqn::validate_nqn;
use keel_target::rpc::{ClientError, RpcClient};
use serde_json::{json, Map, Value};

/// Where keeld's control socket is unless `--socket` says otherwise.
const DEFAULT_SOCKET: &str = "/var/tmp/keeld.sock";

#[derive(Parser, Debug)]
#[command(
    name = "keelctl",
    version,
    about = "Control a running keeld over its JSON-RPC socket",
    after_help = "Exit status: 0 success, 1 keeld unreachable or the call failed, 2 usage error."
)]
struct Cli {
    /// keeld's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print the raw JSON result instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for keeld's answer.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Version, uptime, subsystems, controllers and listeners.
    Status,
    /// Namespaces (volumes).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Copies of the replicated volume (asked of its serving primary).
    #[command(subcommand)]
    Replica(ReplicaCommand),
    /// Write quorum of the replicated volume (asked of its serving
    /// primary).
    #[command(subcommand)]
    Quorum(QuorumCommand),
    /// Makes this keeld the primary of a volume.
    Promote {
        /// Subsystem NQN of the volume.
        #[arg(value_parser = nqn)]
        nqn: String,
    },
    /// Resynchronisation of replicas.
    #[command(subcommand)]
    Resync(ResyncCommand),
    /// NVMe subsystems and who may connect to them.
    #[command(subcommand)]
    Subsystem(SubsystemCommand),
    /// I/O counters per subsystem.
    Stats(Filter),
    /// Fault injection, on a keeld started with --fault-injection (for
    /// tests only).
    #[command(subcommand)]
    Fault(FaultCommand),
    /// Calls any method: `keelctl call METHOD ['{"param": ...}']`.
    Call {
        /// Method name (`rpc_get_methods` lists them).
        method: String,
        /// Parameters, as a JSON object.
        #[arg(value_parser = json_params)]
        params: Option<Value>,
    },
}

#[derive(Args, Debug)]
struct Filter {
    /// Only this subsystem.
    #[arg(long, value_parser = nqn)]
    nqn: Option<String>,
}

#[derive(Subcommand, Debug)]
enum VolumeCommand {
    /// Lists namespaces: NQN, NSID, block size, capacity.
    List(Filter),
    /// The replicated volume: role, epoch, quorum, and per replica its
    /// address, mode, state (in_sync, resyncing, out_of_date, connecting,
    /// down), resync progress, lag and epoch.
    Status(Filter),
    /// Starts a scrub pass on the serving primary: every region of its copy
    /// compared with each replica's; a replica found different gets the
    /// region copied again (progress in `volume status`).
    Scrub(Filter),
    /// Grows a namespace to SIZE (e.g. 20G; only growing).
    Resize {
        /// Subsystem NQN.
        #[arg(value_parser = nqn)]
        nqn: String,
        /// New capacity: bytes, or with K, M, G, T (powers of 1024).
        #[arg(value_parser = size)]
        size: u64,
        /// Namespace ID.
        #[arg(long, default_value_t = 1, value_parser = nsid)]
        nsid: u32,
    },
    /// Creates a namespace (not available in keeld yet).
    Create {
        /// Subsystem NQN.
        #[arg(value_parser = nqn)]
        nqn: String,
        /// Capacity: bytes, or with K, M, G, T.
        #[arg(long, value_parser = size)]
        size: u64,
        /// Namespace ID.
        #[arg(long, default_value_t = 1, value_parser = nsid)]
        nsid: u32,
        /// File or block device, or `memory`.
        #[arg(long, default_value = "memory")]
        backend: String,
        /// Logical block size.
        #[arg(long, default_value_t = 512)]
        block_size: u32,
    },
    /// Deletes a namespace (not available in keeld yet).
    Delete {
        /// Subsystem NQN.
        #[arg(value_parser = nqn)]
        nqn: String,
        /// Namespace ID.
        #[arg(long, default_value_t = 1, value_parser = nsid)]
        nsid: u32,
    },
}

#[derive(Subcommand, Debug)]
enum ReplicaCommand {
    /// Adds a copy: a keeld started on a new disk with --new-copy (its
    /// --member list naming the primary and itself). The primary gives it a
    /// full copy, then announces the new membership in a new epoch.
    Add {
        /// The new copy's node id.
        #[arg(long)]
        node: u64,
        /// Its replication address: [tcp://|rdma://]IP:PORT.
        #[arg(long, value_parser = address)]
        address: String,
        /// An async copy (never counts toward the write quorum); sync by
        /// default.
        #[arg(long = "async")]
        asynchronous: bool,
        /// Only if this is the replicated volume's NQN.
        #[arg(long, value_parser = nqn)]
        nqn: Option<String>,
    },
    /// Removes a copy (not the primary). It gets the new epoch, then its
    /// link closes: stop it afterwards; it cannot serve again.
    Remove {
        /// The copy's node id.
        #[arg(long)]
        node: u64,
        /// Only if this is the replicated volume's NQN.
        #[arg(long, value_parser = nqn)]
        nqn: Option<String>,
    },
    /// Makes a copy sync or async. Making a sync copy async lowers the
    /// write quorum by one in the same change; raise it again afterwards
    /// with `quorum set` if needed (a change of its own).
    Mode {
        /// The copy's node id.
        #[arg(long)]
        node: u64,
        /// sync or async.
        #[arg(long, value_parser = ["sync", "async"])]
        mode: String,
        /// Only if this is the replicated volume's NQN.
        #[arg(long, value_parser = nqn)]
        nqn: Option<String>,
    },
    /// Lists replicas and their state.
    List(Filter),
}

#[derive(Subcommand, Debug)]
enum QuorumCommand {
    /// Sets W: how many sync copies (the primary's included) hold a write
    /// before it completes; 1 to the sync copies.
    Set {
        /// Copies.
        #[arg(value_parser = clap::value_parser!(u8).range(1..=16))]
        write_quorum: u8,
        /// Only if this is the replicated volume's NQN.
        #[arg(long, value_parser = nqn)]
        nqn: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ResyncCommand {
    /// Progress of replicas catching up.
    Status(Filter),
}

#[derive(Subcommand, Debug)]
enum SubsystemCommand {
    /// Lists subsystems, their allowed hosts and controllers.
    List(Filter),
    /// Lets HOST connect to subsystem NQN. The first host added ends
    /// "any host may connect".
    AddHost {
        /// Subsystem NQN.
        #[arg(value_parser = nqn)]
        nqn: String,
        /// Host NQN.
        #[arg(value_parser = nqn)]
        host: String,
    },
    /// Stops HOST from connecting again (live connections stay).
    RemoveHost {
        /// Subsystem NQN.
        #[arg(value_parser = nqn)]
        nqn: String,
        /// Host NQN.
        #[arg(value_parser = nqn)]
        host: String,
    },
}

#[derive(Subcommand, Debug)]
enum FaultCommand {
    /// Fails or stalls a device's next operations of a kind (replacing its
    /// rule for the same kind).
    Inject(FaultInject),
    /// Marks a byte range of a device as media errors (latent sector
    /// errors): reads of it fail until a write covers it.
    MediaError {
        /// data (the namespaces) or record (the replication record).
        #[arg(long, default_value = "data", value_parser = ["data", "record"])]
        device: String,
        /// First byte (a multiple of 512).
        #[arg(long)]
        offset: u64,
        /// Bytes (a multiple of 512).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        length: u64,
    },
    /// Removes the rules of one device, or of every device.
    Clear {
        /// data (the namespaces) or record (the replication record).
        #[arg(long, value_parser = ["data", "record"])]
        device: Option<String>,
    },
    /// Lists the rules set, in the order they are tried.
    List,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("action").required(true).args(["fail", "stall_ms", "short"])))]
struct FaultInject {
    /// data (the namespaces) or record (the replication record).
    #[arg(long, default_value = "data", value_parser = ["data", "record"])]
    device: String,
    /// Operations the rule takes.
    #[arg(long, value_parser = ["read", "write", "flush", "write_zeroes", "discard", "any"])]
    op: String,
    /// Complete each at once with an error (EIO unless --errno).
    #[arg(long)]
    fail: bool,
    /// The errno of --fail (1..=4095).
    #[arg(long, conflicts_with = "stall_ms", value_parser = clap::value_parser!(u16).range(1..=4095))]
    errno: Option<u16>,
    /// Complete each with EIO only after MS milliseconds (1..=600000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=600_000))]
    stall_ms: Option<u64>,
    /// Let each read or write move only its first block, so it completes
    /// short (keeld submits the rest).
    #[arg(long, conflicts_with = "errno")]
    short: bool,
    /// Only the next N matching operations (default: all until cleared).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

fn nqn(text: &str) -> Result<String, String> {
    validate_nqn(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn address(text: &str) -> Result<String, String> {
    parse_address(text)?;
    Ok(text.to_owned())
}

fn size(text: &str) -> Result<u64, String> {
    parse_size(text)
}

fn nsid(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(nsid) if (1..u32::MAX).contains(&nsid) => Ok(nsid),
        _ => Err(format!("{text:?} is not a namespace ID (1..=4294967294)")),
    }
}

fn json_params(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err("params must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}

/// How a result is shown.
enum View {
    /// Key: value lines, with formatting of known keys; these keys first,
    /// in this order.
    Fields(&'static [&'static str]),
    /// A table with these (header, key) columns.
    Table(&'static [(&'static str, &'static str)]),
    /// One line, from the result.
    Line(fn(&Value) -> String),
}

const VOLUME_COLUMNS: &[(&str, &str)] = &[
    ("NQN", "nqn"),
    ("NSID", "nsid"),
    ("BLOCK", "block_size"),
    ("BLOCKS", "blocks"),
    ("SIZE", "bytes"),
    ("ANA", "ana_state"),
];
const SUBSYSTEM_COLUMNS: &[(&str, &str)] = &[
    ("NQN", "nqn"),
    ("NAMESPACES", "namespaces"),
    ("ALLOWED HOSTS", "allowed_hosts"),
    ("CONTROLLERS", "controllers"),
];
const STATS_COLUMNS: &[(&str, &str)] = &[
    ("NQN", "nqn"),
    ("READ", "bytes_read"),
    ("WRITTEN", "bytes_written"),
    ("READ CMDS", "read_commands"),
    ("WRITE CMDS", "write_commands"),
];
/// Columns the replicator methods are expected to return; unknown keys
/// show as "-" and `--json` shows everything.
const REPLICA_COLUMNS: &[(&str, &str)] = &[
    ("NQN", "nqn"),
    ("ADDRESS", "address"),
    ("ROLE", "role"),
    ("STATE", "state"),
    ("LAG", "lag_bytes"),
];
const VOLUME_STATUS_COLUMNS: &[(&str, &str)] = &[
    ("NODE", "node"),
    ("ADDRESS", "address"),
    ("MODE", "mode"),
    ("STATE", "state"),
    ("RESYNC %", "resync_percent"),
    ("LAG", "lag_bytes"),
    ("LAG MS", "lag_ms"),
    ("RTT US", "round_trip_us"),
    ("EPOCH", "epoch"),
    ("CHANGE", "change"),
];
const FAULT_COLUMNS: &[(&str, &str)] = &[
    ("DEVICE", "device"),
    ("OP", "op"),
    ("ACTION", "action"),
    ("ERRNO", "errno"),
    ("DELAY MS", "delay_ms"),
    ("LEFT", "count"),
    ("HITS", "hits"),
    ("OFFSET", "offset"),
    ("LENGTH", "length"),
];
const RESYNC_COLUMNS: &[(&str, &str)] = &[
    ("NQN", "nqn"),
    ("ADDRESS", "address"),
    ("STATE", "state"),
    ("DONE", "done_bytes"),
    ("TOTAL", "total_bytes"),
];

/// The method, its params and how to show its result.
fn request(command: Command) -> (String, Option<Value>, View) {
    let filter = |filter: Filter| filter.nqn.map(|nqn| json!({ "nqn": nqn }));
    let (method, params, view) = match command {
        Command::Status => (
            "status",
            None,
            View::Fields(&[
                "version",
                "uptime_secs",
                "subsystems",
                "namespaces",
                "controllers",
                "listeners",
            ]),
        ),
        Command::Volume(VolumeCommand::List(f)) => {
            ("volume_list", filter(f), View::Table(VOLUME_COLUMNS))
        }
        Command::Volume(VolumeCommand::Status(f)) => (
            "volume_status",
            filter(f),
            View::Line(|v| {
                let mut out = format!(
                    "{} node {} {} epoch {} quorum {} of {} sync copies, in sync {}, reconfiguring {}\n\
                     membership: {}\n",
                    text(&v["nqn"]),
                    text(&v["node"]),
                    text(&v["role"]),
                    text(&v["epoch"]),
                    text(&v["write_quorum"]),
                    text(&v["sync_copies"]),
                    cell("in_sync", &v["in_sync"]),
                    cell("reconfiguring", &v["reconfiguring"]),
                    membership(&v["membership"]),
                );
                if v["amnesiac"] == true {
                    out.push_str(
                        "AMNESIAC: this copy started after a crash or power loss of its machine and \
                         is not in sync yet; elections do not count on what it acknowledged\n",
                    );
                }
                if v["failed"] == true {
                    out.push_str(
                        "FAILED: a persist of this node's copy failed; it has stopped \
                         (restart keeld once the device is fixed)\n",
                    );
                }
                let scrub = &v["scrub"];
                if scrub.is_object() {
                    let now = match scrub["next_region"].as_u64() {
                        Some(region) => format!("running (next region {region})"),
                        None => "idle".to_owned(),
                    };
                    out.push_str(&format!(
                        "scrub: {now}, {} passes, {} regions checked, {} mismatches\n",
                        text(&scrub["passes"]),
                        text(&scrub["checked"]),
                        text(&scrub["mismatches"]),
                    ));
                }
                if v["pending_membership"].is_object() {
                    out.push_str(&format!(
                        "changing to: {}\n",
                        membership(&v["pending_membership"])
                    ));
                }
                let rows = v["replicas"].as_array().cloned().unwrap_or_default();
                out.push_str(&table(VOLUME_STATUS_COLUMNS, &rows));
                out.trim_end().to_owned()
            }),
        ),
        Command::Volume(VolumeCommand::Scrub(f)) => (
            "volume_scrub",
            filter(f),
            View::Line(|v| {
                if v["already_running"] == true {
                    "a scrub pass is already running".to_owned()
                } else {
                    format!("scrub started on node {}", text(&v["node"]))
                }
            }),
        ),
        Command::Volume(VolumeCommand::Resize { nqn, size, nsid }) => (
            "volume_resize",
            Some(json!({ "nqn": nqn, "nsid": nsid, "size": size })),
            View::Line(|v| {
                let verb = if v["changed"] == json!(false) {
                    "unchanged"
                } else {
                    "resized"
                };
                format!(
                    "{} namespace {} {verb}: {}",
                    text(&v["nqn"]),
                    text(&v["nsid"]),
                    cell("bytes", &v["bytes"])
                )
            }),
        ),
        Command::Volume(VolumeCommand::Create {
            nqn,
            size,
            nsid,
            backend,
            block_size,
        }) => (
            "volume_create",
            Some(json!({
                "nqn": nqn, "nsid": nsid, "size": size,
                "backend": backend, "block_size": block_size,
            })),
            View::Fields(&[]),
        ),
        Command::Volume(VolumeCommand::Delete { nqn, nsid }) => (
            "volume_delete",
            Some(json!({ "nqn": nqn, "nsid": nsid })),
            View::Fields(&[]),
        ),
        Command::Replica(ReplicaCommand::Add {
            node,
            address,
            asynchronous,
            nqn,
        }) => {
            let mode = if asynchronous { "async" } else { "sync" };
            let mut params = json!({ "node": node, "address": address, "mode": mode });
            with_nqn(&mut params, nqn);
            ("replica_add", Some(params), View::Line(change_line))
        }
        Command::Replica(ReplicaCommand::Remove { node, nqn }) => {
            let mut params = json!({ "node": node });
            with_nqn(&mut params, nqn);
            ("replica_remove", Some(params), View::Line(change_line))
        }
        Command::Replica(ReplicaCommand::Mode { node, mode, nqn }) => {
            let mut params = json!({ "node": node, "mode": mode });
            with_nqn(&mut params, nqn);
            ("replica_mode", Some(params), View::Line(change_line))
        }
        Command::Replica(ReplicaCommand::List(f)) => {
            ("replica_list", filter(f), View::Table(REPLICA_COLUMNS))
        }
        Command::Quorum(QuorumCommand::Set { write_quorum, nqn }) => {
            let mut params = json!({ "write_quorum": write_quorum });
            with_nqn(&mut params, nqn);
            ("quorum_set", Some(params), View::Line(change_line))
        }
        Command::Promote { nqn } => ("promote", Some(json!({ "nqn": nqn })), View::Fields(&[])),
        Command::Resync(ResyncCommand::Status(f)) => {
            ("resync_status", filter(f), View::Table(RESYNC_COLUMNS))
        }
        Command::Subsystem(SubsystemCommand::List(f)) => {
            ("subsystem_list", filter(f), View::Table(SUBSYSTEM_COLUMNS))
        }
        Command::Subsystem(SubsystemCommand::AddHost { nqn, host }) => (
            "subsystem_add_host",
            Some(json!({ "nqn": nqn, "host": host })),
            View::Line(|v| {
                let what = if v["added"] == json!(true) {
                    "may now connect to"
                } else {
                    "was already allowed on"
                };
                format!(
                    "{} {what} {}; allowed hosts: {}",
                    text(&v["host"]),
                    text(&v["nqn"]),
                    cell("allowed_hosts", &v["allowed_hosts"])
                )
            }),
        ),
        Command::Subsystem(SubsystemCommand::RemoveHost { nqn, host }) => (
            "subsystem_remove_host",
            Some(json!({ "nqn": nqn, "host": host })),
            View::Line(|v| {
                format!(
                    "{} may no longer connect to {} (live connections stay); allowed hosts: {}",
                    text(&v["host"]),
                    text(&v["nqn"]),
                    cell("allowed_hosts", &v["allowed_hosts"])
                )
            }),
        ),
        Command::Stats(f) => ("stats", filter(f), View::Table(STATS_COLUMNS)),
        Command::Fault(FaultCommand::Inject(inject)) => {
            let mut params = json!({ "device": inject.device, "op": inject.op });
            match inject.stall_ms {
                Some(ms) => {
                    params["action"] = json!("stall");
                    params["delay_ms"] = json!(ms);
                }
                None if inject.short => params["action"] = json!("short"),
                None => params["action"] = json!("fail"),
            }
            if let Some(errno) = inject.errno {
                params["errno"] = json!(errno);
            }
            if let Some(count) = inject.count {
                params["count"] = json!(count);
            }
            ("fault_inject", Some(params), View::Table(FAULT_COLUMNS))
        }
        Command::Fault(FaultCommand::MediaError {
            device,
            offset,
            length,
        }) => (
            "fault_media_error",
            Some(json!({ "device": device, "offset": offset, "length": length })),
            View::Table(FAULT_COLUMNS),
        ),
        Command::Fault(FaultCommand::Clear { device }) => (
            "fault_clear",
            device.map(|device| json!({ "device": device })),
            View::Line(|v| {
                let devices: Vec<String> = v["cleared"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .map(text)
                    .collect();
                format!("faults cleared on: {}", devices.join(", "))
            }),
        ),
        Command::Fault(FaultCommand::List) => ("fault_list", None, View::Table(FAULT_COLUMNS)),
        Command::Call { method, params } => return (method, params, View::Fields(&[])),
    };
    (method.to_owned(), params, view)
}

/// Adds `"nqn"` to `params` when given.
fn with_nqn(params: &mut Value, nqn: Option<String>) {
    if let Some(nqn) = nqn {
        params["nqn"] = json!(nqn);
    }
}

/// A membership change's answer: the epochs and the membership asked for.
fn change_line(v: &Value) -> String {
    format!(
        "membership change from epoch {} to {}: {}\n\
         it completes in the background (keelctl volume status shows reconfiguring until then)",
        text(&v["from_epoch"]),
        text(&v["to_epoch"]),
        membership(&v["membership"])
    )
}

/// `1 (primary, sync), 2 (sync), 3 (async); write quorum 2`.
fn membership(m: &Value) -> String {
    let primary = &m["primary"];
    let copies: Vec<String> = m["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let role = if &c["node"] == primary {
                "primary, "
            } else {
                ""
            };
            format!("{} ({role}{})", text(&c["node"]), text(&c["mode"]))
        })
        .collect();
    format!(
        "{}; write quorum {}",
        copies.join(", "),
        text(&m["write_quorum"])
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (method, params, view) = request(cli.command);
    let result = RpcClient::connect(&cli.socket).and_then(|mut client| {
        client.set_timeout(Some(Duration::from_secs(cli.timeout)))?;
        client.call(&method, params)
    });
    match result {
        Ok(result) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result).unwrap_or_default()
                );
            } else {
                print!("{}", render(&result, &view));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keelctl: {method}: {}", describe(&error));
            if let ClientError::Connect { .. } = error {
                eprintln!(
                    "keelctl: is keeld running with --rpc-socket {}?",
                    cli.socket.display()
                );
            }
            ExitCode::from(1)
        }
    }
}

fn describe(error: &ClientError) -> String {
    match error {
        ClientError::Rpc(e) => match &e.data {
            Some(data) => format!("{} (error {}; {data})", e.message, e.code),
            None => format!("{} (error {})", e.message, e.code),
        },
        other => other.to_string(),
    }
}

fn render(result: &Value, view: &View) -> String {
    match (view, result) {
        (View::Line(line), _) => format!("{}\n", line(result)),
        (View::Table(columns), Value::Array(rows)) => table(columns, rows),
        (View::Fields(first), Value::Object(fields)) => key_values(fields, first),
        (_, Value::Object(fields)) => key_values(fields, &[]),
        (_, Value::Array(rows)) if rows.iter().all(Value::is_object) && !rows.is_empty() => {
            generic_table(rows)
        }
        (_, other) => format!("{}\n", text(other)),
    }
}

/// `key  value` lines, keys aligned: `first` in its order, then the rest.
fn key_values(fields: &Map<String, Value>, first: &[&str]) -> String {
    let label = |key: &str| match key {
        "uptime_secs" => "uptime".to_owned(),
        other => other.replace('_', " "),
    };
    let keys = first
        .iter()
        .copied()
        .filter(|key| fields.contains_key(*key))
        .chain(
            fields
                .keys()
                .map(String::as_str)
                .filter(|key| !first.contains(key)),
        );
    let lines: Vec<(String, String)> = keys
        .map(|key| (label(key), cell(key, &fields[key])))
        .collect();
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(&format!("{key:<width$}  {value}\n"));
    }
    out
}

fn generic_table(rows: &[Value]) -> String {
    let keys: Vec<&str> = rows[0]
        .as_object()
        .map(|object| object.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let columns: Vec<(String, &str)> = keys.iter().map(|k| (k.to_uppercase(), *k)).collect();
    let columns: Vec<(&str, &str)> = columns.iter().map(|(h, k)| (h.as_str(), *k)).collect();
    table(&columns, rows)
}

/// An aligned table; the last column is not padded.
fn table(columns: &[(&str, &str)], rows: &[Value]) -> String {
    if rows.is_empty() {
        return "(none)\n".to_owned();
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|(_, key)| {
                    row.get(key)
                        .map_or_else(|| "-".to_owned(), |v| cell(key, v))
                })
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (header, _))| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let mut line = |fields: Vec<&str>| {
        let last = fields.len() - 1;
        for (i, field) in fields.iter().enumerate() {
            if i == last {
                out.push_str(field);
            } else {
                let pad = widths[i] - field.chars().count();
                out.push_str(field);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push('\n');
    };
    line(columns.iter().map(|(header, _)| *header).collect());
    for row in &cells {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// One value for a table cell, formatted by what its key means.
fn cell(key: &str, value: &Value) -> String {
    match (key, value) {
        (
            "bytes" | "bytes_read" | "bytes_written" | "done_bytes" | "total_bytes" | "lag_bytes",
            Value::Number(n),
        ) => n.as_u64().map_or_else(|| n.to_string(), human_bytes),
        ("uptime_secs", Value::Number(n)) => n.as_u64().map_or_else(|| n.to_string(), duration),
        ("allowed_hosts", Value::Array(hosts)) if hosts.is_empty() => "any".to_owned(),
        ("controllers", Value::Array(controllers)) => controllers.len().to_string(),
        ("listeners", Value::Array(listeners)) => {
            if listeners.is_empty() {
                return "none".to_owned();
            }
            listeners
                .iter()
                .map(|l| format!("{}:{}", text(&l["traddr"]), text(&l["trsvcid"])))
                .collect::<Vec<_>>()
                .join(", ")
        }
        (_, Value::Bool(true)) => "yes".to_owned(),
        (_, Value::Bool(false)) => "no".to_owned(),
        (_, Value::Array(items)) if items.iter().all(|v| !v.is_object() && !v.is_array()) => {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.iter().map(text).collect::<Vec<_>>().join(",")
            }
        }
        (_, other) => text(other),
    }
}

/// A JSON value as plain text (strings without quotes).
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(3661), "1h 1m 1s");
        assert_eq!(duration(90061), "1d 1h 1m");
        let rows = vec![
            json!({"nqn": "a", "nsid": 1}),
            json!({"nqn": "longer", "nsid": 22}),
        ];
        assert_eq!(
            table(&[("NQN", "nqn"), ("NSID", "nsid")], &rows),
            "NQN     NSID\na       1\nlonger  22\n"
        );
        assert_eq!(table(&[("NQN", "nqn")], &[]), "(none)\n");
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
