//! Validated server settings.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:11300";
/// Default maximum job body size in bytes (beanstalkd's default).
pub const DEFAULT_MAX_JOB_SIZE: u32 = 65_535;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./larder-data";

/// Everything `larder serve` needs, already validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Largest job body accepted, in bytes.
    pub max_job_size: u32,
    /// Directory for the server's data.
    pub data_dir: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 11300))),
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        }
    }
}
