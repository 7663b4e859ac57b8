//! The command line: flags as clap parses them, and one function per subcommand.
//!
//! Doc comments on the argument structs are the `--help` text.

pub mod dlq;
mod log_format;
pub mod stats;
pub mod tube;
pub mod tubes;

pub use log_format::{log_format, LogFormat};

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use crate::client::Client;
use crate::config::{ConnectionSettings, FsyncPolicy, ListenAddr, ServerConfig, DEFAULT_LISTEN};
use crate::engine::Limits;
use crate::protocol::{Command, Reply, TubeName, TubeSetting};

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
    /// Inspect a data directory's write-ahead log offline (the server need not run).
    #[command(subcommand)]
    Wal(WalCmd),
    /// Configure a tube's retry policy, or show its settings and statistics.
    #[command(subcommand)]
    Tube(tube::TubeCmd),
    /// Inspect, redrive, delete and export dead letters (buried jobs).
    #[command(subcommand)]
    Dlq(dlq::DlqCmd),
}

/// `larder wal …`
#[derive(Debug, Subcommand)]
pub enum WalCmd {
    /// Check every segment and record; print segments, records, bytes, and the first error.
    /// Exits 1 if the log is corrupt.
    Verify(WalArgs),
    /// Print one line per record: segment, offset, LSN, kind, payload length.
    Dump(WalArgs),
}

