//! Self-describing data for `--verify`: every 512-byte sector of a write
//! names its I/O unit, the write's generation and its own index, followed by
//! bytes derived from those three. A read is checked against the last write
//! the target acknowledged for that unit, so misplaced, stale, torn or
//! corrupted data all show, with what was found instead.

use std::collections::HashMap;

use anyhow::bail;

const SECTOR: usize = 512;
const MAGIC: &[u8; 8] = b"KEELVRFY";
/// Generation 0: never written by us (or unknown after a failed write).
const UNKNOWN: u32 = 0;
/// Bounds the bookkeeping (`5 bytes` per unit).
const MAX_UNITS: u64 = 1 << 28;

pub struct Verifier {
    unit_size: u64,
    acknowledged: Vec<u32>,
    in_flight: Vec<bool>,
    pending: HashMap<u64, u32>,
    next_generation: u32,
}

impl Verifier {
    pub fn new(capacity: u64, unit_size: u64) -> Verifier {
        let units = (capacity / unit_size).min(MAX_UNITS) as usize;
        Verifier {
            unit_size,
            acknowledged: vec![UNKNOWN; units],
            in_flight: vec![false; units],
            pending: HashMap::new(),
            next_generation: 1,
        }
    }

    fn unit(&self, offset: u64) -> usize {
        (offset / self.unit_size) as usize
    }

    pub fn busy(&self, offset: u64) -> bool {
        self.in_flight
            .get(self.unit(offset))
            .copied()
            .unwrap_or(true)
    }

    pub fn start(&mut self, offset: u64) {
        let u = self.unit(offset);
        if let Some(f) = self.in_flight.get_mut(u) {
            *f = true;
        }
    }

    pub fn finish(&mut self, offset: u64) {
        let u = self.unit(offset);
        if let Some(f) = self.in_flight.get_mut(u) {
            *f = false;
        }
    }

    /// Fills `buf` with the next generation of `offset`'s unit.
    pub fn fill_for_write(&mut self, offset: u64, buf: &mut [u8]) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.checked_add(1).unwrap_or(1);
        let unit = self.unit(offset) as u64;
        self.pending.insert(unit, generation);
        fill(buf, unit, generation);
    }

    pub fn acknowledge_write(&mut self, offset: u64) {
        let unit = self.unit(offset);
        if let (Some(generation), Some(slot)) = (
            self.pending.remove(&(unit as u64)),
            self.acknowledged.get_mut(unit),
        ) {
            *slot = generation;
        }
    }

    pub fn forget(&mut self, offset: u64) {
        let unit = self.unit(offset);
        self.pending.remove(&(unit as u64));
        if let Some(slot) = self.acknowledged.get_mut(unit) {
            *slot = UNKNOWN;
        }
    }

    /// Checks a completed read against the last acknowledged write.
    pub fn check_read(&self, offset: u64, data: &[u8]) -> anyhow::Result<()> {
        let unit = self.unit(offset);
        let Some(&generation) = self.acknowledged.get(unit) else {
            return Ok(());
        };
        if generation == UNKNOWN {
            return Ok(());
        }
        let mut expected = vec![0u8; data.len()];
        fill(&mut expected, unit as u64, generation);
        if let Some(bad) = data
            .chunks(SECTOR)
            .zip(expected.chunks(SECTOR))
            .position(|(got, want)| got != want)
        {
            let got = &data[bad * SECTOR..];
            let found = if got.len() >= 24 && &got[..8] == MAGIC {
                format!(
                    "unit {} generation {} sector {}",
                    u64::from_le_bytes(got[8..16].try_into().unwrap_or_default()),
                    u32::from_le_bytes(got[16..20].try_into().unwrap_or_default()),
                    u32::from_le_bytes(got[20..24].try_into().unwrap_or_default())
                )
            } else {
                "data that is not ours".into()
            };
            bail!(
                "verify failed at byte {}: expected unit {unit} generation {generation} sector {bad}, found {found}",
                offset + (bad * SECTOR) as u64
            );
        }
        Ok(())
    }
}

fn fill(buf: &mut [u8], unit: u64, generation: u32) {
    for (index, sector) in buf.chunks_mut(SECTOR).enumerate() {
        let mut state =
            unit ^ ((generation as u64) << 32) ^ ((index as u64) << 48) ^ 0x9E37_79B9_7F4A_7C15;
        for chunk in sector.chunks_mut(8) {
            // xorshift64: cheap and different for every (unit, generation, sector).
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        if sector.len() >= 24 {
            sector[..8].copy_from_slice(MAGIC);
            sector[8..16].copy_from_slice(&unit.to_le_bytes());
            sector[16..20].copy_from_slice(&generation.to_le_bytes());
            sector[20..24].copy_from_slice(&(index as u32).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_data_verifies_and_anything_else_is_caught() {
        let mut v = Verifier::new(1 << 20, 4096);
        let mut buf = vec![0u8; 4096];
        v.fill_for_write(8192, &mut buf);
        // Not yet acknowledged: reads are not judged.
        v.check_read(8192, &[0u8; 4096]).unwrap();
        v.acknowledge_write(8192);
        v.check_read(8192, &buf).unwrap();

        let mut stale = buf.clone();
        v.fill_for_write(8192, &mut stale);
        v.acknowledge_write(8192);
        let err = v.check_read(8192, &buf).unwrap_err().to_string();
        assert!(
            err.contains("expected unit 2 generation 2")
                && err.contains("found unit 2 generation 1"),
            "{err}"
        );

        let mut torn = stale.clone();
        torn[3000] ^= 1;
        assert!(v
            .check_read(8192, &torn)
            .unwrap_err()
            .to_string()
            .contains("sector 5"));
        assert!(v
            .check_read(8192, &[0u8; 4096])
            .unwrap_err()
            .to_string()
            .contains("not ours"));
    }

    #[test]
    fn a_failed_write_makes_the_unit_unknown() {
        let mut v = Verifier::new(1 << 20, 4096);
        let mut buf = vec![0u8; 4096];
        v.fill_for_write(0, &mut buf);
        v.acknowledge_write(0);
        v.fill_for_write(0, &mut buf);
        v.forget(0);
        v.check_read(0, &[7u8; 4096]).unwrap();
        v.start(0);
        assert!(v.busy(0));
        v.finish(0);
        assert!(!v.busy(0));
    }
}
