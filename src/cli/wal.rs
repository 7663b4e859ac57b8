//! `larder wal verify` and `larder wal dump`: the write-ahead log read offline.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

/// `larder wal …`
#[derive(Debug, Subcommand)]
pub enum WalCmd {
    /// Check every segment and record, and a cluster node's snapshot files; print segments,
    /// records, bytes, and the first error. Exits 1 if the log or a snapshot is corrupt.
    Verify(WalArgs),
    /// Print one line per record: segment, offset, LSN, kind, payload length.
    Dump(WalArgs),
}

/// Arguments of `larder wal verify` and `larder wal dump`.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// The server's data directory (its log is in `wal/` inside it).
    #[arg(short = 'b', long, env = "LARDER_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// The log directory inside a data directory.
pub fn wal_dir(data_dir: &std::path::Path) -> PathBuf {
    crate::server::wal_dir(data_dir)
}

/// `larder wal verify`. Returns the exit status.
pub fn wal_verify(args: &WalArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    use crate::engine::{Engine, EngineConfig, ProcessInfo};
    let dir = existing_wal_dir(&args.data_dir)?;
    // Replays the records as recovery would (metadata only) to count the live jobs.
    let now = crate::server::Clock::new().now();
    let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
    let mut replay_error: Option<String> = None;
    // A cluster node's log holds raft records; their entries' engine records are checked
    // to decode, but not replayed (which entries count depends on the commit index).
    let mut raft = crate::server::cluster::log_store::RaftLogState::default();
    let mut raft_records = 0u64;
    let report = crate::wal::verify_with(
        &crate::wal::storage::FsStorage::new(),
        &dir,
        &crate::wal::WalOptions::default(),
        |r| {
            if replay_error.is_some() {
                return;
            }
            if crate::server::cluster::record::is_raft_kind(r.kind) {
                raft_records += 1;
                if let Err(e) = check_raft_record(&mut raft, r) {
                    replay_error = Some(format!(
                        "segment {} offset {}: {e}",
                        r.pos.segment, r.pos.offset
                    ));
                }
                return;
            }
            let at = (r.lsn.0, r.pos.segment, r.pos.offset);
            if let Err(e) = engine.replay(r.kind, r.payload, at, now) {
                replay_error = Some(e.to_string());
            }
        },
    );
    engine.finish_restore();
    writeln!(out, "log:             {}", dir.display())?;
    writeln!(out, "segments:        {}", report.segments)?;
    writeln!(out, "records:         {}", report.records)?;
    if raft_records > 0 {
        let last = raft.last_log_id().map_or(0, |l| l.index);
        let committed = raft.committed().map_or(0, |l| l.index);
        writeln!(
            out,
            "raft entries:    {} (last index {last}, committed {committed})",
            raft.indexes().count()
        )?;
        match raft.vote() {
            Some(v) => writeln!(
                out,
                "raft vote:       term {} node {}",
                v.leader_id.term, v.leader_id.node_id
            )?,
            None => writeln!(out, "raft vote:       none")?,
        }
        if let Some(purged) = raft.purged() {
            writeln!(out, "raft purged:     to index {}", purged.index)?;
        }
        writeln!(
            out,
            "live jobs:       - (a cluster node's log: ask a node's stats)"
        )?;
    } else {
        writeln!(out, "live jobs:       {}", engine.job_count())?;
    }
    writeln!(out, "bytes:           {}", report.bytes)?;
    writeln!(out, "torn tail bytes: {}", report.torn_tail_bytes)?;
    let snapshots = verify_snapshots(&args.data_dir, out)?;
    match &report.error {
        None if snapshots.is_some() => {
            let e = snapshots.unwrap_or_default();
            writeln!(out, "status:          CORRUPT SNAPSHOT: {e}")?;
            Ok(1)
        }
        None if replay_error.is_some() => {
            let e = replay_error.unwrap_or_default();
            writeln!(out, "status:          BAD RECORD: {e}")?;
            Ok(1)
        }
        None => {
            writeln!(out, "status:          ok")?;
            Ok(0)
        }
        Some(e) => {
            writeln!(out, "status:          CORRUPT: {e}")?;
            Ok(1)
        }
    }
}

/// Checks every snapshot file of a cluster node's data directory (every record's checksum,
/// its meta and end records, every engine record decoding) and prints what they cover.
/// Returns the first problem found.
fn verify_snapshots(
    data_dir: &std::path::Path,
    out: &mut impl Write,
) -> anyhow::Result<Option<String>> {
    use crate::server::cluster::snapshot;
    let dir = snapshot::dir(data_dir);
    let Ok(listing) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let mut files: Vec<PathBuf> = listing
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    for path in &files {
        let mut records = 0u64;
        let mut jobs = 0u64;
        let checked = snapshot::read(path, |kind, payload, at| {
            let (change, _) = crate::engine::record::decode_metadata(kind, payload)
                .with_context(|| format!("record at byte {at}"))?;
            records += 1;
            if matches!(change, crate::engine::Change::Image { .. }) {
                jobs += 1;
            }
            Ok(())
        });
        match checked {
            Ok(meta) => writeln!(
                out,
                "snapshot:        {} (covers to index {}, {jobs} jobs, {records} records)",
                path.display(),
                meta.last_log_id.map_or(0, |l| l.index),
            )?,
            Err(e) => return Ok(Some(format!("{e:#}"))),
        }
    }
    Ok(None)
}

/// Takes in one raft record of a cluster node's log, checking that it decodes, follows the
/// records before it, and (for a normal entry) that every engine record in it decodes.
fn check_raft_record(
    raft: &mut crate::server::cluster::log_store::RaftLogState,
    r: crate::wal::RecordRef<'_>,
) -> Result<(), String> {
    use crate::server::cluster::record::{self, RaftRecord};
    raft.observe(r.kind, r.payload, r.lsn, r.pos)
        .map_err(|e| e.to_string())?;
    if let Ok(RaftRecord::Entry(entry)) = record::decode(r.kind, r.payload) {
        if let openraft::EntryPayload::Normal(p) = &entry.payload {
            for inner in record::inner_records(&p.records) {
                let (_, kind, payload) =
                    inner.map_err(|e| format!("entry {}: {e}", entry.log_id))?;
                crate::engine::record::decode_metadata(kind, payload)
                    .map_err(|e| format!("entry {}: {e}", entry.log_id))?;
            }
        }
    }
    Ok(())
}

/// The log directory of `data_dir`, or an error saying which of the two is missing (a
/// missing log is not a corrupt one).
fn existing_wal_dir(data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = wal_dir(data_dir);
    if !dir.is_dir() {
        if data_dir.is_dir() {
            bail!(
                "{} has no log (no {} directory): not a larder data directory, or no server \
                 has used it yet",
                data_dir.display(),
                dir.display()
            );
        }
        bail!(
            "no data directory at {} (give it with --data-dir or LARDER_DATA_DIR)",
            data_dir.display()
        );
    }
    Ok(dir)
}

/// `larder wal dump`.
pub fn wal_dump(args: &WalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let dir = existing_wal_dir(&args.data_dir)?;
    let options = crate::wal::WalOptions::default();
    writeln!(out, "segment\toffset\tlsn\tkind\tlength")?;
    for entry in crate::wal::dump(&crate::wal::storage::FsStorage::new(), &dir, &options) {
        let e = entry.with_context(|| format!("reading {}", dir.display()))?;
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            e.segment,
            e.offset,
            e.lsn.0,
            crate::engine::record::kind_name(e.kind),
            e.len
        )?;
    }
    Ok(())
}
