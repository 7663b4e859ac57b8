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

/// When the write-ahead log is synced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before every reply that depends on a change (group commit shares one fdatasync
    /// among concurrent commands). The default: `INSERTED` means on stable storage.
    Always,
    /// Records are written to the OS before the reply, and synced at most this often
    /// (beanstalkd's `-f MS`): a power cut can lose up to this much confirmed work.
    Every(std::time::Duration),
    /// Records are written to the OS before the reply and never synced by larder
    /// (beanstalkd's `-F`): a power cut can lose confirmed work; a crash of larder alone
    /// cannot.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            // A bare number is milliseconds, as in beanstalkd's -f; a unit is accepted too
            // (`every=50ms`, `every=1s`).
            _ => match s.strip_prefix("every=").map(|t| {
                t.parse::<u64>()
                    .map(std::time::Duration::from_millis)
                    .or_else(|_| humantime::parse_duration(t))
            }) {
                Some(Ok(d)) if d.is_zero() => Ok(FsyncPolicy::Always),
                Some(Ok(d)) if d.as_millis() > 0 => Ok(FsyncPolicy::Every(d)),
                _ => Err(format!(
                    "{s:?}: expected always, never or every=MS (milliseconds, or a duration \
                     such as every=50ms)"
                )),
            },
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Every(d) => write!(f, "every={}", d.as_millis()),
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
    /// When the log is synced.
    pub fsync: FsyncPolicy,
    /// Largest log segment file, in bytes.
    pub segment_size: u64,
    /// Bytes of disk held in reserve for when the disk fills (0: none).
    pub disk_reserve: u64,
    /// Milliseconds the server's clock runs off the system clock (tests only; 0).
    pub clock_offset_ms: i64,
    /// Back-pressure limits (protocol.md §9.2).
    pub limits: crate::engine::Limits,
    /// How often free space on the data directory's filesystem is measured for
    /// `--min-free-disk`.
    pub disk_check_interval: std::time::Duration,
    /// How free space is measured (tests substitute their own reading).
    pub free_space: crate::datadir::FreeSpaceProbe,
    /// Tube settings for tubes that do not set their own (`--max-attempts` and friends).
    pub setting_defaults: crate::engine::SettingDefaults,
    /// Bounds on what one connection may hold and how long it may take.
    pub connections: ConnectionSettings,
    /// The user to run as once the socket is bound and the data directory locked
    /// (`-u`); `None` keeps the user that started the server.
    pub user: Option<String>,
    /// Whether long-lived jobs are copied forward so old segments can go (`-c`, the
    /// default; `-n` turns it off). Segments without live jobs are removed either way.
    pub compaction: bool,
    /// The metrics and health HTTP listener (`--metrics-listen`); `None`: off.
    pub metrics: Option<crate::server::metrics::MetricsSettings>,
    /// TLS and authentication on the protocol port; both off by default.
    pub security: SecurityConfig,
    /// Cluster mode (`--node-id` and friends); `None`: a single node, the default.
    pub cluster: Option<ClusterConfig>,
}

/// Cluster mode's settings (`--node-id`, `--cluster-listen`, `--peer`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id.
    pub node_id: u64,
    /// Where this node listens for the other nodes (and for clients proxied by them).
    pub listen: SocketAddr,
    /// The other members' ids and cluster addresses.
    pub peers: std::collections::BTreeMap<u64, String>,
    /// Addresses to dial instead of a member's own (`--peer-route`, for tests that put a
    /// fault-injecting proxy on a link); the membership keeps the members' own addresses.
    pub routes: std::collections::BTreeMap<u64, String>,
    /// The shared secret every connection to a cluster port must present
    /// (`--cluster-token-file`); `None`: none (the port must then be on a private network).
    pub token: Option<Vec<u8>>,
    /// Mutual TLS on every connection to and from the cluster port (`--cluster-tls-cert`,
    /// `--cluster-tls-key`, `--cluster-tls-ca`); `None`: plain TCP.
    pub tls: Option<ClusterTlsFiles>,
}

/// PEM files for mutual TLS among cluster members, read at start-up and again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// This member's certificate chain, leaf first (`--cluster-tls-cert`): presented both
    /// when it accepts and when it dials, so it needs IP (or DNS) names matching the
    /// addresses the other members dial, and both the serverAuth and clientAuth usages if
    /// it lists extended key usages.
    pub cert: PathBuf,
    /// Its private key (`--cluster-tls-key`): PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// The CA certificates every member's certificate must chain to (`--cluster-tls-ca`).
    pub ca: PathBuf,
}

/// TLS on the TCP listener and token or certificate authentication (protocol.md §10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecurityConfig {
    /// Certificate and key to serve TLS with (`--tls-cert`, `--tls-key`); `None` serves
    /// plain TCP. A Unix socket is always plain.
    pub tls: Option<TlsFiles>,
    /// The file of tokens and certificate subjects with their roles (`--auth-file`);
    /// `None` lets every client run every command, as beanstalkd does.
    pub auth_file: Option<PathBuf>,
    /// Failed `auth` attempts after which a connection is closed (`--max-auth-failures`).
    pub max_auth_failures: u32,
    /// Milliseconds a failed `auth` waits before its reply (`--auth-failure-delay`).
    pub auth_failure_delay_ms: u64,
}

impl SecurityConfig {
    /// The documented defaults: plain TCP, no authentication.
    pub const DEFAULT: SecurityConfig = SecurityConfig {
        tls: None,
        auth_file: None,
        max_auth_failures: 3,
        auth_failure_delay_ms: 1000,
    };
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig::DEFAULT
    }
}

