//! Identify (NVMe Base 2.0 §5.17): the structures the Linux host reads
//! while connecting and scanning namespaces (CNS 00h, 01h, 02h, 03h, 06h;
//! 05h and 07h for completeness).

use crate::controller::admin::AdminContext;
use crate::controller::ana::{self, anacap};
use crate::controller::response::Completion;
use crate::controller::state::ControllerKind;
use crate::controller::subsystem::{HostedSubsystem, Namespace};
use crate::controller::transfer::expect_data_to_host;
use crate::nvme::admin::{IdentifyCns, CSI_NVM};
use crate::nvme::command::IdentifyCommand;
use crate::nvme::identify::{
    cmic, cntrltype, ctratt, lpa, oaes, oncs, sgls, write_active_namespace_list,
    IdentifyController, IdentifyControllerNvm, IdentifyNamespace, NamespaceIdDescriptors,
    IDENTIFY_DATA_LEN,
};
use crate::nvme::nqn::DISCOVERY_NQN;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;

/// Identify strings of the discovery controller.
const DISCOVERY_SERIAL: &str = "keel-discovery";
const DISCOVERY_MODEL: &str = "Keel discovery controller";
/// Firmware revision reported by controllers (at most 8 characters).
pub(crate) const FIRMWARE_REVISION: &str = "keel-0.1";
/// Abort Command Limit, 0's based: 4 Aborts at once.
const ACL: u8 = 3;
/// FRMW: slot 1 is read-only (bit 0), one slot (bits 3:1 = 1).
const FRMW: u8 = 0b0011;
/// VWC bit 0: a volatile write cache is present, so the host sends Flush.
const VWC_PRESENT: u8 = 1;
/// NMIC bit 0: the namespace may be attached to several controllers, so
/// the Linux host builds a multipath head for it.
const NMIC_SHARED: u8 = 1;

pub(crate) fn identify(
    ctx: &AdminContext<'_>,
    sqe: &SubmissionQueueEntry,
    out: &mut [u8],
) -> Result<Completion, Status> {
    let command = IdentifyCommand::from_sqe(sqe);
    let discovery = ctx.controller.kind == ControllerKind::Discovery;
    // A discovery controller only has an Identify Controller structure.
    if discovery && command.cns != IdentifyCns::Controller {
        return Err(Status::INVALID_FIELD);
    }
    expect_data_to_host(sqe, IDENTIFY_DATA_LEN as u64)?;
    let out: &mut [u8; IDENTIFY_DATA_LEN] = out
        .get_mut(..IDENTIFY_DATA_LEN)
        .and_then(|out| out.try_into().ok())
        .ok_or(Status::INTERNAL_ERROR)?;
    match (command.cns, ctx.subsystem) {
        (IdentifyCns::Controller, _) => write_controller(ctx, out)?,
        (IdentifyCns::Namespace, Some(hosted)) => write_namespace(ctx, hosted, sqe.nsid, out)?,
        (IdentifyCns::IoCommandSetNamespace, Some(hosted)) if command.csi == CSI_NVM => {
            // NVM command set specific Identify Namespace: all zero without
            // protection information or extended LBA formats.
            active_or_zeroed(ctx, hosted, sqe.nsid)?;
            out.fill(0);
        }
        (IdentifyCns::ActiveNamespaceList, Some(hosted)) => {
            write_active_list(hosted, sqe.nsid, out)?
        }
        (IdentifyCns::IoCommandSetActiveNamespaceList, Some(hosted)) if command.csi == CSI_NVM => {
            write_active_list(hosted, sqe.nsid, out)?
        }
        (IdentifyCns::NamespaceIdDescriptors, Some(hosted)) => {
            let namespace = hosted
                .subsystem
                .namespace(sqe.nsid)
                .ok_or(Status::INVALID_NAMESPACE)?;
            descriptors(namespace).write_into(out);
        }
        (IdentifyCns::IoCommandSetController, Some(_)) if command.csi == CSI_NVM => {
            // No Write Zeroes, Verify or DSM size limits to report.
            IdentifyControllerNvm::default().write_into(out);
        }
        _ => return Err(Status::INVALID_FIELD),
    }
    Ok(Completion::with_data(IDENTIFY_DATA_LEN))
}

/// The identifiers the host builds the namespace's multipath identity
/// from (zero means "not reported", so those are left out), plus the
/// command set (required because CAP.CSS advertises I/O command sets, or
/// the 6.1 host rejects the namespace).
fn descriptors(namespace: &Namespace) -> NamespaceIdDescriptors {
    NamespaceIdDescriptors {
        eui64: (namespace.eui64 != [0; 8]).then_some(namespace.eui64),
        nguid: (namespace.nguid != [0; 16]).then_some(namespace.nguid),
        uuid: (namespace.uuid != [0; 16]).then_some(namespace.uuid),
        csi: Some(CSI_NVM),
    }
}

