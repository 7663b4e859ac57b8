//! openraft's state machine: the engine, behind the broker.
//!
//! A committed normal entry's records go to [`Broker::apply_entry`], which replays them
//! through the engine's recovery path (or, on the leader that proposed them, places their
//! bodies and releases the replies waiting on them). The machine starts empty at every
//! start-up and openraft applies the committed log into it again, so the engine is rebuilt
//! from the log exactly as a single node's is.
//!
//! Snapshots are not built yet: openraft is configured never to build one and the log is
//! never purged (see `docs/design/replication.md` §6 for the plan), so a lagging node is
//! always caught up from the log. The snapshot methods say so with an error instead of
//! pretending.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};

use super::log_store::LogReader;
use super::{Entry, LarderRaft, LogId, NodeId, StorageError};
use crate::server::Broker;

/// Cluster members' addresses as openraft keeps them.
pub type Node = openraft::BasicNode;

/// The engine as openraft's state machine.
pub struct Machine {
    broker: Arc<Broker>,
    log: LogReader,
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, Node>,
}

impl Machine {
    /// A machine over `broker`'s engine (empty), finding entries' places through `log`.
    pub fn new(broker: Arc<Broker>, log: LogReader) -> Machine {
        Machine {
            broker,
            log,
            applied: None,
            membership: StoredMembership::default(),
        }
    }
}

fn no_snapshots() -> StorageError {
    StorageIOError::write_snapshot(
        None,
        AnyError::error(
            "this larder version does not build or install snapshots: the raft log is kept whole",
        ),
    )
    .into()
}

/// Refuses to build a snapshot (see the module's comment).
pub struct NoSnapshots;

impl RaftSnapshotBuilder<LarderRaft> for NoSnapshots {
    async fn build_snapshot(&mut self) -> Result<Snapshot<LarderRaft>, StorageError> {
        Err(no_snapshots())
    }
}

impl RaftStateMachine<LarderRaft> for Machine {
    type SnapshotBuilder = NoSnapshots;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, Node>), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        for entry in entries {
            match &entry.payload {
                EntryPayload::Blank => self.broker.note_applied(entry.log_id),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    self.broker.note_applied(entry.log_id);
                }
                EntryPayload::Normal(p) => {
                    let fail = |what: String| -> StorageError {
                        StorageIOError::apply(entry.log_id, AnyError::error(what)).into()
                    };
                    let at = self.log.locate(entry.log_id.index).ok_or_else(|| {
                        fail(format!("entry {} to apply is not in the log", entry.log_id))
                    })?;
                    self.broker.apply_entry(entry.log_id, p, at).map_err(fail)?;
                }
            }
            self.applied = Some(entry.log_id);
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> NoSnapshots {
        NoSnapshots
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Err(no_snapshots())
    }

    async fn install_snapshot(
        &mut self,
        _meta: &SnapshotMeta<NodeId, Node>,
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        Err(no_snapshots())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<LarderRaft>>, StorageError> {
        Ok(None)
    }
}
