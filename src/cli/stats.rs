//! `larder stats`: a server's or a tube's statistics as a table or one JSON object.

use std::io::Write;

use anyhow::bail;
use clap::Args;

use super::ConnArgs;
use crate::protocol::Reply;

/// `larder stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Show this tube's statistics instead of the server's.
    #[arg(long)]
    pub tube: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `larder stats`.
pub async fn stats(args: StatsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let fields = match client.stats(args.tube.as_deref()).await {
        Err(crate::client::ClientError::Unexpected(Reply::NotFound)) => {
            bail!("no tube named {:?}", args.tube.unwrap_or_default())
        }
        other => other?,
    };
    print_fields(fields, args.json, out)
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
