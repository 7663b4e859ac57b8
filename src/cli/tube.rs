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
    /// Attempts before a job is buried automatically (0: unlimited).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<String>,
    /// Delay before the first retry after a timeout, disconnect or failure (`500ms`, `30s`,
    /// `5m`, `1h`; 0 turns the retry policy off).
    #[arg(long, value_name = "D")]
    pub retry_delay: Option<String>,
    /// Factor the retry delay grows by with each attempt (1 to 1000, e.g. `2` or `1.5`).
    #[arg(long, value_name = "X")]
    pub retry_backoff: Option<String>,
    /// Longest retry delay (a duration; 0: no cap).
    #[arg(long, value_name = "D")]
    pub retry_max: Option<String>,
    /// Fraction of each retry delay taken off at random (0 to 1).
    #[arg(long, value_name = "F")]
    pub retry_jitter: Option<String>,
    /// Most jobs the tube holds, in any state; a put beyond it gets REFUSED max-tube-jobs
    /// (0: no limit).
    #[arg(long, value_name = "N")]
    pub max_tube_jobs: Option<String>,
    /// Most body bytes the tube holds, in any state; a put that would go over gets
    /// REFUSED max-tube-bytes (0: no limit).
    #[arg(long, value_name = "BYTES")]
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

/// Parses a command-line value for `setting` into its wire unit: durations (`500ms`, `30s`,
/// `5m`, `1h`, or a bare 0) become milliseconds; counts and decimals are taken as written.
pub fn setting_value(setting: TubeSetting, text: &str) -> anyhow::Result<u64> {
    let value = match setting.unit() {
        Unit::Millis => {
            let text = text.trim();
            let d = if text == "0" {
                std::time::Duration::ZERO
            } else {
                humantime::parse_duration(text).map_err(|e| {
                    anyhow::anyhow!(
                        "--{setting}: {text:?} is not a duration like 500ms, 30s, 5m or 1h ({e})"
                    )
                })?
            };
            let ms = u64::try_from(d.as_millis()).ok();
            ms.filter(|&ms| setting.parse(ms.to_string().as_bytes()).is_some())
                .with_context(|| format!("--{setting}: {text:?} is too long"))?
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
        let shown = value.map_or("default".to_owned(), |v| setting.format(v));
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
    super::print_fields(fields, args.json, out)
}
