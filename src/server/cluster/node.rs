//! A cluster node: recovery of the raft log, openraft started over it, the proposer that
//! turns the leader's change batches into entries, and the watcher that opens the broker as
//! leader or steps it down when leadership is lost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use openraft::{BasicNode, Config, Raft, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::log_store::{LogStore, RaftLogState};
use super::machine::Machine;
use super::net::{self, Network};
use super::snapshot::{self, Snapshots};
use super::tls::{ClusterTls, Stream};
use super::{LarderRaft, LogId, NodeId, Proposal};
use crate::config::ClusterConfig;
use crate::server::journal::Journal;
use crate::server::{Broker, Clock};
use crate::wal::storage::FsStorage;
use crate::wal::{Wal, WalOptions};

/// Exit status of a node that lost leadership and could not rebuild its state from its log.
pub const EXIT_LOST_LEADERSHIP: i32 = 75;
/// Exit status of a node whose openraft stopped on a fatal (storage) error.
pub const EXIT_RAFT_STOPPED: i32 = 76;

/// Heartbeat and election timeouts (ms): generous, for busy small machines.
const HEARTBEAT_MS: u64 = 150;
const ELECTION_MIN_MS: u64 = 750;
const ELECTION_MAX_MS: u64 = 1500;

/// Entries kept in the log after a snapshot covers them, for members a little behind (a
/// member further behind gets the snapshot).
const LOG_KEPT_AFTER_SNAPSHOT: u64 = 256;

/// A snapshot is made once the log since the last one is this many segments long ...
const SNAPSHOT_AFTER_SEGMENTS: u64 = 4;
/// ... and this many times the last snapshot's size, so that writing snapshots costs at
/// most about half the log's own writes however large the live state is.
const SNAPSHOT_SIZE_FACTOR: u64 = 2;
/// How often the retention task looks.
const RETAIN_EVERY: Duration = Duration::from_millis(250);

/// Largest proposal: a batch of change batches packed into one entry.
const MAX_PROPOSAL: usize = 1 << 20;

/// The log and the raft state read back from `data_dir` at start-up.
pub struct Recovered {
    /// The log, to hand to the writer.
    pub wal: Wal<FsStorage>,
    /// The raft records' state.
    pub state: RaftLogState,
}

/// Reads the log in `wal_dir`: every record must be a raft record (the engine's records
/// live inside entries). A single-node log is refused with the reason.
pub fn recover(wal_dir: &Path, segment_size: u64) -> anyhow::Result<Recovered> {
    let mut state = RaftLogState::default();
    let mut failure: Option<anyhow::Error> = None;
    let options = WalOptions {
        max_segment_size: segment_size,
        preallocate: true,
        ..WalOptions::default()
    };
    let (wal, report) = Wal::open_with(FsStorage::new(), wal_dir, options, |r| {
        if failure.is_some() {
            return;
        }
        match state.observe(r.kind, r.payload, r.lsn, r.pos) {
            Ok(true) => {}
            Ok(false) => {
                failure = Some(anyhow::anyhow!(
                    "segment {} offset {} holds a single-node record ({}): this data directory belongs to a single-node server; a cluster node needs a fresh one",
                    r.pos.segment,
                    r.pos.offset,
                    crate::engine::record::kind_name(r.kind)
                ));
            }
            Err(e) => {
                failure = Some(anyhow::anyhow!(
                    "segment {} offset {}: {e}",
                    r.pos.segment,
                    r.pos.offset
                ));
            }
        }
    })
    .with_context(|| format!("opening the log in {}", wal_dir.display()))?;
    if let Some(e) = failure {
        return Err(e.context(format!("reading the raft log in {}", wal_dir.display())));
    }
    if report.truncated_bytes > 0 {
        tracing::warn!(
            bytes = report.truncated_bytes,
            "cut a torn record off the end of the log (a write was interrupted by a crash)"
        );
    }
    tracing::info!(
        records = report.records,
        entries = state.indexes().count(),
        "raft log read"
    );
    Ok(Recovered { wal, state })
}

/// A running cluster node.
pub struct ClusterNode {
    /// openraft.
    pub raft: Raft<LarderRaft>,
    /// Client connections followers forwarded here.
    pub proxied: mpsc::Receiver<Stream>,
    config: ClusterConfig,
    tls: Option<Arc<ClusterTls>>,
}

impl ClusterNode {
    /// What a connection to another member's cluster port starts with, for type `kind`.
    pub fn preamble(&self, kind: u8) -> Vec<u8> {
        net::preamble(kind, self.config.token.as_deref())
    }

