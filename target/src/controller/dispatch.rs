//! Command dispatch: routes each capsule to Connect, the admin command
//! set or the I/O front end, and turns the result into a [`Reply`].

use crate::controller::admin::{self, AdminContext, AdminOutcome, DiscoveryView};
use crate::controller::clock::Timestamp;
use crate::controller::io::{parse_io_command, IoCommand, IoLimits, IoOperation};
use crate::controller::response::{Completion, Reply, Response};
use crate::controller::session::{QueueBinding, QueueSession};
use crate::controller::target::Target;
use crate::nvme::cqe::CompletionQueueEntry;
use crate::nvme::fabrics::FabricsCommand;
use crate::nvme::sqe::SubmissionQueueEntry;
use crate::nvme::status::Status;

/// Where a command ended up.
enum Outcome {
    Done(Completion),
    Io(IoCommand),
    Parked,
    /// An I/O queue's Disconnect: complete it, then unbind the session.
    Disconnected,
}

impl Target {
    /// Processes one command capsule received on `session`.
    ///
    /// `capsule_data` is the capsule's in-capsule data (empty if none).
    /// `out` receives data for the host: on [`Reply::Complete`] with a
    /// non-zero `data_len`, send `out[..data_len]` as C2HData before the
    /// CQE. Give it [`Self::output_buffer_len`] bytes. `now` restarts the
    /// controller's keep-alive timer.
    pub fn submit(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        capsule_data: &[u8],
        out: &mut [u8],
        now: Timestamp,
    ) -> Reply {
        session.advance_head();
        let outcome = match FabricsCommand::from_sqe(sqe) {
            Some(FabricsCommand::Connect(connect)) => {
                Outcome::Done(self.connect(session, sqe, connect, capsule_data, now))
            }
            _ => self
                .dispatch(session, sqe, capsule_data, out, now)
                .unwrap_or_else(|status| Outcome::Done(Completion::with_status(status))),
        };
        match outcome {
            Outcome::Done(completion) => complete(session, sqe.cid, completion),
            Outcome::Io(command) => Reply::Io(command),
            Outcome::Parked => Reply::Deferred,
            Outcome::Disconnected => {
                let reply = complete(session, sqe.cid, Completion::success());
                session.unbind();
                reply
            }
        }
    }

    fn dispatch(
        &mut self,
        session: &mut QueueSession,
        sqe: &SubmissionQueueEntry,
        capsule_data: &[u8],
        out: &mut [u8],
        now: Timestamp,
    ) -> Result<Outcome, Status> {
        // Nothing but Connect may come first on a connection, and a session
        // whose controller was torn down (keep-alive expiry, subsystem
        // removed) is stale: the socket layer should close it.
        let binding = session.binding().ok_or(Status::COMMAND_SEQUENCE_ERROR)?;
        let controller = self
            .controllers
            .get_mut(&binding.cntlid)
            .filter(|controller| controller.instance == binding.instance)
            .ok_or(Status::COMMAND_SEQUENCE_ERROR)?;
        controller.keep_alive.touch(now);
        let subsystem = self.subsystems.get(&controller.host.subnqn);
        if binding.qid == 0 {
            let mut ctx = AdminContext {
                controller,
                subsystem,
                discovery: DiscoveryView {
                    genctr: self.discovery_genctr,
                    listeners: &self.listeners,
                    subsystems: &self.subsystems,
                },
                limits: &self.limits,
                outbox: &mut self.outbox,
            };
            return Ok(match admin::execute(&mut ctx, sqe, out) {
                AdminOutcome::Done(completion) => Outcome::Done(completion),
                AdminOutcome::Parked => Outcome::Parked,
            });
        }
        // An I/O queue lives until a controller reset or shutdown.
        let live = controller.queues.epoch == binding.io_epoch
            && controller.queues.connected.contains(&binding.qid)
            && controller.registers.is_ready();
        if !live {
            return Err(Status::COMMAND_SEQUENCE_ERROR);
        }
        match FabricsCommand::from_sqe(sqe) {
            // Deletes this I/O queue (NVMe Base 2.0 §6.4); the socket layer
            // closes the connection after sending the CQE.
            Some(FabricsCommand::Disconnect) => {
                controller.queues.connected.remove(&binding.qid);
                return Ok(Outcome::Disconnected);
            }
            // Property access belongs to the admin queue.
            Some(_) => return Err(Status::INVALID_OPCODE),
            None => {}
        }
        let hosted = subsystem.ok_or(Status::INTERNAL_ERROR)?;
        let limits = IoLimits::from(&self.limits);
        let command = parse_io_command(sqe, capsule_data, &hosted.subsystem, &limits)
            .map_err(|error| error.status())?;
        session.start_io(command.cid)?;
        Ok(Outcome::Io(command))
    }

    /// The CQE for an I/O command the data path finished with `status`.
    /// Successful commands feed the SMART / Health counters.
    pub fn complete_io(
        &mut self,
        session: &mut QueueSession,
        command: &IoCommand,
        status: Status,
    ) -> CompletionQueueEntry {
        session.finish_io(command.cid);
        if status.is_success() {
            if let Some(binding) = session.binding() {
                self.count_io(binding, command);
            }
        }
        session.cqe(command.cid, &Completion::with_status(status))
    }

    /// Completions raised outside [`Self::submit`] (AERs completed by an
    /// event, or aborted by a reset or teardown), to send on the admin
    /// queue of their controller. Drain after every call that may raise
    /// them.
    pub fn take_async_completions(&mut self) -> Vec<crate::controller::AsyncCompletion> {
        std::mem::take(&mut self.outbox)
    }

    fn count_io(&mut self, binding: QueueBinding, command: &IoCommand) {
        let Some(controller) = self.controllers.get(&binding.cntlid) else {
            return;
        };
        let Some(hosted) = self.subsystems.get_mut(&controller.host.subnqn) else {
            return;
        };
        let stats = &mut hosted.stats;
        match &command.operation {
            IoOperation::Read { range, .. } | IoOperation::Compare { range, .. } => {
                stats.bytes_read = stats.bytes_read.saturating_add(u128::from(range.len));
                stats.host_read_commands = stats.host_read_commands.saturating_add(1);
            }
            IoOperation::Write { range, .. } => {
                stats.bytes_written = stats.bytes_written.saturating_add(u128::from(range.len));
                stats.host_write_commands = stats.host_write_commands.saturating_add(1);
            }
            IoOperation::WriteZeroes { .. } => {
                stats.host_write_commands = stats.host_write_commands.saturating_add(1);
            }
            IoOperation::Flush | IoOperation::DatasetManagement(_) => {}
        }
    }
}

fn complete(session: &QueueSession, cid: u16, completion: Completion) -> Reply {
    Reply::Complete(Response {
        cqe: session.cqe(cid, &completion),
        data_len: completion.data_len,
    })
}
