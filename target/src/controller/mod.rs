//! NVMe over Fabrics controller and subsystem logic, sans IO: no sockets,
//! no threads, no clock. The socket layer moves bytes; this module decides
//! what every command means.
//!
//! How the socket layer drives it:
//!
//! 1. Configure a [`Target`]: [`Listener`]s, [`Subsystem`]s with their
//!    [`Namespace`]s, within [`TargetLimits`].
//! 2. After ICReq/ICResp on a new connection, create a [`QueueSession`].
//! 3. For every CapsuleCmd call [`Target::submit`] with the SQE, the
//!    in-capsule data, an output buffer of [`Target::output_buffer_len`]
//!    bytes and the current [`Timestamp`]. The [`Reply`] says what to do:
//!    - [`Reply::Complete`]: send `data_len` bytes of the output buffer as
//!      C2HData (if any), then a CapsuleResp with the CQE;
//!    - [`Reply::Io`]: a validated [`IoCommand`] (byte ranges on a
//!      namespace, and where write data is: in the capsule or to fetch with
//!      R2T) for the data path; when it is done, [`Target::complete_io`]
//!      gives the CQE and feeds the SMART counters;
//!    - [`Reply::Deferred`]: an Asynchronous Event Request is parked.
//! 4. After any call, drain [`Target::take_async_completions`]: AERs
//!    completed by events or aborted by a reset or teardown, each to send
//!    on the admin queue of its controller.
//! 5. Call [`Target::tick`] periodically; close the connections of the
//!    controllers it reports (keep alive expired) and call
//!    [`Target::teardown`]. When a connection closes, call
//!    [`Target::close_queue`] (losing the admin queue ends the controller).
//!
//! Modules: [`target`] (registry, configuration), `dispatch` (routing of
//! commands), `lifetime` (controller IDs, keep alive, teardown),
//! [`connect`] (Fabrics Connect), [`properties`] (CAP, VS, CC, CSTS),
//! `admin` (Identify, Get Log Page, features, AER, Keep Alive, Abort),
//! [`io`] (I/O command front end), [`transfer`] (SGL checks), [`events`],
//! [`keep_alive`], [`subsystem`], [`discovery`], [`session`],
//! [`response`], [`stats`], [`config`], [`clock`], [`error`].

mod admin;
pub mod ana;
pub mod clock;
pub mod config;
pub mod connect;
pub mod discovery;
mod dispatch;
pub mod error;
pub mod events;
pub mod io;
pub mod keep_alive;
mod lifetime;
pub mod properties;
pub mod response;
pub mod session;
mod state;
pub mod stats;
pub mod subsystem;
pub mod target;
pub mod transfer;

#[cfg(test)]
mod tests;

pub use clock::Timestamp;
pub use config::TargetLimits;
pub use connect::{ConnectParameter, ConnectRejection};
pub use discovery::Listener;
pub use error::ConfigError;
pub use io::{parse_io_command, ByteRange, DsmRequest, IoCommand, IoError, IoLimits, IoOperation};
pub use response::{AsyncCompletion, Reply, Response};
pub use session::QueueSession;
pub use state::ControllerKind;
pub use stats::IoStatistics;
pub use subsystem::{BlockGeometry, Namespace, Subsystem};
pub use target::{ControllerInfo, Target};
pub use transfer::DataSource;
