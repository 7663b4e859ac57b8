//! Encoding commands to their wire form (the client side).

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Encoder;

use super::Command;

/// Encodes commands for sending; used by the client and by tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandEncoder;

impl Command {
    /// Appends the canonical wire form of this command to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        use std::fmt::Write;
        use Command as C;
        let mut line = String::with_capacity(64);
        // Writing to a String cannot fail.
        let _ = match self {
            C::Put {
                pri,
                delay,
                ttr,
                body,
            } => {
                let _ = write!(line, "put {pri} {delay} {ttr} {}\r\n", body.len());
                dst.reserve(line.len() + body.len() + 2);
                dst.put_slice(line.as_bytes());
                dst.put_slice(body);
                dst.put_slice(b"\r\n");
                return;
            }
            C::Auth(token) => {
                dst.reserve(token.0.len() + 7);
                dst.put_slice(b"auth ");
                dst.put_slice(&token.0);
                dst.put_slice(b"\r\n");
                return;
            }
            C::Use(t) => write!(line, "use {t}"),
            C::Reserve => write!(line, "reserve"),
            C::ReserveWithTimeout(t) => write!(line, "reserve-with-timeout {t}"),
            C::ReserveJob(id) => write!(line, "reserve-job {id}"),
            C::Delete(id) => write!(line, "delete {id}"),
            C::Release { id, pri, delay } => write!(line, "release {id} {pri} {delay}"),
            C::Bury { id, pri } => write!(line, "bury {id} {pri}"),
            C::Touch(id) => write!(line, "touch {id}"),
            C::Watch(t) => write!(line, "watch {t}"),
            C::Ignore(t) => write!(line, "ignore {t}"),
            C::Peek(id) => write!(line, "peek {id}"),
            C::PeekReady => write!(line, "peek-ready"),
            C::PeekDelayed => write!(line, "peek-delayed"),
            C::PeekBuried => write!(line, "peek-buried"),
            C::Kick(n) => write!(line, "kick {n}"),
            C::KickJob(id) => write!(line, "kick-job {id}"),
            C::StatsJob(id) => write!(line, "stats-job {id}"),
            C::StatsTube(t) => write!(line, "stats-tube {t}"),
            C::Stats => write!(line, "stats"),
            C::ListTubes => write!(line, "list-tubes"),
            C::ListTubeUsed => write!(line, "list-tube-used"),
            C::ListTubesWatched => write!(line, "list-tubes-watched"),
            C::PauseTube { tube, delay } => write!(line, "pause-tube {tube} {delay}"),
            C::Quit => write!(line, "quit"),
            C::ConfigTube {
                tube,
                setting,
                value,
            } => match value {
                Some(v) => write!(line, "config-tube {tube} {setting} {}", setting.format(*v)),
                None => write!(line, "config-tube {tube} {setting} default"),
            },
            C::Fail { id, message } => write!(line, "fail {id} {message}"),
            C::ListDead { filter, limit } => write!(line, "list-dead {filter} {limit}"),
            C::KickDead { filter, limit } => write!(line, "kick-dead {filter} {limit}"),
            C::DeleteDead { filter, limit } => write!(line, "delete-dead {filter} {limit}"),
            C::ExtendedStats => write!(line, "extended-stats"),
        };
        dst.reserve(line.len() + 2);
        dst.put_slice(line.as_bytes());
        dst.put_slice(b"\r\n");
    }
}

impl Encoder<&Command> for CommandEncoder {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Command, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode(dst);
        Ok(())
    }
}
