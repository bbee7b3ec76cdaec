//! The librdmacm boundary: resolving addresses, listening, connecting and
//! accepting through the RDMA connection manager, creating the RC queue
//! pair on a connection, and watching its connection events.
//!
//! Setup uses *synchronous* ids (no event channel of ours): `rdma_connect`,
//! `rdma_get_request` and `rdma_accept` block until the connection manager
//! answers, which is why they run on control threads like the TCP
//! handshake. Once connected, the id is moved to a non-blocking event
//! channel of its own ([`CmId::make_async`]) so the reactor can notice a
//! disconnect with [`CmId::poll_event`] and never block.

use std::ffi::CString;
use std::io;
use std::ptr::{self, NonNull};

use rdma_sys::{
    ibv_qp_init_attr, ibv_qp_type, rdma_accept, rdma_ack_cm_event, rdma_addrinfo, rdma_cm_event,
    rdma_cm_event_type, rdma_cm_id, rdma_conn_param, rdma_connect, rdma_create_ep,
    rdma_create_event_channel, rdma_create_qp, rdma_destroy_ep, rdma_destroy_event_channel,
    rdma_destroy_id, rdma_destroy_qp, rdma_disconnect, rdma_event_channel, rdma_freeaddrinfo,
    rdma_get_cm_event, rdma_get_request, rdma_getaddrinfo, rdma_listen, rdma_migrate_id,
    rdma_port_space, rdma_reject,
};

use super::error::RdmaError;
use super::verbs::{Cq, Device, Pd, Qp};

/// `RAI_PASSIVE` of rdma_cma.h (a macro, so bindgen does not see it).
const RAI_PASSIVE: i32 = 1;

/// Sets O_NONBLOCK on an event channel's file descriptor.
///
/// # Safety
/// `channel` must be a live event channel.
unsafe fn set_nonblocking(channel: NonNull<rdma_event_channel>) -> Result<(), RdmaError> {
    // SAFETY: the caller guarantees the channel; fcntl only sets a flag.
    let fd = unsafe { (*channel.as_ptr()).fd };
    // SAFETY: fcntl on an open descriptor.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(RdmaError::last_os(
            "fcntl(O_NONBLOCK) on an rdma_cm channel",
        ));
    }
    Ok(())
}

/// Splits `host:port` (`[v6]:port` too) into its parts.
pub(super) fn split_address(address: &str) -> Result<(CString, CString), RdmaError> {
    let bad = |reason| RdmaError::Address {
        address: address.to_owned(),
        reason,
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no :port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    port.parse::<u16>()
        .map_err(|_| bad("port is not a number 0..=65535"))?;
    Ok((
        CString::new(host).map_err(|_| bad("NUL in host"))?,
        CString::new(port).map_err(|_| bad("NUL in port"))?,
    ))
}

/// An `rdma_getaddrinfo` result, freed on drop.
struct AddrInfo(NonNull<rdma_addrinfo>);

impl AddrInfo {
    fn resolve(address: &str, passive: bool) -> Result<Self, RdmaError> {
        let (host, port) = split_address(address)?;
        // SAFETY: rdma_addrinfo is plain old data; zeroes mean "no hint".
        let mut hints: rdma_addrinfo = unsafe { std::mem::zeroed() };
        hints.ai_port_space = rdma_port_space::RDMA_PS_TCP as i32;
        hints.ai_qp_type = ibv_qp_type::IBV_QPT_RC as i32;
        if passive {
            hints.ai_flags = RAI_PASSIVE;
        }
        let mut res: *mut rdma_addrinfo = ptr::null_mut();
        // SAFETY: host and port are NUL-terminated and live across the
        // call; `res` receives an allocation we free in Drop.
        let rc = unsafe { rdma_getaddrinfo(host.as_ptr(), port.as_ptr(), &hints, &mut res) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_getaddrinfo"));
        }
        NonNull::new(res).map(AddrInfo).ok_or(RdmaError::Address {
            address: address.to_owned(),
            reason: "no RDMA address",
        })
    }
}

impl Drop for AddrInfo {
    fn drop(&mut self) {
        // SAFETY: from rdma_getaddrinfo, freed once.
        unsafe { rdma_freeaddrinfo(self.0.as_ptr()) };
    }
}

/// The connection parameters we send: our private data, no RDMA READ
/// resources (nothing reads our memory), and full retries (7 means
/// "forever" for receiver-not-ready, which credits make never happen).
fn conn_param(private: &[u8]) -> Result<rdma_conn_param, RdmaError> {
    Ok(rdma_conn_param {
        private_data: private.as_ptr().cast(),
        private_data_len: u8::try_from(private.len())
            .map_err(|_| RdmaError::Config("private data too long"))?,
        responder_resources: 0,
        initiator_depth: 0,
        flow_control: 1,
        retry_count: 7,
        rnr_retry_count: 7,
        srq: 0,
        qp_num: 0,
    })
}

/// The private data of `event` (connect request or establishment).
///
/// # Safety
/// `event` must be a live, not yet acknowledged connection event.
unsafe fn private_data(event: *const rdma_cm_event) -> Vec<u8> {
    // SAFETY: the caller guarantees `event`; connection events carry
    // `param.conn`, whose private data (if any) lives in the event.
    unsafe {
        let conn = &(*event).param.conn;
        if conn.private_data.is_null() || conn.private_data_len == 0 {
            return Vec::new();
        }
        std::slice::from_raw_parts(
            conn.private_data.cast::<u8>(),
            usize::from(conn.private_data_len),
        )
        .to_vec()
    }
}

/// What the connection manager said about an established connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmEvent {
    /// The peer disconnected (or its process died and the kernel did it).
    Disconnected,
    /// The RDMA device went away.
    DeviceRemoval,
    /// Something else (time-wait exit, address change): logged, ignored.
    Other(u32),
}

