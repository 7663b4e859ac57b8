//! Cluster snapshots: the engine's state at an applied raft index, in a file of engine
//! records, so that the raft log before it can be removed and a lagging or new member can
//! be caught up without the whole history.
//!
//! A snapshot file (`snapshots/NNNNNNNNNNNNNNNN.snap`, numbered in the order this node made
//! or received them) is a sequence of record frames in the write-ahead log's format
//! (length, CRC32C, kind, payload):
//!
//! 1. a [`SNAPSHOT_META`] record: openraft's snapshot meta (last log id, membership, id),
//!    bincode-encoded;
//! 2. the engine's records, as compaction writes them: an image (with its body) and its
//!    notes for every live job, every tube setting and pause in force, and the next job id;
//! 3. a [`SNAPSHOT_END`] record holding the number of records before it.
//!
//! A file is written as `NNNN.part`, fsync'ed, renamed and the directory fsync'ed; a
//! received one is written by openraft's chunks into its `.part` and checked whole (every
//! CRC, the meta, the end record) before the rename. Start-up loads the newest `.snap` and
//! removes `.part` files.
//!
//! **Bodies stay in the file.** Loading a snapshot points each job at its body's place in
//! the snapshot file (segment numbers from [`BodyRef::SNAPSHOT_SEGMENTS`] on name 4 GiB
//! windows of snapshot files; [`SegmentFiles`] opens them), so a snapshot costs the engine
//! what a log does. Building one replays the previous snapshot and the entries since
//! into a scratch engine (the recovery path, on the committed log only: never the leader's
//! engine, which runs ahead of the commit index), writes that engine out, and then moves
//! the live engine's bodies that are the same bytes to the new file, so old log segments
//! and old snapshot files stop holding live bodies and can go.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{bail, Context};
use bytes::Bytes;
use openraft::{EntryPayload, SnapshotMeta};

use super::log_store::LogReader;
use super::machine::Node;
use super::{LogId, NodeId};
use crate::engine::{record, BodyRef, Change, Engine, Timestamp};
use crate::protocol::JobId;
use crate::server::body_reader::SegmentFiles;
use crate::wal::frame::{self, RECORD_HEADER_LEN};

/// Kind of a snapshot file's first record: the snapshot's meta.
pub const SNAPSHOT_META: u8 = 37;
/// Kind of a snapshot file's last record: how many records came before it.
pub const SNAPSHOT_END: u8 = 38;

/// Jobs written per look at the engine while building.
const JOBS_PER_SLICE: usize = 4096;

/// openraft's snapshot meta for larder.
pub type Meta = SnapshotMeta<NodeId, Node>;

/// The snapshot directory of the data directory `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("snapshots")
}

/// The path of snapshot file `number` in `dir`.
pub fn file_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.snap"))
}

fn part_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.part"))
}

/// A node's snapshot files: which is newest, which are being read.
pub struct Snapshots {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// Held while a snapshot is built or installed: one at a time, so a build never reads
    /// log entries an install has purged meanwhile.
    pub busy: tokio::sync::Mutex<()>,
}

struct Inner {
    /// Complete files by number, with their meta.
    files: BTreeMap<u64, Meta>,
    /// The number the next file gets.
    next: u64,
    /// Files being read, with how many readers.
    pins: BTreeMap<u64, usize>,
}

/// Keeps a snapshot file from being removed while it is read.
pub struct Pin {
    snapshots: Arc<Snapshots>,
    number: u64,
}

impl Pin {
    /// The file's number.
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut inner = self.snapshots.lock();
        if let Some(n) = inner.pins.get_mut(&self.number) {
            *n -= 1;
            if *n == 0 {
                inner.pins.remove(&self.number);
            }
        }
    }
}

