//! A blocking JSON-RPC client for keeld's control socket.

use std::io::{self, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use super::RpcError;

/// How long [`RpcClient::call`] waits for an answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing failed (a timeout included).
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection without answering.
    #[error("keeld closed the control connection without answering")]
    Closed,
    /// The server answered something that is not a JSON-RPC response.
    #[error("bad response from keeld: {0}")]
    Protocol(String),
    /// The method failed: the server's error object.
    #[error("{0}")]
    Rpc(#[from] RpcError),
}

/// A connection to a JSON-RPC server on a Unix socket; one call at a time.
#[derive(Debug)]
pub struct RpcClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl RpcClient {
    /// Connects to the socket at `path`, with [`DEFAULT_TIMEOUT`].
    pub fn connect(path: &Path) -> Result<RpcClient, ClientError> {
        let connect_error = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(connect_error)?;
        let reader = stream.try_clone().map_err(connect_error)?;
        let mut client = RpcClient {
            reader: BufReader::new(reader),
            writer: stream,
            next_id: 1,
        };
        client.set_timeout(Some(DEFAULT_TIMEOUT))?;
        Ok(client)
    }

    /// How long a call may wait to send and to be answered (`None`: for
    /// ever).
    pub fn set_timeout(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.writer.set_read_timeout(timeout)?;
        self.writer.set_write_timeout(timeout)?;
        Ok(())
    }

    /// Calls `method` with `params` (`None`: no params member) and waits for
    /// its result.
    pub fn call(&mut self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if let Some(params) = params {
            request["params"] = params;
        }
        let bytes =
            serde_json::to_vec(&request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Err(error) = self.writer.write_all(&bytes) {
            // A server that turns a client away (busy) answers and closes
            // before reading: its answer says more than EPIPE does.
            return match self.read_value() {
                Ok(response) => parse_response(response, id),
                Err(_) => Err(ClientError::Io(error)),
            };
        }
        let response = self.read_value()?;
        parse_response(response, id)
    }

    /// Reads the next JSON value the server sends.
    fn read_value(&mut self) -> Result<Value, ClientError> {
        let mut de = serde_json::Deserializer::from_reader(&mut self.reader);
        match Value::deserialize(&mut de) {
            Ok(value) => Ok(value),
            Err(error) if error.is_eof() => Err(ClientError::Closed),
            Err(error) if error.is_io() => Err(ClientError::Io(io::Error::other(error))),
            Err(error) => Err(ClientError::Protocol(error.to_string())),
        }
    }
}

fn parse_response(response: Value, id: u64) -> Result<Value, ClientError> {
    let Value::Object(mut object) = response else {
        return Err(ClientError::Protocol(format!(
            "expected a response object, got {response}"
        )));
    };
    if let Some(error) = object.remove("error") {
        let error: RpcError = serde_json::from_value(error.clone())
            .map_err(|_| ClientError::Protocol(format!("malformed error object {error}")))?;
        // An error about the stream itself (id null) is for this call too:
        // the server closes after it.
        return Err(ClientError::Rpc(error));
    }
    match object.get("id") {
        Some(Value::Number(n)) if n.as_u64() == Some(id) => {}
        other => {
            return Err(ClientError::Protocol(format!(
                "response id {} does not match request id {id}",
                other.map_or_else(|| "missing".to_owned(), Value::to_string)
            )))
        }
    }
    object
        .remove("result")
        .ok_or_else(|| ClientError::Protocol("response has neither result nor error".into()))
}
