//! `larder peek`: look at one job, in any state, without changing it (`peek*` and
//! `stats-job`), and the one JSON form of a job that `peek`, `dlq show`, `dlq list` and
//! `dlq export` share.
//!
//! The JSON schema (README, "JSON output"): keys are the protocol's field names, kebab-case,
//! with the protocol's units (`buried-at` in Unix milliseconds, `age`/`ttr`/`delay` in
//! seconds); derived values add a suffix (`buried-at-time`, RFC 3339). The body is `body`
//! with `body-encoding` `utf-8` or `base64`.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use bytes::Bytes;
use clap::Args;
use serde_json::{Map, Value};

use crate::client::{Client, ClientError};
use crate::protocol::{Body, Command, JobId, Reply, TubeName};

/// Arguments of `larder peek`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "ready", "delayed", "buried"])))]
pub struct PeekArgs {
    #[command(flatten)]
    pub conn: super::ConnArgs,
    /// The job id.
    pub id: Option<u64>,
    /// Instead of an id: the next ready job of --tube (the one a reserve would take).
    #[arg(long)]
    pub ready: bool,
    /// Instead of an id: the delayed job of --tube that is ready soonest.
    #[arg(long)]
    pub delayed: bool,
    /// Instead of an id: the oldest buried job of --tube.
    #[arg(long)]
    pub buried: bool,
    /// The tube for --ready, --delayed and --buried.
    #[arg(long, default_value = "default")]
    pub tube: String,
    /// Print JSON (the job schema) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// One job as `stats-job` and `peek` describe it.
pub struct Job {
    /// The `stats-job` fields, in the server's order.
    pub fields: Vec<(String, String)>,
    /// The body, `None` if the job went away between the two commands.
    pub body: Option<Bytes>,
}

impl Job {
    /// The field `key`, or "" if the server did not send it.
    pub fn get(&self, key: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The job's id.
    pub fn id(&self) -> u64 {
        self.get("id").parse().unwrap_or(0)
    }

    /// The job as a JSON object (module docs).
    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        for (k, v) in &self.fields {
            m.insert(k.clone(), field_json(k, v));
        }
        if let Some(ms) = self.fields.iter().find(|(k, _)| k == "buried-at") {
            m.insert(
                "buried-at-time".into(),
                rfc3339(ms.1.parse().unwrap_or(0)).into(),
            );
        }
        if let Some(body) = &self.body {
            let (b, encoding) = body_json(body);
            m.insert("body".into(), b);
            m.insert("body-encoding".into(), encoding.into());
        }
        m
    }
}

/// A stats field as JSON: numbers as numbers, text (and `last-error`, always text) as
/// strings.
pub fn field_json(key: &str, value: &str) -> Value {
    match value.parse::<i64>() {
        Ok(n) if key != "last-error" && key != "tube" && key != "name" => n.into(),
        _ => value.into(),
    }
}

/// Reads job `id`: `None` if there is no such job.
pub async fn read(client: &mut Client, id: JobId) -> anyhow::Result<Option<Job>> {
    let Some(fields) = client.stats_job(id).await? else {
        return Ok(None);
    };
    let body = client.peek(id).await?;
    Ok(Some(Job { fields, body }))
}

/// Unix milliseconds as an RFC 3339 time, or `None` for 0 (unknown).
pub fn rfc3339(ms: u64) -> Option<String> {
    (ms > 0).then(|| {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    })
}

/// A body as JSON: UTF-8 text when it is, else base64; with its encoding's name.
pub fn body_json(body: &[u8]) -> (Value, &'static str) {
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

/// Prints a job as text (aligned fields, then the body) or as JSON.
pub fn print(job: &Job, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&Value::Object(job.to_json()))?
        )?;
        return Ok(());
    }
    for (k, v) in &job.fields {
        let shown = match k.as_str() {
            "age" | "delay" | "ttr" | "time-left" => format!("{v}s"),
            "buried-at" => match rfc3339(v.parse().unwrap_or(0)) {
                Some(t) => format!("{t} ({v} ms)"),
                None => "-".to_owned(),
            },
            _ => v.clone(),
        };
        writeln!(out, "{k:<13} {shown}")?;
    }
    match job.body.as_deref() {
        None => writeln!(out, "body: (gone: the job was deleted meanwhile)")?,
        Some(body) => match std::str::from_utf8(body) {
            Ok(text) => writeln!(out, "body ({}):\n{text}", plural(body.len(), "byte"))?,
            Err(_) => writeln!(
                out,
                "body ({}, base64):\n{}",
                plural(body.len(), "byte"),
                base64::engine::general_purpose::STANDARD.encode(body)
            )?,
        },
    }
    Ok(())
}

/// `1 byte`, `2 bytes`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `larder peek`.
pub async fn peek(args: PeekArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let id = match args.id {
        Some(id) => JobId(id),
        None => {
            let (cmd, state) = if args.ready {
                (Command::PeekReady, "ready")
            } else if args.delayed {
                (Command::PeekDelayed, "delayed")
            } else {
                (Command::PeekBuried, "buried")
            };
            let tube = TubeName::new(args.tube.as_bytes())
                .with_context(|| format!("invalid tube name {:?}", args.tube))?;
            client.use_tube(tube.as_str()).await?;
            match client.call(&cmd).await? {
                Reply::Found {
                    id,
                    body: Body::Bytes(_),
                } => id,
                Reply::NotFound => bail!("tube {:?} has no {state} job", args.tube),
                other => return Err(ClientError::Unexpected(other).into()),
            }
        }
    };
    let Some(job) = read(&mut client, id).await? else {
        bail!("no job {id}");
    };
    print(&job, args.json, out)
}
