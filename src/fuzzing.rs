//! Checks run by the fuzz targets in `fuzz/` and by `cargo test` over their corpora.
//!
//! Each function takes arbitrary bytes, drives public library code with them, and panics
//! only if an invariant is broken. They never panic on input alone: that is the property
//! being fuzzed.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::engine::{Engine, EngineConfig, Outcome, ProcessInfo, Timestamp};
use crate::protocol::{CommandDecoder, MAX_LINE_LEN};

/// Splits `data` into the decoder's input in pieces sized by its first bytes, and checks
/// that decoding in pieces gives the same items as decoding at once, and that the decoder
/// never holds more than a line, or a body within its limit, in its buffer.
pub fn decode(data: &[u8]) {
    let (sizes, input) = data.split_at(data.len().min(4));
    let max_job_size = 64;
    let whole = decode_in_pieces(input, &[usize::MAX], max_job_size);
    let pieces: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    let split = decode_in_pieces(input, &pieces, max_job_size);
    assert_eq!(whole, split, "decoding depends on how the input is split");
}

fn decode_in_pieces(
    input: &[u8],
    pieces: &[usize],
    max_job_size: u32,
) -> Vec<Result<crate::protocol::Command, crate::protocol::ProtocolError>> {
    let mut dec = CommandDecoder::new(max_job_size);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut sizes = pieces.iter().cycle();
    let bound = MAX_LINE_LEN.max(max_job_size as usize + 2) + 256;
    while !rest.is_empty() {
        let n = sizes
            .next()
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len())
            .min(256);
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Ok(Some(item)) = dec.decode(&mut buf) {
            out.push(item);
        }
        assert!(buf.len() <= bound, "decoder buffered {} bytes", buf.len());
    }
    out
}

/// Runs arbitrary client input through the decoder and the engine for two sessions, with
/// time advancing, as the server would. The first byte of each chunk picks the session and
/// how far the clock moves; the engine must never panic and must keep its bookkeeping
/// consistent (checked through its public counts).
pub fn session(data: &[u8]) {
    let mut now = Timestamp(1_800_000_000_000_000_000);
    let mut engine = Engine::new(
        EngineConfig {
            max_job_size: 64,
            ..EngineConfig::default()
        },
        ProcessInfo::fixed(),
        now,
    );
    let mut sids = [engine.open_session(), engine.open_session()];
    let mut decoders = [CommandDecoder::new(64), CommandDecoder::new(64)];
    let mut bufs = [BytesMut::new(), BytesMut::new()];
    let mut blocked = [false, false];
    for chunk in data.chunks(32) {
        let (ctl, bytes) = chunk.split_first().map_or((0, &[][..]), |(c, b)| (*c, b));
        let s = usize::from(ctl & 1);
        now = now + u64::from(ctl >> 1) * 50_000_000;
        engine.tick(now);
        for (sid, _reply) in engine.take_wakeups() {
            if let Some(i) = sids.iter().position(|&x| x == sid) {
                blocked[i] = false;
            }
        }
        if ctl == 0xff {
            engine.close_session(sids[s], now);
            sids[s] = engine.open_session();
            bufs[s].clear();
            decoders[s] = CommandDecoder::new(64);
            blocked[s] = false;
            continue;
        }
        bufs[s].extend_from_slice(bytes);
        while !blocked[s] {
            let Ok(Some(item)) = decoders[s].decode(&mut bufs[s]) else {
                break;
            };
            let outcome = match item {
                Ok(cmd) => engine.apply(sids[s], cmd, now),
                Err(e) => Outcome::Reply(engine.reject(sids[s], e)),
            };
            match outcome {
                Outcome::Blocked => blocked[s] = true,
                Outcome::Close => {
                    engine.close_session(sids[s], now);
                    sids[s] = engine.open_session();
                    bufs[s].clear();
                }
                Outcome::Reply(_) => {}
            }
            for (sid, _reply) in engine.take_wakeups() {
                if let Some(i) = sids.iter().position(|&x| x == sid) {
                    blocked[i] = false;
                }
            }
            engine.discard_changes();
        }
    }
    assert_eq!(engine.session_count(), 2);
    assert!(engine.tube_names().iter().any(|t| t.as_str() == "default"));
}

/// Scans arbitrary bytes as the last (and as a sealed) segment of a log, then decodes every
/// record it yields and replays it into an engine. Checks that scanning never panics, that
/// every record yielded lies inside the valid prefix with consecutive LSNs and a matching
/// checksum (nothing is yielded past corruption), and that decoding and replaying records
/// never panic (errors are fine). When the first byte is even the input is prefixed with a
/// valid segment header so the fuzzer spends its time on records.
pub fn wal_scan(data: &[u8]) {
    use crate::wal::{frame, segment, Lsn};
    let mut bytes = Vec::with_capacity(data.len() + frame::SEGMENT_HEADER_LEN);
    if data.first().is_some_and(|b| b % 2 == 0) {
        let header = frame::SegmentHeader {
            seq: 1,
            first_lsn: Lsn(1),
        };
        bytes.extend_from_slice(&header.encode());
        bytes.extend_from_slice(&data[1..]);
    } else {
        bytes.extend_from_slice(data);
    }
    let path = std::path::Path::new("fuzz/00000000000000000001.wal");
    let now = Timestamp(1_800_000_000_000_000_000);
    let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
    for last in [true, false] {
        let mut seen: Vec<(u64, u8, Vec<u8>, u64)> = Vec::new();
        let result = segment::scan(path, 1, &bytes, last, 1 << 20, &mut |r| {
            seen.push((r.lsn.0, r.kind, r.payload.to_vec(), r.pos.offset));
            Ok(())
        });
        let Ok(scan) = result else {
            continue;
        };
        assert!(scan.valid_len <= scan.file_len);
        if scan.end == segment::SegmentEnd::Clean {
            // What follows the records of a clean segment is zero fill, and only the last
            // segment may have any.
            let fill = &bytes[scan.valid_len as usize..];
            assert!(
                fill.iter().all(|&b| b == 0),
                "non-zero bytes after a clean end"
            );
            assert!(
                last || fill.is_empty(),
                "zero fill in a segment before the last"
            );
        }
        assert_eq!(scan.records, seen.len() as u64);
        for (i, (lsn, kind, payload, offset)) in seen.iter().enumerate() {
            if i > 0 {
                assert_eq!(*lsn, seen[i - 1].0 + 1, "LSNs must be consecutive");
            }
            let end = offset + payload.len() as u64;
            assert!(end <= scan.valid_len, "record past the valid prefix");
            let start = *offset as usize - frame::RECORD_HEADER_LEN;
            let stored =
                u32::from_le_bytes(bytes[start + 4..start + 8].try_into().unwrap_or_default());
            assert_eq!(
                stored,
                frame::record_crc(*kind, payload),
                "bad checksum yielded"
            );
            if let Ok(change) =
                crate::engine::record::decode(*kind, &bytes::Bytes::copy_from_slice(payload))
            {
                let _ = engine.restore(change, None, now);
            }
        }
    }
}
