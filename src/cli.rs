//! The command line: flags as clap parses them, and one function per subcommand.
//!
//! Doc comments on the argument structs are the `--help` text.

pub mod cluster;
mod connect;
pub mod dlq;
pub mod export;
pub mod job;
mod log_format;
pub mod secure;
mod stats;
pub mod summary;
pub mod tube;
pub mod tubes;
mod wal;

pub use connect::{is_broken_pipe, ConnArgs};
pub use log_format::{log_format, LogFormat};
pub use stats::{json_scalar, print_fields, stats, StatsArgs};
pub use wal::{wal_dir, wal_dump, wal_verify, WalArgs, WalCmd};

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::config::{ConnectionSettings, FsyncPolicy, ListenAddr, ServerConfig, DEFAULT_LISTEN};
use crate::engine::Limits;
use crate::protocol::{Command, Reply, TubeName, TubeSetting};
use crate::units::Size;

/// larder: a durable job broker that speaks the beanstalkd protocol.
#[derive(Debug, Parser)]
#[command(name = "larder", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the broker.
    Serve(Box<ServeArgs>),
    /// Show a summary of one or several running servers (`--all` for every field).
    Stats(StatsArgs),
    /// List every tube of one or several running servers: jobs, waiters, pause, dead letters.
    Tubes(tubes::TubesArgs),
    /// Put one job (body from the argument, or standard input) and print its id.
    Put(PutArgs),
    /// Reserve one job, print its body to standard output, and delete it.
    Reserve(ReserveArgs),
    /// Show one job (any state) and its body without changing it: by id, or the next
    /// ready, delayed or buried job of a tube.
    Peek(job::PeekArgs),
    /// Inspect a data directory's write-ahead log offline (the server need not run).
    #[command(subcommand)]
    Wal(WalCmd),
    /// Configure a tube's retry policy and limits, or show its settings and statistics.
    #[command(subcommand)]
    Tube(tube::TubeCmd),
    /// Inspect, redrive, delete, export and import dead letters (buried jobs).
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
    /// Inspect a cluster (see README's "Running a cluster").
    #[command(subcommand)]
    Cluster(cluster::ClusterCmd),
    /// Make auth file lines (see `larder serve --auth-file`).
    #[command(subcommand)]
    Auth(secure::AuthCmd),
}

pub use crate::config::MAX_JOB_SIZE_LIMIT;

