//! keeld's control plane: JSON-RPC 2.0 over a Unix stream socket.
//!
//! The convention is SPDK's: the client writes JSON objects (or batches,
//! arrays of them) one after another on the stream, with no framing, and the
//! server answers each request that has an `id` with one response object
//! (followed by a newline, so `socat` output stays readable). The server
//! parses the stream with serde_json's `StreamDeserializer`.
//!
//! - [`RpcServer`]: binds the socket (mode 0600), serves each client on a
//!   thread of its own (at most [`ServerOptions::max_clients`], requests of
//!   at most [`ServerOptions::max_request_bytes`]) and dispatches to an
//!   [`RpcService`]. A malformed request gets a JSON-RPC error
//!   ([`codes`]); nothing a client sends can stop the server.
//! - [`RpcClient`]: a blocking client, one request at a time (keelctl and
//!   the tests use it).
//! - [`Params`]: argument checking for services, with errors that name the
//!   parameter.
//!
//! The methods keeld serves are documented in `docs/rpc.md`.

mod client;
mod params;
mod protocol;
mod server;

#[cfg(test)]
mod tests;

pub use client::{ClientError, RpcClient, DEFAULT_TIMEOUT};
pub use params::Params;
pub use protocol::handle_message;
pub use server::{RpcServer, ServerOptions};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON-RPC 2.0 error codes, the standard ones and keeld's own (in the
/// -32000..=-32099 range the specification leaves to servers).
pub mod codes {
    /// Invalid JSON was received.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON sent is not a valid request object (or is too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method does not exist.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error (a bug: the method panicked).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The server is busy (too many clients).
    pub const BUSY: i64 = -32000;
    /// A subsystem, namespace or host named in the parameters does not
    /// exist.
    pub const NOT_FOUND: i64 = -32001;
    /// The target refused the change (a limit, a conflict with its state).
    pub const REFUSED: i64 = -32002;
    /// The method exists but cannot be served by this keeld (yet).
    pub const NOT_AVAILABLE: i64 = -32004;
}

/// A JSON-RPC error object: what a method answers instead of a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// One of [`codes`] (or another integer a server chose).
    pub code: i64,
    /// A one-line description for a human.
    pub message: String,
    /// Optional details, for a program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with `code` and `message` and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the stream is not valid JSON.
    pub fn parse_error(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::PARSE_ERROR, format!("parse error: {detail}"))
    }

    /// -32600: not a valid request object.
    pub fn invalid_request(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_REQUEST, format!("invalid request: {detail}"))
    }

    /// -32601: no such method.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(
            codes::METHOD_NOT_FOUND,
            format!("method not found: {method:?}"),
        )
    }

    /// -32602: a parameter is missing, of the wrong type or out of range.
    /// The message should name the parameter.
    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INVALID_PARAMS, format!("invalid params: {detail}"))
    }

    /// -32603: the server failed (a bug).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::INTERNAL_ERROR, format!("internal error: {detail}"))
    }

    /// -32001: something named in the parameters does not exist.
    pub fn not_found(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::NOT_FOUND, format!("not found: {detail}"))
    }

    /// -32002: the target refused the change.
    pub fn refused(detail: impl std::fmt::Display) -> Self {
        Self::new(codes::REFUSED, format!("refused: {detail}"))
    }

    /// -32004: the method cannot be served by this keeld; `why` says what
    /// is missing.
    pub fn not_available(why: impl std::fmt::Display) -> Self {
        Self::new(codes::NOT_AVAILABLE, format!("not available: {why}"))
    }
}

/// What keeld's control socket serves: one call per request.
///
/// Calls may come from several client threads at once.
pub trait RpcService: Send + Sync {
    /// Runs `method` with `params` (absent, or the request's `params`
    /// value: an object or an array). Unknown methods answer
    /// [`RpcError::method_not_found`].
    fn call(&self, method: &str, params: Option<Value>) -> Result<Value, RpcError>;
}
