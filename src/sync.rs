//! The synchronisation primitives that concurrent core code uses, swapped for loom's
//! model-checked versions in the loom test build.
//!
//! Code that loom should check (the group-commit watermark) imports `Mutex`, `Condvar`, `Arc`
//! and atomics from here, never from `std::sync`. Normally this re-exports `std::sync`. Built
//! with `RUSTFLAGS="--cfg loom"` as the lib's own tests, it re-exports `loom::sync` instead,
//! whose types have the same API but let `loom::model` run every interleaving of a small test.
//!
//! loom is a dev-dependency, so the swap needs `test` as well as `loom`: a plain `--cfg loom`
//! build of the lib still compiles, with `std::sync`. Modules that loom does not check may use
//! `std::sync` directly; in the loom build they keep the real primitives.

#[cfg(all(test, loom))]
pub use loom::sync::{atomic, Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(all(test, loom)))]
pub use std::sync::{atomic, Arc, Condvar, Mutex, MutexGuard};
