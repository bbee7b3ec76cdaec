//! The server against a small test service, over a real socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

/// `echo` returns its params, `add` sums {a, b}, `boom` panics, `wait`
/// blocks until `release` is called (from another client).
struct TestService;

static RELEASED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static WAITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static RELEASE: std::sync::Condvar = std::sync::Condvar::new();

impl RpcService for TestService {
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError> {
        match method {
            "echo" => Ok(params.unwrap_or(Value::Null)),
            "add" => {
                let mut params = Params::new(params)?;
                let a = params.u64_in("a", 0, 1000)?;
                let b = params.u64_in("b", 0, 1000)?;
                params.finish()?;
                Ok(json!(a + b))
            }
            "boom" => panic!("kaboom"),
            "wait" => {
                let released = RELEASED.lock().unwrap();
                WAITING.store(true, std::sync::atomic::Ordering::SeqCst);
                let (released, _) = RELEASE
                    .wait_timeout_while(released, Duration::from_secs(5), |r| !*r)
                    .unwrap();
                Ok(json!(*released))
            }
            "release" => {
                *RELEASED.lock().unwrap() = true;
                RELEASE.notify_all();
                Ok(json!(true))
            }
            _ => Err(RpcError::method_not_found(method)),
        }
    }
}

fn server(dir: &Path, options: ServerOptions) -> RpcServer {
    RpcServer::start_with(&dir.join("rpc.sock"), Arc::new(TestService), options)
        .expect("start server")
}

/// Sends raw bytes, then reads `lines` newline-terminated responses.
fn raw(path: &Path, bytes: &[u8], lines: usize) -> Vec<Value> {
    let mut stream = UnixStream::connect(path).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).expect("write");
    let mut reader = BufReader::new(stream);
    (0..lines)
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).expect("read");
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
        })
        .collect()
}

fn code(response: &Value) -> i64 {
    response["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error in {response}"))
}

#[test]
fn calls_results_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), ServerOptions::default());
    let mut client = RpcClient::connect(server.path()).unwrap();
    assert_eq!(
        client.call("add", Some(json!({"a": 2, "b": 3}))).unwrap(),
        json!(5)
    );
    assert_eq!(client.call("echo", None).unwrap(), Value::Null);
    let err = |result: Result<Value, ClientError>| match result {
        Err(ClientError::Rpc(error)) => error,
        other => panic!("expected an RPC error, got {other:?}"),
    };
    let e = err(client.call("nope", None));
    assert_eq!(e.code, codes::METHOD_NOT_FOUND);
    let e = err(client.call("add", Some(json!({"a": 2}))));
    assert_eq!(e.code, codes::INVALID_PARAMS);
    assert!(e.message.contains("\"b\""), "{}", e.message);
    let e = err(client.call("add", Some(json!({"a": "x", "b": 1}))));
    assert!(e.message.contains("\"a\"") && e.message.contains("integer"));
    let e = err(client.call("add", Some(json!({"a": 1, "b": 1001}))));
    assert!(e.message.contains("0..=1000"), "{}", e.message);
    let e = err(client.call("add", Some(json!({"a": 1, "b": 1, "c": 1}))));
    assert!(
        e.message.contains("unknown parameter \"c\""),
        "{}",
        e.message
    );
    let e = err(client.call("add", Some(json!([1, 2]))));
    assert_eq!(e.code, codes::INVALID_PARAMS);
    let e = err(client.call("rpc.discover", None));
    assert_eq!(e.code, codes::METHOD_NOT_FOUND);
    // A panicking method is an internal error; the connection and the
    // server survive it.
    let e = err(client.call("boom", None));
    assert_eq!(e.code, codes::INTERNAL_ERROR);
    assert!(e.message.contains("kaboom"));
    assert_eq!(client.call("echo", Some(json!([1]))).unwrap(), json!([1]));
    server.stop();
}

