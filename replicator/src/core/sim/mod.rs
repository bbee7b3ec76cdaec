//! Deterministic simulation of a replicated volume stream (tests only).
//!
//! One thread runs a whole cluster: the real [`Node`](crate::core::Node)
//! state machines, simulated devices ([`disk`]), a simulated network
//! ([`net`]) and a host, with crashes, restarts, partitions, connection
//! resets, duplicated frames, I/O errors, slow devices and links, and
//! promotions, all drawn from one seeded PRNG ([`rng`]). Invariants are
//! checked after every step ([`cluster`]); a failure names its seed, and the
//! same seed replays the same run bit for bit.

mod cluster;
mod disk;
mod net;
mod rng;
mod tests;