impl Snapshots {
    /// The snapshot files in `dir` (created if missing); unfinished `.part` files are
    /// removed. Only each file's meta is read here.
    pub fn open(dir: PathBuf) -> anyhow::Result<Arc<Snapshots>> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = BTreeMap::new();
        let mut next = 0;
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))?
        {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((stem, ext)) = name.split_once('.') else {
                continue;
            };
            let Ok(number) = u64::from_str_radix(stem, 16) else {
                continue;
            };
            next = next.max(number + 1);
            match ext {
                "part" => std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?,
                "snap" => {
                    let meta = read_meta(&path)?;
                    files.insert(number, meta);
                }
                _ => {}
            }
        }
        Ok(Arc::new(Snapshots {
            dir,
            inner: Mutex::new(Inner {
                files,
                next,
                pins: BTreeMap::new(),
            }),
            busy: tokio::sync::Mutex::new(()),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The newest complete snapshot, pinned, with its meta.
    pub fn newest(self: &Arc<Self>) -> Option<(Pin, Meta)> {
        let mut inner = self.lock();
        let (&number, meta) = inner.files.last_key_value()?;
        let meta = meta.clone();
        *inner.pins.entry(number).or_default() += 1;
        Some((
            Pin {
                snapshots: self.clone(),
                number,
            },
            meta,
        ))
    }

    /// The newest snapshot's meta.
    pub fn newest_meta(&self) -> Option<Meta> {
        self.lock().files.last_key_value().map(|(_, m)| m.clone())
    }

    /// The newest snapshot file's size in bytes (0 if none).
    pub fn newest_size(&self) -> u64 {
        let number = self.lock().files.last_key_value().map(|(&n, _)| n);
        number
            .and_then(|n| std::fs::metadata(file_path(&self.dir, n)).ok())
            .map_or(0, |m| m.len())
    }

    /// A number for a new file, and its `.part` path.
    pub fn reserve(&self) -> (u64, PathBuf) {
        let mut inner = self.lock();
        let number = inner.next;
        inner.next += 1;
        (number, part_path(&self.dir, number))
    }

    /// Removes the `.part` file `number` (a snapshot whose receiving was abandoned).
    pub fn discard(&self, number: u64) {
        let part = part_path(&self.dir, number);
        if let Err(e) = std::fs::remove_file(&part) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %part.display(), error = %e, "could not remove an abandoned snapshot file");
            }
        }
    }

    /// Makes the `.part` file `number` (written and fsync'ed) the snapshot file `number`.
    pub fn finish(&self, number: u64, meta: Meta) -> anyhow::Result<()> {
        let part = part_path(&self.dir, number);
        let path = file_path(&self.dir, number);
        std::fs::rename(&part, &path)
            .with_context(|| format!("renaming {} to {}", part.display(), path.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing the directory {}", self.dir.display()))?;
        self.lock().files.insert(number, meta);
        Ok(())
    }

    /// Removes the files older than the newest that nobody reads and `in_use` (given a
    /// file's segment numbers) says hold no live body. Returns the numbers removed.
    pub fn remove_unused(&self, in_use: impl Fn(u64, u64) -> bool) -> Vec<u64> {
        let candidates: Vec<u64> = {
            let inner = self.lock();
            let Some((&newest, _)) = inner.files.last_key_value() else {
                return Vec::new();
            };
            inner
                .files
                .keys()
                .copied()
                .filter(|&n| n < newest && !inner.pins.contains_key(&n))
                .collect()
        };
        let mut removed = Vec::new();
        for number in candidates {
            let (lo, hi) = BodyRef::snapshot_segments(number);
            if in_use(lo, hi) {
                continue;
            }
            let path = file_path(&self.dir, number);
            {
                let mut inner = self.lock();
                if inner.pins.contains_key(&number) {
                    continue;
                }
                inner.files.remove(&number);
            }
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(number),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove an old snapshot file")
                }
            }
        }
        removed
    }
}

