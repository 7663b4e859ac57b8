//! `larder dlq …`: inspect, redrive, delete and export dead letters (buried jobs) through
//! the `list-dead`, `kick-dead` and `delete-dead` extensions, and `peek` for bodies.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{is_bury_reason, Client, DeadLetter};
use crate::protocol::{BuryReason, DeadFilter, JobId, TubeName, MAX_DEAD_BATCH};

/// `larder dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters: a table (id, tube, reason, attempts, buried at, last error, body
    /// preview) or JSON.
    List(ListArgs),
    /// Show one dead letter's metadata and body.
    Show(ShowArgs),
    /// Kick matching dead letters back to ready with a fresh attempt budget.
    Redrive(RedriveArgs),
    /// Delete dead letters by id, or every match of the filters (with --yes).
    Delete(DeleteArgs),
    /// Print matching dead letters as JSON lines (the body as UTF-8 text when it is, else
    /// base64), to archive them or replay them elsewhere.
    Export(ExportArgs),
}

/// Which dead letters a command applies to.
#[derive(Debug, Args, Clone, Default)]
pub struct FilterArgs {
    /// Only this tube's dead letters.
    #[arg(long)]
    pub tube: Option<String>,
    /// Only those buried for this reason: `buried` (by a worker) or `max-attempts`.
    #[arg(long)]
    pub reason: Option<String>,
    /// Only those buried at least this long ago (`500ms`, `30s`, `5m`, `1h`).
    #[arg(long, value_name = "D")]
    pub older_than: Option<String>,
    /// Only those whose last error or body contains TEXT.
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
}

/// Arguments of `larder dlq list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Show at most N dead letters (lowest ids first).
    #[arg(long, default_value_t = 100, value_name = "N")]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Arguments of `larder dlq show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    /// The job id.
    id: u64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `larder dlq redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Redrive at most N dead letters per second.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// Only list what would be redriven.
    #[arg(long)]
    dry_run: bool,
}

/// Arguments of `larder dlq delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    /// Dead letters to delete, by id (only jobs that are buried are deleted).
    ids: Vec<u64>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Confirm deleting every dead letter the filters match (needed without ids).
    #[arg(long)]
    yes: bool,
}

/// Arguments of `larder dlq export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    #[command(flatten)]
    filter: FilterArgs,
}

/// Runs one `larder dlq` subcommand.
pub async fn run(cmd: DlqCmd, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List(args) => list(args, out).await,
        DlqCmd::Show(args) => show(args, out).await,
        DlqCmd::Redrive(args) => redrive(args, out).await,
        DlqCmd::Delete(args) => delete(args, out).await,
        DlqCmd::Export(args) => export(args, out).await,
    }
}

impl FilterArgs {
    /// The server-side part of the filter (`--grep` is applied here, on bodies and errors).
    fn dead_filter(&self) -> anyhow::Result<DeadFilter> {
        let mut filter = DeadFilter::all();
        if let Some(t) = &self.tube {
            filter.tube = Some(
                TubeName::new(t.as_bytes()).with_context(|| format!("invalid tube name {t:?}"))?,
            );
        }
        if let Some(r) = &self.reason {
            if !is_bury_reason(r) {
                bail!("--reason: {r:?} is not one of buried, max-attempts");
            }
            filter.reason = BuryReason::from_name(r.as_bytes());
        }
        if let Some(d) = &self.older_than {
            let d = humantime::parse_duration(d).map_err(|e| {
                anyhow::anyhow!("--older-than: {d:?} is not a duration like 30s or 5m ({e})")
            })?;
            filter.older_than_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        }
        Ok(filter)
    }

    fn matches(&self, letter: &DeadLetter, body: Option<&[u8]>) -> bool {
        let Some(text) = &self.grep else {
            return true;
        };
        letter.last_error.contains(text.as_str())
            || body.is_some_and(|b| String::from_utf8_lossy(b).contains(text.as_str()))
    }
}

/// A dead letter and, when asked for, its body (`None` if it vanished meanwhile).
type Found = (DeadLetter, Option<Bytes>);

