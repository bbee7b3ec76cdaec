//! Replication links over RDMA verbs (cargo feature `rdma`): the shard side.
//!
//! A link arrives from the control threads as [`Message::RdmaPeerLink`]
//! (connected, authenticated with the same PSK handshake as TCP, run over
//! the link itself). From then on it lives here, in shard 0's thread: the
//! handler's `poll` hook calls [`Replicator::poll_rdma`] every reactor loop
//! iteration, which pushes queued frames into the link, drains its
//! completion queue and feeds whole frames to the state machine through the
//! same decoder as TCP (`decode_frames`). Frames to send are encoded by the
//! same `link::encode`. A link error (failed work completion, disconnect,
//! protocol violation) is a `LinkDown` like a TCP reset.
//!
//! Waking: the reactor sleeps in io_uring when idle, and verbs completions
//! do not wake it by themselves. Each link's CQ has a completion channel;
//! once a poll finds the queue empty the link arms it (one notification at
//! the next completion), polls once more (what came before arming raises no
//! notification), and submits a one-shot poll on the channel's descriptor
//! to the ring (`NetOp::PollIn`, tag `ReplWake`). A completion then makes
//! the descriptor readable, the ring wakes the shard, and the next
//! `poll_rdma` consumes the notification and re-arms. Only if the ring
//! refuses that poll does a timer wake the shard every [`RDMA_WAKE`].
//!
//! [`Message::RdmaPeerLink`]: crate::daemon::handler::Message::RdmaPeerLink

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keel_engine::{NetOp, Shard};
use keel_replicator::core::{Event, Frame, LinkDirection, LinkId};
use keel_replicator::link;
use keel_replicator::rdma::RdmaLink;
use keel_replicator::wire::{Epoch, Heartbeat, NodeId, VolumeId};

use super::{decode_frames, heartbeat_envelope, machine_time, Payload, Replicator};
use crate::daemon::handler::Message;
use crate::daemon::replication::liveness::{self, LinkLiveness, Verdict};
use crate::daemon::tags::{Tag, TagKind};

/// Longest sleep of shard 0 while an RDMA link cannot wait in the ring.
pub(crate) const RDMA_WAKE: Duration = Duration::from_millis(1);
/// Link ids in a tag's 24-bit `conn` field.
const TAG_LINK_MASK: u64 = 0xFF_FFFF;
/// Tag of the wake-up timer (the handler ignores tags it does not know).
const TIMER_RDMA_WAKE: u64 = 0x5244_4d41_5741_4b45;

struct RdmaPeer {
    link: RdmaLink,
    node: NodeId,
    direction: LinkDirection,
    /// Received stream bytes not yet decoded.
    rx: Vec<u8>,
    /// Encoded frames not yet taken by the link.
    tx: Vec<u8>,
    close_after_send: bool,
    frames_sent: u64,
    frames_received: u64,
    /// A poll on the link's completion channel is in the ring.
    waiting: bool,
    /// The CQ is armed: its next completion raises a notification.
    armed: bool,
    liveness: LinkLiveness,
}

/// The RDMA links of shard 0, by link id.
#[derive(Default)]
pub(crate) struct RdmaPeers {
    peers: HashMap<LinkId, RdmaPeer>,
    /// Closed links whose channel poll is still in the ring: kept (the
    /// descriptor open) until it comes back cancelled.
    closed: HashMap<LinkId, (RdmaPeer, bool)>,
    wake_at: Option<Instant>,
}

fn wake_tag(link: LinkId) -> u64 {
    Tag::new(TagKind::ReplWake, (link.0 & TAG_LINK_MASK) as usize, 0, 0).raw()
}

/// Sends what is queued on `peer`, drains its CQ and decodes whole frames
/// into `events` (answering heartbeats); true if anything moved.
fn pump(
    peer: &mut RdmaPeer,
    id: LinkId,
    (volume, epoch): (VolumeId, Epoch),
    (now, origin): (Instant, Instant),
    events: &mut std::collections::VecDeque<Event<Payload>>,
) -> Result<bool, String> {
    let mut progress = false;
    if !peer.tx.is_empty() {
        let taken = peer.link.send(&peer.tx).map_err(|e| e.to_string())?;
        peer.tx.drain(..taken);
        progress |= taken > 0;
    }
    let before = events.len();
    let polled = peer.link.poll(&mut peer.rx).map_err(|e| e.to_string())?;
    progress |= polled.completions > 0;
    if polled.received > 0 {
        peer.liveness.heard(now);
        // Addresses in `EpochChange` frames are learned over TCP links only.
        let beats =
            decode_frames(&mut peer.rx, (volume, epoch), peer.node, id, events, |_| {})?.heartbeats;
        peer.frames_received += (events.len() - before) as u64;
        let (reply, answer) = peer.liveness.take(&beats, now);
        if let Some(reply) = reply {
            events.push_back(Event::HeartbeatAnswered {
                peer: peer.node,
                link: id,
                sent_at: machine_time(origin, reply.sent),
            });
        }
        // The answer goes out on the next pump.
        if let Some(answer) = answer {
            queue_heartbeat(peer, volume, epoch, answer)?;
        }
    }
    Ok(progress)
}

