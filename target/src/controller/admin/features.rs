//! Set Features and Get Features (NVMe Base 2.0 §5.27 and §5.15) for the
//! features a fabrics host uses.

use crate::controller::admin::AdminContext;
use crate::controller::response::Completion;
use crate::controller::state::ControllerKind;
use crate::controller::transfer::expect_data_to_host;
use crate::nvme::admin::FeatureId;
use crate::nvme::command::{FeatureCommand, NumberOfQueues};
use crate::nvme::identify::oaes;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;

/// Over temperature threshold default: 356 K (83 °C).
const DEFAULT_OVER_TEMPERATURE: u16 = 356;
/// Asynchronous event configuration bits 7:0: SMART critical warnings,
/// which every controller may be asked to report.
const AEC_SMART_WARNINGS: u32 = 0xFF;
/// Get Features "supported capabilities" bit: the feature is changeable.
const CAPABILITY_CHANGEABLE: u32 = 1 << 2;
/// Host Identifier length with EXHID = 1 (128-bit, as Connect carries it).
const HOST_ID_LEN: usize = 16;

/// Feature values a controller keeps (the ones not held elsewhere: AEC
/// lives with the events, KATO with the keep-alive timer, Number of
/// Queues with the queues).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeatureValues {
    arbitration: u32,
    power_management: u32,
    /// Over (index 0) and under (index 1) thresholds of the composite
    /// temperature, in kelvins.
    temperature_thresholds: [u16; 2],
    volatile_write_cache: bool,
}

impl Default for FeatureValues {
    fn default() -> Self {
        Self {
            arbitration: 0,
            power_management: 0,
            temperature_thresholds: [DEFAULT_OVER_TEMPERATURE, 0],
            // The write cache starts enabled; Flush makes it durable.
            volatile_write_cache: true,
        }
    }
}

/// Whether a controller of `kind` has feature `fid`. A discovery
/// controller only has Keep Alive Timer and Asynchronous Event
/// Configuration (NVMe Base 2.0 §3.1.3.3).
fn supported(kind: ControllerKind, fid: FeatureId) -> bool {
    match fid {
        FeatureId::KeepAliveTimer | FeatureId::AsyncEventConfiguration => true,
        FeatureId::Arbitration
        | FeatureId::PowerManagement
        | FeatureId::TemperatureThreshold
        | FeatureId::VolatileWriteCache
        | FeatureId::NumberOfQueues
        | FeatureId::HostIdentifier => kind == ControllerKind::Nvm,
        _ => false,
    }
}

/// Which temperature threshold CDW11 selects: TMPSEL (19:16) must be the
/// composite temperature (0); THSEL (21:20) over (0) or under (1).
fn threshold_index(value: u32) -> Result<usize, Status> {
    let tmpsel = (value >> 16) & 0xF;
    let thsel = (value >> 20) & 0x3;
    match (tmpsel, thsel) {
        (0, 0) => Ok(0),
        (0, 1) => Ok(1),
        _ => Err(Status::INVALID_FIELD),
    }
}

pub(crate) fn set_features(
    ctx: &mut AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
) -> Result<Completion, Status> {
    let command = FeatureCommand::from_sqe(sqe);
    let controller = &mut *ctx.controller;
    if !supported(controller.kind, command.fid) {
        return Err(Status::INVALID_FIELD);
    }
    if command.save {
        return Err(Status::FEATURE_NOT_SAVEABLE);
    }
    let value = command.value;
    let features = &mut controller.features;
    match command.fid {
        FeatureId::Arbitration => features.arbitration = value,
        FeatureId::PowerManagement => {
            // NPSS = 0: power state 0 is the only one (PS, bits 4:0).
            if value & 0x1F != 0 {
                return Err(Status::INVALID_FIELD);
            }
            features.power_management = value & 0xFF;
        }
        FeatureId::TemperatureThreshold => {
            features.temperature_thresholds[threshold_index(value)?] = value as u16;
        }
        FeatureId::VolatileWriteCache => features.volatile_write_cache = value & 1 != 0,
        FeatureId::NumberOfQueues => return set_number_of_queues(ctx, value),
        FeatureId::AsyncEventConfiguration => {
            let supported = AEC_SMART_WARNINGS
                | match controller.kind {
                    ControllerKind::Discovery => oaes::DISCOVERY_LOG_CHANGE,
                    ControllerKind::Nvm => oaes::NAMESPACE_ATTRIBUTE | oaes::ANA_CHANGE,
                };
            controller.events.set_config(value & supported);
        }
        FeatureId::KeepAliveTimer => controller.keep_alive.set_timeout_ms(value),
        // Over fabrics the host identifier comes with Connect and cannot
        // be changed (NVMe Base 2.0 §5.27.1.26).
        FeatureId::HostIdentifier => return Err(Status::COMMAND_SEQUENCE_ERROR),
        _ => return Err(Status::INVALID_FIELD),
    }
    Ok(Completion::success())
}

