//! `larder dlq …`: inspect, redrive and delete dead letters (buried jobs) through the
//! `list-dead`, `kick-dead` and `delete-dead` extensions, and `peek`/`stats-job` for bodies
//! and details. Export and import are in [`super::export`].
//!
//! `redrive` and `delete` are symmetric: ids or filters, `--limit`, `--dry-run`, `--rate`,
//! and `--yes` to act on more than `--confirm-above` dead letters chosen by filters.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use super::job::{self, plural, rfc3339};
use crate::client::{is_bury_reason, Client, DeadLetter};
use crate::protocol::{BuryReason, DeadFilter, JobId, TubeName, MAX_DEAD_BATCH};

/// `larder dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters: a table (id, tube, reason, attempts, buried at, last error, body
    /// preview) or JSON; says how many match when it shows fewer.
    List(ListArgs),
    /// Show one dead letter's metadata and body (`larder peek ID` shows any job).
    Show(ShowArgs),
    /// Kick dead letters back to ready with a fresh attempt budget, in their tube or moved
    /// to another (--to-tube).
    Redrive(RedriveArgs),
    /// Delete dead letters.
    Delete(DeleteArgs),
    /// Print dead letters as JSON lines (the job schema, body as UTF-8 text when it is, else
    /// base64), to archive them or put them back with `larder dlq import`.
    Export(super::export::ExportArgs),
    /// Put jobs back from `larder dlq export` lines (tube, priority, TTR and body).
    Import(super::export::ImportArgs),
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
    /// Only those buried at least this long ago (a duration: `500ms`, `30s`, `5m`, `1h`).
    #[arg(long, value_name = "DURATION")]
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
    /// Print JSON (the job schema).
    #[arg(long)]
    json: bool,
}

/// What `redrive` and `delete` act on, and how.
#[derive(Debug, Args)]
pub struct ActArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    /// Dead letters by id; each must also match the filters given. Without ids, every
    /// dead letter the filters match.
    ids: Vec<u64>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Act on at most N (lowest ids first); default: all that match.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Only list what would be done.
    #[arg(long)]
    dry_run: bool,
    /// At most N dead letters per second; default: as fast as the server takes them.
    #[arg(long, value_name = "N")]
    rate: Option<u32>,
    /// Confirm acting on more than --confirm-above dead letters chosen by filters.
    #[arg(long)]
    yes: bool,
    /// How many dead letters chosen by filters (not ids) may be acted on without --yes.
    #[arg(
        long,
        env = "LARDER_DLQ_CONFIRM_ABOVE",
        default_value_t = 10,
        value_name = "N"
    )]
    confirm_above: usize,
}

/// Arguments of `larder dlq redrive`.
#[derive(Debug, Args)]
pub struct RedriveArgs {
    #[command(flatten)]
    act: ActArgs,
    /// Put the jobs into this tube instead (each is put anew there, with its priority, TTR
    /// and body, and the dead letter is then deleted; its id changes).
    #[arg(long, value_name = "TUBE")]
    to_tube: Option<String>,
}

/// Arguments of `larder dlq delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    act: ActArgs,
}

/// Runs one `larder dlq` subcommand.
pub async fn run(cmd: DlqCmd, out: &mut impl Write) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List(args) => list(args, out).await,
        DlqCmd::Show(args) => show(args, out).await,
        DlqCmd::Redrive(args) => act(args.act, Action::Redrive(args.to_tube), out).await,
        DlqCmd::Delete(args) => act(args.act, Action::Delete, out).await,
        DlqCmd::Export(args) => super::export::export(args, out).await,
        DlqCmd::Import(args) => super::export::import(args, out).await,
    }
}