fn queue_heartbeat(
    peer: &mut RdmaPeer,
    volume: VolumeId,
    epoch: Epoch,
    beat: Heartbeat,
) -> Result<(), String> {
    link::encode_heartbeat(&heartbeat_envelope(volume, epoch), beat, &mut peer.tx)
        .map(|_| ())
        .map_err(|e| format!("cannot encode a heartbeat: {e}"))
}

fn log_stats(peer: &RdmaPeer, link: LinkId, why: &str) {
    let stats = peer.link.stats();
    tracing::info!(
        peer = %peer.node,
        link = link.0,
        why,
        frames_sent = peer.frames_sent,
        frames_received = peer.frames_received,
        rdma_sends = stats.messages_sent,
        rdma_credit_sends = stats.credit_messages_sent,
        rdma_receives = stats.messages_received,
        bytes_sent = stats.bytes_sent,
        bytes_received = stats.bytes_received,
        "rdma link stats"
    );
}

impl Replicator {
    pub(super) fn rdma_link_count(&self) -> usize {
        self.rdma.peers.len()
    }

    /// A link whose handshake the control threads finished over RDMA;
    /// `received` is what arrived after the handshake.
    pub fn adopt_rdma(
        &mut self,
        shard: &mut Shard<Message>,
        link: RdmaLink,
        received: Vec<u8>,
        node: NodeId,
        direction: LinkDirection,
    ) {
        if self.closing {
            tracing::warn!(peer = %node, "rdma replication link dropped: shutting down");
            drop(link);
            self.notify_down(node, direction);
            return;
        }
        let id = LinkId(self.next_link);
        self.next_link += 1;
        tracing::info!(peer = %node, link = id.0, ?direction, "replication link up (rdma)");
        self.rdma.peers.insert(
            id,
            RdmaPeer {
                link,
                node,
                direction,
                rx: received,
                tx: Vec::new(),
                close_after_send: false,
                frames_sent: 0,
                frames_received: 0,
                waiting: false,
                armed: false,
                liveness: LinkLiveness::new(shard.now()),
            },
        );
        self.events.push_back(Event::LinkUp {
            peer: node,
            link: id,
            direction,
        });
        self.run(shard);
        self.poll_rdma(shard);
    }

    /// Queues `frame` on RDMA link `link`; false if the link is not one.
    pub(super) fn send_rdma(&mut self, link: LinkId, epoch: Epoch, frame: &Frame<Payload>) -> bool {
        let Some(peer) = self.rdma.peers.get_mut(&link) else {
            return false;
        };
        match super::encode_frame(self.volume, &self.addresses, epoch, frame, &mut peer.tx) {
            Ok(_) => peer.frames_sent += 1,
            Err(error) => {
                tracing::error!(%error, "replication: cannot encode a frame");
                if error.closes_link() {
                    self.drop_rdma_peer(link, "encode failed");
                }
            }
        }
        // Sent from poll_rdma, which runs right after this loop iteration.
        true
    }

    /// The state machine closes RDMA link `link` (after what is queued);
    /// false if the link is not one.
    pub(super) fn close_rdma_link(&mut self, link: LinkId) -> bool {
        let Some(peer) = self.rdma.peers.get_mut(&link) else {
            return false;
        };
        if peer.tx.is_empty() {
            self.drop_rdma_peer(link, "closed by the state machine");
        } else {
            peer.close_after_send = true;
        }
        true
    }