    /// Mutual TLS among members, if on: a forwarded client connection goes over it too.
    pub fn tls(&self) -> Option<Arc<ClusterTls>> {
        self.tls.clone()
    }

    /// The address to forward a client connection to: the leader's cluster port (or its
    /// `--peer-route`), if a leader other than this node is known.
    pub fn leader_addr(&self) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader?;
        if leader == self.config.node_id {
            return None;
        }
        if let Some(route) = self.config.routes.get(&leader) {
            return Some(route.clone());
        }
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.addr.clone());
        addr
    }
}

/// openraft's settings for larder.
fn raft_config() -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "larder".to_owned(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        // Snapshots are triggered by the retention task, by the log's size (see `retain`).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: LOG_KEPT_AFTER_SNAPSHOT,
        max_payload_entries: 16,
        ..Config::default()
    };
    Ok(Arc::new(config.validate().context("openraft's settings")?))
}

/// Starts openraft on the journal and `broker`, the cluster port (with `tls`, read from
/// `config.tls` by the caller, when on), the proposer and the leadership watcher; forms the
/// cluster if this node has never been part of one.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    config: &ClusterConfig,
    tls: Option<Arc<ClusterTls>>,
    journal: Arc<Journal>,
    wal_dir: &Path,
    state: RaftLogState,
    broker: Arc<Broker>,
    proposals: mpsc::UnboundedReceiver<crate::server::broker::Batch>,
    clock: Clock,
    snapshots: Arc<Snapshots>,
    segment_size: u64,
) -> anyhow::Result<ClusterNode> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the cluster port {}", config.listen))?;
    let pristine = state.vote().is_none() && state.last_log_id().is_none();
    let journal_for_retain = journal.clone();
    let mut store = LogStore::open(journal, wal_dir.to_path_buf(), state);
    let reader = openraft::storage::RaftLogStorage::get_log_reader(&mut store).await;
    let machine = Machine::new(
        broker.clone(),
        reader.clone(),
        snapshots.clone(),
        broker.files().clone(),
        snapshots.newest_meta(),
    );
    let network = Network {
        routes: config.routes.clone(),
        token: config.token.clone(),
        tls: tls.clone(),
    };
    let raft = Raft::new(config.node_id, raft_config()?, network, store, machine)
        .await
        .context("starting openraft")?;
    let (proxied_tx, proxied) = mpsc::channel(64);
    tokio::spawn(net::serve(
        listener,
        raft.clone(),
        proxied_tx,
        config.token.clone(),
        tls.clone(),
    ));
    if tls.is_some() {
        tracing::info!("cluster port: mutual TLS among members");
    }
    if config.token.is_none() && tls.is_none() {
        tracing::warn!(
            "cluster port without --cluster-token-file or --cluster-tls-*: anyone who can reach it can take part"
        );
    }
    let first = config.peers.keys().all(|&peer| config.node_id < peer);
    if pristine && first {
        // The lowest-numbered member forms the cluster, once: it writes the first membership
        // and stands for election; the others learn it from the leader. (Every member
        // initializing at once is allowed by openraft, but each such call starts an
        // election at once, and a leader deposed by them would stop.)
        let mut members: BTreeMap<NodeId, BasicNode> = config
            .peers
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        members.insert(config.node_id, BasicNode::new(config.listen.to_string()));
        match raft.initialize(members).await {
            Ok(()) => tracing::info!(node = config.node_id, "formed a new cluster"),
            Err(e) => tracing::info!(error = %e, "not forming a cluster"),
        }
    }
    {
        let raft = raft.clone();
        broker.set_cluster_status(Box::new(move || status_yaml(&raft)));
    }
    {
        let raft = raft.clone();
        broker.set_membership_hook(Box::new(move |change| {
            let raft = raft.clone();
            Box::pin(async move { change_membership(&raft, change).await })
        }));
    }
    tokio::spawn(propose(raft.clone(), proposals, clock, broker.clone()));
    tokio::spawn(retain(
        raft.clone(),
        broker.clone(),
        journal_for_retain,
        reader.clone(),
        snapshots.clone(),
        segment_size,
    ));
    tokio::spawn(watch_leadership(
        raft.clone(),
        broker,
        reader,
        snapshots,
        config.node_id,
    ));
    tracing::info!(
        node = config.node_id,
        cluster_listen = %config.listen,
        peers = config.peers.len(),
        "cluster node started"
    );
    Ok(ClusterNode {
        raft,
        proxied,
        config: config.clone(),
        tls,
    })
}

