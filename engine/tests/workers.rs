//! The kernel's async workers of a pinned shard stay off the shard's CPU.
//!
//! io_uring hands fsync (and any I/O a file cannot do without blocking) to
//! worker threads that inherit the submitting thread's CPU mask. Left
//! alone, a shard pinned to one CPU time-shares it with its own workers:
//! on a tmpfs file that halved the engine's IOPS and put its p99 at 1.1 ms
//! (docs/benchmarks.md). Its own test binary, so the only io_uring workers
//! in this process are the ones this test's shard makes.

mod support;

use std::sync::Arc;

use keel_engine::backend::OpenOptions;
use keel_engine::sys::cpu;
use keel_engine::{FileBackend, IoOp};

/// (name, CPUs allowed) of this process's io_uring worker threads.
fn io_workers() -> Vec<(String, Vec<usize>)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").expect("proc") {
        let dir = task.expect("task entry").path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread exited while we looked
        };
        if !name.starts_with("iou-wrk") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("status names the allowed CPUs");
        found.push((name.trim().to_owned(), cpu::parse_cpu_list(list)));
    }
    found
}

#[test]
fn a_pinned_shards_io_workers_run_on_other_cpus() {
    let allowed = cpu::allowed_cpus();
    if allowed.len() < 2 {
        eprintln!("one CPU allowed: nothing to keep the workers off; skipped");
        return;
    }
    let shard_cpu = allowed[0];
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tempdir");
    let backend = FileBackend::open(
        &dir.path().join("vol"),
        &OpenOptions {
            size: Some(1 << 20),
            block_size: None,
        },
    )
    .expect("file backend");
    let volume = support::ShardVolume::start_pinned(Arc::new(backend), shard_cpu);
    // fsync never completes inline: it always runs on an io-wq worker, which
    // lives on for seconds after going idle.
    volume.run(IoOp::Flush, Vec::new()).expect("flush");
    let workers = io_workers();
    assert!(!workers.is_empty(), "a flush made no io_uring worker");
    for (name, cpus) in &workers {
        assert!(
            !cpus.contains(&shard_cpu),
            "{name} may run on the shard's CPU {shard_cpu}: {cpus:?}"
        );
    }
}
