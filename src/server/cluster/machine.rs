//! openraft's state machine: the engine, behind the broker.
//!
//! A committed normal entry's records go to [`Broker::apply_entry`], which replays them
//! through the engine's recovery path (or, on the leader that proposed them, places their
//! bodies and releases the replies waiting on them). At start-up the engine holds the
//! newest snapshot and openraft applies the committed entries after it again, so the
//! engine is rebuilt from snapshot and log as a single node's is from its log.
//!
//! Snapshots are files of engine records (see [`super::snapshot`]): built from the
//! committed state in a task of their own, sent to lagging members in openraft's chunks,
//! and installed by loading them into a fresh engine.

use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, EntryPayload, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership,
};

use super::log_store::LogReader;
use super::snapshot::{self, Snapshots};
use super::{Entry, LarderRaft, LogId, NodeId, StorageError};
use crate::server::body_reader::SegmentFiles;
use crate::server::Broker;

/// Cluster members' addresses as openraft keeps them.
pub type Node = openraft::BasicNode;

/// The engine as openraft's state machine.
pub struct Machine {
    broker: Arc<Broker>,
    log: LogReader,
    snapshots: Arc<Snapshots>,
    files: Arc<SegmentFiles>,
    applied: Option<LogId>,
    membership: StoredMembership<NodeId, Node>,
    /// The number of the snapshot file being received.
    receiving: Option<u64>,
}

impl Machine {
    /// A machine over `broker`'s engine, which holds the newest snapshot (`base`, if any),
    /// finding entries' places through `log` and bodies through `files`.
    pub fn new(
        broker: Arc<Broker>,
        log: LogReader,
        snapshots: Arc<Snapshots>,
        files: Arc<SegmentFiles>,
        base: Option<snapshot::Meta>,
    ) -> Machine {
        let (applied, membership) = match base {
            Some(m) => (m.last_log_id, m.last_membership),
            None => (None, StoredMembership::default()),
        };
        Machine {
            broker,
            log,
            snapshots,
            files,
            applied,
            membership,
            receiving: None,
        }
    }
}

fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, Node>>,
    e: impl std::fmt::Display,
) -> StorageError {
    StorageIOError::write_snapshot(meta.map(|m| m.signature()), AnyError::error(e.to_string()))
        .into()
}

/// Opens the newest snapshot file for openraft to send.
async fn current(snapshots: &Arc<Snapshots>) -> Result<Option<Snapshot<LarderRaft>>, StorageError> {
    let Some((pin, meta)) = snapshots.newest() else {
        return Ok(None);
    };
    let path = snapshot::file_path(snapshots.dir(), pin.number());
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| snapshot_error(Some(&meta), format!("opening {}: {e}", path.display())))?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(file),
    }))
}

/// Builds a snapshot of the state after the entry applied when it was made.
pub struct Builder {
    broker: Arc<Broker>,
    log: LogReader,
    snapshots: Arc<Snapshots>,
    files: Arc<SegmentFiles>,
    upto: Option<LogId>,
    membership: StoredMembership<NodeId, Node>,
}

impl RaftSnapshotBuilder<LarderRaft> for Builder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<LarderRaft>, StorageError> {
        let _busy = self.snapshots.busy.lock().await;
        let Some(upto) = self.upto else {
            return Err(snapshot_error(
                None,
                "nothing is applied yet to make a snapshot of",
            ));
        };
        let newest = self.snapshots.newest_meta();
        if newest.as_ref().is_some_and(|m| m.last_log_id >= Some(upto)) {
            if let Some(s) = current(&self.snapshots).await? {
                return Ok(s);
            }
        }
        let engine = self
            .broker
            .fresh_engine()
            .ok_or_else(|| snapshot_error(None, "not a cluster node"))?;
        let build = snapshot::Build {
            snapshots: self.snapshots.clone(),
            files: self.files.clone(),
            log: self.log.clone(),
            engine,
            upto,
            membership: self.membership.clone(),
            now: self.broker.clock().now(),
        };
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || snapshot::build(build))
            .await
            .map_err(|e| snapshot_error(None, format!("the snapshot thread failed: {e}")))?
            .map_err(|e| snapshot_error(None, format!("{e:#}")))?;
        let moved = self.broker.rebase_bodies(&built.moved);
        tracing::info!(
            snapshot = %built.meta.snapshot_id,
            jobs = built.moved.len(),
            moved,
            ms = started.elapsed().as_millis() as u64,
            "snapshot built"
        );
        let path = snapshot::file_path(self.snapshots.dir(), built.number);
        let file = tokio::fs::File::open(&path).await.map_err(|e| {
            snapshot_error(
                Some(&built.meta),
                format!("opening {}: {e}", path.display()),
            )
        })?;
        Ok(Snapshot {
            meta: built.meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<LarderRaft> for Machine {
    type SnapshotBuilder = Builder;

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

    async fn get_snapshot_builder(&mut self) -> Builder {
        Builder {
            broker: self.broker.clone(),
            log: self.log.clone(),
            snapshots: self.snapshots.clone(),
            files: self.files.clone(),
            upto: self.applied,
            membership: self.membership.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        // A stream that was abandoned (the leader changed, say) leaves its file behind.
        if let Some(stale) = self.receiving.take() {
            self.snapshots.discard(stale);
        }
        let (number, path) = self.snapshots.reserve();
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| snapshot_error(None, format!("creating {}: {e}", path.display())))?;
        self.receiving = Some(number);
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let _busy = self.snapshots.busy.lock().await;
        let number = self
            .receiving
            .take()
            .ok_or_else(|| snapshot_error(Some(meta), "no snapshot is being received"))?;
        snapshot.sync_all().await.map_err(|e| {
            snapshot_error(Some(meta), format!("syncing the received snapshot: {e}"))
        })?;
        drop(snapshot);
        let mut engine = self
            .broker
            .fresh_engine()
            .ok_or_else(|| snapshot_error(Some(meta), "not a cluster node"))?;
        let now = self.broker.clock().now();
        let snapshots = self.snapshots.clone();
        let expected = meta.clone();
        let started = std::time::Instant::now();
        let engine =
            tokio::task::spawn_blocking(move || -> anyhow::Result<crate::engine::Engine> {
                let loaded =
                    snapshot::load_received(&snapshots, number, &expected, &mut engine, now)
                        .and_then(|()| snapshots.finish(number, expected));
                if loaded.is_err() {
                    snapshots.discard(number);
                }
                loaded.map(|()| engine)
            })
            .await
            .map_err(|e| snapshot_error(Some(meta), format!("the snapshot thread failed: {e}")))?
            .map_err(|e| snapshot_error(Some(meta), format!("{e:#}")))?;
        let jobs = engine.job_count();
        let applied = meta.last_log_id.map_or(0, |l| l.index);
        self.broker.install_engine(engine, applied);
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        tracing::info!(
            snapshot = %meta.snapshot_id,
            jobs,
            ms = started.elapsed().as_millis() as u64,
            "snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<LarderRaft>>, StorageError> {
        current(&self.snapshots).await
    }
}
