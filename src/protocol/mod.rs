//! The beanstalkd wire protocol: bytes to [`Command`]s and [`Reply`]s to bytes, and back.
//!
//! This layer does no I/O and holds no broker state. Parsing is total: every byte sequence
//! decodes to a command or to a [`ProtocolError`] that has a wire reply of its own. The line
//! limit ([`MAX_LINE_LEN`]) and the job body limit (given to [`CommandDecoder::new`]) are
//! enforced here, before anything is allocated for an oversized body.
//!
//! The same types are used in both directions: the server decodes commands and encodes
//! replies, the client encodes commands and decodes replies.

mod command;
mod command_decode;
mod command_kind;
mod dead;
mod encode;
mod error;
mod parse;
mod reply;
mod reply_decode;
mod setting;

pub use command::{Command, JobId, Token, TubeName, MAX_DEAD_BATCH, MAX_TUBE_NAME_LEN};
pub use command_decode::{CommandDecoder, MAX_LINE_LEN};
pub use command_kind::CommandKind;
pub use dead::{BuryReason, DeadFilter};
pub use encode::CommandEncoder;
pub use error::ProtocolError;
pub use reply::Refusal;
pub use reply::{Body, BodyHole, Reply, StoredBody};
pub use reply_decode::{ReplyDecoder, DEFAULT_MAX_REPLY_BODY};
pub use setting::{format_thousandths, TubeSetting, Unit, MAX_MILLIS};
