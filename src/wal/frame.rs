//! The byte layout of one segment header and of one record frame, as pure functions.
//!
//! Owns every constant of the on-disk format (magic, version, lengths) and the CRC32C
//! computations. Nothing here does I/O; callers hand in bytes. Decoding never panics on any
//! input: that is what the scanner and its fuzz target rely on.

use super::Lsn;

/// The first eight bytes of every segment file.
pub const MAGIC: [u8; 8] = *b"LARDRWAL";
/// The format version this build writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of a version-1 segment header, in bytes.
pub const SEGMENT_HEADER_LEN: usize = 40;
/// Length of a record frame's header (payload length, CRC, kind), in bytes.
pub const RECORD_HEADER_LEN: usize = 9;

/// The fields of a segment header that vary between segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number; equals the number in its file name.
    pub seq: u64,
    /// LSN of the segment's first record (of the next record to be written, while empty).
    pub first_lsn: Lsn,
}

/// Why a segment header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderProblem {
    /// The file is shorter than a header.
    #[error("file is {len} bytes, shorter than a segment header")]
    Short {
        /// The file's length.
        len: u64,
    },
    /// The first eight bytes are not [`MAGIC`].
    #[error("bad magic: not a larder WAL segment")]
    BadMagic,
    /// The version is not [`FORMAT_VERSION`].
    #[error("unsupported format version {version} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion {
        /// The version found in the file.
        version: u32,
    },
    /// The header length field does not match the version's header length.
    #[error("header length {len} does not match version 1 ({SEGMENT_HEADER_LEN})")]
    BadLength {
        /// The length found in the file.
        len: u32,
    },
    /// The header's CRC32C does not match its contents.
    #[error("header checksum {stored:#010x} does not match contents ({computed:#010x})")]
    Checksum {
        /// The CRC stored in the header.
        stored: u32,
        /// The CRC computed over the header's bytes.
        computed: u32,
    },
    /// The sequence number in the header differs from the one in the file name.
    #[error("header says segment {found}, file name says {expected}")]
    SeqMismatch {
        /// The sequence number from the file name.
        expected: u64,
        /// The sequence number in the header.
        found: u64,
    },
}

impl SegmentHeader {
    /// The header's 40 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[12..16].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..32]);
        out[32..36].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Parses a header from the start of `bytes`, checking magic, version, length and CRC
    /// in that order (so an unknown version is reported as such even if the rest of the
    /// header is laid out differently).
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, HeaderProblem> {
        if bytes.len() < SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::Short {
                len: bytes.len() as u64,
            });
        }
        if bytes[0..8] != MAGIC {
            return Err(HeaderProblem::BadMagic);
        }
        let version = le_u32(&bytes[8..12]);
        if version != FORMAT_VERSION {
            return Err(HeaderProblem::UnsupportedVersion { version });
        }
        let len = le_u32(&bytes[12..16]);
        if len as usize != SEGMENT_HEADER_LEN {
            return Err(HeaderProblem::BadLength { len });
        }
        let stored = le_u32(&bytes[32..36]);
        let computed = crc32c::crc32c(&bytes[0..32]);
        if stored != computed {
            return Err(HeaderProblem::Checksum { stored, computed });
        }
        Ok(SegmentHeader {
            seq: le_u64(&bytes[16..24]),
            first_lsn: Lsn(le_u64(&bytes[24..32])),
        })
    }
}

/// The CRC32C a record frame carries: over its kind byte followed by its payload.
pub fn record_crc(kind: u8, payload: &[u8]) -> u32 {
    record_crc_parts(kind, payload, &[])
}

/// [`record_crc`] of a payload given in two parts, `head` then `tail`: the same value as
/// over their concatenation, computed without joining them.
pub fn record_crc_parts(kind: u8, head: &[u8], tail: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(crc32c::crc32c(&[kind]), head);
    crc32c::crc32c_append(crc, tail)
}