fn write_controller(
    ctx: &AdminContext<'_>,
    out: &mut [u8; IDENTIFY_DATA_LEN],
) -> Result<(), Status> {
    let limits = ctx.limits;
    let controller = &*ctx.controller;
    let common = IdentifyController {
        firmware_revision: FIRMWARE_REVISION,
        mdts: limits.mdts,
        cntlid: controller.cntlid,
        ver: limits.version,
        acl: ACL,
        aerl: limits.aerl,
        kas: limits.kas,
        maxcmd: limits.mqes.saturating_add(1),
        sgls: sgls::SUPPORTED | sgls::OFFSET,
        ..IdentifyController::default()
    };
    let identify = match ctx.subsystem {
        Some(hosted) => IdentifyController {
            serial_number: hosted.subsystem.serial(),
            model_number: hosted.subsystem.model(),
            // Several hosts and ports may reach the same namespaces, and
            // which path serves a replicated one is reported by ANA.
            cmic: cmic::MULTI_PORT | cmic::MULTI_CONTROLLER | cmic::ANA_REPORTING,
            oaes: oaes::NAMESPACE_ATTRIBUTE | oaes::ANA_CHANGE,
            anatt: ana::TRANSITION_TIME_S,
            anacap: anacap::OPTIMIZED | anacap::INACCESSIBLE | anacap::GROUP_ID_STATIC,
            // One group per namespace (`ana::group_of`). A host sizes its
            // ANA log buffer from these and MNAN (Linux refuses ANA with
            // MNAN 0: "Invalid MNAN value").
            anagrpmax: limits.max_nsid,
            nanagrpid: limits.max_nsid,
            mnan: limits.max_nsid,
            ctratt: ctratt::HOST_ID_128 | ctratt::TRAFFIC_BASED_KEEP_ALIVE,
            cntrltype: cntrltype::IO,
            frmw: FRMW,
            lpa: lpa::COMMANDS_EFFECTS | lpa::EXTENDED_DATA,
            nn: limits.max_nsid,
            oncs: oncs::COMPARE | oncs::DATASET_MANAGEMENT | oncs::WRITE_ZEROES,
            vwc: VWC_PRESENT,
            subnqn: hosted.subsystem.nqn(),
            ioccsz: limits.ioccsz(),
            ..common
        },
        None => IdentifyController {
            serial_number: DISCOVERY_SERIAL,
            model_number: DISCOVERY_MODEL,
            oaes: oaes::DISCOVERY_LOG_CHANGE,
            cntrltype: cntrltype::DISCOVERY,
            lpa: lpa::EXTENDED_DATA,
            subnqn: DISCOVERY_NQN,
            ..common
        },
    };
    // Every string was validated when the subsystem was created.
    identify.write_into(out).map_err(|_| Status::INTERNAL_ERROR)
}

/// CNS 00h: an active NSID gets its structure, an inactive NSID within
/// 1..=NN a zero-filled one (NVMe Base 2.0 §5.17.2.1), anything else
/// Invalid Namespace.
fn write_namespace(
    ctx: &AdminContext<'_>,
    hosted: &HostedSubsystem,
    nsid: u32,
    out: &mut [u8; IDENTIFY_DATA_LEN],
) -> Result<(), Status> {
    let Some(namespace) = active_or_zeroed(ctx, hosted, nsid)? else {
        out.fill(0);
        return Ok(());
    };
    let geometry = namespace.geometry;
    let mut identify = IdentifyNamespace::new(geometry.blocks(), geometry.block_size_shift());
    identify.nmic = NMIC_SHARED;
    identify.anagrpid = ana::group_of(nsid);
    identify.nguid = namespace.nguid;
    identify.eui64 = namespace.eui64;
    identify.write_into(out).map_err(|_| Status::INTERNAL_ERROR)
}

fn active_or_zeroed<'a>(
    ctx: &AdminContext<'_>,
    hosted: &'a HostedSubsystem,
    nsid: u32,
) -> Result<Option<&'a Namespace>, Status> {
    if nsid == 0 || nsid > ctx.limits.max_nsid {
        return Err(Status::INVALID_NAMESPACE);
    }
    Ok(hosted.subsystem.namespace(nsid))
}

/// CNS 02h: active NSIDs above the command's NSID; FFFFFFFEh and
/// FFFFFFFFh are invalid there.
fn write_active_list(
    hosted: &HostedSubsystem,
    after: u32,
    out: &mut [u8; IDENTIFY_DATA_LEN],
) -> Result<(), Status> {
    if after >= 0xFFFF_FFFE {
        return Err(Status::INVALID_NAMESPACE);
    }
    let active: Vec<u32> = hosted
        .subsystem
        .namespaces()
        .map(|(nsid, _)| nsid)
        .collect();
    write_active_namespace_list(&active, after, out)
        .map(|_| ())
        .map_err(|_| Status::INTERNAL_ERROR)
}