/// Pages through the dead letters `filter` selects, reading bodies when `bodies` or `--grep`
/// needs them, until `limit` matches.
async fn collect(
    client: &mut Client,
    filter: &FilterArgs,
    bodies: bool,
    limit: usize,
) -> anyhow::Result<Vec<Found>> {
    let mut page = filter.dead_filter()?;
    let mut found = Vec::new();
    while found.len() < limit {
        let letters = client.list_dead(&page, MAX_DEAD_BATCH).await?;
        let Some(last) = letters.last().map(|l| l.id) else {
            break;
        };
        for letter in letters {
            let body = if bodies || filter.grep.is_some() {
                client.peek(letter.id).await?
            } else {
                None
            };
            if filter.matches(&letter, body.as_deref()) && found.len() < limit {
                found.push((letter, body));
            }
        }
        match last.0.checked_add(1) {
            Some(next) => page.from = JobId(next),
            None => break,
        }
    }
    Ok(found)
}

/// Unix milliseconds as an RFC 3339 time, or `None` for 0 (unknown).
fn rfc3339(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    })
}

/// A body as JSON: UTF-8 text when it is, else base64; with its encoding's name.
fn body_json(body: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(body) {
        Ok(text) => (text.into(), "utf-8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD
                .encode(body)
                .into(),
            "base64",
        ),
    }
}

/// The start of a body as one line of text.
fn preview(body: Option<&[u8]>, max: usize) -> String {
    let Some(body) = body else {
        return String::new();
    };
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

fn letter_json(letter: &DeadLetter) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("id".into(), letter.id.0.into());
    m.insert("tube".into(), letter.tube.clone().into());
    m.insert("reason".into(), letter.reason.clone().into());
    m.insert("attempts".into(), letter.attempts.into());
    m.insert("pri".into(), letter.pri.into());
    m.insert("buried_at_ms".into(), letter.buried_at_ms.into());
    m.insert("buried_at".into(), rfc3339(letter.buried_at_ms).into());
    m.insert("last_error".into(), letter.last_error.clone().into());
    m
}

