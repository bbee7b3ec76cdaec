//! Keep Alive timer (NVMe Base 2.0 §3.9.5).
//!
//! The controller advertises Traffic Based Keep Alive (CTRATT.TBKAS), so
//! any command received restarts the timer, not only Keep Alive commands;
//! the host then sends Keep Alive only when idle. When nothing arrives
//! within KATO the controller is dead to the host and its resources must
//! be freed.

use std::time::Duration;

use crate::controller::clock::Timestamp;

/// KATO a discovery controller gets when the host asks for none: discovery
/// controllers are short-lived, and one abandoned without a TCP close must
/// still be freed (nvmet uses the same 120 s).
pub const DISCOVERY_DEFAULT_KATO_MS: u32 = 120_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepAlive {
    /// KATO in ms, rounded up to the KAS granularity; 0 disables.
    timeout_ms: u32,
    granularity_ms: u32,
    last_activity: Timestamp,
    expired: bool,
}

impl KeepAlive {
    /// `kas` is the Identify KAS field (100 ms units).
    pub(crate) fn new(kato_ms: u32, kas: u16, now: Timestamp) -> Self {
        let mut timer = Self {
            timeout_ms: 0,
            granularity_ms: u32::from(kas) * 100,
            last_activity: now,
            expired: false,
        };
        timer.set_timeout_ms(kato_ms);
        timer
    }

    /// Sets KATO, rounded up to the granularity the controller reports in
    /// KAS (the host learns the effective value from Get Features).
    pub(crate) fn set_timeout_ms(&mut self, kato_ms: u32) {
        self.timeout_ms = match self.granularity_ms {
            0 => kato_ms,
            granularity => kato_ms.div_ceil(granularity).saturating_mul(granularity),
        };
    }

    pub(crate) fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }

    /// Something arrived from the host.
    pub(crate) fn touch(&mut self, now: Timestamp) {
        if now > self.last_activity {
            self.last_activity = now;
        }
    }

    /// Whether the timer ran out at `now`; true once per expiry.
    pub(crate) fn check_expired(&mut self, now: Timestamp) -> bool {
        if self.expired || self.timeout_ms == 0 {
            return false;
        }
        let timeout = Duration::from_millis(u64::from(self.timeout_ms));
        self.expired = now.saturating_since(self.last_activity) > timeout;
        self.expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_once_after_kato_without_traffic() {
        let mut timer = KeepAlive::new(5000, 10, Timestamp::ZERO);
        assert_eq!(timer.timeout_ms(), 5000);
        assert!(!timer.check_expired(Timestamp::from_millis(5000)));
        timer.touch(Timestamp::from_millis(4000));
        assert!(!timer.check_expired(Timestamp::from_millis(8999)));
        assert!(timer.check_expired(Timestamp::from_millis(9001)));
        assert!(!timer.check_expired(Timestamp::from_millis(20_000)));
    }

    #[test]
    fn rounds_up_and_zero_disables() {
        let mut timer = KeepAlive::new(1234, 10, Timestamp::ZERO);
        assert_eq!(timer.timeout_ms(), 2000);
        timer.set_timeout_ms(0);
        assert!(!timer.check_expired(Timestamp::from_millis(u64::MAX)));
        let timer = KeepAlive::new(u32::MAX, 10, Timestamp::ZERO);
        assert!(timer.timeout_ms() >= 4_294_967_000);
    }
}
