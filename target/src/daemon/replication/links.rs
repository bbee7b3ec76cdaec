//! The control threads of replication links: blocking connects, accepts
//! and PSK handshakes (`keel_replicator::link::handshake`), off the
//! reactor. A finished link's socket goes to shard 0 as
//! [`Message::PeerLink`]; the shard tells an outbound link's dialer when the
//! link went down, and the dialer connects again with backoff.
//!
//! Which copies are dialed follows the membership: a supervisor thread runs
//! one dialer per copy the primary wants links to (`Node::link_targets`, as
//! shard 0 publishes it), at the address the roster gives, starting
//! dialers for copies added at run time and stopping those of copies that
//! left. Accepted links are taken from copies in the roster only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use keel_engine::{EngineSender, ShardId};
use keel_replicator::auth::PreSharedKey;
use keel_replicator::core::LinkDirection;
use keel_replicator::link::handshake::{self, HandshakeStream};
use keel_replicator::wire::{Epoch, NodeId, VolumeId};

use crate::daemon::handler::Message;
use crate::daemon::replication::driver::Published;
use crate::daemon::replication::Transport;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Handshakes running at once on the accepting side; connections beyond
/// are closed at once (one host cannot tie up threads without bound).
const MAX_HANDSHAKES: usize = 16;

/// Where shard 0 reports the end of an outbound link, per node: each
/// dialer registers its channel when it starts (a later dialer of the same
/// node replaces it).
#[derive(Debug, Default)]
pub(crate) struct LinkDownNotices {
    senders: Mutex<BTreeMap<NodeId, mpsc::Sender<()>>>,
}

impl LinkDownNotices {
    /// The channel a new dialer of `node` waits on.
    fn register(&self, node: NodeId) -> mpsc::Receiver<()> {
        let (tx, rx) = mpsc::channel();
        self.senders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, tx);
        rx
    }

    /// Tells `node`'s dialer that its link ended (nothing if it has none).
    pub fn notify(&self, node: NodeId) {
        let senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = senders.get(&node) {
            let _ = tx.send(());
        }
    }
}

/// The running control threads.
pub(crate) struct LinkControl {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Everything the threads need.
pub(crate) struct LinkSetup {
    pub me: NodeId,
    pub volume: VolumeId,
    pub key: PreSharedKey,
    pub listener: TcpListener,
    /// Where to accept RDMA links (this node's member is `rdma://`).
    pub rdma_listen: Option<SocketAddr>,
    /// Whether this node dials the others (while it is primary).
    pub dial: bool,
    /// The membership, the roster and the link-down notices.
    pub published: Arc<Published>,
    pub sender: EngineSender<Message>,
}

impl LinkControl {
    pub fn start(setup: LinkSetup) -> std::io::Result<LinkControl> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        setup.listener.set_nonblocking(true)?;
        let LinkSetup {
            me,
            volume,
            key,
            listener,
            rdma_listen,
            dial,
            published,
            sender,
        } = setup;
        {
            let stop = stop.clone();
            let key = key.clone();
            let published = published.clone();
            let sender = sender.clone();
            if let Some(addr) = rdma_listen {
                let accept = RdmaAccept {
                    me,
                    volume,
                    key: key.clone(),
                    published: published.clone(),
                    sender: sender.clone(),
                    stop: stop.clone(),
                };
                threads.push(
                    std::thread::Builder::new()
                        .name("keel-repl-accept-rdma".into())
                        .spawn(move || accept.run(addr))?,
                );
            }
            threads.push(
                std::thread::Builder::new()
                    .name("keel-repl-accept".into())
                    .spawn(move || {
                        accept_loop(listener, me, volume, key, published, sender, stop)
                    })?,
            );
        }
        if dial {
            let supervisor = Supervisor {
                me,
                volume,
                key,
                published,
                sender,
                stop: stop.clone(),
                dialers: BTreeMap::new(),
                retired: Vec::new(),
                unaddressed: BTreeSet::new(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name("keel-repl-dialers".into())
                    .spawn(move || supervisor.run())?,
            );
        }
        Ok(LinkControl { stop, threads })
    }

