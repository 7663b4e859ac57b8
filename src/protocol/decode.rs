//! Decoders: command lines and job bodies on the server side, replies on the client side.
//!
//! Framing follows beanstalkd 1.12: a command line ends at the first `\r\n` and may be at
//! most [`MAX_LINE_LEN`] bytes including it; a longer line is discarded up to its `\r\n` and
//! answered `BAD_FORMAT`. A `put` body is exactly the announced size plus `\r\n`; a body over
//! the limit is read and thrown away in pieces, never buffered whole.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::command::is_name_char;
use super::{
    BuryReason, Command, CommandKind, DeadFilter, JobId, ProtocolError, Refusal, Reply, Token,
    TubeName, TubeSetting,
};

/// Longest command line, including its `\r\n`, as in beanstalkd (11 + 201 + 12).
pub const MAX_LINE_LEN: usize = 224;

/// What the command decoder is in the middle of.
#[derive(Debug)]
enum State {
    /// Waiting for a command line.
    Line,
    /// Waiting for a put body of `len` bytes plus `\r\n`.
    Body {
        pri: u32,
        delay: u32,
        ttr: u32,
        len: usize,
    },
    /// Throwing away the body of a put that was too big.
    Skip { remaining: u64 },
    /// Throwing away an over-long line up to its end.
    DiscardLine,
}

/// Decodes client bytes into commands. Malformed input decodes to a [`ProtocolError`]
/// (the item is a `Result`); the codec's own error is only ever an I/O error.
#[derive(Debug)]
pub struct CommandDecoder {
    max_job_size: u32,
    state: State,
}

impl CommandDecoder {
    /// A decoder that refuses bodies over `max_job_size` bytes with `JOB_TOO_BIG`.
    pub fn new(max_job_size: u32) -> CommandDecoder {
        CommandDecoder {
            max_job_size,
            state: State::Line,
        }
    }

    /// Whether the decoder is between commands: not inside a put body, nor throwing away
    /// an over-long line or body. (Bytes of a command line not yet ended sit in the
    /// caller's buffer.)
    pub fn between_commands(&self) -> bool {
        matches!(self.state, State::Line)
    }
}

/// Position of the first `\r\n` in `buf`, if any.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = buf
        .get(from..)
        .and_then(|b| b.iter().position(|&c| c == b'\n'))
    {
        let nl = from + off;
        if nl > 0 && buf[nl - 1] == b'\r' {
            return Some(nl - 1);
        }
        from = nl + 1;
    }
    None
}

