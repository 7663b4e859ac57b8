//! The log store against openraft's own storage suite, across a restart, and its flush
//! promise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{
    CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, SnapshotMeta,
    StoredMembership,
};

use super::{LogStore, RaftLogState};
use crate::config::FsyncPolicy;
use crate::server::cluster::{Entry, LarderRaft, LogId, NodeId, Proposal, StorageError, Vote};
use crate::server::disk_reserve::DiskReserve;
use crate::server::journal::{spawn_writer, Journal};
use crate::wal::storage::FsStorage;
use crate::wal::{Wal, WalOptions};

/// A data directory of its own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("larder-raft-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options() -> WalOptions {
    WalOptions {
        // Small segments, so that entries are read back across several files.
        max_segment_size: 4096,
        ..WalOptions::default()
    }
}

/// A log opened on `dir` with its raft records replayed, a journal over it and the writer
/// thread (unless `writer` is false; see [`Node::start_writer`]).
struct Node {
    journal: Arc<Journal>,
    writer: Option<JoinHandle<()>>,
    wal: Option<Wal<FsStorage>>,
    store: LogStore,
}

impl Node {
    fn open(dir: &Path, writer: bool) -> Node {
        let mut state = RaftLogState::default();
        let mut failure = None;
        let (wal, _) = Wal::open_with(FsStorage::new(), dir, options(), |r| {
            if let Err(e) = state.observe(r.kind, r.payload, r.lsn, r.pos) {
                failure.get_or_insert(e);
            }
        })
        .expect("open the log");
        if let Some(e) = failure {
            panic!("replaying raft records: {e}");
        }
        let journal = Arc::new(Journal::new(wal.next_lsn().0, wal.layout()));
        let store = LogStore::open(journal.clone(), dir.to_path_buf(), state);
        let mut node = Node {
            journal,
            writer: None,
            wal: Some(wal),
            store,
        };
        if writer {
            node.start_writer();
        }
        node
    }

    fn start_writer(&mut self) {
        let wal = self.wal.take().expect("writer not started yet");
        let reserve = DiskReserve::new(std::env::temp_dir().join("larder-no-reserve"), 0);
        self.writer = Some(
            spawn_writer(self.journal.clone(), wal, FsyncPolicy::Always, reserve)
                .expect("start the writer"),
        );
    }

    /// Takes the store out, leaving an empty one on the same journal (dropped unused).
    fn take_store(&mut self, dir: &Path) -> LogStore {
        let spare = LogStore::open(
            self.journal.clone(),
            dir.to_path_buf(),
            RaftLogState::default(),
        );
        std::mem::replace(&mut self.store, spare)
    }

    /// Stops the writer after it has written and synced everything queued.
    fn close(mut self) {
        self.journal.close();
        if let Some(w) = self.writer.take() {
            w.join().expect("writer thread");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.journal.close();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, node), index)
}

fn normal(term: u64, index: u64, records: &'static [u8]) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Normal(Proposal {
            term,
            opening: 1,
            leader_time: 1_000 + index,
            last_seq: index,
            records: Bytes::from_static(records),
        }),
    }
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, 1, index),
        payload: EntryPayload::Blank,
    }
}

fn members() -> Membership<NodeId, openraft::BasicNode> {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], ())
}

/// What the suite gets: a node on a fresh directory, and a state machine that keeps only
/// what openraft's storage suite looks at (applied id, membership, snapshot), for testing the
/// log store; the engine as state machine is a later step of the replication plan.
struct Built {
    _node: Node,
    _dir: TempDir,
}

struct Builder;

impl StoreBuilder<LarderRaft, LogStore, TestMachine, Built> for Builder {
    async fn build(&self) -> Result<(Built, LogStore, TestMachine), StorageError> {
        let dir = TempDir::new("suite");
        let mut node = Node::open(&dir.0, true);
        // The store moves to the suite; the node keeps the journal and writer alive.
        let store = node.take_store(&dir.0);
        Ok((
            Built {
                _node: node,
                _dir: dir,
            },
            store,
            TestMachine::default(),
        ))
    }
}

