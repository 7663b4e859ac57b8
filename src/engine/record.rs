//! The log's record vocabulary: how each [`Change`] is encoded as a record kind and payload
//! for the write-ahead log, and decoded again on replay. The log stores opaque bytes; the
//! meaning lives here.
//!
//! Every payload is little-endian with fixed-width fields first. A `Put` keeps its body last,
//! so the body's position in the log is the payload's position plus
//! [`put_body_offset`]: reserve and peek can read it back from disk.
//!
//! Changing an encoding means a new record kind (old kinds stay decodable), never a new
//! meaning for an old kind.

use bytes::{BufMut, Bytes};

use super::change::{Change, ImageState};
use super::job::{Burial, JobCounters};
use super::time::Timestamp;
use crate::protocol::{BuryReason, JobId, TubeName, TubeSetting};

/// Record kinds, one per [`Change`] variant.
pub mod kind {
    /// [`super::Change::Put`]
    pub const PUT: u8 = 1;
    /// [`super::Change::Reserve`]
    pub const RESERVE: u8 = 2;
    /// [`super::Change::Delete`]
    pub const DELETE: u8 = 3;
    /// [`super::Change::Release`]
    pub const RELEASE: u8 = 4;
    /// [`super::Change::Bury`]
    pub const BURY: u8 = 5;
    /// [`super::Change::Kick`]
    pub const KICK: u8 = 6;
    /// [`super::Change::Timeout`]
    pub const TIMEOUT: u8 = 7;
    /// [`super::Change::PauseTube`]
    pub const PAUSE_TUBE: u8 = 8;
    /// [`super::Change::Image`]
    pub const IMAGE: u8 = 9;
    /// [`super::Change::NextId`]
    pub const NEXT_ID: u8 = 10;
    /// [`super::Change::ConfigTube`] (kinds 16–23 belong to retries and tube settings)
    pub const CONFIG_TUBE: u8 = 16;
    /// [`super::Change::Retry`]
    pub const RETRY: u8 = 17;
    /// [`super::Change::DeadLetter`]
    pub const DEAD_LETTER: u8 = 18;
    /// [`super::Change::Abandon`]
    pub const ABANDON: u8 = 19;
    /// [`super::Change::Fail`]
    pub const FAIL: u8 = 20;
    /// [`super::Change::JobNotes`]
    pub const JOB_NOTES: u8 = 21;
}

/// A record kind's name, for `larder wal dump`.
pub fn kind_name(k: u8) -> String {
    match k {
        kind::PUT => "put".into(),
        kind::RESERVE => "reserve".into(),
        kind::DELETE => "delete".into(),
        kind::RELEASE => "release".into(),
        kind::BURY => "bury".into(),
        kind::KICK => "kick".into(),
        kind::TIMEOUT => "timeout".into(),
        kind::PAUSE_TUBE => "pause-tube".into(),
        kind::IMAGE => "image".into(),
        kind::NEXT_ID => "next-id".into(),
        kind::CONFIG_TUBE => "config-tube".into(),
        kind::RETRY => "retry".into(),
        kind::DEAD_LETTER => "dead-letter".into(),
        kind::ABANDON => "abandon".into(),
        kind::FAIL => "fail".into(),
        kind::JOB_NOTES => "job-notes".into(),
        other => format!("unknown({other})"),
    }
}

/// Fixed part of a put payload before the tube name: id, pri, delay, ttr, created_at,
/// ready_at, tube name length.
const PUT_FIXED: usize = 8 + 4 + 4 + 4 + 8 + 8 + 1;

/// Where a put's body starts within its payload, for a tube name of `tube_len` bytes.
pub fn put_body_offset(tube_len: usize) -> usize {
    PUT_FIXED + tube_len
}

/// Fixed part of an image payload before the tube name: id, pri, delay, ttr, created_at,
/// ready_at, state, five counters, tube name length.
const IMAGE_FIXED: usize = 8 + 4 + 4 + 4 + 8 + 8 + 1 + 5 * 4 + 1;

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