/// `larder serve`. beanstalkd's flags (`-l -p -z -b -f -F -s -u -c -n -V -v`) are accepted
/// too, so larder can replace beanstalkd in an existing service definition.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: HOST:PORT, or unix:PATH for a Unix domain socket.
    #[arg(long, env = "LARDER_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: ListenAddr,
    /// Listen on this IP address, or on unix:PATH, instead of --listen (beanstalkd's -l).
    #[arg(short = 'l', long = "host", env = "LARDER_HOST")]
    pub host: Option<String>,
    /// Listen on this port instead of the one in --listen (beanstalkd's -p).
    #[arg(short = 'p', long = "port", env = "LARDER_PORT")]
    pub port: Option<u16>,
    /// Largest job body accepted: bytes, or a size with a unit (`64KiB`, `1MiB`); larger
    /// puts get JOB_TOO_BIG (beanstalkd's -z). At most 64MiB - 1024 bytes.
    #[arg(short = 'z', long, env = "LARDER_MAX_JOB_SIZE", value_name = "SIZE",
          default_value_t = Size(crate::config::DEFAULT_MAX_JOB_SIZE.into()))]
    pub max_job_size: Size,
    /// Threads serving connections. 1 (the default) runs every connection on one thread,
    /// as beanstalkd does, which gives the lowest latency on small machines; more threads
    /// help when many connections each do expensive work.
    #[arg(long, env = "LARDER_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// When to sync the log: always (before every reply that depends on a change; the
    /// default), every=MS (at most every MS milliseconds; a duration such as every=50ms also
    /// works), or never.
    #[arg(long, env = "LARDER_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Largest log segment file: bytes, or a size with a unit (`64MiB`); at least 4096 (beanstalkd's -s).
    /// Space is reclaimed a whole segment at a time.
    #[arg(short = 's', long, env = "LARDER_WAL_SEGMENT_SIZE", value_name = "SIZE",
          default_value_t = Size(crate::config::DEFAULT_SEGMENT_SIZE))]
    pub wal_segment_size: Size,
    /// Disk space kept in reserve, in the file `wal-reserve` in the data directory (bytes,
    /// or a size with a unit). When the disk fills, the log releases it so in-flight work is
    /// confirmed and workers can keep deleting, releasing and burying while new jobs
    /// are refused (`REFUSED log-full`); it is taken back once space returns. 0 disables.
    #[arg(long, env = "LARDER_DISK_RESERVE", value_name = "SIZE",
          default_value_t = Size(crate::config::DEFAULT_DISK_RESERVE))]
    pub disk_reserve: Size,
    /// For tests: run the server's clock this many milliseconds off the system clock (a
    /// cluster member whose clock disagrees with the others').
    #[arg(
        long,
        value_name = "MS",
        hide = true,
        allow_negative_numbers = true,
        default_value_t = 0
    )]
    pub clock_offset_ms: i64,
    /// beanstalkd's -f MS: sync at most every MS milliseconds (0 means always); overrides
    /// --fsync.
    #[arg(short = 'f', value_name = "MS", conflicts_with = "fsync_never")]
    pub fsync_ms: Option<u64>,
    /// beanstalkd's -F: never sync.
    #[arg(short = 'F', id = "fsync_never")]
    pub fsync_never: bool,
    /// Run as this user once the port is bound and the data directory locked (beanstalkd's
    /// -u). Needs root; what root owns in the data directory is given to the user first.
    #[arg(short = 'u', long, env = "LARDER_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Turn off compaction: jobs that outlive their segment are not copied forward, so one
    /// long-lived job keeps its segment and every later one on disk (beanstalkd's -n).
    /// Segments without live jobs are still removed.
    #[arg(
        short = 'n',
        long,
        env = "LARDER_NO_COMPACTION",
        overrides_with = "compaction"
    )]
    pub no_compaction: bool,
    /// Compact the log (the default; beanstalkd's -c). Overrides an earlier -n.
    #[arg(short = 'c', long, overrides_with = "no_compaction")]
    pub compaction: bool,
    /// Log more: -V adds debug lines, -VV trace lines (beanstalkd's -V). Without it,
    /// LARDER_LOG chooses (default info).
    #[arg(short = 'V', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print the version and exit (beanstalkd's -v).
    #[arg(short = 'v', long)]
    pub version: bool,
    /// Directory for the server's data (beanstalkd's -b). Created if missing.
    #[arg(short = 'b', long, env = "LARDER_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Most jobs the server holds, counting every state (ready, delayed, reserved,
    /// buried); a put beyond it gets REFUSED max-jobs. 0: no limit.
    #[arg(long, env = "LARDER_MAX_JOBS", default_value_t = Limits::DEFAULT.max_jobs)]
    pub max_jobs: u64,
    /// Most body bytes the server holds, summed over jobs in every state (bytes, or a size
    /// with a unit: `4GiB`); a put that would go over gets REFUSED max-bytes. 0: no limit.
    #[arg(long, env = "LARDER_MAX_BYTES", value_name = "SIZE",
          default_value_t = Size(Limits::DEFAULT.max_bytes))]
    pub max_bytes: Size,
    /// Most jobs one tube holds (every state), for tubes without a setting of their own;
    /// a put beyond it gets REFUSED max-tube-jobs. 0: no limit.
    #[arg(long, env = "LARDER_MAX_TUBE_JOBS", default_value_t = TubeSetting::MaxTubeJobs.builtin_default())]
    pub max_tube_jobs: u64,
    /// Most body bytes one tube holds (every state), for tubes without a setting of their
    /// own (bytes, or a size with a unit); a put that would go over gets REFUSED
    /// max-tube-bytes. 0: no limit.
    #[arg(long, env = "LARDER_MAX_TUBE_BYTES", value_name = "SIZE",
          default_value_t = Size(TubeSetting::MaxTubeBytes.builtin_default()))]
    pub max_tube_bytes: Size,
    /// Most client connections open at once; one more is sent "REFUSED max-connections"
    /// and closed. 0: no limit.
    #[arg(long, env = "LARDER_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT.max_connections)]
    pub max_connections: u64,
    /// Reply bytes waiting to be written to one client (bytes, or a size with a unit) at
    /// which the server stops reading that client's commands until it reads its replies.
    /// 0: no limit.
    #[arg(long, env = "LARDER_MAX_OUTPUT_PER_CONNECTION", value_name = "SIZE",
          default_value_t = Size(Limits::DEFAULT.max_output_per_connection))]
    pub max_output_per_connection: Size,
    /// How long a client may leave waiting replies unread (not one byte taken) before it
    /// is disconnected: seconds, or a duration in whole seconds (`90s`, `2m`). 0: never.
    #[arg(long, env = "LARDER_OUTPUT_STALL_TIMEOUT", value_name = "SECONDS",
          value_parser = crate::units::seconds_arg,
          default_value_t = Limits::DEFAULT.output_stall_timeout as u32)]
    pub output_stall_timeout: u32,
    /// Free space the data directory's filesystem must keep (bytes, or a size with a
    /// unit); while it has less, puts get REFUSED min-free-disk (deletes and other commands
    /// still work). Measured every second. 0: no floor.
    #[arg(long, env = "LARDER_MIN_FREE_DISK", value_name = "SIZE",
          default_value_t = Size(Limits::DEFAULT.min_free_disk))]
    pub min_free_disk: Size,
    /// Bytes of a client's commands (bytes, or a size with a unit) the server reads ahead
    /// and holds while its reserve blocks (or before they run); past it, that connection
    /// is not read until they run. One command is always taken. 0: no limit.
    #[arg(long, env = "LARDER_MAX_INPUT_PER_CONNECTION", value_name = "SIZE",
          default_value_t = Size(ConnectionSettings::DEFAULT.max_input_per_connection))]
    pub max_input_per_connection: Size,
    /// How long a client may take to finish sending a command (line and body) once its
    /// first byte arrived: seconds, or a duration in whole seconds (`90s`, `2m`); slower
    /// clients are disconnected. Never applies to a client waiting in reserve. 0: no limit.
    #[arg(long, env = "LARDER_COMMAND_TIMEOUT", value_name = "SECONDS",
          value_parser = crate::units::seconds_arg,
          default_value_t = ConnectionSettings::DEFAULT.command_timeout as u32)]
    pub command_timeout: u32,
    /// Silence on a TCP connection before keepalive probes check that the client's host is
    /// still there: seconds, or a duration in whole seconds. 0: no keepalive.
    #[arg(long, env = "LARDER_TCP_KEEPALIVE", value_name = "SECONDS",
          value_parser = crate::units::seconds_arg,
          default_value_t = ConnectionSettings::DEFAULT.tcp_keepalive as u32)]
    pub tcp_keepalive: u32,
    /// Record bytes waiting for the log writer (bytes, or a size with a unit) at which
    /// connections pause before running more commands, until the writer catches up.
    /// 0: no limit.
    #[arg(long, env = "LARDER_MAX_LOG_BACKLOG", value_name = "SIZE",
          default_value_t = Size(ConnectionSettings::DEFAULT.max_log_backlog))]
    pub max_log_backlog: Size,
    /// Most tubes that exist at once; a use, watch or config-tube that would create one
    /// more gets REFUSED max-tubes. 0: no limit.
    #[arg(long, env = "LARDER_MAX_TUBES", default_value_t = Limits::DEFAULT.max_tubes)]
    pub max_tubes: u64,
    /// Most tubes one connection watches; a watch of one more gets
    /// REFUSED max-watches-per-connection. 0: no limit.
    #[arg(long, env = "LARDER_MAX_WATCHES_PER_CONNECTION", default_value_t = Limits::DEFAULT.max_watches_per_connection)]
    pub max_watches_per_connection: u64,
    /// Attempts before a job is buried automatically, for tubes that set none. Default 0:
    /// unlimited.
    #[arg(long, env = "LARDER_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<String>,
    /// Delay before retrying a job whose reservation timed out, was abandoned or failed, for
    /// tubes that set none: a duration with a unit (`500ms`, `30s`, `5m`, `1h`; a bare
    /// number is refused). Default 0: ready at once, as in beanstalkd.
    #[arg(long, env = "LARDER_RETRY_DELAY", value_name = "DURATION")]
    pub retry_delay: Option<String>,
    /// Factor the retry delay grows by with each attempt (default 2).
    #[arg(long, env = "LARDER_RETRY_BACKOFF", value_name = "X")]
    pub retry_backoff: Option<String>,
    /// Longest retry delay: a duration with a unit (`10m`). Default 0: no cap.
    #[arg(long, env = "LARDER_RETRY_MAX", value_name = "DURATION")]
    pub retry_max: Option<String>,
    /// Fraction of each retry delay taken off at random, 0 to 1. Default 0.
    #[arg(long, env = "LARDER_RETRY_JITTER", value_name = "F")]
    pub retry_jitter: Option<String>,
    /// Serve /metrics (OpenMetrics), /healthz and /readyz over HTTP on IP:PORT. Off
    /// unless given.
    #[arg(long, env = "LARDER_METRICS_LISTEN", value_name = "IP:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Tubes (the first in name order) that get series of their own in /metrics; the
    /// others are summed under tube="_other".
    #[arg(long, env = "LARDER_METRICS_MAX_TUBES", default_value_t = crate::server::metrics::DEFAULT_MAX_TUBES)]
    pub metrics_max_tubes: u64,
    /// HTTP connections the metrics listener serves at once (at least 1); more wait.
    #[arg(long, env = "LARDER_METRICS_MAX_CONNECTIONS", default_value_t = crate::server::metrics::DEFAULT_MAX_CONNECTIONS)]
    pub metrics_max_connections: u64,
    #[command(flatten)]
    pub security: secure::ServeSecurityArgs,
    /// Cluster mode: this node's id (a positive integer, unique in the cluster). With
    /// --cluster-listen and one --peer per other member; see README's "Running a cluster".
    #[arg(long, env = "LARDER_NODE_ID", requires_all = ["cluster_listen", "peer"])]
    pub node_id: Option<u64>,
    /// Cluster mode: where this node listens for the other members (HOST:PORT).
    #[arg(long, env = "LARDER_CLUSTER_LISTEN", requires = "node_id")]
    pub cluster_listen: Option<std::net::SocketAddr>,
    /// Cluster mode: another member, as ID=HOST:PORT (its --cluster-listen); once per member.
    #[arg(long, value_name = "ID=HOST:PORT", requires = "node_id")]
    pub peer: Vec<String>,
    /// Cluster mode: a file holding a secret (1 to 255 bytes; a final newline is ignored)
    /// that every member shares; connections to the cluster port must present it.
    /// Without it the cluster port accepts anyone who can reach it.
    #[arg(
        long,
        env = "LARDER_CLUSTER_TOKEN_FILE",
        value_name = "PATH",
        requires = "node_id"
    )]
    pub cluster_token_file: Option<std::path::PathBuf>,
    /// Cluster mode: this member's certificate chain (PEM, leaf first) for mutual TLS on
    /// every connection to and from the cluster port; needs --cluster-tls-key and
    /// --cluster-tls-ca. Its names must match the addresses the members dial (IP SANs for
    /// IP addresses); see README's "Running a cluster".
    #[arg(long, env = "LARDER_CLUSTER_TLS_CERT", value_name = "PEM")]
    pub cluster_tls_cert: Option<std::path::PathBuf>,
    /// Cluster mode: the private key of --cluster-tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "LARDER_CLUSTER_TLS_KEY", value_name = "PEM")]
    pub cluster_tls_key: Option<std::path::PathBuf>,
    /// Cluster mode: the CA certificates (PEM) every member's certificate must chain to;
    /// members that cannot show one are refused at the handshake, both ways.
    #[arg(long, env = "LARDER_CLUSTER_TLS_CA", value_name = "PEM")]
    pub cluster_tls_ca: Option<std::path::PathBuf>,
    /// For tests: dial this address to reach member ID (a fault-injecting proxy, say)
    /// while the membership keeps its own address.
    #[arg(long, value_name = "ID=HOST:PORT", hide = true, requires = "node_id")]
    pub peer_route: Vec<String>,
}