/// Appends one record frame (header and payload) to `out`.
///
/// The caller has checked that the payload fits the configured maximum, which is at most
/// `u32::MAX`.
pub fn encode_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    encode_record_parts(out, kind, payload, &[]);
}

/// Appends one record frame whose payload is `head` followed by `tail` to `out`: the same
/// bytes as [`encode_record`] of their concatenation. Same precondition: the whole payload
/// fits the configured maximum.
pub fn encode_record_parts(out: &mut Vec<u8>, kind: u8, head: &[u8], tail: &[u8]) {
    let len = head.len() + tail.len();
    out.reserve(RECORD_HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&record_crc_parts(kind, head, tail).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(head);
    out.extend_from_slice(tail);
}

/// A valid record frame, borrowed from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's kind byte.
    pub kind: u8,
    /// The record's payload.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Length of the whole frame, header included.
    pub fn len(&self) -> usize {
        RECORD_HEADER_LEN + self.payload.len()
    }

    /// Whether the frame is empty (never: a frame always has its header).
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Why the bytes at a record boundary are not a valid record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    /// The bytes end before the record header or the payload it announces.
    #[error("record incomplete: {needed} bytes announced, {available} present")]
    Incomplete {
        /// Bytes the record needs (header, and payload if the header was read).
        needed: u64,
        /// Bytes present from the record's start to the end of the segment.
        available: u64,
    },
    /// The announced payload length exceeds the configured maximum.
    #[error("payload length {len} exceeds the maximum {max}")]
    TooLong {
        /// The announced payload length.
        len: u32,
        /// The configured maximum payload length.
        max: u32,
    },
    /// The CRC does not match the kind and payload.
    #[error("record checksum {stored:#010x} does not match contents ({computed:#010x})")]
    Checksum {
        /// The CRC stored in the record header.
        stored: u32,
        /// The CRC computed over kind and payload.
        computed: u32,
    },
}

/// Decodes the record frame at the start of `bytes` (which must be non-empty: the caller
/// stops at the end of the segment).
pub fn decode_record(bytes: &[u8], max_payload: u32) -> Result<Frame<'_>, BadRecord> {
    let available = bytes.len() as u64;
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(BadRecord::Incomplete {
            needed: RECORD_HEADER_LEN as u64,
            available,
        });
    }
    let len = le_u32(&bytes[0..4]);
    let needed = RECORD_HEADER_LEN as u64 + u64::from(len);
    if needed > available {
        return Err(BadRecord::Incomplete { needed, available });
    }
    if len > max_payload {
        return Err(BadRecord::TooLong {
            len,
            max: max_payload,
        });
    }
    let stored = le_u32(&bytes[4..8]);
    let kind = bytes[8];
    let payload = &bytes[RECORD_HEADER_LEN..needed as usize];
    let computed = record_crc(kind, payload);
    if stored != computed {
        return Err(BadRecord::Checksum { stored, computed });
    }
    Ok(Frame { kind, payload })
}

/// The torn-tail rule for an invalid record at the start of `rest`, where `rest` runs to
/// the end of the last segment: the bytes could be an unfinished write if the record is
/// incomplete, or if it is complete and everything after it is zero.
pub fn could_be_torn(rest: &[u8], bad: &BadRecord) -> bool {
    match bad {
        BadRecord::Incomplete { .. } => true,
        BadRecord::TooLong { .. } | BadRecord::Checksum { .. } => {
            let end = RECORD_HEADER_LEN as u64 + u64::from(le_u32(&rest[0..4]));
            let end = usize::try_from(end).unwrap_or(usize::MAX).min(rest.len());
            rest[end..].iter().all(|&b| b == 0)
        }
    }
}

