//! `/metrics`: the figures of `stats` and of every tube's `stats-tube` (with larder's
//! extended fields), and the server's histograms, as OpenMetrics text through the
//! `prometheus-client` crate.
//!
//! The exporter reads the same YAML the protocol's `stats` commands answer with, so every
//! field they report is exported: the fields `names` knows get a proper name, type, unit and
//! labels; any other numeric field (one added later) is exported as a gauge named after it
//! (`larder_stat_<field>`, `larder_tube_stat_<field>`). Text fields go into
//! `larder_build_info`. Tube settings are `larder_tube_setting{setting=…}`.
//!
//! Per-tube series are bounded: the first `--metrics-max-tubes` tubes in name order get
//! their own `tube` label; the rest (and a tube actually named `_other`) are summed into
//! `tube="_other"`. Counts, counters and dead letters add up; for pauses the sum is the
//! number of seconds over all those tubes, so `larder_tube_paused` counts paused tubes.
//! Settings are not summed: `_other` has no `larder_tube_setting` series.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::names::{gauge, server_field, tube_field, Labels, Mapping, INFO_FIELDS, SKIPPED};
use super::timings::{HistogramSnapshot, Timings};

/// The label value for tubes past the per-tube cap.
pub const OTHER_TUBES: &str = "_other";

/// A number from the stats YAML.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    fn parse(text: &str) -> Option<Value> {
        let text = text.trim().trim_matches('"');
        match text {
            "true" => return Some(Value::Int(1)),
            "false" => return Some(Value::Int(0)),
            _ => {}
        }
        if let Ok(n) = text.parse::<u64>() {
            return Some(Value::Int(n));
        }
        text.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Value::Float)
    }

    fn add(self, other: Value) -> Value {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(b)),
            (a, b) => Value::Float(a.as_f64() + b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Value::Int(n) => n as f64,
            Value::Float(f) => f,
        }
    }
}

/// `key: value` lines of a stats YAML document.
fn fields(yaml: &str) -> impl Iterator<Item = (&str, &str)> {
    yaml.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.trim(), v.trim()))
}

/// One metric family being assembled.
#[derive(Debug)]
struct Family {
    help: String,
    unit: Option<Unit>,
    kind: MetricType,
    samples: BTreeMap<Labels, Value>,
}

/// One scrape's worth of figures, ready to encode.
#[derive(Debug, Default)]
pub struct Exposition {
    order: Vec<String>,
    families: BTreeMap<String, Family>,
    info: Vec<(String, String)>,
    histograms: Vec<(&'static str, &'static str, Option<Unit>, HistogramSnapshot)>,
}

impl Exposition {
    fn add(&mut self, m: Mapping, value: Value) {
        if !self.families.contains_key(&m.name) {
            self.order.push(m.name.clone());
        }
        let family = self.families.entry(m.name).or_insert_with(|| Family {
            help: m.help,
            unit: m.unit,
            kind: m.kind,
            samples: BTreeMap::new(),
        });
        let slot = family.samples.entry(m.labels).or_insert(Value::Int(0));
        *slot = slot.add(value);
    }

    /// Adds the server-wide `stats` document.
    pub fn add_server_stats(&mut self, yaml: &str) {
        for (field, text) in fields(yaml) {
            if let Some(&(_, label)) = INFO_FIELDS.iter().find(|(f, _)| *f == field) {
                self.info
                    .push((label.to_owned(), text.trim_matches('"').to_owned()));
                continue;
            }
            if SKIPPED.contains(&field) {
                continue;
            }
            if let Some(value) = Value::parse(text) {
                self.add(server_field(field), value);
            }
        }
    }

    /// Adds one tube's `stats-tube` document, under the label `tube`.
    pub fn add_tube_stats(&mut self, tube: &str, yaml: &str) {
        for (field, text) in fields(yaml) {
            if field == "name" {
                continue;
            }
            if let Some(value) = Value::parse(text) {
                let mapping = tube_field(field);
                // A sum of settings over tubes means nothing.
                if tube == OTHER_TUBES && mapping.name == "larder_tube_setting" {
                    continue;
                }
                self.add(mapping.label("tube", tube), value);
                if field == "pause" {
                    let paused = Value::Int(u64::from(value.as_f64() > 0.0));
                    let m = gauge(
                        "larder_tube_paused",
                        "Paused tubes (1 for a named tube that is paused).",
                        None,
                    );
                    self.add(m.label("tube", tube), paused);
                }
            }
        }
    }

