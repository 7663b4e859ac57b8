//! Load generator for any server that speaks the beanstalkd protocol (larder, beanstalkd).
//!
//! Run it through cargo against a server that is already listening:
//!
//! ```text
//! cargo bench --bench loadgen -- --addr 127.0.0.1:11300 --workload put --connections 16 --depth 16
//! ```
//!
//! Pipelining: each connection queues a batch of `--depth` commands, sends it in one write,
//! then reads the replies in order. A command's latency runs from the moment its batch was
//! queued to the moment its own reply was read. A consumer's batch starts with the deletes
//! for the jobs its previous batch reserved and is topped up with reserves, so `--depth`
//! commands are in flight (reserve and delete alternate at depth 1). A reserve's latency
//! includes any time it spent waiting for a job to arrive (mixed workload, empty tube).
//!
//! `--backlog N` (mixed workload) bounds the jobs put but not yet deleted: a producer sends
//! its next batch only once it would not take that count past N, so the run measures jobs
//! done at the rate the consumers keep up with, not puts into a growing queue. A producer's
//! latencies start once the bound lets its batch go, so they measure the server only.
//!
//! Plain `cargo bench` runs this with `--bench` and no `--addr`: it prints its usage and exits
//! successfully, as there is no server to drive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use clap::{CommandFactory, Parser, ValueEnum};
use hdrhistogram::Histogram;
use larder::client::{Client, ClientError, TlsOptions};
use larder::protocol::{Command, JobId, Reply};
use rand::Rng;
use serde_json::{json, Value};

/// Jobs per second assumed when sizing the reserve-delete prefill automatically.
const PREFILL_RATE: f64 = 60_000.0;

/// What the connections do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// Every connection puts jobs.
    Put,
    /// The tube is filled first (untimed), then every connection reserves and deletes.
    ReserveDelete,
    /// Producers put while consumers reserve and delete.
    Mixed,
}

/// Load generator for beanstalkd-protocol servers: throughput and per-command latency.
#[derive(Debug, Parser)]
#[command(name = "loadgen")]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// The workload to run.
    #[arg(long, value_enum, default_value_t = Workload::Put)]
    workload: Workload,
    /// Connections (put, reserve-delete; the default for --producers and --consumers).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Producer connections for the mixed workload.
    #[arg(long)]
    producers: Option<usize>,
    /// Consumer connections for the mixed workload.
    #[arg(long)]
    consumers: Option<usize>,
    /// Pipeline depth: commands in flight per connection.
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Pipeline depth of producer connections in the mixed workload [default: --depth].
    #[arg(long)]
    producer_depth: Option<usize>,
    /// Job body size in bytes.
    #[arg(long, default_value_t = 100)]
    body_size: usize,
    /// Seconds to measure for [default: 10, or unbounded when --jobs is given].
    #[arg(long)]
    duration: Option<f64>,
    /// Measured operations to run (puts, or reserve+delete pairs); with --duration, the
    /// limit reached first ends the run.
    #[arg(long)]
    jobs: Option<u64>,
    /// Seconds to run the workload unmeasured before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Jobs to put before a reserve-delete run [default: --jobs plus 60k per second of
    /// warm-up and duration]. A run that empties the tube ends early and says so.
    #[arg(long)]
    prefill: Option<u64>,
    /// Mixed workload: most jobs put but not yet deleted; producers wait while a batch
    /// would exceed it [default: no bound].
    #[arg(long)]
    backlog: Option<u64>,
    /// Tube to use [default: a new name per run, so runs do not interfere].
    #[arg(long)]
    tube: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Connect with TLS, trusting the CA certificates (PEM) in this file.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<std::path::PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    let has = |flag: &str| raw.iter().any(|a| a.split('=').next() == Some(flag));
    if has("--bench") && !has("--addr") {
        println!("loadgen drives a running server and needs --addr; nothing to do.\n");
        println!("{}", Args::command().render_help());
        return Ok(());
    }
    let args = Args::parse();
    ensure!(args.connections > 0, "--connections must be at least 1");
    if let Some(ca) = &args.tls_ca {
        let _ = TLS.set(TlsOptions {
            ca: Some(ca.clone()),
            ..TlsOptions::default()
        });
    }
    ensure!(args.depth > 0, "--depth must be at least 1");
    ensure!(args.warmup >= 0.0, "--warmup must not be negative");
    ensure!(
        args.duration.is_none_or(|d| d > 0.0),
        "--duration must be positive"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(&args))?;
    if report["ran_dry"] == true {
        eprintln!("loadgen: the tube ran dry, so the run ended early; raise --prefill");
    }
    if args.json {
        println!("{report}");
    } else {
        print_text(&report);
    }
    Ok(())
}

