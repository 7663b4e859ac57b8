//! `LARDER_LOG_FORMAT`: how log lines are written to standard error — `text` (the
//! default, for people) or `json` (one JSON object per line, for log collectors).

/// The format of log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`), `target`.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "LARDER_LOG_FORMAT={other:?}: expected text or json"
            )),
        }
    }
}

/// The format `LARDER_LOG_FORMAT` asks for (text when it is unset).
pub fn log_format() -> Result<LogFormat, String> {
    match std::env::var("LARDER_LOG_FORMAT") {
        Ok(v) => v.parse(),
        Err(std::env::VarError::NotPresent) => Ok(LogFormat::Text),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err("LARDER_LOG_FORMAT is not valid UTF-8: expected text or json".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_parse() {
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert!("yaml".parse::<LogFormat>().is_err());
    }
}
