//! What to run: the access pattern and how big, how deep, how long.

use std::time::Duration;

use clap::ValueEnum;
use rand::rngs::SmallRng;
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    Randread,
    Randwrite,
    Randrw,
    Read,
    Write,
}

impl Pattern {
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Randread => "randread",
            Pattern::Randwrite => "randwrite",
            Pattern::Randrw => "randrw",
            Pattern::Read => "read",
            Pattern::Write => "write",
        }
    }

    pub fn is_random(self) -> bool {
        matches!(
            self,
            Pattern::Randread | Pattern::Randwrite | Pattern::Randrw
        )
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub pattern: Pattern,
    /// Percentage of reads for randrw.
    pub rwmix_read: u8,
    pub block_size: u64,
    pub queue_depth: usize,
    pub runtime: Duration,
}

/// Where one shard's I/Os go: its own slice of the volume, so sequential
/// streams of several cores do not overlap.
pub struct OffsetGen {
    start: u64,
    blocks: u64,
    block_size: u64,
    next_seq: u64,
    random: bool,
}

impl OffsetGen {
    pub fn new(workload: &Workload, capacity: u64, shard: usize, shards: usize) -> OffsetGen {
        let total_blocks = capacity / workload.block_size;
        let per_shard = (total_blocks / shards as u64).max(1);
        let (start, blocks) = if workload.pattern.is_random() {
            (0, total_blocks.max(1))
        } else {
            (per_shard * shard as u64, per_shard)
        };
        OffsetGen {
            start,
            blocks,
            block_size: workload.block_size,
            next_seq: 0,
            random: workload.pattern.is_random(),
        }
    }

    /// Like [`OffsetGen::new`], but random patterns also keep to the shard's
    /// own slice (so shards never touch the same block).
    pub fn for_slice(workload: &Workload, capacity: u64, shard: usize, shards: usize) -> OffsetGen {
        let total_blocks = capacity / workload.block_size;
        let per_shard = (total_blocks / shards as u64).max(1);
        OffsetGen {
            start: per_shard * shard as u64,
            blocks: per_shard,
            block_size: workload.block_size,
            next_seq: 0,
            random: workload.pattern.is_random(),
        }
    }

    pub fn next(&mut self, rng: &mut SmallRng) -> u64 {
        let block = if self.random {
            rng.gen_range(0..self.blocks)
        } else {
            let b = self.next_seq;
            self.next_seq = (self.next_seq + 1) % self.blocks;
            b
        };
        (self.start + block) * self.block_size
    }
}

/// Decides read or write for the next I/O.
pub fn next_is_read(workload: &Workload, rng: &mut SmallRng) -> bool {
    match workload.pattern {
        Pattern::Randread | Pattern::Read => true,
        Pattern::Randwrite | Pattern::Write => false,
        Pattern::Randrw => rng.gen_range(0..100u8) < workload.rwmix_read,
    }
}

/// Parses sizes like `4k`, `128K`, `4G`, `512` (bytes), `1M`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a size (e.g. 4k, 1M, 4G)"))?;
    let shift = match suffix
        .to_ascii_lowercase()
        .trim_end_matches("ib")
        .trim_end_matches('b')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("'{text}': unknown size suffix '{suffix}'")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses durations like `20`, `20s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 20s)"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("'{text}': unknown duration unit '{unit}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert!(parse_size("4x").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("1h").is_err());
    }

    fn workload(pattern: Pattern) -> Workload {
        Workload {
            pattern,
            rwmix_read: 70,
            block_size: 4096,
            queue_depth: 1,
            runtime: Duration::from_secs(1),
        }
    }

    #[test]
    fn sequential_shards_walk_disjoint_slices_and_wrap() {
        let w = workload(Pattern::Read);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut a = OffsetGen::new(&w, 8 * 4096, 0, 2);
        let mut b = OffsetGen::new(&w, 8 * 4096, 1, 2);
        let a_offsets: Vec<u64> = (0..5).map(|_| a.next(&mut rng) / 4096).collect();
        let b_offsets: Vec<u64> = (0..4).map(|_| b.next(&mut rng) / 4096).collect();
        assert_eq!(a_offsets, vec![0, 1, 2, 3, 0]);
        assert_eq!(b_offsets, vec![4, 5, 6, 7]);
    }

    #[test]
    fn random_offsets_stay_aligned_and_in_range() {
        let w = workload(Pattern::Randrw);
        let mut rng = SmallRng::seed_from_u64(7);
        let mut g = OffsetGen::new(&w, 1 << 20, 0, 1);
        let mut reads = 0;
        for _ in 0..10_000 {
            let off = g.next(&mut rng);
            assert_eq!(off % 4096, 0);
            assert!(off + 4096 <= 1 << 20);
            reads += next_is_read(&w, &mut rng) as u32;
        }
        assert!(
            (6500..7500).contains(&reads),
            "rwmix 70 gave {reads} reads of 10000"
        );
    }
}
