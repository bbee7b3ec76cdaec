//! Checking a method's parameters: an object of named members, each taken
//! once, with errors (-32602) that name the parameter.

use serde_json::{Map, Value};

use super::protocol::type_name;
use super::RpcError;
use crate::nvme::nqn::validate_nqn;

/// A method's named parameters. Take each one with the typed getters, then
/// call [`Params::finish`], which refuses any member nobody took (a typo in
/// a parameter name is an error, not a silently ignored option).
#[derive(Debug)]
pub struct Params {
    members: Map<String, Value>,
}

impl Params {
    /// Named parameters from a request's `params`: absent or null is no
    /// parameters; an array (positional parameters) is refused.
    pub fn new(params: Option<Value>) -> Result<Self, RpcError> {
        match params {
            None | Some(Value::Null) => Ok(Self {
                members: Map::new(),
            }),
            Some(Value::Object(members)) => Ok(Self { members }),
            Some(other) => Err(RpcError::invalid_params(format!(
                "params must be an object of named parameters, got {}",
                type_name(&other)
            ))),
        }
    }

    /// Refuses parameters that were given but not taken.
    pub fn finish(self) -> Result<(), RpcError> {
        let mut unknown = self.members.keys();
        match unknown.next() {
            None => Ok(()),
            Some(name) => Err(RpcError::invalid_params(format!(
                "unknown parameter {name:?}"
            ))),
        }
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        match self.members.remove(name) {
            None | Some(Value::Null) => None,
            Some(value) => Some(value),
        }
    }

    fn missing(name: &str) -> RpcError {
        RpcError::invalid_params(format!("parameter {name:?} is required"))
    }

    fn wrong_type(name: &str, expected: &str, got: &Value) -> RpcError {
        RpcError::invalid_params(format!(
            "parameter {name:?} must be {expected}, got {}",
            type_name(got)
        ))
    }

    /// An optional string.
    pub fn opt_str(&mut self, name: &str) -> Result<Option<String>, RpcError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => Err(Self::wrong_type(name, "a string", &other)),
        }
    }

    /// A required string.
    pub fn str(&mut self, name: &str) -> Result<String, RpcError> {
        self.opt_str(name)?.ok_or_else(|| Self::missing(name))
    }

    /// A required NQN (checked against the NVMe syntax).
    pub fn nqn(&mut self, name: &str) -> Result<String, RpcError> {
        let nqn = self.str(name)?;
        check_nqn(name, &nqn)?;
        Ok(nqn)
    }

    /// An optional NQN.
    pub fn opt_nqn(&mut self, name: &str) -> Result<Option<String>, RpcError> {
        let nqn = self.opt_str(name)?;
        if let Some(nqn) = &nqn {
            check_nqn(name, nqn)?;
        }
        Ok(nqn)
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(flag)),
            Some(other) => Err(Self::wrong_type(name, "a boolean", &other)),
        }
    }

    /// A required unsigned integer within `min..=max`.
    pub fn u64_in(&mut self, name: &str, min: u64, max: u64) -> Result<u64, RpcError> {
        self.opt_u64_in(name, min, max)?
            .ok_or_else(|| Self::missing(name))
    }

    /// An optional unsigned integer within `min..=max`.
    pub fn opt_u64_in(&mut self, name: &str, min: u64, max: u64) -> Result<Option<u64>, RpcError> {
        let Some(value) = self.take(name) else {
            return Ok(None);
        };
        let Some(number) = value.as_u64() else {
            return Err(match value {
                Value::Number(_) => RpcError::invalid_params(format!(
                    "parameter {name:?} must be an integer in {min}..={max}, got {value}"
                )),
                other => Self::wrong_type(name, "an integer", &other),
            });
        };
        if !(min..=max).contains(&number) {
            return Err(RpcError::invalid_params(format!(
                "parameter {name:?} must be in {min}..={max}, got {number}"
            )));
        }
        Ok(Some(number))
    }

    /// A required NSID: 1..=FFFFFFFEh.
    pub fn nsid(&mut self, name: &str) -> Result<u32, RpcError> {
        let nsid = self.u64_in(name, 1, u64::from(u32::MAX - 1))?;
        Ok(u32::try_from(nsid).unwrap_or(u32::MAX - 1))
    }

    /// A required size in bytes: an integer, or a string with an optional
    /// binary unit (`"10G"`, `"512M"`, `"4096"`; K, M, G, T are powers of
    /// 1024).
    pub fn size(&mut self, name: &str) -> Result<u64, RpcError> {
        let value = self.take(name).ok_or_else(|| Self::missing(name))?;
        let bytes = match &value {
            Value::Number(number) => number.as_u64().ok_or_else(|| {
                RpcError::invalid_params(format!(
                    "parameter {name:?} must be a non-negative integer number of bytes, got {number}"
                ))
            })?,
            Value::String(text) => crate::daemon::config::parse_size(text).map_err(|e| {
                RpcError::invalid_params(format!("parameter {name:?}: {e}"))
            })?,
            other => {
                return Err(Self::wrong_type(
                    name,
                    "a size (bytes, or a string like \"10G\")",
                    other,
                ))
            }
        };
        if bytes == 0 {
            return Err(RpcError::invalid_params(format!(
                "parameter {name:?} must not be zero"
            )));
        }
        Ok(bytes)
    }
}

fn check_nqn(name: &str, nqn: &str) -> Result<(), RpcError> {
    validate_nqn(nqn)
        .map_err(|e| RpcError::invalid_params(format!("parameter {name:?} ({nqn:?}): {e}")))
}