/// The `--cluster-tls-*` flags: all three or none, and only in cluster mode.
fn cluster_tls_files(
    cluster_mode: bool,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
    ca: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<crate::config::ClusterTlsFiles>> {
    let given = [
        ("--cluster-tls-cert", cert),
        ("--cluster-tls-key", key),
        ("--cluster-tls-ca", ca),
    ];
    if given.iter().all(|(_, f)| f.is_none()) {
        return Ok(None);
    }
    if !cluster_mode {
        bail!(
            "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca are for cluster mode (--node-id and --cluster-listen)"
        );
    }
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(crate::config::ClusterTlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        })),
        _ => {
            let missing: Vec<&str> = given
                .iter()
                .filter(|(_, f)| f.is_none())
                .map(|(name, _)| *name)
                .collect();
            bail!(
                "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together: {} missing",
                missing.join(" and ")
            )
        }
    }
}

/// Reads `--cluster-token-file`: 1 to 255 bytes, a final newline left out.
fn read_cluster_token(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let mut token = std::fs::read(path)
        .with_context(|| format!("reading --cluster-token-file {}", path.display()))?;
    while token.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        token.pop();
    }
    if token.is_empty() || token.len() > 255 {
        bail!(
            "--cluster-token-file {}: the token must be 1 to 255 bytes, not {}",
            path.display(),
            token.len()
        );
    }
    Ok(token)
}

