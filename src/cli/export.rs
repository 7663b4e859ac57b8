//! `larder dlq export` and `larder dlq import`: dead letters out as JSON lines in the job
//! schema ([`super::job`]), and jobs put back from such lines; and moving one dead letter
//! into another tube (`larder dlq redrive --to-tube`).

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use super::dlq::{collect, FilterArgs};
use super::job::{self, plural};
use crate::client::Client;
use crate::protocol::{Command, DeadFilter, JobId, Reply, TubeName};

/// Arguments of `larder dlq export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// Export at most N (lowest ids first); default: all that match.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

/// Arguments of `larder dlq import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: super::ConnArgs,
    /// A file of `larder dlq export` lines; standard input when absent or `-`.
    file: Option<std::path::PathBuf>,
    /// Put every job into this tube instead of the one it was exported from.
    #[arg(long)]
    tube: Option<String>,
    /// Check every line and say what would be put, without putting anything.
    #[arg(long)]
    dry_run: bool,
}

/// `larder dlq export`: one JSON object per line, in the job schema plus `exported-at`.
pub async fn export(args: ExportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let limit = args.limit.unwrap_or(usize::MAX);
    let (found, _) = collect(&mut client, &args.filter, false, limit).await?;
    let exported_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    for (letter, _) in &found {
        // A dead letter deleted or kicked between listing and reading is not exported.
        let Some(found) = job::read(&mut client, letter.id).await? else {
            continue;
        };
        if found.get("state") != "buried" || found.body.is_none() {
            continue;
        }
        let mut m = found.to_json();
        m.insert("exported-at".into(), exported_at.clone().into());
        writeln!(out, "{}", Value::Object(m))?;
    }
    Ok(())
}

/// One job to put back, read from an export line.
struct Import {
    id: u64,
    tube: TubeName,
    pri: u32,
    ttr: u32,
    body: Bytes,
}

/// Reads one export line.
fn parse_line(line: &str, tube: Option<&TubeName>) -> anyhow::Result<Import> {
    let v: Value = serde_json::from_str(line).context("not a JSON object")?;
    let num = |k: &str| -> anyhow::Result<u64> {
        v.get(k)
            .and_then(Value::as_u64)
            .with_context(|| format!("no number {k:?}"))
    };
    let text = |k: &str| -> anyhow::Result<&str> {
        v.get(k)
            .and_then(Value::as_str)
            .with_context(|| format!("no string {k:?}"))
    };
    let tube = match tube {
        Some(t) => t.clone(),
        None => {
            let name = text("tube")?;
            TubeName::new(name.as_bytes()).with_context(|| format!("invalid tube name {name:?}"))?
        }
    };
    let body = match text("body-encoding")? {
        "utf-8" => Bytes::from(text("body")?.as_bytes().to_vec()),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(text("body")?)
            .context("body is not valid base64")?
            .into(),
        other => bail!("unknown body-encoding {other:?} (utf-8 or base64)"),
    };
    Ok(Import {
        id: num("id")?,
        tube,
        pri: u32::try_from(num("pri")?).context("pri is over 4294967295")?,
        ttr: u32::try_from(num("ttr")?).context("ttr is over 4294967295")?,
        body,
    })
}

/// `larder dlq import`: every line is checked before the first job is put.
pub async fn import(args: ImportArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let tube = match &args.tube {
        Some(t) => {
            Some(TubeName::new(t.as_bytes()).with_context(|| format!("invalid tube name {t:?}"))?)
        }
        None => None,
    };
    let (name, reader): (String, Box<dyn BufRead>) = match &args.file {
        Some(path) if path.as_os_str() != "-" => (
            path.display().to_string(),
            Box::new(std::io::BufReader::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            )),
        ),
        _ => (
            "standard input".to_owned(),
            Box::new(std::io::stdin().lock()),
        ),
    };
    let mut jobs = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        jobs.push(
            parse_line(&line, tube.as_ref())
                .with_context(|| format!("{name}, line {}: nothing was imported", n + 1))?,
        );
    }
    if args.dry_run {
        for j in &jobs {
            writeln!(out, "{}\t{}\t{} B", j.id, j.tube.as_str(), j.body.len())?;
        }
        writeln!(out, "would import {}", plural(jobs.len(), "job"))?;
        return Ok(());
    }
    let mut client = args.conn.connect().await?;
    writeln!(out, "old id\tnew id\ttube")?;
    let mut used: Option<TubeName> = None;
    for (n, j) in jobs.iter().enumerate() {
        if used.as_ref() != Some(&j.tube) {
            client.use_tube(j.tube.as_str()).await?;
            used = Some(j.tube.clone());
        }
        let id = put(&mut client, j.pri, j.ttr, j.body.clone())
            .await
            .with_context(|| format!("job {} (imported {n} before it)", j.id))?;
        writeln!(out, "{}\t{}\t{}", j.id, id, j.tube.as_str())?;
    }
    writeln!(out, "imported {}", plural(jobs.len(), "job"))?;
    Ok(())
}

/// Puts a job into the used tube, with an error that says why the server refused it.
async fn put(client: &mut Client, pri: u32, ttr: u32, body: Bytes) -> anyhow::Result<JobId> {
    let reply = client
        .call(&Command::Put {
            pri,
            delay: 0,
            ttr,
            body,
        })
        .await?;
    Ok(match reply {
        Reply::Inserted(id) => id,
        other => bail!("{}", super::put_refusal(&other)),
    })
}

/// Moves dead letter `id` into `tube`: puts a copy there (priority, TTR, body), then
/// deletes the dead letter. Returns whether it moved; a dead letter that went away between
/// the two leaves the copy, and says so (at-least-once, never lost).
pub async fn move_to(client: &mut Client, id: JobId, tube: &TubeName) -> anyhow::Result<bool> {
    let Some(found) = job::read(client, id).await? else {
        return Ok(false);
    };
    let Some(body) = found.body.clone() else {
        return Ok(false);
    };
    if found.get("state") != "buried" {
        return Ok(false);
    }
    let pri = found.get("pri").parse().unwrap_or(1024);
    let ttr = found.get("ttr").parse().unwrap_or(60);
    client.use_tube(tube.as_str()).await?;
    let new = put(client, pri, ttr, body)
        .await
        .with_context(|| format!("moving job {id} into {:?}", tube.as_str()))?;
    let mut one = DeadFilter::all();
    one.from = id;
    one.to = id;
    if client.delete_dead(&one, 1).await? == 0 {
        eprintln!(
            "larder: job {id} left the dead letters while it was moved; its copy {new} in {:?} stays",
            tube.as_str()
        );
    }
    Ok(true)
}
