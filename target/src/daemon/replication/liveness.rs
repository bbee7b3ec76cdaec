//! Link liveness: heartbeats on quiet links and a bound on silence.
//!
//! A link whose peer vanished without a reset (a partition, a host that
//! lost power, a frozen process) stays open to TCP for many minutes. Each
//! end therefore sends a `Heartbeat` every beat interval (a quarter of the
//! link timeout, one small frame: busy or not, so that both ends measure
//! the round trip), and closes the link once nothing at all arrived for
//! the link timeout: a frame, an acknowledgement and a heartbeat all
//! count. The primary then resyncs that copy when it comes back, and the
//! copy's status says `down` instead of `in_sync`. The reply's round trip
//! is published as a metric.
//!
//! No clock or socket in here: the driver passes the time and sends what
//! [`LinkLiveness::check`] asks for.

use std::time::{Duration, Instant};

use keel_replicator::wire::Heartbeat;

/// Heartbeats per link timeout: a link is closed only after this many
/// beats went unanswered (several, so that one lost to a busy peer or a
/// retransmission does not close it).
const BEATS_PER_TIMEOUT: u32 = 4;

/// What the driver should do for one link now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing: the link is busy or a heartbeat is on its way.
    Alive,
    /// Send a heartbeat carrying this token.
    Beat(u64),
    /// Nothing arrived for longer than the timeout: close the link.
    Silent(Duration),
}

/// Why a link silent for `quiet` is closed (for the log).
pub(crate) fn silence(quiet: Duration) -> String {
    format!(
        "nothing received for {} ms (link timeout)",
        quiet.as_millis()
    )
}

/// A reply to the heartbeat in flight: when that heartbeat was sent and
/// the round trip it measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reply {
    pub sent: Instant,
    pub round_trip: Duration,
}

/// The liveness of one link.
#[derive(Debug, Clone)]
pub(crate) struct LinkLiveness {
    /// When the last bytes arrived (or the link came up).
    heard: Instant,
    /// The heartbeat in flight: its token and when it was sent.
    beat: Option<(u64, Instant)>,
    /// When the last heartbeat was sent (or the link came up).
    last_beat: Instant,
    next_token: u64,
}

impl LinkLiveness {
    /// A link that came up at `now`.
    pub fn new(now: Instant) -> Self {
        LinkLiveness {
            heard: now,
            beat: None,
            last_beat: now,
            next_token: 1,
        }
    }

    /// Bytes arrived at `now`.
    pub fn heard(&mut self, now: Instant) {
        self.heard = self.heard.max(now);
    }

    /// A heartbeat reply with `token` arrived at `now`: the reply, if it
    /// answers the heartbeat in flight (any other token is ignored: the
    /// peer may echo anything).
    fn replied(&mut self, token: u64, now: Instant) -> Option<Reply> {
        let (sent_token, sent) = self.beat?;
        if sent_token != token {
            return None;
        }
        self.beat = None;
        Some(Reply {
            sent,
            round_trip: now.saturating_duration_since(sent),
        })
    }

    /// Takes the heartbeats one batch of received bytes carried (at
    /// `now`): the reply to the heartbeat in flight, if any,
    /// and the one answer owed — to the latest heartbeat only, so a peer
    /// sending them back to back cannot make this side queue more than it
    /// receives.
    pub fn take(
        &mut self,
        beats: &[Heartbeat],
        now: Instant,
    ) -> (Option<Reply>, Option<Heartbeat>) {
        let mut reply = None;
        for beat in beats.iter().filter(|b| b.reply) {
            reply = self.replied(beat.token, now).or(reply);
        }
        let answer = beats.iter().rev().find(|b| !b.reply).map(|beat| Heartbeat {
            reply: true,
            ..*beat
        });
        (reply, answer)
    }

