//! Keel replication (see ../shared/ARCHITECTURE.md, "Replication").
//!
//! What lives here today is the sans-IO core of a replication link:
//!
//! - [`wire`]: the framed, versioned replication protocol (frame header,
//!   every message, the encoder and the incremental decoder);
//! - [`auth`]: the pre-shared-key challenge-response handshake that opens a
//!   link, as one small state machine per side;
//! - [`core`]: the replication state machines (primary, replica, elections);
//! - `rdma` (cargo feature `rdma`): the replication link over RDMA verbs
//!   (rdma_cm setup, RC queue pair, SEND/RECV with credits);
//! - [`link`]: the mapping between the core's frames and the wire, and the
//!   blocking handshake helper run on a real socket before the reactor
//!   takes it over.
//!
//! Apart from `link::handshake`, none of it touches sockets, threads or
//! clocks: callers feed bytes or
//! decoded frames in and get frames to send back out, which keeps the code
//! testable and fuzzable and lets the TCP and RDMA transports share it.
//! The protocol itself is specified in `docs/replication-protocol.md`.
// Without the `rdma` feature there is no unsafe code at all; with it, only the
// verbs boundary (`rdma::cm`, `rdma::verbs`) may opt in, module by module.
#![cfg_attr(not(feature = "rdma"), forbid(unsafe_code))]
#![cfg_attr(feature = "rdma", deny(unsafe_code))]
// Every byte this crate parses comes from the network. Outside tests, forbid
// the constructs that could turn hostile input into a panic.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod auth;
pub mod core;
pub mod link;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod wire;