    /// Heartbeats on quiet RDMA links (sent with the next `poll_rdma`),
    /// and those silent past the link timeout closed.
    pub(super) fn check_rdma_liveness(&mut self, now: Instant) {
        let (volume, epoch) = (self.volume, self.node.epoch());
        let mut down = Vec::new();
        for (&id, peer) in self.rdma.peers.iter_mut() {
            let why = match peer.liveness.check(now, self.link_timeout) {
                Verdict::Alive => continue,
                Verdict::Beat(token) => {
                    let beat = Heartbeat {
                        token,
                        reply: false,
                    };
                    match queue_heartbeat(peer, volume, epoch, beat) {
                        Ok(()) => continue,
                        Err(why) => why,
                    }
                }
                Verdict::Silent(quiet) => {
                    if let Some(c) = self.published.counters(peer.node) {
                        c.silent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    liveness::silence(quiet)
                }
            };
            down.push((id, why));
        }
        for (id, why) in down {
            self.drop_rdma_peer(id, &why);
        }
    }

    /// Closes every RDMA link (shutdown).
    pub(super) fn close_all_rdma(&mut self) {
        let links: Vec<LinkId> = self.rdma.peers.keys().copied().collect();
        for link in links {
            self.drop_rdma_peer(link, "shutting down");
        }
    }

    /// Disconnects and forgets `link`; the state machine hears `LinkDown`.
    fn drop_rdma_peer(&mut self, link: LinkId, why: &str) {
        let Some(mut peer) = self.rdma.peers.remove(&link) else {
            return;
        };
        log_stats(&peer, link, why);
        peer.link.close();
        tracing::info!(peer = %peer.node, link = link.0, why, "replication link down (rdma)");
        self.events.push_back(Event::LinkDown {
            peer: peer.node,
            link,
        });
        self.notify_down(peer.node, peer.direction);
        if peer.waiting {
            // Its channel poll must come back before the descriptor closes;
            // the cancel goes out with the next poll_rdma.
            self.rdma.closed.insert(link, (peer, false));
        }
    }

    /// The completion channel poll of link `tag.conn` came back (readable,
    /// or cancelled after the link closed).
    pub(super) fn on_rdma_wake(&mut self, tag: Tag) {
        let matches = |id: &LinkId| (id.0 & TAG_LINK_MASK) as usize == tag.conn;
        if let Some(peer) = self.rdma.peers.iter_mut().find(|(id, _)| matches(id)) {
            peer.1.waiting = false;
        }
        self.rdma.closed.retain(|id, _| !matches(id));
    }

    /// Cancels the channel polls of closed links (their peers stay until
    /// the polls come back).
    fn cancel_closed_waits(&mut self, shard: &mut Shard<Message>) {
        for (peer, cancelled) in self.rdma.closed.values_mut() {
            if !*cancelled {
                shard.cancel_net(&peer.link.notify_fd());
                *cancelled = true;
            }
        }
    }

    /// Sends what is queued, drains the completion queues, decodes what
    /// arrived, and makes sure an idle link wakes the shard when a
    /// completion comes; called every reactor loop iteration. True if
    /// anything happened.
    pub fn poll_rdma(&mut self, shard: &mut Shard<Message>) -> bool {
        self.cancel_closed_waits(shard);
        if self.rdma.peers.is_empty() {
            return false;
        }
        let mut worked = false;
        let mut down = Vec::new();
        let mut all_waiting = true;
        let now = shard.now();
        let clock = (now, self.origin);
        let stream_of = (self.volume, self.node.epoch());
        for (&id, peer) in self.rdma.peers.iter_mut() {
            let result = (|| -> Result<bool, String> {
                // A notification uses up the CQ's arming. (The ring's poll
                // that saw it comes back as `on_rdma_wake` — or, if this
                // read emptied the channel first, stays in the ring for the
                // next one.)
                if peer.link.take_notifications().map_err(|e| e.to_string())? {
                    peer.armed = false;
                }
                let mut progress = pump(peer, id, stream_of, clock, &mut self.events)?;
                if !progress && !peer.armed {
                    peer.link.arm_notification().map_err(|e| e.to_string())?;
                    peer.armed = true;
                    // What completed before arming raises no notification.
                    progress |= pump(peer, id, stream_of, clock, &mut self.events)?;
                }
                if !progress && !peer.waiting {
                    let fd = peer.link.notify_fd();
                    match shard.submit_net(&fd, NetOp::PollIn, None, wake_tag(id)) {
                        Ok(()) => peer.waiting = true,
                        Err((error, _)) => {
                            tracing::debug!(%error, "rdma: cannot wait for completions in the ring")
                        }
                    }
                }
                Ok(progress)
            })();
            match result {
                Ok(progress) => {
                    worked |= progress;
                    all_waiting &= peer.waiting;
                    if peer.close_after_send && peer.tx.is_empty() {
                        down.push((id, "closed by the state machine".to_owned()));
                    }
                }
                Err(why) => down.push((id, why)),
            }
        }
        if !all_waiting {
            let now = shard.now();
            if self.rdma.wake_at.is_none_or(|at| now >= at) {
                self.rdma.wake_at = Some(now + RDMA_WAKE);
                let _ = shard.add_timer(RDMA_WAKE, TIMER_RDMA_WAKE);
            }
        }
        for (id, why) in down {
            self.drop_rdma_peer(id, &why);
            worked = true;
        }
        if worked || !self.events.is_empty() {
            self.run(shard);
        }
        worked
    }
}
