//! `larder stats`: a server's or a tube's statistics as a table or one JSON object.

use std::io::Write;

use clap::Args;

use super::ConnArgs;

/// `larder stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Show this tube's statistics instead of the server's.
    #[arg(long)]
    pub tube: Option<String>,
    /// Print every field as one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Print every field (a two-column table) instead of the summary.
    #[arg(long)]
    pub all: bool,
    /// Refresh every N seconds until interrupted; rates are then since the last sample.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

/// `larder stats`: the summary of one or several brokers (see [`super::summary`]), every
/// field with `--all` or `--json`, or a tube's fields with `--tube`.
pub async fn stats(args: StatsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    match &args.tube {
        Some(tube) => super::summary::tube(&args, tube, out).await,
        None => super::summary::run(&args, out).await,
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
            .map(|(k, v)| {
                let value = json_scalar(&k, &v);
                (k, value)
            })
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

/// A stats field as JSON: the fields that are text by nature (names, the server's random
/// `id`, `version`, `hostname`, …) stay strings even when they look like numbers; the others
/// are the JSON scalars they spell.
pub fn json_scalar(key: &str, v: &str) -> serde_json::Value {
    match key {
        // The settings a tube sets itself, `"a,b"` on the wire: a JSON array of names.
        "own-settings" => v
            .split(',')
            .filter(|s| !s.is_empty())
            .map(serde_json::Value::from)
            .collect(),
        "name" | "tube" | "last-error" | "hostname" | "id" | "version" | "os" | "platform"
        | "log-fsync" | "bury-reason" | "state" => v.into(),
        _ => yaml_scalar_to_json(v),
    }
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