#[test]
fn stream_without_framing_batches_and_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), ServerOptions::default());
    // Two requests back to back, a notification (no answer) between them,
    // split arbitrarily across writes.
    let mut stream = UnixStream::connect(server.path()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let text = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":2}}"#,
        r#"{"jsonrpc":"2.0","method":"echo"}"#,
        "  \n",
        r#"{"jsonrpc":"2.0","id":"two","method":"echo","params":{"x":1}}"#,
    );
    for chunk in text.as_bytes().chunks(7) {
        stream.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let first: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(first, json!({"jsonrpc":"2.0","id":1,"result":3}));
    line.clear();
    reader.read_line(&mut line).unwrap();
    let second: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(second, json!({"jsonrpc":"2.0","id":"two","result":{"x":1}}));

    // A batch: answers in order, none for the notification, errors inline.
    let batch = json!([
        {"jsonrpc":"2.0","id":1,"method":"add","params":{"a":1,"b":1}},
        {"jsonrpc":"2.0","method":"echo"},
        {"jsonrpc":"2.0","id":2,"method":"missing"},
        {"foo":"bar"},
        7
    ]);
    let responses = raw(server.path(), batch.to_string().as_bytes(), 1);
    let answers = responses[0].as_array().expect("batch answer");
    assert_eq!(answers.len(), 4);
    assert_eq!(answers[0]["result"], json!(2));
    assert_eq!(code(&answers[1]), codes::METHOD_NOT_FOUND);
    assert_eq!(answers[1]["id"], json!(2));
    assert_eq!(code(&answers[2]), codes::INVALID_REQUEST);
    assert_eq!(code(&answers[3]), codes::INVALID_REQUEST);
    // An empty batch is an invalid request.
    assert_eq!(
        code(&raw(server.path(), b"[]", 1)[0]),
        codes::INVALID_REQUEST
    );
    // A batch of notifications only gets nothing; the next request its
    // answer.
    let responses = raw(
        server.path(),
        br#"[{"jsonrpc":"2.0","method":"echo"}] {"jsonrpc":"2.0","id":9,"method":"echo"}"#,
        1,
    );
    assert_eq!(responses[0]["id"], json!(9));
    server.stop();
}

#[test]
fn malformed_requests_get_errors_and_the_server_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(dir.path(), ServerOptions::default());
    let path = server.path().to_owned();
    let cases: [(&[u8], i64); 9] = [
        (b"{not json", codes::PARSE_ERROR),
        (b"}", codes::PARSE_ERROR),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"echo""#,
            codes::PARSE_ERROR,
        ),
        (
            br#"{"jsonrpc":"1.0","id":1,"method":"echo"}"#,
            codes::INVALID_REQUEST,
        ),
        (br#"{"id":1,"method":"echo"}"#, codes::INVALID_REQUEST),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            codes::INVALID_REQUEST,
        ),
        (
            br#"{"jsonrpc":"2.0","id":[1],"method":"echo"}"#,
            codes::INVALID_REQUEST,
        ),
        (
            br#"{"jsonrpc":"2.0","id":1,"method":"echo","params":3}"#,
            codes::INVALID_REQUEST,
        ),
        (br#""just a string""#, codes::INVALID_REQUEST),
    ];
    for (bytes, expected) in cases {
        let mut stream = UnixStream::connect(&path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(bytes).unwrap();
        // Truncated JSON is only known at EOF.
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let answer: Value = serde_json::from_str(answer.lines().next().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(bytes)));
        assert_eq!(
            code(&answer),
            expected,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    // Invalid UTF-8 and binary garbage.
    let answer = raw(&path, b"\xff\xfe\x00garbage", 1);
    assert_eq!(code(&answer[0]), codes::PARSE_ERROR);
    // An invalid request with a valid id is answered with that id.
    let answer = raw(
        &path,
        br#"{"jsonrpc":"2.0","id":"x","method":"echo","extra":1}"#,
        1,
    );
    assert_eq!(answer[0]["id"], json!("x"));
    assert_eq!(code(&answer[0]), codes::INVALID_REQUEST);
    let mut client = RpcClient::connect(&path).unwrap();
    assert_eq!(
        client.call("echo", Some(json!({"ok": true}))).unwrap(),
        json!({"ok": true})
    );
    server.stop();
}

#[test]
fn request_size_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        max_request_bytes: 4096,
        ..ServerOptions::default()
    };
    let server = server(dir.path(), options);
    // Just under the limit passes.
    let mut client = RpcClient::connect(server.path()).unwrap();
    let fits = "x".repeat(3000);
    assert_eq!(
        client.call("echo", Some(json!([fits]))).unwrap(),
        json!([fits])
    );
    // Over it: -32600 and the connection is closed (the writer may see
    // EPIPE once the server hangs up, so write from a thread).
    let mut stream = UnixStream::connect(server.path()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"echo","params":["{}"]}}"#,
        "y".repeat(1 << 20)
    );
    let sender = std::thread::spawn(move || {
        let _ = writer.write_all(big.as_bytes());
    });
    let mut line = String::new();
    BufReader::new(&mut stream).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(code(&answer), codes::INVALID_REQUEST);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("4096"));
    sender.join().unwrap();
    // The limit is per request: many small ones on one connection pass.
    for _ in 0..10 {
        assert_eq!(
            client.call("echo", Some(json!([fits.clone()]))).unwrap(),
            json!([fits])
        );
    }
    server.stop();
}

