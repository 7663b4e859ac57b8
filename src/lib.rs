//! larder: a durable job broker that speaks the beanstalkd protocol.
//!
//! Layers, each depending only on the ones above it in this list:
//!
//! - [`protocol`]: bytes to commands and replies to bytes; no I/O, no state.
//! - [`engine`]: the broker state machine; no I/O, time passed in.
//! - [`wal`]: the write-ahead log: segment files of checksummed records of opaque bytes.
//! - [`server`]: tokio listener and connections, timers, signals, shutdown.
//! - [`client`]: a small async client for the CLI, tests and benchmarks.
//! - [`cli`] and [`config`]: command-line parsing and validated settings.

pub mod cli;
pub mod client;
pub mod config;
pub mod datadir;
pub mod engine;
pub mod fuzzing;
pub mod protocol;
pub mod server;
pub mod wal;
