//! A backend that fails or stalls chosen operations of another, for fault
//! tests (in the spirit of SPDK's error and delay bdevs).
//!
//! [`FaultBackend`] wraps any backend; a shared [`FaultPlan`] holds the
//! rules, which a control thread may change while shards run. A rule picks
//! operations by kind ([`FaultOp`]) and does one of:
//!
//! - [`FaultAction::Fail`]: the operation completes at once with
//!   [`IoError::Os`] and the rule's errno, without reaching the backend;
//! - [`FaultAction::Stall`]: the operation completes with `EIO` only after
//!   the delay, without reaching the backend. It is an io_uring timeout on
//!   the shard's ring, so the shard keeps serving everything else meanwhile;
//!   its `-ETIME` result becomes `EIO` in [`super::complete`];
//! - [`FaultAction::Short`]: a read or write reaches the backend with its
//!   first block only, so the device really moves that much and the
//!   operation completes short; the shard submits the rest (which the rule
//!   may shorten again). Files do that now and then; an engine that takes
//!   a short transfer for an error fails writes for nothing.
//!
//! A rule applies to the next `count` matching operations, or to all of
//! them until cleared.
//!
//! Media errors model a disk's latent sector errors: a read that touches a
//! marked 512-byte sector fails with `EIO` (before any rule is tried),
//! until a write or Write Zeroes covers the sector, as a drive remaps a
//! sector it rewrites ([`FaultPlan::mark_media_errors`]).
//!
//! With no rule and no media error set, an operation costs one atomic
//! load more than the backend's own `prepare`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use io_uring::{opcode, types};

use super::{BlockBackend, Geometry, IoError, IoOp, Prepared, Request};

/// The longest stall a rule may ask for.
pub const MAX_STALL: Duration = Duration::from_secs(600);
/// Distinct stall delays one plan may ever use (each keeps a timespec for
/// the plan's life).
pub const MAX_STALL_SETTINGS: usize = 64;
/// Rules one plan holds at once.
pub const MAX_RULES: usize = 64;
/// The unit of a media error.
pub const MEDIA_SECTOR: u64 = 512;
/// Sectors one plan may hold marked as media errors at once (32 MiB).
pub const MAX_MEDIA_ERRORS: usize = 65_536;

/// Which operations a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    Read,
    Write,
    Flush,
    /// Write Zeroes and Discard.
    Zeroes,
    Any,
}

impl FaultOp {
    pub fn name(self) -> &'static str {
        match self {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Flush => "flush",
            FaultOp::Zeroes => "write_zeroes",
            FaultOp::Any => "any",
        }
    }

    /// `read`, `write`, `flush`, `write_zeroes` (or `discard`), `any`.
    pub fn parse(text: &str) -> Option<FaultOp> {
        Some(match text {
            "read" => FaultOp::Read,
            "write" => FaultOp::Write,
            "flush" => FaultOp::Flush,
            "write_zeroes" | "discard" => FaultOp::Zeroes,
            "any" => FaultOp::Any,
            _ => return None,
        })
    }

    fn matches(self, op: &IoOp) -> bool {
        matches!(
            (self, op),
            (FaultOp::Any, _)
                | (FaultOp::Read, IoOp::Read { .. })
                | (FaultOp::Write, IoOp::Write { .. })
                | (FaultOp::Flush, IoOp::Flush)
                | (
                    FaultOp::Zeroes,
                    IoOp::WriteZeroes { .. } | IoOp::Discard { .. }
                )
        )
    }
}

/// What happens to a matching operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAction {
    /// Complete at once with this errno (1..=4095).
    Fail { errno: i32 },
    /// Complete with `EIO` after this long (1 ns..=[`MAX_STALL`]).
    Stall { delay: Duration },
    /// Move only the first block of a read or write (other operations
    /// run whole).
    Short,
}

/// One rule: operations, action, and how many more operations it takes
/// (`None`: every one until cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRule {
    pub op: FaultOp,
    pub action: FaultAction,
    pub count: Option<u64>,
}

