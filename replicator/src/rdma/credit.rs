//! Credit-based flow control: a SEND may only be posted when the peer has a
//! receive buffer posted for it, so the receiver is never overrun (on RC an
//! unmatched SEND would stall in receiver-not-ready retries or break the
//! queue pair).
//!
//! - Each end starts with as many credits as the other keeps receive
//!   buffers posted (its `recv_depth`, from the connection parameters).
//!   Every SEND, data or credit-only, costs one credit.
//! - A receiver reposts a buffer as soon as it has copied the message out
//!   and then *owes* the sender one credit. Owed credits ride in the header
//!   of the next message it sends (piggybacked).
//! - Data may only take a credit while at least two are left: the last one
//!   is kept for a credit-only message, which is sent when the credits owed
//!   reach half the receive ring and nothing else is going out. Without the
//!   reserve both ends could spend their last credits on data and wait for
//!   each other forever.
//! - A credit-only message is itself a SEND and is owed back, but receiving
//!   one never makes a credit message due by itself before half the ring is
//!   owed (at least 2 buffers), so credit messages cannot ping-pong.
//!
//! Why it cannot deadlock: an end with at most one credit has sent at least
//! `peer_depth - 1 >= peer_depth / 2` messages the peer has not returned, so
//! once the peer has processed them it owes at least the threshold and has a
//! credit to return them with (its own last credit is only ever spent on a
//! credit message that hands over at least two). `tests::never_overrun_never_stuck`
//! checks this against random interleavings.

use super::error::RdmaError;

/// Credit accounting for one link end (sans-IO: no verbs here).
#[derive(Debug, Clone)]
pub struct Credits {
    /// Receive buffers the peer keeps posted: the most credits we can hold.
    peer_depth: u16,
    /// Credits we hold now: SENDs we may post.
    available: u16,
    /// Our receive buffers: the most we can owe.
    own_depth: u16,
    /// Receive buffers we reposted and have not yet told the peer about.
    owed: u16,
}

impl Credits {
    /// A fresh link: the peer's whole ring is ours, we owe nothing.
    pub fn new(peer_depth: u16, own_depth: u16) -> Self {
        Credits {
            peer_depth,
            available: peer_depth,
            own_depth,
            owed: 0,
        }
    }

    /// Credits held now.
    pub fn available(&self) -> u16 {
        self.available
    }

    /// Credits owed to the peer.
    pub fn owed(&self) -> u16 {
        self.owed
    }

    /// Whether a data message may be sent now (a credit beyond the reserve).
    pub fn can_send_data(&self) -> bool {
        self.available >= 2
    }

    /// Takes a credit for a data message and returns the owed credits to
    /// carry in its header; `None` when [`Credits::can_send_data`] is false.
    pub fn take_for_data(&mut self) -> Option<u16> {
        if !self.can_send_data() {
            return None;
        }
        self.available -= 1;
        Some(std::mem::take(&mut self.owed))
    }

    /// Whether a credit-only message is due: half the receive ring is owed
    /// and there is a credit to send it with.
    pub fn credit_message_due(&self) -> bool {
        self.available >= 1 && self.owed >= self.threshold()
    }

    /// Takes a credit for a credit-only message and returns the credits it
    /// carries; `None` unless [`Credits::credit_message_due`].
    pub fn take_for_credit_message(&mut self) -> Option<u16> {
        if !self.credit_message_due() {
            return None;
        }
        self.available -= 1;
        Some(std::mem::take(&mut self.owed))
    }

    /// Gives back a credit taken for a message that could not be posted
    /// (with the owed credits it was to carry).
    pub fn untake(&mut self, carried: u16) {
        self.available = self.available.saturating_add(1).min(self.peer_depth);
        self.owed = self.owed.saturating_add(carried).min(self.own_depth);
    }

    /// The peer returned `n` credits. More than it can ever have granted
    /// is a protocol violation.
    pub fn granted(&mut self, n: u16) -> Result<(), RdmaError> {
        let total = self
            .available
            .checked_add(n)
            .filter(|total| *total <= self.peer_depth)
            .ok_or(RdmaError::Protocol(
                "peer returned more credits than its ring",
            ))?;
        self.available = total;
        Ok(())
    }