/// How many bytes a torn record at the start of `rest` spans, for reporting: its frame as
/// far as its header announces it and `rest` holds it, extended to the last non-zero byte
/// after it. Zero fill past both is not counted.
pub fn torn_len(rest: &[u8]) -> u64 {
    let frame = if rest.len() < RECORD_HEADER_LEN {
        rest.len()
    } else {
        let end = RECORD_HEADER_LEN as u64 + u64::from(le_u32(&rest[0..4]));
        usize::try_from(end).unwrap_or(usize::MAX).min(rest.len())
    };
    let nonzero = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    frame.max(nonzero) as u64
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_checks_each_field() {
        let h = SegmentHeader {
            seq: 7,
            first_lsn: Lsn(123),
        };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        assert_eq!(&bytes[36..40], &[0, 0, 0, 0]);

        let mut bad = bytes;
        bad[0] = b'X';
        assert_eq!(SegmentHeader::decode(&bad), Err(HeaderProblem::BadMagic));
        let mut bad = bytes;
        bad[8] = 2;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(HeaderProblem::UnsupportedVersion { version: 2 })
        );
        let mut bad = bytes;
        bad[12] = 41;
        assert_eq!(
            SegmentHeader::decode(&bad),
            Err(HeaderProblem::BadLength { len: 41 })
        );
        let mut bad = bytes;
        bad[20] ^= 1;
        assert!(matches!(
            SegmentHeader::decode(&bad),
            Err(HeaderProblem::Checksum { .. })
        ));
        assert_eq!(
            SegmentHeader::decode(&bytes[..39]),
            Err(HeaderProblem::Short { len: 39 })
        );
    }

    #[test]
    fn record_round_trips_and_every_prefix_is_incomplete() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 3, b"hello");
        assert_eq!(buf.len(), RECORD_HEADER_LEN + 5);
        let frame = decode_record(&buf, 100).expect("valid record");
        assert_eq!((frame.kind, frame.payload), (3, &b"hello"[..]));
        for cut in 1..buf.len() {
            let bad = decode_record(&buf[..cut], 100).expect_err("prefix");
            assert!(
                matches!(bad, BadRecord::Incomplete { .. }),
                "{cut}: {bad:?}"
            );
            assert!(could_be_torn(&buf[..cut], &bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn a_record_encoded_in_two_parts_is_the_record_encoded_whole(
            kind in proptest::prelude::any::<u8>(),
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            cut in 0usize..301,
        ) {
            let cut = cut.min(payload.len());
            let (head, tail) = payload.split_at(cut);
            let mut whole = Vec::new();
            encode_record(&mut whole, kind, &payload);
            let mut parts = Vec::new();
            encode_record_parts(&mut parts, kind, head, tail);
            proptest::prop_assert_eq!(&parts, &whole);
            proptest::prop_assert_eq!(record_crc_parts(kind, head, tail), crc32c::crc32c(&whole[8..]));
            let frame = decode_record(&parts, 300).expect("valid record");
            proptest::prop_assert_eq!((frame.kind, frame.payload), (kind, &payload[..]));
        }
    }

    #[test]
    fn corrupt_record_is_torn_only_before_zeros() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, b"abc");
        buf[10] ^= 0xff;
        let bad = decode_record(&buf, 100).expect_err("corrupt");
        assert!(matches!(bad, BadRecord::Checksum { .. }));
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 20]);
        assert!(could_be_torn(&zeros, &bad));
        let mut more = buf.clone();
        encode_record(&mut more, 1, b"next");
        assert!(!could_be_torn(&more, &bad));
    }

    #[test]
    fn too_long_is_refused_and_zero_fill_is_a_bad_record() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, &[7; 50]);
        assert_eq!(
            decode_record(&buf, 49),
            Err(BadRecord::TooLong { len: 50, max: 49 })
        );
        let zeros = [0u8; 64];
        let bad = decode_record(&zeros, 100).expect_err("zeros");
        assert!(matches!(bad, BadRecord::Checksum { .. }));
        assert!(could_be_torn(&zeros, &bad));
    }
}
