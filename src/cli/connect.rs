//! Reaching a server from the CLI: the address and reply-size flags every client
//! subcommand shares, errors that say what to check, and a closed standard output.

use anyhow::bail;
use clap::Args;

use crate::client::{Client, ClientError};
use crate::config::DEFAULT_LISTEN;
use crate::units::Size;

/// How to reach the server: shared by every subcommand that talks to one.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Server address, HOST:PORT (an IP address or host name, and a port).
    #[arg(long, env = "LARDER_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// Longest reply body accepted from the server: bytes, or a size with a unit (`64MiB`).
    /// A server that announces a longer one is treated as broken, so a hostile or confused
    /// server cannot make the client allocate without bound.
    #[arg(long, env = "LARDER_MAX_REPLY_SIZE", value_name = "SIZE",
          default_value_t = Size(crate::protocol::DEFAULT_MAX_REPLY_BODY))]
    pub max_reply_size: Size,
    /// TLS and the token to authenticate with.
    #[command(flatten)]
    pub secure: super::secure::ConnectArgs,
}

impl ConnArgs {
    /// Connects, with an error that says what to check when it fails.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        self.connect_to(&self.addr).await
    }

    /// Connects to `addr` (one of several given to `--addr`) with these settings; errors
    /// say what to check, as [`ConnArgs::connect`]'s do.
    pub async fn connect_to(&self, addr: &str) -> anyhow::Result<Client> {
        let has_port = addr
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !has_port {
            bail!(
                "--addr {addr:?} is not HOST:PORT; give the port too, e.g. {addr}:11300 \
                 (beanstalkd's and larder's default port)"
            );
        }
        let mut client = match self.secure.open(addr).await {
            Ok(client) => client,
            Err(ClientError::Connect { addr, cause }) => bail!(
                "cannot connect to {addr}: {cause}\nhint: is `larder serve` (or beanstalkd) \
                 running there? The address comes from --addr or LARDER_ADDR."
            ),
            Err(e) => return Err(e.into()),
        };
        client.set_max_reply(self.max_reply_size.0);
        self.secure.authenticate(&mut client, addr).await?;
        Ok(client)
    }
}

/// Whether `e` is a write to a closed pipe (the reader of standard output exited).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_standard_output_is_a_quiet_broken_pipe() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::from(pipe())));
        assert!(is_broken_pipe(
            &anyhow::Error::from(pipe()).context("writing the table")
        ));
        // The server's socket breaking is an error worth reporting.
        assert!(!is_broken_pipe(&anyhow::Error::from(ClientError::Io(
            pipe()
        ))));
        assert!(!is_broken_pipe(&anyhow::anyhow!("Broken pipe")));
    }
}