/// Number of Queues (NVMe Base 2.0 §5.27.1.7): grants the smaller of what
/// the host asks and the configured maximum; both counts 0's based. May
/// not change once I/O queues exist.
fn set_number_of_queues(ctx: &mut AdminContext<'_>, value: u32) -> Result<Completion, Status> {
    let asked = NumberOfQueues::from_dword(value);
    if asked.nsqr == u16::MAX || asked.ncqr == u16::MAX {
        return Err(Status::INVALID_FIELD);
    }
    let queues = &mut ctx.controller.queues;
    if !queues.connected.is_empty() {
        return Err(Status::COMMAND_SEQUENCE_ERROR);
    }
    // NVMe/TCP queues are SQ/CQ pairs: grant pairs.
    let wanted = asked.nsqr.min(asked.ncqr).saturating_add(1);
    queues.granted = wanted.min(ctx.limits.max_io_queues).max(1);
    Ok(Completion::with_dw0(granted_dword(queues.granted)))
}

fn granted_dword(granted: u16) -> u32 {
    let zero_based = granted.saturating_sub(1);
    NumberOfQueues {
        nsqr: zero_based,
        ncqr: zero_based,
    }
    .dword()
}

/// Get Features select values (CDW10 bits 10:8).
mod select {
    pub const CURRENT: u8 = 0;
    pub const DEFAULT: u8 = 1;
    pub const SAVED: u8 = 2;
    pub const CAPABILITIES: u8 = 3;
}

pub(crate) fn get_features(
    ctx: &mut AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
    out: &mut [u8],
) -> Result<Completion, Status> {
    let command = FeatureCommand::from_sqe(sqe);
    let controller = &*ctx.controller;
    if !supported(controller.kind, command.fid) {
        return Err(Status::INVALID_FIELD);
    }
    let current = match command.select {
        select::CURRENT => true,
        // Nothing is saveable, so saved values are the defaults.
        select::DEFAULT | select::SAVED => false,
        select::CAPABILITIES => {
            let changeable = command.fid != FeatureId::HostIdentifier;
            let dw0 = if changeable { CAPABILITY_CHANGEABLE } else { 0 };
            return Ok(Completion::with_dw0(dw0));
        }
        _ => return Err(Status::INVALID_FIELD),
    };
    let defaults = FeatureValues::default();
    let values = if current {
        &controller.features
    } else {
        &defaults
    };
    let dw0 = match command.fid {
        FeatureId::Arbitration => values.arbitration,
        FeatureId::PowerManagement => values.power_management,
        FeatureId::TemperatureThreshold => {
            let index = threshold_index(command.value)?;
            u32::from(values.temperature_thresholds[index]) | (command.value & 0x003F_0000)
        }
        FeatureId::VolatileWriteCache => u32::from(values.volatile_write_cache),
        FeatureId::NumberOfQueues if current => granted_dword(controller.queues.granted),
        FeatureId::NumberOfQueues => granted_dword(ctx.limits.max_io_queues),
        FeatureId::AsyncEventConfiguration if current => controller.events.config(),
        FeatureId::AsyncEventConfiguration => 0,
        FeatureId::KeepAliveTimer => controller.keep_alive.timeout_ms(),
        FeatureId::HostIdentifier => return get_host_identifier(ctx, sqe, command.value, out),
        _ => return Err(Status::INVALID_FIELD),
    };
    Ok(Completion::with_dw0(dw0))
}

/// Host Identifier (NVMe Base 2.0 §5.27.1.26): 16 bytes of data with
/// EXHID = 1; the 64-bit form is not supported over fabrics.
fn get_host_identifier(
    ctx: &AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
    value: u32,
    out: &mut [u8],
) -> Result<Completion, Status> {
    if value & 1 == 0 {
        return Err(Status::INVALID_FIELD);
    }
    expect_data_to_host(sqe, HOST_ID_LEN as u64)?;
    let out = out.get_mut(..HOST_ID_LEN).ok_or(Status::INTERNAL_ERROR)?;
    out.copy_from_slice(&ctx.controller.host.host_id);
    Ok(Completion::with_data(HOST_ID_LEN))
}
