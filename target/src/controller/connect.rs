//! Fabrics Connect (NVMe Base 2.0 §6.3): admin queue Connect creates a
//! controller (dynamic controller model), I/O queue Connect attaches a
//! queue to an existing one.

use thiserror::Error;

use crate::controller::clock::Timestamp;
use crate::controller::keep_alive::DISCOVERY_DEFAULT_KATO_MS;
use crate::controller::response::Completion;
use crate::controller::session::{QueueBinding, QueueSession};
use crate::controller::state::{Controller, ControllerKind, HostIdentity};
use crate::controller::target::Target;
use crate::nvme::fabrics::{
    connect_data_offset, connect_sqe_offset, connect_success_dw0, ConnectCommand, ConnectData,
    ConnectDataError, ConnectInvalidParameter, CNTLID_DYNAMIC, CONNECT_DATA_LEN,
};
use crate::nvme::nqn::DISCOVERY_NQN;
use crate::nvme::sgl::SglDescriptor;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;

/// CNTLID FFFEh: "any controller" in the static model; accepted like FFFFh.
const CNTLID_ANY_STATIC: u16 = 0xFFFE;

/// A Connect parameter a rejection points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectParameter {
    /// QID (SQE).
    Qid,
    /// SQSIZE (SQE).
    Sqsize,
    /// HOSTID (data).
    HostId,
    /// CNTLID (data).
    Cntlid,
    /// SUBNQN (data).
    SubNqn,
    /// HOSTNQN (data).
    HostNqn,
}

impl ConnectParameter {
    /// IATTR and IPO for the completion's DW0.
    pub const fn location(self) -> ConnectInvalidParameter {
        let (in_data, offset) = match self {
            Self::Qid => (false, connect_sqe_offset::QID),
            Self::Sqsize => (false, connect_sqe_offset::SQSIZE),
            Self::HostId => (true, connect_data_offset::HOSTID),
            Self::Cntlid => (true, connect_data_offset::CNTLID),
            Self::SubNqn => (true, connect_data_offset::SUBNQN),
            Self::HostNqn => (true, connect_data_offset::HOSTNQN),
        };
        ConnectInvalidParameter { in_data, offset }
    }
}

/// Why a Connect is refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRejection {
    /// RECFMT other than 0.
    #[error("record format {0} is not supported")]
    IncompatibleFormat(u16),
    /// The Connect data is not 1024 bytes of in-capsule data.
    #[error("Connect data: {0}")]
    DataPointer(Status),
    /// A parameter is invalid or names nothing that exists.
    #[error("invalid Connect parameter {0:?}")]
    InvalidParameter(ConnectParameter),
    /// The subsystem does not allow this host.
    #[error("host is not allowed to connect to the subsystem")]
    HostNotAllowed,
    /// I/O queue Connect before the controller was enabled.
    #[error("controller is not ready for I/O queues")]
    ControllerNotReady,
    /// The QID is connected already, or this connection is.
    #[error("queue is connected already")]
    AlreadyConnected,
    /// Every controller ID is in use.
    #[error("no controller ID is free")]
    ControllerBusy,
}

impl ConnectRejection {
    /// The completion status (NVMe Base 2.0 §6.3, "Connect Response").
    pub const fn status(&self) -> Status {
        match self {
            Self::IncompatibleFormat(_) => Status::CONNECT_INCOMPATIBLE_FORMAT,
            Self::DataPointer(status) => *status,
            Self::InvalidParameter(_) => Status::CONNECT_INVALID_PARAMETERS,
            Self::HostNotAllowed => Status::CONNECT_INVALID_HOST,
            Self::ControllerNotReady | Self::AlreadyConnected => Status::COMMAND_SEQUENCE_ERROR,
            Self::ControllerBusy => Status::CONNECT_CONTROLLER_BUSY,
        }
    }

    /// Completion DW0: IATTR/IPO for invalid parameters, else 0.
    pub const fn dw0(&self) -> u32 {
        match self {
            Self::InvalidParameter(parameter) => parameter.location().dw0(),
            _ => 0,
        }
    }

    fn completion(&self) -> Completion {
        Completion {
            dw0: self.dw0(),
            ..Completion::with_status(self.status())
        }
    }
}

impl From<ConnectDataError> for ConnectRejection {
    fn from(error: ConnectDataError) -> Self {
        match error {
            ConnectDataError::Length { .. } => Self::DataPointer(error.status()),
            ConnectDataError::SubNqn(_) => Self::InvalidParameter(ConnectParameter::SubNqn),
            ConnectDataError::HostNqn(_) => Self::InvalidParameter(ConnectParameter::HostNqn),
        }
    }
}

/// The 1024 bytes of Connect data, from the capsule (the Linux host always
/// sends them in-capsule with SGL 01h).
fn connect_data_bytes<'a>(
    sqe: &SubmissionQueueEntry,
    capsule_data: &'a [u8],
) -> Result<&'a [u8], ConnectRejection> {
    match sqe.sgl1() {
        SglDescriptor::InCapsule { offset, length } => {
            if length as usize != CONNECT_DATA_LEN {
                return Err(ConnectRejection::DataPointer(
                    Status::DATA_SGL_LENGTH_INVALID,
                ));
            }
            let start = usize::try_from(offset).ok();
            start
                .and_then(|start| capsule_data.get(start..start.checked_add(CONNECT_DATA_LEN)?))
                .ok_or(ConnectRejection::DataPointer(Status::SGL_OFFSET_INVALID))
        }
        _ => Err(ConnectRejection::DataPointer(
            Status::SGL_DESCRIPTOR_TYPE_INVALID,
        )),
    }
}

