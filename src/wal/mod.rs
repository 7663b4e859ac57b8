//! The write-ahead log: records on disk, group commit, replay.
//!
//! [`commit`] owns the "durable up to LSN" watermark that connections wait on before replying.

pub mod commit;