/// Arguments of `larder wal verify` and `larder wal dump`.
#[derive(Debug, Args)]
pub struct WalArgs {
    /// The server's data directory (its log is in `wal/` inside it).
    #[arg(short = 'b', long, env = "LARDER_DATA_DIR", default_value = crate::config::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

/// The log directory inside a data directory.
pub fn wal_dir(data_dir: &std::path::Path) -> PathBuf {
    crate::server::wal_dir(data_dir)
}

/// `larder wal verify`. Returns the exit status.
pub fn wal_verify(args: &WalArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    use crate::engine::{record, BodyRef, Engine, EngineConfig, ProcessInfo, RestoreError};
    let dir = wal_dir(&args.data_dir);
    // Replays the records as recovery would (metadata only) to count the live jobs.
    let now = crate::server::Clock::new().now();
    let mut engine = Engine::new(EngineConfig::default(), ProcessInfo::fixed(), now);
    let mut replay_error: Option<String> = None;
    let report = crate::wal::verify_with(
        &crate::wal::storage::FsStorage::new(),
        &dir,
        &crate::wal::WalOptions::default(),
        |r| {
            if replay_error.is_some() {
                return;
            }
            let restored = record::decode_metadata(r.kind, r.payload)
                .map_err(|e| e.to_string())
                .and_then(|(change, body)| {
                    let at = body.map(|(start, len)| BodyRef {
                        segment: r.pos.segment,
                        offset: u32::try_from(r.pos.offset + start as u64).unwrap_or(u32::MAX),
                        len,
                    });
                    match engine.restore(change, at, now) {
                        Ok(()) | Err(RestoreError::UnknownJob(_)) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                });
            if let Err(e) = restored {
                replay_error = Some(format!(
                    "record {} in segment {} at offset {}: {e}",
                    r.lsn.0, r.pos.segment, r.pos.offset
                ));
            }
        },
    );
    engine.finish_restore();
    writeln!(out, "log:             {}", dir.display())?;
    writeln!(out, "segments:        {}", report.segments)?;
    writeln!(out, "records:         {}", report.records)?;
    writeln!(out, "live jobs:       {}", engine.job_count())?;
    writeln!(out, "bytes:           {}", report.bytes)?;
    writeln!(out, "torn tail bytes: {}", report.torn_tail_bytes)?;
    match &report.error {
        None if replay_error.is_some() => {
            let e = replay_error.unwrap_or_default();
            writeln!(out, "status:          BAD RECORD: {e}")?;
            Ok(1)
        }
        None => {
            writeln!(out, "status:          ok")?;
            Ok(0)
        }
        Some(e) => {
            writeln!(out, "status:          CORRUPT: {e}")?;
            Ok(1)
        }
    }
}

/// `larder wal dump`.
pub fn wal_dump(args: &WalArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let dir = wal_dir(&args.data_dir);
    let options = crate::wal::WalOptions::default();
    writeln!(out, "segment\toffset\tlsn\tkind\tlength")?;
    for entry in crate::wal::dump(&crate::wal::storage::FsStorage::new(), &dir, &options) {
        let e = entry.with_context(|| format!("reading {}", dir.display()))?;
        writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            e.segment,
            e.offset,
            e.lsn.0,
            crate::engine::record::kind_name(e.kind),
            e.len
        )?;
    }
    Ok(())
}

/// The largest `--max-job-size`: a put's record (its fields, a 200-byte tube name and the
/// body) must fit the log's largest payload.
pub const MAX_JOB_SIZE_LIMIT: u32 = (64 << 20) - 1024;

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
    /// Largest job body accepted, in bytes; larger puts get JOB_TOO_BIG (beanstalkd's -z).
    #[arg(short = 'z', long, env = "LARDER_MAX_JOB_SIZE", default_value_t = crate::config::DEFAULT_MAX_JOB_SIZE)]
    pub max_job_size: u32,
    /// Threads serving connections. 1 (the default) runs every connection on one thread,
    /// as beanstalkd does, which gives the lowest latency on small machines; more threads
    /// help when many connections each do expensive work.
    #[arg(long, env = "LARDER_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// When to sync the log: always (before every reply that depends on a change; the
    /// default), every=MS (at most every MS milliseconds), or never.
    #[arg(long, env = "LARDER_FSYNC", default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Largest log segment file in bytes (at least 4096; beanstalkd's -s). Space is
    /// reclaimed a whole segment at a time.
    #[arg(short = 's', long, env = "LARDER_WAL_SEGMENT_SIZE", default_value_t = crate::config::DEFAULT_SEGMENT_SIZE)]
    pub wal_segment_size: u64,
    /// Disk space in bytes kept in reserve (the file `wal-reserve` in the data
    /// directory). When the disk fills, the log releases it so in-flight work is
    /// confirmed and workers can keep deleting, releasing and burying while new jobs
    /// are refused (`REFUSED log-full`); it is taken back once space returns. 0 disables.
    #[arg(long, env = "LARDER_DISK_RESERVE", default_value_t = crate::config::DEFAULT_DISK_RESERVE)]
    pub disk_reserve: u64,
    /// beanstalkd's -f MS: sync at most every MS milliseconds (0 means always).
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
    /// Most body bytes the server holds, summed over jobs in every state; a put that would
    /// go over gets REFUSED max-bytes. 0: no limit.
    #[arg(long, env = "LARDER_MAX_BYTES", default_value_t = Limits::DEFAULT.max_bytes)]
    pub max_bytes: u64,
    /// Most jobs one tube holds (every state), for tubes without a setting of their own;
    /// a put beyond it gets REFUSED max-tube-jobs. 0: no limit.
    #[arg(long, env = "LARDER_MAX_TUBE_JOBS", default_value_t = TubeSetting::MaxTubeJobs.builtin_default())]
    pub max_tube_jobs: u64,
    /// Most body bytes one tube holds (every state), for tubes without a setting of their
    /// own; a put that would go over gets REFUSED max-tube-bytes. 0: no limit.
    #[arg(long, env = "LARDER_MAX_TUBE_BYTES", default_value_t = TubeSetting::MaxTubeBytes.builtin_default())]
    pub max_tube_bytes: u64,
    /// Most client connections open at once; one more is sent "REFUSED max-connections"
    /// and closed. 0: no limit.
    #[arg(long, env = "LARDER_MAX_CONNECTIONS", default_value_t = Limits::DEFAULT.max_connections)]
    pub max_connections: u64,
    /// Reply bytes waiting to be written to one client at which the server stops reading
    /// that client's commands until it reads its replies. 0: no limit.
    #[arg(long, env = "LARDER_MAX_OUTPUT_PER_CONNECTION", default_value_t = Limits::DEFAULT.max_output_per_connection)]
    pub max_output_per_connection: u64,
    /// Seconds a client may leave waiting replies unread (not one byte taken) before it is
    /// disconnected. 0: never.
    #[arg(long, env = "LARDER_OUTPUT_STALL_TIMEOUT", default_value_t = Limits::DEFAULT.output_stall_timeout)]
    pub output_stall_timeout: u64,
    /// Free bytes the data directory's filesystem must keep; while it has less, puts get
    /// REFUSED min-free-disk (deletes and other commands still work). Measured every
    /// second. 0: no floor.
    #[arg(long, env = "LARDER_MIN_FREE_DISK", default_value_t = Limits::DEFAULT.min_free_disk)]
    pub min_free_disk: u64,
    /// Bytes of a client's commands the server reads ahead and holds while its reserve
    /// blocks (or before they run); past it, that connection is not read until they run.
    /// One command is always taken. 0: no limit.
    #[arg(long, env = "LARDER_MAX_INPUT_PER_CONNECTION", default_value_t = ConnectionSettings::DEFAULT.max_input_per_connection)]
    pub max_input_per_connection: u64,
    /// Seconds a client may take to finish sending a command (line and body) once its
    /// first byte arrived; slower clients are disconnected. Never applies to a client
    /// waiting in reserve. 0: no limit.
    #[arg(long, env = "LARDER_COMMAND_TIMEOUT", default_value_t = ConnectionSettings::DEFAULT.command_timeout)]
    pub command_timeout: u64,
    /// Seconds of silence on a TCP connection before keepalive probes check that the
    /// client's host is still there. 0: no keepalive.
    #[arg(long, env = "LARDER_TCP_KEEPALIVE", default_value_t = ConnectionSettings::DEFAULT.tcp_keepalive)]
    pub tcp_keepalive: u64,
    /// Bytes of records waiting for the log writer at which connections pause before
    /// running more commands, until the writer catches up. 0: no limit.
    #[arg(long, env = "LARDER_MAX_LOG_BACKLOG", default_value_t = ConnectionSettings::DEFAULT.max_log_backlog)]
    pub max_log_backlog: u64,
    /// Attempts before a job is buried automatically, for tubes that set none (0: unlimited).
    #[arg(long, env = "LARDER_MAX_ATTEMPTS", value_name = "N")]
    pub max_attempts: Option<String>,
    /// Delay before retrying a job whose reservation timed out, was abandoned or failed, for
    /// tubes that set none (`500ms`, `30s`, `5m`, `1h`; 0: ready at once, as beanstalkd).
    #[arg(long, env = "LARDER_RETRY_DELAY", value_name = "D")]
    pub retry_delay: Option<String>,
    /// Factor the retry delay grows by with each attempt (default 2).
    #[arg(long, env = "LARDER_RETRY_BACKOFF", value_name = "X")]
    pub retry_backoff: Option<String>,
    /// Longest retry delay (a duration; 0, the default: no cap).
    #[arg(long, env = "LARDER_RETRY_MAX", value_name = "D")]
    pub retry_max: Option<String>,
    /// Fraction of each retry delay taken off at random (0 to 1; default 0).
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
        if self.max_job_size == 0 {
            bail!("--max-job-size must be at least 1");
        }
        if self.max_job_size > MAX_JOB_SIZE_LIMIT {
            bail!("--max-job-size must be at most {MAX_JOB_SIZE_LIMIT} (the log's record limit)");
        }
        if self.threads == 0 || self.threads > 256 {
            bail!("--threads must be between 1 and 256");
        }
        if self.metrics_max_connections == 0 {
            bail!("--metrics-max-connections must be at least 1");
        }
        if self.wal_segment_size < 4096 {
            bail!("--wal-segment-size must be at least 4096");
        }
        let fsync = match (self.fsync_ms, self.fsync_never) {
            (_, true) => FsyncPolicy::Never,
            (Some(0), false) => FsyncPolicy::Always,
            (Some(ms), false) => FsyncPolicy::Every(std::time::Duration::from_millis(ms)),
            (None, false) => self.fsync,
        };
        let mut setting_defaults = self.setting_defaults()?;
        setting_defaults.set(TubeSetting::MaxTubeJobs, self.max_tube_jobs);
        setting_defaults.set(TubeSetting::MaxTubeBytes, self.max_tube_bytes);
        Ok(ServerConfig {
            listen,
            max_job_size: self.max_job_size,
            data_dir: self.data_dir.clone(),
            fsync,
            segment_size: self.wal_segment_size,
            disk_reserve: self.disk_reserve,
            limits: Limits {
                max_jobs: self.max_jobs,
                max_bytes: self.max_bytes,
                max_connections: self.max_connections,
                max_output_per_connection: self.max_output_per_connection,
                output_stall_timeout: self.output_stall_timeout,
                min_free_disk: self.min_free_disk,
            },
            setting_defaults,
            connections: ConnectionSettings {
                max_input_per_connection: self.max_input_per_connection,
                command_timeout: self.command_timeout,
                tcp_keepalive: self.tcp_keepalive,
                max_log_backlog: self.max_log_backlog,
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
            ..ServerConfig::default()
        })
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

/// `larder stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Server address, or several separated by commas (one row each, and a total).
    #[arg(long, env = "LARDER_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// Show this tube's statistics instead of the server's.
    #[arg(long)]
    pub tube: Option<String>,
    /// Print every field as JSON instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print every field (a two-column table) instead of the summary.
    #[arg(long)]
    pub all: bool,
    /// Refresh every N seconds until interrupted; rates are then since the last sample.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

/// `larder put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Server address.
    #[arg(long, env = "LARDER_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// Tube to put into.
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Priority (lower is more urgent).
    #[arg(long, default_value_t = 1024)]
    pub pri: u32,
    /// Seconds before the job becomes ready.
    #[arg(long, default_value_t = 0)]
    pub delay: u32,
    /// Seconds a worker may hold the job.
    #[arg(long, default_value_t = 60)]
    pub ttr: u32,
    /// The job body; read from standard input when absent.
    pub body: Option<String>,
}

/// `larder reserve`.
#[derive(Debug, Args)]
pub struct ReserveArgs {
    /// Server address.
    #[arg(long, env = "LARDER_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// Tube to take from (watched instead of `default`).
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Give up after this many seconds (exit status 3); wait forever when absent.
    #[arg(long)]
    pub timeout: Option<u32>,
    /// Leave the job reserved-then-released instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// The async runtime: single-threaded for `threads` = 1, else a work-stealing pool.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
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

/// `larder stats`.
pub async fn stats(args: StatsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    match &args.tube {
        Some(tube) => stats::tube(&args, tube, out).await,
        None => stats::run(&args, out).await,
    }
}

/// Prints stats fields as a two-column table, or as one JSON object.
pub fn print_fields(
    fields: Vec<(String, String)>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if json {
        let map: serde_json::Map<String, serde_json::Value> = fields
            .into_iter()
            .map(|(k, v)| (k, yaml_scalar_to_json(&v)))
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&map)?)?;
    } else {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(["field", "value"]);
        for (k, v) in fields {
            table.add_row([k, v]);
        }
        writeln!(out, "{table}")?;
    }
    Ok(())
}

