//! `larder tubes`: every tube of one or several brokers with its jobs by state, waiting
//! workers, pause and dead letters; `--json` for scripts, `--watch N` to refresh.
//!
//! With several addresses each tube gets one row per broker that has it and a `total`
//! row.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use super::summary::{addresses, BROKER_TIMEOUT};
use crate::client::{parse_yaml_list, Client, ClientError};
use crate::config::DEFAULT_LISTEN;
use crate::protocol::{Command, Reply};

/// Arguments of `larder tubes`.
#[derive(Debug, Args)]
pub struct TubesArgs {
    /// Server address, or several separated by commas (their tubes are listed per broker
    /// with a total).
    #[arg(long, env = "LARDER_ADDR", default_value = DEFAULT_LISTEN)]
    pub addr: String,
    /// Print JSON (one object per tube and broker) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every N seconds until interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

/// One tube's `stats-tube` fields (with larder's).
type Fields = Vec<(String, String)>;

/// Every tube of the broker at `addr` with its fields, within [`BROKER_TIMEOUT`].
async fn fetch(addr: &str) -> Result<Vec<Fields>, ClientError> {
    let ask = async {
        let mut client = Client::connect(addr).await?;
        let names = match client.call(&Command::ListTubes).await? {
            Reply::Ok(yaml) => parse_yaml_list(&yaml),
            other => return Err(ClientError::Unexpected(other)),
        };
        let mut tubes = Vec::with_capacity(names.len());
        for name in names {
            match client.stats(Some(&name)).await {
                Ok(fields) => tubes.push(fields),
                // Gone since the list was read.
                Err(ClientError::Unexpected(Reply::NotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(tubes)
    };
    match tokio::time::timeout(BROKER_TIMEOUT, ask).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Io(std::io::ErrorKind::TimedOut.into())),
    }
}

/// Starts one frame of `--watch` output: clears a terminal, or separates frames with a
/// blank line when the output is not one.
pub fn frame(out: &mut impl Write, first: bool) -> std::io::Result<()> {
    if std::io::stdout().is_terminal() {
        write!(out, "\x1b[2J\x1b[H")?;
    } else if !first {
        writeln!(out)?;
    }
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    writeln!(out, "larder at {now}")
}

fn get<'a>(fields: &'a Fields, key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn num(fields: &Fields, key: &str) -> u64 {
    get(fields, key).parse().unwrap_or(0)
}

/// Columns after the tube (and broker) name.
const COLUMNS: [&str; 9] = [
    "ready",
    "reserved",
    "delayed",
    "buried",
    "urgent",
    "waiting",
    "watching",
    "paused",
    "dead letters",
];

/// A tube's cells (the figures, then the pause and the dead letters by reason).
fn cells(figures: &[u64; 7], pause_left: u64, dead: &BTreeMap<String, u64>) -> Vec<String> {
    let mut row: Vec<String> = figures.iter().map(u64::to_string).collect();
    row.push(if pause_left > 0 {
        format!("{pause_left}s left")
    } else {
        "-".to_owned()
    });
    let dead: Vec<String> = dead
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    row.push(if dead.is_empty() {
        "-".to_owned()
    } else {
        dead.join(", ")
    });
    row
}

fn figures(fields: &Fields) -> [u64; 7] {
    [
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "current-jobs-urgent",
        "current-waiting",
        "current-watching",
    ]
    .map(|k| num(fields, k))
}

fn dead_letters(fields: &Fields) -> BTreeMap<String, u64> {
    fields
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("dead-letters-")?.to_owned(), v.parse().ok()?)))
        .collect()
}

/// The table of every tube, per broker with totals when there are several.
pub fn table(brokers: &[(String, Result<Vec<Fields>, String>)]) -> String {
    let several = brokers.len() > 1;
    let mut by_tube: BTreeMap<String, Vec<(&str, &Fields)>> = BTreeMap::new();
    let mut notes = Vec::new();
    for (addr, result) in brokers {
        match result {
            Ok(tubes) => {
                for fields in tubes {
                    by_tube
                        .entry(get(fields, "name").to_owned())
                        .or_default()
                        .push((addr.as_str(), fields));
                }
            }
            Err(e) => notes.push(format!("{addr}: {e}")),
        }
    }
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    let mut header = vec!["tube"];
    if several {
        header.push("broker");
    }
    header.extend(COLUMNS);
    table.set_header(header);
    for (name, rows) in &by_tube {
        let mut total = [0u64; 7];
        let mut total_pause = 0;
        let mut total_dead: BTreeMap<String, u64> = BTreeMap::new();
        for (addr, fields) in rows {
            let f = figures(fields);
            let pause = num(fields, "pause-time-left");
            let dead = dead_letters(fields);
            for (t, n) in total.iter_mut().zip(f) {
                *t += n;
            }
            total_pause = total_pause.max(pause);
            for (reason, n) in &dead {
                *total_dead.entry(reason.clone()).or_default() += n;
            }
            let mut row = vec![name.clone()];
            if several {
                row.push((*addr).to_owned());
            }
            row.extend(cells(&f, pause, &dead));
            table.add_row(row);
        }
        if several {
            let mut row = vec![name.clone(), "total".to_owned()];
            row.extend(cells(&total, total_pause, &total_dead));
            table.add_row(row);
        }
    }
    let mut text = format!("{table}\n");
    for note in notes {
        text.push_str(&note);
        text.push('\n');
    }
    text
}

/// `larder tubes`.
pub async fn run(args: TubesArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let addrs = addresses(&args.addr)?;
    let mut first = true;
    loop {
        let results = futures_util::future::join_all(addrs.iter().map(|a| fetch(a.as_str()))).await;
        let brokers: Vec<(String, Result<Vec<Fields>, String>)> = addrs
            .iter()
            .cloned()
            .zip(results.into_iter().map(|r| r.map_err(|e| e.to_string())))
            .collect();
        let failed: Vec<String> = brokers
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().cloned())
            .collect();
        let text = if args.json {
            json(&brokers)?
        } else {
            table(&brokers)
        };
        let Some(every) = args.watch else {
            out.write_all(text.as_bytes())?;
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
            return Ok(());
        };
        frame(out, first)?;
        first = false;
        out.write_all(text.as_bytes())?;
        out.flush()?;
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

/// `--json`: an array of objects, each a tube's fields plus `broker`.
fn json(brokers: &[(String, Result<Vec<Fields>, String>)]) -> anyhow::Result<String> {
    let mut all = Vec::new();
    for (addr, result) in brokers {
        match result {
            Ok(tubes) => {
                for fields in tubes {
                    let mut object = serde_json::Map::new();
                    object.insert("broker".to_owned(), addr.clone().into());
                    for (k, v) in fields {
                        object.insert(k.clone(), super::json_scalar(k, v));
                    }
                    all.push(serde_json::Value::Object(object));
                }
            }
            Err(e) => all.push(serde_json::json!({ "broker": addr, "error": e })),
        }
    }
    Ok(format!("{}\n", serde_json::to_string_pretty(&all)?))
}
