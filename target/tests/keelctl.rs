//! keeld's control socket as keelctl sees it, with the library client
//! (keelctl's own binary is tested in tools/keelctl/tests/cli.rs): the
//! socket's life (mode 0600, removed at SIGTERM, a stale one replaced, a
//! live one never taken over) and the raw protocol against the real
//! daemon (no framing, batches, malformed input).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use std::time::Duration;

use keel_target::rpc::{codes, ClientError, RpcClient};
use serde_json::{json, Value};

const NQN: &str = "nqn.2026-11.io.keel:ctl";

mod support;

use support::Keeld;

/// keeld with its control socket at `socket`; `Err` with its exit status if
/// it stopped before listening.
fn start(socket: &Path) -> Result<Keeld, std::process::ExitStatus> {
    let socket = socket.to_str().expect("utf-8 socket path");
    Keeld::spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--nqn",
        NQN,
        "--backend",
        "memory",
        "--size",
        "8M",
        "--no-pin",
        "--buffers",
        "64",
        "--rpc-socket",
        socket,
    ])
}

fn socket_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("keeld.sock")
}

#[test]
fn socket_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let keeld = start(&socket).expect("keeld starts");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    let mut client = RpcClient::connect(&socket).unwrap();
    assert_eq!(client.call("status", None).unwrap()["subsystems"], 1);

    // A second keeld does not take a live socket over: it refuses to start.
    let status = start(&socket).map(drop).expect_err("second keeld");
    assert!(!status.success());
    assert_eq!(client.call("status", None).unwrap()["subsystems"], 1);

    // SIGTERM: the socket goes, and a connected client is let go.
    assert!(keeld.terminate().success());
    assert!(!socket.exists(), "socket removed at exit");
    assert!(client.call("status", None).is_err());

    // A socket left by a keeld killed with SIGKILL is replaced.
    let keeld = start(&socket).expect("keeld starts");
    drop(keeld); // SIGKILL
    assert!(socket.exists(), "a killed keeld leaves its socket");
    let keeld = start(&socket).expect("keeld replaces a stale socket");
    let mut client = RpcClient::connect(&socket).unwrap();
    assert_eq!(client.call("volume_list", None).unwrap()[0]["nqn"], NQN);
    assert!(keeld.terminate().success());
}

#[test]
fn raw_protocol_against_keeld() {
    let dir = tempfile::tempdir().unwrap();
    let socket = socket_in(&dir);
    let _keeld = start(&socket).expect("keeld starts");

    // Requests back to back without framing, then a batch, on one stream.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let requests = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"status"}"#,
        r#"{"jsonrpc":"2.0","id":2,"method":"volume_list","params":{"nqn":"nqn.2026-11.io.keel:ctl"}}"#,
        r#"[{"jsonrpc":"2.0","id":3,"method":"stats"},{"jsonrpc":"2.0","id":4,"method":"promote","params":{"nqn":"nqn.2026-11.io.keel:ctl"}},"#,
        r#"{"jsonrpc":"2.0","method":"status"}]"#,
    );
    stream.write_all(requests.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut next = || {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    };
    let status = next();
    assert_eq!(status["id"], 1);
    assert_eq!(status["result"]["subsystems"], 1);
    let volumes = next();
    assert_eq!(volumes["result"][0]["bytes"], 8 << 20);
    let batch = next();
    let batch = batch.as_array().expect("a batch answer");
    assert_eq!(batch.len(), 2, "no answer for the notification");
    assert_eq!(batch[0]["result"][0]["nqn"], NQN);
    assert_eq!(batch[1]["error"]["code"], codes::NOT_AVAILABLE);

    // Garbage gets a parse error and the connection closes; keeld lives on.
    stream.write_all(b"{\"jsonrpc\": nope}").unwrap();
    let error = next();
    assert_eq!(error["error"]["code"], codes::PARSE_ERROR);
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);

    // More than 1 MiB in one request: -32600, not a crash.
    let mut big = UnixStream::connect(&socket).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut writer = big.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let request = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"status","params":{{"pad":"{}"}}}}"#,
            "x".repeat(2 << 20)
        );
        let _ = writer.write_all(request.as_bytes());
    });
    let mut line = String::new();
    BufReader::new(&mut big).read_line(&mut line).unwrap();
    let error: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(error["error"]["code"], codes::INVALID_REQUEST);
    sender.join().unwrap();

    // Typed errors through the client.
    let mut client = RpcClient::connect(&socket).unwrap();
    match client.call("volume_resize", Some(json!({"nqn": NQN, "nsid": 1}))) {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.code, codes::INVALID_PARAMS);
            assert!(e.message.contains("\"size\""), "{}", e.message);
        }
        other => panic!("expected -32602, got {other:?}"),
    }
    assert_eq!(client.call("status", None).unwrap()["controllers"], 0);
}