/// Reads the frames of the snapshot file at `path` in order, calling `each` with every
/// engine record's kind, payload and the payload's offset in the file. Checks every CRC,
/// the meta record first and the end record last (with the right count). Returns the meta.
pub fn read(
    path: &Path,
    mut each: impl FnMut(u8, &[u8], u64) -> anyhow::Result<()>,
) -> anyhow::Result<Meta> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut meta = None;
    let mut count = 0u64;
    let mut payload = Vec::new();
    loop {
        let mut head = [0u8; RECORD_HEADER_LEN];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                bail!(
                    "{}: ends at byte {offset} without its end record",
                    path.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let kind = head[8];
        // A damaged length must not make this allocate more than the file holds.
        if offset + (RECORD_HEADER_LEN as u64) + u64::from(len) > size {
            bail!(
                "{}: record at byte {offset} runs past the end of the file",
                path.display()
            );
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload)
            .with_context(|| format!("{}: record at byte {offset} is cut short", path.display()))?;
        if frame::record_crc(kind, &payload) != crc {
            bail!(
                "{}: record at byte {offset} fails its checksum",
                path.display()
            );
        }
        let payload_at = offset + RECORD_HEADER_LEN as u64;
        match (kind, &meta) {
            (SNAPSHOT_META, None) => {
                meta = Some(bincode::deserialize::<Meta>(&payload).with_context(|| {
                    format!("{}: the meta record does not decode", path.display())
                })?);
            }
            (_, None) => bail!("{}: does not start with a meta record", path.display()),
            (SNAPSHOT_END, Some(m)) => {
                let said = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes);
                if said != Some(count) {
                    bail!(
                        "{}: the end record counts {said:?} records, the file has {count}",
                        path.display()
                    );
                }
                return Ok(m.clone());
            }
            (SNAPSHOT_META, Some(_)) => {
                bail!("{}: a second meta record at byte {offset}", path.display())
            }
            (kind, Some(_)) => {
                each(kind, &payload, payload_at)?;
                count += 1;
            }
        }
        offset = payload_at + u64::from(len);
    }
}

/// Reads only the meta record of the snapshot file at `path`.
pub fn read_meta(path: &Path) -> anyhow::Result<Meta> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; RECORD_HEADER_LEN];
    file.read_exact_at(&mut head, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if head[8] != SNAPSHOT_META || len > 1 << 20 {
        bail!("{}: does not start with a meta record", path.display());
    }
    let mut payload = vec![0; len as usize];
    file.read_exact_at(&mut payload, RECORD_HEADER_LEN as u64)
        .with_context(|| format!("reading {}", path.display()))?;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if frame::record_crc(SNAPSHOT_META, &payload) != crc {
        bail!("{}: the meta record fails its checksum", path.display());
    }
    bincode::deserialize(&payload)
        .with_context(|| format!("{}: the meta record does not decode", path.display()))
}

/// Loads snapshot file `number` (at `path`) into `engine`: every job points at its body in
/// the file. Returns the meta.
pub fn load(path: &Path, number: u64, engine: &mut Engine, now: Timestamp) -> anyhow::Result<Meta> {
    let meta = read(path, |kind, payload, at| {
        let (change, body) = record::decode_metadata(kind, payload)
            .with_context(|| format!("{}: record at byte {at}", path.display()))?;
        let body_at = body.map(|(start, len)| BodyRef::in_snapshot(number, at + start as u64, len));
        match engine.restore(change, body_at, now) {
            Ok(()) | Err(crate::engine::RestoreError::UnknownJob(_)) => Ok(()),
            Err(e) => Err(anyhow::anyhow!(
                "{}: record at byte {at}: {e}",
                path.display()
            )),
        }
    })?;
    engine.finish_restore();
    Ok(meta)
}