    /// Adds the server's histograms.
    pub fn add_timings(&mut self, t: &Timings) {
        self.histograms.extend([
            (
                "larder_fsync",
                "Time one fdatasync of the log took.",
                Some(Unit::Seconds),
                t.fsync.snapshot(),
            ),
            (
                "larder_records_per_fsync",
                "Log records made durable by one fdatasync (group commit batch).",
                None,
                t.records_per_fsync.snapshot(),
            ),
            (
                "larder_put_confirm",
                "Time from a put being read to its INSERTED reply being sent (after fsync).",
                Some(Unit::Seconds),
                t.put_confirm.snapshot(),
            ),
            (
                "larder_reserve_wait",
                "Time a reserve that returned a job waited for it.",
                Some(Unit::Seconds),
                t.reserve_wait.snapshot(),
            ),
        ]);
    }

    /// The OpenMetrics text, ending with `# EOF`.
    pub fn encode(self) -> Result<String, std::fmt::Error> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if !self.info.is_empty() {
            let info = prometheus_client::metrics::info::Info::new(self.info.clone());
            let metric = encoder.encode_descriptor(
                "larder_build",
                "The server's version, instance id, host name and fsync policy.",
                None,
                info.metric_type(),
            )?;
            info.encode(metric)?;
        }
        for name in &self.order {
            let Some(family) = self.families.get(name) else {
                continue;
            };
            let mut metric =
                encoder.encode_descriptor(name, &family.help, family.unit.as_ref(), family.kind)?;
            for (labels, value) in &family.samples {
                let mut sample = metric.encode_family(labels)?;
                match (family.kind, value) {
                    (MetricType::Counter, Value::Int(n)) => {
                        sample.encode_counter::<NoLabelSet, _, u64>(n, None)?
                    }
                    (MetricType::Counter, Value::Float(f)) => {
                        sample.encode_counter::<NoLabelSet, _, f64>(f, None)?
                    }
                    (_, Value::Int(n)) => sample.encode_gauge(n)?,
                    (_, Value::Float(f)) => sample.encode_gauge(f)?,
                }
            }
        }
        for (name, help, unit, snapshot) in &self.histograms {
            let mut metric =
                encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Histogram)?;
            metric.encode_histogram::<NoLabelSet>(
                snapshot.sum,
                snapshot.count,
                &snapshot.buckets,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_fields_become_typed_labelled_metrics() {
        let mut e = Exposition::default();
        e.add_server_stats(
            "---\ncurrent-jobs-ready: 3\ncmd-put: 7\nversion: \"0.1.0\"\nrusage-utime: 0.250000\n\
             dead-letters-attempts: 2\nbinlog-max-size: 0\nsomething-new: 5\ncurrent-free-disk: unknown\n",
        );
        e.add_tube_stats(
            "mail",
            "---\nname: mail\ncurrent-jobs-ready: 3\npause: 10\nretry-backoff: 1.5\n",
        );
        e.add_tube_stats(
            OTHER_TUBES,
            "---\nname: a\ncurrent-jobs-ready: 1\npause: 0\nretry-backoff: 2\n",
        );
        e.add_tube_stats(
            OTHER_TUBES,
            "---\nname: b\ncurrent-jobs-ready: 2\npause: 5\n",
        );
        e.add_timings(&Timings::new());
        let text = e.encode().expect("encode");
        for line in [
            "# TYPE larder_jobs gauge",
            "larder_jobs{state=\"ready\"} 3",
            "# TYPE larder_commands counter",
            "larder_commands_total{command=\"put\"} 7",
            "larder_cpu_user_seconds_total 0.25",
            "larder_dead_letters{reason=\"attempts\"} 2",
            "larder_stat_something_new 5",
            "larder_tube_jobs{state=\"ready\",tube=\"mail\"} 3",
            "larder_tube_jobs{state=\"ready\",tube=\"_other\"} 3",
            "larder_tube_paused{tube=\"_other\"} 1",
            "larder_tube_pause_seconds{tube=\"mail\"} 10",
            "larder_tube_setting{setting=\"retry-backoff\",tube=\"mail\"} 1.5",
            "# TYPE larder_fsync_seconds histogram",
            "larder_fsync_seconds_bucket{le=\"+Inf\"} 0",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(text.contains("version=\"0.1.0\""), "{text}");
        assert!(!text.contains("binlog"), "{text}");
        assert!(
            !text.contains("larder_tube_setting{setting=\"retry-backoff\",tube=\"_other\"}"),
            "{text}"
        );
        assert!(
            !text.contains("free_disk"),
            "unknown is not a number: {text}"
        );
    }
}
