//! Fault injection in keeld, for tests only (`--fault-injection`, off by
//! default): every backend keeld opens is wrapped in a
//! [`FaultBackend`], with one [`FaultPlan`] per device — `data` (the
//! namespaces' backends) and, on a replicating keeld, `record` (the
//! replication record file) — which the control socket changes with
//! `fault_inject`, `fault_media_error`, `fault_clear` and `fault_list`
//! (docs/rpc.md).

use std::sync::Arc;
use std::time::Duration;

use keel_engine::backend::{
    FaultAction, FaultBackend, FaultError, FaultOp, FaultPlan, FaultRule, MAX_STALL,
};
use keel_engine::BlockBackend;
use serde_json::{json, Value};

use crate::rpc::{Params, RpcError};

/// Methods of this module.
pub(crate) const METHODS: &[&str] = &[
    "fault_inject",
    "fault_media_error",
    "fault_clear",
    "fault_list",
];

/// The errno of a failed operation unless the rule names one.
const EIO: i32 = nix::libc::EIO;
const OFF: &str = "fault injection is off: start keeld with --fault-injection (for tests only)";
const NO_RECORD: &str = "this keeld has no \"record\" device: it replicates no volume";

/// The fault plans of one keeld's devices.
#[derive(Debug, Default)]
pub(crate) struct FaultPlans {
    /// Every namespace's data backend.
    pub(crate) data: Arc<FaultPlan>,
    /// The replication record's backend, on a replicating keeld.
    pub(crate) record: Option<Arc<FaultPlan>>,
}

/// `backend`, with the faults `plan` asks for.
pub(crate) fn wrap(plan: &Arc<FaultPlan>, backend: Arc<dyn BlockBackend>) -> Arc<dyn BlockBackend> {
    Arc::new(FaultBackend::new(backend, plan.clone()))
}

impl FaultPlans {
    fn devices(&self) -> impl Iterator<Item = (&'static str, &Arc<FaultPlan>)> {
        std::iter::once(("data", &self.data)).chain(self.record.iter().map(|r| ("record", r)))
    }

    /// The device named by parameter `device`, and its plan.
    fn device(&self, name: &str) -> Result<(&'static str, &Arc<FaultPlan>), RpcError> {
        match name {
            "data" => Ok(("data", &self.data)),
            "record" => self
                .record
                .as_ref()
                .map(|plan| ("record", plan))
                .ok_or_else(|| RpcError::not_found(NO_RECORD)),
            other => Err(RpcError::invalid_params(format!(
                "parameter \"device\" must be \"data\" or \"record\", got {other:?}"
            ))),
        }
    }
}

/// Serves `method` (one of [`METHODS`]); without fault injection, every
/// call is "not available".
pub(crate) fn call(
    plans: Option<&FaultPlans>,
    method: &str,
    params: Option<Value>,
) -> Result<Value, RpcError> {
    let plans = plans.ok_or_else(|| RpcError::not_available(OFF))?;
    match method {
        "fault_inject" => inject(plans, params),
        "fault_media_error" => media_error(plans, params),
        "fault_clear" => clear(plans, params),
        "fault_list" => {
            Params::new(params)?.finish()?;
            Ok(list(plans))
        }
        _ => Err(RpcError::method_not_found(method)),
    }
}