impl FilterArgs {
    /// The server-side part of the filter (`--grep` is applied here, on bodies and errors).
    pub fn dead_filter(&self) -> anyhow::Result<DeadFilter> {
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
            let d = crate::units::parse_duration(d)
                .map_err(|e| anyhow::anyhow!("--older-than: {e}"))?;
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
pub type Found = (DeadLetter, Option<Bytes>);

/// Pages through the dead letters `filter` selects, reading bodies when `bodies` or `--grep`
/// needs them. Returns the first `limit` matches and how many match in all.
pub async fn collect(
    client: &mut Client,
    filter: &FilterArgs,
    bodies: bool,
    limit: usize,
) -> anyhow::Result<(Vec<Found>, usize)> {
    let mut page = filter.dead_filter()?;
    let mut found = Vec::new();
    let mut total = 0usize;
    loop {
        let letters = client.list_dead(&page, MAX_DEAD_BATCH).await?;
        let Some(last) = letters.last().map(|l| l.id) else {
            break;
        };
        for letter in letters {
            let keep = found.len() < limit;
            let body = if filter.grep.is_some() || (bodies && keep) {
                client.peek(letter.id).await?
            } else {
                None
            };
            if filter.matches(&letter, body.as_deref()) {
                total += 1;
                if keep {
                    found.push((letter, body));
                }
            }
        }
        match last.0.checked_add(1) {
            Some(next) => page.from = JobId(next),
            None => break,
        }
    }
    Ok((found, total))
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

/// A dead letter in the job schema (the subset `list-dead` carries).
fn letter_json(letter: &DeadLetter, body: Option<&[u8]>) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), letter.id.0.into());
    m.insert("tube".into(), letter.tube.clone().into());
    m.insert("state".into(), "buried".into());
    m.insert("pri".into(), letter.pri.into());
    m.insert("attempts".into(), letter.attempts.into());
    m.insert("last-error".into(), letter.last_error.clone().into());
    m.insert("bury-reason".into(), letter.reason.clone().into());
    m.insert("buried-at".into(), letter.buried_at_ms.into());
    m.insert("buried-at-time".into(), rfc3339(letter.buried_at_ms).into());
    m.insert("body-preview".into(), preview(body, 60).into());
    Value::Object(m)
}

/// "showing 100 of 152 dead letters (use --limit to see more)", or "152 dead letters".
fn count_line(shown: usize, total: usize) -> String {
    if shown < total {
        format!(
            "showing {shown} of {} (use --limit to see more)",
            plural(total, "dead letter")
        )
    } else {
        plural(total, "dead letter")
    }
}

