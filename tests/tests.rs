//! All integration tests, in one binary so they share one build and one set of helpers.
//!
//! - `conformance`: protocol transcripts over real TCP against an in-process server,
//!   grouped by the sections of protocol.md.
//! - `server`: connection-level behaviour (pipelining, disconnects, blocking, shutdown).
//! - `cli`: the `larder` binary's subcommands.
//! - `cluster`: three real nodes with fault proxies on their links: failover, partitions.
//! - `compaction`: a power cut after every step of compaction, on an in-memory log.
//! - `differential`: the same command sequences against beanstalkd 1.12 and larder.
//! - `model`: the engine against a small reference model, with proptest, and replay of the
//!   changes it emits.
//! - `durability`: restarts and SIGKILL under load against the real binary.
//! - `fuzz_corpus`: the fuzzers' corpora replayed.
//! - `limits`: back-pressure: every limit refuses, changes nothing, lets workers drain and
//!   holds across a restart; a flood keeps the server's memory bounded.
//! - `operator`: the `larder` CLI in an incident: read-only looks, honest counts, precise
//!   errors, symmetric dlq verbs, one JSON schema, export and import.
//! - `retries`: larder's retry and dead-letter extensions, over TCP and through the CLI.
//! - `security`: TLS, mutual TLS, tokens and roles, reload on SIGHUP, against an
//!   in-process server, the binary, the CLI and Python's `ssl`.
//! - `startup`: signals while the log replays, and beanstalkd's flags, against the binary.
//! - `operator`: `larder stats` and `larder tubes` against one and several real servers.
//! - `metrics`: /metrics through a real OpenMetrics parser, /healthz, /readyz, JSON logs,
//!   systemd notices and the unit file.

mod support;

mod cli;
mod cluster;
mod compaction;
mod conformance;
mod differential;
mod durability;
mod fuzz_corpus;
mod hostile;
mod limits;
mod metrics;
mod model;
mod operator;
mod operator_view;
mod retries;
mod security;
mod server;
mod startup;