/// `fault_inject`: one rule on one device (replacing its rule for the same
/// operations). Answers with every rule set.
fn inject(plans: &FaultPlans, params: Option<Value>) -> Result<Value, RpcError> {
    let mut params = Params::new(params)?;
    let device = params.str("device")?;
    let op = params.str("op")?;
    let action = params.str("action")?;
    let errno = params.opt_u64_in("errno", 1, 4095)?;
    let max_ms = u64::try_from(MAX_STALL.as_millis()).unwrap_or(u64::MAX);
    let delay_ms = params.opt_u64_in("delay_ms", 1, max_ms)?;
    let count = params.opt_u64_in("count", 1, u64::MAX)?;
    params.finish()?;
    let op = FaultOp::parse(&op).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "parameter \"op\" must be \"read\", \"write\", \"flush\", \"write_zeroes\", \
             \"discard\" or \"any\", got {op:?}"
        ))
    })?;
    let action = match (action.as_str(), errno, delay_ms) {
        ("fail", errno, None) => FaultAction::Fail {
            // 1..=4095 fits an i32.
            errno: errno.map_or(EIO, |e| i32::try_from(e).unwrap_or(EIO)),
        },
        ("fail", _, Some(_)) => {
            return Err(RpcError::invalid_params(
                "parameter \"delay_ms\" goes with \"action\": \"stall\" only",
            ))
        }
        ("stall", None, Some(ms)) => FaultAction::Stall {
            delay: Duration::from_millis(ms),
        },
        ("stall", None, None) => {
            return Err(RpcError::invalid_params(
                "parameter \"delay_ms\" is required with \"action\": \"stall\"",
            ))
        }
        ("stall", Some(_), _) => {
            return Err(RpcError::invalid_params(
                "parameter \"errno\" goes with \"action\": \"fail\" only (a stall ends in EIO)",
            ))
        }
        ("short", None, None) => FaultAction::Short,
        ("short", _, _) => {
            return Err(RpcError::invalid_params(
                "\"action\": \"short\" takes neither \"errno\" nor \"delay_ms\"",
            ))
        }
        (other, _, _) => {
            return Err(RpcError::invalid_params(format!(
                "parameter \"action\" must be \"fail\", \"stall\" or \"short\", got {other:?}"
            )))
        }
    };
    let (_, plan) = plans.device(&device)?;
    plan.inject(FaultRule { op, action, count })
        .map_err(|e| match e {
            FaultError::TooManyStallSettings | FaultError::TooManyRules => RpcError::refused(e),
            other => RpcError::invalid_params(other),
        })?;
    tracing::warn!(%device, op = op.name(), ?action, ?count, "fault injected");
    Ok(list(plans))
}

/// `fault_media_error`: marks `length` bytes from `offset` of a device as
/// media errors (latent sector errors: reads fail until a write covers
/// them). Answers with every rule set.
fn media_error(plans: &FaultPlans, params: Option<Value>) -> Result<Value, RpcError> {
    let mut params = Params::new(params)?;
    let device = params.str("device")?;
    let offset = params.u64_in("offset", 0, u64::MAX)?;
    let length = params.u64_in("length", 1, u64::MAX)?;
    params.finish()?;
    let (_, plan) = plans.device(&device)?;
    plan.mark_media_errors(offset, length)
        .map_err(|e| match e {
            FaultError::TooManyMediaErrors => RpcError::refused(e),
            other => RpcError::invalid_params(other),
        })?;
    tracing::warn!(%device, offset, length, "media errors marked");
    Ok(list(plans))
}

/// `fault_clear`: removes the rules of one device, or of all.
fn clear(plans: &FaultPlans, params: Option<Value>) -> Result<Value, RpcError> {
    let mut params = Params::new(params)?;
    let device = params.opt_str("device")?;
    params.finish()?;
    let cleared: Vec<&str> = match device.as_deref() {
        Some(name) => {
            let (name, plan) = plans.device(name)?;
            plan.clear();
            vec![name]
        }
        None => plans
            .devices()
            .map(|(name, plan)| {
                plan.clear();
                name
            })
            .collect(),
    };
    tracing::warn!(?cleared, "faults cleared");
    Ok(json!({ "cleared": cleared }))
}