    /// We reposted one receive buffer: one more credit owed.
    pub fn reposted(&mut self) {
        self.owed = self.owed.saturating_add(1).min(self.own_depth);
    }

    fn threshold(&self) -> u16 {
        (self.own_depth / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// One end of a simulated link: credits, posted receive buffers and
    /// messages received but not processed yet.
    struct End {
        credits: Credits,
        posted: u16,
        unprocessed: VecDeque<u16>,
        data_left: u32,
        data_received: u32,
    }

    fn deliver(to: &mut End, credits: u16) {
        assert!(to.posted > 0, "receiver overrun");
        to.posted -= 1;
        to.unprocessed.push_back(credits);
    }

    #[test]
    fn never_overrun_never_stuck() {
        // A small deterministic PRNG (xorshift) keeps the test reproducible.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300 {
            let depths = [4 + (round % 5) as u16, 4 + (round % 7) as u16];
            let mut ends: Vec<End> = (0..2)
                .map(|i| End {
                    credits: Credits::new(depths[1 - i], depths[i]),
                    posted: depths[i],
                    unprocessed: VecDeque::new(),
                    data_left: 200 + (round as u32 % 3) * 50 * i as u32,
                    data_received: 0,
                })
                .collect();
            let wanted = [ends[1].data_left, ends[0].data_left];
            // (destination, credits, is_data) in flight, per direction, in order.
            let mut wire: [VecDeque<(u16, bool)>; 2] = [VecDeque::new(), VecDeque::new()];
            let mut idle_steps = 0;
            while ends[0].data_received < wanted[0] || ends[1].data_received < wanted[1] {
                let side = (next() % 2) as usize;
                let progressed = match next() % 4 {
                    // Send data if allowed.
                    0 => {
                        let end = &mut ends[side];
                        if end.data_left > 0 {
                            if let Some(carried) = end.credits.take_for_data() {
                                end.data_left -= 1;
                                wire[side].push_back((carried, true));
                                true
                            } else {
                                false
                            }
                        } else {
                            false
                        }
                    }
                    // Deliver the oldest message of this direction.
                    1 => match wire[side].pop_front() {
                        Some((credits, is_data)) => {
                            let to = &mut ends[1 - side];
                            deliver(to, credits);
                            if is_data {
                                to.data_received += 1;
                            }
                            true
                        }
                        None => false,
                    },
                    // Process (copy out, repost) and maybe send a credit message.
                    _ => {
                        let end = &mut ends[side];
                        let mut any = false;
                        while let Some(credits) = end.unprocessed.pop_front() {
                            end.credits.granted(credits).unwrap();
                            end.posted += 1;
                            end.credits.reposted();
                            any = true;
                        }
                        if let Some(carried) = end.credits.take_for_credit_message() {
                            wire[side].push_back((carried, false));
                            any = true;
                        }
                        any
                    }
                };
                idle_steps = if progressed { 0 } else { idle_steps + 1 };
                assert!(idle_steps < 10_000, "stuck in round {round}");
            }
        }
    }

    #[test]
    fn the_last_credit_is_kept_for_credit_messages() {
        let mut credits = Credits::new(4, 4);
        for _ in 0..3 {
            assert!(credits.take_for_data().is_some());
        }
        assert_eq!(credits.available(), 1);
        assert!(credits.take_for_data().is_none());
        assert!(!credits.credit_message_due());
        credits.reposted();
        credits.reposted();
        assert_eq!(credits.take_for_credit_message(), Some(2));
        assert_eq!(credits.available(), 0);
    }

    #[test]
    fn too_many_credits_is_a_protocol_error() {
        let mut credits = Credits::new(4, 4);
        assert!(credits.granted(1).is_err());
        credits.take_for_data();
        assert!(credits.granted(1).is_ok());
        assert!(credits.granted(1).is_err());
    }
}
