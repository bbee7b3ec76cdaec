//! The librdmacm boundary: resolving addresses, listening, connecting and
//! accepting through the RDMA connection manager, creating the RC queue
//! pair on a connection, and watching its connection events.
//!
//! Every connection's id has a non-blocking event channel of its own. Setup
//! (address and route resolution, connect, accept) waits for the connection
//! manager's events on it with `poll(2)` and a deadline, so a dead or
//! silent peer costs at most the setup timeout; these waits run on control
//! threads, like the TCP handshake. Once connected, the reactor reads the
//! same channel without blocking ([`CmId::poll_event`]) to notice a
//! disconnect. Listening uses a synchronous listening id on a non-blocking
//! channel ([`CmListener::get_request`] never waits).

use std::ffi::{CStr, CString};
use std::io;
use std::ptr::{self, NonNull};
use std::time::Instant;

use rdma_sys::{
    ibv_qp_init_attr, ibv_qp_type, rdma_accept, rdma_ack_cm_event, rdma_addrinfo, rdma_cm_event,
    rdma_cm_event_type, rdma_cm_id, rdma_conn_param, rdma_connect, rdma_create_ep,
    rdma_create_event_channel, rdma_create_id, rdma_create_qp, rdma_destroy_ep,
    rdma_destroy_event_channel, rdma_destroy_id, rdma_destroy_qp, rdma_disconnect,
    rdma_event_channel, rdma_event_str, rdma_freeaddrinfo, rdma_get_cm_event, rdma_get_request,
    rdma_getaddrinfo, rdma_listen, rdma_migrate_id, rdma_port_space, rdma_reject,
    rdma_resolve_addr, rdma_resolve_route,
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

/// A new event channel with a non-blocking descriptor.
fn new_channel() -> Result<NonNull<rdma_event_channel>, RdmaError> {
    // SAFETY: creates a channel the caller owns.
    let channel = NonNull::new(unsafe { rdma_create_event_channel() })
        .ok_or_else(|| RdmaError::last_os("rdma_create_event_channel"))?;
    // SAFETY: live, just created.
    if let Err(error) = unsafe { set_nonblocking(channel) } {
        // SAFETY: created above, used by nobody.
        unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
        return Err(error);
    }
    Ok(channel)
}

/// The connection manager's name for an event type.
fn event_name(kind: u32) -> String {
    // SAFETY: rdma_event_str returns a static string for every value.
    let text = unsafe { rdma_event_str(kind) };
    if text.is_null() {
        return format!("event {kind}");
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// Milliseconds left until `deadline` (at least 1), or a timeout error.
fn ms_left(deadline: Instant, step: &'static str) -> Result<i32, RdmaError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(RdmaError::SetupTimeout(step));
    }
    Ok(i32::try_from(left.as_millis()).unwrap_or(i32::MAX).max(1))
}

/// Waits until `deadline` for the next event on `channel`; it must be
/// `want` with status 0. Returns its private data (connection events).
fn wait_event(
    channel: NonNull<rdma_event_channel>,
    want: u32,
    deadline: Instant,
    step: &'static str,
) -> Result<Vec<u8>, RdmaError> {
    loop {
        let mut event: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: live, non-blocking channel.
        let rc = unsafe { rdma_get_cm_event(channel.as_ptr(), &mut event) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::WouldBlock {
                return Err(RdmaError::Verbs {
                    call: "rdma_get_cm_event",
                    source: error,
                });
            }
            let mut fd = libc::pollfd {
                // SAFETY: live channel.
                fd: unsafe { (*channel.as_ptr()).fd },
                events: libc::POLLIN,
                revents: 0,
            };
            let timeout = ms_left(deadline, step)?;
            // SAFETY: one valid pollfd for the duration of the call.
            if unsafe { libc::poll(&mut fd, 1, timeout) } < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(RdmaError::Verbs {
                        call: "poll(rdma_cm channel)",
                        source: error,
                    });
                }
            }
            continue;
        }
        // SAFETY: a live event from the channel: read, then acknowledged
        // exactly once.
        let (kind, status, private) = unsafe {
            let kind = (*event).event;
            let status = (*event).status;
            let private = match kind {
                rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED
                | rdma_cm_event_type::RDMA_CM_EVENT_REJECTED => private_data(event),
                _ => Vec::new(),
            };
            rdma_ack_cm_event(event);
            (kind, status, private)
        };
        if kind == want && status == 0 {
            return Ok(private);
        }
        return Err(RdmaError::SetupFailed {
            step,
            event: event_name(kind),
            status,
        });
    }
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
    /// Active side: resolves `address` to an RDMA device, address and route,
    /// waiting at most until `deadline`.
    pub(super) fn resolve(address: &str, deadline: Instant) -> Result<Self, RdmaError> {
        let info = AddrInfo::resolve(address, false)?;
        let channel = new_channel()?;
        let mut raw: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: live channel; `raw` receives an id on it.
        let rc = unsafe {
            rdma_create_id(
                channel.as_ptr(),
                &mut raw,
                ptr::null_mut(),
                rdma_port_space::RDMA_PS_TCP,
            )
        };
        let Some(id) = NonNull::new(raw).filter(|_| rc == 0) else {
            let error = RdmaError::last_os("rdma_create_id");
            // SAFETY: no id uses the channel.
            unsafe { rdma_destroy_event_channel(channel.as_ptr()) };
            return Err(error);
        };
        // From here on Drop destroys the id, then the channel.
        let id = CmId {
            id,
            channel: Some(channel),
            has_qp: false,
            connected: false,
        };
        let timeout = ms_left(deadline, "address resolution")?.min(2000);
        // SAFETY: live id; the addresses live in `info` across the call.
        let rc = unsafe {
            let info = info.0.as_ptr();
            rdma_resolve_addr(
                id.id.as_ptr(),
                (*info).ai_src_addr,
                (*info).ai_dst_addr,
                timeout,
            )
        };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_resolve_addr"));
        }
        wait_event(
            channel,
            rdma_cm_event_type::RDMA_CM_EVENT_ADDR_RESOLVED,
            deadline,
            "address resolution",
        )?;
        let timeout = ms_left(deadline, "route resolution")?.min(2000);
        // SAFETY: live id with a resolved address.
        if unsafe { rdma_resolve_route(id.id.as_ptr(), timeout) } != 0 {
            return Err(RdmaError::last_os("rdma_resolve_route"));
        }
        wait_event(
            channel,
            rdma_cm_event_type::RDMA_CM_EVENT_ROUTE_RESOLVED,
            deadline,
            "route resolution",
        )?;
        Ok(id)
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
    /// (from its accept); waits at most until `deadline`.
    pub(super) fn connect(
        &mut self,
        private: &[u8],
        deadline: Instant,
    ) -> Result<Vec<u8>, RdmaError> {
        let channel = self
            .channel
            .ok_or(RdmaError::Config("connect on an id without channel"))?;
        let mut param = conn_param(private)?;
        // SAFETY: live asynchronous id with a QP; `param` and the private
        // data it points to live across the call (the library copies them).
        let rc = unsafe { rdma_connect(self.id.as_ptr(), &mut param) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_connect"));
        }
        let reply = wait_event(
            channel,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            deadline,
            "connect",
        )?;
        self.connected = true;
        Ok(reply)
    }

    /// Passive side: accepts the request this id came from with our private
    /// data; waits at most until `deadline` for the connection.
    pub(super) fn accept(&mut self, private: &[u8], deadline: Instant) -> Result<(), RdmaError> {
        self.make_async()?;
        let channel = self
            .channel
            .ok_or(RdmaError::Config("accept on an id without channel"))?;
        let mut param = conn_param(private)?;
        // SAFETY: as for connect.
        let rc = unsafe { rdma_accept(self.id.as_ptr(), &mut param) };
        if rc != 0 {
            return Err(RdmaError::last_os("rdma_accept"));
        }
        wait_event(
            channel,
            rdma_cm_event_type::RDMA_CM_EVENT_ESTABLISHED,
            deadline,
            "accept",
        )?;
        self.connected = true;
        Ok(())
    }

    /// Passive side: refuses the request this id came from.
    pub(super) fn reject(&mut self) {
        // SAFETY: live id with a pending request; no private data.
        unsafe { rdma_reject(self.id.as_ptr(), ptr::null(), 0) };
    }

    /// Moves the id to a non-blocking event channel of its own (a no-op if
    /// it has one).
    fn make_async(&mut self) -> Result<(), RdmaError> {
        if self.channel.is_some() {
            return Ok(());
        }
        let channel = new_channel()?;
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

    /// The next connection event, if one is waiting (never blocks).
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
    /// blocks (the id is asynchronous); a no-op unless connected.
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
