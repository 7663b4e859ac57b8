//! `larder tube config` and `larder tube show`: a tube's settings through `config-tube`, and
//! its statistics through `stats-tube`.

use std::io::Write;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use crate::client::ClientError;
use crate::protocol::{Reply, TubeSetting, Unit};

/// `larder tube …`
#[derive(Debug, Subcommand)]
pub enum TubeCmd {
    /// Set a tube's retry policy and limits; `default` returns a setting to the server's
    /// default.
    Config(ConfigArgs),
    /// Show a tube's statistics, settings and dead letters by reason.
    Show(ShowArgs),
}

/// Arguments of `larder tube config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub conn: super::ConnArgs,
    /// The tube.
    pub tube: String,
    /// Attempts before a job is buried automatically (0: unlimited). Each setting left out
    /// is unchanged; `default` returns it to the server's value.
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<String>,
    /// Delay before the first retry after a timeout, disconnect or failure: a duration with
    /// a unit (`500ms`, `30s`, `5m`, `1h`; a bare number is refused); 0 turns the retry
    /// policy off.
    #[arg(long, value_name = "DURATION")]
    pub retry_delay: Option<String>,
    /// Factor the retry delay grows by with each attempt (1 to 1000, e.g. `2` or `1.5`).
    #[arg(long, value_name = "X")]
    pub retry_backoff: Option<String>,
    /// Longest retry delay: a duration with a unit (`10m`); 0: no cap.
    #[arg(long, value_name = "DURATION")]
    pub retry_max: Option<String>,
    /// Fraction of each retry delay taken off at random (0 to 1).
    #[arg(long, value_name = "F")]
    pub retry_jitter: Option<String>,
    /// Most jobs the tube holds, in any state; a put beyond it gets REFUSED max-tube-jobs
    /// (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_tube_jobs: Option<String>,
    /// Most body bytes the tube holds, in any state: bytes, or a size with a unit
    /// (`10MiB`); a put that would go over gets REFUSED max-tube-bytes (0: no limit).
    #[arg(long, value_name = "SIZE")]
    pub max_tube_bytes: Option<String>,
}

/// Arguments of `larder tube show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub conn: super::ConnArgs,
    /// The tube.
    pub tube: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses a command-line value for `setting` into its wire unit (one syntax, crate::units):
/// durations need a unit (`500ms`, `30s`, `5m`, `1h`; a bare 0 is zero) and become
/// milliseconds; `max-tube-bytes` is a size (`10MiB`, or bytes); counts and decimals are
/// taken as written.
pub fn setting_value(setting: TubeSetting, text: &str) -> anyhow::Result<u64> {
    let value = match setting.unit() {
        Unit::Millis => {
            let d = crate::units::parse_duration(text)
                .map_err(|e| anyhow::anyhow!("--{setting}: {e}"))?;
            let ms = u64::try_from(d.as_millis()).ok();
            ms.filter(|&ms| setting.parse(ms.to_string().as_bytes()).is_some())
                .with_context(|| format!("--{setting}: {text:?} is too long"))?
        }
        Unit::Count { .. } if setting == TubeSetting::MaxTubeBytes => {
            crate::units::parse_size(text).map_err(|e| anyhow::anyhow!("--{setting}: {e}"))?
        }
        Unit::Count { max } => setting
            .parse(text.as_bytes())
            .with_context(|| format!("--{setting}: {text:?} is not a whole number up to {max}"))?,
        Unit::Thousandths { min, max } => setting.parse(text.as_bytes()).with_context(|| {
            format!(
                "--{setting}: {text:?} is not a decimal from {} to {} with at most three places",
                setting.format(min),
                setting.format(max)
            )
        })?,
    };
    Ok(value)
}

