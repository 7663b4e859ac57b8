//! The log's record vocabulary: how each [`Change`] is encoded as a record kind and payload
//! for the write-ahead log, and decoded again on replay. The log stores opaque bytes; the
//! meaning lives here: [`RecordKind`] names the kinds, `kinds.rs` holds each kind's
//! encoding and decoding, and `golden.txt` one record of every kind as written today,
//! replayed by a test.
//!
//! Payloads are little-endian, fixed-width fields first (`ts`: nanoseconds since the Unix
//! epoch, 0 for "none" where optional; `name`: a tube name, after a length byte where more
//! follows it):
//!
//! | code | kind | payload |
//! |---|---|---|
//! | 1 | put | id u64, pri u32, delay u32, ttr u32, created ts, ready-at ts, name (u8 length), body (the rest) |
//! | 2 | reserve | id u64 |
//! | 3 | delete | id u64 |
//! | 4 | release | id u64, pri u32, delay u32, ready-at ts |
//! | 5 | bury | id u64, pri u32 |
//! | 6 | kick | id u64 |
//! | 7 | timeout | id u64 |
//! | 8 | pause-tube | until ts, name (the rest) |
//! | 9 | image | id u64, pri u32, delay u32, ttr u32, created ts, ready-at ts, state u8 (0 ready, 1 delayed, 2 buried), reserves, timeouts, releases, buries, kicks (u32 each), name (u8 length), body (the rest) |
//! | 10 | next-id | next id u64 |
//! | 16 | config-tube | has-value u8, value u64, name (u8 length), setting name (the rest) |
//! | 17 | retry | id u64, ready-at ts |
//! | 18 | dead-letter | id u64, pri u32, at ts, reason u8 |
//! | 19 | abandon | id u64 |
//! | 20 | fail | id u64, message (UTF-8, the rest) |
//! | 21 | job-notes | id u64, attempts u32, flags u8 (1 last error, 2 buried, 4 burial time), reason u8, buried-at ts, last error (UTF-8, the rest) |
//!
//! A put's or image's body is last, so its place in the log is the payload's place plus
//! [`put_body_offset`] or [`image_body_offset`]: reserve and peek read it back from disk.
//! Being last, it is also kept apart when encoding ([`encode_payload`] returns a
//! [`Payload`]): the engine's lock is held while records are encoded, so only the bytes
//! before the body are written then, and the body, shared with the job, is copied into the
//! log by its writer thread.
//!
//! Changing an encoding means a new record kind (old kinds stay decodable, as the golden
//! records check), never a new meaning for an old kind.

#[cfg(test)]
mod golden;
mod kinds;
mod payload;

use bytes::Bytes;

use super::change::Change;
use super::time::Timestamp;
use crate::protocol::{JobId, TubeName};
pub use kinds::{encode, encode_payload};
pub use payload::Payload;
#[cfg(test)]
use {
    super::change::ImageState,
    super::job::{Burial, JobCounters},
    crate::protocol::{BuryReason, TubeSetting},
};

/// Record kinds, one per [`Change`] variant. The code is the kind byte in the log's record
/// frame; a code is never reused for another meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RecordKind {
    /// [`Change::Put`]
    Put = 1,
    /// [`Change::Reserve`]
    Reserve = 2,
    /// [`Change::Delete`]
    Delete = 3,
    /// [`Change::Release`]
    Release = 4,
    /// [`Change::Bury`]
    Bury = 5,
    /// [`Change::Kick`]
    Kick = 6,
    /// [`Change::Timeout`]
    Timeout = 7,
    /// [`Change::PauseTube`]
    PauseTube = 8,
    /// [`Change::Image`]
    Image = 9,
    /// [`Change::NextId`]
    NextId = 10,
    /// [`Change::ConfigTube`] (codes 16–23 belong to retries and tube settings)
    ConfigTube = 16,
    /// [`Change::Retry`]
    Retry = 17,
    /// [`Change::DeadLetter`]
    DeadLetter = 18,
    /// [`Change::Abandon`]
    Abandon = 19,
    /// [`Change::Fail`]
    Fail = 20,
    /// [`Change::JobNotes`]
    JobNotes = 21,
}

impl RecordKind {
    /// Every kind, in code order.
    pub const ALL: [RecordKind; 16] = [
        RecordKind::Put,
        RecordKind::Reserve,
        RecordKind::Delete,
        RecordKind::Release,
        RecordKind::Bury,
        RecordKind::Kick,
        RecordKind::Timeout,
        RecordKind::PauseTube,
        RecordKind::Image,
        RecordKind::NextId,
        RecordKind::ConfigTube,
        RecordKind::Retry,
        RecordKind::DeadLetter,
        RecordKind::Abandon,
        RecordKind::Fail,
        RecordKind::JobNotes,
    ];

