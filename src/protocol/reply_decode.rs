//! The client's reply decoder: server bytes to [`Reply`]s. The server is not trusted, so
//! every length it announces is checked against the client's limit before anything is
//! allocated for it.

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::parse::find_crlf;
use super::{JobId, Refusal, Reply, TubeName};

/// Decodes server replies on the client side. The server is not trusted: a reply line is at
/// most 1024 bytes, and a body longer than the decoder's limit is an error, not an
/// allocation of whatever size the server announced.
#[derive(Debug)]
pub struct ReplyDecoder {
    /// A reply line announcing a body: the line's word and id, and the body length.
    pending: Option<(BodyKind, u64, usize)>,
    /// Longest body (job or YAML) accepted, in bytes.
    max_body: usize,
}

/// Default longest reply body the client accepts: 64 MiB, above larder's largest job
/// (`--max-job-size` is at most 64 MiB − 1024) and any YAML reply of a sane server.
pub const DEFAULT_MAX_REPLY_BODY: u64 = 64 << 20;

/// Bytes reserved ahead for a body still arriving: growth follows what was received, not
/// what was announced.
const BODY_READ_AHEAD: usize = 64 << 10;

impl Default for ReplyDecoder {
    fn default() -> Self {
        ReplyDecoder::new(DEFAULT_MAX_REPLY_BODY)
    }
}

