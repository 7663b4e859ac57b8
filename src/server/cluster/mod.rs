//! Cluster mode (issue 12): larder's write-ahead log as openraft's log storage.
//!
//! The plan is `docs/design/replication.md` (its §13 says what was built and how it
//! departs from the plan):
//!
//! - [`record`]: the raft record kinds (codes 32–36) that live in the same segmented log as
//!   the engine's records — one log, no second store;
//! - [`log_store`]: openraft's `RaftLogStorage` and `RaftLogReader` on that log, fed to the
//!   journal's writer thread like every other record, so appends share its group commit and
//!   are reported flushed only once fdatasync'ed; and the replay of those records at start-up;
//! - [`machine`]: the engine as openraft's state machine; [`snapshot`]: its snapshot files;
//! - [`node`]: start-up, the proposer, the leadership watcher, retention, status and
//!   membership; [`net`]: the cluster port, with mutual TLS from [`tls`] when it is on.

// openraft's traits return its `StorageError` (over 200 bytes); the helpers that build
// those results return it too rather than convert at every call.
#[allow(clippy::result_large_err)]
pub mod log_store;
#[allow(clippy::result_large_err)]
pub mod machine;
pub mod net;
pub mod node;
pub mod record;
#[allow(clippy::result_large_err)]
pub mod snapshot;
#[cfg(test)]
mod tests;
pub mod tls;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A node's id in the cluster.
pub type NodeId = u64;

/// What one raft entry carries: engine changes the leader made, as encoded records
/// (`[kind u8][len u32 LE][payload]`, repeated), with the leader's clock when it proposed them
/// and the sequence number of the last proposal batch they complete.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// The term of the leader whose engine made these changes. An entry whose proposal
    /// was made in another term than the entry's own is applied as empty on every node:
    /// its changes came from an engine that was discarded (see `Broker::apply_entry`).
    pub term: u64,
    /// Which opening of that leader's engine made them (a node may lead, lose its quorum,
    /// and lead again in the same term with a rebuilt engine): only entries of the current
    /// opening are the leader's own, whose effects its engine already holds.
    pub opening: u64,
    /// The leader's time, nanoseconds since the Unix epoch.
    pub leader_time: u64,
    /// The last proposal sequence number this entry completes.
    pub last_seq: u64,
    /// The encoded records.
    pub records: Bytes,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for larder.
    pub LarderRaft:
        D = Proposal,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<LarderRaft>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A raft log id of this configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A raft vote of this configuration.
pub type Vote = openraft::Vote<NodeId>;
/// A raft entry of this configuration.
pub type Entry = openraft::Entry<LarderRaft>;
/// openraft's storage error of this configuration.
pub type StorageError = openraft::StorageError<NodeId>;
