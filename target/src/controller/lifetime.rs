//! Controller lifetime: allocation of controller IDs, keep-alive expiry,
//! and teardown when a connection closes or the socket layer says so.

use crate::controller::admin::abort_aers;
use crate::controller::clock::Timestamp;
use crate::controller::session::QueueSession;
use crate::controller::target::Target;

impl Target {
    /// The connection of `session` closed. Losing the admin queue ends the
    /// controller; losing an I/O queue frees its QID.
    pub fn close_queue(&mut self, session: &mut QueueSession) {
        let Some(binding) = session.binding() else {
            return;
        };
        session.unbind();
        if binding.qid == 0 {
            self.teardown_instance(binding.cntlid, binding.instance);
        } else if let Some(controller) = self.controllers.get_mut(&binding.cntlid) {
            if controller.instance == binding.instance
                && controller.queues.epoch == binding.io_epoch
            {
                controller.queues.connected.remove(&binding.qid);
            }
        }
    }

    /// Keep-alive enforcement: the controllers whose KATO expired by `now`
    /// (each reported once; CSTS.CFS is set). The socket layer closes their
    /// connections and calls [`Self::teardown`].
    pub fn tick(&mut self, now: Timestamp) -> Vec<u16> {
        let mut expired = Vec::new();
        for controller in self.controllers.values_mut() {
            if controller.keep_alive.check_expired(now) {
                controller.registers.set_fatal();
                tracing::info!(cntlid = controller.cntlid, "keep alive timeout expired");
                expired.push(controller.cntlid);
            }
        }
        expired
    }

    /// Frees controller `cntlid`: its ID becomes reusable, its parked
    /// AERs are aborted (see [`Self::take_async_completions`]) and every
    /// queue session bound to it is stale. Returns whether it existed.
    pub fn teardown(&mut self, cntlid: u16) -> bool {
        let Some(mut controller) = self.controllers.remove(&cntlid) else {
            return false;
        };
        let aborted = controller.events.take_parked();
        abort_aers(cntlid, aborted, &mut self.outbox);
        tracing::debug!(cntlid, "controller torn down");
        true
    }

    fn teardown_instance(&mut self, cntlid: u16, instance: u64) {
        if self
            .controllers
            .get(&cntlid)
            .is_some_and(|c| c.instance == instance)
        {
            self.teardown(cntlid);
        }
    }

    /// The next free controller ID, searching on from the last one handed
    /// out so recently freed IDs are not reused at once.
    pub(crate) fn allocate_cntlid(&mut self) -> Option<u16> {
        if self.controllers.len() >= usize::from(self.limits.max_controllers) {
            return None;
        }
        let (min, max) = (
            u32::from(self.limits.cntlid_min),
            u32::from(self.limits.cntlid_max),
        );
        let span = max - min + 1;
        let start = u32::from(self.next_cntlid).clamp(min, max) - min;
        let candidate = (0..span)
            .map(|step| min + (start + step) % span)
            .filter_map(|id| u16::try_from(id).ok())
            .find(|id| !self.controllers.contains_key(id))?;
        let next = min + (u32::from(candidate) - min + 1) % span;
        self.next_cntlid = u16::try_from(next).unwrap_or(self.limits.cntlid_min);
        Some(candidate)
    }
}
