//! `larder stats`: an operator's summary of one or several brokers — jobs by state, rates,
//! connections, the log and its fsyncs, dead letters, limits near their bound — with
//! `--all` for every field, `--json` for the raw fields, and `--watch N` to refresh.
//!
//! Several addresses (`--addr a,b,c`, client-side sharding) give one row per broker and a
//! total. Rates are per second since the previous sample under `--watch`, and since the
//! broker started on the first sample.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::client::ClientError;
use crate::protocol::Reply;

/// How long one broker may take to answer before it is reported as unreachable.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// A limit counts as near its bound from this share of it.
const NEAR: f64 = 0.8;

/// The addresses in `--addr` (comma-separated).
pub fn addresses(list: &str) -> anyhow::Result<Vec<String>> {
    let addrs: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    if addrs.is_empty() {
        bail!("--addr: no address in {list:?}");
    }
    Ok(addrs)
}

/// One broker's `stats` fields at one moment.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When they were read.
    pub at: Instant,
    /// The fields.
    pub fields: HashMap<String, String>,
}

impl Sample {
    /// A numeric field (0 if missing or not a number).
    pub fn num(&self, key: &str) -> f64 {
        self.fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

/// `stats` of one broker, within [`BROKER_TIMEOUT`].
pub async fn fetch(conn: &super::ConnArgs, addr: &str) -> anyhow::Result<Vec<(String, String)>> {
    let ask = async {
        let mut client = conn.connect_to(addr).await?;
        Ok(client.stats(None).await?)
    };
    match tokio::time::timeout(BROKER_TIMEOUT, ask).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!("{addr} did not answer within {BROKER_TIMEOUT:?}"),
    }
}

/// Fields summed into the total of several brokers.
fn additive(key: &str) -> bool {
    let prefixes = ["current-", "cmd-", "total-", "refused-", "dead-letters-"];
    (prefixes.iter().any(|p| key.starts_with(p)) && key != "current-free-disk")
        || key.ends_with("-disconnects")
        || matches!(
            key,
            "job-timeouts"
                | "log-bytes"
                | "log-live-bytes"
                | "log-records-written"
                | "log-fsyncs"
                | "log-segments"
                | "log-segments-removed"
                | "log-jobs-compacted"
        )
}

/// `larder stats` without `--tube`.
pub async fn run(args: &super::StatsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let addrs = addresses(&args.conn.addr)?;
    let mut previous: HashMap<String, Sample> = HashMap::new();
    let mut first = true;
    loop {
        let results =
            futures_util::future::join_all(addrs.iter().map(|a| fetch(&args.conn, a.as_str())))
                .await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
            .collect();
        let mut text = Vec::new();
        if args.json {
            json(&addrs, &results, &mut text)?;
        } else if args.all {
            all(&addrs, &results, &mut text)?;
        } else {
            let samples: Vec<(String, Result<Sample, String>)> = addrs
                .iter()
                .zip(&results)
                .map(|(addr, r)| {
                    let sample = r
                        .as_ref()
                        .map(|fields| Sample {
                            at: Instant::now(),
                            fields: fields.iter().cloned().collect(),
                        })
                        .map_err(|e| format!("{e:#}"));
                    (addr.clone(), sample)
                })
                .collect();
            text = summary(&samples, &previous).into_bytes();
            for (addr, sample) in samples {
                if let Ok(sample) = sample {
                    previous.insert(addr, sample);
                }
            }
        }
        let Some(every) = args.watch else {
            out.write_all(&text)?;
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
            return Ok(());
        };
        super::tubes::frame(out, first)?;
        first = false;
        out.write_all(&text)?;
        out.flush()?;
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

/// `--json`: one broker's fields exactly as before; several brokers as an object keyed by
/// address, with `total`.
fn json(
    addrs: &[String],
    results: &[anyhow::Result<Vec<(String, String)>>],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let [result] = results {
        return match result {
            Ok(fields) => super::print_fields(fields.clone(), true, out),
            Err(e) => bail!("{e:#}"),
        };
    }
    let mut all = serde_json::Map::new();
    let mut total: Vec<(String, f64)> = Vec::new();
    for (addr, result) in addrs.iter().zip(results) {
        let value = match result {
            Ok(fields) => {
                for (k, v) in fields {
                    if let (true, Ok(n)) = (additive(k), v.parse::<f64>()) {
                        match total.iter_mut().find(|(t, _)| t == k) {
                            Some((_, sum)) => *sum += n,
                            None => total.push((k.clone(), n)),
                        }
                    }
                }
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), super::json_scalar(k, v)))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            }
            Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
        };
        all.insert(addr.clone(), value);
    }
    let total: serde_json::Map<String, serde_json::Value> = total
        .into_iter()
        .map(|(k, n)| (k, serde_json::json!(n as u64)))
        .collect();
    all.insert("total".to_owned(), total.into());
    writeln!(out, "{}", serde_json::to_string_pretty(&all)?)?;
    Ok(())
}