/// Parses `ID=HOST:PORT` lists (`--peer`, `--peer-route`).
fn parse_members(
    flag: &str,
    items: &[String],
) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut out = std::collections::BTreeMap::new();
    for item in items {
        let (id, addr) = item
            .split_once('=')
            .with_context(|| format!("{flag} {item}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .ok()
            .filter(|&id| id > 0)
            .with_context(|| format!("{flag} {item}: the id must be a positive integer"))?;
        if addr.parse::<std::net::SocketAddr>().is_err() {
            bail!("{flag} {item}: {addr} is not HOST:PORT with an IP address");
        }
        if out.insert(id, addr.to_owned()).is_some() {
            bail!("{flag} names member {id} twice");
        }
    }
    Ok(out)
}

impl ServeArgs {
    /// Validates the flags into a server configuration.
    pub fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut listen = self.listen.clone();
        if let Some(host) = &self.host {
            listen = if host.starts_with("unix:") {
                host.parse().map_err(anyhow::Error::msg)?
            } else {
                let ip: IpAddr = host
                    .parse()
                    .with_context(|| format!("-l/--host: {host:?} is not an IP address"))?;
                match listen {
                    ListenAddr::Tcp(mut addr) => {
                        addr.set_ip(ip);
                        ListenAddr::Tcp(addr)
                    }
                    ListenAddr::Unix(_) => ListenAddr::Tcp((ip, 11300).into()),
                }
            };
        }
        if let Some(port) = self.port {
            match &mut listen {
                ListenAddr::Tcp(addr) => addr.set_port(port),
                ListenAddr::Unix(_) => bail!("-p/--port cannot be used with a unix: address"),
            }
        }
        // Checked in range by `ServerConfig::validate` below.
        let max_job_size = u32::try_from(self.max_job_size.0).unwrap_or(u32::MAX);
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be between 1 and 256");
        }
        if self.metrics_max_connections == 0 {
            bail!("--metrics-max-connections must be at least 1");
        }
        let fsync = match (self.fsync_ms, self.fsync_never) {
            (_, true) => FsyncPolicy::Never,
            (Some(0), false) => FsyncPolicy::Always,
            (Some(ms), false) => FsyncPolicy::Every(std::time::Duration::from_millis(ms)),
            (None, false) => self.fsync,
        };
        let mut setting_defaults = self.setting_defaults()?;
        setting_defaults.set(TubeSetting::MaxTubeJobs, self.max_tube_jobs);
        setting_defaults.set(TubeSetting::MaxTubeBytes, self.max_tube_bytes.0);
        let cluster_tls = cluster_tls_files(
            self.node_id.is_some() && self.cluster_listen.is_some(),
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            &self.cluster_tls_ca,
        )?;
        let config = ServerConfig {
            listen,
            max_job_size,
            data_dir: self.data_dir.clone(),
            fsync,
            segment_size: self.wal_segment_size.0,
            disk_reserve: self.disk_reserve.0,
            clock_offset_ms: self.clock_offset_ms,
            limits: Limits {
                max_jobs: self.max_jobs,
                max_bytes: self.max_bytes.0,
                max_connections: self.max_connections,
                max_output_per_connection: self.max_output_per_connection.0,
                output_stall_timeout: u64::from(self.output_stall_timeout),
                min_free_disk: self.min_free_disk.0,
                max_tubes: self.max_tubes,
                max_watches_per_connection: self.max_watches_per_connection,
            },
            setting_defaults,
            connections: ConnectionSettings {
                max_input_per_connection: self.max_input_per_connection.0,
                command_timeout: u64::from(self.command_timeout),
                tcp_keepalive: u64::from(self.tcp_keepalive),
                max_log_backlog: self.max_log_backlog.0,
            },
            user: self.user.clone(),
            compaction: !self.no_compaction,
            metrics: self
                .metrics_listen
                .map(|listen| crate::server::metrics::MetricsSettings {
                    listen,
                    max_tubes: self.metrics_max_tubes,
                    max_connections: self.metrics_max_connections,
                }),
            security: self.security.config()?,
            cluster: match (self.node_id, self.cluster_listen) {
                (Some(0), _) => bail!("--node-id must be a positive integer"),
                (Some(node_id), Some(listen)) => Some(crate::config::ClusterConfig {
                    node_id,
                    listen,
                    peers: parse_members("--peer", &self.peer)?,
                    routes: parse_members("--peer-route", &self.peer_route)?,
                    token: match &self.cluster_token_file {
                        Some(path) => Some(read_cluster_token(path)?),
                        None => None,
                    },
                    tls: cluster_tls,
                }),
                _ => None,
            },
            ..ServerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }

    /// The server defaults of the tube settings, from `--max-attempts` and friends.
    fn setting_defaults(&self) -> anyhow::Result<crate::engine::SettingDefaults> {
        use crate::protocol::TubeSetting as S;
        let mut defaults = crate::engine::SettingDefaults::default();
        for (setting, text) in [
            (S::MaxAttempts, &self.max_attempts),
            (S::RetryDelay, &self.retry_delay),
            (S::RetryBackoff, &self.retry_backoff),
            (S::RetryMax, &self.retry_max),
            (S::RetryJitter, &self.retry_jitter),
        ] {
            if let Some(text) = text {
                defaults.set(setting, tube::setting_value(setting, text)?);
            }
        }
        Ok(defaults)
    }
}

