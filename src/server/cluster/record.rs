//! The raft records in larder's write-ahead log (codes 32–36), their encoders and decoders.
//!
//! Integers are little-endian. A log id is `term u64, leader node u64, index u64`.
//!
//! | code | kind | payload |
//! |---|---|---|
//! | 32 | raft-entry | log id, type u8 (0 blank, 1 normal, 2 membership); normal: proposing term u64, opening u64, leader time u64, last proposal seq u64, the engine records (the rest); membership: the membership as JSON (the rest) |
//! | 33 | raft-vote | term u64, node u64, committed u8 |
//! | 34 | raft-committed | present u8, log id (zeros when absent) |
//! | 35 | raft-truncate | index u64: that entry and every later one are gone |
//! | 36 | raft-purge | log id: that entry and every earlier one are gone |
//!
//! A normal entry's engine records keep the engine's own kinds and encodings
//! (`engine::record`), so a put's body lies in the log at the entry's payload position plus
//! [`NORMAL_HEAD`] plus the record's offset in [`Proposal::records`].

use bytes::{BufMut, Bytes};
use openraft::{CommittedLeaderId, EntryPayload, Membership};

use super::{Entry, LogId, NodeId, Proposal, Vote};
use crate::engine::record::Payload;

/// Code of a raft entry record.
pub const RAFT_ENTRY: u8 = 32;
/// Code of a vote record.
pub const RAFT_VOTE: u8 = 33;
/// Code of a committed-log-id record.
pub const RAFT_COMMITTED: u8 = 34;
/// Code of a truncate record.
pub const RAFT_TRUNCATE: u8 = 35;
/// Code of a purge record.
pub const RAFT_PURGE: u8 = 36;

/// Bytes of a raft entry record before a normal entry's engine records: log id, type,
/// proposing term, opening, leader time, last seq.
pub const NORMAL_HEAD: usize = 24 + 1 + 8 + 8 + 8 + 8;

const BLANK: u8 = 0;
const NORMAL: u8 = 1;
const MEMBERSHIP: u8 = 2;

/// Appends one engine record to a proposal's records: `[kind u8][len u32 LE][payload]`.
pub fn push_inner(records: &mut Vec<u8>, kind: u8, payload: &Payload) {
    records.push(kind);
    records.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    records.extend_from_slice(&payload.head);
    records.extend_from_slice(&payload.body);
}

/// The engine records of a proposal, in order: (offset of the payload in `records`, kind,
/// payload), or an error naming the byte where a record is cut short.
pub fn inner_records(records: &[u8]) -> impl Iterator<Item = Result<(usize, u8, &[u8]), String>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        if at >= records.len() {
            return None;
        }
        let Some(head) = records.get(at..at + 5) else {
            let cut = at;
            at = records.len();
            return Some(Err(format!("a record header is cut at byte {cut}")));
        };
        let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(payload) = records.get(at + 5..at + 5 + len) else {
            let cut = at;
            at = records.len();
            return Some(Err(format!("a record is cut at byte {cut}")));
        };
        let item = (at + 5, head[0], payload);
        at += 5 + len;
        Some(Ok(item))
    })
}

/// Whether `code` is one of the raft record kinds.
pub fn is_raft_kind(code: u8) -> bool {
    (RAFT_ENTRY..=RAFT_PURGE).contains(&code)
}

/// A raft record that does not decode.
#[derive(Debug, thiserror::Error)]
pub enum RaftRecordError {
    /// The payload ended before a field.
    #[error("raft record kind {kind} is {len} bytes, too short for its fields")]
    Short {
        /// The record's kind.
        kind: u8,
        /// Its payload length.
        len: usize,
    },
    /// A field has a value no encoder writes.
    #[error("raft record kind {kind}: {what}")]
    Invalid {
        /// The record's kind.
        kind: u8,
        /// What is wrong.
        what: String,
    },
}

/// A decoded raft record.
#[derive(Debug, Clone, PartialEq)]
pub enum RaftRecord {
    /// An entry, as appended.
    Entry(Entry),
    /// The vote, as saved.
    Vote(Vote),
    /// The committed log id, as saved.
    Committed(Option<LogId>),
    /// Every entry from this index on was removed.
    Truncate(u64),
    /// Every entry up to this log id was removed.
    Purge(LogId),
}

