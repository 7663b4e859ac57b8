//! larder: a durable job broker that speaks the beanstalkd protocol.
//!
//! Layers, each depending only on the ones above it in this list:
//!
//! - [`protocol`]: bytes to commands and replies to bytes; no I/O, no state.
//! - [`wal`]: the write-ahead log (segment files of checksummed records of opaque bytes) and
//!   its group-commit watermark; knows nothing of jobs.
//! - [`engine`]: the broker state machine; no I/O, time passed in.
//! - [`server`]: tokio listener and connections, timers, signals, shutdown.
//! - [`client`]: a small async client for the CLI, tests and benchmarks; [`client_tls`] its
//!   TLS connector.
//! - [`pem`]: certificate and key files and the TLS crypto provider, for server and client.
//! - [`cli`] and [`config`]: command-line parsing and validated settings; [`units`]: the one
//!   syntax of sizes and durations on the command line.
//! - [`sync`]: `std::sync`, or loom's model-checked copy under `cfg(loom)`.
//!
//! Under `cfg(loom)` (the loom models in [`wal::commit`]) tokio compiles out its networking,
//! signals and files, so the I/O layers (`server`, `client`, `cli`, and `config`, which names
//! the server's settings) are left out of that build;
//! everything below them still compiles and its tests run.

#[cfg(not(loom))]
pub mod cli;
#[cfg(not(loom))]
pub mod client;
#[cfg(not(loom))]
pub mod client_tls;
#[cfg(not(loom))]
pub mod config;
pub mod datadir;
pub mod engine;
pub mod fuzzing;
#[cfg(not(loom))]
pub mod pem;
pub mod protocol;
#[cfg(not(loom))]
pub mod server;
pub mod sync;
pub mod units;
pub mod wal;
