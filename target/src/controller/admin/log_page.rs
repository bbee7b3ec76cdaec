//! Get Log Page (NVMe Base 2.0 §5.16). Each page is built whole, then the
//! window the host asked for (offset LPO, length NUMD) is copied out, so
//! partial reads of the discovery log see consistent bytes as long as its
//! generation counter does not change.

use crate::controller::admin::identify::FIRMWARE_REVISION;
use crate::controller::admin::AdminContext;
use crate::controller::ana;
use crate::controller::discovery::build_discovery_log;
use crate::controller::response::Completion;
use crate::controller::state::ControllerKind;
use crate::controller::stats::IoStatistics;
use crate::controller::transfer::{copy_window, expect_data_to_host};
use crate::nvme::admin::LogPageId;
use crate::nvme::command::GetLogPageCommand;
use crate::nvme::opcode::{AdminOpcode, IoOpcode};
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;
use crate::nvme::text::write_ascii_space_padded;
use crate::wire::{put_u128, put_u32};

/// Error Information log entry size; ELPE = 0 means one entry.
const ERROR_LOG_ENTRY_LEN: usize = 64;
/// SMART / Health Information and Firmware Slot Information sizes.
const SMART_LOG_LEN: usize = 512;
const FIRMWARE_SLOT_LOG_LEN: usize = 512;
/// Changed Namespace List and Commands Supported and Effects sizes.
const CHANGED_NS_LOG_LEN: usize = 4096;
const EFFECTS_LOG_LEN: usize = 4096;

/// Commands Supported and Effects bits (NVMe Base 2.0 §5.16.1.6).
mod effects {
    /// Command Supported.
    pub const CSUPP: u32 = 1 << 0;
    /// Logical Block Content Change.
    pub const LBCC: u32 = 1 << 1;
}

pub(crate) fn get_log_page(
    ctx: &mut AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
    out: &mut [u8],
) -> Result<Completion, Status> {
    let command = GetLogPageCommand::from_sqe(sqe);
    let len = command.data_len();
    if len > ctx.limits.max_transfer_bytes() {
        return Err(Status::INVALID_FIELD);
    }
    // The offset is in bytes but must be dword aligned.
    if !command.lpo.is_multiple_of(4) {
        return Err(Status::INVALID_FIELD);
    }
    expect_data_to_host(sqe, len)?;
    let len = usize::try_from(len).map_err(|_| Status::INVALID_FIELD)?;
    let window = out.get_mut(..len).ok_or(Status::INTERNAL_ERROR)?;
    let page = build_page(ctx, sqe.nsid, command.lid, command.lsp)?;
    copy_window(&page, command.lpo, window)?;
    if !command.rae {
        ctx.controller.log_page_read(command.lid);
    }
    Ok(Completion::with_data(len))
}

fn build_page(
    ctx: &mut AdminContext<'_>,
    nsid: u32,
    lid: LogPageId,
    lsp: u8,
) -> Result<Vec<u8>, Status> {
    match (ctx.controller.kind, lid) {
        (ControllerKind::Discovery, LogPageId::Discovery) => Ok(build_discovery_log(
            ctx.discovery.genctr,
            ctx.discovery.listeners,
            ctx.discovery
                .subsystems
                .values()
                .map(|hosted| &hosted.subsystem),
            &ctx.controller.host.hostnqn,
            // Admin queue size a discovery host may use.
            ctx.limits.mqes.saturating_add(1),
        )),
        (ControllerKind::Nvm, LogPageId::ErrorInformation) => {
            // No errors are recorded; ELPE = 0 (one entry).
            Ok(vec![0; ERROR_LOG_ENTRY_LEN])
        }
        (ControllerKind::Nvm, LogPageId::SmartHealth) => {
            // LPA bit 0 is clear: the log is for the whole controller only.
            if nsid != 0 && nsid != u32::MAX {
                return Err(Status::INVALID_FIELD);
            }
            let stats = ctx.subsystem.map(|hosted| hosted.stats).unwrap_or_default();
            Ok(smart_log(&stats))
        }
        (ControllerKind::Nvm, LogPageId::FirmwareSlot) => firmware_slot_log(),
        (ControllerKind::Nvm, LogPageId::ChangedNamespaceList) => {
            let mut page = vec![0; CHANGED_NS_LOG_LEN];
            for (index, nsid) in ctx
                .controller
                .changed_namespaces
                .take()
                .into_iter()
                .enumerate()
            {
                put_u32(&mut page, index * 4, nsid);
            }
            Ok(page)
        }
        (ControllerKind::Nvm, LogPageId::CommandsSupportedAndEffects) => Ok(effects_log()),
        (ControllerKind::Nvm, LogPageId::AsymmetricNamespaceAccess) => {
            let hosted = ctx.subsystem.ok_or(Status::INVALID_LOG_PAGE)?;
            Ok(ana::build_log(
                hosted.subsystem.namespaces(),
                hosted.ana_changes,
                lsp & ana::LSP_GROUPS_ONLY != 0,
            ))
        }
        _ => Err(Status::INVALID_LOG_PAGE),
    }
}

