//! The socket side: bind, accept, one thread per client, stop.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::Value;

use super::protocol::{error_response, handle_message};
use super::{codes, RpcError, RpcService};

/// Limits of an [`RpcServer`].
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Clients served at once; one more is told "busy" (-32000) and closed.
    pub max_clients: usize,
    /// Largest request (or batch) in bytes. A larger one is answered
    /// -32600 and its connection closed (the stream cannot be resynced).
    pub max_request_bytes: usize,
    /// A client that sends nothing for this long is disconnected (`None`:
    /// never).
    pub idle_timeout: Option<Duration>,
    /// How long writing one response may block on a client that does not
    /// read.
    pub write_timeout: Duration,
    /// How long [`RpcServer::stop`] waits for calls in progress.
    pub stop_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_clients: 16,
            max_request_bytes: 1 << 20,
            idle_timeout: Some(Duration::from_secs(300)),
            write_timeout: Duration::from_secs(30),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// A JSON-RPC server on a Unix socket; see the [module](super) docs.
///
/// Dropping it stops it like [`RpcServer::stop`].
pub struct RpcServer {
    path: PathBuf,
    /// (device, inode) of the socket file bound, so stopping never removes
    /// a file someone else put at `path` since.
    identity: (u64, u64),
    waker: UnixStream,
    accept: Option<JoinHandle<()>>,
    clients: Arc<Clients>,
    grace: Duration,
}

impl std::fmt::Debug for RpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RpcServer {
    /// Binds `path` with the default [`ServerOptions`] and starts serving
    /// `service`.
    pub fn start(path: &Path, service: Arc<dyn RpcService>) -> io::Result<RpcServer> {
        Self::start_with(path, service, ServerOptions::default())
    }