    /// The kind byte in the log.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with code `code`, if any.
    pub fn from_code(code: u8) -> Option<RecordKind> {
        RecordKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The kind's name, as `larder wal dump` prints it.
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Put => "put",
            RecordKind::Reserve => "reserve",
            RecordKind::Delete => "delete",
            RecordKind::Release => "release",
            RecordKind::Bury => "bury",
            RecordKind::Kick => "kick",
            RecordKind::Timeout => "timeout",
            RecordKind::PauseTube => "pause-tube",
            RecordKind::Image => "image",
            RecordKind::NextId => "next-id",
            RecordKind::ConfigTube => "config-tube",
            RecordKind::Retry => "retry",
            RecordKind::DeadLetter => "dead-letter",
            RecordKind::Abandon => "abandon",
            RecordKind::Fail => "fail",
            RecordKind::JobNotes => "job-notes",
        }
    }
}

/// Codes 32–39 belong to cluster mode's raft records (`server::cluster::record`); they
/// never hold an engine change. Their names, in code order from 32.
pub const CLUSTER_KIND_NAMES: [&str; 5] = [
    "raft-entry",
    "raft-vote",
    "raft-committed",
    "raft-truncate",
    "raft-purge",
];

/// A record kind's name, for `larder wal dump` (`unknown(N)` for a code no kind has).
pub fn kind_name(code: u8) -> String {
    if let Some(name) = code
        .checked_sub(32)
        .and_then(|i| CLUSTER_KIND_NAMES.get(usize::from(i)))
    {
        return (*name).to_owned();
    }
    RecordKind::from_code(code).map_or_else(|| format!("unknown({code})"), |k| k.name().to_owned())
}

/// Fixed part of a put payload before the tube name: id, pri, delay, ttr, created_at,
/// ready_at, tube name length.
pub(super) const PUT_FIXED: usize = 8 + 4 + 4 + 4 + 8 + 8 + 1;

/// Where a put's body starts within its payload, for a tube name of `tube_len` bytes.
pub fn put_body_offset(tube_len: usize) -> usize {
    PUT_FIXED + tube_len
}

/// Fixed part of an image payload before the tube name: id, pri, delay, ttr, created_at,
/// ready_at, state, five counters, tube name length.
pub(super) const IMAGE_FIXED: usize = 8 + 4 + 4 + 4 + 8 + 8 + 1 + 5 * 4 + 1;

/// Where an image's body starts within its payload, for a tube name of `tube_len` bytes.
pub fn image_body_offset(tube_len: usize) -> usize {
    IMAGE_FIXED + tube_len
}

/// Where the body of a put or image change starts in its record's payload, and its
/// bytes; `None` for changes without a body.
pub fn body_in(change: &Change) -> Option<(usize, &Bytes)> {
    match change {
        Change::Put { tube, body, .. } => Some((put_body_offset(tube.as_str().len()), body)),
        Change::Image { tube, body, .. } => Some((image_body_offset(tube.as_str().len()), body)),
        _ => None,
    }
}

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The kind byte names no known record.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The payload is shorter than its kind requires, or longer where it must end.
    #[error("record kind {kind} has a malformed payload of {len} bytes")]
    Malformed {
        /// The record kind.
        kind: u8,
        /// The payload length.
        len: usize,
    },
    /// A tube name in the record breaks the naming rules.
    #[error("record kind {kind} names an invalid tube")]
    BadTubeName {
        /// The record kind.
        kind: u8,
    },
    /// A tube setting record names a setting this version does not know, or holds a value
    /// the setting does not accept.
    #[error("record kind {kind} holds an unknown tube setting or an invalid value")]
    BadSetting {
        /// The record kind.
        kind: u8,
    },
}

/// Reads little-endian fields off the front of a payload.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    kind: u8,
    len: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(kind: u8, buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            kind,
            len: buf.len(),
        }
    }

    pub(super) fn malformed(&self) -> RecordError {
        RecordError::Malformed {
            kind: self.kind,
            len: self.len,
        }
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| self.malformed())?,
        ))
    }

    pub(super) fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| self.malformed())?,
        ))
    }

    pub(super) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(super) fn done<T>(&self, value: T) -> Result<T, RecordError> {
        if self.buf.is_empty() {
            Ok(value)
        } else {
            Err(self.malformed())
        }
    }

    /// The fields put and image records start with: id, pri, delay, ttr, created_at.
    pub(super) fn head(&mut self) -> Result<(JobId, u32, u32, u32, Timestamp), RecordError> {
        Ok((
            JobId(self.u64()?),
            self.u32()?,
            self.u32()?,
            self.u32()?,
            Timestamp(self.u64()?),
        ))
    }

    /// What put and image records end with: the tube name (length-prefixed) and the
    /// body, which is the rest (the caller takes it by offset). Returns the tube and its
    /// name's length.
    pub(super) fn tail(&mut self) -> Result<(TubeName, usize), RecordError> {
        let name_len = usize::from(self.u8()?);
        let name = self.take(name_len)?;
        let tube = self.tube(name)?;
        self.rest();
        Ok((tube, name_len))
    }

    pub(super) fn tube(&self, name: &[u8]) -> Result<TubeName, RecordError> {
        TubeName::new(name).ok_or(RecordError::BadTubeName { kind: self.kind })
    }
}