/// A YAML scalar from beanstalkd's stats as the JSON value it denotes.
fn yaml_scalar_to_json(v: &str) -> serde_json::Value {
    if let Ok(n) = v.parse::<i64>() {
        return n.into();
    }
    if let Ok(n) = v.parse::<u64>() {
        return n.into();
    }
    match v {
        "true" => true.into(),
        "false" => false.into(),
        _ => match v.parse::<f64>() {
            Ok(f) if v.contains('.') => f.into(),
            _ => v.into(),
        },
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
    let mut client = Client::connect(&args.addr).await?;
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
        Reply::JobTooBig => bail!("the job body is larger than the server's maximum job size"),
        Reply::Draining => bail!("the server is draining and accepts no new jobs"),
        Reply::Refused(limit) => bail!(
            "the server refused the job: its {} limit is reached (nothing was stored)",
            limit.setting()
        ),
        other => bail!("the server refused the job: {other:?}"),
    }
    Ok(())
}

/// `larder reserve`. Returns the process exit status.
pub async fn reserve(args: ReserveArgs, out: &mut impl Write) -> anyhow::Result<i32> {
    let tube = TubeName::new(args.tube.as_bytes())
        .with_context(|| format!("invalid tube name {:?}", args.tube))?;
    let mut client = Client::connect(&args.addr).await?;
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
    if args.keep {
        client
            .call(&Command::Release {
                id,
                pri: 1024,
                delay: 0,
            })
            .await?;
    } else {
        client.delete(id).await?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_config(args: &[&str]) -> ServerConfig {
        let cli = Cli::try_parse_from(["larder", "serve"].iter().chain(args)).expect("parse");
        match cli.command {
            Cmd::Serve(args) => args.config().expect("valid config"),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn a_job_size_the_log_cannot_hold_is_refused() {
        let parse = |z: &str| {
            let cli = Cli::try_parse_from(["larder", "serve", "-z", z]).expect("parse");
            match cli.command {
                Cmd::Serve(args) => args.config().map(|c| c.max_job_size),
                other => panic!("parsed as {other:?}"),
            }
        };
        assert_eq!(
            parse(&MAX_JOB_SIZE_LIMIT.to_string()).ok(),
            Some(MAX_JOB_SIZE_LIMIT)
        );
        let err = parse("100000000").expect_err("too big");
        assert!(err.to_string().contains("at most"), "{err}");
    }

    #[test]
    fn limit_flags_reach_the_server_config() {
        let config = serve_config(&[
            "--max-jobs",
            "5",
            "--max-bytes",
            "6",
            "--max-tube-jobs",
            "7",
            "--max-tube-bytes",
            "8",
            "--max-connections",
            "9",
            "--max-output-per-connection",
            "10",
            "--output-stall-timeout",
            "11",
            "--min-free-disk",
            "12",
        ]);
        assert_eq!(
            config.limits,
            Limits {
                max_jobs: 5,
                max_bytes: 6,
                max_connections: 9,
                max_output_per_connection: 10,
                output_stall_timeout: 11,
                min_free_disk: 12,
            }
        );
        let d = config.setting_defaults;
        assert_eq!(d.get(TubeSetting::MaxTubeJobs), 7);
        assert_eq!(d.get(TubeSetting::MaxTubeBytes), 8);
    }

    #[test]
    fn beanstalkd_flags_reach_the_server_config() {
        let config = serve_config(&["-s", "8192", "-u", "nobody", "-n"]);
        assert_eq!(config.segment_size, 8192);
        assert_eq!(config.user.as_deref(), Some("nobody"));
        assert!(!config.compaction);
        assert!(serve_config(&["-n", "-c"]).compaction);
        assert!(!serve_config(&["-c", "-n"]).compaction);
        assert!(serve_config(&[]).compaction);
        assert_eq!(serve_config(&["-f", "0"]).fsync, FsyncPolicy::Always);
        assert_eq!(verbosity_filter(0), None);
        assert_eq!(verbosity_filter(1), Some("debug"));
        assert_eq!(verbosity_filter(3), Some("trace"));
    }

    #[test]
    fn limits_default_to_the_documented_values() {
        let config = serve_config(&[]);
        assert_eq!(config.limits, Limits::DEFAULT);
        assert_eq!(config.setting_defaults.get(TubeSetting::MaxTubeJobs), 0);
        assert_eq!(config.setting_defaults.get(TubeSetting::MaxTubeBytes), 0);
    }
}