#[test]
fn clients_are_bounded_and_served_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        max_clients: 2,
        ..ServerOptions::default()
    };
    let server = server(dir.path(), options);
    let mut a = RpcClient::connect(server.path()).unwrap();
    let mut b = RpcClient::connect(server.path()).unwrap();
    a.call("echo", None).unwrap();
    b.call("echo", None).unwrap();
    // The third is told the server is busy.
    let busy = raw(server.path(), b"", 1);
    assert_eq!(code(&busy[0]), codes::BUSY);
    // Once one leaves, a new client gets in.
    drop(a);
    let mut admitted = false;
    for _ in 0..100 {
        let mut c = RpcClient::connect(server.path()).unwrap();
        match c.call("echo", None) {
            Ok(_) => {
                admitted = true;
                break;
            }
            Err(ClientError::Rpc(e)) if e.code == codes::BUSY => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert!(admitted);
    // A call blocked on one client does not hold up another: `wait`
    // returns true only if `release` ran while it waited.
    drop(b);
    let path = server.path().to_owned();
    // Until the clients above are gone, a new one may be told "busy".
    let admitted = |path: &Path| loop {
        let mut client = RpcClient::connect(path).unwrap();
        match client.call("echo", None) {
            Ok(_) => break client,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let waiter = std::thread::spawn(move || admitted(&path).call("wait", None).unwrap());
    let mut releaser = admitted(server.path());
    while !WAITING.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(5));
    }
    releaser.call("release", None).unwrap();
    assert_eq!(waiter.join().unwrap(), json!(true));
    server.stop();
}

#[test]
fn idle_clients_are_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let options = ServerOptions {
        idle_timeout: Some(Duration::from_millis(100)),
        ..ServerOptions::default()
    };
    let server = server(dir.path(), options);
    let mut stream = UnixStream::connect(server.path()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    // EOF, not a timeout on our side.
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
    server.stop();
}

#[test]
fn socket_file_permissions_stale_sockets_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.sock");
    // A stale socket (nobody listening) is replaced.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = RpcServer::start(&path, Arc::new(TestService)).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // No staging directory is left behind.
    let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(entries.len(), 1);
    // A live socket is not taken over.
    let err = RpcServer::start(&path, Arc::new(TestService)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    // A client connected while stopping is disconnected.
    let mut client = RpcClient::connect(&path).unwrap();
    client.call("echo", None).unwrap();
    server.stop();
    assert!(!path.exists());
    assert!(client.call("echo", None).is_err());
    // A path that is not a socket is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let err = RpcServer::start(&path, Arc::new(TestService)).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn handle_message_without_a_socket() {
    let answer = handle_message(
        &TestService,
        json!({"jsonrpc":"2.0","id":null,"method":"add","params":{"a":1,"b":2}}),
    );
    assert_eq!(answer, Some(json!({"jsonrpc":"2.0","id":null,"result":3})));
    assert_eq!(
        handle_message(&TestService, json!({"jsonrpc":"2.0","method":"nope"})),
        None
    );
}