/// A snapshot's data as openraft handles it: an open file (unlinked at once) holding
/// `bytes`, positioned at its start.
fn data_file(bytes: &[u8]) -> Result<Box<tokio::fs::File>, StorageError> {
    use std::io::{Seek, Write};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("larder-snapdata-{}-{n}", std::process::id()));
    let io = |e: std::io::Error| -> StorageError {
        openraft::StorageIOError::write_snapshot(None, openraft::AnyError::new(&e)).into()
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    std::fs::remove_file(&path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.rewind().map_err(io)?;
    Ok(Box::new(tokio::fs::File::from_std(f)))
}

#[derive(Clone, Default)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
}

type BuiltSnapshot = (SnapshotMeta<NodeId, openraft::BasicNode>, Vec<u8>);

/// The machine's current snapshot, shared with the builders it hands out.
type Current = Arc<std::sync::Mutex<Option<BuiltSnapshot>>>;

#[derive(Default)]
struct TestMachine {
    applied: Applied,
    current: Current,
}

struct TestBuilder {
    applied: Applied,
    into: Current,
}

impl RaftSnapshotBuilder<LarderRaft> for TestBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<LarderRaft>, StorageError> {
        let meta = SnapshotMeta {
            last_log_id: self.applied.last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: format!("{:?}", self.applied.last),
        };
        let data = serde_json::to_vec(&meta).map_err(|e| {
            openraft::StorageIOError::write_snapshot(None, openraft::AnyError::error(e))
        })?;
        *self.into.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: data_file(&data)?,
        })
    }
}