/// A connection's rdma_cm id, with the RC queue pair created on it.
pub(super) struct CmId {
    id: NonNull<rdma_cm_id>,
    /// Our non-blocking channel once [`CmId::make_async`] ran.
    channel: Option<NonNull<rdma_event_channel>>,
    has_qp: bool,
    connected: bool,
}

// SAFETY: librdmacm ids may be used from any thread; `CmId` owns its id
// and channel exclusively.
unsafe impl Send for CmId {}

impl CmId {
    /// Active side: resolves `address` to an RDMA device, address and route
    /// (blocking, up to a few seconds).
    pub(super) fn resolve(address: &str) -> Result<Self, RdmaError> {
        let info = AddrInfo::resolve(address, false)?;
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: `info` is a live result; no PD and no QP attributes (we
        // create both ourselves); `id` receives a synchronous id.
        let rc =
            unsafe { rdma_create_ep(&mut id, info.0.as_ptr(), ptr::null_mut(), ptr::null_mut()) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_create_ep (resolve)"));
        }
        Self::own(id)
    }

    fn own(id: *mut rdma_cm_id) -> Result<Self, RdmaError> {
        let id = NonNull::new(id).ok_or(RdmaError::Config("null rdma_cm id"))?;
        Ok(CmId {
            id,
            channel: None,
            has_qp: false,
            connected: false,
        })
    }

    /// The device the id is bound to.
    pub(super) fn device(&self) -> Result<Device<'_>, RdmaError> {
        // SAFETY: the id is live (owned).
        let verbs = unsafe { (*self.id.as_ptr()).verbs };
        let verbs =
            NonNull::new(verbs).ok_or(RdmaError::Config("rdma_cm id bound to no device"))?;
        // SAFETY: a resolved or requested id's device is open while the
        // id lives, and librdmacm keeps it open until the process exits.
        Ok(unsafe { Device::new(verbs) })
    }

    /// Creates the RC queue pair on the id, on `pd`, completing into `cq`.
    pub(super) fn create_qp(
        &mut self,
        pd: &Pd,
        cq: &Cq,
        send: u32,
        recv: u32,
    ) -> Result<(), RdmaError> {
        // SAFETY: ibv_qp_init_attr is plain old data; zeroes are valid.
        let mut attr: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        attr.send_cq = cq.as_ptr();
        attr.recv_cq = cq.as_ptr();
        attr.cap.max_send_wr = send;
        attr.cap.max_recv_wr = recv;
        attr.cap.max_send_sge = 1;
        attr.cap.max_recv_sge = 1;
        attr.qp_type = ibv_qp_type::IBV_QPT_RC;
        attr.sq_sig_all = 0;
        // SAFETY: id, pd and cq are live and on the same device; the QP
        // is destroyed (Drop) before the CQ and PD are.
        let rc = unsafe { rdma_create_qp(self.id.as_ptr(), pd.as_ptr(), &mut attr) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_create_qp"));
        }
        self.has_qp = true;
        Ok(())
    }