/// What building a snapshot needs.
pub struct Build {
    /// The snapshot files.
    pub snapshots: Arc<Snapshots>,
    /// Where bodies are read from.
    pub files: Arc<SegmentFiles>,
    /// The raft log.
    pub log: LogReader,
    /// An empty engine to replay into.
    pub engine: Engine,
    /// The last applied entry: the snapshot's state is the one after it.
    pub upto: LogId,
    /// The membership as of `upto`.
    pub membership: openraft::StoredMembership<NodeId, Node>,
    /// Now.
    pub now: Timestamp,
}

/// A built snapshot: its file number and meta, and the bodies now also in it (job, where
/// the body was, where it is in the new file).
pub struct Built {
    /// The file's number.
    pub number: u64,
    /// Its meta.
    pub meta: Meta,
    /// Bodies the live engine may move to the new file.
    pub moved: Vec<(JobId, BodyRef, BodyRef)>,
}

/// Builds a snapshot of the state after `b.upto` (blocking: run it off the runtime's
/// threads): the previous snapshot and the log entries after it up to `upto`, replayed
/// into a scratch engine and written out.
pub fn build(mut b: Build) -> anyhow::Result<Built> {
    let base = b.snapshots.newest();
    let mut from = 0;
    if let Some((pin, meta)) = &base {
        let path = file_path(b.snapshots.dir(), pin.number());
        load(&path, pin.number(), &mut b.engine, b.now)?;
        from = meta.last_log_id.map_or(0, |l| l.index + 1);
        if meta.last_log_id >= Some(b.upto) {
            bail!(
                "snapshot {} already covers entry {}",
                meta.snapshot_id,
                b.upto
            );
        }
    }
    let end = b.upto.index + 1;
    while from < end {
        let to = end.min(from + 1024);
        let entries = b.log.read_located(from, to).map_err(anyhow::Error::msg)?;
        // Every entry must be there: a state built past a hole would be wrong.
        if entries.len() as u64 != to - from
            || entries
                .iter()
                .zip(from..)
                .any(|((e, _), index)| e.log_id.index != index)
        {
            bail!("entries {from}..{to} are not all in the log to build a snapshot from");
        }
        for (entry, at) in entries {
            if let EntryPayload::Normal(p) = &entry.payload {
                crate::server::broker::replay_entry(&mut b.engine, entry.log_id, p, at, b.now)
                    .map_err(anyhow::Error::msg)?;
            }
        }
        from = to;
    }
    b.engine.finish_restore();
    let (number, part) = b.snapshots.reserve();
    let meta = Meta {
        last_log_id: Some(b.upto),
        last_membership: b.membership.clone(),
        snapshot_id: format!("{}-{}-{number}", b.upto.leader_id.term, b.upto.index),
    };
    let moved = write(&part, number, &meta, &b.engine, &b.files)
        .with_context(|| format!("writing the snapshot {}", part.display()))?;
    drop(base);
    b.snapshots.finish(number, meta.clone())?;
    Ok(Built {
        number,
        meta,
        moved,
    })
}

