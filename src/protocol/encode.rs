//! Encoding commands to their wire form (the client side).

use bytes::{BufMut, BytesMut};
use tokio_util::codec::Encoder;

use super::{Command, Token};

/// Encodes commands for sending; used by the client and by tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct CommandEncoder;

impl Command {
    /// Appends the canonical wire form of this command to `dst`: its name from
    /// [`CommandKind::name`](super::CommandKind::name), then its arguments.
    pub fn encode(&self, dst: &mut BytesMut) {
        use std::fmt::Write;
        use Command as C;
        let name = self.kind().name();
        let mut line = String::with_capacity(64);
        line.push_str(name);
        match self {
            // Bodies are bytes, not text: written after the line, not through it.
            C::Put {
                pri,
                delay,
                ttr,
                body,
            } => {
                // Writing to a String cannot fail.
                let _ = write!(line, " {pri} {delay} {ttr} {}\r\n", body.len());
                dst.reserve(line.len() + body.len() + 2);
                dst.put_slice(line.as_bytes());
                dst.put_slice(body);
                dst.put_slice(b"\r\n");
                return;
            }
            C::Auth(Token(token)) => {
                line.push(' ');
                dst.reserve(line.len() + token.len() + 2);
                dst.put_slice(line.as_bytes());
                dst.put_slice(token);
                dst.put_slice(b"\r\n");
                return;
            }
            _ => {}
        }
        // Writing to a String cannot fail.
        let _ = match self {
            C::Put { .. } | C::Auth(_) => Ok(()),
            C::Reserve
            | C::PeekReady
            | C::PeekDelayed
            | C::PeekBuried
            | C::Stats
            | C::ListTubes
            | C::ListTubeUsed
            | C::ListTubesWatched
            | C::Quit
            | C::ExtendedStats => Ok(()),
            C::Use(t) | C::Watch(t) | C::Ignore(t) | C::StatsTube(t) => write!(line, " {t}"),
            C::ReserveWithTimeout(n) | C::Kick(n) => write!(line, " {n}"),
            C::ReserveJob(id)
            | C::Delete(id)
            | C::Touch(id)
            | C::Peek(id)
            | C::KickJob(id)
            | C::StatsJob(id) => write!(line, " {id}"),
            C::Release { id, pri, delay } => write!(line, " {id} {pri} {delay}"),
            C::Bury { id, pri } => write!(line, " {id} {pri}"),
            C::PauseTube { tube, delay } => write!(line, " {tube} {delay}"),
            C::ConfigTube {
                tube,
                setting,
                value,
            } => match value {
                Some(v) => write!(line, " {tube} {setting} {}", setting.format(*v)),
                None => write!(line, " {tube} {setting} default"),
            },
            C::Fail { id, message } => write!(line, " {id} {message}"),
            C::ListDead { filter, limit }
            | C::KickDead { filter, limit }
            | C::DeleteDead { filter, limit } => write!(line, " {filter} {limit}"),
            C::ClusterAdd { id, addr } => write!(line, " {id} {addr}"),
            C::ClusterRemove(id) => write!(line, " {id}"),
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
