//! The server's command decoder: command lines and job bodies to [`Command`]s.
//!
//! Framing follows beanstalkd 1.12: a command line ends at the first `\r\n` and may be at
//! most [`MAX_LINE_LEN`] bytes including it; a longer line is discarded up to its `\r\n` and
//! answered `BAD_FORMAT`. A `put` body is exactly the announced size plus `\r\n`; a body over
//! the limit is read and thrown away in pieces, never buffered whole. Command names come
//! from [`CommandKind`]'s table; the number readers from [`super::parse`].

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

use super::command::is_name_char;
use super::parse::{
    find_crlf, read_u32, read_u32_all, read_u64, read_u64_all, skip_spaces, strtol, strtoul,
};
use super::{
    BuryReason, Command, CommandKind, DeadFilter, JobId, ProtocolError, Token, TubeName,
    TubeSetting,
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

fn parse_line(line: &[u8], max_job_size: u32) -> Parsed {
    use Command as C;
    use CommandKind as K;
    if line.contains(&0) {
        return Parsed::Done(Err(ProtocolError::BadFormat));
    }
    let Some((kind, args)) = CommandKind::match_line(line) else {
        return Parsed::Done(Err(ProtocolError::UnknownCommand));
    };
    let bad = ProtocolError::BadFormat;
    let exact = |c: Command| if args.is_empty() { Ok(c) } else { Err(bad) };
    let id = |make: fn(JobId) -> Command| read_u64_all(args).map(|n| make(JobId(n))).ok_or(bad);
    let tube = |make: fn(TubeName) -> Command| TubeName::new(args).map(make).ok_or(bad);
    let result = match kind {
        K::Put => return parse_put(args, max_job_size),
        K::Peek => id(C::Peek),
        K::PeekReady => exact(C::PeekReady),
        K::PeekDelayed => exact(C::PeekDelayed),
        K::PeekBuried => exact(C::PeekBuried),
        // beanstalkd 1.12 reads the timeout with strtol and keeps its low 32 bits.
        K::ReserveWithTimeout => strtol(args)
            .map(|t| C::ReserveWithTimeout(t as u32))
            .ok_or(bad),
        K::ReserveJob => id(C::ReserveJob),
        K::Reserve => exact(C::Reserve),
        K::Delete => id(C::Delete),
        K::Release => (|| {
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
        K::Bury => (|| {
            let (id, rest) = read_u64(args)?;
            let pri = read_u32_all(rest)?;
            Some(C::Bury { id: JobId(id), pri })
        })()
        .ok_or(bad),
        K::Kick => strtoul(args).map(|n| C::Kick(n as u32)).ok_or(bad),
        K::KickJob => id(C::KickJob),
        K::Touch => id(C::Touch),
        K::StatsJob => id(C::StatsJob),
        K::StatsTube => tube(C::StatsTube),
        K::Stats => exact(C::Stats),
        K::Use => tube(C::Use),
        K::Watch => tube(C::Watch),
        K::Ignore => tube(C::Ignore),
        K::ListTubesWatched => exact(C::ListTubesWatched),
        K::ListTubeUsed => exact(C::ListTubeUsed),
        K::ListTubes => exact(C::ListTubes),
        K::ExtendedStats => exact(C::ExtendedStats),
        K::Auth => Ok(C::Auth(Token(Bytes::copy_from_slice(args)))),
        // beanstalkd closes on any line starting with "quit".
        K::Quit => Ok(C::Quit),
        K::PauseTube => parse_pause(args),
        K::ConfigTube => parse_config(args),
        K::Fail => parse_fail(args),
        K::ListDead => parse_dead(args).map(|(filter, limit)| C::ListDead { filter, limit }),
        K::KickDead => parse_dead(args).map(|(filter, limit)| C::KickDead { filter, limit }),
        K::DeleteDead => parse_dead(args).map(|(filter, limit)| C::DeleteDead { filter, limit }),
        K::ClusterAdd => (|| {
            let (id, rest) = read_u64(args)?;
            let addr = std::str::from_utf8(rest.strip_prefix(b" ")?)
                .ok()?
                .parse()
                .ok()?;
            (id > 0).then_some(C::ClusterAdd { id, addr })
        })()
        .ok_or(bad),
        K::ClusterRemove => read_u64_all(args)
            .filter(|&id| id > 0)
            .map(C::ClusterRemove)
            .ok_or(bad),
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

#[cfg(test)]
mod tests;