/// `larder put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tube to put into.
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Priority, 0 to 4294967295 (lower is more urgent).
    #[arg(long, default_value_t = 1024)]
    pub pri: u32,
    /// How long before the job becomes ready: seconds, or a duration in whole seconds
    /// such as `2s` or `5m`.
    #[arg(long, value_parser = crate::units::seconds_arg, default_value = "0", value_name = "SECONDS")]
    pub delay: u32,
    /// How long a worker may hold the job (time-to-run): seconds, or a duration in whole
    /// seconds such as `90s` or `2m`.
    #[arg(long, value_parser = crate::units::seconds_arg, default_value = "60", value_name = "SECONDS")]
    pub ttr: u32,
    /// The job body; read from standard input when absent.
    pub body: Option<String>,
}

/// `larder reserve`.
#[derive(Debug, Args)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Tube to take from (watched instead of `default`).
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Give up after this long (exit status 3): seconds, or a duration such as `2s` or
    /// `1m`; wait forever when absent.
    #[arg(long, value_parser = crate::units::seconds_arg, value_name = "SECONDS")]
    pub timeout: Option<u32>,
    /// Refused: releasing a reserved job counts an attempt (protocol.md §7.2), so looking
    /// this way could dead-letter a healthy job. Use `larder peek --ready` instead.
    #[arg(long)]
    pub keep: bool,
}