/// Writes `engine`'s state as snapshot file `number` at `path`, fsync'ed.
fn write(
    path: &Path,
    number: u64,
    meta: &Meta,
    engine: &Engine,
    files: &SegmentFiles,
) -> anyhow::Result<Vec<(JobId, BodyRef, BodyRef)>> {
    let file = File::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, &file);
    let mut offset = 0u64;
    let mut count = 0u64;
    let mut frame_buf = Vec::new();
    let mut put =
        |w: &mut BufWriter<&File>, kind: u8, head: &[u8], tail: &[u8]| -> std::io::Result<u64> {
            frame_buf.clear();
            frame::encode_record_parts(&mut frame_buf, kind, head, tail);
            w.write_all(&frame_buf)?;
            let payload_at = offset + RECORD_HEADER_LEN as u64;
            offset += frame_buf.len() as u64;
            Ok(payload_at)
        };
    let meta_bytes = bincode::serialize(meta).context("encoding the snapshot meta")?;
    put(&mut w, SNAPSHOT_META, &meta_bytes, &[])?;
    let mut moved = Vec::new();
    let mut next = Some(JobId(0));
    while let Some(from) = next {
        let (jobs, more) = engine.bodies_from(from, JOBS_PER_SLICE);
        next = more;
        for (id, at) in jobs {
            let body = read_body(files, at).with_context(|| format!("reading job {id}'s body"))?;
            for change in engine.image_of(id, body) {
                let (kind, payload) = record::encode_payload(&change);
                let payload_at = put(&mut w, kind, &payload.head, &payload.body)?;
                count += 1;
                if let Some((start, body)) = record::body_in(&change) {
                    let new =
                        BodyRef::in_snapshot(number, payload_at + start as u64, body.len() as u32);
                    moved.push((id, at, new));
                }
            }
        }
    }
    let mut rest = engine.settings_in_force();
    rest.extend(engine.pauses_in_force());
    rest.push(Change::NextId {
        next: engine.next_job_id(),
    });
    for change in rest {
        let (kind, payload) = record::encode_payload(&change);
        put(&mut w, kind, &payload.head, &payload.body)?;
        count += 1;
    }
    put(&mut w, SNAPSHOT_END, &count.to_le_bytes(), &[])?;
    w.flush()?;
    drop(w);
    file.sync_all()?;
    Ok(moved)
}

/// Reads the body at `at`.
fn read_body(files: &SegmentFiles, at: BodyRef) -> anyhow::Result<Bytes> {
    if !at.is_placed() {
        bail!("the body is not in a file");
    }
    let file = files
        .get(at.segment)
        .with_context(|| format!("opening segment {}", at.segment))?;
    let mut buf = vec![0; at.len as usize];
    file.read_exact_at(&mut buf, at.file_offset())
        .with_context(|| format!("reading segment {} at {}", at.segment, at.file_offset()))?;
    Ok(Bytes::from(buf))
}