fn put_log_id(out: &mut Vec<u8>, id: &LogId) {
    out.put_u64_le(id.leader_id.term);
    out.put_u64_le(id.leader_id.node_id);
    out.put_u64_le(id.index);
}

/// Encodes an entry as a raft-entry payload in one piece.
pub fn encode_entry(entry: &Entry) -> Vec<u8> {
    entry_payload(entry).to_vec()
}

/// Encodes an entry as a raft-entry payload whose last part is a normal entry's records,
/// shared with the entry rather than copied (the journal's writer copies them into the log).
pub fn entry_payload(entry: &Entry) -> Payload {
    let mut out = Vec::with_capacity(NORMAL_HEAD);
    put_log_id(&mut out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.put_u8(BLANK),
        EntryPayload::Normal(p) => {
            out.put_u8(NORMAL);
            out.put_u64_le(p.term);
            out.put_u64_le(p.opening);
            out.put_u64_le(p.leader_time);
            out.put_u64_le(p.last_seq);
            return Payload {
                head: out,
                body: p.records.clone(),
            };
        }
        EntryPayload::Membership(m) => {
            out.put_u8(MEMBERSHIP);
            // A membership holds a few node ids and addresses: JSON, written rarely, keeps
            // it readable in `wal dump` and free of a second hand-written codec.
            match serde_json::to_vec(m) {
                Ok(json) => out.put_slice(&json),
                // Serializing sets of integers and strings cannot fail; an empty body would
                // be refused on decode rather than read as some other membership.
                Err(e) => tracing::error!(error = %e, "could not encode a membership"),
            }
        }
    }
    out.into()
}

/// Encodes a vote record's payload.
pub fn encode_vote(vote: &Vote) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.put_u64_le(vote.leader_id.term);
    out.put_u64_le(vote.leader_id.node_id);
    out.put_u8(u8::from(vote.committed));
    out
}

/// Encodes a committed record's payload.
pub fn encode_committed(committed: Option<&LogId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(25);
    match committed {
        Some(id) => {
            out.put_u8(1);
            put_log_id(&mut out, id);
        }
        None => {
            out.put_u8(0);
            out.put_bytes(0, 24);
        }
    }
    out
}

/// Encodes a truncate record's payload: entries from `index` on are gone.
pub fn encode_truncate(index: u64) -> Vec<u8> {
    index.to_le_bytes().to_vec()
}

/// Encodes a purge record's payload: entries up to `id` are gone.
pub fn encode_purge(id: &LogId) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_log_id(&mut out, id);
    out
}

/// Reads fixed-width fields off a payload.
struct Fields<'a> {
    kind: u8,
    len: usize,
    buf: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(kind: u8, buf: &'a [u8]) -> Fields<'a> {
        Fields {
            kind,
            len: buf.len(),
            buf,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], RaftRecordError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(RaftRecordError::Short {
                kind: self.kind,
                len: self.len,
            })?;
        self.buf = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, RaftRecordError> {
        Ok(self.take::<1>()?[0])
    }

    fn u64(&mut self) -> Result<u64, RaftRecordError> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    fn log_id(&mut self) -> Result<LogId, RaftRecordError> {
        let term = self.u64()?;
        let node: NodeId = self.u64()?;
        let index = self.u64()?;
        Ok(LogId::new(CommittedLeaderId::new(term, node), index))
    }

    fn invalid(&self, what: impl Into<String>) -> RaftRecordError {
        RaftRecordError::Invalid {
            kind: self.kind,
            what: what.into(),
        }
    }

    fn end(self) -> Result<(), RaftRecordError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(format!("{} bytes after its last field", self.buf.len())))
        }
    }
}