impl Target {
    /// Handles a Connect on `session`; returns its completion.
    pub(crate) fn connect(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        command: ConnectCommand,
        capsule_data: &[u8],
        now: Timestamp,
    ) -> Completion {
        match self.try_connect(session, sqe, command, capsule_data, now) {
            Ok(binding) => {
                session.bind(binding);
                Completion::with_dw0(connect_success_dw0(binding.cntlid, 0))
            }
            Err(rejection) => {
                tracing::debug!(%rejection, qid = command.qid, "Connect refused");
                rejection.completion()
            }
        }
    }

    fn try_connect(
        &mut self,
        session: &QueueSession,
        sqe: &SubmissionQueueEntry,
        command: ConnectCommand,
        capsule_data: &[u8],
        now: Timestamp,
    ) -> Result<QueueBinding, ConnectRejection> {
        if session.is_connected() {
            return Err(ConnectRejection::AlreadyConnected);
        }
        if command.recfmt != 0 {
            return Err(ConnectRejection::IncompatibleFormat(command.recfmt));
        }
        let data = ConnectData::parse(connect_data_bytes(sqe, capsule_data)?)?;
        if data.host_id == [0; 16] {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::HostId));
        }
        // SQSIZE is 0's based and a queue needs at least two entries.
        if command.sqsize == 0 || command.sqsize > self.limits.mqes {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::Sqsize));
        }
        if command.qid == 0 {
            self.connect_admin(command, &data, now)
        } else {
            self.connect_io(command, &data, now)
        }
    }

    fn connect_admin(
        &mut self,
        command: ConnectCommand,
        data: &ConnectData<'_>,
        now: Timestamp,
    ) -> Result<QueueBinding, ConnectRejection> {
        // Dynamic controller model (FCATT = 0): the host asks for "any".
        if data.cntlid != CNTLID_DYNAMIC && data.cntlid != CNTLID_ANY_STATIC {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::Cntlid));
        }
        let (kind, kato_ms) = if data.subnqn == DISCOVERY_NQN {
            let kato = match command.kato {
                0 => DISCOVERY_DEFAULT_KATO_MS,
                kato => kato,
            };
            (ControllerKind::Discovery, kato)
        } else {
            let hosted = self
                .subsystems
                .get(data.subnqn)
                .ok_or(ConnectRejection::InvalidParameter(ConnectParameter::SubNqn))?;
            if !hosted.subsystem.host_allowed(data.hostnqn) {
                return Err(ConnectRejection::HostNotAllowed);
            }
            (ControllerKind::Nvm, command.kato)
        };
        let cntlid = self
            .allocate_cntlid()
            .ok_or(ConnectRejection::ControllerBusy)?;
        let instance = self.next_instance;
        self.next_instance = self.next_instance.wrapping_add(1);
        let host = HostIdentity {
            subnqn: data.subnqn.to_owned(),
            hostnqn: data.hostnqn.to_owned(),
            host_id: data.host_id,
        };
        let controller = Controller::new(cntlid, instance, kind, host, kato_ms, &self.limits, now);
        self.controllers.insert(cntlid, controller);
        tracing::debug!(
            cntlid,
            subnqn = data.subnqn,
            hostnqn = data.hostnqn,
            "controller created"
        );
        Ok(QueueBinding {
            cntlid,
            qid: 0,
            instance,
            io_epoch: 0,
            entries: command.queue_entries(),
            sq_flow_control_disabled: command.sq_flow_control_disabled(),
        })
    }

    fn connect_io(
        &mut self,
        command: ConnectCommand,
        data: &ConnectData<'_>,
        now: Timestamp,
    ) -> Result<QueueBinding, ConnectRejection> {
        let controller = self
            .controllers
            .get_mut(&data.cntlid)
            .ok_or(ConnectRejection::InvalidParameter(ConnectParameter::Cntlid))?;
        // The queue must come from the host that created the controller.
        let host = &controller.host;
        if host.subnqn != data.subnqn {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::SubNqn));
        }
        if host.hostnqn != data.hostnqn {
            return Err(ConnectRejection::InvalidParameter(
                ConnectParameter::HostNqn,
            ));
        }
        if host.host_id != data.host_id {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::HostId));
        }
        if command.qid > controller.queues.granted {
            return Err(ConnectRejection::InvalidParameter(ConnectParameter::Qid));
        }
        if !controller.registers.is_ready() {
            return Err(ConnectRejection::ControllerNotReady);
        }
        if !controller.queues.connected.insert(command.qid) {
            return Err(ConnectRejection::AlreadyConnected);
        }
        // Setting up many I/O queues takes a while and the host sends no
        // Keep Alive meanwhile; the Connects are traffic of this
        // controller, so they restart the timer (nvmet does the same).
        controller.keep_alive.touch(now);
        Ok(QueueBinding {
            cntlid: controller.cntlid,
            qid: command.qid,
            instance: controller.instance,
            io_epoch: controller.queues.epoch,
            entries: command.queue_entries(),
            sq_flow_control_disabled: command.sq_flow_control_disabled(),
        })
    }
}