/// `fault_list`: every rule set, device by device, in the order they are
/// tried.
fn list(plans: &FaultPlans) -> Value {
    let rules: Vec<Value> = plans
        .devices()
        .flat_map(|(device, plan)| {
            plan.rules().into_iter().map(move |status| {
                let (action, errno, delay_ms) = match status.rule.action {
                    FaultAction::Fail { errno } => ("fail", Some(errno), None),
                    FaultAction::Stall { delay } => (
                        "stall",
                        None,
                        Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                    ),
                    FaultAction::Short => ("short", None, None),
                };
                json!({
                    "device": device,
                    "op": status.rule.op.name(),
                    "action": action,
                    "errno": errno,
                    "delay_ms": delay_ms,
                    "count": status.rule.count,
                    "hits": status.hits,
                })
            })
        })
        .collect();
    // Media errors after the rules: they are tried first, but they are
    // no rule to replace.
    let media = plans.devices().flat_map(|(device, plan)| {
        let (runs, hits) = plan.media_errors();
        runs.into_iter().map(move |run| {
            json!({
                "device": device,
                "op": "read",
                "action": "media_error",
                "errno": EIO,
                "delay_ms": null,
                "count": null,
                "hits": hits,
                "offset": run.offset,
                "length": run.len,
            })
        })
    });
    Value::Array(rules.into_iter().chain(media).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::codes;

    fn plans(record: bool) -> FaultPlans {
        FaultPlans {
            data: FaultPlan::new(),
            record: record.then(FaultPlan::new),
        }
    }

    fn err(result: Result<Value, RpcError>) -> (i64, String) {
        let e = result.expect_err("expected an error");
        (e.code, e.message)
    }

    #[test]
    fn without_fault_injection_every_method_is_not_available() {
        for method in METHODS {
            let (code, message) = err(call(None, method, Some(json!({"device": "data"}))));
            assert_eq!(code, codes::NOT_AVAILABLE, "{method}");
            assert!(message.contains("--fault-injection"), "{message}");
        }
    }

    #[test]
    fn rules_are_injected_listed_and_cleared() {
        let p = plans(true);
        let listed = call(
            Some(&p),
            "fault_inject",
            Some(json!({"device": "data", "op": "write", "action": "fail", "count": 2})),
        )
        .unwrap();
        assert_eq!(
            listed,
            json!([{"device": "data", "op": "write", "action": "fail", "errno": 5,
                    "delay_ms": null, "count": 2, "hits": 0}])
        );
        call(
            Some(&p),
            "fault_inject",
            Some(json!({"device": "record", "op": "any", "action": "stall", "delay_ms": 1500})),
        )
        .unwrap();
        call(
            Some(&p),
            "fault_inject",
            Some(json!({"device": "data", "op": "flush", "action": "fail", "errno": 28})),
        )
        .unwrap();
        call(
            Some(&p),
            "fault_inject",
            Some(json!({"device": "data", "op": "read", "action": "short"})),
        )
        .unwrap();
        let listed = call(Some(&p), "fault_list", None).unwrap();
        assert_eq!(listed.as_array().map(Vec::len), Some(4));
        assert_eq!(
            listed[2],
            json!({"device": "data", "op": "read", "action": "short", "errno": null,
                   "delay_ms": null, "count": null, "hits": 0})
        );
        let listed = json!([listed[0], listed[1], listed[3]]);
        assert_eq!(listed[1]["errno"], 28);
        assert_eq!(listed[2]["device"], "record");
        assert_eq!(listed[2]["delay_ms"], 1500);
        assert_eq!(listed[2]["count"], Value::Null);
        assert_eq!(
            call(Some(&p), "fault_clear", Some(json!({"device": "record"}))).unwrap(),
            json!({"cleared": ["record"]})
        );
        assert_eq!(
            call(Some(&p), "fault_list", None)
                .unwrap()
                .as_array()
                .map(Vec::len),
            Some(3)
        );
        assert_eq!(
            call(Some(&p), "fault_clear", None).unwrap(),
            json!({"cleared": ["data", "record"]})
        );
        assert_eq!(call(Some(&p), "fault_list", None).unwrap(), json!([]));
    }

    #[test]
    fn media_errors_are_marked_listed_and_cleared() {
        let p = plans(false);
        let listed = call(
            Some(&p),
            "fault_media_error",
            Some(json!({"device": "data", "offset": 8192, "length": 4096})),
        )
        .unwrap();
        assert_eq!(
            listed,
            json!([{"device": "data", "op": "read", "action": "media_error", "errno": 5,
                    "delay_ms": null, "count": null, "hits": 0,
                    "offset": 8192, "length": 4096}])
        );
        // Adjacent ranges list as one run.
        call(
            Some(&p),
            "fault_media_error",
            Some(json!({"device": "data", "offset": 12288, "length": 512})),
        )
        .unwrap();
        let listed = call(Some(&p), "fault_list", None).unwrap();
        assert_eq!(listed[0]["length"], 4608);
        for (params, name) in [
            (json!({"device": "data", "offset": 8192}), "\"length\""),
            (json!({"device": "data", "length": 512}), "\"offset\""),
            (
                json!({"device": "data", "offset": 1, "length": 512}),
                "sectors",
            ),
            (
                json!({"device": "data", "offset": 0, "length": 0}),
                "\"length\"",
            ),
            (
                json!({"device": "data", "offset": -1, "length": 512}),
                "\"offset\"",
            ),
            (
                json!({"device": "disk", "offset": 0, "length": 512}),
                "\"device\"",
            ),
            (
                json!({"device": "data", "offset": 0, "length": 512, "op": "read"}),
                "\"op\"",
            ),
        ] {
            let (code, message) = err(call(Some(&p), "fault_media_error", Some(params.clone())));
            assert_eq!(code, codes::INVALID_PARAMS, "{params}: {message}");
            assert!(message.contains(name), "{params}: {message}");
        }
        let (code, _) = err(call(
            Some(&p),
            "fault_media_error",
            Some(json!({"device": "data", "offset": 0, "length": 1u64 << 40})),
        ));
        assert_eq!(code, codes::REFUSED);
        call(Some(&p), "fault_clear", None).unwrap();
        assert_eq!(call(Some(&p), "fault_list", None).unwrap(), json!([]));
    }

    #[test]
    fn hostile_parameters_are_refused_with_their_name() {
        let p = plans(false);
        let base = json!({"device": "data", "op": "write", "action": "fail"});
        let with = |extra: Value| {
            let mut params = base.clone();
            for (k, v) in extra.as_object().into_iter().flatten() {
                params[k] = v.clone();
            }
            params
        };
        for (params, name) in [
            (json!({"op": "write", "action": "fail"}), "\"device\""),
            (with(json!({"device": 1})), "\"device\""),
            (with(json!({"device": "disk"})), "\"device\""),
            (with(json!({"op": "trim"})), "\"op\""),
            (with(json!({"op": ["write"]})), "\"op\""),
            (json!({"device": "data", "action": "fail"}), "\"op\""),
            (with(json!({"action": "explode"})), "\"action\""),
            (with(json!({"errno": 0})), "\"errno\""),
            (with(json!({"errno": 4096})), "\"errno\""),
            (with(json!({"errno": -5})), "\"errno\""),
            (with(json!({"errno": 5.5})), "\"errno\""),
            (with(json!({"errno": "EIO"})), "\"errno\""),
            (with(json!({"count": 0})), "\"count\""),
            (with(json!({"count": -1})), "\"count\""),
            (with(json!({"count": true})), "\"count\""),
            (with(json!({"delay_ms": 10})), "\"delay_ms\""),
            (with(json!({"action": "stall"})), "\"delay_ms\""),
            (
                with(json!({"action": "stall", "delay_ms": 0})),
                "\"delay_ms\"",
            ),
            (
                with(json!({"action": "stall", "delay_ms": 600_001})),
                "\"delay_ms\"",
            ),
            (
                with(json!({"action": "stall", "delay_ms": 10, "errno": 5})),
                "\"errno\"",
            ),
            (with(json!({"action": "short", "errno": 5})), "\"errno\""),
            (
                with(json!({"action": "short", "delay_ms": 5})),
                "\"delay_ms\"",
            ),
            (with(json!({"bogus": 1})), "\"bogus\""),
        ] {
            let (code, message) = err(call(Some(&p), "fault_inject", Some(params.clone())));
            assert_eq!(code, codes::INVALID_PARAMS, "{params}: {message}");
            assert!(message.contains(name), "{params}: {message}");
        }
        let (code, _) = err(call(Some(&p), "fault_inject", Some(json!([1]))));
        assert_eq!(code, codes::INVALID_PARAMS);
        let (code, message) = err(call(
            Some(&p),
            "fault_inject",
            Some(with(json!({"device": "record"}))),
        ));
        assert_eq!(code, codes::NOT_FOUND, "{message}");
        let (code, _) = err(call(
            Some(&p),
            "fault_clear",
            Some(json!({"device": "record"})),
        ));
        assert_eq!(code, codes::NOT_FOUND);
        let (code, _) = err(call(Some(&p), "fault_clear", Some(json!({"device": 3}))));
        assert_eq!(code, codes::INVALID_PARAMS);
        let (code, _) = err(call(
            Some(&p),
            "fault_list",
            Some(json!({"device": "data"})),
        ));
        assert_eq!(code, codes::INVALID_PARAMS);
        // Nothing was set by any of them.
        assert_eq!(call(Some(&p), "fault_list", None).unwrap(), json!([]));
    }

    #[test]
    fn the_plan_refuses_a_65th_stall_setting() {
        let p = plans(false);
        for ms in 1..=64u64 {
            call(
                Some(&p),
                "fault_inject",
                Some(json!({"device": "data", "op": "read", "action": "stall", "delay_ms": ms})),
            )
            .unwrap();
        }
        let (code, message) = err(call(
            Some(&p),
            "fault_inject",
            Some(json!({"device": "data", "op": "read", "action": "stall", "delay_ms": 999})),
        ));
        assert_eq!(code, codes::REFUSED, "{message}");
    }
}