impl ReplyDecoder {
    /// A decoder that refuses reply bodies over `max_body` bytes.
    pub fn new(max_body: u64) -> ReplyDecoder {
        ReplyDecoder {
            pending: None,
            max_body: usize::try_from(max_body).unwrap_or(usize::MAX),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum BodyKind {
    Reserved,
    Found,
    Ok,
}

/// Longest reply line the client accepts before calling the stream broken.
const MAX_REPLY_LINE: usize = 1024;

impl Decoder for ReplyDecoder {
    type Item = Reply;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Reply>, std::io::Error> {
        if let Some((kind, id, len)) = self.pending {
            // `len` is at most `max_body`, checked when the line was read; a limit near
            // usize::MAX must still not overflow.
            let total = len
                .checked_add(2)
                .ok_or_else(|| invalid("reply body too long"))?;
            if src.len() < total {
                src.reserve((total - src.len()).min(BODY_READ_AHEAD));
                return Ok(None);
            }
            self.pending = None;
            let mut body = src.split_to(total);
            if &body[len..] != b"\r\n" {
                return Err(invalid("reply body not followed by CRLF"));
            }
            body.truncate(len);
            let body: Bytes = body.freeze();
            let id = JobId(id);
            return Ok(Some(match kind {
                BodyKind::Reserved => Reply::Reserved {
                    id,
                    body: body.into(),
                },
                BodyKind::Found => Reply::Found {
                    id,
                    body: body.into(),
                },
                BodyKind::Ok => Reply::Ok(body),
            }));
        }
        let Some(end) = find_crlf(src) else {
            if src.len() > MAX_REPLY_LINE {
                return Err(invalid("reply line too long"));
            }
            return Ok(None);
        };
        let line = src.split_to(end + 2);
        let line = std::str::from_utf8(&line[..end]).map_err(|_| invalid("reply not UTF-8"))?;
        let mut words = line.split(' ');
        let word = words.next().unwrap_or_default();
        let mut num = || -> Result<u64, std::io::Error> {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| invalid(&format!("malformed reply {line:?}")))
        };
        let reply = match word {
            "RESERVED" | "FOUND" | "OK" => {
                let kind = match word {
                    "RESERVED" => BodyKind::Reserved,
                    "FOUND" => BodyKind::Found,
                    _ => BodyKind::Ok,
                };
                let id = if matches!(kind, BodyKind::Ok) {
                    0
                } else {
                    num()?
                };
                let announced = num()?;
                let len = usize::try_from(announced)
                    .ok()
                    .filter(|&len| len <= self.max_body)
                    .ok_or_else(|| {
                        invalid(&format!(
                            "the server announced a {announced}-byte reply body, over the \
                             client's limit of {} bytes (--max-reply-size)",
                            self.max_body
                        ))
                    })?;
                self.pending = Some((kind, id, len));
                return self.decode(src);
            }
            "INSERTED" => Reply::Inserted(JobId(num()?)),
            "BURIED" if line.len() > 6 => Reply::BuriedId(JobId(num()?)),
            "BURIED" => Reply::Buried,
            "USING" => {
                let name = line.get(6..).unwrap_or_default();
                Reply::Using(
                    TubeName::new(name.as_bytes()).ok_or_else(|| invalid("bad tube name"))?,
                )
            }
            "WATCHING" => Reply::Watching(fits(num()?, line)?),
            "KICKED" if line.len() > 6 => Reply::Kicked(fits(num()?, line)?),
            "KICKED" => Reply::KickedJob,
            "DEADLINE_SOON" => Reply::DeadlineSoon,
            "TIMED_OUT" => Reply::TimedOut,
            "DELETED" if line.len() > 7 => Reply::DeletedCount(fits(num()?, line)?),
            "DELETED" => Reply::Deleted,
            "RELEASED" => Reply::Released,
            "TOUCHED" => Reply::Touched,
            "NOT_IGNORED" => Reply::NotIgnored,
            "NOT_FOUND" => Reply::NotFound,
            "PAUSED" => Reply::Paused,
            "DRAINING" => Reply::Draining,
            "OUT_OF_MEMORY" => Reply::OutOfMemory,
            "INTERNAL_ERROR" => Reply::InternalError,
            "NO_QUORUM" => Reply::NoQuorum,
            "CLUSTER_CHANGED" => Reply::ClusterChanged,
            "CLUSTER_BUSY" => Reply::ClusterBusy,
            "BAD_FORMAT" => Reply::BadFormat,
            "UNKNOWN_COMMAND" => Reply::UnknownCommand,
            "EXPECTED_CRLF" => Reply::ExpectedCrlf,
            "JOB_TOO_BIG" => Reply::JobTooBig,
            "REFUSED" => Reply::Refused(
                words
                    .next()
                    .and_then(Refusal::from_setting)
                    .ok_or_else(|| invalid(&format!("unknown refusal {line:?}")))?,
            ),
            "CONFIGURED" => Reply::Configured,
            "EXTENDED" => Reply::Extended,
            "UNKNOWN_SETTING" => Reply::UnknownSetting,
            "AUTHENTICATED" => Reply::Authenticated(line.get(14..).unwrap_or_default().to_owned()),
            "AUTH_FAILED" => Reply::AuthFailed,
            "AUTH_REQUIRED" => Reply::AuthRequired,
            "FORBIDDEN" => Reply::Forbidden,
            _ => return Err(invalid(&format!("unknown reply {line:?}"))),
        };
        Ok(Some(reply))
    }
}

/// A reply's number in a narrower type, or an error naming the reply.
fn fits<T: TryFrom<u64>>(n: u64, line: &str) -> Result<T, std::io::Error> {
    T::try_from(n).map_err(|_| invalid(&format!("number out of range in reply {line:?}")))
}

fn invalid(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_reply_body_over_the_limit_is_an_error_not_an_allocation() {
        for line in [
            "OK 18446744073709551615\r\n",
            "OK 18446744073709551614\r\n",
            "RESERVED 1 18446744073709551615\r\n",
            "FOUND 1 1001\r\n",
        ] {
            let mut dec = ReplyDecoder::new(1000);
            let mut buf = BytesMut::from(line.as_bytes());
            let err = dec.decode(&mut buf).expect_err(line);
            assert!(err.to_string().contains("over the client's limit"), "{err}");
        }
        // At the limit itself the body is accepted.
        let mut dec = ReplyDecoder::new(3);
        let mut buf = BytesMut::from(&b"OK 3\r\nabc\r\n"[..]);
        assert_eq!(
            dec.decode(&mut buf).expect("fits"),
            Some(Reply::Ok(Bytes::from_static(b"abc")))
        );
        // A limit of usize::MAX cannot overflow the body's length plus CRLF.
        let mut dec = ReplyDecoder::new(u64::MAX);
        let mut buf = BytesMut::from(&b"OK 18446744073709551615\r\n"[..]);
        assert!(dec.decode(&mut buf).is_err());
    }

    #[test]
    fn an_announced_body_is_not_reserved_ahead_of_its_bytes() {
        let mut dec = ReplyDecoder::default();
        let mut buf = BytesMut::from(&b"OK 60000000\r\nab"[..]);
        assert_eq!(dec.decode(&mut buf).expect("waits for more"), None);
        assert!(buf.capacity() <= 2 * BODY_READ_AHEAD, "{}", buf.capacity());
    }

    #[test]
    fn counts_that_do_not_fit_are_errors() {
        for line in ["KICKED 4294967296\r\n", "DELETED 99999999999\r\n"] {
            let mut dec = ReplyDecoder::default();
            let mut buf = BytesMut::from(line.as_bytes());
            assert!(dec.decode(&mut buf).is_err(), "{line}");
        }
    }

    proptest! {
        #[test]
        fn replies_round_trip_through_the_client_decoder(id in any::<u64>(), body in prop::collection::vec(any::<u8>(), 0..100), n in any::<u32>()) {
            let replies = vec![
                Reply::Inserted(JobId(id)), Reply::BuriedId(JobId(id)), Reply::Buried,
                Reply::Reserved { id: JobId(id), body: body.clone().into() },
                Reply::Found { id: JobId(id), body: body.clone().into() },
                Reply::Ok(body.into()), Reply::Kicked(n), Reply::KickedJob, Reply::Watching(n as usize),
                Reply::Using(TubeName::default_tube()), Reply::DeadlineSoon, Reply::TimedOut,
                Reply::Deleted, Reply::Released, Reply::Touched, Reply::NotIgnored, Reply::NotFound,
                Reply::Paused, Reply::Draining, Reply::OutOfMemory, Reply::InternalError, Reply::NoQuorum, Reply::ClusterChanged, Reply::ClusterBusy,
                Reply::BadFormat, Reply::UnknownCommand, Reply::ExpectedCrlf, Reply::JobTooBig,
                Reply::Configured, Reply::UnknownSetting, Reply::DeletedCount(n), Reply::Extended,
                Reply::Authenticated("producer,worker".to_owned()), Reply::AuthFailed,
                Reply::AuthRequired, Reply::Forbidden,
            ];
            let replies: Vec<Reply> = replies.into_iter().chain(Refusal::ALL.map(Reply::Refused)).collect();
            let mut wire = BytesMut::new();
            for r in &replies {
                prop_assert!(r.encode(&mut wire).is_none());
            }
            let mut dec = ReplyDecoder::default();
            let mut got = Vec::new();
            while let Some(r) = dec.decode(&mut wire).expect("valid replies") {
                got.push(r);
            }
            prop_assert_eq!(got, replies);
        }
    }
}