    /// The queue pair, borrowed from the id.
    pub(super) fn qp(&self) -> Option<Qp<'_>> {
        // SAFETY: the id is live; its qp (if created) lives until Drop,
        // which the borrow of `self` outlasts.
        let qp = NonNull::new(unsafe { (*self.id.as_ptr()).qp })?;
        // SAFETY: live for the borrow of `self` (see above).
        Some(unsafe { Qp::new(qp) })
    }

    /// Active side: connects with our private data and returns the peer's
    /// (from its accept). Blocks until established, refused or timed out.
    pub(super) fn connect(&mut self, private: &[u8]) -> Result<Vec<u8>, RdmaError> {
        let mut param = conn_param(private)?;
        // SAFETY: synchronous id with a QP; `param` and the private data
        // it points to live across the call.
        let rc = unsafe { rdma_connect(self.id.as_ptr(), &mut param) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_connect"));
        }
        self.connected = true;
        // SAFETY: on success a synchronous id keeps the ESTABLISHED event
        // (carrying the accept's private data) in `id->event` until the
        // next call on the id.
        let event = unsafe { (*self.id.as_ptr()).event };
        if event.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: live, unacknowledged connection event (see above).
        Ok(unsafe { private_data(event) })
    }

    /// Passive side: accepts the request this id came from with our private
    /// data. Blocks until established.
    pub(super) fn accept(&mut self, private: &[u8]) -> Result<(), RdmaError> {
        let mut param = conn_param(private)?;
        // SAFETY: as for connect.
        let rc = unsafe { rdma_accept(self.id.as_ptr(), &mut param) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_accept"));
        }
        self.connected = true;
        Ok(())
    }

    /// Passive side: refuses the request this id came from.
    pub(super) fn reject(&mut self) {
        // SAFETY: live id with a pending request; no private data.
        unsafe { rdma_reject(self.id.as_ptr(), ptr::null(), 0) };
    }

    /// Moves the id to a non-blocking event channel of its own, for
    /// [`CmId::poll_event`].
    pub(super) fn make_async(&mut self) -> Result<(), RdmaError> {
        // SAFETY: creates a channel we own (destroyed after the id).
        let channel = NonNull::new(unsafe { rdma_create_event_channel() })
            .ok_or_else(|| RdmaError::last_os("rdma_create_event_channel"))?;
        // SAFETY: live, just created.
        if let Err(error) = unsafe { set_nonblocking(channel) } {
            // SAFETY: created above, used by nobody.
            unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
            return Err(error);
        }
        // SAFETY: both live; this acknowledges the id's pending event and
        // destroys its private synchronous channel.
        let rc = unsafe { rdma_migrate_id(self.id.as_ptr(), channel.as_ptr()) };
        if rc != 0 {
            let error = RdmaError::last_os("rdma_migrate_id");
            // SAFETY: as above.
            unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
            return Err(error);
        }
        self.channel = Some(channel);
        Ok(())
    }

    /// The next connection event, if one is waiting (never blocks; `None`
    /// before [`CmId::make_async`]).
    pub(super) fn poll_event(&mut self) -> Result<Option<CmEvent>, RdmaError> {
        let Some(channel) = self.channel else {
            return Ok(None);
        };
        let mut event: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is live and non-blocking.
        let rc = unsafe { rdma_get_cm_event(channel.as_ptr(), &mut event) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(RdmaError::Verbs {
                call: "rdma_get_cm_event",
                source: error,
            });
        }
        // SAFETY: a live event from the channel, acknowledged right after.
        let kind = unsafe { (*event).event };
        // SAFETY: acknowledged exactly once.
        unsafe { rdma_ack_cm_event(event) };
        Ok(Some(match kind {
            rdma_cm_event_type::RDMA_CM_EVENT_DISCONNECTED => CmEvent::Disconnected,
            rdma_cm_event_type::RDMA_CM_EVENT_DEVICE_REMOVAL => CmEvent::DeviceRemoval,
            other => CmEvent::Other(other),
        }))
    }

    /// Starts a clean disconnect (the QP goes to the error state, its
    /// posted work is flushed, the peer gets a DISCONNECTED event). Never
    /// blocks once the id is asynchronous; a no-op before that.
    pub(super) fn disconnect(&mut self) {
        if self.connected && self.channel.is_some() {
            // SAFETY: live, connected, asynchronous id: returns at once.
            unsafe { rdma_disconnect(self.id.as_ptr()) };
            self.connected = false;
        }
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        self.disconnect();
        // SAFETY: owned id; the QP goes first (it uses the CQ and PD the
        // caller drops after us), then the id, then our channel, which the
        // id no longer uses. Events of ours are acknowledged as read.
        unsafe {
            if self.has_qp {
                rdma_destroy_qp(self.id.as_ptr());
            }
            rdma_destroy_id(self.id.as_ptr());
            if let Some(channel) = self.channel {
                rdma_destroy_event_channel(channel.as_ptr());
            }
        }
    }
}

