//! Malformed input, as values. Each has exactly one wire reply.

use super::Reply;

/// Why a command line or job body was rejected by the decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The line is not a well-formed instance of a known command, is over
    /// [`super::MAX_LINE_LEN`] bytes, or contains a NUL byte.
    #[error("malformed command line")]
    BadFormat,
    /// A command whose arguments were read but then refused: a `put` header followed by
    /// extra bytes, or a `pause-tube` name that is too long or starts with `-`. Answered
    /// `BAD_FORMAT`, but beanstalkd counts it in that command's `cmd-*` statistic, so it is
    /// kept apart from other malformed lines.
    #[error("arguments of {0:?} refused")]
    CountedBadFormat(super::CommandKind),
    /// The line names no known command.
    #[error("unknown command")]
    UnknownCommand,
    /// A `put` body was not followed by `\r\n`. The header was valid.
    #[error("job body not followed by CRLF")]
    ExpectedCrlf,
    /// A `put` announced a body larger than the server's maximum job size; the body was
    /// read and discarded.
    #[error("job body larger than the maximum job size")]
    JobTooBig,
    /// `config-tube` named a setting that does not exist (larder extension).
    #[error("unknown tube setting")]
    UnknownSetting,
}

impl ProtocolError {
    /// The reply the client gets for this error.
    pub fn reply(self) -> Reply {
        match self {
            ProtocolError::BadFormat | ProtocolError::CountedBadFormat(_) => Reply::BadFormat,
            ProtocolError::UnknownCommand => Reply::UnknownCommand,
            ProtocolError::ExpectedCrlf => Reply::ExpectedCrlf,
            ProtocolError::JobTooBig => Reply::JobTooBig,
            ProtocolError::UnknownSetting => Reply::UnknownSetting,
        }
    }
}