/// SMART / Health Information (NVMe Base 2.0 §5.16.1.3). Temperature is
/// not measured (0); spare is reported full so no warning is implied.
fn smart_log(stats: &IoStatistics) -> Vec<u8> {
    const AVAILABLE_SPARE: usize = 3;
    const AVAILABLE_SPARE_THRESHOLD: usize = 4;
    const DATA_UNITS_READ: usize = 32;
    const DATA_UNITS_WRITTEN: usize = 48;
    const HOST_READ_COMMANDS: usize = 64;
    const HOST_WRITE_COMMANDS: usize = 80;
    let mut page = vec![0; SMART_LOG_LEN];
    page[AVAILABLE_SPARE] = 100;
    page[AVAILABLE_SPARE_THRESHOLD] = 10;
    put_u128(&mut page, DATA_UNITS_READ, stats.data_units_read());
    put_u128(&mut page, DATA_UNITS_WRITTEN, stats.data_units_written());
    put_u128(&mut page, HOST_READ_COMMANDS, stats.host_read_commands);
    put_u128(&mut page, HOST_WRITE_COMMANDS, stats.host_write_commands);
    page
}

/// Firmware Slot Information (§5.16.1.4): slot 1 active, holding
/// [`FIRMWARE_REVISION`].
fn firmware_slot_log() -> Result<Vec<u8>, Status> {
    const AFI: usize = 0;
    const FRS1: usize = 8;
    let mut page = vec![0; FIRMWARE_SLOT_LOG_LEN];
    page[AFI] = 1;
    write_ascii_space_padded("FRS1", FIRMWARE_REVISION, &mut page[FRS1..FRS1 + 8])
        .map_err(|_| Status::INTERNAL_ERROR)?;
    Ok(page)
}

/// Commands Supported and Effects (§5.16.1.6): admin commands at dword
/// index = opcode from byte 0, I/O commands from byte 1024. The Linux host
/// reads it because LPA bit 1 is set.
fn effects_log() -> Vec<u8> {
    const IO_COMMANDS: usize = 1024;
    let mut page = vec![0; EFFECTS_LOG_LEN];
    let admin = [
        AdminOpcode::GetLogPage,
        AdminOpcode::Identify,
        AdminOpcode::Abort,
        AdminOpcode::SetFeatures,
        AdminOpcode::GetFeatures,
        AdminOpcode::AsyncEventRequest,
        AdminOpcode::KeepAlive,
    ];
    for opcode in admin {
        put_u32(&mut page, usize::from(opcode.as_u8()) * 4, effects::CSUPP);
    }
    let io = [
        (IoOpcode::Flush, effects::CSUPP),
        (IoOpcode::Write, effects::CSUPP | effects::LBCC),
        (IoOpcode::Read, effects::CSUPP),
        (IoOpcode::Compare, effects::CSUPP),
        (IoOpcode::WriteZeroes, effects::CSUPP | effects::LBCC),
        (IoOpcode::DatasetManagement, effects::CSUPP | effects::LBCC),
    ];
    for (opcode, bits) in io {
        put_u32(
            &mut page,
            IO_COMMANDS + usize::from(opcode.as_u8()) * 4,
            bits,
        );
    }
    page
}
