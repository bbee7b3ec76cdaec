//! keel-engine: the per-core polled io_uring reactor under Keel.
//!
//! - [`sys`]: the kernel boundary (ring setup, registered DMA buffers, CPUs);
//! - [`reactor`]: one pinned thread per core running one loop over its ring;
//! - [`shard`]: what a handler sees of its core (submit I/O, buffers, timers);
//! - [`mesh`]: bounded lock-free queues between cores;
//! - [`backend`]: where a volume's bytes live (O_DIRECT file/device, memory).

pub mod backend;
pub mod mesh;
pub mod reactor;
pub mod shard;
pub mod sys;
pub mod timer;

pub use backend::{BlockBackend, FileBackend, Geometry, IoError, IoOp, MemoryBackend};
pub use mesh::{Origin, ShardId};
pub use reactor::{
    Engine, EngineConfig, EngineError, EngineSender, Handler, IoWorkers, ShardReport,
};
pub use shard::{Completion, DeviceId, NetOp, Op, Shard, ShardStats};
pub use sys::dma::{Buf, PoolConfig};
pub use sys::ring::{RingConfig, RingFeatures, TaskRun};