impl Decoder for CommandDecoder {
    type Item = Result<Command, ProtocolError>;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        loop {
            match self.state {
                State::Line => {
                    let window = &src[..src.len().min(MAX_LINE_LEN)];
                    let Some(end) = find_crlf(window) else {
                        if src.len() >= MAX_LINE_LEN {
                            // Keep a final '\r': the '\n' after it ends this line.
                            let keep = usize::from(src[MAX_LINE_LEN - 1] == b'\r');
                            src.advance(MAX_LINE_LEN - keep);
                            self.state = State::DiscardLine;
                            continue;
                        }
                        return Ok(None);
                    };
                    let line = src.split_to(end + 2);
                    match parse_line(&line[..end], self.max_job_size) {
                        Parsed::Done(item) => return Ok(Some(item)),
                        Parsed::TooBig(len) => {
                            self.state = State::Skip {
                                remaining: u64::from(len) + 2,
                            };
                        }
                        Parsed::Put {
                            pri,
                            delay,
                            ttr,
                            len,
                        } => {
                            self.state = State::Body {
                                pri,
                                delay,
                                ttr,
                                len: len as usize,
                            };
                        }
                    }
                }
                State::Body {
                    pri,
                    delay,
                    ttr,
                    len,
                } => {
                    if src.len() < len + 2 {
                        src.reserve(len + 2 - src.len());
                        return Ok(None);
                    }
                    self.state = State::Line;
                    let mut body = src.split_to(len + 2);
                    if &body[len..] != b"\r\n" {
                        return Ok(Some(Err(ProtocolError::ExpectedCrlf)));
                    }
                    body.truncate(len);
                    let body = body.freeze();
                    return Ok(Some(Ok(Command::Put {
                        pri,
                        delay,
                        ttr,
                        body,
                    })));
                }
                State::Skip { remaining } => {
                    let take = remaining.min(src.len() as u64);
                    src.advance(take as usize);
                    let remaining = remaining - take;
                    if remaining > 0 {
                        self.state = State::Skip { remaining };
                        return Ok(None);
                    }
                    self.state = State::Line;
                    return Ok(Some(Err(ProtocolError::JobTooBig)));
                }
                State::DiscardLine => match find_crlf(src) {
                    Some(end) => {
                        src.advance(end + 2);
                        self.state = State::Line;
                        return Ok(Some(Err(ProtocolError::BadFormat)));
                    }
                    None => {
                        // Keep a trailing '\r': its '\n' may be in the next read.
                        let keep = usize::from(src.last() == Some(&b'\r'));
                        src.advance(src.len() - keep);
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        // A partial command or body at end of stream is dropped, as beanstalkd does.
        match self.decode(buf)? {
            Some(item) => Ok(Some(item)),
            None => {
                buf.clear();
                Ok(None)
            }
        }
    }
}

/// The outcome of parsing one command line.
enum Parsed {
    Done(Result<Command, ProtocolError>),
    /// A valid put header; the body follows.
    Put {
        pri: u32,
        delay: u32,
        ttr: u32,
        len: u32,
    },
    /// A put header announcing a body over the limit.
    TooBig(u32),
}

/// Command names in beanstalkd's matching order: a line selects the first name it starts
/// with. Names without a trailing space take no argument (or, for `pause-tube`, parse their
/// own).
const NAMES: [&[u8]; 32] = [
    b"put ",
    b"peek ",
    b"peek-ready",
    b"peek-delayed",
    b"peek-buried",
    b"reserve-with-timeout ",
    b"reserve-job ",
    b"reserve",
    b"delete ",
    b"release ",
    b"bury ",
    b"kick ",
    b"kick-job ",
    b"touch ",
    b"stats-job ",
    b"stats-tube ",
    b"stats",
    b"use ",
    b"watch ",
    b"ignore ",
    b"list-tubes-watched",
    b"list-tube-used",
    b"list-tubes",
    b"quit",
    b"pause-tube",
    // larder extensions; none starts with a beanstalkd name above.
    b"config-tube ",
    b"fail ",
    b"list-dead ",
    b"kick-dead ",
    b"delete-dead ",
    b"extended-stats",
    b"auth ",
];

fn parse_line(line: &[u8], max_job_size: u32) -> Parsed {
    use Command as C;
    if line.contains(&0) {
        return Parsed::Done(Err(ProtocolError::BadFormat));
    }
    let Some(name) = NAMES.iter().find(|n| line.starts_with(n)) else {
        return Parsed::Done(Err(ProtocolError::UnknownCommand));
    };
    let args = &line[name.len()..];
    let bad = ProtocolError::BadFormat;
    let exact = |c: Command| if args.is_empty() { Ok(c) } else { Err(bad) };
    let id = |make: fn(JobId) -> Command| read_u64_all(args).map(|n| make(JobId(n))).ok_or(bad);
    let tube = |make: fn(TubeName) -> Command| TubeName::new(args).map(make).ok_or(bad);
    let result = match *name {
        b"put " => return parse_put(args, max_job_size),
        b"peek " => id(C::Peek),
        b"peek-ready" => exact(C::PeekReady),
        b"peek-delayed" => exact(C::PeekDelayed),
        b"peek-buried" => exact(C::PeekBuried),
        // beanstalkd 1.12 reads the timeout with strtol and keeps its low 32 bits.
        b"reserve-with-timeout " => strtol(args)
            .map(|t| C::ReserveWithTimeout(t as u32))
            .ok_or(bad),
        b"reserve-job " => id(C::ReserveJob),
        b"reserve" => exact(C::Reserve),
        b"delete " => id(C::Delete),
        b"release " => (|| {
            let (id, rest) = read_u64(args)?;
            let (pri, rest) = read_u32(rest)?;
            let delay = read_u32_all(rest)?;
            Some(C::Release {
                id: JobId(id),
                pri,
                delay,
            })
        })()
        .ok_or(bad),
        b"bury " => (|| {
            let (id, rest) = read_u64(args)?;
            let pri = read_u32_all(rest)?;
            Some(C::Bury { id: JobId(id), pri })
        })()
        .ok_or(bad),
        b"kick " => strtoul(args).map(|n| C::Kick(n as u32)).ok_or(bad),
        b"kick-job " => id(C::KickJob),
        b"touch " => id(C::Touch),
        b"stats-job " => id(C::StatsJob),
        b"stats-tube " => tube(C::StatsTube),
        b"stats" => exact(C::Stats),
        b"use " => tube(C::Use),
        b"watch " => tube(C::Watch),
        b"ignore " => tube(C::Ignore),
        b"list-tubes-watched" => exact(C::ListTubesWatched),
        b"list-tube-used" => exact(C::ListTubeUsed),
        b"list-tubes" => exact(C::ListTubes),
        b"extended-stats" => exact(C::ExtendedStats),
        b"auth " => Ok(C::Auth(Token(Bytes::copy_from_slice(args)))),
        // beanstalkd closes on any line starting with "quit".
        b"quit" => Ok(C::Quit),
        b"pause-tube" => parse_pause(args),
        b"config-tube " => parse_config(args),
        b"fail " => parse_fail(args),
        b"list-dead " => parse_dead(args).map(|(filter, limit)| C::ListDead { filter, limit }),
        b"kick-dead " => parse_dead(args).map(|(filter, limit)| C::KickDead { filter, limit }),
        b"delete-dead " => parse_dead(args).map(|(filter, limit)| C::DeleteDead { filter, limit }),
        _ => Err(ProtocolError::UnknownCommand),
    };
    Parsed::Done(result)
}

fn parse_put(args: &[u8], max_job_size: u32) -> Parsed {
    let header = (|| {
        let (pri, rest) = read_u32(args)?;
        let (delay, rest) = read_u32(rest)?;
        let (ttr, rest) = read_u32(rest)?;
        let (len, rest) = read_u32(rest)?;
        Some((pri, delay, ttr, len, rest))
    })();
    match header {
        None => Parsed::Done(Err(ProtocolError::BadFormat)),
        // The size is checked before trailing bytes, as beanstalkd does.
        Some((_, _, _, len, _)) if len > max_job_size => Parsed::TooBig(len),
        Some((_, _, _, _, rest)) if !rest.is_empty() => {
            Parsed::Done(Err(ProtocolError::CountedBadFormat(CommandKind::Put)))
        }
        Some((pri, delay, ttr, len, _)) => Parsed::Put {
            pri,
            delay,
            ttr,
            len,
        },
    }
}

/// `pause-tube`'s arguments: optional spaces, a run of name characters, a duration. The
/// name is then checked in full (length, leading `-`); like beanstalkd, a name refused only
/// at that point still counts as a pause-tube command.
fn parse_pause(args: &[u8]) -> Result<Command, ProtocolError> {
    let args = skip_spaces(args);
    let name_len = args.iter().take_while(|&&b| is_name_char(b)).count();
    if name_len == 0 {
        return Err(ProtocolError::BadFormat);
    }
    let (name, rest) = args.split_at(name_len);
    let delay = read_u32_all(rest).ok_or(ProtocolError::BadFormat)?;
    let tube =
        TubeName::new(name).ok_or(ProtocolError::CountedBadFormat(CommandKind::PauseTube))?;
    Ok(Command::PauseTube { tube, delay })
}

/// `config-tube`'s arguments: exactly `<tube> <setting> <value>`, one space apart, where
/// `value` is in the setting's unit or `default`.
fn parse_config(args: &[u8]) -> Result<Command, ProtocolError> {
    let bad = ProtocolError::BadFormat;
    let mut parts = args.split(|&b| b == b' ');
    let (Some(tube), Some(setting), Some(value), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad);
    };
    let tube = TubeName::new(tube).ok_or(bad)?;
    let setting = TubeSetting::from_name(setting).ok_or(ProtocolError::UnknownSetting)?;
    let value = match value {
        b"default" => None,
        v => Some(setting.parse(v).ok_or(bad)?),
    };
    Ok(Command::ConfigTube {
        tube,
        setting,
        value,
    })
}

/// `fail`'s arguments: an id, then optionally one space and a UTF-8 message that runs to
/// the end of the line.
fn parse_fail(args: &[u8]) -> Result<Command, ProtocolError> {
    let bad = ProtocolError::BadFormat;
    let (id, rest) = read_u64(args).ok_or(bad)?;
    let message = match rest {
        [] => "",
        [b' ', message @ ..] => std::str::from_utf8(message).map_err(|_| bad)?,
        _ => return Err(bad),
    };
    Ok(Command::Fail {
        id: JobId(id),
        message: message.to_owned(),
    })
}

/// The dead-letter commands' arguments: exactly `<tube> <reason> <older-than-ms> <from-id>
/// <to-id> <limit>`, one space apart; `*` for any tube or reason.
fn parse_dead(args: &[u8]) -> Result<(DeadFilter, u32), ProtocolError> {
    let bad = ProtocolError::BadFormat;
    let parts: Vec<&[u8]> = args.split(|&b| b == b' ').collect();
    let [tube, reason, older, from, to, limit] = parts[..] else {
        return Err(bad);
    };
    let tube = match tube {
        b"*" => None,
        t => Some(TubeName::new(t).ok_or(bad)?),
    };
    let reason = match reason {
        b"*" => None,
        r => Some(BuryReason::from_name(r).ok_or(bad)?),
    };
    let number = |s: &[u8]| match read_u64(s) {
        Some((n, [])) if !s.starts_with(b" ") => Some(n),
        _ => None,
    };
    let filter = DeadFilter {
        tube,
        reason,
        older_than_ms: number(older).ok_or(bad)?,
        from: JobId(number(from).ok_or(bad)?),
        to: JobId(number(to).ok_or(bad)?),
    };
    let limit = number(limit)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(bad)?;
    Ok((filter, limit))
}

fn skip_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ').count();
    &s[n..]
}

/// Reads an unsigned decimal after optional spaces, like beanstalkd's `read_u64`: at least
/// one digit, no sign, no overflow. Returns the value and the bytes after its digits.
fn read_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let s = skip_spaces(s);
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in &s[..digits] {
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((n, &s[digits..]))
}

fn read_u32(s: &[u8]) -> Option<(u32, &[u8])> {
    let (n, rest) = read_u64(s)?;
    Some((u32::try_from(n).ok()?, rest))
}

fn read_u64_all(s: &[u8]) -> Option<u64> {
    match read_u64(s)? {
        (n, []) => Some(n),
        _ => None,
    }
}

fn read_u32_all(s: &[u8]) -> Option<u32> {
    match read_u32(s)? {
        (n, []) => Some(n),
        _ => None,
    }
}

/// The parts of a C `strtol`/`strtoul` conversion: leading whitespace, an optional sign,
/// then digits (bytes after them are ignored). Returns the sign, the magnitude (`None` if
/// it overflows 64 bits) and whether any digit was seen.
fn c_number(s: &[u8]) -> (bool, Option<u64>, bool) {
    let ws = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r'))
        .count();
    let mut s = &s[ws..];
    let negative = s.first() == Some(&b'-');
    if matches!(s.first(), Some(b'-' | b'+')) {
        s = &s[1..];
    }
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let mut n: Option<u64> = Some(0);
    for &d in &s[..digits] {
        n = n
            .and_then(|n| n.checked_mul(10))
            .and_then(|n| n.checked_add(u64::from(d - b'0')));
    }
    (negative, n, digits > 0)
}

/// C's `strtoul(s, &end, 10)` on a 64-bit platform, as beanstalkd uses for `kick`: a minus
/// sign negates modulo 2^64. `None` when there are no digits or the value overflows.
fn strtoul(s: &[u8]) -> Option<u64> {
    match c_number(s) {
        (_, _, false) | (_, None, _) => None,
        (negative, Some(n), true) => Some(if negative { n.wrapping_neg() } else { n }),
    }
}

/// C's `strtol(s, &end, 10)` on a 64-bit platform, as beanstalkd 1.12 uses for
/// `reserve-with-timeout`: no digits gives 0; `None` only when the value overflows.
fn strtol(s: &[u8]) -> Option<i64> {
    match c_number(s) {
        (_, _, false) => Some(0),
        (false, Some(n), true) => i64::try_from(n).ok(),
        (true, Some(n), true) if n <= 1 << 63 => Some((n as i64).wrapping_neg()),
        _ => None,
    }
}

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