/// `larder dlq list`.
pub async fn list(args: ListArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let (found, total) = collect(&mut client, &args.filter, true, args.limit).await?;
    if args.json {
        let rows: Vec<Value> = found
            .iter()
            .map(|(l, body)| letter_json(l, body.as_deref()))
            .collect();
        let doc = serde_json::json!({
            "total": total,
            "shown": found.len(),
            "dead-letters": rows,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
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
    if !found.is_empty() {
        writeln!(out, "{table}")?;
    }
    writeln!(out, "{}", count_line(found.len(), total))?;
    Ok(())
}

/// `larder dlq show`.
pub async fn show(args: ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let id = JobId(args.id);
    let Some(found) = job::read(&mut client, id).await? else {
        bail!("no job {id}");
    };
    let state = found.get("state");
    if state != "buried" {
        bail!("job {id} is {state}, not a dead letter (`larder peek {id}` shows it)");
    }
    job::print(&found, args.json, out)
}

/// A progress bar on standard error when it is a terminal, else nothing.
pub fn progress(total: usize) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(total as u64)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

/// What `act` does to each dead letter.
enum Action {
    /// Kick it (in place, or into another tube).
    Redrive(Option<String>),
    /// Delete it.
    Delete,
}

impl Action {
    fn verb(&self) -> (&'static str, &'static str) {
        match self {
            Action::Redrive(_) => ("redrive", "redrove"),
            Action::Delete => ("delete", "deleted"),
        }
    }
}

/// Why job `id` given by id is not acted on, or `None` if it is a dead letter matching the
/// filters (then it is returned in `letter`).
async fn check_id(
    client: &mut Client,
    id: u64,
    filter: &FilterArgs,
) -> anyhow::Result<Result<DeadLetter, String>> {
    let Some(found) = job::read(client, JobId(id)).await? else {
        return Ok(Err(format!("no job {id}")));
    };
    let state = found.get("state");
    if state != "buried" {
        return Ok(Err(format!("job {id} is {state}, not a dead letter")));
    }
    let letter = DeadLetter {
        id: JobId(id),
        tube: found.get("tube").to_owned(),
        reason: found.get("bury-reason").to_owned(),
        attempts: found.get("attempts").parse().unwrap_or(0),
        pri: found.get("pri").parse().unwrap_or(0),
        buried_at_ms: found.get("buried-at").parse().unwrap_or(0),
        last_error: found.get("last-error").to_owned(),
    };
    let mut one = filter.dead_filter()?;
    one.from = JobId(id);
    one.to = JobId(id);
    if let Some(t) = filter.tube.as_deref().filter(|t| *t != letter.tube) {
        return Ok(Err(format!(
            "job {id} is a dead letter of tube {:?}, not of {t:?}",
            letter.tube
        )));
    }
    let listed = client.list_dead(&one, 1).await?;
    if listed.is_empty() || !filter.matches(&letter, found.body.as_deref()) {
        return Ok(Err(format!(
            "job {id} is a dead letter that does not match the filters given"
        )));
    }
    Ok(Ok(letter))
}

/// `larder dlq redrive` and `larder dlq delete`.
async fn act(args: ActArgs, action: Action, out: &mut impl Write) -> anyhow::Result<()> {
    if args.rate == Some(0) {
        bail!("--rate must be at least 1");
    }
    let (verb, done) = action.verb();
    let limit = args.limit.unwrap_or(usize::MAX);
    let mut client = args.conn.connect().await?;
    let mut skipped = 0usize;
    let mut matching = None;
    let considered = args.ids.len().min(limit);
    let selected: Vec<DeadLetter> = if args.ids.is_empty() {
        let (found, total) = collect(&mut client, &args.filter, false, limit).await?;
        matching = Some(total);
        if found.len() > args.confirm_above && !args.yes && !args.dry_run {
            bail!(
                "refusing to {verb} {} without --yes ({} match; --dry-run lists them, \
                 --limit takes fewer, --confirm-above sets this threshold)",
                plural(found.len(), "dead letter"),
                total
            );
        }
        found.into_iter().map(|(l, _)| l).collect()
    } else {
        // Ids past --limit are not looked at; the summary says how many were given.
        if args.ids.len() > limit {
            matching = Some(args.ids.len());
        }
        let mut selected = Vec::new();
        for &id in args.ids.iter().take(limit) {
            match check_id(&mut client, id, &args.filter).await? {
                Ok(letter) => selected.push(letter),
                Err(why) => {
                    eprintln!("larder: {why}; left alone");
                    skipped += 1;
                }
            }
        }
        selected
    };
    if args.dry_run {
        for l in &selected {
            writeln!(out, "{}\t{}\t{}", l.id, l.tube, l.reason)?;
        }
        writeln!(
            out,
            "would {verb} {}{}",
            plural(selected.len(), "dead letter"),
            cut_note(considered.max(selected.len()), matching)
        )?;
        return finish(skipped);
    }
    let to_tube = match &action {
        Action::Redrive(Some(t)) => Some(
            TubeName::new(t.as_bytes())
                .with_context(|| format!("--to-tube: invalid tube name {t:?}"))?,
        ),
        _ => None,
    };
    let started = Instant::now();
    let bar = progress(selected.len());
    let filter = args.filter.dead_filter()?;
    let mut count = 0usize;
    let batch = args.rate.is_none()
        && args.filter.grep.is_none()
        && args.ids.is_empty()
        && args.limit.is_none()
        && to_tube.is_none();
    // One request acts on the dead letters `scope` selects, at most `take` of them: when
    // batching, the filters again up to the last id selected, as many as the server takes;
    // otherwise one selected dead letter at a time, paced by --rate.
    let last = selected.last().map_or(JobId(0), |l| l.id);
    let mut tick = args.rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut next = 0usize;
    while next < selected.len() {
        if let Some(t) = &mut tick {
            t.tick().await;
        }
        let mut scope = filter.clone();
        let (take, one) = if batch {
            scope.to = last;
            let left = (selected.len() - next).min(MAX_DEAD_BATCH as usize) as u32;
            (left, None)
        } else {
            let l = &selected[next];
            scope.from = l.id;
            scope.to = l.id;
            (1, Some(l.id))
        };
        let n = match (&action, &to_tube, one) {
            (Action::Delete, _, _) => client.delete_dead(&scope, take).await?,
            (Action::Redrive(_), Some(tube), Some(id)) => {
                u32::from(super::export::move_to(&mut client, id, tube).await?)
            }
            (Action::Redrive(_), _, _) => client.kick_dead(&scope, take).await?,
        };
        count += n as usize;
        if batch {
            if n == 0 {
                break;
            }
            next += n as usize;
            bar.inc(u64::from(n));
        } else {
            next += 1;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let into = to_tube.map_or(String::new(), |t| format!(" into {:?}", t.as_str()));
    writeln!(
        out,
        "{done} {count} of {}{into} in {:.1}s{}",
        plural(selected.len(), "dead letter"),
        started.elapsed().as_secs_f64(),
        cut_note(considered.max(selected.len()), matching)
    )?;
    finish(skipped)
}

/// " (3 match; --limit took the first 1)" when a limit cut the selection, else "".
fn cut_note(selected: usize, matching: Option<usize>) -> String {
    match matching {
        Some(total) if total > selected => {
            format!(" ({total} match; --limit took the first {selected})")
        }
        _ => String::new(),
    }
}

/// Fails when some ids given were left alone (each was named on standard error).
fn finish(skipped: usize) -> anyhow::Result<()> {
    if skipped > 0 {
        bail!(
            "{} given {} not acted on",
            plural(skipped, "id"),
            if skipped == 1 { "was" } else { "were" }
        );
    }
    Ok(())
}