/// `--all`: every field, per broker.
fn all(
    addrs: &[String],
    results: &[anyhow::Result<Vec<(String, String)>>],
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for (addr, result) in addrs.iter().zip(results) {
        if addrs.len() > 1 {
            writeln!(out, "== {addr}")?;
        }
        match result {
            Ok(fields) => super::print_fields(fields.clone(), false, out)?,
            Err(e) => writeln!(out, "error: {e:#}")?,
        }
    }
    Ok(())
}

/// Bytes for people: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn human_bytes(n: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} {}", units[0])
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Per-second rate of the counters `keys` (summed) between `prev` and `now`, or since the
/// broker started without a previous sample.
fn rate(now: &Sample, prev: Option<&Sample>, keys: &[&str]) -> f64 {
    let count = |s: &Sample| keys.iter().map(|k| s.num(k)).sum::<f64>();
    match prev {
        Some(p) => {
            let secs = now.at.duration_since(p.at).as_secs_f64();
            if secs <= 0.0 {
                0.0
            } else {
                (count(now) - count(p)).max(0.0) / secs
            }
        }
        None => {
            let up = now.num("uptime");
            if up <= 0.0 {
                0.0
            } else {
                count(now) / up
            }
        }
    }
}

const PUT: &[&str] = &["cmd-put"];
const RESERVE: &[&str] = &["cmd-reserve", "cmd-reserve-with-timeout"];
const DELETE: &[&str] = &["cmd-delete"];

/// The limits of one broker at or past [`NEAR`] of their bound, as `name use/bound (pct)`.
fn near_limits(s: &Sample) -> Vec<String> {
    let mut near = Vec::new();
    for (limit, used, bytes) in [
        ("max-jobs", "current-jobs", false),
        ("max-bytes", "current-bytes", true),
        ("max-connections", "current-connections", false),
    ] {
        let (bound, used) = (s.num(limit), s.num(used));
        if bound > 0.0 && used >= bound * NEAR {
            let show = |n: f64| {
                if bytes {
                    human_bytes(n)
                } else {
                    format!("{n}")
                }
            };
            near.push(format!(
                "{limit} {}/{} ({:.0}%)",
                show(used),
                show(bound),
                used / bound * 100.0
            ));
        }
    }
    let floor = s.num("min-free-disk");
    let free = s
        .fields
        .get("current-free-disk")
        .and_then(|v| v.parse::<f64>().ok());
    if let (true, Some(free)) = (floor > 0.0, free) {
        if free * NEAR <= floor {
            near.push(format!(
                "min-free-disk: {} free, floor {}",
                human_bytes(free),
                human_bytes(floor)
            ));
        }
    }
    near
}