    /// Decodes everything in `input`, fed in pieces of the given sizes.
    fn decode_all(input: &[u8], pieces: &[usize], max: u32) -> Vec<Result<Command, ProtocolError>> {
        let mut dec = CommandDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = input;
        let mut sizes = pieces.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            while let Some(item) = dec.decode(&mut buf).expect("decode never fails") {
                out.push(item);
            }
        }
        out
    }

    fn one(line: &str) -> Result<Command, ProtocolError> {
        let items = decode_all(line.as_bytes(), &[usize::MAX], 65_535);
        assert_eq!(items.len(), 1, "{line:?} gave {items:?}");
        items.into_iter().next().expect("one item")
    }

    #[test]
    fn parses_each_command_and_its_quirks() {
        let t = |s: &str| TubeName::new(s.as_bytes()).expect("tube");
        assert_eq!(
            one("reserve-with-timeout 5 junk\r\n"),
            Ok(Command::ReserveWithTimeout(5))
        );
        assert_eq!(
            one("reserve-with-timeout x\r\n"),
            Ok(Command::ReserveWithTimeout(0))
        );
        assert_eq!(
            one("reserve-with-timeout -1\r\n"),
            Ok(Command::ReserveWithTimeout(u32::MAX))
        );
        assert_eq!(
            one("reserve-with-timeout 4294967296\r\n"),
            Ok(Command::ReserveWithTimeout(0))
        );
        assert_eq!(
            one("reserve-with-timeout 99999999999999999999\r\n"),
            Err(ProtocolError::BadFormat)
        );
        assert_eq!(one("kick -1\r\n"), Ok(Command::Kick(u32::MAX)));
        assert_eq!(one("kick 4294967297\r\n"), Ok(Command::Kick(1)));
        assert_eq!(
            one("pause-tubedefault 3\r\n"),
            Ok(Command::PauseTube {
                tube: t("default"),
                delay: 3
            })
        );
        assert_eq!(
            one("pause-tube  a 0\r\n"),
            Ok(Command::PauseTube {
                tube: t("a"),
                delay: 0
            })
        );
        assert_eq!(
            one("pause-tube -a 0\r\n"),
            Err(ProtocolError::CountedBadFormat(CommandKind::PauseTube))
        );
        assert_eq!(one("pause-tube a\r\n"), Err(ProtocolError::BadFormat));
        assert_eq!(one("quit now\r\n"), Ok(Command::Quit));
        assert_eq!(
            one("put 0 0 1 1 x\r\n"),
            Err(ProtocolError::CountedBadFormat(CommandKind::Put))
        );
        assert_eq!(
            one("release 1 2 3\r\n"),
            Ok(Command::Release {
                id: JobId(1),
                pri: 2,
                delay: 3
            })
        );
    }

    #[test]
    fn a_body_over_the_limit_is_skipped_not_buffered() {
        let mut dec = CommandDecoder::new(10);
        let mut buf = BytesMut::from(&b"put 0 0 1 4000000000\r\n"[..]);
        assert_eq!(dec.decode(&mut buf).expect("ok"), None);
        for _ in 0..100 {
            buf.extend_from_slice(&[b'x'; 4096]);
            assert_eq!(dec.decode(&mut buf).expect("ok"), None);
            assert!(buf.is_empty(), "skipped bytes must not accumulate");
        }
    }

    fn command() -> impl Strategy<Value = Command> {
        let id = any::<u64>().prop_map(JobId);
        let name = "[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}"
            .prop_map(|s| TubeName::new(s.as_bytes()).expect("valid by construction"));
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(any::<u8>(), 0..300)
            )
                .prop_map(|(pri, delay, ttr, body)| Command::Put {
                    pri,
                    delay,
                    ttr,
                    body: body.into()
                }),
            name.clone().prop_map(Command::Use),
            Just(Command::Reserve),
            any::<u32>().prop_map(Command::ReserveWithTimeout),
            id.clone().prop_map(Command::ReserveJob),
            id.clone().prop_map(Command::Delete),
            (id.clone(), any::<u32>(), any::<u32>())
                .prop_map(|(id, pri, delay)| Command::Release { id, pri, delay }),
            (id.clone(), any::<u32>()).prop_map(|(id, pri)| Command::Bury { id, pri }),
            id.clone().prop_map(Command::Touch),
            name.clone().prop_map(Command::Watch),
            name.clone().prop_map(Command::Ignore),
            id.clone().prop_map(Command::Peek),
            Just(Command::PeekReady),
            Just(Command::PeekDelayed),
            Just(Command::PeekBuried),
            any::<u32>().prop_map(Command::Kick),
            id.clone().prop_map(Command::KickJob),
            id.prop_map(Command::StatsJob),
            name.clone().prop_map(Command::StatsTube),
            Just(Command::Stats),
            Just(Command::ListTubes),
            Just(Command::ListTubeUsed),
            Just(Command::ListTubesWatched),
            (name, any::<u32>()).prop_map(|(tube, delay)| Command::PauseTube { tube, delay }),
            Just(Command::Quit),
            // Short names: the whole line must fit in MAX_LINE_LEN.
            (
                "[a-z][a-z0-9-]{0,150}".prop_map(|s| TubeName::new(s.as_bytes()).expect("valid")),
                prop::sample::select(TubeSetting::ALL.to_vec()),
                any::<u64>(),
                any::<bool>()
            )
                .prop_map(|(tube, setting, raw, reset)| {
                    let value = setting_value(setting, raw);
                    Command::ConfigTube {
                        tube,
                        setting,
                        value: (!reset).then_some(value),
                    }
                }),
            (any::<u64>(), "[ -~]{0,150}").prop_map(|(id, message)| Command::Fail {
                id: JobId(id),
                message
            }),
            (dead_filter(), any::<u32>(), 0..3u8).prop_map(|(filter, limit, which)| match which {
                0 => Command::ListDead { filter, limit },
                1 => Command::KickDead { filter, limit },
                _ => Command::DeleteDead { filter, limit },
            }),
            "[!-~]{1,150}".prop_map(|t| Command::Auth(crate::protocol::Token(t.into()))),
        ]
    }

    /// A valid value of `setting` derived from `raw`.
    fn setting_value(setting: TubeSetting, raw: u64) -> u64 {
        match setting.unit() {
            crate::protocol::Unit::Count { max } => max.checked_add(1).map_or(raw, |m| raw % m),
            crate::protocol::Unit::Millis => raw % (crate::protocol::MAX_MILLIS + 1),
            crate::protocol::Unit::Thousandths { min, max } => min + raw % (max - min + 1),
        }
    }

    fn dead_filter() -> impl Strategy<Value = DeadFilter> {
        (
            prop::option::of("[a-z][a-z0-9-]{0,100}"),
            prop::option::of(prop::sample::select(BuryReason::ALL.to_vec())),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(|(tube, reason, older_than_ms, from, to)| DeadFilter {
                tube: tube.map(|t| TubeName::new(t.as_bytes()).expect("valid")),
                reason,
                older_than_ms,
                from: JobId(from),
                to: JobId(to),
            })
    }

    #[test]
    fn fail_and_the_dead_letter_commands_parse_strictly() {
        assert_eq!(
            one("fail 7 disk full: /var\r\n"),
            Ok(Command::Fail {
                id: JobId(7),
                message: "disk full: /var".into()
            })
        );
        assert_eq!(
            one("fail 7\r\n"),
            Ok(Command::Fail {
                id: JobId(7),
                message: String::new()
            })
        );
        assert_eq!(one("fail x\r\n"), Err(ProtocolError::BadFormat));
        assert_eq!(one("fail 7x\r\n"), Err(ProtocolError::BadFormat));
        assert_eq!(
            decode_all(b"fail 7 \xff\r\n", &[usize::MAX], 10),
            [Err(ProtocolError::BadFormat)]
        );
        let mut filter = DeadFilter::all();
        filter.reason = Some(BuryReason::MaxAttempts);
        filter.older_than_ms = 5000;
        assert_eq!(
            one("list-dead * max-attempts 5000 0 18446744073709551615 10\r\n"),
            Ok(Command::ListDead { filter, limit: 10 })
        );
        for bad in [
            "list-dead * * 0 0 1\r\n",
            "list-dead * * 0 0 1 1 1\r\n",
            "list-dead * nosuch 0 0 1 1\r\n",
            "list-dead * * -1 0 1 1\r\n",
            "list-dead * *  0 0 1 1\r\n",
            "kick-dead -x * 0 0 1 1\r\n",
            "delete-dead * * 0 0 1 4294967296\r\n",
        ] {
            assert_eq!(one(bad), Err(ProtocolError::BadFormat), "{bad:?}");
        }
    }

    #[test]
    fn config_tube_refuses_unknown_settings_and_bad_values() {
        let t = |s: &str| TubeName::new(s.as_bytes()).expect("tube");
        assert_eq!(
            one("config-tube jobs max-attempts 3\r\n"),
            Ok(Command::ConfigTube {
                tube: t("jobs"),
                setting: TubeSetting::MaxAttempts,
                value: Some(3)
            })
        );
        assert_eq!(
            one("config-tube jobs retry-backoff default\r\n"),
            Ok(Command::ConfigTube {
                tube: t("jobs"),
                setting: TubeSetting::RetryBackoff,
                value: None
            })
        );
        assert_eq!(
            one("config-tube jobs colour 3\r\n"),
            Err(ProtocolError::UnknownSetting)
        );
        for bad in [
            "config-tube jobs max-attempts x\r\n",
            "config-tube jobs max-attempts -1\r\n",
            "config-tube jobs max-attempts 3 \r\n",
            "config-tube jobs  max-attempts 3\r\n",
            "config-tube jobs max-attempts\r\n",
            "config-tube -jobs max-attempts 3\r\n",
            "config-tube jobs retry-jitter 1.5\r\n",
            "config-tube jobs retry-backoff 0.9\r\n",
        ] {
            assert_eq!(one(bad), Err(ProtocolError::BadFormat), "{bad:?}");
        }
        assert_eq!(one("config-tube\r\n"), Err(ProtocolError::UnknownCommand));
    }

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
        fn decode_of_encode_is_identity(cmds in prop::collection::vec(command(), 1..20), pieces in prop::collection::vec(1..50usize, 1..8)) {
            let mut wire = BytesMut::new();
            for c in &cmds {
                c.encode(&mut wire);
            }
            let got = decode_all(&wire, &pieces, u32::MAX);
            let want: Vec<_> = cmds.into_iter().map(Ok).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn any_bytes_decode_the_same_however_they_are_split(input in prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b' ')], 0..600), pieces in prop::collection::vec(1..300usize, 1..8)) {
            let whole = decode_all(&input, &[usize::MAX], 40);
            let split = decode_all(&input, &pieces, 40);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn replies_round_trip_through_the_client_decoder(id in any::<u64>(), body in prop::collection::vec(any::<u8>(), 0..100), n in any::<u32>()) {
            let replies = vec![
                Reply::Inserted(JobId(id)), Reply::BuriedId(JobId(id)), Reply::Buried,
                Reply::Reserved { id: JobId(id), body: body.clone().into() },
                Reply::Found { id: JobId(id), body: body.clone().into() },
                Reply::Ok(body.into()), Reply::Kicked(n), Reply::KickedJob, Reply::Watching(n as usize),
                Reply::Using(TubeName::default_tube()), Reply::DeadlineSoon, Reply::TimedOut,
                Reply::Deleted, Reply::Released, Reply::Touched, Reply::NotIgnored, Reply::NotFound,
                Reply::Paused, Reply::Draining, Reply::OutOfMemory, Reply::InternalError,
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