/// Writes the fields put and image records start with (see [`Reader::head`]).
fn put_head(p: &mut Vec<u8>, id: JobId, pri: u32, delay: u32, ttr: u32, created: Timestamp) {
    p.put_u64_le(id.0);
    p.put_u32_le(pri);
    p.put_u32_le(delay);
    p.put_u32_le(ttr);
    p.put_u64_le(created.0);
}

/// Writes what put and image records end with: the tube name, then the body.
fn put_tail(p: &mut Vec<u8>, tube: &TubeName, body: &[u8]) {
    let name = tube.as_str().as_bytes();
    // Tube names are at most 200 bytes.
    p.put_u8(name.len() as u8);
    p.put_slice(name);
    p.put_slice(body);
}

/// Encodes a change as (record kind, payload).
pub fn encode(change: &Change) -> (u8, Vec<u8>) {
    let mut p = Vec::new();
    let kind = match change {
        Change::Put {
            id,
            tube,
            pri,
            delay,
            ttr,
            created_at,
            ready_at,
            body,
        } => {
            p.reserve(PUT_FIXED + tube.as_str().len() + body.len());
            put_head(&mut p, *id, *pri, *delay, *ttr, *created_at);
            p.put_u64_le(ready_at.map_or(0, |t| t.0));
            put_tail(&mut p, tube, body);
            kind::PUT
        }
        Change::Image {
            id,
            tube,
            pri,
            delay,
            ttr,
            created_at,
            state,
            counters,
            body,
        } => {
            p.reserve(IMAGE_FIXED + tube.as_str().len() + body.len());
            put_head(&mut p, *id, *pri, *delay, *ttr, *created_at);
            let (code, ready_at) = match state {
                ImageState::Ready => (0, 0),
                ImageState::Delayed(t) => (1, t.0),
                ImageState::Buried => (2, 0),
            };
            p.put_u64_le(ready_at);
            p.put_u8(code);
            for c in [
                counters.reserves,
                counters.timeouts,
                counters.releases,
                counters.buries,
                counters.kicks,
            ] {
                p.put_u32_le(c);
            }
            put_tail(&mut p, tube, body);
            kind::IMAGE
        }
        Change::Reserve { id } => id_only(&mut p, *id, kind::RESERVE),
        Change::Delete { id } => id_only(&mut p, *id, kind::DELETE),
        Change::Kick { id } => id_only(&mut p, *id, kind::KICK),
        Change::Timeout { id } => id_only(&mut p, *id, kind::TIMEOUT),
        Change::Release {
            id,
            pri,
            delay,
            ready_at,
        } => {
            p.put_u64_le(id.0);
            p.put_u32_le(*pri);
            p.put_u32_le(*delay);
            p.put_u64_le(ready_at.map_or(0, |t| t.0));
            kind::RELEASE
        }
        Change::Bury { id, pri } => {
            p.put_u64_le(id.0);
            p.put_u32_le(*pri);
            kind::BURY
        }
        Change::NextId { next } => {
            p.put_u64_le(*next);
            kind::NEXT_ID
        }
        Change::PauseTube { tube, until } => {
            p.put_u64_le(until.0);
            p.put_slice(tube.as_str().as_bytes());
            kind::PAUSE_TUBE
        }
        // The setting is stored by name, so records stay meaningful as settings are added.
        Change::ConfigTube {
            tube,
            setting,
            value,
        } => {
            p.put_u8(u8::from(value.is_some()));
            p.put_u64_le(value.unwrap_or(0));
            put_short_str(&mut p, tube.as_str());
            p.put_slice(setting.name().as_bytes());
            kind::CONFIG_TUBE
        }
        Change::Abandon { id } => id_only(&mut p, *id, kind::ABANDON),
        Change::Retry { id, ready_at } => {
            p.put_u64_le(id.0);
            p.put_u64_le(ready_at.map_or(0, |t| t.0));
            kind::RETRY
        }
        Change::DeadLetter {
            id,
            pri,
            reason,
            at,
        } => {
            p.put_u64_le(id.0);
            p.put_u32_le(*pri);
            p.put_u64_le(at.0);
            p.put_u8(reason.index() as u8);
            kind::DEAD_LETTER
        }
        Change::Fail { id, message } => {
            p.put_u64_le(id.0);
            p.put_slice(message.as_bytes());
            kind::FAIL
        }
        // Flags: 1 = a last error follows the fixed part, 2 = buried, 4 = burial time known.
        Change::JobNotes {
            id,
            attempts,
            last_error,
            burial,
        } => {
            let flags = u8::from(last_error.is_some())
                | if burial.is_some() { 2 } else { 0 }
                | if burial.is_some_and(|b| b.at.is_some()) {
                    4
                } else {
                    0
                };
            p.put_u64_le(id.0);
            p.put_u32_le(*attempts);
            p.put_u8(flags);
            p.put_u8(burial.map_or(0, |b| b.reason.index() as u8));
            p.put_u64_le(burial.and_then(|b| b.at).map_or(0, |t| t.0));
            p.put_slice(last_error.as_deref().unwrap_or("").as_bytes());
            kind::JOB_NOTES
        }
    };
    (kind, p)
}

