//! Reading the YAML bodies of `stats*`, `list-*` and `list-dead` replies: the flat
//! mappings and lists beanstalkd writes, and larder's quoted scalars.

use super::{ClientError, DeadLetter};
use crate::protocol::JobId;

/// Parses a `list-dead` reply.
pub fn parse_dead_letters(yaml: &[u8]) -> Result<Vec<DeadLetter>, ClientError> {
    let bad = |what: &str| {
        ClientError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("malformed list-dead reply: {what}"),
        ))
    };
    let mut out = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let text = String::from_utf8_lossy(yaml);
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Err(bad("no document start"));
    }
    let mut finish = |fields: &mut Vec<(String, String)>| -> Result<(), ClientError> {
        if fields.is_empty() {
            return Ok(());
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| bad(&format!("no {k}")))
        };
        let num = |k: &str| -> Result<u64, ClientError> {
            get(k)?
                .parse()
                .map_err(|_| bad(&format!("{k} is not a number")))
        };
        let letter = DeadLetter {
            id: JobId(num("id")?),
            tube: get("tube")?,
            reason: get("reason")?,
            attempts: u32::try_from(num("attempts")?).map_err(|_| bad("attempts"))?,
            pri: u32::try_from(num("pri")?).map_err(|_| bad("pri"))?,
            buried_at_ms: num("buried-at")?,
            last_error: get("last-error")?,
        };
        out.push(letter);
        fields.clear();
        Ok(())
    };
    for line in lines {
        let entry = match line.strip_prefix("- ") {
            Some(first) => {
                finish(&mut fields)?;
                first
            }
            None => line.strip_prefix("  ").ok_or_else(|| bad(line))?,
        };
        let (k, v) = entry.split_once(": ").ok_or_else(|| bad(line))?;
        fields.push((k.to_owned(), yaml_scalar(v)));
    }
    finish(&mut fields)?;
    Ok(out)
}

/// Parses the flat YAML mappings beanstalkd sends (`key: value` lines after `---`), with
/// double-quoted values unquoted and unescaped.
pub fn parse_yaml_map(yaml: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(yaml)
        .lines()
        .filter_map(|line| {
            let (k, v) = line.split_once(": ")?;
            Some((k.to_owned(), yaml_scalar(v)))
        })
        .collect()
}

/// A scalar as written by beanstalkd or larder: bare, or double-quoted with the escapes
/// larder writes (`\"`, `\\`, `\xXX`, `\uXXXX`, `\UXXXXXXXX`).
pub fn yaml_scalar(v: &str) -> String {
    let Some(inner) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return v.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let digits = match chars.next() {
            Some('x') => 2,
            Some('u') => 4,
            Some('U') => 8,
            Some('n') => {
                out.push('\n');
                continue;
            }
            Some('t') => {
                out.push('\t');
                continue;
            }
            Some(other) => {
                out.push(other);
                continue;
            }
            None => break,
        };
        let hex: String = chars.by_ref().take(digits).collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(c) => out.push(c),
            None => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
    out
}

/// Parses the YAML lists beanstalkd sends (`- item` lines after `---`).
pub fn parse_yaml_list(yaml: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(yaml)
        .lines()
        .filter_map(|line| line.strip_prefix("- ").map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn quoted_scalars_unquote_to_the_original_text(s in any::<String>()) {
            prop_assert_eq!(yaml_scalar(&crate::engine::yaml_quoted(&s)), s);
        }
    }

    #[test]
    fn list_dead_replies_parse_into_dead_letters() {
        let yaml = b"---\n- id: 5\n  tube: mail\n  reason: max-attempts\n  attempts: 3\n  \
                     pri: 7\n  buried-at: 123\n  last-error: \"a: \\\"b\\\"\"\n- id: 9\n  \
                     tube: t\n  reason: buried\n  attempts: 0\n  pri: 1\n  buried-at: 0\n  \
                     last-error: \"\"\n";
        let got = parse_dead_letters(yaml).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, JobId(5));
        assert_eq!(got[0].last_error, "a: \"b\"");
        assert_eq!(got[1].reason, "buried");
        assert!(parse_dead_letters(b"---\n").expect("empty").is_empty());
        assert!(parse_dead_letters(b"---\n- id: x\n").is_err());
    }
}