/// A listening rdma_cm id.
pub(super) struct CmListener(NonNull<rdma_cm_id>);

// SAFETY: as for `CmId`.
unsafe impl Send for CmListener {}

impl CmListener {
    /// Binds `address` (`ip:port`, an address of an RDMA device's netdev)
    /// and listens. The listening channel is non-blocking:
    /// [`CmListener::get_request`] returns `None` when no request waits.
    pub(super) fn bind(address: &str, backlog: i32) -> Result<Self, RdmaError> {
        let info = AddrInfo::resolve(address, true)?;
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: live passive result; no PD, no QP attributes.
        let rc =
            unsafe { rdma_create_ep(&mut id, info.0.as_ptr(), ptr::null_mut(), ptr::null_mut()) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_create_ep (listen)"));
        }
        let listener = CmListener(NonNull::new(id).ok_or(RdmaError::Config("null rdma_cm id"))?);
        // SAFETY: live, bound id.
        if unsafe { rdma_listen(listener.0.as_ptr(), backlog) } != 0 {
            return Err(RdmaError::last_os("rdma_listen"));
        }
        // SAFETY: a synchronous id's channel lives as long as the id.
        let channel = NonNull::new(unsafe { (*listener.0.as_ptr()).channel })
            .ok_or(RdmaError::Config("listening id without a channel"))?;
        // SAFETY: live channel (above).
        unsafe { set_nonblocking(channel) }?;
        Ok(listener)
    }

    /// The next connect request, if one waits: its id (synchronous, with
    /// a blocking channel of its own, no QP yet) and the requester's
    /// private data.
    pub(super) fn get_request(&self) -> Result<Option<(CmId, Vec<u8>)>, RdmaError> {
        let mut id: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: live synchronous listening id on a non-blocking channel.
        let rc = unsafe { rdma_get_request(self.0.as_ptr(), &mut id) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(RdmaError::Verbs {
                call: "rdma_get_request",
                source: error,
            });
        }
        let id = CmId::own(id)?;
        // SAFETY: rdma_get_request leaves the CONNECT_REQUEST event in the
        // new id's `event` until the accept.
        let event = unsafe { (*id.id.as_ptr()).event };
        let private = if event.is_null() {
            Vec::new()
        } else {
            // SAFETY: live, unacknowledged connection event.
            unsafe { private_data(event) }
        };
        Ok(Some((id, private)))
    }
}

impl Drop for CmListener {
    fn drop(&mut self) {
        // SAFETY: owned listening id without QP.
        unsafe { rdma_destroy_ep(self.0.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::split_address;

    #[test]
    fn addresses() {
        assert!(split_address("192.0.2.1:4422").is_ok());
        assert!(split_address("[::1]:4422").is_ok());
        assert!(split_address("192.0.2.1").is_err());
        assert!(split_address(":4422").is_err());
        assert!(split_address("h:99999").is_err());
    }
}