    /// What to do at `now` with a link timeout of `timeout`.
    pub fn check(&mut self, now: Instant, timeout: Duration) -> Verdict {
        let quiet = now.saturating_duration_since(self.heard);
        if quiet > timeout {
            return Verdict::Silent(quiet);
        }
        // One heartbeat per interval, answered or not. (Beating only on a
        // quiet link left one end of each link without a round trip: the
        // other end's heartbeats kept it from ever being quiet.)
        let interval = timeout / BEATS_PER_TIMEOUT;
        if now.saturating_duration_since(self.last_beat) < interval {
            return Verdict::Alive;
        }
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1);
        self.beat = Some((token, now));
        self.last_beat = now;
        Verdict::Beat(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(2);
    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn a_busy_link_beats_once_an_interval_and_stays_up() {
        let start = Instant::now();
        let mut link = LinkLiveness::new(start);
        let mut beats = 0;
        for ms in (100..=10_000).step_by(100) {
            let now = start + Duration::from_millis(ms);
            link.heard(now);
            match link.check(now, TIMEOUT) {
                Verdict::Alive => {}
                Verdict::Beat(_) => beats += 1,
                Verdict::Silent(quiet) => panic!("closed after {quiet:?} while busy"),
            }
        }
        assert_eq!(beats, 20, "one per 500 ms over 10 s");
    }

    #[test]
    fn a_quiet_link_beats_each_interval_and_measures_the_round_trip() {
        let start = Instant::now();
        let mut link = LinkLiveness::new(start);
        assert_eq!(link.check(start + INTERVAL / 2, TIMEOUT), Verdict::Alive);
        let Verdict::Beat(token) = link.check(start + INTERVAL, TIMEOUT) else {
            panic!("a beat is due after a quiet interval");
        };
        assert_eq!(link.check(start + INTERVAL, TIMEOUT), Verdict::Alive);
        let answered = start + INTERVAL + Duration::from_millis(3);
        link.heard(answered);
        assert_eq!(link.replied(token + 1, answered), None, "not its token");
        assert_eq!(
            link.replied(token, answered),
            Some(Reply {
                sent: start + INTERVAL,
                round_trip: Duration::from_millis(3)
            })
        );
        assert_eq!(link.replied(token, answered), None, "answered once");
        // The next beat an interval after the last one.
        let sent = start + INTERVAL;
        assert_eq!(link.check(sent + INTERVAL / 2, TIMEOUT), Verdict::Alive);
        assert!(matches!(
            link.check(sent + INTERVAL, TIMEOUT),
            Verdict::Beat(next) if next != token
        ));
    }

    #[test]
    fn a_batch_of_heartbeats_owes_one_answer_and_a_reply_gives_the_round_trip() {
        let start = Instant::now();
        let mut link = LinkLiveness::new(start);
        let Verdict::Beat(token) = link.check(start + INTERVAL, TIMEOUT) else {
            panic!("a beat is due");
        };
        let beat = |token, reply| Heartbeat { token, reply };
        let batch = [beat(7, false), beat(token, true), beat(8, false)];
        let at = start + INTERVAL + Duration::from_millis(2);
        let reply = Reply {
            sent: start + INTERVAL,
            round_trip: Duration::from_millis(2),
        };
        assert_eq!(link.take(&batch, at), (Some(reply), Some(beat(8, true))));
        assert_eq!(link.take(&[], at), (None, None));
    }

    #[test]
    fn a_link_silent_past_the_timeout_is_closed_after_several_beats() {
        let start = Instant::now();
        let mut link = LinkLiveness::new(start);
        let mut beats = 0;
        let mut ms = 0;
        let silent = loop {
            ms += 50;
            match link.check(start + Duration::from_millis(ms), TIMEOUT) {
                Verdict::Alive => {}
                Verdict::Beat(_) => beats += 1,
                Verdict::Silent(quiet) => break quiet,
            }
        };
        assert!(silent > TIMEOUT && silent <= TIMEOUT + Duration::from_millis(50));
        assert_eq!(beats, 4, "one beat per interval before giving up");
    }

    #[test]
    fn time_going_backwards_is_not_silence() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut link = LinkLiveness::new(start);
        link.heard(start - Duration::from_secs(5));
        assert_eq!(
            link.check(start - Duration::from_secs(9), TIMEOUT),
            Verdict::Alive
        );
    }
}