/// Packs the leader's change batches, in engine order, into entries: whatever has queued
/// while the previous entry was being handed over goes into the next one. Batches of a term
/// this node no longer leads in are dropped (and would be applied as empty if one slipped
/// through: see `Broker::apply_entry`).
async fn propose(
    raft: Raft<LarderRaft>,
    mut batches: mpsc::UnboundedReceiver<crate::server::broker::Batch>,
    clock: Clock,
    broker: Arc<Broker>,
) {
    use futures_util::stream::{FuturesUnordered, StreamExt};
    // openraft's replies to proposals, kept until they come (openraft warns about every
    // reply it cannot deliver); their contents are not needed.
    let mut replies = FuturesUnordered::new();
    let mut next = None;
    loop {
        let (leader, seq, first) = match next.take() {
            Some(b) => b,
            None => {
                let batch = tokio::select! {
                    batch = batches.recv() => batch,
                    Some(_) = replies.next(), if !replies.is_empty() => continue,
                };
                match batch {
                    Some(b) => b,
                    None => return,
                }
            }
        };
        if broker.leading() != Some(leader) {
            continue;
        }
        let (mut records, mut last_seq) = (first, seq);
        while records.len() < MAX_PROPOSAL {
            match batches.try_recv() {
                Ok((l, seq, batch)) if l == leader => {
                    records.extend_from_slice(&batch);
                    last_seq = seq;
                }
                Ok(other) => {
                    next = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        let proposal = Proposal {
            term: leader.leader.term,
            opening: leader.opening,
            leader_time: clock.now().0,
            last_seq,
            records: Bytes::from(records),
        };
        // The reply is not awaited here: the entry's effects are released when the state
        // machine applies it. A proposal refused because this node is no longer leader
        // is never applied, and the leadership watcher steps the broker down.
        match raft.client_write_ff(proposal).await {
            Ok(reply) => replies.push(reply),
            Err(e) => {
                tracing::error!(error = %e, "openraft stopped: cannot propose");
                return;
            }
        }
    }
}

/// Opens the broker as leader once this node leads and has applied every entry in its log;
/// steps it down once it no longer leads (or has not heard from a quorum for longer than an
/// election timeout). The engine of a leader runs ahead of the commit index, so stepping
/// down rebuilds it from the committed log, as a restart would.
async fn watch_leadership(
    raft: Raft<LarderRaft>,
    broker: Arc<Broker>,
    log: super::log_store::LogReader,
    snapshots: Arc<Snapshots>,
    me: NodeId,
) {
    let mut metrics = raft.metrics();
    let mut opened: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        let stopped = tokio::select! {
            changed = metrics.changed() => changed.is_err(),
            _ = tick.tick() => false,
        };
        if broker.is_stopping() {
            // Shutting down: openraft stops too, which is not a lost election.
            return;
        }
        if stopped || metrics.borrow().state == openraft::ServerState::Shutdown {
            // openraft stops by itself only on a fatal error (its storage failed: the log
            // could not be written, a snapshot could not be built or installed). Such a
            // node can neither lead nor follow; a restart rebuilds it from its log.
            tracing::error!(
                "openraft stopped after a fatal error (logged above): exiting so that a restart recovers this node"
            );
            std::process::exit(EXIT_RAFT_STOPPED);
        }
        let (leading, term, quorum_ack) = {
            let m = metrics.borrow();
            broker.set_leader_known(m.current_leader.is_some());
            (
                m.state == openraft::ServerState::Leader,
                m.current_term,
                m.millis_since_quorum_ack,
            )
        };
        match opened {
            None if leading => {
                // Every entry of earlier terms must be in the engine before it runs a
                // command: this returns once this term's first entry is applied.
                if let Err(e) = raft.ensure_linearizable().await {
                    tracing::info!(error = %e, "elected, but not confirmed as leader yet");
                    continue;
                }
                // And every entry already in this leader's log: after leading again in the
                // same term, entries of the earlier opening may still be uncommitted; the
                // engine must hold them before it makes changes of its own.
                let last = raft.metrics().borrow().last_log_index;
                let applied = raft
                    .wait(Some(Duration::from_millis(ELECTION_MAX_MS)))
                    .applied_index_at_least(last, "the leader's own log applied")
                    .await;
                if applied.is_err() {
                    continue;
                }
                let still = {
                    let m = raft.metrics();
                    let m = m.borrow();
                    m.state == openraft::ServerState::Leader && m.current_term == term
                };
                if still {
                    broker.open_leader(openraft::LeaderId::new(term, me));
                    opened = Some(term);
                    tracing::info!(term, node = me, "leader: serving commands");
                }
            }
            Some(t) if !leading || term != t => {
                step_down(&broker, &log, &snapshots, t, "another node leads now");
                opened = None;
            }
            Some(t) if quorum_ack.is_some_and(|ms| ms > ELECTION_MAX_MS) => {
                // Cut off: stop serving now rather than when openraft notices; a later
                // election may make this node leader again.
                // Cut off: stop serving now rather than wait for openraft to notice. If
                // the quorum comes back before another node is elected, this node opens
                // again in the same term, with a rebuilt engine.
                step_down(
                    &broker,
                    &log,
                    &snapshots,
                    t,
                    "no quorum has answered within an election timeout",
                );
                opened = None;
            }
            _ => {}
        }
    }
}

/// Stops leading: rebuilds the engine from the committed log and closes every client
/// connection (see `Broker::step_down`). If the log cannot be read back the process stops
/// (status [`EXIT_LOST_LEADERSHIP`]) so that a restart rebuilds it instead.
fn step_down(
    broker: &Broker,
    log: &super::log_store::LogReader,
    snapshots: &Arc<Snapshots>,
    term: u64,
    why: &str,
) {
    let started = std::time::Instant::now();
    let base = |engine: &mut crate::engine::Engine, now| -> Result<u64, String> {
        let Some((pin, meta)) = snapshots.newest() else {
            return Ok(0);
        };
        let path = snapshot::file_path(snapshots.dir(), pin.number());
        snapshot::load(&path, pin.number(), engine, now).map_err(|e| format!("{e:#}"))?;
        Ok(meta.last_log_id.map_or(0, |l| l.index + 1))
    };
    match broker.step_down(base, |from, to| log.read_located(from, to)) {
        Ok(()) => tracing::warn!(
            term,
            why,
            rebuild_ms = started.elapsed().as_millis() as u64,
            "lost leadership: state rebuilt from the committed log, clients disconnected"
        ),
        Err(e) => {
            tracing::error!(term, why, error = %e, "lost leadership and cannot rebuild the state: stopping");
            std::process::exit(EXIT_LOST_LEADERSHIP);
        }
    }
}

/// Keeps the log and the snapshot files to what they must hold, every [`RETAIN_EVERY`]:
/// asks openraft for a snapshot once the log since the last one is long enough (openraft
/// then purges the entries it covers, but the last [`LOG_KEPT_AFTER_SNAPSHOT`]); tells the
/// writer which segments must stay — those with entries not purged, the newest vote,
/// committed and purge records, live bodies, bodies replies are still to read; and removes
/// snapshot files older than the newest that hold no live body.
async fn retain(
    raft: Raft<LarderRaft>,
    broker: Arc<Broker>,
    journal: Arc<Journal>,
    log: super::log_store::LogReader,
    snapshots: Arc<Snapshots>,
    segment_size: u64,
) {
    let mut tick = tokio::time::interval(RETAIN_EVERY);
    // When a snapshot was last asked for, and the newest one then: asked again only once
    // that one is superseded or a while has passed (a build that failed).
    let mut asked: Option<(std::time::Instant, Option<LogId>)> = None;
    loop {
        tick.tick().await;
        if broker.is_stopping() {
            return;
        }
        // A snapshot, when the log since the newest one has grown enough.
        let applied = raft.metrics().borrow().last_applied;
        let covered = snapshots.newest_meta().and_then(|m| m.last_log_id);
        let waiting = asked.is_some_and(|(at, newest)| {
            newest == covered && at.elapsed() < Duration::from_secs(10)
        });
        if applied > covered && !waiting {
            let from = match covered {
                Some(c) => log.segment_after(c.index),
                None => Some(journal.oldest_segment()),
            }
            .unwrap_or_else(|| journal.current_segment());
            let segments = journal.current_segment().saturating_sub(from);
            let bytes = segments.saturating_mul(segment_size);
            if segments >= SNAPSHOT_AFTER_SEGMENTS
                && bytes >= SNAPSHOT_SIZE_FACTOR.saturating_mul(snapshots.newest_size())
            {
                if raft.trigger().snapshot().await.is_err() {
                    return;
                }
                asked = Some((std::time::Instant::now(), covered));
            }
        }
        // The segments that must stay.
        let files = broker.files();
        let keep = log
            .keep_segment()
            .min(broker.oldest_live_log_segment())
            .min(files.oldest_opening());
        journal.set_keep_segment(keep);
        log.forget_before(journal.oldest_segment());
        // Snapshot files nothing reads any more.
        for number in snapshots
            .remove_unused(|lo, hi| broker.has_live_bodies_in(lo, hi) || files.opening_in(lo, hi))
        {
            let (lo, hi) = crate::engine::BodyRef::snapshot_segments(number);
            files.forget_range(lo, hi);
            tracing::debug!(number, "removed an old snapshot file");
        }
    }
}

/// The `cluster-*` lines of extended `stats` (protocol.md §11): this node's view of the
/// cluster; on the leader, each member's replication too.
pub fn status_yaml(raft: &Raft<LarderRaft>) -> String {
    use std::fmt::Write;
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let role = match m.state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    };
    let last = m.last_log_index.unwrap_or(0);
    let members: Vec<String> = m
        .membership_config
        .membership()
        .voter_ids()
        .map(|id| id.to_string())
        .collect();
    let mut y = String::new();
    let _ = write!(
        y,
        "cluster-node: {}\ncluster-role: {role}\ncluster-term: {}\ncluster-leader: {}\n\
         cluster-members: {}\ncluster-last-log-index: {last}\ncluster-applied-index: {}\n\
         cluster-snapshot-index: {}\ncluster-purged-index: {}\n",
        m.id,
        m.current_term,
        m.current_leader
            .map_or_else(|| "none".to_owned(), |l| l.to_string()),
        members.join(","),
        m.last_applied.map_or(0, |l| l.index),
        m.snapshot.map_or(0, |l| l.index),
        m.purged.map_or(0, |l| l.index),
    );
    if let Some(replication) = &m.replication {
        for (id, matched) in replication {
            if *id == m.id {
                continue;
            }
            let matched = matched.map_or(0, |l| l.index);
            let _ = write!(
                y,
                "cluster-node-{id}-match-index: {matched}\ncluster-node-{id}-lag: {}\n",
                last.saturating_sub(matched)
            );
        }
    }
    y
}

/// How long `cluster-add` waits for the new node to catch up before it gives up (the node
/// stays a non-voting learner).
const CATCH_UP: Duration = Duration::from_secs(60);

/// Carries out `cluster-add` / `cluster-remove` (protocol.md §11): an add makes the node a
/// learner, waits for it to catch up, then makes it a voter; both change the voters through
/// joint consensus, and reply once the new membership is committed.
async fn change_membership(
    raft: &Raft<LarderRaft>,
    change: crate::server::broker::MembershipChange,
) -> crate::protocol::Reply {
    use crate::protocol::Reply;
    use crate::server::broker::MembershipChange;
    use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
    let refused = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Reply::NoQuorum,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(_),
        )) => Reply::ClusterBusy,
        other => {
            tracing::warn!(error = %other, "membership change failed");
            Reply::InternalError
        }
    };
    let (voters, joint, me) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        (voters, membership.get_joint_config().len() > 1, m.id)
    };
    if joint {
        return Reply::ClusterBusy;
    }
    // A leader that has just removed itself still leads until it steps down, and openraft
    // 0.9 panics if asked to change the membership then: the change goes to the next
    // leader instead.
    if !voters.contains(&me) {
        return Reply::NoQuorum;
    }
    match change {
        MembershipChange::Add { id, addr } => {
            if voters.contains(&id) {
                return Reply::ClusterChanged;
            }
            let learner = raft.add_learner(id, BasicNode::new(addr.to_string()), true);
            match tokio::time::timeout(CATCH_UP, learner).await {
                Err(_) => return Reply::TimedOut,
                Ok(Err(e)) => return refused(e),
                Ok(Ok(_)) => {}
            }
            let mut new = voters;
            new.insert(id);
            match raft.change_membership(new, false).await {
                Ok(_) => {
                    tracing::info!(node = id, %addr, "member added");
                    Reply::ClusterChanged
                }
                Err(e) => refused(e),
            }
        }
        MembershipChange::Remove(id) => {
            if !voters.contains(&id) {
                return Reply::NotFound;
            }
            let mut new = voters;
            new.remove(&id);
            if new.is_empty() {
                return Reply::NotFound;
            }
            match raft.change_membership(new, false).await {
                Ok(_) => {
                    tracing::info!(node = id, "member removed");
                    Reply::ClusterChanged
                }
                Err(e) => refused(e),
            }
        }
    }
}