/// The async runtime: single-threaded for `threads` = 1, else a work-stealing pool. The
/// single-threaded one, run by the calling thread, writes the log itself when it is idle
/// and there is one client (see [`crate::server::install_idle_commit`]).
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        let mut builder = tokio::runtime::Builder::new_current_thread();
        crate::server::install_idle_commit(&mut builder);
        builder.enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

/// Exit status of `larder reserve` when its timeout expired.
pub const EXIT_TIMED_OUT: i32 = 3;

/// `larder serve`: runs until SIGTERM or SIGINT.
///
/// The signals' handlers are installed first (`main` has blocked the signals until now),
/// so one that arrives while the server starts or replays its log is obeyed, not fatal.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let signals = crate::server::signals::Signals::install()?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid = std::process::id(),
        "larder starting"
    );
    let config = args.config()?;
    tracing::debug!(?config, "configuration");
    let listener = crate::server::bind(&config.listen)?;
    let (shutdown, drain) = signals.split();
    crate::server::run_with(listener, config, shutdown, drain).await
}

/// The log filter for `larder serve -V…`: `None` leaves the choice to `LARDER_LOG`.
pub fn verbosity_filter(verbose: u8) -> Option<&'static str> {
    match verbose {
        0 => None,
        1 => Some("debug"),
        _ => Some("trace"),
    }
}