    /// Binds `path` (mode 0600: only this user, and root, may connect) and
    /// starts serving `service` on a thread of its own.
    ///
    /// A socket file left at `path` by a process that is gone is replaced;
    /// one that a process still accepts on is an `AddrInUse` error, and a
    /// path that is not a socket is never removed (`AlreadyExists`).
    pub fn start_with(
        path: &Path,
        service: Arc<dyn RpcService>,
        options: ServerOptions,
    ) -> io::Result<RpcServer> {
        let (listener, identity) = bind_private(path)?;
        let started = (|| {
            listener.set_nonblocking(true)?;
            let (waker, wakee) = UnixStream::pair()?;
            let clients = Arc::new(Clients::default());
            let grace = options.stop_grace;
            let accept = {
                let clients = clients.clone();
                std::thread::Builder::new()
                    .name("keeld-rpc".into())
                    .spawn(move || accept_loop(&listener, &wakee, &service, &clients, &options))?
            };
            Ok((waker, accept, clients, grace))
        })();
        match started {
            Ok((waker, accept, clients, grace)) => {
                tracing::info!(path = %path.display(), "control socket listening");
                Ok(RpcServer {
                    path: path.to_owned(),
                    identity,
                    waker,
                    accept: Some(accept),
                    clients,
                    grace,
                })
            }
            Err(error) => {
                remove_if_ours(path, identity);
                Err(error)
            }
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, disconnects every client (a call in progress
    /// finishes first, up to the grace period) and removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        let _ = self.waker.shutdown(std::net::Shutdown::Both);
        let _ = accept.join();
        if !self.clients.close_all(self.grace) {
            tracing::warn!("control socket: a call is still running after the grace period");
        }
        remove_if_ours(&self.path, self.identity);
        tracing::info!(path = %self.path.display(), "control socket closed");
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The clients being served: a clone of each stream, to shut them down on
/// stop.
#[derive(Default)]
struct Clients {
    table: Mutex<ClientTable>,
    gone: Condvar,
}

#[derive(Default)]
struct ClientTable {
    next_id: u64,
    streams: HashMap<u64, UnixStream>,
    closed: bool,
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, ClientTable> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers `stream`; its id, or `Err(count)` when `max` are served
    /// already. `None` once closed.
    fn admit(&self, stream: &UnixStream, max: usize) -> Option<Result<u64, usize>> {
        let mut table = self.lock();
        if table.closed {
            return None;
        }
        if table.streams.len() >= max {
            return Some(Err(table.streams.len()));
        }
        let clone = stream.try_clone().ok()?;
        let id = table.next_id;
        table.next_id += 1;
        table.streams.insert(id, clone);
        Some(Ok(id))
    }

    fn leave(&self, id: u64) {
        self.lock().streams.remove(&id);
        self.gone.notify_all();
    }

    /// Shuts every client's stream down and waits up to `grace` for their
    /// threads to end. Whether they all did.
    fn close_all(&self, grace: Duration) -> bool {
        let mut table = self.lock();
        table.closed = true;
        for stream in table.streams.values() {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let (table, _) = self
            .gone
            .wait_timeout_while(table, grace, |table| !table.streams.is_empty())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.streams.is_empty()
    }
}

fn accept_loop(
    listener: &UnixListener,
    wakee: &UnixStream,
    service: &Arc<dyn RpcService>,
    clients: &Arc<Clients>,
    options: &ServerOptions,
) {
    loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(wakee.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(error) => {
                tracing::error!(%error, "control socket: poll failed; no longer accepting");
                return;
            }
        }
        if fds[1].revents().is_some_and(|events| !events.is_empty()) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => serve(stream, service, clients, options),
            Err(error) if error.kind() == ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                // Out of descriptors, most likely: back off rather than spin.
                tracing::warn!(%error, "control socket: accept failed");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Starts a thread for a new client, or turns it away.
fn serve(
    stream: UnixStream,
    service: &Arc<dyn RpcService>,
    clients: &Arc<Clients>,
    options: &ServerOptions,
) {
    static CONNECTIONS: AtomicU64 = AtomicU64::new(0);
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let id = match clients.admit(&stream, options.max_clients) {
        None => return,
        Some(Ok(id)) => id,
        Some(Err(count)) => {
            tracing::warn!(count, "control socket: too many clients; turning one away");
            let busy = error_response(
                Value::Null,
                RpcError::new(
                    codes::BUSY,
                    format!("server busy: {count} clients connected already"),
                ),
            );
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = write_response(&stream, &busy);
            return;
        }
    };
    let serial = CONNECTIONS.fetch_add(1, Ordering::Relaxed);
    let service = service.clone();
    let options = options.clone();
    let leaving = clients.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("keeld-rpc-{serial}"))
        .spawn(move || {
            if let Err(error) = client_loop(&stream, service.as_ref(), &options) {
                tracing::debug!(%error, "control client ended");
            }
            leaving.leave(id);
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "control socket: cannot start a client thread");
        clients.leave(id);
    }
}

/// Serves one client until it closes, goes idle, or sends something that
/// is not JSON.
fn client_loop(
    stream: &UnixStream,
    service: &dyn RpcService,
    options: &ServerOptions,
) -> io::Result<()> {
    stream.set_read_timeout(options.idle_timeout)?;
    stream.set_write_timeout(Some(options.write_timeout))?;
    let used = Rc::new(Cell::new(0usize));
    let reader = Limited {
        inner: BufReader::new(stream.try_clone()?),
        used: used.clone(),
        limit: options.max_request_bytes,
    };
    let mut messages = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    loop {
        match messages.next() {
            None => return Ok(()),
            Some(Ok(message)) => {
                used.set(0);
                if let Some(response) = handle_message(service, message) {
                    write_response(stream, &response)?;
                }
            }
            Some(Err(error)) => {
                let reply = if used.get() > options.max_request_bytes {
                    RpcError::invalid_request(format!(
                        "request larger than {} bytes",
                        options.max_request_bytes
                    ))
                } else if error.is_io() {
                    // Idle timeout, reset, or a stop: nobody to answer.
                    return Err(io::Error::other(error));
                } else {
                    // Syntax error or truncated JSON: the stream cannot be
                    // resynced, so answer and close.
                    RpcError::parse_error(&error)
                };
                let _ = write_response(stream, &error_response(Value::Null, reply));
                return Err(io::Error::other(error));
            }
        }
    }
}

fn write_response(mut stream: &UnixStream, response: &Value) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(io::Error::other)?;
    bytes.push(b'\n');
    stream.write_all(&bytes)
}

/// Counts the bytes the parser takes and fails past the limit. The count
/// is reset after each complete message.
struct Limited<R> {
    inner: R,
    used: Rc<Cell<usize>>,
    limit: usize,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let used = self.used.get();
        if used > self.limit {
            return Err(io::Error::new(ErrorKind::InvalidData, "request too large"));
        }
        // At most one byte past the limit, to tell "too large" from "at
        // the limit".
        let room = (self.limit - used + 1).min(buf.len());
        let read = self.inner.read(&mut buf[..room])?;
        self.used.set(used + read);
        if used + read > self.limit {
            return Err(io::Error::new(ErrorKind::InvalidData, "request too large"));
        }
        Ok(read)
    }
}

/// Binds `path` so that the socket is never reachable with looser
/// permissions than 0600: bind in a fresh 0700 directory next to it,
/// chmod, then rename into place.
fn bind_private(path: &Path) -> io::Result<(UnixListener, (u64, u64))> {
    clear_stale(path)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    static STAGING: AtomicU64 = AtomicU64::new(0);
    let staging = parent.join(format!(
        ".keelrpc.{}.{}",
        std::process::id(),
        STAGING.fetch_add(1, Ordering::Relaxed)
    ));
    fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let staged = staging.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o600))?;
        fs::rename(&staged, path)?;
        let meta = fs::symlink_metadata(path)?;
        Ok((listener, (meta.dev(), meta.ino())))
    })();
    let _ = fs::remove_file(&staged);
    let _ = fs::remove_dir(&staging);
    bound.map_err(|error: io::Error| {
        io::Error::new(error.kind(), format!("binding {}: {error}", path.display()))
    })
}

/// Removes a socket file nobody accepts on any more.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; not replacing it",
                path.display()
            ),
        ));
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            ErrorKind::AddrInUse,
            format!("{} is in use: another process serves it", path.display()),
        )),
        Err(error) if error.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing a stale control socket");
            match fs::remove_file(path) {
                Err(error) if error.kind() != ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            }
        }
        Err(error) => Err(io::Error::new(
            error.kind(),
            format!("checking {}: {error}", path.display()),
        )),
    }
}

fn remove_if_ours(path: &Path, identity: (u64, u64)) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if (meta.dev(), meta.ino()) == identity {
            let _ = fs::remove_file(path);
        }
    }
}