/// Checks a received snapshot file `number` and loads it into `engine`; the meta it holds
/// must be `expected`.
pub fn load_received(
    snapshots: &Snapshots,
    number: u64,
    expected: &Meta,
    engine: &mut Engine,
    now: Timestamp,
) -> anyhow::Result<()> {
    let part = part_path(snapshots.dir(), number);
    let meta = load(&part, number, engine, now)?;
    if meta != *expected {
        bail!(
            "the received snapshot holds {}, openraft announced {}",
            meta.snapshot_id,
            expected.snapshot_id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, ProcessInfo};
    use crate::protocol::TubeName;

    fn engine() -> Engine {
        Engine::new(EngineConfig::default(), ProcessInfo::fixed(), Timestamp(0))
    }

    fn meta(index: u64) -> Meta {
        Meta {
            last_log_id: Some(openraft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                index,
            )),
            last_membership: Default::default(),
            snapshot_id: format!("test-{index}"),
        }
    }

    /// Writes snapshot file `number` in `dir` by hand: a meta, puts of `bodies`, the end.
    fn hand_written(dir: &Path, number: u64, bodies: &[&str]) {
        let mut out = Vec::new();
        let m = bincode::serialize(&meta(7)).expect("meta");
        frame::encode_record(&mut out, SNAPSHOT_META, &m);
        for (i, body) in bodies.iter().enumerate() {
            let put = Change::Put {
                id: JobId(i as u64 + 1),
                tube: TubeName::new(b"t").expect("tube"),
                pri: 5,
                delay: 0,
                ttr: 60,
                created_at: Timestamp(1),
                ready_at: None,
                body: Bytes::copy_from_slice(body.as_bytes()),
            };
            let (kind, payload) = record::encode_payload(&put);
            frame::encode_record_parts(&mut out, kind, &payload.head, &payload.body);
        }
        frame::encode_record(&mut out, SNAPSHOT_END, &(bodies.len() as u64).to_le_bytes());
        std::fs::write(file_path(dir, number), out).expect("write snapshot");
    }

    fn bodies_of(engine: &Engine, files: &SegmentFiles) -> Vec<String> {
        let (jobs, _) = engine.bodies_from(JobId(0), 100);
        jobs.into_iter()
            .map(|(_, at)| {
                let bytes = read_body(files, at).expect("body");
                String::from_utf8(bytes.to_vec()).expect("utf-8")
            })
            .collect()
    }

    #[test]
    fn a_snapshot_loads_with_bodies_in_place_and_writes_out_the_same_state() {
        let dir = std::env::temp_dir().join(format!("larder-snapshot-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let bodies = ["one", "two two", "three three three"];
        hand_written(&dir, 0, &bodies);
        std::fs::write(part_path(&dir, 5), b"half a file").expect("part");
        let snapshots = Snapshots::open(dir.clone()).expect("open");
        assert!(!part_path(&dir, 5).exists(), "an unfinished file was left");
        let files = SegmentFiles::new(dir.join("wal"));
        files.set_snapshot_dir(dir.clone());

        let mut first = engine();
        let m = load(&file_path(&dir, 0), 0, &mut first, Timestamp(2)).expect("load");
        assert_eq!(m, meta(7));
        assert_eq!(bodies_of(&first, &files), bodies);
        assert_eq!(first.next_job_id(), 4);

        // Written out again (as a build does) and loaded: the same jobs and bodies, and the
        // places the bodies moved to hold those bodies.
        let (number, part) = snapshots.reserve();
        assert!(number > 5, "file numbers go on after the highest seen");
        let moved = write(&part, number, &meta(9), &first, &files).expect("write");
        snapshots.finish(number, meta(9)).expect("finish");
        assert_eq!(moved.len(), 3);
        for (id, _, to) in &moved {
            let bytes = read_body(&files, *to).expect("moved body");
            assert_eq!(bytes.as_ref(), bodies[(id.0 - 1) as usize].as_bytes());
        }
        let mut second = engine();
        load(&file_path(&dir, number), number, &mut second, Timestamp(2)).expect("reload");
        assert_eq!(bodies_of(&second, &files), bodies);
        assert_eq!(second.next_job_id(), 4);
        assert_eq!(snapshots.newest_meta(), Some(meta(9)));

        // A receiving that was abandoned leaves nothing behind.
        let (abandoned, part) = snapshots.reserve();
        std::fs::write(&part, b"a first chunk").expect("part");
        snapshots.discard(abandoned);
        assert!(!part.exists(), "an abandoned file was left");

        // The old file goes once nothing holds a body in it; the newest always stays.
        assert!(snapshots.remove_unused(|_, _| true).is_empty());
        assert_eq!(snapshots.remove_unused(|_, _| false), vec![0]);
        assert!(!file_path(&dir, 0).exists());
        assert!(file_path(&dir, number).exists());

        // A flipped byte or a cut file is refused, never loaded in part.
        let path = file_path(&dir, number);
        let good = std::fs::read(&path).expect("read");
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x40;
        std::fs::write(&path, &bad).expect("corrupt");
        let e = load(&path, number, &mut engine(), Timestamp(2)).expect_err("corrupt file loaded");
        assert!(format!("{e:#}").contains("checksum"), "{e:#}");
        std::fs::write(&path, &good[..good.len() - 3]).expect("cut");
        let e = load(&path, number, &mut engine(), Timestamp(2)).expect_err("cut file loaded");
        assert!(format!("{e:#}").contains("past the end"), "{e:#}");
        // A length damaged to claim gigabytes is refused before anything is allocated.
        let mut huge = good.clone();
        let last_frame = good.len() - (RECORD_HEADER_LEN + 8);
        huge[last_frame..last_frame + 4].copy_from_slice(&0xf000_0000u32.to_le_bytes());
        std::fs::write(&path, &huge).expect("damage a length");
        let e = load(&path, number, &mut engine(), Timestamp(2)).expect_err("damaged file loaded");
        assert!(format!("{e:#}").contains("past the end"), "{e:#}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