pub(super) fn timestamp_opt(raw: u64) -> Option<Timestamp> {
    (raw != 0).then_some(Timestamp(raw))
}

/// Decodes a record. `payload` is shared so a put's body is not copied.
pub fn decode(kind: u8, payload: &Bytes) -> Result<Change, RecordError> {
    decode_with(kind, payload, |start| payload.slice(start..))
}

/// Decodes a record without its body: a put comes back with an empty body, plus where
/// the body starts in `payload` and its length, so replay can point the job at the log.
pub fn decode_metadata(
    kind: u8,
    payload: &[u8],
) -> Result<(Change, Option<(usize, u32)>), RecordError> {
    let mut body = None;
    let change = decode_with(kind, payload, |start| {
        let len = payload.len().saturating_sub(start);
        body = u32::try_from(len).ok().map(|len| (start, len));
        Bytes::new()
    })?;
    if matches!(change, Change::Put { .. } | Change::Image { .. }) && body.is_none() {
        return Err(RecordError::Malformed {
            kind,
            len: payload.len(),
        });
    }
    Ok((change, body))
}

/// Decodes a record; `body` turns the offset where a put's body starts into its bytes.
fn decode_with(
    code: u8,
    payload: &[u8],
    body: impl FnOnce(usize) -> Bytes,
) -> Result<Change, RecordError> {
    let kind = RecordKind::from_code(code).ok_or(RecordError::UnknownKind(code))?;
    let mut r = Reader::new(code, payload);
    let change = kinds::decode(kind, &mut r, body)?;
    r.done(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any change, with a body of up to 200 bytes where it has one.
    pub(super) fn change() -> impl Strategy<Value = Change> {
        let id = any::<u64>().prop_map(JobId);
        let tube =
            "[a-z][a-z0-9-]{0,199}".prop_map(|s| TubeName::new(s.as_bytes()).expect("valid"));
        let ts = (1..u64::MAX).prop_map(Timestamp);
        prop_oneof![
            (
                id.clone(),
                tube.clone(),
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                ts.clone(),
                prop::option::of(ts.clone()),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(id, tube, pri, delay, ttr, created_at, ready_at, body)| {
                    Change::Put {
                        id,
                        tube,
                        pri,
                        delay,
                        ttr,
                        created_at,
                        ready_at,
                        body: body.into(),
                    }
                }),
            id.clone().prop_map(|id| Change::Reserve { id }),
            id.clone().prop_map(|id| Change::Delete { id }),
            id.clone().prop_map(|id| Change::Kick { id }),
            id.clone().prop_map(|id| Change::Timeout { id }),
            (
                id.clone(),
                any::<u32>(),
                any::<u32>(),
                prop::option::of(ts.clone())
            )
                .prop_map(|(id, pri, delay, ready_at)| Change::Release {
                    id,
                    pri,
                    delay,
                    ready_at
                }),
            (id.clone(), any::<u32>()).prop_map(|(id, pri)| Change::Bury { id, pri }),
            (tube.clone(), ts.clone()).prop_map(|(tube, until)| Change::PauseTube { tube, until }),
            any::<u64>().prop_map(|next| Change::NextId { next }),
            (
                (
                    id.clone(),
                    tube.clone(),
                    any::<u32>(),
                    any::<u32>(),
                    any::<u32>(),
                    ts.clone()
                ),
                prop_oneof![
                    Just(ImageState::Ready),
                    ts.clone().prop_map(ImageState::Delayed),
                    Just(ImageState::Buried)
                ],
                any::<[u32; 5]>(),
                prop::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(
                    |((id, tube, pri, delay, ttr, created_at), state, c, body)| {
                        Change::Image {
                            id,
                            tube,
                            pri,
                            delay,
                            ttr,
                            created_at,
                            state,
                            counters: JobCounters {
                                reserves: c[0],
                                timeouts: c[1],
                                releases: c[2],
                                buries: c[3],
                                kicks: c[4],
                            },
                            body: body.into(),
                        }
                    }
                ),
            id.clone().prop_map(|id| Change::Abandon { id }),
            (id.clone(), prop::option::of(ts.clone()))
                .prop_map(|(id, ready_at)| Change::Retry { id, ready_at }),
            (
                id.clone(),
                any::<u32>(),
                prop::sample::select(BuryReason::ALL.to_vec()),
                ts.clone()
            )
                .prop_map(|(id, pri, reason, at)| Change::DeadLetter {
                    id,
                    pri,
                    reason,
                    at
                }),
            (id.clone(), ".{0,80}").prop_map(|(id, message)| Change::Fail {
                id,
                message: message.into()
            }),
            (
                id,
                any::<u32>(),
                prop::option::of(".{0,40}"),
                prop::option::of((
                    prop::sample::select(BuryReason::ALL.to_vec()),
                    prop::option::of(ts)
                ))
            )
                .prop_map(|(id, attempts, last_error, burial)| Change::JobNotes {
                    id,
                    attempts,
                    last_error: last_error.map(Into::into),
                    burial: burial.map(|(reason, at)| Burial { reason, at }),
                }),
            (
                tube,
                prop::sample::select(TubeSetting::ALL.to_vec()),
                prop::option::of(any::<u64>())
            )
                .prop_map(|(tube, setting, raw)| Change::ConfigTube {
                    tube,
                    setting,
                    value: raw.map(|v| valid_value(setting, v)),
                }),
        ]
    }

    /// A value `setting` accepts, derived from `raw`.
    fn valid_value(setting: TubeSetting, raw: u64) -> u64 {
        match setting.unit() {
            crate::protocol::Unit::Count { max } => max.checked_add(1).map_or(raw, |m| raw % m),
            crate::protocol::Unit::Millis => raw % (crate::protocol::MAX_MILLIS + 1),
            crate::protocol::Unit::Thousandths { min, max } => min + raw % (max - min + 1),
        }
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(c in change()) {
            let (kind, payload) = encode(&c);
            prop_assert_eq!(decode(kind, &Bytes::from(payload)), Ok(c));
        }

        #[test]
        fn truncated_or_extended_payloads_are_errors_not_panics(c in change(), cut in 0usize..40, extra in 1usize..3) {
            let (kind, payload) = encode(&c);
            let short = &payload[..payload.len().saturating_sub(cut.max(1)).min(payload.len())];
            let short_ok = matches!(c, Change::Put { .. } | Change::Image { .. } | Change::PauseTube { .. } | Change::Fail { .. } | Change::JobNotes { .. });
            let decoded = decode(kind, &Bytes::copy_from_slice(short));
            if !short_ok {
                prop_assert!(decoded.is_err());
            }
            let mut long = payload.clone();
            long.extend(std::iter::repeat_n(7u8, extra));
            let decoded = decode(kind, &Bytes::from(long));
            if !short_ok {
                prop_assert!(decoded.is_err());
            }
        }
    }

    #[test]
    fn a_put_body_sits_at_its_documented_offset() {
        let c = Change::Put {
            id: JobId(9),
            tube: TubeName::new(b"mail").expect("valid"),
            pri: 1,
            delay: 0,
            ttr: 5,
            created_at: Timestamp(1),
            ready_at: None,
            body: Bytes::from_static(b"hello"),
        };
        let (_, payload) = encode(&c);
        assert_eq!(&payload[put_body_offset(4)..], b"hello");
        let (change, body) = decode_metadata(RecordKind::Put.code(), &payload).expect("decodes");
        assert_eq!(body, Some((put_body_offset(4), 5)));
        assert!(matches!(change, Change::Put { body, .. } if body.is_empty()));
    }

    #[test]
    fn an_image_body_sits_at_its_documented_offset() {
        let c = Change::Image {
            id: JobId(9),
            tube: TubeName::new(b"mail").expect("valid"),
            pri: 1,
            delay: 0,
            ttr: 5,
            created_at: Timestamp(1),
            state: ImageState::Buried,
            counters: JobCounters::default(),
            body: Bytes::from_static(b"hello"),
        };
        let (kind, payload) = encode(&c);
        assert_eq!(&payload[image_body_offset(4)..], b"hello");
        assert_eq!(body_in(&c).map(|(at, _)| at), Some(image_body_offset(4)));
        let (_, body) = decode_metadata(kind, &payload).expect("decodes");
        assert_eq!(body, Some((image_body_offset(4), 5)));
    }

    #[test]
    fn unknown_kinds_are_rejected() {
        assert_eq!(decode(0, &Bytes::new()), Err(RecordError::UnknownKind(0)));
        assert_eq!(
            decode(200, &Bytes::new()),
            Err(RecordError::UnknownKind(200))
        );
    }
}