    /// Stops the threads (links already handed to the shard are its own).
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Hands a link to shard 0, retrying while its queue is full.
fn hand_over(sender: &EngineSender<Message>, stop: &AtomicBool, mut msg: Message) -> bool {
    loop {
        match sender.send(ShardId(0), msg) {
            Ok(()) => return true,
            Err(back) => {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                msg = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// Accepts connections until `stop`: `try_accept` polls for one (`None`:
/// none yet), and `handshake` runs each on a thread of its own, at most
/// [`MAX_HANDSHAKES`] at once, so a slow or silent peer holds up no one.
/// `what` and `describe` name the listener and a connection in the log.
fn serve_accepts<C: Send + 'static, E: std::fmt::Display>(
    what: &'static str,
    stop: &AtomicBool,
    mut try_accept: impl FnMut() -> Result<Option<C>, E>,
    describe: impl Fn(&C) -> String,
    handshake: impl Fn(C) + Clone + Send + 'static,
) {
    let running = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let connection = match try_accept() {
            Ok(Some(connection)) => connection,
            Ok(None) => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "{what} replication accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(guard) = HandshakeSlot::take(&running) else {
            let from = describe(&connection);
            tracing::warn!(%from, "{what} replication link refused: too many handshakes in progress");
            continue;
        };
        let handshake = handshake.clone();
        let spawned = std::thread::Builder::new()
            .name("keel-repl-handshake".into())
            .spawn(move || {
                let _slot = guard;
                handshake(connection);
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a handshake thread");
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    volume: VolumeId,
    key: PreSharedKey,
    published: Arc<Published>,
    sender: EngineSender<Message>,
    stop: Arc<AtomicBool>,
) {
    let try_accept = || match listener.accept() {
        Ok(accepted) => Ok(Some(accepted)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    };
    let describe = |(_, from): &(TcpStream, SocketAddr)| from.to_string();
    let stopped = stop.clone();
    let handshake = move |(mut stream, from): (TcpStream, SocketAddr)| {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_nodelay(true);
        let from = from.to_string();
        if let Some(peer) = accept_handshake(&mut stream, &from, me, volume, &key, &published) {
            let link = Message::PeerLink {
                stream,
                peer,
                direction: LinkDirection::Inbound,
            };
            hand_over(&sender, &stopped, link);
        }
    };
    serve_accepts("tcp", &stop, try_accept, describe, handshake);
}

/// Runs the acceptor's handshake on `stream` (from `from`); the peer's node
/// if it authenticated and is another copy in the roster (the roster, not
/// the flags: a copy added at run time may become primary and link here).
fn accept_handshake(
    stream: &mut impl HandshakeStream,
    from: &str,
    me: NodeId,
    volume: VolumeId,
    key: &PreSharedKey,
    published: &Published,
) -> Option<NodeId> {
    let catalog =
        |v: VolumeId| (v == volume).then(|| Epoch(published.epoch.load(Ordering::SeqCst)));
    match handshake::accept(stream, key, me, &catalog, HANDSHAKE_TIMEOUT) {
        Ok(peer) if peer.node != me && published.roster.contains(peer.node) => {
            tracing::info!(%from, peer = %peer.node, epoch = %peer.epoch, "replication link accepted");
            Some(peer.node)
        }
        Ok(peer) => {
            tracing::warn!(%from, peer = %peer.node, "replication link refused: not a member of the volume");
            None
        }
        Err(error) => {
            tracing::warn!(%from, %error, "replication link refused");
            None
        }
    }
}

/// The RDMA accept thread: a non-blocking rdma_cm listener polled every
/// `POLL`; each connection's handshake runs on a thread of its own.
#[cfg_attr(not(feature = "rdma"), allow(dead_code))]
struct RdmaAccept {
    me: NodeId,
    volume: VolumeId,
    key: PreSharedKey,
    published: Arc<Published>,
    sender: EngineSender<Message>,
    stop: Arc<AtomicBool>,
}

impl RdmaAccept {
    #[cfg(feature = "rdma")]
    fn run(self, addr: SocketAddr) {
        use keel_replicator::rdma::{BlockingLink, RdmaConfig, RdmaListener};
        let listener = match RdmaListener::bind(&addr.to_string(), RdmaConfig::default()) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::error!(%addr, %error, "cannot listen for RDMA replication links");
                return;
            }
        };
        tracing::info!(%addr, "accepting replication links over RDMA");
        let RdmaAccept {
            me,
            volume,
            key,
            published,
            sender,
            stop,
        } = self;
        let stopped = stop.clone();
        let handshake = move |link| {
            let mut stream = BlockingLink::new(link);
            let from = format!("rdma://{addr} (inbound)");
            if let Some(peer) = accept_handshake(&mut stream, &from, me, volume, &key, &published) {
                let (link, received) = stream.into_parts();
                let link = Message::RdmaPeerLink {
                    link: Box::new(link),
                    received,
                    peer,
                    direction: LinkDirection::Inbound,
                };
                hand_over(&sender, &stopped, link);
            }
        };
        let describe = |_: &_| format!("rdma://{addr}");
        serve_accepts("rdma", &stop, || listener.try_accept(), describe, handshake);
    }

    #[cfg(not(feature = "rdma"))]
    fn run(self, addr: SocketAddr) {
        // `ReplicationOptions::validate` refuses rdma:// members.
        tracing::error!(%addr, "keeld was built without the cargo feature `rdma`");
    }
}

/// Frees a handshake slot when its thread ends (or never starts).
struct HandshakeSlot(Arc<AtomicUsize>);

impl HandshakeSlot {
    /// One of the [`MAX_HANDSHAKES`] slots, if one is free (the accepting
    /// thread alone takes them; finished handshakes give them back).
    fn take(running: &Arc<AtomicUsize>) -> Option<HandshakeSlot> {
        if running.load(Ordering::SeqCst) >= MAX_HANDSHAKES {
            return None;
        }
        running.fetch_add(1, Ordering::SeqCst);
        Some(HandshakeSlot(running.clone()))
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one dialer per copy the primary wants links to; polls the
/// published link targets and the roster every `POLL`.
struct Supervisor {
    me: NodeId,
    volume: VolumeId,
    key: PreSharedKey,
    published: Arc<Published>,
    sender: EngineSender<Message>,
    /// Every link thread's stop (daemon shutdown).
    stop: Arc<AtomicBool>,
    dialers: BTreeMap<NodeId, RunningDialer>,
    /// Dialers told to stop, joined once they end.
    retired: Vec<JoinHandle<()>>,
    /// Link targets without an address, already logged.
    unaddressed: BTreeSet<NodeId>,
}

struct RunningDialer {
    addr: SocketAddr,
    transport: Transport,
    /// This dialer's own stop (its copy left, or moved).
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Supervisor {
    fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.reconcile();
            std::thread::sleep(POLL);
        }
        for (_, dialer) in std::mem::take(&mut self.dialers) {
            dialer.stop.store(true, Ordering::SeqCst);
            self.retired.push(dialer.thread);
        }
        for thread in self.retired.drain(..) {
            let _ = thread.join();
        }
    }

    /// The copies to dial now, with their addresses: none unless this node
    /// acts as primary.
    fn wanted(&mut self) -> Vec<(NodeId, SocketAddr, Transport)> {
        if !self.published.primary.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let targets = self.published.membership_view().link_targets;
        let mut wanted = Vec::new();
        for node in targets.into_iter().filter(|n| *n != self.me) {
            match self.published.roster.address(node) {
                Some((addr, transport)) => {
                    self.unaddressed.remove(&node);
                    wanted.push((node, addr, transport));
                }
                None => {
                    if self.unaddressed.insert(node) {
                        tracing::warn!(
                            peer = %node,
                            "replication: a copy of the volume has no address: add it to \
                             this node's --member list (or keel.toml members) and restart"
                        );
                    }
                }
            }
        }
        wanted
    }

    /// Starts and stops dialers to match `wanted`.
    fn reconcile(&mut self) {
        let wanted = self.wanted();
        let stale: Vec<NodeId> = self
            .dialers
            .iter()
            .filter(|(node, d)| {
                d.thread.is_finished()
                    || !wanted
                        .iter()
                        .any(|w| w.0 == **node && w.1 == d.addr && w.2 == d.transport)
            })
            .map(|(node, _)| *node)
            .collect();
        for node in stale {
            if let Some(dialer) = self.dialers.remove(&node) {
                dialer.stop.store(true, Ordering::SeqCst);
                self.retired.push(dialer.thread);
            }
        }
        for (node, addr, transport) in wanted {
            if self.dialers.contains_key(&node) {
                continue;
            }
            match self.spawn(node, addr, transport) {
                Ok(dialer) => {
                    self.dialers.insert(node, dialer);
                }
                Err(error) => {
                    tracing::warn!(peer = %node, %error, "cannot start a dialer thread; retrying");
                }
            }
        }
        let (done, running): (Vec<_>, Vec<_>) =
            self.retired.drain(..).partition(JoinHandle::is_finished);
        self.retired = running;
        for thread in done {
            let _ = thread.join();
        }
    }

    fn spawn(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        transport: Transport,
    ) -> std::io::Result<RunningDialer> {
        let own_stop = Arc::new(AtomicBool::new(false));
        let dialer = Dialer {
            me: self.me,
            peer,
            addr,
            transport,
            volume: self.volume,
            key: self.key.clone(),
            down: self.published.link_down.register(peer),
            published: self.published.clone(),
            sender: self.sender.clone(),
            stop: self.stop.clone(),
            own_stop: own_stop.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("keel-repl-dial{peer}"))
            .spawn(move || dialer.run())?;
        Ok(RunningDialer {
            addr,
            transport,
            stop: own_stop,
            thread,
        })
    }
}

struct Dialer {
    me: NodeId,
    peer: NodeId,
    addr: SocketAddr,
    transport: Transport,
    volume: VolumeId,
    key: PreSharedKey,
    down: mpsc::Receiver<()>,
    published: Arc<Published>,
    sender: EngineSender<Message>,
    /// Daemon shutdown.
    stop: Arc<AtomicBool>,
    /// The supervisor no longer wants this copy dialed (from here).
    own_stop: Arc<AtomicBool>,
}

impl Dialer {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.own_stop.load(Ordering::Relaxed)
    }

    fn run(self) {
        let mut backoff = BACKOFF_MIN;
        let mut last_error = String::new();
        while !self.stopped() {
            // Only a primary opens links.
            if !self.published.primary.load(Ordering::SeqCst) {
                std::thread::sleep(POLL);
                continue;
            }
            let connected = match self.transport {
                Transport::Tcp => self.connect().map(|stream| Message::PeerLink {
                    stream,
                    peer: self.peer,
                    direction: LinkDirection::Outbound,
                }),
                Transport::Rdma => self.connect_rdma(),
            };
            match connected {
                Ok(msg) => {
                    last_error.clear();
                    backoff = BACKOFF_MIN;
                    if !hand_over(&self.sender, &self.stop, msg) {
                        return;
                    }
                    // Wait for the shard to report the link's end.
                    loop {
                        match self.down.recv_timeout(POLL) {
                            Ok(()) => break,
                            Err(mpsc::RecvTimeoutError::Timeout) if !self.stopped() => {}
                            Err(_) => return,
                        }
                    }
                }
                Err(error) => {
                    if error != last_error {
                        tracing::warn!(peer = %self.peer, addr = %self.addr, %error, "replication link failed; retrying");
                        last_error = error;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects over RDMA and runs the handshake on the link itself.
    #[cfg(feature = "rdma")]
    fn connect_rdma(&self) -> Result<Message, String> {
        use keel_replicator::rdma::{BlockingLink, RdmaConfig, RdmaLink};
        let link = RdmaLink::connect(&self.addr.to_string(), &RdmaConfig::default())
            .map_err(|e| format!("rdma connect: {e}"))?;
        let mut stream = BlockingLink::new(link);
        let epoch = self.authenticate(&mut stream, &format!("rdma://{}", self.addr))?;
        tracing::info!(peer = %self.peer, addr = %self.addr, %epoch, "replication link connected (rdma)");
        let (link, received) = stream.into_parts();
        Ok(Message::RdmaPeerLink {
            link: Box::new(link),
            received,
            peer: self.peer,
            direction: LinkDirection::Outbound,
        })
    }

    #[cfg(not(feature = "rdma"))]
    fn connect_rdma(&self) -> Result<Message, String> {
        Err("keeld was built without the cargo feature `rdma`".into())
    }

    fn connect(&self) -> Result<TcpStream, String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let epoch = self.authenticate(&mut stream, &self.addr.to_string())?;
        tracing::info!(peer = %self.peer, addr = %self.addr, %epoch, "replication link connected");
        Ok(stream)
    }

    /// Runs the dialing side of the handshake on a connected `stream` (TCP
    /// or RDMA) and checks that the expected node answered at `shown`;
    /// returns the epoch this node offered.
    fn authenticate(
        &self,
        stream: &mut impl handshake::HandshakeStream,
        shown: &str,
    ) -> Result<Epoch, String> {
        let epoch = Epoch(self.published.epoch.load(Ordering::SeqCst));
        let peer = handshake::connect(
            stream,
            &self.key,
            self.me,
            self.volume,
            epoch,
            HANDSHAKE_TIMEOUT,
        )
        .map_err(|e| e.to_string())?;
        if peer.node != self.peer {
            return Err(format!(
                "node {} answered at {shown} (expected node {})",
                peer.node, self.peer
            ));
        }
        Ok(epoch)
    }
}
