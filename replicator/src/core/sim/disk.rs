//! A simulated local device in the spirit of FoundationDB's
//! `AsyncFileNonDurable`: a completed write is only volatile until a flush
//! (or FUA); on a crash every volatile block and every block of a write
//! still in flight independently survives or not, and a `Persist` in
//! flight may or may not have landed.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::rng::Rng;
use crate::core::{DurableRecord, IoToken, Standing};

/// Content of one block: the id of the host write that wrote it (0 for the
/// initial content). A payload is one such value per block.
pub(crate) type Payload = Rc<Vec<u64>>;

pub(crate) enum PendingIo {
    Write {
        first: usize,
        data: Payload,
        fua: bool,
        fails: bool,
    },
    Read {
        first: usize,
        blocks: usize,
        fails: bool,
    },
    Persist {
        record: DurableRecord,
    },
}

pub(crate) struct Disk {
    pub(crate) durable: Vec<u64>,
    pub(crate) volatile: BTreeMap<usize, u64>,
    pub(crate) record: DurableRecord,
    pub(crate) pending: BTreeMap<IoToken, PendingIo>,
    /// The last `Action::Note`: outlives a kill, not a power loss.
    pub(crate) noted: Option<Standing>,
}

/// What a completed I/O returns to the node.
pub(crate) enum Completion {
    Write(bool),
    Read(Option<Payload>),
    Persisted,
}

impl Disk {
    pub(crate) fn new(blocks: usize, record: DurableRecord) -> Self {
        Self {
            durable: vec![0; blocks],
            volatile: BTreeMap::new(),
            record,
            pending: BTreeMap::new(),
            noted: None,
        }
    }

    /// What a read of `block` returns now.
    pub(crate) fn visible(&self, block: usize) -> u64 {
        self.volatile
            .get(&block)
            .copied()
            .unwrap_or(self.durable[block])
    }

    fn flush(&mut self) {
        for (block, value) in std::mem::take(&mut self.volatile) {
            self.durable[block] = value;
        }
    }

    pub(crate) fn complete(&mut self, token: IoToken, rng: &mut Rng) -> Option<Completion> {
        Some(match self.pending.remove(&token)? {
            PendingIo::Write {
                first,
                data,
                fua,
                fails,
            } => {
                for (i, value) in data.iter().enumerate() {
                    let block = first + i;
                    // A failed write leaves each block old or new.
                    if fails && rng.chance(500) {
                        continue;
                    }
                    if fua && !fails {
                        self.volatile.remove(&block);
                        self.durable[block] = *value;
                    } else {
                        self.volatile.insert(block, *value);
                    }
                }
                Completion::Write(!fails)
            }
            PendingIo::Read {
                first,
                blocks,
                fails,
            } => {
                let data = (!fails)
                    .then(|| Rc::new((first..first + blocks).map(|b| self.visible(b)).collect()));
                Completion::Read(data)
            }
            PendingIo::Persist { record } => {
                self.flush();
                self.record = record;
                Completion::Persisted
            }
        })
    }

    /// The process dies, the machine does not: what the device holds
    /// (flushed or not) stays; I/O in flight lands or not, block by block.
    pub(crate) fn kill(&mut self, rng: &mut Rng) {
        let pending = std::mem::take(&mut self.pending);
        for io in pending.into_values() {
            match io {
                PendingIo::Persist { record } if rng.chance(500) => {
                    self.flush();
                    self.record = record;
                }
                PendingIo::Write { first, data, .. } => {
                    for (i, value) in data.iter().enumerate() {
                        if rng.chance(500) {
                            self.volatile.insert(first + i, *value);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Power loss: unflushed data and in-flight I/O survive or not, block by
    /// block.
    pub(crate) fn crash(&mut self, rng: &mut Rng) {
        self.kill(rng);
        self.noted = None;
        for (block, value) in std::mem::take(&mut self.volatile) {
            if rng.chance(500) {
                self.durable[block] = value;
            }
        }
    }
}
