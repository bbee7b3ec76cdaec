//! JSON-RPC 2.0 request handling, independent of the socket: one parsed
//! JSON value in (a request or a batch), the response out.

use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Map, Value};

use super::{RpcError, RpcService};

/// Batches larger than this are refused whole (-32600).
pub(crate) const MAX_BATCH: usize = 1024;

/// Answers one message: a request object or a batch (an array of them).
///
/// Returns the response to write: an object, an array for a batch, or
/// `None` when nothing is to be sent (a notification, or a batch of
/// notifications only). Never panics, whatever `message` holds or the
/// service does.
pub fn handle_message(service: &dyn RpcService, message: Value) -> Option<Value> {
    match message {
        Value::Array(batch) => {
            if batch.is_empty() {
                return Some(error_response(
                    Value::Null,
                    RpcError::invalid_request("empty batch"),
                ));
            }
            if batch.len() > MAX_BATCH {
                return Some(error_response(
                    Value::Null,
                    RpcError::invalid_request(format!(
                        "batch of {} requests; the limit is {MAX_BATCH}",
                        batch.len()
                    )),
                ));
            }
            let responses: Vec<Value> = batch
                .into_iter()
                .filter_map(|request| handle_request(service, request))
                .collect();
            if responses.is_empty() {
                None
            } else {
                Some(Value::Array(responses))
            }
        }
        request => handle_request(service, request),
    }
}

/// A response carrying `result`.
pub(crate) fn result_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// A response carrying `error`.
pub(crate) fn error_response(id: Value, error: RpcError) -> Value {
    let error = serde_json::to_value(&error)
        .unwrap_or_else(|_| json!({ "code": error.code, "message": error.message }));
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// A valid request, taken apart.
struct Request {
    /// `None`: a notification (no `id` member), answered with nothing.
    id: Option<Value>,
    method: String,
    params: Option<Value>,
}

fn handle_request(service: &dyn RpcService, request: Value) -> Option<Value> {
    let request = match parse_request(request) {
        Ok(request) => request,
        Err((id, error)) => return Some(error_response(id, error)),
    };
    let outcome = if request.method.starts_with("rpc.") {
        // Reserved by JSON-RPC 2.0 for the protocol's own extensions.
        Err(RpcError::method_not_found(&request.method))
    } else {
        let Request { method, params, .. } = &request;
        catch_unwind(AssertUnwindSafe(|| service.call(method, params.clone()))).unwrap_or_else(
            |panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".to_owned());
                tracing::error!(method = %request.method, %what, "RPC method panicked");
                Err(RpcError::internal(format!(
                    "method {:?} failed: {what}",
                    request.method
                )))
            },
        )
    };
    let id = request.id?;
    Some(match outcome {
        Ok(result) => result_response(id, result),
        Err(error) => error_response(id, error),
    })
}

/// Checks the request object. On error, returns the id to answer with
/// (the request's, when it has a valid one; else null).
fn parse_request(request: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut object) = request else {
        return Err((
            Value::Null,
            RpcError::invalid_request(format!(
                "expected a request object, got {}",
                type_name(&request)
            )),
        ));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(id),
        Some(other) => {
            return Err((
                Value::Null,
                RpcError::invalid_request(format!(
                    "\"id\" must be a string, a number or null, got {}",
                    type_name(&other)
                )),
            ))
        }
    };
    let fail = |error: RpcError| (id.clone().unwrap_or(Value::Null), error);
    match object.remove("jsonrpc") {
        Some(Value::String(version)) if version == "2.0" => {}
        _ => {
            return Err(fail(RpcError::invalid_request(
                "\"jsonrpc\" must be \"2.0\"",
            )))
        }
    }
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(other) => {
            return Err(fail(RpcError::invalid_request(format!(
                "\"method\" must be a string, got {}",
                type_name(&other)
            ))))
        }
        None => return Err(fail(RpcError::invalid_request("\"method\" is missing"))),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => None,
        Some(params @ (Value::Object(_) | Value::Array(_))) => Some(params),
        Some(other) => {
            return Err(fail(RpcError::invalid_request(format!(
                "\"params\" must be an object or an array, got {}",
                type_name(&other)
            ))))
        }
    };
    if let Some(member) = first_key(&object) {
        return Err(fail(RpcError::invalid_request(format!(
            "unexpected member {member:?}"
        ))));
    }
    Ok(Request { id, method, params })
}

fn first_key(object: &Map<String, Value>) -> Option<&str> {
    object.keys().next().map(String::as_str)
}

/// "an object", "a string"...: for error messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
