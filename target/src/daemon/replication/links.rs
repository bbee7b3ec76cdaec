//! The control threads of replication links: blocking connects, accepts
//! and PSK handshakes (`keel_replicator::link::handshake`), off the
//! reactor. A finished link's socket goes to shard 0 as
//! [`Message::PeerLink`]; the shard tells an outbound link's dialer when the
//! link went down, and the dialer connects again with backoff.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
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
    /// Members with their addresses and transports (this node's included).
    pub members: Vec<(NodeId, SocketAddr, Transport)>,
    /// Whether this node dials the others (the primary).
    pub dial: bool,
    /// Per peer, where the shard reports an outbound link's end.
    pub link_down: Vec<(NodeId, mpsc::Receiver<()>)>,
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
            members,
            dial,
            link_down,
            published,
            sender,
        } = setup;
        {
            let stop = stop.clone();
            let key = key.clone();
            let published = published.clone();
            let sender = sender.clone();
            let members: Vec<NodeId> = members.iter().map(|(n, _, _)| *n).collect();
            if let Some(addr) = rdma_listen {
                let accept = RdmaAccept {
                    me,
                    volume,
                    key: key.clone(),
                    members: members.clone(),
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
                        accept_loop(listener, me, volume, key, members, published, sender, stop)
                    })?,
            );
        }
        if dial {
            for (peer, down) in link_down {
                let Some((addr, transport)) = members
                    .iter()
                    .find(|(n, _, _)| *n == peer)
                    .map(|(_, a, t)| (*a, *t))
                else {
                    continue;
                };
                let dialer = Dialer {
                    me,
                    peer,
                    addr,
                    transport,
                    volume,
                    key: key.clone(),
                    down,
                    published: published.clone(),
                    sender: sender.clone(),
                    stop: stop.clone(),
                };
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("keel-repl-dial{peer}"))
                        .spawn(move || dialer.run())?,
                );
            }
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

#[allow(clippy::too_many_arguments)]
fn accept_loop(
    listener: TcpListener,
    me: NodeId,
    volume: VolumeId,
    key: PreSharedKey,
    members: Vec<NodeId>,
    published: Arc<Published>,
    sender: EngineSender<Message>,
    stop: Arc<AtomicBool>,
) {
    let running = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        let (stream, from) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "replication accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let Some(guard) = HandshakeSlot::take(&running) else {
            tracing::warn!(%from, "replication link refused: too many handshakes in progress");
            continue;
        };
        let key = key.clone();
        let members = members.clone();
        let published = published.clone();
        let sender = sender.clone();
        let stop = stop.clone();
        // One thread per handshake: a slow or silent peer holds up no one.
        let spawned = std::thread::Builder::new()
            .name("keel-repl-handshake".into())
            .spawn(move || {
                let _slot = guard;
                let mut stream = stream;
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                let from = from.to_string();
                if let Some(peer) =
                    accept_handshake(&mut stream, &from, me, volume, &key, &members, &published)
                {
                    hand_over(
                        &sender,
                        &stop,
                        Message::PeerLink {
                            stream,
                            peer,
                            direction: LinkDirection::Inbound,
                        },
                    );
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start a handshake thread");
        }
    }
}

/// Runs the acceptor's handshake on `stream` (from `from`); the peer's node
/// if it authenticated and is another member of the volume.
fn accept_handshake(
    stream: &mut impl HandshakeStream,
    from: &str,
    me: NodeId,
    volume: VolumeId,
    key: &PreSharedKey,
    members: &[NodeId],
    published: &Published,
) -> Option<NodeId> {
    let catalog =
        |v: VolumeId| (v == volume).then(|| Epoch(published.epoch.load(Ordering::SeqCst)));
    match handshake::accept(stream, key, me, &catalog, HANDSHAKE_TIMEOUT) {
        Ok(peer) if peer.node != me && members.contains(&peer.node) => {
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
    members: Vec<NodeId>,
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
        let running = Arc::new(AtomicUsize::new(0));
        while !self.stop.load(Ordering::Relaxed) {
            let link = match listener.try_accept() {
                Ok(Some(link)) => link,
                Ok(None) => {
                    std::thread::sleep(POLL);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(%error, "rdma replication accept failed");
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let Some(guard) = HandshakeSlot::take(&running) else {
                tracing::warn!("rdma replication link refused: too many handshakes in progress");
                continue;
            };
            let (me, volume, key) = (self.me, self.volume, self.key.clone());
            let (members, published) = (self.members.clone(), self.published.clone());
            let (sender, stop) = (self.sender.clone(), self.stop.clone());
            let spawned = std::thread::Builder::new()
                .name("keel-repl-handshake".into())
                .spawn(move || {
                    let _slot = guard;
                    let mut stream = BlockingLink::new(link);
                    let from = format!("rdma://{addr} (inbound)");
                    if let Some(peer) =
                        accept_handshake(&mut stream, &from, me, volume, &key, &members, &published)
                    {
                        let (link, received) = stream.into_parts();
                        hand_over(
                            &sender,
                            &stop,
                            Message::RdmaPeerLink {
                                link: Box::new(link),
                                received,
                                peer,
                                direction: LinkDirection::Inbound,
                            },
                        );
                    }
                });
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start a handshake thread");
            }
        }
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
    stop: Arc<AtomicBool>,
}

impl Dialer {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
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
