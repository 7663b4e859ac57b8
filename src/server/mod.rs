//! The network server: a tokio listener, one task per connection, one timer task, signals
//! and graceful shutdown.
//!
//! The engine lives in [`broker::Broker`] behind one mutex that is never held across an
//! `.await`. Each connection task (`connection`) reads and decodes commands (`input`),
//! applies them under the lock, and writes replies in order (`outbox`); a blocked reserve
//! waits on the connection's own channel for its reply. The timer task sleeps until the
//! engine's next deadline and runs its timers.
//!
//! The durability seam: the broker queues each change's record in the `journal`, whose
//! writer thread appends, syncs and publishes the durable LSN; every reply is a
//! `held::Held` value tagged with the journal's tail, released only once that LSN is
//! durable. `retention` decides which segments the writer may remove.
//!
//! Back-pressure around the engine (`host_limits`): a connection gate for `--max-connections`,
//! a free-space watcher for `--min-free-disk`, and, in `connection`, the per-connection
//! output limit. The engine itself refuses puts over the job limits.
//!
//! For operators (`metrics`, `notify`): the `--metrics-listen` HTTP listener, and
//! systemd readiness notices.

pub mod auth;
mod body_reader;
mod broker;
mod clock;
pub mod cluster;
mod compact;
mod connection;
mod disk_reserve;
mod held;
mod host_limits;
mod input;
mod journal;
mod listener;
pub mod metrics;
mod notify;
mod outbox;
mod process;
mod recovery;
mod retention;
mod secure;
pub mod signals;
pub mod tls;
pub mod user;

pub use broker::Broker;
pub use clock::Clock;
pub use journal::install_idle_commit;
pub use listener::{bind, run, run_with, Listener};
pub use process::process_info;
pub use recovery::wal_dir;