/// A rule as it stands: what is left of its count, and how many operations
/// it took so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRuleStatus {
    pub rule: FaultRule,
    pub hits: u64,
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("errno {0} is outside 1..=4095")]
    Errno(i32),
    #[error("stall delay {0:?} must be above zero and at most {MAX_STALL:?}")]
    Delay(Duration),
    #[error("a count of zero matches nothing (leave it out for \"until cleared\")")]
    ZeroCount,
    #[error("this plan has used {MAX_STALL_SETTINGS} distinct stall delays already; reuse one")]
    TooManyStallSettings,
    #[error("this plan holds {MAX_RULES} rules already")]
    TooManyRules,
    #[error("media errors take a range of whole {MEDIA_SECTOR}-byte sectors, not {offset}+{len}")]
    MediaRange { offset: u64, len: u64 },
    #[error("this plan would hold more than {MAX_MEDIA_ERRORS} sectors of media errors")]
    TooManyMediaErrors,
}

/// A run of sectors marked as media errors, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaErrorRange {
    pub offset: u64,
    pub len: u64,
}

/// What to do with one operation.
enum Fault {
    Fail(i32),
    /// The timespec lives as long as the plan (`PlanState::stalls`).
    Stall(*const types::Timespec),
    Short,
}

struct Rule {
    rule: FaultRule,
    hits: u64,
    /// For a stall: the index of its delay in [`PlanState::stalls`].
    stall: Option<usize>,
}

#[derive(Default)]
struct PlanState {
    rules: Vec<Rule>,
    /// Every stall delay this plan ever used, with its timespec. Never
    /// shrinks: a timeout entry may point at one until the shard submits it.
    stalls: Vec<(Duration, Box<types::Timespec>)>,
    /// Sectors (byte offset / [`MEDIA_SECTOR`]) that fail reads until
    /// written.
    media: BTreeSet<u64>,
    /// Reads failed for a media error.
    media_hits: u64,
}

impl PlanState {
    fn is_active(&self) -> bool {
        !self.rules.is_empty() || !self.media.is_empty()
    }
}

/// The rules of one device, shared by every shard that uses it and by
/// whoever changes them.
#[derive(Default)]
pub struct FaultPlan {
    /// Whether any rule is set: the only thing an operation reads when
    /// none is.
    active: AtomicBool,
    state: Mutex<PlanState>,
}

impl std::fmt::Debug for FaultPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultPlan")
            .field("rules", &self.rules())
            .finish()
    }
}

impl FaultPlan {
    pub fn new() -> Arc<FaultPlan> {
        Arc::new(FaultPlan::default())
    }

    fn lock(&self) -> MutexGuard<'_, PlanState> {
        // Nothing under the lock can panic half-way through a change.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `rule`, replacing a rule for the same operations. Rules are
    /// tried in the order they were added; the first match takes the
    /// operation.
    pub fn inject(&self, rule: FaultRule) -> Result<(), FaultError> {
        if rule.count == Some(0) {
            return Err(FaultError::ZeroCount);
        }
        let mut state = self.lock();
        let stall = match rule.action {
            FaultAction::Fail { errno } => {
                if !(1..=4095).contains(&errno) {
                    return Err(FaultError::Errno(errno));
                }
                None
            }
            FaultAction::Stall { delay } => {
                if delay.is_zero() || delay > MAX_STALL {
                    return Err(FaultError::Delay(delay));
                }
                Some(state.stall_index(delay)?)
            }
            FaultAction::Short => None,
        };
        let rule = Rule {
            rule,
            hits: 0,
            stall,
        };
        let full = state.rules.len() >= MAX_RULES;
        match state.rules.iter_mut().find(|r| r.rule.op == rule.rule.op) {
            Some(old) => *old = rule,
            None if full => return Err(FaultError::TooManyRules),
            None => state.rules.push(rule),
        }
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// Marks `len` bytes from `offset` (whole sectors) as media errors.
    pub fn mark_media_errors(&self, offset: u64, len: u64) -> Result<(), FaultError> {
        let whole = |n: u64| n.is_multiple_of(MEDIA_SECTOR);
        let end = offset.checked_add(len);
        let Some(end) = end.filter(|_| len > 0 && whole(offset) && whole(len)) else {
            return Err(FaultError::MediaRange { offset, len });
        };
        let sectors = offset / MEDIA_SECTOR..end / MEDIA_SECTOR;
        if len / MEDIA_SECTOR > MAX_MEDIA_ERRORS as u64 {
            return Err(FaultError::TooManyMediaErrors);
        }
        let mut state = self.lock();
        let new = sectors.clone().filter(|s| !state.media.contains(s)).count();
        if state.media.len() + new > MAX_MEDIA_ERRORS {
            return Err(FaultError::TooManyMediaErrors);
        }
        state.media.extend(sectors);
        self.active.store(true, Ordering::Release);
        Ok(())
    }

    /// The media errors marked now, as runs of sectors, and how many reads
    /// they failed.
    pub fn media_errors(&self) -> (Vec<MediaErrorRange>, u64) {
        let state = self.lock();
        let mut runs: Vec<MediaErrorRange> = Vec::new();
        for &sector in &state.media {
            let offset = sector * MEDIA_SECTOR;
            match runs.last_mut() {
                Some(run) if run.offset + run.len == offset => run.len += MEDIA_SECTOR,
                _ => runs.push(MediaErrorRange {
                    offset,
                    len: MEDIA_SECTOR,
                }),
            }
        }
        (runs, state.media_hits)
    }

    /// Removes every rule and media error.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        state.media.clear();
        self.active.store(false, Ordering::Release);
    }