/// `larder put`.
pub async fn put(args: PutArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let body = match args.body {
        Some(b) => b.into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the job body from standard input")?;
            buf
        }
    };
    let mut client = args.conn.connect().await?;
    client.use_tube(&args.tube).await?;
    let reply = client
        .call(&Command::Put {
            pri: args.pri,
            delay: args.delay,
            ttr: args.ttr,
            body: body.into(),
        })
        .await?;
    match reply {
        Reply::Inserted(id) => writeln!(out, "{id}")?,
        other => bail!("{}", put_refusal(&other)),
    }
    Ok(())
}

/// What a reply other than `INSERTED` to a `put` means, for an error message.
pub fn put_refusal(reply: &Reply) -> String {
    match reply {
        Reply::JobTooBig => "the job body is larger than the server's maximum job size".into(),
        Reply::Draining => "the server is draining and accepts no new jobs".into(),
        Reply::Refused(limit) => format!(
            "the server refused the job: its {} limit is reached (nothing was stored)",
            limit.setting()
        ),
        Reply::BuriedId(id) => {
            format!("the server stored the job as {id} but buried it: it ran out of memory")
        }
        other => format!("the server refused the job: {other:?}"),
    }
}

/// `larder reserve`. Returns the process exit status.
pub async fn reserve(args: ReserveArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    if args.keep {
        bail!(
            "reserve --keep is refused: a reservation that ends without delete counts an \
             attempt and can dead-letter the job; to look without changing anything use \
             `larder peek --ready --tube {}` (or `larder peek ID`)",
            args.tube
        );
    }
    let tube = TubeName::new(args.tube.as_bytes())
        .with_context(|| format!("invalid tube name {:?}", args.tube))?;
    let mut client = args.conn.connect().await?;
    client.watch(tube.as_str()).await?;
    if tube.as_str() != "default" {
        client.ignore("default").await?;
    }
    let Some((id, body)) = client.reserve(args.timeout).await? else {
        eprintln!("no job within {} s", args.timeout.unwrap_or(0));
        return Ok(EXIT_TIMED_OUT);
    };
    out.write_all(&body)?;
    out.flush()?;
    client.delete(id).await?;
    Ok(0)
}

#[cfg(test)]
mod tests;