/// Decodes a raft record of kind `kind`. A normal entry's records are copied out of
/// `payload`.
pub fn decode(kind: u8, payload: &[u8]) -> Result<RaftRecord, RaftRecordError> {
    let mut f = Fields::new(kind, payload);
    let record = match kind {
        RAFT_ENTRY => {
            let log_id = f.log_id()?;
            let payload = match f.u8()? {
                BLANK => EntryPayload::Blank,
                NORMAL => {
                    let term = f.u64()?;
                    let opening = f.u64()?;
                    let leader_time = f.u64()?;
                    let last_seq = f.u64()?;
                    let records = Bytes::copy_from_slice(std::mem::take(&mut f.buf));
                    EntryPayload::Normal(Proposal {
                        term,
                        opening,
                        leader_time,
                        last_seq,
                        records,
                    })
                }
                MEMBERSHIP => {
                    let json = std::mem::take(&mut f.buf);
                    let m: Membership<NodeId, openraft::BasicNode> =
                        serde_json::from_slice(json)
                            .map_err(|e| f.invalid(format!("membership does not decode: {e}")))?;
                    EntryPayload::Membership(m)
                }
                other => return Err(f.invalid(format!("entry type {other}"))),
            };
            RaftRecord::Entry(Entry { log_id, payload })
        }
        RAFT_VOTE => {
            let term = f.u64()?;
            let node = f.u64()?;
            let committed = match f.u8()? {
                0 => false,
                1 => true,
                other => return Err(f.invalid(format!("committed flag {other}"))),
            };
            let mut vote = Vote::new(term, node);
            vote.committed = committed;
            RaftRecord::Vote(vote)
        }
        RAFT_COMMITTED => {
            let present = f.u8()?;
            let id = f.log_id()?;
            match present {
                0 => RaftRecord::Committed(None),
                1 => RaftRecord::Committed(Some(id)),
                other => return Err(f.invalid(format!("presence flag {other}"))),
            }
        }
        RAFT_TRUNCATE => RaftRecord::Truncate(f.u64()?),
        RAFT_PURGE => RaftRecord::Purge(f.log_id()?),
        other => return Err(f.invalid(format!("not a raft record kind ({other})"))),
    };
    f.end()?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::BasicNode;
    use proptest::prelude::*;

    use super::*;

    fn log_id(term: u64, node: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    fn membership() -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<u64, BasicNode> = [
            (1, BasicNode::new("127.0.0.1:11310")),
            (2, BasicNode::new("127.0.0.1:11311")),
            (3, BasicNode::new("127.0.0.1:11312")),
        ]
        .into();
        Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
    }

    fn round_trip(kind: u8, payload: &[u8]) -> RaftRecord {
        decode(kind, payload).expect("decodes")
    }

    #[test]
    fn every_kind_decodes_to_what_was_encoded() {
        let blank = Entry {
            log_id: log_id(3, 2, 17),
            payload: EntryPayload::Blank,
        };
        assert_eq!(
            round_trip(RAFT_ENTRY, &encode_entry(&blank)),
            RaftRecord::Entry(blank)
        );
        let normal = Entry {
            log_id: log_id(4, 1, 18),
            payload: EntryPayload::Normal(Proposal {
                term: 4,
                opening: 2,
                leader_time: 1_700_000_000_000_000_000,
                last_seq: 99,
                records: Bytes::from_static(b"\x02\x08\x00\x00\x00abcdefgh"),
            }),
        };
        let encoded = encode_entry(&normal);
        assert_eq!(&encoded[NORMAL_HEAD..], b"\x02\x08\x00\x00\x00abcdefgh");
        assert_eq!(round_trip(RAFT_ENTRY, &encoded), RaftRecord::Entry(normal));
        let member = Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(membership()),
        };
        assert_eq!(
            round_trip(RAFT_ENTRY, &encode_entry(&member)),
            RaftRecord::Entry(member)
        );
        let vote = Vote::new_committed(7, 3);
        assert_eq!(
            round_trip(RAFT_VOTE, &encode_vote(&vote)),
            RaftRecord::Vote(vote)
        );
        let vote = Vote::new(8, 2);
        assert_eq!(
            round_trip(RAFT_VOTE, &encode_vote(&vote)),
            RaftRecord::Vote(vote)
        );
        let id = log_id(5, 1, 40);
        assert_eq!(
            round_trip(RAFT_COMMITTED, &encode_committed(Some(&id))),
            RaftRecord::Committed(Some(id))
        );
        assert_eq!(
            round_trip(RAFT_COMMITTED, &encode_committed(None)),
            RaftRecord::Committed(None)
        );
        assert_eq!(
            round_trip(RAFT_TRUNCATE, &encode_truncate(12)),
            RaftRecord::Truncate(12)
        );
        assert_eq!(
            round_trip(RAFT_PURGE, &encode_purge(&id)),
            RaftRecord::Purge(id)
        );
    }

    #[test]
    fn bad_payloads_are_refused_with_the_kind_named() {
        let vote = encode_vote(&Vote::new(1, 1));
        let err = decode(RAFT_VOTE, &vote[..10]).expect_err("short");
        assert_eq!(
            err.to_string(),
            "raft record kind 33 is 10 bytes, too short for its fields"
        );
        let mut long = vote.clone();
        long.push(0);
        let err = decode(RAFT_VOTE, &long).expect_err("long");
        assert_eq!(
            err.to_string(),
            "raft record kind 33: 1 bytes after its last field"
        );
        let mut bad_flag = vote;
        bad_flag[16] = 2;
        let err = decode(RAFT_VOTE, &bad_flag).expect_err("flag");
        assert_eq!(err.to_string(), "raft record kind 33: committed flag 2");
        let mut entry = encode_entry(&Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Blank,
        });
        entry[24] = 9;
        let err = decode(RAFT_ENTRY, &entry).expect_err("type");
        assert_eq!(err.to_string(), "raft record kind 32: entry type 9");
        let mut member = encode_entry(&Entry {
            log_id: log_id(1, 1, 1),
            payload: EntryPayload::Membership(membership()),
        });
        member.truncate(member.len() - 3);
        let err = decode(RAFT_ENTRY, &member).expect_err("json");
        assert!(
            err.to_string()
                .starts_with("raft record kind 32: membership does not decode"),
            "{err}"
        );
        assert!(decode(RAFT_ENTRY, &[]).is_err());
        assert!(decode(3, &[0; 8]).is_err());
    }

    #[test]
    fn inner_records_read_back_what_was_pushed_and_name_a_cut() {
        let mut records = Vec::new();
        push_inner(&mut records, 3, &vec![7; 8].into());
        push_inner(
            &mut records,
            1,
            &Payload {
                head: vec![1, 2],
                body: Bytes::from_static(b"xyz"),
            },
        );
        let got: Vec<(usize, u8, Vec<u8>)> = inner_records(&records)
            .map(|r| r.map(|(at, k, p)| (at, k, p.to_vec())).expect("whole"))
            .collect();
        assert_eq!(
            got,
            vec![(5, 3, vec![7; 8]), (18, 1, b"\x01\x02xyz".to_vec())]
        );
        let cut: Vec<_> = inner_records(&records[..records.len() - 1]).collect();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut[1], Err("a record is cut at byte 13".to_owned()));
        let cut: Vec<_> = inner_records(&records[..15]).collect();
        assert_eq!(cut[1], Err("a record header is cut at byte 13".to_owned()));
    }

    #[test]
    fn the_names_wal_dump_prints() {
        let names: Vec<String> = (RAFT_ENTRY..=RAFT_PURGE)
            .map(crate::engine::record::kind_name)
            .collect();
        assert_eq!(
            names,
            [
                "raft-entry",
                "raft-vote",
                "raft-committed",
                "raft-truncate",
                "raft-purge"
            ]
        );
        assert!(is_raft_kind(RAFT_ENTRY) && is_raft_kind(RAFT_PURGE));
        assert!(!is_raft_kind(21) && !is_raft_kind(37));
    }

    proptest! {
        /// Arbitrary bytes under any raft kind decode or are refused; they never panic,
        /// and what decodes encodes back to the same bytes.
        #[test]
        fn arbitrary_payloads_decode_or_are_refused(
            kind in RAFT_ENTRY..=RAFT_PURGE,
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok(record) = decode(kind, &bytes) {
                let again = match &record {
                    RaftRecord::Entry(e) => encode_entry(e),
                    RaftRecord::Vote(v) => encode_vote(v),
                    RaftRecord::Committed(c) => encode_committed(c.as_ref()),
                    RaftRecord::Truncate(i) => encode_truncate(*i),
                    RaftRecord::Purge(id) => encode_purge(id),
                };
                // A committed record that says "absent" may carry any id bytes; JSON may
                // be re-spelled. Everything else is byte-exact.
                let exact = !matches!(record, RaftRecord::Committed(None))
                    && !matches!(&record, RaftRecord::Entry(e) if matches!(e.payload, EntryPayload::Membership(_)));
                if exact {
                    prop_assert_eq!(again, bytes);
                } else {
                    prop_assert_eq!(decode(kind, &again).expect("re-decodes"), record);
                }
            }
        }
    }
}