    /// The rules set now, in the order they are tried.
    pub fn rules(&self) -> Vec<FaultRuleStatus> {
        self.lock()
            .rules
            .iter()
            .map(|r| FaultRuleStatus {
                rule: r.rule,
                hits: r.hits,
            })
            .collect()
    }

    /// The fault for `op` of `len` bytes, if a media error or a rule takes
    /// it (and counts it). A write heals the media errors it covers.
    fn take(&self, op: &IoOp, len: u64) -> Option<Fault> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        if !state.media.is_empty() {
            if let Some(fault) = state.media_fault(op, len) {
                return Some(fault);
            }
            if !state.is_active() {
                self.active.store(false, Ordering::Release);
            }
        }
        let index = state.rules.iter().position(|r| r.rule.op.matches(op))?;
        let PlanState {
            rules,
            stalls,
            media,
            ..
        } = &mut *state;
        let rule = &mut rules[index];
        rule.hits += 1;
        let fault = match (rule.rule.action, rule.stall.and_then(|i| stalls.get(i))) {
            (FaultAction::Fail { errno }, _) => Fault::Fail(errno),
            (FaultAction::Stall { .. }, Some((_, timespec))) => Fault::Stall(&**timespec),
            // A stall rule always has its timespec (inject).
            (FaultAction::Stall { .. }, None) => Fault::Fail(libc::EIO),
            (FaultAction::Short, _) => Fault::Short,
        };
        if let Some(left) = rule.rule.count.as_mut() {
            *left -= 1;
            if *left == 0 {
                rules.remove(index);
                if rules.is_empty() && media.is_empty() {
                    self.active.store(false, Ordering::Release);
                }
            }
        }
        Some(fault)
    }
}

impl PlanState {
    /// A read touching a marked sector fails; a write or Write Zeroes
    /// unmarks the sectors it covers whole.
    fn media_fault(&mut self, op: &IoOp, len: u64) -> Option<Fault> {
        let (offset, len, heals) = match *op {
            IoOp::Read { offset } => (offset, len, false),
            IoOp::Write { offset, .. } => (offset, len, true),
            IoOp::WriteZeroes { offset, len } => (offset, len, true),
            IoOp::Flush | IoOp::Discard { .. } => return None,
        };
        let end = offset.saturating_add(len);
        if heals {
            let covered = offset.div_ceil(MEDIA_SECTOR)..end / MEDIA_SECTOR;
            if !covered.is_empty() {
                let healed: Vec<u64> = self.media.range(covered).copied().collect();
                for sector in healed {
                    self.media.remove(&sector);
                }
            }
            return None;
        }
        let touched = offset / MEDIA_SECTOR..end.div_ceil(MEDIA_SECTOR);
        if touched.is_empty() || self.media.range(touched).next().is_none() {
            return None;
        }
        self.media_hits += 1;
        Some(Fault::Fail(libc::EIO))
    }

    /// Where the timespec of `delay` is in `stalls`, made once per
    /// distinct delay.
    fn stall_index(&mut self, delay: Duration) -> Result<usize, FaultError> {
        if let Some(index) = self.stalls.iter().position(|(d, _)| *d == delay) {
            return Ok(index);
        }
        if self.stalls.len() >= MAX_STALL_SETTINGS {
            return Err(FaultError::TooManyStallSettings);
        }
        self.stalls
            .push((delay, Box::new(types::Timespec::from(delay))));
        Ok(self.stalls.len() - 1)
    }
}

/// `inner`, with the faults `plan` asks for.
pub struct FaultBackend {
    inner: Arc<dyn BlockBackend>,
    plan: Arc<FaultPlan>,
}

