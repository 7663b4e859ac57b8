//! TLS and authentication flags: the server's (`larder serve --tls-cert …`), the client's
//! (flattened into every command that connects), and `larder auth hash`.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::client::{Client, ClientError, TlsOptions};
use crate::config::{SecurityConfig, TlsFiles};
use crate::server::auth::{new_token, token_line, Roles};

/// `larder serve`'s TLS and authentication flags.
#[derive(Debug, Args)]
pub struct ServeSecurityArgs {
    /// Serve TLS on the TCP listener with this certificate chain (PEM, leaf first);
    /// needs --tls-key. Read again on SIGHUP.
    #[arg(
        long,
        env = "LARDER_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "LARDER_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Require a client certificate that chains to these CA certificates (PEM): mutual
    /// TLS. Needs --tls-cert.
    #[arg(
        long,
        env = "LARDER_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Require authentication: tokens (hashed) and certificate subjects with their roles,
    /// one a line (protocol.md §10; `larder auth hash` makes a line). Read again on SIGHUP.
    #[arg(long, env = "LARDER_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Failed `auth` attempts after which the connection is closed (at least 1).
    #[arg(long, env = "LARDER_MAX_AUTH_FAILURES", default_value_t = SecurityConfig::DEFAULT.max_auth_failures)]
    pub max_auth_failures: u32,
    /// Milliseconds a failed `auth` waits before its reply.
    #[arg(long, env = "LARDER_AUTH_FAILURE_DELAY", value_name = "MS", default_value_t = SecurityConfig::DEFAULT.auth_failure_delay_ms)]
    pub auth_failure_delay: u64,
}

impl ServeSecurityArgs {
    /// The validated settings.
    pub fn config(&self) -> anyhow::Result<SecurityConfig> {
        if self.max_auth_failures == 0 {
            bail!("--max-auth-failures must be at least 1");
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            (None, None) if self.tls_client_ca.is_some() => {
                bail!("--tls-client-ca needs --tls-cert and --tls-key")
            }
            (None, None) => None,
            _ => bail!("--tls-cert and --tls-key go together"),
        };
        Ok(SecurityConfig {
            tls,
            auth_file: self.auth_file.clone(),
            max_auth_failures: self.max_auth_failures,
            auth_failure_delay_ms: self.auth_failure_delay,
        })
    }
}

/// How a client command reaches a server: TLS and a token.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectArgs {
    /// Connect with TLS (implied by --tls-ca and --tls-cert).
    #[arg(long, env = "LARDER_TLS")]
    pub tls: bool,
    /// CA certificates (PEM) the server's certificate must chain to; without it, the
    /// system's trust store.
    #[arg(long, env = "LARDER_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for servers that require one; needs --tls-key.
    #[arg(
        long,
        env = "LARDER_CLIENT_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        long,
        env = "LARDER_CLIENT_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must be valid for (default: the host of --addr).
    #[arg(long, env = "LARDER_TLS_SERVER_NAME", value_name = "NAME")]
    pub tls_server_name: Option<String>,
    /// Send `auth TOKEN` before anything else.
    #[arg(
        long,
        env = "LARDER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

impl ConnectArgs {
    /// Connects to `addr`, with TLS if asked for, and authenticates if a token is set.
    pub async fn connect(&self, addr: &str) -> anyhow::Result<Client> {
        let mut client = self.open(addr).await?;
        self.authenticate(&mut client, addr).await?;
        Ok(client)
    }

    /// Connects to `addr`, with TLS if asked for.
    pub async fn open(&self, addr: &str) -> Result<Client, ClientError> {
        let tls = self.tls || self.tls_ca.is_some() || self.tls_cert.is_some();
        if tls {
            let options = TlsOptions {
                ca: self.tls_ca.clone(),
                identity: self.tls_cert.clone().zip(self.tls_key.clone()),
                server_name: self.tls_server_name.clone(),
            };
            Client::connect_tls(addr, &options).await
        } else {
            Client::connect(addr).await
        }
    }

    /// Sends `auth` with the token, if one is set.
    pub async fn authenticate(&self, client: &mut Client, addr: &str) -> anyhow::Result<()> {
        if let Some(token) = &self.token {
            client
                .auth(token)
                .await
                .with_context(|| format!("authenticating to {addr}"))?;
        }
        Ok(())
    }
}

/// `larder auth …`
#[derive(Debug, Subcommand)]
pub enum AuthCmd {
    /// Print an auth file line for a token: the token is read from the first line of
    /// standard input, or made up with --generate (and then printed to standard error).
    Hash(HashArgs),
}

/// Arguments of `larder auth hash`.
#[derive(Debug, Args)]
pub struct HashArgs {
    /// A name for the token, shown in the server's log.
    #[arg(long)]
    pub name: String,
    /// Roles: producer, worker, admin, or several joined by commas.
    #[arg(long)]
    pub role: Roles,
    /// Make a new random token (32 bytes, hex) instead of reading one.
    #[arg(long)]
    pub generate: bool,
}

/// `larder auth …`: writes the line to `out`, a generated token to `err`.
pub fn auth(
    cmd: AuthCmd,
    input: &mut impl BufRead,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<()> {
    let AuthCmd::Hash(args) = cmd;
    let token = if args.generate {
        let token = new_token()?;
        writeln!(err, "token: {token}")?;
        token
    } else {
        let mut line = String::new();
        input
            .read_line(&mut line)
            .context("reading the token from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    writeln!(out, "{}", token_line(&args.name, args.role, &token)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Cmd};
    use crate::config::SecurityConfig;

    fn serve(args: &[&str]) -> anyhow::Result<SecurityConfig> {
        let cli = Cli::try_parse_from(["larder", "serve"].iter().chain(args))?;
        let Cmd::Serve(serve) = cli.command else {
            panic!("not serve");
        };
        serve.security.config()
    }

    #[test]
    fn security_flags_reach_the_server_config() {
        assert_eq!(serve(&[]).expect("defaults"), SecurityConfig::DEFAULT);
        let config = serve(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-client-ca",
            "ca.pem",
            "--auth-file",
            "auth",
            "--max-auth-failures",
            "5",
            "--auth-failure-delay",
            "20",
        ])
        .expect("config");
        let tls = config.tls.expect("tls");
        assert_eq!(tls.cert.to_str(), Some("c.pem"));
        assert_eq!(tls.key.to_str(), Some("k.pem"));
        assert_eq!(
            tls.client_ca
                .and_then(|p| p.to_str().map(str::to_owned))
                .as_deref(),
            Some("ca.pem")
        );
        assert_eq!(
            config
                .auth_file
                .and_then(|p| p.to_str().map(str::to_owned))
                .as_deref(),
            Some("auth")
        );
        assert_eq!(
            (config.max_auth_failures, config.auth_failure_delay_ms),
            (5, 20)
        );
    }

    #[test]
    fn incomplete_tls_flags_and_a_zero_failure_cap_are_refused() {
        for args in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--tls-client-ca", "ca.pem"],
            &["--max-auth-failures", "0"],
        ] {
            assert!(serve(args).is_err(), "{args:?} accepted");
        }
    }
}
