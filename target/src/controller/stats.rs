//! I/O counters reported in the SMART / Health Information log (NVMe Base
//! 2.0 §5.16.1.3), fed by the data path through
//! [`crate::controller::Target::complete_io`].

/// Counters of one subsystem, kept across controllers so a reconnecting
/// host sees them grow monotonically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IoStatistics {
    /// Bytes read by the host (Read, Compare).
    pub bytes_read: u128,
    /// Bytes written by the host (Write).
    pub bytes_written: u128,
    /// Read commands completed (Read, Compare).
    pub host_read_commands: u128,
    /// Write commands completed (Write, Write Zeroes).
    pub host_write_commands: u128,
}

impl IoStatistics {
    /// Data Units Read: thousands of 512-byte units, rounded up.
    pub fn data_units_read(&self) -> u128 {
        data_units(self.bytes_read)
    }

    /// Data Units Written: thousands of 512-byte units, rounded up.
    pub fn data_units_written(&self) -> u128 {
        data_units(self.bytes_written)
    }
}

fn data_units(bytes: u128) -> u128 {
    bytes.div_ceil(512).div_ceil(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_units_round_up() {
        let mut stats = IoStatistics::default();
        assert_eq!(stats.data_units_read(), 0);
        stats.bytes_read = 1;
        assert_eq!(stats.data_units_read(), 1);
        stats.bytes_written = 512_000;
        assert_eq!(stats.data_units_written(), 1);
        stats.bytes_written = 512_001;
        assert_eq!(stats.data_units_written(), 2);
    }
}
