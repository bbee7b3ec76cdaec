//! Admin queue command processing: Fabrics property access and the admin
//! commands a fabrics host uses, for discovery and NVM controllers.

pub(crate) mod features;
mod identify;
mod log_page;

use std::collections::BTreeMap;

use crate::controller::config::TargetLimits;
use crate::controller::discovery::Listener;
use crate::controller::properties::CcTransition;
use crate::controller::response::{AsyncCompletion, Completion};
use crate::controller::state::{Controller, ControllerKind};
use crate::controller::subsystem::HostedSubsystem;
use crate::controller::transfer::check_psdt;
use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::fabrics::FabricsCommand;
use crate::nvme::opcode::AdminOpcode;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;

/// Abort completion DW0 bit 0: the command was not aborted.
const ABORT_NOT_ABORTED: u32 = 1;

/// What the discovery log is built from.
pub(crate) struct DiscoveryView<'a> {
    pub genctr: u64,
    pub listeners: &'a [Listener],
    pub subsystems: &'a BTreeMap<String, HostedSubsystem>,
}

/// Everything an admin command may read or change.
pub(crate) struct AdminContext<'a> {
    pub controller: &'a mut Controller,
    /// The NVM subsystem; `None` for a discovery controller.
    pub subsystem: Option<&'a HostedSubsystem>,
    pub discovery: DiscoveryView<'a>,
    pub limits: &'a TargetLimits,
    /// Completions raised on the side (AERs aborted by a reset).
    pub outbox: &'a mut Vec<AsyncCompletion>,
}

/// The result of an admin command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminOutcome {
    Done(Completion),
    /// An AER was parked.
    Parked,
}

pub(crate) fn execute(
    ctx: &mut AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
    out: &mut [u8],
) -> AdminOutcome {
    if let Some(fabrics) = FabricsCommand::from_sqe(sqe) {
        return AdminOutcome::Done(Completion::from_result(fabrics_command(ctx, fabrics)));
    }
    // Only Fabrics commands may run before the host enabled the controller
    // (NVMe Base 2.0 §3.5.1, Command Sequence Error otherwise).
    if !ctx.controller.registers.is_ready() {
        return AdminOutcome::Done(Completion::with_status(Status::COMMAND_SEQUENCE_ERROR));
    }
    if sqe.fuse() != 0 {
        return AdminOutcome::Done(Completion::with_status(Status::INVALID_FIELD));
    }
    if let Err(status) = check_psdt(sqe) {
        return AdminOutcome::Done(Completion::with_status(status));
    }
    let opcode = sqe.admin_opcode();
    let result = match opcode {
        AdminOpcode::Identify => identify::identify(ctx, sqe, out),
        AdminOpcode::GetLogPage => log_page::get_log_page(ctx, sqe, out),
        AdminOpcode::SetFeatures => features::set_features(ctx, sqe),
        AdminOpcode::GetFeatures => features::get_features(ctx, sqe, out),
        AdminOpcode::KeepAlive => Ok(Completion::success()),
        AdminOpcode::AsyncEventRequest => return park_aer(ctx, sqe.cid),
        // Commands are executed as they arrive, so there is never anything
        // to abort; "not aborted" is always a correct answer (§5.1).
        AdminOpcode::Abort if ctx.controller.kind == ControllerKind::Nvm => {
            Ok(Completion::with_dw0(ABORT_NOT_ABORTED))
        }
        _ => Err(Status::INVALID_OPCODE),
    };
    AdminOutcome::Done(Completion::from_result(result))
}

fn fabrics_command(
    ctx: &mut AdminContext<'_>,
    command: FabricsCommand,
) -> Result<Completion, Status> {
    match command {
        FabricsCommand::PropertyGet(get) => {
            let value = ctx.controller.registers.get(get)?;
            Ok(Completion {
                dw1: (value >> 32) as u32,
                ..Completion::with_dw0(value as u32)
            })
        }
        FabricsCommand::PropertySet(set) => {
            let transition = ctx.controller.registers.set(set)?;
            if transition == CcTransition::Reset {
                let aborted = ctx.controller.reset(ctx.limits);
                abort_aers(ctx.controller.cntlid, aborted, ctx.outbox);
            }
            Ok(Completion::success())
        }
        // The queue is connected already.
        FabricsCommand::Connect(_) => Err(Status::COMMAND_SEQUENCE_ERROR),
        // Disconnect only deletes I/O queues; authentication is not
        // supported; unknown types are invalid (NVMe Base 2.0 §6).
        FabricsCommand::Disconnect
        | FabricsCommand::AuthenticationSend
        | FabricsCommand::AuthenticationReceive
        | FabricsCommand::Unknown(_) => Err(Status::INVALID_FIELD),
    }
}

fn park_aer(ctx: &mut AdminContext<'_>, cid: u16) -> AdminOutcome {
    match ctx.controller.events.park(cid) {
        Err(status) => AdminOutcome::Done(Completion::with_status(status)),
        Ok(None) => AdminOutcome::Parked,
        Ok(Some((completed, dw0))) if completed == cid => {
            AdminOutcome::Done(Completion::with_dw0(dw0))
        }
        Ok(Some((completed, dw0))) => {
            // An older AER took the event: it completes on the side.
            ctx.outbox.push(aer_completion(
                ctx.controller.cntlid,
                completed,
                Completion::with_dw0(dw0),
            ));
            AdminOutcome::Parked
        }
    }
}

/// The completion of a parked AER.
pub(crate) fn aer_completion(cntlid: u16, cid: u16, completion: Completion) -> AsyncCompletion {
    let mut cqe = CompletionQueueEntry::new(cid, completion.status);
    cqe.dw0 = completion.dw0;
    AsyncCompletion { cntlid, cqe }
}

/// Completes parked AERs with "Command Aborted due to SQ Deletion": the
/// admin queue's association ends or the controller was reset.
pub(crate) fn abort_aers(cntlid: u16, cids: Vec<u16>, outbox: &mut Vec<AsyncCompletion>) {
    outbox.extend(cids.into_iter().map(|cid| {
        aer_completion(
            cntlid,
            cid,
            Completion::with_status(Status::ABORTED_SQ_DELETION),
        )
    }));
}