/// The summary view.
pub fn summary(
    samples: &[(String, Result<Sample, String>)],
    previous: &HashMap<String, Sample>,
) -> String {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    let since_start = samples
        .iter()
        .any(|(addr, s)| s.is_ok() && !previous.contains_key(addr));
    table.set_header([
        "broker",
        "ready",
        "reserved",
        "delayed",
        "buried",
        "urgent",
        "conns",
        "waiting",
        "put/s",
        "reserve/s",
        "delete/s",
        "log",
        "fsyncs",
        "rec/fsync",
    ]);
    let counts = [
        "current-jobs-ready",
        "current-jobs-reserved",
        "current-jobs-delayed",
        "current-jobs-buried",
        "current-jobs-urgent",
        "current-connections",
        "current-waiting",
    ];
    let mut total = [0.0f64; 13];
    let mut notes = Vec::new();
    let mut dead: Vec<(String, f64)> = Vec::new();
    let mut ok = 0;
    let mut near_any = false;
    for (addr, sample) in samples {
        let s = match sample {
            Ok(s) => s,
            Err(e) => {
                notes.push(format!("{addr}: {e}"));
                continue;
            }
        };
        ok += 1;
        let prev = previous.get(addr);
        let mut row = vec![addr.clone()];
        let mut figures: Vec<f64> = counts.iter().map(|k| s.num(k)).collect();
        figures.extend([
            rate(s, prev, PUT),
            rate(s, prev, RESERVE),
            rate(s, prev, DELETE),
            s.num("log-bytes"),
            s.num("log-fsyncs"),
            s.num("log-records-written"),
        ]);
        for (t, f) in total.iter_mut().zip(&figures) {
            *t += f;
        }
        row.extend(cells(&figures));
        table.add_row(row);
        for (k, v) in &s.fields {
            if let (Some(reason), Ok(n)) = (k.strip_prefix("dead-letters-"), v.parse::<f64>()) {
                match dead.iter_mut().find(|(r, _)| r == reason) {
                    Some((_, sum)) => *sum += n,
                    None => dead.push((reason.to_owned(), n)),
                }
            }
        }
        let near = near_limits(s);
        near_any |= !near.is_empty();
        if !near.is_empty() {
            notes.push(format!("{addr}: near its limits: {}", near.join(", ")));
        }
        let mut refused: Vec<String> = s
            .fields
            .iter()
            .filter(|(k, v)| k.starts_with("refused-") && v.as_str() != "0")
            .map(|(k, v)| format!("{} {v}", &k["refused-".len()..]))
            .collect();
        refused.sort();
        if !refused.is_empty() {
            notes.push(format!(
                "{addr}: refusals since start: {}",
                refused.join(", ")
            ));
        }
        if s.fields.get("draining").is_some_and(|d| d == "true") {
            notes.push(format!("{addr}: draining (puts refused)"));
        }
    }
    if samples.len() > 1 {
        let mut row = vec!["total".to_owned()];
        row.extend(cells(&total));
        table.add_row(row);
    }
    let mut text = format!("{table}\n");
    let rates = if since_start {
        "rates: per second since start"
    } else {
        "rates: per second since the last sample"
    };
    text.push_str(&format!(
        "{rates}; brokers answering: {ok}/{}\n",
        samples.len()
    ));
    dead.retain(|(_, n)| *n > 0.0);
    dead.sort_by(|a, b| a.0.cmp(&b.0));
    if dead.is_empty() {
        text.push_str("dead letters: none\n");
    } else {
        let list: Vec<String> = dead.iter().map(|(r, n)| format!("{r} {n}")).collect();
        let sum: f64 = dead.iter().map(|(_, n)| n).sum();
        text.push_str(&format!("dead letters: {sum} ({})\n", list.join(", ")));
    }
    if !near_any {
        text.push_str("limits: none near their bound\n");
    }
    for note in notes {
        text.push_str(&note);
        text.push('\n');
    }
    text
}

/// A row's cells: seven counts, three rates, log bytes, fsyncs, and records written
/// (shown as records per fsync).
fn cells(f: &[f64]) -> Vec<String> {
    let mut row: Vec<String> = f[..7].iter().map(|n| format!("{n}")).collect();
    row.extend(f[7..10].iter().map(|r| format!("{r:.1}")));
    row.push(human_bytes(f[10]));
    row.push(format!("{}", f[11]));
    row.push(if f[11] > 0.0 {
        format!("{:.1}", f[12] / f[11])
    } else {
        "-".to_owned()
    });
    row
}

/// `larder stats --tube T`: that tube's fields, as before (one broker only).
pub async fn tube(args: &super::StatsArgs, tube: &str, out: &mut impl Write) -> anyhow::Result<()> {
    let addrs = addresses(&args.conn.addr)?;
    let [_] = addrs.as_slice() else {
        bail!("--tube takes one --addr; `larder tubes --addr …` lists tubes over several");
    };
    let mut client = args.conn.connect().await?;
    let fields = match client.stats(Some(tube)).await {
        Err(ClientError::Unexpected(Reply::NotFound)) => bail!("no tube named {tube:?}"),
        other => other?,
    };
    super::print_fields(fields, args.json, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pairs: &[(&str, &str)]) -> Sample {
        Sample {
            at: Instant::now(),
            fields: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn limits_past_four_fifths_of_their_bound_are_near() {
        let s = sample(&[
            ("max-jobs", "100"),
            ("current-jobs", "80"),
            ("max-bytes", "0"),
            ("current-bytes", "5"),
            ("max-connections", "100"),
            ("current-connections", "79"),
            ("min-free-disk", "1000"),
            ("current-free-disk", "1200"),
        ]);
        assert_eq!(
            near_limits(&s),
            vec![
                "max-jobs 80/100 (80%)".to_owned(),
                "min-free-disk: 1.2 KiB free, floor 1000 B".to_owned()
            ]
        );
    }

    #[test]
    fn rates_are_since_start_then_since_the_last_sample() {
        let first = sample(&[("uptime", "10"), ("cmd-put", "50")]);
        assert_eq!(rate(&first, None, PUT), 5.0);
        let mut second = sample(&[("uptime", "12"), ("cmd-put", "70")]);
        second.at = first.at + Duration::from_secs(2);
        assert_eq!(rate(&second, Some(&first), PUT), 10.0);
    }

    #[test]
    fn addresses_split_on_commas() {
        assert_eq!(
            addresses("a:1, b:2,").ok(),
            Some(vec!["a:1".into(), "b:2".into()])
        );
        assert!(addresses(" , ").is_err());
    }
}
