//! Validated server settings.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11300";
/// Default maximum job body size in bytes (beanstalkd's default).
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./larder-data";

/// Where the server listens: a TCP address, or a Unix socket path (`unix:PATH`, as in
/// beanstalkd's `-l unix:PATH`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address and port.
    Tcp(SocketAddr),
    /// A Unix domain socket path.
    Unix(PathBuf),
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some("") => Err("unix: needs a socket path".to_owned()),
            Some(path) => Ok(ListenAddr::Unix(PathBuf::from(path))),
            None => s
                .parse()
                .map(ListenAddr::Tcp)
                .map_err(|e| format!("{s:?} is neither HOST:PORT nor unix:PATH ({e})")),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Everything `larder serve` needs, already validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Where to listen.
    pub listen: ListenAddr,
    /// Largest job body accepted, in bytes.
    pub max_job_size: u32,
    /// Directory for the server's data.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 11300))),
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_as_tcp_or_unix() {
        assert_eq!(
            "127.0.0.1:11300".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 11300))))
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix(PathBuf::from("/tmp/x.sock")))
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
    }
}