impl RaftStateMachine<LarderRaft> for TestMachine {
    type SnapshotBuilder = TestBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, openraft::BasicNode>), StorageError> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        for e in entries {
            if let EntryPayload::Membership(m) = &e.payload {
                self.applied.membership = StoredMembership::new(Some(e.log_id), m.clone());
            }
            self.applied.last = Some(e.log_id);
            replies.push(());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> TestBuilder {
        TestBuilder {
            applied: self.applied.clone(),
            into: self.current.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        data_file(&[])
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, openraft::BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut data = Vec::new();
        let read = async {
            snapshot.seek(std::io::SeekFrom::Start(0)).await?;
            snapshot.read_to_end(&mut data).await
        };
        read.await.map_err(|e| {
            StorageError::from(openraft::StorageIOError::read_snapshot(
                None,
                openraft::AnyError::new(&e),
            ))
        })?;
        self.applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<LarderRaft>>, StorageError> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match current {
            Some((meta, data)) => Ok(Some(Snapshot {
                meta,
                snapshot: data_file(&data)?,
            })),
            None => Ok(None),
        }
    }
}

#[test]
fn openraft_storage_suite_passes_on_the_write_ahead_log() -> Result<(), StorageError> {
    Suite::test_all(Builder)
}

/// What the store says, for comparing before and after a restart.
async fn snapshot_of(store: &mut LogStore) -> (Option<Vote>, Option<LogId>, String, Vec<Entry>) {
    let state = store.get_log_state().await.expect("log state");
    let vote = store.read_vote().await.expect("vote");
    let committed = store.read_committed().await.expect("committed");
    let entries = store.try_get_log_entries(0..).await.expect("entries");
    (
        vote,
        committed,
        format!("{:?}/{:?}", state.last_purged_log_id, state.last_log_id),
        entries,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_reads_back_the_same_after_a_restart_and_from_disk() {
    let dir = TempDir::new("restart");
    let mut node = Node::open(&dir.0, true);
    let mut store = node.take_store(&dir.0);
    let membership = Entry {
        log_id: log_id(1, 1, 1),
        payload: EntryPayload::Membership(members()),
    };
    store
        .blocking_append([blank(1, 0), membership.clone()])
        .await
        .expect("append");
    // Enough entries to spill out of the tail cache and over several 4 KiB segments.
    let many: Vec<Entry> = (2..1500)
        .map(|i| {
            normal(
                1,
                i,
                b"\x03\x08\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00",
            )
        })
        .collect();
    store.blocking_append(many).await.expect("append many");
    store
        .save_vote(&Vote::new_committed(2, 1))
        .await
        .expect("vote");
    // A new leader overwrites the tail from 1400 on.
    store.truncate(log_id(1, 1, 1400)).await.expect("truncate");
    store
        .blocking_append((1400..1450).map(|i| normal(2, i, b"x")))
        .await
        .expect("append after truncate");
    store
        .save_committed(Some(log_id(2, 1, 1420)))
        .await
        .expect("committed");
    store.purge(log_id(1, 1, 10)).await.expect("purge");
    let before = snapshot_of(&mut store).await;
    assert_eq!(before.0, Some(Vote::new_committed(2, 1)));
    assert_eq!(before.1, Some(log_id(2, 1, 1420)));
    assert_eq!(
        before.2,
        format!(
            "{:?}/{:?}",
            Some(log_id(1, 1, 10)),
            Some(log_id(2, 1, 1449))
        )
    );
    let indexes: Vec<u64> = before.3.iter().map(|e| e.log_id.index).collect();
    assert_eq!(indexes, (11..1450).collect::<Vec<_>>());
    assert_eq!(
        before.3[1399 - 11],
        normal(
            1,
            1399,
            b"\x03\x08\x00\x00\x00\x2a\x00\x00\x00\x00\x00\x00\x00"
        )
    );
    assert_eq!(before.3[1400 - 11], normal(2, 1400, b"x"));
    drop(store);
    node.close();

    // After the restart nothing is cached: every entry comes from its segment.
    let mut restarted = Node::open(&dir.0, true);
    let mut store = restarted.take_store(&dir.0);
    let after = snapshot_of(&mut store).await;
    assert_eq!(after, before);
    // A reader handed out by the store sees the same.
    let mut reader = store.get_log_reader().await;
    let some = reader.try_get_log_entries(1395..1405).await.expect("range");
    assert_eq!(some, before.3[1395 - 11..1405 - 11].to_vec());
    drop(store);
    restarted.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_reported_flushed_only_once_durable() {
    let dir = TempDir::new("flush");
    let mut node = Node::open(&dir.0, false);
    let mut store = node.take_store(&dir.0);
    let journal = node.journal.clone();
    let append = tokio::spawn(async move {
        store
            .blocking_append([blank(1, 0), normal(1, 1, b"abc")])
            .await
            .map(|()| store)
    });
    // Entries are readable as soon as they are queued, and not durable: there is no writer.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        !append.is_finished(),
        "append reported flushed with no writer running"
    );
    assert_eq!(journal.watermark().durable(), 0);
    node.start_writer();
    let mut store = append.await.expect("task").expect("append");
    assert!(
        journal.watermark().durable() >= 2,
        "reported before its records were synced"
    );
    let entries = store.try_get_log_entries(0..2).await.expect("read");
    assert_eq!(entries, vec![blank(1, 0), normal(1, 1, b"abc")]);
    drop(store);
    node.close();
}

#[test]
fn replay_refuses_a_hole_or_an_untruncated_overwrite() {
    use crate::server::cluster::record;
    use crate::wal::{Lsn, RecordPos};
    let pos = RecordPos {
        segment: 1,
        offset: 0,
    };
    let mut state = RaftLogState::default();
    for i in 0..3 {
        let p = record::encode_entry(&blank(1, i));
        assert!(state
            .observe(record::RAFT_ENTRY, &p, Lsn(i + 1), pos)
            .expect("in order"));
    }
    let hole = record::encode_entry(&blank(1, 5));
    let err = state
        .observe(record::RAFT_ENTRY, &hole, Lsn(9), pos)
        .expect_err("hole");
    assert_eq!(
        err.to_string(),
        "raft entry 5 cannot follow entry 2: the log would have a hole or an overwrite"
    );
    let again = record::encode_entry(&blank(2, 1));
    assert!(state
        .observe(record::RAFT_ENTRY, &again, Lsn(9), pos)
        .is_err());
    // After a truncate the same index is welcome.
    assert!(state
        .observe(
            record::RAFT_TRUNCATE,
            &record::encode_truncate(1),
            Lsn(10),
            pos
        )
        .expect("truncate"));
    assert!(state
        .observe(record::RAFT_ENTRY, &again, Lsn(11), pos)
        .expect("after truncate"));
    assert_eq!(state.last_log_id(), Some(log_id(2, 1, 1)));
    // Engine records are left to the engine.
    assert!(!state
        .observe(3, &[0; 8], Lsn(12), pos)
        .expect("engine record"));
}
