//! The kernel boundary: the ring, DMA-able buffers, CPU topology. Everything
//! `unsafe` in the engine lives here or next to an SQE being built.

pub mod cpu;
pub mod dma;
pub mod ring;
pub mod shared_map;