/// A string of at most 255 bytes, after its length byte.
fn put_short_str(p: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    p.put_u8(s.len() as u8);
    p.put_slice(s);
}

fn id_only(p: &mut Vec<u8>, id: JobId, kind: u8) -> u8 {
    p.put_u64_le(id.0);
    kind
}

/// Reads little-endian fields off the front of a payload.
struct Reader<'a> {
    buf: &'a [u8],
    kind: u8,
    len: usize,
}

impl<'a> Reader<'a> {
    fn new(kind: u8, buf: &'a [u8]) -> Reader<'a> {
        Reader {
            buf,
            kind,
            len: buf.len(),
        }
    }

    fn malformed(&self) -> RecordError {
        RecordError::Malformed {
            kind: self.kind,
            len: self.len,
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.buf.len() < n {
            return Err(self.malformed());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| self.malformed())?,
        ))
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(
            b.try_into().map_err(|_| self.malformed())?,
        ))
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn done<T>(&self, value: T) -> Result<T, RecordError> {
        if self.buf.is_empty() {
            Ok(value)
        } else {
            Err(self.malformed())
        }
    }

    /// The fields put and image records start with: id, pri, delay, ttr, created_at.
    fn head(&mut self) -> Result<(JobId, u32, u32, u32, Timestamp), RecordError> {
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
    fn tail(&mut self) -> Result<(TubeName, usize), RecordError> {
        let name_len = usize::from(self.u8()?);
        let name = self.take(name_len)?;
        let tube = self.tube(name)?;
        self.rest();
        Ok((tube, name_len))
    }

    fn tube(&self, name: &[u8]) -> Result<TubeName, RecordError> {
        TubeName::new(name).ok_or(RecordError::BadTubeName { kind: self.kind })
    }
}

fn timestamp_opt(raw: u64) -> Option<Timestamp> {
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
    kind: u8,
    payload: &[u8],
    body: impl FnOnce(usize) -> Bytes,
) -> Result<Change, RecordError> {
    let mut r = Reader::new(kind, payload);
    let change = match kind {
        kind::PUT => {
            let (id, pri, delay, ttr, created_at) = r.head()?;
            let ready_at = timestamp_opt(r.u64()?);
            let (tube, name_len) = r.tail()?;
            let body = body(put_body_offset(name_len));
            Change::Put {
                id,
                tube,
                pri,
                delay,
                ttr,
                created_at,
                ready_at,
                body,
            }
        }
        kind::IMAGE => {
            let (id, pri, delay, ttr, created_at) = r.head()?;
            let ready_at = r.u64()?;
            let state = match (r.u8()?, timestamp_opt(ready_at)) {
                (0, None) => ImageState::Ready,
                (1, Some(t)) => ImageState::Delayed(t),
                (2, None) => ImageState::Buried,
                _ => return Err(r.malformed()),
            };
            let counters = JobCounters {
                reserves: r.u32()?,
                timeouts: r.u32()?,
                releases: r.u32()?,
                buries: r.u32()?,
                kicks: r.u32()?,
            };
            let (tube, name_len) = r.tail()?;
            let body = body(image_body_offset(name_len));
            Change::Image {
                id,
                tube,
                pri,
                delay,
                ttr,
                created_at,
                state,
                counters,
                body,
            }
        }
        kind::RESERVE => Change::Reserve {
            id: JobId(r.u64()?),
        },
        kind::DELETE => Change::Delete {
            id: JobId(r.u64()?),
        },
        kind::KICK => Change::Kick {
            id: JobId(r.u64()?),
        },
        kind::TIMEOUT => Change::Timeout {
            id: JobId(r.u64()?),
        },
        kind::RELEASE => Change::Release {
            id: JobId(r.u64()?),
            pri: r.u32()?,
            delay: r.u32()?,
            ready_at: timestamp_opt(r.u64()?),
        },
        kind::BURY => Change::Bury {
            id: JobId(r.u64()?),
            pri: r.u32()?,
        },
        kind::NEXT_ID => Change::NextId { next: r.u64()? },
        kind::PAUSE_TUBE => {
            let until = Timestamp(r.u64()?);
            let name = r.rest();
            let tube = r.tube(name)?;
            Change::PauseTube { tube, until }
        }
        kind::CONFIG_TUBE => {
            let has_value = r.u8()?;
            let raw = r.u64()?;
            let name_len = usize::from(r.u8()?);
            let name = r.take(name_len)?;
            let tube = r.tube(name)?;
            let bad = RecordError::BadSetting { kind };
            let setting = TubeSetting::from_name(r.rest()).ok_or(bad.clone())?;
            let value = match has_value {
                0 if raw == 0 => None,
                1 if setting.parse(setting.format(raw).as_bytes()) == Some(raw) => Some(raw),
                _ => return Err(bad),
            };
            Change::ConfigTube {
                tube,
                setting,
                value,
            }
        }
        kind::ABANDON => Change::Abandon {
            id: JobId(r.u64()?),
        },
        kind::RETRY => Change::Retry {
            id: JobId(r.u64()?),
            ready_at: timestamp_opt(r.u64()?),
        },
        kind::DEAD_LETTER => Change::DeadLetter {
            id: JobId(r.u64()?),
            pri: r.u32()?,
            at: Timestamp(r.u64()?),
            reason: BuryReason::from_index(usize::from(r.u8()?)).ok_or(r.malformed())?,
        },
        kind::FAIL => {
            let id = JobId(r.u64()?);
            let message = std::str::from_utf8(r.rest()).map_err(|_| r.malformed())?;
            Change::Fail {
                id,
                message: message.into(),
            }
        }
        kind::JOB_NOTES => {
            let id = JobId(r.u64()?);
            let attempts = r.u32()?;
            let flags = r.u8()?;
            let reason = r.u8()?;
            let at = r.u64()?;
            let text = std::str::from_utf8(r.rest()).map_err(|_| r.malformed())?;
            if flags > 7 || (flags & 1 == 0 && !text.is_empty()) || (flags & 6 == 4) {
                return Err(r.malformed());
            }
            let burial = if flags & 2 != 0 {
                Some(Burial {
                    reason: BuryReason::from_index(usize::from(reason)).ok_or(r.malformed())?,
                    at: (flags & 4 != 0).then_some(Timestamp(at)),
                })
            } else {
                None
            };
            Change::JobNotes {
                id,
                attempts,
                last_error: (flags & 1 != 0).then(|| text.into()),
                burial,
            }
        }
        other => return Err(RecordError::UnknownKind(other)),
    };
    r.done(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn change() -> impl Strategy<Value = Change> {
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
        let (change, body) = decode_metadata(kind::PUT, &payload).expect("decodes");
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