/// How the connections of one round behave.
struct Plan {
    /// Batches started before this are not measured (warm-up).
    measure_from: Instant,
    /// When connections stop, abandoning the batch in flight.
    deadline: Option<Instant>,
    /// Commands in flight per consumer, and per producer.
    depth: usize,
    producer_depth: usize,
    /// Whether a consumer stops at its first `TIMED_OUT` (the tube is empty).
    stop_when_dry: bool,
    /// Bounds the jobs in the tube, for producers and consumers of one round.
    gate: Option<Gate>,
}

/// Counts jobs put and not yet deleted, and holds producers back at a bound.
struct Gate {
    bound: u64,
    outstanding: AtomicU64,
    freed: tokio::sync::Notify,
}

impl Gate {
    /// Waits until `n` more jobs fit under the bound, then counts them; false if the
    /// deadline passed first.
    async fn admit(&self, n: usize, deadline: Option<Instant>) -> bool {
        let n = n as u64;
        loop {
            // Registered before the check, so a delete in between is not missed.
            let freed = self.freed.notified();
            let now = self.outstanding.load(Ordering::Acquire);
            if now + n <= self.bound.max(n) {
                let swapped = self.outstanding.compare_exchange(
                    now,
                    now + n,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                if swapped.is_ok() {
                    return true;
                }
                continue;
            }
            match deadline {
                Some(d) => {
                    if tokio::time::timeout_at(d.into(), freed).await.is_err() {
                        return false;
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Counts a deleted job (or a put that was refused) and wakes waiting producers.
    fn release(&self, n: u64) {
        self.outstanding.fetch_sub(n, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// Measured operations still to start, when `--jobs` bounds the run.
struct Tickets(Option<AtomicU64>);

impl Tickets {
    fn new(jobs: Option<u64>) -> Arc<Tickets> {
        Arc::new(Tickets(jobs.map(AtomicU64::new)))
    }

    /// Takes up to `want` tickets; 0 when none are left.
    fn take(&self, want: usize) -> usize {
        let Some(left) = &self.0 else { return want };
        let want = want as u64;
        let before = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n - n.min(want))
        });
        before.map_or(0, |n| n.min(want) as usize)
    }

    fn give_back(&self, n: usize) {
        if let Some(left) = &self.0 {
            left.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// What one connection, or all connections in one role, measured.
struct Tally {
    ops: u64,
    timeouts: u64,
    /// When the last measured operation completed.
    last: Option<Instant>,
    /// Whether the deadline stopped the connection (rather than running out of work).
    hit_deadline: bool,
    put: Histogram<u64>,
    reserve: Histogram<u64>,
    delete: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        let h = || Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        let (put, reserve, delete) = (h(), h(), h());
        Tally {
            ops: 0,
            timeouts: 0,
            last: None,
            hit_deadline: false,
            put,
            reserve,
            delete,
        }
    }

    fn merge(&mut self, other: &Tally) {
        self.ops += other.ops;
        self.timeouts += other.timeouts;
        self.last = self.last.max(other.last);
        self.hit_deadline |= other.hit_deadline;
        self.put.add(&other.put).expect("same bounds");
        self.reserve.add(&other.reserve).expect("same bounds");
        self.delete.add(&other.delete).expect("same bounds");
    }
}

/// One connection's share of the run.
struct Conn {
    client: Client,
    plan: Arc<Plan>,
    /// Commands in flight.
    depth: usize,
    tickets: Arc<Tickets>,
}

impl Conn {
    /// The next reply, or `None` once the deadline has passed (the batch is abandoned).
    async fn reply(&mut self) -> Result<Option<Reply>> {
        let Some(deadline) = self.plan.deadline else {
            return Ok(Some(self.client.read_reply().await?));
        };
        match tokio::time::timeout_at(deadline.into(), self.client.read_reply()).await {
            Ok(reply) => Ok(Some(reply?)),
            Err(_) => Ok(None),
        }
    }

    /// Sends batches until the deadline, until the tickets run out, or until the tube runs
    /// dry. Each batch deletes the jobs reserved by the previous one and fills up with
    /// `fresh`: a put for a producer, a `reserve-with-timeout 1` for a consumer.
    async fn run(mut self, fresh: Command) -> Result<Tally> {
        let mut tally = Tally::new();
        // Jobs reserved by the last batch, and whether that batch was measured.
        let mut held: Vec<(JobId, bool)> = Vec::with_capacity(self.depth);
        let mut dry = false;
        loop {
            let now = Instant::now();
            if self.plan.deadline.is_some_and(|d| now >= d) {
                tally.hit_deadline = true;
                return Ok(tally);
            }
            let measured = now >= self.plan.measure_from;
            let room = self.depth - held.len();
            let new = match (dry, measured) {
                (true, _) => 0,
                (false, true) => self.tickets.take(room),
                (false, false) => room,
            };
            if held.is_empty() && new == 0 {
                return Ok(tally);
            }
            let producer = matches!(fresh, Command::Put { .. });
            if let (true, Some(gate)) = (producer, &self.plan.gate) {
                if !gate.admit(new, self.plan.deadline).await {
                    tally.hit_deadline = true;
                    return Ok(tally);
                }
            }
            // Latency runs from here: a producer's wait at the backlog gate is the load
            // generator holding itself back, not time the server took.
            let sent = Instant::now();
            let deletes = held
                .drain(..)
                .map(|(id, counted)| (Command::Delete(id), counted));
            let batch: Vec<_> = deletes
                .chain((0..new).map(|_| (fresh.clone(), measured)))
                .collect();
            for (cmd, _) in &batch {
                self.client.queue(cmd);
            }
            self.client.flush().await?;
            for (cmd, counted) in batch {
                let Some(reply) = self.reply().await? else {
                    tally.hit_deadline = true;
                    return Ok(tally);
                };
                let (histogram, done) = match (&cmd, reply) {
                    (Command::Put { .. }, Reply::Inserted(_)) => (&mut tally.put, true),
                    (Command::Delete(_), Reply::Deleted) => {
                        if let Some(gate) = &self.plan.gate {
                            gate.release(1);
                        }
                        (&mut tally.delete, true)
                    }
                    (Command::ReserveWithTimeout(_), Reply::Reserved { id, .. }) => {
                        held.push((id, measured));
                        (&mut tally.reserve, false)
                    }
                    (Command::ReserveWithTimeout(_), Reply::TimedOut) => {
                        tally.timeouts += 1;
                        if measured {
                            self.tickets.give_back(1);
                        }
                        dry |= self.plan.stop_when_dry;
                        continue;
                    }
                    (cmd, reply) => bail!("{cmd:?}: unexpected reply {reply:?}"),
                };
                if measured {
                    histogram.saturating_record(sent.elapsed().as_nanos() as u64);
                }
                // A put, or a delete whose reserve was measured, completes one operation.
                if done && counted {
                    tally.ops += 1;
                    tally.last = Some(Instant::now());
                }
            }
        }
    }
}

/// TLS options from `--tls-ca`, set once in `main`.
static TLS: std::sync::OnceLock<TlsOptions> = std::sync::OnceLock::new();

/// Connects to `addr`, with TLS when `--tls-ca` was given.
async fn open(addr: &str) -> Result<Client, ClientError> {
    match TLS.get() {
        Some(tls) => Client::connect_tls(addr, tls).await,
        None => Client::connect(addr).await,
    }
}

/// Connects and selects the tube: `use` it as a producer, watch only it as a consumer.
async fn connect(addr: &str, tube: &str, producer: bool) -> Result<Client> {
    let mut client = open(addr).await?;
    if producer {
        client.use_tube(tube).await?;
    } else {
        client.watch(tube).await?;
        if tube != "default" {
            client.ignore("default").await?;
        }
    }
    Ok(client)
}

/// Jobs in the tube that are ready or reserved, from `stats-tube` on a fresh connection.
async fn backlog(addr: &str, tube: &str) -> Result<u64> {
    let mut client = open(addr).await?;
    let stats = match client.stats(Some(tube)).await {
        Ok(stats) => stats,
        // beanstalkd forgets a tube that is empty and unused.
        Err(ClientError::Unexpected(Reply::NotFound)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let field = |k: &str| {
        stats
            .iter()
            .find(|(key, _)| key == k)
            .and_then(|(_, v)| v.parse().ok())
    };
    Ok(field("current-jobs-ready").unwrap_or(0) + field("current-jobs-reserved").unwrap_or(0))
}

/// Connects every producer and consumer, then runs them all; returns their merged tallies.
async fn drive(
    addr: &str,
    tube: &str,
    plan: Plan,
    (producers, consumers): (usize, usize),
    jobs: Option<u64>,
    body: &Bytes,
) -> Result<(Tally, Tally)> {
    let plan = Arc::new(plan);
    let (put_tickets, take_tickets) = (Tickets::new(jobs), Tickets::new(jobs));
    let mut conns = Vec::new();
    for i in 0..producers + consumers {
        let producer = i < producers;
        let client = connect(addr, tube, producer)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        let tickets = if producer {
            &put_tickets
        } else {
            &take_tickets
        }
        .clone();
        let depth = if producer {
            plan.producer_depth
        } else {
            plan.depth
        };
        conns.push(Conn {
            client,
            plan: plan.clone(),
            depth,
            tickets,
        });
    }
    let put = Command::Put {
        pri: 1024,
        delay: 0,
        ttr: 60,
        body: body.clone(),
    };
    let tasks: Vec<_> = (conns.into_iter().enumerate())
        .map(|(i, conn)| match i < producers {
            true => tokio::spawn(conn.run(put.clone())),
            false => tokio::spawn(conn.run(Command::ReserveWithTimeout(1))),
        })
        .collect();
    let (mut puts, mut takes) = (Tally::new(), Tally::new());
    for (i, task) in tasks.into_iter().enumerate() {
        let tally = task.await?.context("a connection failed")?;
        if i < producers { &mut puts } else { &mut takes }.merge(&tally);
    }
    Ok((puts, takes))
}

async fn run(args: &Args) -> Result<Value> {
    let (producers, consumers) = match args.workload {
        Workload::Put => (args.connections, 0),
        Workload::ReserveDelete => (0, args.connections),
        Workload::Mixed => (
            args.producers.unwrap_or(args.connections),
            args.consumers.unwrap_or(args.connections),
        ),
    };
    ensure!(producers + consumers > 0, "no connections to run");
    let tube = args.tube.clone().unwrap_or_else(|| {
        let since = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH);
        let nanos = since.unwrap_or_default().subsec_nanos();
        format!("loadgen-{}-{nanos}", std::process::id())
    });
    let mut rng = rand::thread_rng();
    let body: Bytes = (0..args.body_size)
        .map(|_| rng.sample(rand::distributions::Alphanumeric))
        .collect();
    let duration = match args.jobs {
        None => args.duration.or(Some(10.0)),
        Some(_) => args.duration,
    };
    let reserve_delete = args.workload == Workload::ReserveDelete;

    let mut prefill = 0;
    if reserve_delete {
        let secs = args.warmup + duration.unwrap_or(0.0);
        let auto = args.jobs.unwrap_or(0) + (PREFILL_RATE * secs).ceil() as u64;
        prefill = args.prefill.unwrap_or(auto);
        if !args.json {
            eprintln!("prefilling tube {tube} with {prefill} jobs (untimed)...");
        }
        let now = Instant::now();
        let plan = Plan {
            measure_from: now,
            deadline: None,
            depth: 256,
            producer_depth: 256,
            stop_when_dry: false,
            gate: None,
        };
        drive(&args.addr, &tube, plan, (4, 0), Some(prefill), &body)
            .await
            .context("prefilling the tube")?;
    }

    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let deadline = duration.map(|d| measure_from + Duration::from_secs_f64(d));
    let (depth, stop_when_dry) = (args.depth, reserve_delete);
    let gate = match (args.workload, args.backlog) {
        (Workload::Mixed, Some(bound)) => Some(Gate {
            bound,
            outstanding: AtomicU64::new(0),
            freed: tokio::sync::Notify::new(),
        }),
        (_, Some(_)) => bail!("--backlog applies to the mixed workload only"),
        (_, None) => None,
    };
    let producer_depth = args.producer_depth.unwrap_or(depth);
    ensure!(producer_depth > 0, "--producer-depth must be at least 1");
    let plan = Plan {
        measure_from,
        deadline,
        depth,
        producer_depth,
        stop_when_dry,
        gate,
    };
    let roles = (producers, consumers);
    let (puts, takes) = drive(&args.addr, &tube, plan, roles, args.jobs, &body).await?;
    let backlog = backlog(&args.addr, &tube)
        .await
        .context("reading stats-tube")?;

    // A reserve-delete run that emptied the tube ends at its last delete, not the deadline.
    let emptied = backlog == 0 && args.jobs.is_none_or(|j| takes.ops < j);
    let ran_dry = reserve_delete && (takes.timeouts > 0 || emptied);
    let secs = |t: &Tally| match (t.hit_deadline && !ran_dry, deadline, t.last) {
        (true, Some(end), _) | (_, _, Some(end)) => (end - measure_from).as_secs_f64(),
        _ => 0.0,
    };
    let rate = |t: &Tally| round(t.ops as f64 / secs(t).max(1e-9), 1);
    let main = if args.workload == Workload::Put {
        &puts
    } else {
        &takes
    };
    let mut consume = takes.reserve.clone();
    consume.add(&takes.delete).expect("same bounds");
    let mut all = consume.clone();
    all.add(&puts.put).expect("same bounds");
    Ok(json!({
        "workload": args.workload.to_possible_value().map(|v| v.get_name().to_owned()),
        "addr": args.addr, "tls": args.tls_ca.is_some(), "tube": tube, "producers": producers, "consumers": consumers,
        "depth": args.depth, "producer_depth": producer_depth, "backlog_bound": args.backlog,
        "body_size": args.body_size, "warmup_s": args.warmup,
        "duration_s": duration, "jobs": args.jobs, "prefill": prefill,
        "elapsed_s": round(secs(&puts).max(secs(&takes)), 3),
        "ops": main.ops, "ops_per_sec": rate(main),
        "puts": puts.ops, "put_per_sec": rate(&puts),
        "consumed": takes.ops, "consumed_per_sec": rate(&takes),
        "reserve_timeouts": takes.timeouts, "ran_dry": ran_dry, "backlog": backlog,
        "latency_us": {
            "put": latency(&puts.put), "reserve": latency(&takes.reserve),
            "delete": latency(&takes.delete), "consume": latency(&consume), "all": latency(&all),
        },
    }))
}

fn round(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// Latency percentiles in microseconds, or null when nothing was recorded.
fn latency(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let us = |ns: u64| round(ns as f64 / 1000.0, 1);
    json!({
        "count": h.len(), "mean": round(h.mean() / 1000.0, 1),
        "p50": us(h.value_at_quantile(0.5)), "p99": us(h.value_at_quantile(0.99)),
        "p999": us(h.value_at_quantile(0.999)), "max": us(h.max()),
    })
}

/// Prints the report as aligned `key: value` lines and a latency table.
fn print_text(report: &Value) {
    let show = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    for (key, value) in report.as_object().into_iter().flatten() {
        if !value.is_object() && !value.is_null() {
            println!("{key:>17}: {}", show(value));
        }
    }
    let columns = ["count", "p50", "p99", "p999", "max"];
    println!(
        "{:>17}  {}",
        "latency µs",
        columns.map(|c| format!("{c:>9}")).join(" ")
    );
    for (kind, l) in report["latency_us"].as_object().into_iter().flatten() {
        if !l.is_null() && matches!(kind.as_str(), "put" | "reserve" | "delete") {
            println!(
                "{kind:>17}  {}",
                columns.map(|c| format!("{:>9}", show(&l[c]))).join(" ")
            );
        }
    }
}
