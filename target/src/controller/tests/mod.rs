//! Scenario tests: the Linux host's discover and connect sequences
//! (shared/guest/KERNEL-HOST-NOTES.md), refusals, keep-alive expiry, and
//! property tests over arbitrary SQEs.

mod admin_commands;
mod connect_refusals;
mod keep_alive;
mod kernel_connect;
mod kernel_discover;
mod proptests;
mod support;
