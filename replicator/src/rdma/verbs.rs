//! The libibverbs boundary: protection domain, completion queue, the
//! registered buffer ring, and posting and polling work requests. Every
//! `unsafe` block of the data path is here; the rest of `rdma` is safe Rust
//! over these types.

use std::io;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};

use rdma_sys::{
    ibv_access_flags, ibv_ack_cq_events, ibv_alloc_pd, ibv_comp_channel, ibv_context, ibv_cq,
    ibv_create_comp_channel, ibv_create_cq, ibv_dealloc_pd, ibv_dereg_mr, ibv_destroy_comp_channel,
    ibv_destroy_cq, ibv_get_cq_event, ibv_mr, ibv_pd, ibv_poll_cq, ibv_post_recv, ibv_post_send,
    ibv_qp, ibv_recv_wr, ibv_reg_mr, ibv_req_notify_cq, ibv_send_flags, ibv_send_wr, ibv_sge,
    ibv_wc, ibv_wc_status, ibv_wc_status_str, ibv_wr_opcode,
};

use super::error::RdmaError;

/// An open RDMA device, borrowed from the rdma_cm id bound to it.
#[derive(Clone, Copy)]
pub(super) struct Device<'a> {
    context: NonNull<ibv_context>,
    _owner: PhantomData<&'a ()>,
}

impl Device<'_> {
    /// # Safety
    /// `context` must be an open device context for the lifetime `'a`
    /// and for as long as anything created on it (librdmacm keeps a
    /// device open while any id uses it, and its contexts until exit).
    pub(super) unsafe fn new(context: NonNull<ibv_context>) -> Self {
        Device {
            context,
            _owner: PhantomData,
        }
    }
}

/// A protection domain.
pub(super) struct Pd(NonNull<ibv_pd>);

// SAFETY: verbs objects may be used from any thread (libibverbs is
// thread-safe); `Pd` owns its domain and hands out no aliases.
unsafe impl Send for Pd {}

impl Pd {
    /// Allocates a protection domain on `device`.
    pub(super) fn alloc(device: Device<'_>) -> Result<Self, RdmaError> {
        // SAFETY: `device` is open (its constructor's contract).
        let pd = unsafe { ibv_alloc_pd(device.context.as_ptr()) };
        NonNull::new(pd)
            .map(Pd)
            .ok_or_else(|| RdmaError::last_os("ibv_alloc_pd"))
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_pd {
        self.0.as_ptr()
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        // SAFETY: we own the domain; every MR and QP on it is destroyed
        // first (field order in `RdmaLink`).
        unsafe { ibv_dealloc_pd(self.0.as_ptr()) };
    }
}

/// What one work completion said, copied out of the `ibv_wc`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Completion {
    /// The `wr_id` posted: the buffer slot.
    pub wr_id: u64,
    /// `IBV_WC_SUCCESS` or an error status.
    pub status: u32,
    /// Bytes received (receives only).
    pub byte_len: u32,
    /// Provider-specific error detail.
    pub vendor_err: u32,
}

impl Completion {
    pub fn ok(&self) -> bool {
        self.status == ibv_wc_status::IBV_WC_SUCCESS
    }

    /// The status as libibverbs spells it.
    pub fn status_str(&self) -> String {
        // SAFETY: ibv_wc_status_str returns a pointer to a static string
        // for every value, known or not.
        let text = unsafe { ibv_wc_status_str(self.status) };
        if text.is_null() {
            return format!("status {}", self.status);
        }
        // SAFETY: non-null, NUL-terminated, static.
        unsafe { std::ffi::CStr::from_ptr(text) }
            .to_string_lossy()
            .into_owned()
    }
}

/// Completions read per `ibv_poll_cq` call.
pub(super) const POLL_BATCH: usize = 32;

/// A completion channel with a non-blocking descriptor: readable when an
/// armed CQ got a completion, so a reactor can wait for it in its ring.
struct CompChannel(NonNull<ibv_comp_channel>);