/// A setting's value for people, with its unit: `1s500ms`, `10.0 MiB (10485760 B)`, `3`;
/// and what 0 means where it is special.
pub fn show_setting(setting: TubeSetting, value: u64) -> String {
    let zero = match setting {
        TubeSetting::MaxAttempts => " (unlimited)",
        TubeSetting::RetryDelay => " (no retry delay)",
        TubeSetting::RetryMax => " (no cap)",
        TubeSetting::MaxTubeJobs | TubeSetting::MaxTubeBytes => " (no limit)",
        _ => "",
    };
    let shown = match setting.unit() {
        Unit::Millis => crate::units::show_millis(value),
        Unit::Count { .. } if setting == TubeSetting::MaxTubeBytes && value > 0 => {
            crate::units::show_size(value)
        }
        _ => setting.format(value),
    };
    if value == 0 {
        format!("{shown}{zero}")
    } else {
        shown
    }
}

/// `larder tube config`.
pub async fn config(args: ConfigArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let given = [
        (TubeSetting::MaxAttempts, &args.max_attempts),
        (TubeSetting::RetryDelay, &args.retry_delay),
        (TubeSetting::RetryBackoff, &args.retry_backoff),
        (TubeSetting::RetryMax, &args.retry_max),
        (TubeSetting::RetryJitter, &args.retry_jitter),
        (TubeSetting::MaxTubeJobs, &args.max_tube_jobs),
        (TubeSetting::MaxTubeBytes, &args.max_tube_bytes),
    ];
    let mut changes = Vec::new();
    for (setting, text) in given {
        let Some(text) = text else { continue };
        let value = match text.as_str() {
            "default" => None,
            text => Some(setting_value(setting, text)?),
        };
        changes.push((setting, value));
    }
    if changes.is_empty() {
        bail!("nothing to configure: give at least one setting, e.g. --max-attempts 5");
    }
    let mut client = args.conn.connect().await?;
    for (setting, value) in changes {
        match client.config_tube(&args.tube, setting, value).await {
            Ok(()) => {}
            Err(ClientError::TubeName(t)) => bail!("invalid tube name {t:?}"),
            Err(ClientError::Unexpected(Reply::UnknownSetting)) => {
                bail!("the server does not know the setting {setting}")
            }
            Err(e) => return Err(e.into()),
        }
        let shown = value.map_or("the server's default".to_owned(), |v| {
            show_setting(setting, v)
        });
        writeln!(out, "{}: {setting} = {shown}", args.tube)?;
    }
    Ok(())
}

/// `larder tube show`.
pub async fn show(args: ShowArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let mut client = args.conn.connect().await?;
    let fields = match client.stats(Some(&args.tube)).await {
        Err(ClientError::Unexpected(Reply::NotFound)) => bail!("no tube named {:?}", args.tube),
        Err(ClientError::TubeName(t)) => bail!("invalid tube name {t:?}"),
        other => other?,
    };
    let own: Vec<String> = fields
        .iter()
        .find(|(k, _)| k == "own-settings")
        .map(|(_, v)| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if args.json {
        return super::print_fields(fields, true, out);
    }
    let setting_of = |k: &str| TubeSetting::from_name(k.as_bytes());
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(["field", "value"]);
    for (k, v) in &fields {
        if k != "own-settings" && setting_of(k).is_none() {
            table.add_row([k.as_str(), v.as_str()]);
        }
    }
    writeln!(out, "{table}")?;
    let mut settings = comfy_table::Table::new();
    settings.load_preset(comfy_table::presets::NOTHING);
    settings.set_header(["setting", "in force", "from"]);
    for (k, v) in &fields {
        let Some(setting) = setting_of(k) else {
            continue;
        };
        let value = setting
            .parse(v.as_bytes())
            .map_or(v.clone(), |n| show_setting(setting, n));
        let from = if own.iter().any(|o| o == k) {
            "tube (larder tube config)"
        } else {
            "server default (larder serve flag)"
        };
        settings.add_row([k.as_str(), value.as_str(), from]);
    }
    if !settings.is_empty() {
        writeln!(out, "\n{settings}")?;
    }
    Ok(())
}