impl FaultBackend {
    pub fn new(inner: Arc<dyn BlockBackend>, plan: Arc<FaultPlan>) -> FaultBackend {
        FaultBackend { inner, plan }
    }

    pub fn plan(&self) -> &Arc<FaultPlan> {
        &self.plan
    }
}

impl BlockBackend for FaultBackend {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }

    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.inner.raw_fd()
    }

    fn describe(&self) -> String {
        format!("{} with fault injection", self.inner.describe())
    }

    fn prepare(&self, mut req: Request<'_>) -> Prepared {
        let len = req.data.len() as u64;
        match self.plan.take(&req.op, len) {
            None => self.inner.prepare(req),
            Some(Fault::Short) => {
                let block = self.inner.geometry().block_size as usize;
                if req.op.has_data() && req.data.len() > block {
                    req.data = &mut req.data[..block];
                }
                self.inner.prepare(req)
            }
            Some(Fault::Fail(errno)) => Prepared::Done(Err(IoError::Os {
                op: req.op.name(),
                errno,
            })),
            // SAFETY (the contract of `Prepared::Sqe`, on which the shard's
            // unsafe push relies): the entry points at the plan's timespec.
            // The shard may push and submit it later in its loop; the kernel
            // reads the timespec when it takes the entry. The timespec is
            // valid until then because the plan never frees or changes one
            // (`PlanState::stalls` only grows, each in its own box) and this
            // backend holds the plan: the shard keeps the backend attached
            // for its life, so the plan outlives the shard's ring.
            Some(Fault::Stall(timespec)) => Prepared::Sqe(opcode::Timeout::new(timespec).build()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: FaultOp, action: FaultAction, count: Option<u64>) -> FaultRule {
        FaultRule { op, action, count }
    }

    const EIO: FaultAction = FaultAction::Fail { errno: libc::EIO };

    #[test]
    fn a_counted_rule_takes_exactly_its_count_of_matching_ops() {
        let plan = FaultPlan::new();
        assert!(plan.take(&IoOp::Flush, 4096).is_none());
        plan.inject(rule(FaultOp::Write, EIO, Some(2))).unwrap();
        assert!(plan.take(&IoOp::Read { offset: 0 }, 4096).is_none());
        let write = IoOp::Write {
            offset: 0,
            fua: false,
        };
        assert!(matches!(
            plan.take(&write, 4096),
            Some(Fault::Fail(libc::EIO))
        ));
        assert_eq!(plan.rules()[0].hits, 1);
        assert!(matches!(
            plan.take(&write, 4096),
            Some(Fault::Fail(libc::EIO))
        ));
        assert!(plan.take(&write, 4096).is_none());
        assert!(plan.rules().is_empty());
        assert!(!plan.active.load(Ordering::Relaxed));
    }

    #[test]
    fn media_errors_fail_reads_until_a_write_covers_them() {
        let plan = FaultPlan::new();
        plan.mark_media_errors(4096, 1024).unwrap();
        let read = |offset| IoOp::Read { offset };
        assert!(plan.take(&read(0), 4096).is_none(), "not touched");
        assert!(plan.take(&read(8192), 4096).is_none(), "not touched");
        assert!(matches!(
            plan.take(&read(0), 8192),
            Some(Fault::Fail(libc::EIO))
        ));
        assert!(matches!(
            plan.take(&read(5120 - 1), 1),
            Some(Fault::Fail(libc::EIO))
        ));
        assert_eq!(
            plan.media_errors(),
            (
                vec![MediaErrorRange {
                    offset: 4096,
                    len: 1024
                }],
                2
            )
        );
        // A write covering one of the two sectors heals only that one.
        let write = |offset| IoOp::Write { offset, fua: false };
        assert!(plan.take(&write(4096 - 100), 612).is_none());
        assert_eq!(
            plan.media_errors().0,
            vec![MediaErrorRange {
                offset: 4608,
                len: 512
            }]
        );
        assert!(plan.take(&read(4608), 512).is_some());
        let zeroes = IoOp::WriteZeroes {
            offset: 0,
            len: 8192,
        };
        assert!(plan.take(&zeroes, 0).is_none());
        assert!(plan.media_errors().0.is_empty());
        assert!(plan.take(&read(0), 8192).is_none());
        assert!(
            !plan.active.load(Ordering::Relaxed),
            "nothing left to check"
        );

        for (offset, len) in [(1, 512), (0, 100), (0, 0), (u64::MAX - 511, 1024)] {
            assert_eq!(
                plan.mark_media_errors(offset, len),
                Err(FaultError::MediaRange { offset, len })
            );
        }
        let max = MAX_MEDIA_ERRORS as u64 * MEDIA_SECTOR;
        assert_eq!(
            plan.mark_media_errors(0, max + MEDIA_SECTOR),
            Err(FaultError::TooManyMediaErrors)
        );
        plan.mark_media_errors(0, max).unwrap();
        plan.clear();
        assert!(plan.media_errors().0.is_empty());
    }

    #[test]
    fn ops_are_matched_by_kind() {
        let zero = IoOp::WriteZeroes { offset: 0, len: 1 };
        let discard = IoOp::Discard { offset: 0, len: 1 };
        assert!(FaultOp::Zeroes.matches(&zero) && FaultOp::Zeroes.matches(&discard));
        assert!(!FaultOp::Write.matches(&zero));
        assert!(FaultOp::Any.matches(&IoOp::Flush));
        assert!(!FaultOp::Read.matches(&IoOp::Flush));
        for op in ["read", "write", "flush", "write_zeroes", "any"] {
            assert_eq!(FaultOp::parse(op).map(FaultOp::name), Some(op));
        }
        assert_eq!(FaultOp::parse("discard"), Some(FaultOp::Zeroes));
        assert_eq!(FaultOp::parse("WRITE"), None);
    }

    #[test]
    fn bad_rules_are_refused_and_change_nothing() {
        let plan = FaultPlan::new();
        for (bad, error) in [
            (
                rule(FaultOp::Any, FaultAction::Fail { errno: 0 }, None),
                FaultError::Errno(0),
            ),
            (
                rule(FaultOp::Any, FaultAction::Fail { errno: 4096 }, None),
                FaultError::Errno(4096),
            ),
            (
                rule(
                    FaultOp::Any,
                    FaultAction::Stall {
                        delay: Duration::ZERO,
                    },
                    None,
                ),
                FaultError::Delay(Duration::ZERO),
            ),
            (
                rule(
                    FaultOp::Any,
                    FaultAction::Stall {
                        delay: MAX_STALL + Duration::from_nanos(1),
                    },
                    None,
                ),
                FaultError::Delay(MAX_STALL + Duration::from_nanos(1)),
            ),
            (rule(FaultOp::Any, EIO, Some(0)), FaultError::ZeroCount),
        ] {
            assert_eq!(plan.inject(bad), Err(error));
        }
        assert!(plan.rules().is_empty());
        assert!(plan.take(&IoOp::Flush, 4096).is_none());
    }

    #[test]
    fn stall_settings_are_bounded_and_reused() {
        let plan = FaultPlan::new();
        let stall = |ms| FaultAction::Stall {
            delay: Duration::from_millis(ms),
        };
        for ms in 1..=MAX_STALL_SETTINGS as u64 {
            plan.inject(rule(FaultOp::Read, stall(ms), None)).unwrap();
        }
        assert_eq!(
            plan.inject(rule(FaultOp::Read, stall(1000), None)),
            Err(FaultError::TooManyStallSettings)
        );
        // A delay used before is still fine, even after a clear.
        plan.clear();
        plan.inject(rule(FaultOp::Read, stall(7), None)).unwrap();
        match plan.take(&IoOp::Read { offset: 0 }, 4096) {
            Some(Fault::Stall(ts)) => assert!(!ts.is_null()),
            _ => panic!("expected a stall"),
        }
        assert_eq!(plan.lock().stalls.len(), MAX_STALL_SETTINGS);
    }

    #[test]
    fn a_new_rule_for_the_same_ops_replaces_the_old_and_clear_removes_all() {
        let plan = FaultPlan::new();
        plan.inject(rule(FaultOp::Write, EIO, None)).unwrap();
        plan.inject(rule(FaultOp::Flush, EIO, None)).unwrap();
        let enospc = FaultAction::Fail {
            errno: libc::ENOSPC,
        };
        plan.inject(rule(FaultOp::Write, enospc, Some(3))).unwrap();
        let rules = plan.rules();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].rule.action, enospc);
        assert_eq!(rules[0].rule.count, Some(3));
        plan.clear();
        assert!(plan.rules().is_empty());
        assert!(plan.take(&IoOp::Flush, 4096).is_none());
    }
}