impl CompChannel {
    fn create(device: Device<'_>) -> Result<Self, RdmaError> {
        // SAFETY: `device` is open.
        let channel = unsafe { ibv_create_comp_channel(device.context.as_ptr()) };
        let channel = NonNull::new(channel)
            .map(CompChannel)
            .ok_or_else(|| RdmaError::last_os("ibv_create_comp_channel"))?;
        let fd = channel.fd();
        // SAFETY: fcntl on the channel's open descriptor only sets a flag.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(RdmaError::last_os(
                "fcntl(O_NONBLOCK) on a completion channel",
            ));
        }
        Ok(channel)
    }

    fn fd(&self) -> i32 {
        // SAFETY: the channel is live (owned).
        unsafe { (*self.0.as_ptr()).fd }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: owned; the CQ using it is destroyed first (`Cq::drop`
        // runs before its fields drop).
        unsafe { ibv_destroy_comp_channel(self.0.as_ptr()) };
    }
}

/// A completion queue, polled; its completion channel only wakes the
/// poller (see [`Cq::arm`]).
pub(super) struct Cq {
    cq: NonNull<ibv_cq>,
    channel: CompChannel,
}

// SAFETY: as for `Pd`.
unsafe impl Send for Cq {}

impl Cq {
    /// Creates a CQ on `device` with room for `entries` completions, with a
    /// completion channel of its own.
    pub(super) fn create(device: Device<'_>, entries: u32) -> Result<Self, RdmaError> {
        let entries = i32::try_from(entries).map_err(|_| RdmaError::Config("CQ too large"))?;
        let channel = CompChannel::create(device)?;
        // SAFETY: `device` and `channel` are live; vector 0.
        let cq = unsafe {
            ibv_create_cq(
                device.context.as_ptr(),
                entries,
                ptr::null_mut(),
                channel.0.as_ptr(),
                0,
            )
        };
        let cq = NonNull::new(cq).ok_or_else(|| RdmaError::last_os("ibv_create_cq"))?;
        Ok(Cq { cq, channel })
    }

    pub(super) fn as_ptr(&self) -> *mut ibv_cq {
        self.cq.as_ptr()
    }

    /// The completion channel's descriptor: readable once an armed CQ got
    /// a completion.
    pub(super) fn notify_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open as long as the channel, which
        // `self` owns and the borrow cannot outlive.
        unsafe { BorrowedFd::borrow_raw(self.channel.fd()) }
    }

    /// Asks for one notification on the channel at the next completion.
    /// Completions already queued produce none: poll after arming.
    pub(super) fn arm(&self) -> Result<(), RdmaError> {
        // SAFETY: live CQ; 0 = any completion, not only solicited ones.
        let rc = unsafe { ibv_req_notify_cq(self.cq.as_ptr(), 0) };
        if rc != 0 {
            return Err(RdmaError::errno("ibv_req_notify_cq", rc));
        }
        Ok(())
    }

    /// Reads and acknowledges every notification waiting on the channel
    /// (never blocks); returns how many there were.
    pub(super) fn take_events(&self) -> Result<u32, RdmaError> {
        let mut events = 0u32;
        loop {
            let mut cq: *mut ibv_cq = ptr::null_mut();
            let mut context: *mut libc::c_void = ptr::null_mut();
            // SAFETY: live, non-blocking channel; out-pointers are ours.
            let rc = unsafe { ibv_get_cq_event(self.channel.0.as_ptr(), &mut cq, &mut context) };
            if rc != 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                return Err(RdmaError::Verbs {
                    call: "ibv_get_cq_event",
                    source: error,
                });
            }
            events = events.saturating_add(1);
        }
        if events > 0 {
            // SAFETY: live CQ (the channel serves only it); every event
            // read above is acknowledged once, as destroy_cq requires.
            unsafe { ibv_ack_cq_events(self.cq.as_ptr(), events) };
        }
        Ok(events)
    }

    /// Reads up to `out.len()` (at most [`POLL_BATCH`]) completions without
    /// blocking; returns how many.
    pub(super) fn poll(&self, out: &mut [Completion; POLL_BATCH]) -> Result<usize, RdmaError> {
        // SAFETY: ibv_wc is plain old data (integers and a union of
        // integers); all zeroes is a valid value.
        let mut wcs: [ibv_wc; POLL_BATCH] = unsafe { std::mem::zeroed() };
        // SAFETY: the CQ is live (owned), `wcs` has room for POLL_BATCH
        // entries, and the provider writes at most that many.
        let n = unsafe { ibv_poll_cq(self.cq.as_ptr(), POLL_BATCH as i32, wcs.as_mut_ptr()) };
        if n < 0 {
            return Err(RdmaError::errno("ibv_poll_cq", n));
        }
        let n = usize::try_from(n).unwrap_or(0).min(POLL_BATCH);
        for (slot, wc) in out.iter_mut().zip(wcs.iter()).take(n) {
            *slot = Completion {
                wr_id: wc.wr_id,
                status: wc.status,
                byte_len: wc.byte_len,
                vendor_err: wc.vendor_err,
            };
        }
        Ok(n)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        // SAFETY: owned; the QP using it is destroyed first; every event
        // read from the channel was acknowledged (`take_events`). The
        // channel is destroyed after this, when the field drops.
        unsafe { ibv_destroy_cq(self.cq.as_ptr()) };
    }
}

