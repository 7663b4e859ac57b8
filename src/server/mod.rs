//! The network server: a tokio listener, one task per connection, one timer task, signals
//! and graceful shutdown.
//!
//! The engine lives in [`broker::Broker`] behind one mutex that is never held across an
//! `.await`. Each connection task decodes commands, applies them under the lock, and writes
//! replies in order; a blocked reserve waits on the connection's own channel for its reply.
//! The timer task sleeps until the engine's next deadline and runs its timers.

mod bodies;
mod broker;
mod clock;
mod compact;
mod connection;
mod journal;
mod listener;
mod process;
mod recovery;
mod reserve;

pub use broker::Broker;
pub use clock::Clock;
pub use listener::{bind, run, Listener};
pub use process::process_info;
pub use recovery::wal_dir;
