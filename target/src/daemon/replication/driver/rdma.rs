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
//! The reactor sleeps in io_uring when idle, and verbs completions do not
//! wake it: while RDMA links exist, a timer wakes shard 0 every
//! [`RDMA_WAKE`] so their queues are polled, and any progress keeps it
//! spinning. (Waking on a completion channel through the ring is a
//! follow-up.)
//!
//! [`Message::RdmaPeerLink`]: crate::daemon::handler::Message::RdmaPeerLink

use std::collections::HashMap;
use std::time::{Duration, Instant};

use keel_engine::Shard;
use keel_replicator::core::{Event, Frame, LinkDirection, LinkId};
use keel_replicator::link::{self, Envelope};
use keel_replicator::rdma::RdmaLink;
use keel_replicator::wire::{Epoch, NodeId};

use super::{decode_frames, Payload, Replicator, STREAM};
use crate::daemon::handler::Message;

/// Longest sleep of shard 0 while RDMA links exist.
pub(crate) const RDMA_WAKE: Duration = Duration::from_millis(1);
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
}

/// The RDMA links of shard 0, by link id.
#[derive(Default)]
pub(crate) struct RdmaPeers {
    peers: HashMap<LinkId, RdmaPeer>,
    wake_at: Option<Instant>,
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
        let envelope = Envelope {
            volume: self.volume,
            stream: STREAM,
            epoch,
        };
        let payload: &[u8] = match frame {
            Frame::Write { data, .. } => data.as_slice(),
            _ => &[],
        };
        match link::encode(&envelope, frame, payload, &self.addresses, &mut peer.tx) {
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
    }

    /// Sends what is queued, drains the completion queues, decodes what
    /// arrived; called every reactor loop iteration. True if anything
    /// happened.
    pub fn poll_rdma(&mut self, shard: &mut Shard<Message>) -> bool {
        if self.rdma.peers.is_empty() {
            return false;
        }
        let now = shard.now();
        if self.rdma.wake_at.is_none_or(|at| now >= at) {
            self.rdma.wake_at = Some(now + RDMA_WAKE);
            let _ = shard.add_timer(RDMA_WAKE, TIMER_RDMA_WAKE);
        }
        let mut worked = false;
        let mut down = Vec::new();
        for (&id, peer) in self.rdma.peers.iter_mut() {
            let result = (|| -> Result<bool, String> {
                let mut progress = false;
                if !peer.tx.is_empty() {
                    let taken = peer.link.send(&peer.tx).map_err(|e| e.to_string())?;
                    peer.tx.drain(..taken);
                    progress |= taken > 0;
                }
                let before = self.events.len();
                let polled = peer.link.poll(&mut peer.rx).map_err(|e| e.to_string())?;
                progress |= polled.completions > 0;
                if polled.received > 0 {
                    decode_frames(&mut peer.rx, self.volume, peer.node, id, &mut self.events)?;
                    peer.frames_received += (self.events.len() - before) as u64;
                }
                Ok(progress)
            })();
            match result {
                Ok(progress) => {
                    worked |= progress;
                    if peer.close_after_send && peer.tx.is_empty() {
                        down.push((id, "closed by the state machine".to_owned()));
                    }
                }
                Err(why) => down.push((id, why)),
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