/// A connected queue pair, borrowed from the rdma_cm id that owns it.
#[derive(Clone, Copy)]
pub(super) struct Qp<'a> {
    qp: NonNull<ibv_qp>,
    _owner: PhantomData<&'a ()>,
}

impl Qp<'_> {
    /// # Safety
    /// `qp` must stay a live queue pair for the lifetime `'a` (tie it to a
    /// borrow of its owner).
    pub(super) unsafe fn new(qp: NonNull<ibv_qp>) -> Self {
        Qp {
            qp,
            _owner: PhantomData,
        }
    }
}

/// Who may touch a buffer slot now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Not posted: Rust code may read and write it.
    Software,
    /// Posted to the device (a receive it may write, a send it may read):
    /// no Rust reference to it may exist until its completion.
    Device,
}

/// The link's buffers: one allocation cut into equal slots, registered once
/// with the device (`ibv_reg_mr`) for the link's lifetime. Slots are handed
/// to the device by posting them and come back on their completion; the
/// ownership of every slot is tracked so safe code can only see slots the
/// device is not using.
pub(super) struct Buffers {
    base: NonNull<u8>,
    len: usize,
    slot_size: usize,
    owners: Vec<Owner>,
    mr: NonNull<ibv_mr>,
}

// SAFETY: the memory and the MR are owned exclusively; verbs objects may
// be used from any thread.
unsafe impl Send for Buffers {}

impl Buffers {
    /// Allocates `slots` zeroed slots of `slot_size` bytes and registers
    /// them (local write access: receives land in them; nothing remote
    /// may touch them, so no remote keys are handed out).
    pub(super) fn register(pd: &Pd, slots: usize, slot_size: usize) -> Result<Self, RdmaError> {
        let len = slots
            .checked_mul(slot_size)
            .filter(|len| *len > 0)
            .ok_or(RdmaError::Config("buffer ring size"))?;
        let memory: Box<[u8]> = vec![0u8; len].into_boxed_slice();
        let base = NonNull::new(Box::into_raw(memory).cast::<u8>())
            .ok_or(RdmaError::Config("buffer allocation"))?;
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0 as i32;
        // SAFETY: `pd` is live; [base, base + len) is an allocation we own
        // and keep until after `ibv_dereg_mr` (Drop).
        let mr = unsafe { ibv_reg_mr(pd.as_ptr(), base.as_ptr().cast(), len, access) };
        let Some(mr) = NonNull::new(mr) else {
            let error = RdmaError::last_os("ibv_reg_mr");
            // SAFETY: `base` came from Box::into_raw of a [u8] of `len`
            // bytes and was not registered.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(base.as_ptr(), len)) });
            return Err(error);
        };
        Ok(Buffers {
            base,
            len,
            slot_size,
            owners: vec![Owner::Software; slots],
            mr,
        })
    }

    fn range(&self, slot: usize) -> Option<(usize, usize)> {
        let start = slot.checked_mul(self.slot_size)?;
        let end = start.checked_add(self.slot_size)?;
        (end <= self.len).then_some((start, end))
    }

    fn owned(&self, slot: usize) -> bool {
        self.owners.get(slot) == Some(&Owner::Software)
    }