/// `larder dlq list`.
pub async fn list(args: ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let found = collect(&mut client, &args.filter, true, args.limit).await?;
    if args.json {
        let rows: Vec<Value> = found
            .iter()
            .map(|(l, body)| {
                let mut m = letter_json(l);
                m.insert("body_preview".into(), preview(body.as_deref(), 60).into());
                Value::Object(m)
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header([
        "id",
        "tube",
        "reason",
        "attempts",
        "buried at",
        "last error",
        "body",
    ]);
    for (l, body) in &found {
        table.add_row([
            l.id.to_string(),
            l.tube.clone(),
            l.reason.clone(),
            l.attempts.to_string(),
            rfc3339(l.buried_at_ms).unwrap_or_else(|| "-".into()),
            preview(Some(l.last_error.as_bytes()), 40),
            preview(body.as_deref(), 30),
        ]);
    }
    writeln!(out, "{table}")?;
    writeln!(out, "{} dead letters", found.len())?;
    Ok(())
}

/// `larder dlq show`.
pub async fn show(args: ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let id = JobId(args.id);
    let Some(fields) = client.stats_job(id).await? else {
        bail!("no job {id}");
    };
    let get = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if get("state") != "buried" {
        bail!("job {id} is not a dead letter (it is {})", get("state"));
    }
    let body = client.peek(id).await?.unwrap_or_default();
    let buried_at = rfc3339(get("buried-at").parse().unwrap_or(0));
    if args.json {
        let mut m = serde_json::Map::new();
        for (k, v) in &fields {
            let value = match v.parse::<u64>() {
                Ok(n) if k != "last-error" => n.into(),
                _ => v.clone().into(),
            };
            m.insert(k.clone(), value);
        }
        m.insert("buried-at-time".into(), buried_at.into());
        let (b, encoding) = body_json(&body);
        m.insert("body".into(), b);
        m.insert("body-encoding".into(), encoding.into());
        writeln!(out, "{}", serde_json::to_string_pretty(&Value::Object(m))?)?;
        return Ok(());
    }
    for key in [
        "id", "tube", "state", "pri", "attempts", "reserves", "timeouts", "releases", "buries",
        "kicks",
    ] {
        writeln!(out, "{key:<12} {}", get(key))?;
    }
    writeln!(out, "{:<12} {}", "reason", get("bury-reason"))?;
    writeln!(
        out,
        "{:<12} {}",
        "buried at",
        buried_at.unwrap_or_else(|| "unknown".into())
    )?;
    writeln!(out, "{:<12} {}", "last error", get("last-error"))?;
    match std::str::from_utf8(&body) {
        Ok(text) => writeln!(out, "body ({} bytes):\n{text}", body.len())?,
        Err(_) => writeln!(
            out,
            "body ({} bytes, base64):\n{}",
            body.len(),
            base64::engine::general_purpose::STANDARD.encode(&body)
        )?,
    }
    Ok(())
}

/// A progress bar on standard error when it is a terminal, else nothing.
fn progress(total: usize) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// `larder dlq redrive`.
pub async fn redrive(args: RedriveArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if args.rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    let mut client = args.conn.connect().await?;
    let found = collect(&mut client, &args.filter, false, usize::MAX).await?;
    if args.dry_run {
        for (l, _) in &found {
            writeln!(out, "{}\t{}\t{}", l.id, l.tube, l.reason)?;
        }
        writeln!(out, "would redrive {} dead letters", found.len())?;
        return Ok(());
    }
    let started = Instant::now();
    let bar = progress(found.len());
    let filter = args.filter.dead_filter()?;
    let mut kicked = 0u64;
    match args.rate {
        // Without a rate or a text filter, the server kicks in batches.
        None if args.filter.grep.is_none() => {
            let mut batch = filter.clone();
            batch.to = found.last().map_or(JobId(0), |(l, _)| l.id);
            while (kicked as usize) < found.len() {
                let left = (found.len() - kicked as usize).min(MAX_DEAD_BATCH as usize);
                let n = client.kick_dead(&batch, left as u32).await?;
                if n == 0 {
                    break;
                }
                kicked += u64::from(n);
                bar.inc(u64::from(n));
            }
        }
        rate => {
            let mut tick = rate.map(|r| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r)));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            for (l, _) in &found {
                if let Some(t) = &mut tick {
                    t.tick().await;
                }
                let mut one = filter.clone();
                one.from = l.id;
                one.to = l.id;
                let n = client.kick_dead(&one, 1).await?;
                kicked += u64::from(n);
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    writeln!(
        out,
        "redrove {kicked} of {} matching dead letters in {:.1}s",
        found.len(),
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

/// `larder dlq delete`.
pub async fn delete(args: DeleteArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let mut deleted = 0u64;
    if !args.ids.is_empty() {
        for &id in &args.ids {
            let mut one = args.filter.dead_filter()?;
            one.from = JobId(id);
            one.to = JobId(id);
            match client.delete_dead(&one, 1).await? {
                0 => eprintln!("job {id} is not a dead letter; left alone"),
                n => deleted += u64::from(n),
            }
        }
        writeln!(out, "deleted {deleted} dead letters")?;
        return if deleted as usize == args.ids.len() {
            Ok(())
        } else {
            bail!(
                "{} of the ids were not dead letters",
                args.ids.len() - deleted as usize
            )
        };
    }
    if !args.yes {
        bail!("refusing to delete every matching dead letter without --yes (or give ids)");
    }
    let found = collect(&mut client, &args.filter, false, usize::MAX).await?;
    let bar = progress(found.len());
    let filter = args.filter.dead_filter()?;
    if args.filter.grep.is_none() {
        let mut batch = filter;
        batch.to = found.last().map_or(JobId(0), |(l, _)| l.id);
        while (deleted as usize) < found.len() {
            let n = client.delete_dead(&batch, MAX_DEAD_BATCH).await?;
            if n == 0 {
                break;
            }
            deleted += u64::from(n);
            bar.inc(u64::from(n));
        }
    } else {
        for (l, _) in &found {
            let mut one = filter.clone();
            one.from = l.id;
            one.to = l.id;
            deleted += u64::from(client.delete_dead(&one, 1).await?);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    writeln!(out, "deleted {deleted} dead letters")?;
    Ok(())
}

/// `larder dlq export`: one JSON object per line.
pub async fn export(args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let found = collect(&mut client, &args.filter, true, usize::MAX).await?;
    let exported_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    for (l, body) in &found {
        // A dead letter deleted between listing and reading has no body to export.
        let Some(body) = body else { continue };
        let mut m = letter_json(l);
        let (b, encoding) = body_json(body);
        m.insert("body".into(), b);
        m.insert("body_encoding".into(), encoding.into());
        m.insert("exported_at".into(), json!(exported_at));
        writeln!(out, "{}", Value::Object(m))?;
    }
    Ok(())
}
