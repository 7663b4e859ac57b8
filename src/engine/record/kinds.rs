//! Each record kind's payload: its encoder and its decoder side by side, in code order.
//! Integers are little-endian; `ts` is nanoseconds since the Unix epoch, and an optional
//! one is 0 when absent; `tube` is a tube name (its length byte first where more follows).

use bytes::{BufMut, Bytes};

use super::{timestamp_opt, Payload, Reader, RecordError, RecordKind, IMAGE_FIXED, PUT_FIXED};
use crate::engine::change::{Change, ImageState};
use crate::engine::job::{Burial, JobCounters};
use crate::engine::time::Timestamp;
use crate::protocol::{BuryReason, JobId, TubeName, TubeSetting};

/// Encodes a change as (record kind code, payload in one piece).
pub fn encode(change: &Change) -> (u8, Vec<u8>) {
    let (kind, payload) = encode_payload(change);
    (kind, payload.to_vec())
}

/// Encodes a change as (record kind code, payload), leaving a put's or image's body out of
/// the encoded bytes: it is the payload's last part, shared with the change, so encoding
/// a job copies only its fields and tube name, however large its body.
pub fn encode_payload(change: &Change) -> (u8, Payload) {
    let mut p = Vec::new();
    let mut rest = Bytes::new();
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
            p.reserve_exact(PUT_FIXED + tube.as_str().len());
            put_head(&mut p, *id, *pri, *delay, *ttr, *created_at);
            p.put_u64_le(ready_at.map_or(0, |t| t.0));
            put_name(&mut p, tube);
            rest = body.clone();
            RecordKind::Put
        }
        Change::Reserve { id } => id_only(&mut p, *id, RecordKind::Reserve),
        Change::Delete { id } => id_only(&mut p, *id, RecordKind::Delete),
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
            RecordKind::Release
        }
        Change::Bury { id, pri } => {
            p.put_u64_le(id.0);
            p.put_u32_le(*pri);
            RecordKind::Bury
        }
        Change::Kick { id } => id_only(&mut p, *id, RecordKind::Kick),
        Change::Timeout { id } => id_only(&mut p, *id, RecordKind::Timeout),
        Change::PauseTube { tube, until } => {
            p.put_u64_le(until.0);
            p.put_slice(tube.as_str().as_bytes());
            RecordKind::PauseTube
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
            p.reserve_exact(IMAGE_FIXED + tube.as_str().len());
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
            put_name(&mut p, tube);
            rest = body.clone();
            RecordKind::Image
        }
        Change::NextId { next } => {
            p.put_u64_le(*next);
            RecordKind::NextId
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
            RecordKind::ConfigTube
        }
        Change::Retry { id, ready_at } => {
            p.put_u64_le(id.0);
            p.put_u64_le(ready_at.map_or(0, |t| t.0));
            RecordKind::Retry
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
            RecordKind::DeadLetter
        }
        Change::Abandon { id } => id_only(&mut p, *id, RecordKind::Abandon),
        Change::Fail { id, message } => {
            p.put_u64_le(id.0);
            p.put_slice(message.as_bytes());
            RecordKind::Fail
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
            RecordKind::JobNotes
        }
    };
    (
        kind.code(),
        Payload {
            head: p,
            body: rest,
        },
    )
}

/// Decodes the payload in `r` as a record of `kind` (the caller checks nothing is left);
/// `body` turns the offset where a put's or image's body starts into its bytes.
pub(super) fn decode(
    kind: RecordKind,
    r: &mut Reader<'_>,
    body: impl FnOnce(usize) -> Bytes,
) -> Result<Change, RecordError> {
    Ok(match kind {
        RecordKind::Put => {
            let (id, pri, delay, ttr, created_at) = r.head()?;
            let ready_at = timestamp_opt(r.u64()?);
            let (tube, name_len) = r.tail()?;
            let body = body(super::put_body_offset(name_len));
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
        RecordKind::Reserve => Change::Reserve {
            id: JobId(r.u64()?),
        },
        RecordKind::Delete => Change::Delete {
            id: JobId(r.u64()?),
        },
        RecordKind::Release => Change::Release {
            id: JobId(r.u64()?),
            pri: r.u32()?,
            delay: r.u32()?,
            ready_at: timestamp_opt(r.u64()?),
        },
        RecordKind::Bury => Change::Bury {
            id: JobId(r.u64()?),
            pri: r.u32()?,
        },
        RecordKind::Kick => Change::Kick {
            id: JobId(r.u64()?),
        },
        RecordKind::Timeout => Change::Timeout {
            id: JobId(r.u64()?),
        },
        RecordKind::PauseTube => {
            let until = Timestamp(r.u64()?);
            let name = r.rest();
            let tube = r.tube(name)?;
            Change::PauseTube { tube, until }
        }
        RecordKind::Image => {
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
            let body = body(super::image_body_offset(name_len));
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
        RecordKind::NextId => Change::NextId { next: r.u64()? },
        RecordKind::ConfigTube => {
            let has_value = r.u8()?;
            let raw = r.u64()?;
            let name_len = usize::from(r.u8()?);
            let name = r.take(name_len)?;
            let tube = r.tube(name)?;
            let bad = RecordError::BadSetting { kind: kind.code() };
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
        RecordKind::Retry => Change::Retry {
            id: JobId(r.u64()?),
            ready_at: timestamp_opt(r.u64()?),
        },
        RecordKind::DeadLetter => Change::DeadLetter {
            id: JobId(r.u64()?),
            pri: r.u32()?,
            at: Timestamp(r.u64()?),
            reason: BuryReason::from_index(usize::from(r.u8()?)).ok_or(r.malformed())?,
        },
        RecordKind::Abandon => Change::Abandon {
            id: JobId(r.u64()?),
        },
        RecordKind::Fail => {
            let id = JobId(r.u64()?);
            let message = std::str::from_utf8(r.rest()).map_err(|_| r.malformed())?;
            Change::Fail {
                id,
                message: message.into(),
            }
        }
        RecordKind::JobNotes => {
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
    })
}

/// Writes the fields put and image records start with (see [`Reader::head`]).
fn put_head(p: &mut Vec<u8>, id: JobId, pri: u32, delay: u32, ttr: u32, created: Timestamp) {
    p.put_u64_le(id.0);
    p.put_u32_le(pri);
    p.put_u32_le(delay);
    p.put_u32_le(ttr);
    p.put_u64_le(created.0);
}

/// Writes the tube name of put and image records, after its length byte; their body
/// follows it (see [`Reader::tail`]), as the payload's second part.
fn put_name(p: &mut Vec<u8>, tube: &TubeName) {
    let name = tube.as_str().as_bytes();
    // Tube names are at most 200 bytes.
    p.put_u8(name.len() as u8);
    p.put_slice(name);
}

/// A string of at most 255 bytes, after its length byte.
fn put_short_str(p: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(255)];
    p.put_u8(s.len() as u8);
    p.put_slice(s);
}

fn id_only(p: &mut Vec<u8>, id: JobId, kind: RecordKind) -> RecordKind {
    p.put_u64_le(id.0);
    kind
}