/// PEM files for the TLS listener, read at start-up and again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// The private key (`--tls-key`): PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to (`--tls-client-ca`); with
    /// it, a client without a valid certificate fails the handshake (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// What one client connection may hold in memory and how long it may take, enforced by
/// the server around each connection (protocol.md §9). 0 turns a setting off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// Bytes of commands read ahead and held while a `reserve` blocks (or, before they
    /// run, in one batch); past it the server stops reading the connection until they
    /// have run (`--max-input-per-connection`). At least one command is always taken.
    pub max_input_per_connection: u64,
    /// Seconds a client may take to send the rest of a command (its line and body) once
    /// the first byte of it has arrived; a client that takes longer is disconnected
    /// (`--command-timeout`). A client waiting in `reserve` is never timed out by this.
    pub command_timeout: u64,
    /// Seconds of silence before TCP keepalive probes start on an accepted connection
    /// (`--tcp-keepalive`).
    pub tcp_keepalive: u64,
    /// Bytes of records queued for the log writer at which connections wait before
    /// running more commands (`--max-log-backlog`).
    pub max_log_backlog: u64,
}

impl ConnectionSettings {
    /// The documented defaults.
    pub const DEFAULT: ConnectionSettings = ConnectionSettings {
        max_input_per_connection: 256 << 10,
        command_timeout: 60,
        tcp_keepalive: 60,
        max_log_backlog: 64 << 20,
    };
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        ConnectionSettings::DEFAULT
    }
}

/// Default disk reserve: 32 MiB, room for about a million delete records.
pub const DEFAULT_DISK_RESERVE: u64 = 32 << 20;

/// Default interval between free-space measurements.
pub const DEFAULT_DISK_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Default largest log segment file: 64 MiB.
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;

/// Smallest `--wal-segment-size` a server takes (the log itself works with less; tests of
/// the log use tiny segments).
pub const MIN_SEGMENT_SIZE: u64 = 4096;

/// The largest `--max-job-size`: a put's record (its fields, a 200-byte tube name and the
/// body) must fit the log's largest payload.
pub const MAX_JOB_SIZE_LIMIT: u32 = (64 << 20) - 1024;

/// A server setting out of range; the message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ServerConfig {
    /// Checks every setting is in range: the one place the server's settings are
    /// validated, for the command line and for servers started in-process alike.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.max_job_size == 0 || self.max_job_size > MAX_JOB_SIZE_LIMIT {
            return bad(format!(
                "--max-job-size must be between 1 and {MAX_JOB_SIZE_LIMIT} (the log's record limit)"
            ));
        }
        let max_segment = crate::wal::WalOptions::MAX_SEGMENT_SIZE;
        if !(MIN_SEGMENT_SIZE..=max_segment).contains(&self.segment_size) {
            return bad(format!(
                "--wal-segment-size must be between {MIN_SEGMENT_SIZE} and {max_segment}"
            ));
        }
        if let Some(c) = &self.cluster {
            if self.fsync != FsyncPolicy::Always {
                return bad(
                    "cluster mode needs --fsync always: a node confirms its share of a commit only once it is on disk"
                        .to_owned(),
                );
            }
            if c.peers.contains_key(&c.node_id) {
                return bad(format!(
                    "--peer names this node's own id {}: list the other members only",
                    c.node_id
                ));
            }
            if c.peers.is_empty() {
                return bad("cluster mode needs at least one --peer".to_owned());
            }
            if let Some(id) = c.routes.keys().find(|id| !c.peers.contains_key(id)) {
                return bad(format!("--peer-route names {id}, which is not a --peer"));
            }
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 11300))),
            max_job_size: DEFAULT_MAX_JOB_SIZE,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            fsync: FsyncPolicy::Always,
            segment_size: DEFAULT_SEGMENT_SIZE,
            disk_reserve: DEFAULT_DISK_RESERVE,
            clock_offset_ms: 0,
            limits: crate::engine::Limits::DEFAULT,
            disk_check_interval: DEFAULT_DISK_CHECK_INTERVAL,
            free_space: crate::datadir::FreeSpaceProbe::default(),
            setting_defaults: crate::engine::SettingDefaults::default(),
            connections: ConnectionSettings::DEFAULT,
            user: None,
            compaction: true,
            metrics: None,
            security: SecurityConfig::DEFAULT,
            cluster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_is_the_one_check_of_the_server_settings() {
        assert_eq!(ServerConfig::default().validate(), Ok(()));
        for (size, ok) in [
            (MIN_SEGMENT_SIZE - 1, false),
            (MIN_SEGMENT_SIZE, true),
            (5 << 30, false),
        ] {
            let config = ServerConfig {
                segment_size: size,
                ..ServerConfig::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "segment size {size}");
        }
        for (z, ok) in [
            (0, false),
            (1, true),
            (MAX_JOB_SIZE_LIMIT, true),
            (MAX_JOB_SIZE_LIMIT + 1, false),
        ] {
            let config = ServerConfig {
                max_job_size: z,
                ..ServerConfig::default()
            };
            assert_eq!(config.validate().is_ok(), ok, "max job size {z}");
        }
    }

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

    #[test]
    fn fsync_policies_parse() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!("every=0".parse(), Ok(FsyncPolicy::Always));
        assert_eq!(
            "every=50".parse(),
            Ok(FsyncPolicy::Every(std::time::Duration::from_millis(50)))
        );
        assert_eq!(
            "every=1s".parse(),
            Ok(FsyncPolicy::Every(std::time::Duration::from_secs(1)))
        );
        assert!("every=x".parse::<FsyncPolicy>().is_err());
        assert!("every=500us".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