    /// The first `len` bytes of `slot`, if software owns it.
    pub(super) fn slot(&self, slot: usize, len: usize) -> Option<&[u8]> {
        let (start, _) = self.range(slot)?;
        if !self.owned(slot) || len > self.slot_size {
            return None;
        }
        // SAFETY: in bounds of our allocation; the device does not own
        // the slot (not posted), and `&self` prevents any `&mut` to it.
        Some(unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) })
    }

    /// The whole of `slot` for writing, if software owns it.
    pub(super) fn slot_mut(&mut self, slot: usize) -> Option<&mut [u8]> {
        let (start, _) = self.range(slot)?;
        if !self.owned(slot) {
            return None;
        }
        // SAFETY: in bounds; not posted; `&mut self` makes it unique.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), self.slot_size)
        })
    }

    fn sge(&self, slot: usize, len: usize) -> Option<ibv_sge> {
        let (start, _) = self.range(slot)?;
        if len > self.slot_size {
            return None;
        }
        // SAFETY: `mr` is live (owned, deregistered only in Drop).
        let lkey = unsafe { (*self.mr.as_ptr()).lkey };
        Some(ibv_sge {
            addr: (self.base.as_ptr() as u64).checked_add(start as u64)?,
            length: u32::try_from(len).ok()?,
            lkey,
        })
    }

    /// Posts `slot` as a receive buffer (the whole slot).
    pub(super) fn post_recv(&mut self, qp: Qp<'_>, slot: usize) -> Result<(), RdmaError> {
        if !self.owned(slot) {
            return Err(RdmaError::Config("receive slot not free"));
        }
        let mut sge = self
            .sge(slot, self.slot_size)
            .ok_or(RdmaError::Config("receive slot out of range"))?;
        let mut wr = ibv_recv_wr {
            wr_id: slot as u64,
            next: ptr::null_mut(),
            sg_list: &mut sge,
            num_sge: 1,
        };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: the QP is live for `qp`'s borrow; `wr` and `sge` live
        // across the call (the provider copies them); the slot is in the
        // registered region and no Rust reference to it exists now.
        let rc = unsafe { ibv_post_recv(qp.qp.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::errno("ibv_post_recv", rc));
        }
        if let Some(owner) = self.owners.get_mut(slot) {
            *owner = Owner::Device;
        }
        Ok(())
    }

    /// Posts the first `len` bytes of `slot` as one signaled SEND.
    pub(super) fn post_send(
        &mut self,
        qp: Qp<'_>,
        slot: usize,
        len: usize,
    ) -> Result<(), RdmaError> {
        if !self.owned(slot) {
            return Err(RdmaError::Config("send slot not free"));
        }
        let mut sge = self
            .sge(slot, len)
            .ok_or(RdmaError::Config("send slot out of range"))?;
        // SAFETY: ibv_send_wr is plain old data (integers, pointers and
        // unions of them); all zeroes is valid, the fields used are set.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = slot as u64;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        // SAFETY: as for post_recv; the device reads the slot until the
        // completion, and the slot is marked Device so Rust cannot touch it.
        let rc = unsafe { ibv_post_send(qp.qp.as_ptr(), &mut wr, &mut bad) };
        if rc != 0 {
            return Err(RdmaError::errno("ibv_post_send", rc));
        }
        if let Some(owner) = self.owners.get_mut(slot) {
            *owner = Owner::Device;
        }
        Ok(())
    }

    /// The device is done with `slot` (its completion arrived). False if it
    /// was not posted: a completion we did not ask for.
    pub(super) fn completed(&mut self, slot: usize) -> bool {
        match self.owners.get_mut(slot) {
            Some(owner @ Owner::Device) => {
                *owner = Owner::Software;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: the QP is destroyed before the buffers (field order in
        // `RdmaLink`), so the device no longer uses the region; then the
        // memory goes back to the allocator it came from.
        unsafe {
            ibv_dereg_mr(self.mr.as_ptr());
            drop(Box::from_raw(ptr::slice_from_raw_parts_mut(
                self.base.as_ptr(),
                self.len,
            )));
        }
    }
}
