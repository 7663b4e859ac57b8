//! `/metrics`: the figures of `stats` and of every tube's `stats-tube` (with larder's
//! extended fields), and the server's histograms, as OpenMetrics text through the
//! `prometheus-client` crate.
//!
//! The exporter reads the same YAML the protocol's `stats` commands answer with, so every
//! field they report is exported: the fields below get a proper name, type, unit and
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

/// Labels of one sample, in order.
type Labels = Vec<(&'static str, String)>;

/// One metric family being assembled.
#[derive(Debug)]
struct Family {
    help: String,
    unit: Option<Unit>,
    kind: MetricType,
    samples: BTreeMap<Labels, Value>,
}

/// What one `stats` field becomes.
struct Mapping {
    name: String,
    help: String,
    unit: Option<Unit>,
    kind: MetricType,
    labels: Labels,
}

fn gauge(name: &str, help: &str, unit: Option<Unit>) -> Mapping {
    Mapping {
        name: name.to_owned(),
        help: help.to_owned(),
        unit,
        kind: MetricType::Gauge,
        labels: Vec::new(),
    }
}

fn counter(name: &str, help: &str, unit: Option<Unit>) -> Mapping {
    Mapping {
        kind: MetricType::Counter,
        ..gauge(name, help, unit)
    }
}

impl Mapping {
    fn label(mut self, key: &'static str, value: &str) -> Mapping {
        self.labels.push((key, value.to_owned()));
        self
    }
}

/// Fields of `stats` that are not exported: beanstalkd's binlog fields (always 0 in larder),
/// one derived from two counters, and the process id.
const SKIPPED: &[&str] = &[
    "binlog-oldest-index",
    "binlog-current-index",
    "binlog-records-migrated",
    "binlog-records-written",
    "binlog-max-size",
    "log-records-per-fsync",
    "pid",
];

/// Text fields of `stats` that become labels of `larder_build_info`.
const INFO_FIELDS: &[(&str, &str)] = &[
    ("version", "version"),
    ("id", "instance_id"),
    ("hostname", "hostname"),
    ("log-fsync", "fsync"),
];

/// The mapping of a server-wide `stats` field.
fn server_field(field: &str) -> Mapping {
    if let Some(state) = field.strip_prefix("current-jobs-") {
        if state == "urgent" {
            return gauge(
                "larder_jobs_urgent",
                "Ready jobs with an urgent priority (< 1024).",
                None,
            );
        }
        return gauge("larder_jobs", "Jobs by state.", None).label("state", state);
    }
    if let Some(cmd) = field.strip_prefix("cmd-") {
        return counter("larder_commands", "Commands received, by command.", None)
            .label("command", cmd);
    }
    if let Some(reason) = field.strip_prefix("dead-letters-") {
        return gauge(
            "larder_dead_letters",
            "Buried jobs (dead letters), by why they were buried.",
            None,
        )
        .label("reason", reason);
    }
    if let Some(limit) = field.strip_prefix("refused-") {
        return counter(
            "larder_refusals",
            "Puts and connections refused, by the limit that refused them.",
            None,
        )
        .label("limit", limit);
    }
    if let Some(reason) = field.strip_suffix("-disconnects") {
        return counter(
            "larder_disconnects",
            "Connections closed by the server for a limit, by limit.",
            None,
        )
        .label("reason", reason);
    }
    match field {
        "job-timeouts" => counter(
            "larder_job_timeouts",
            "Reservations that ran past their TTR.",
            None,
        ),
        "total-jobs" => counter(
            "larder_jobs_created",
            "Jobs put since the server started.",
            None,
        ),
        "max-job-size" => gauge(
            "larder_max_job_size",
            "Largest job body accepted.",
            Some(Unit::Bytes),
        ),
        "current-tubes" => gauge("larder_tubes", "Tubes that exist.", None),
        "current-connections" => gauge("larder_connections", "Open client connections.", None),
        "current-producers" => gauge(
            "larder_producers",
            "Open connections that have put a job.",
            None,
        ),
        "current-workers" => gauge(
            "larder_workers",
            "Open connections that have reserved a job.",
            None,
        ),
        "current-waiting" => gauge(
            "larder_waiting_workers",
            "Connections blocked in reserve.",
            None,
        ),
        "total-connections" => counter(
            "larder_connections_opened",
            "Connections opened since the server started.",
            None,
        ),
        "rusage-utime" => counter(
            "larder_cpu_user",
            "User CPU time used by the process.",
            Some(Unit::Seconds),
        ),
        "rusage-stime" => counter(
            "larder_cpu_system",
            "System CPU time used by the process.",
            Some(Unit::Seconds),
        ),
        "uptime" => gauge(
            "larder_uptime",
            "Time since the server started.",
            Some(Unit::Seconds),
        ),
        "draining" => gauge(
            "larder_draining",
            "1 while the server is in drain mode (puts refused).",
            None,
        ),
        "log-segments" => gauge(
            "larder_log_segments",
            "Segment files in the write-ahead log.",
            None,
        ),
        "log-oldest-segment" => gauge(
            "larder_log_oldest_segment",
            "Number of the oldest log segment.",
            None,
        ),
        "log-current-segment" => gauge(
            "larder_log_current_segment",
            "Number of the log segment being written.",
            None,
        ),
        "log-records-written" => counter(
            "larder_log_records_written",
            "Records written to the log since start.",
            None,
        ),
        "log-fsyncs" => counter(
            "larder_log_fsyncs",
            "fdatasync calls on the log since start.",
            None,
        ),
        "log-bytes" => gauge(
            "larder_log",
            "Bytes in the log's segment files.",
            Some(Unit::Bytes),
        ),
        "log-live-bytes" => gauge(
            "larder_log_live",
            "Bytes of live jobs' records in the log.",
            Some(Unit::Bytes),
        ),
        "log-segments-removed" => counter(
            "larder_log_segments_removed",
            "Log segments removed since start.",
            None,
        ),
        "log-jobs-compacted" => counter(
            "larder_log_jobs_compacted",
            "Jobs copied forward by compaction since start.",
            None,
        ),
        "current-jobs" => gauge("larder_jobs_held", "Jobs held, in every state.", None),
        "current-bytes" => gauge(
            "larder_job_body",
            "Body bytes held, over jobs in every state.",
            Some(Unit::Bytes),
        ),
        "current-free-disk" => gauge(
            "larder_free_disk",
            "Free bytes on the data directory's filesystem.",
            Some(Unit::Bytes),
        ),
        "total-attempts" => counter(
            "larder_attempts",
            "Reservations counted as attempts since start.",
            None,
        ),
        "total-retries-delayed" => counter(
            "larder_retries_delayed",
            "Jobs delayed by a retry backoff since start.",
            None,
        ),
        "total-dead-lettered" => counter(
            "larder_dead_lettered",
            "Jobs buried automatically (attempts exhausted) since start.",
            None,
        ),
        "max-jobs"
        | "max-bytes"
        | "max-tube-jobs"
        | "max-tube-bytes"
        | "max-connections"
        | "max-output-per-connection"
        | "output-stall-timeout"
        | "min-free-disk" => gauge(
            "larder_limit",
            "Configured limits (protocol.md §9.2); 0 means none.",
            None,
        )
        .label("limit", field),
        other => gauge(
            &format!("larder_stat_{}", other.replace('-', "_")),
            &format!("The stats field {other}."),
            None,
        ),
    }
}

/// The mapping of a `stats-tube` field (the `tube` label is added by the caller).
fn tube_field(field: &str) -> Mapping {
    if let Some(state) = field.strip_prefix("current-jobs-") {
        if state == "urgent" {
            return gauge(
                "larder_tube_jobs_urgent",
                "Ready jobs with an urgent priority, by tube.",
                None,
            );
        }
        return gauge("larder_tube_jobs", "Jobs by tube and state.", None).label("state", state);
    }
    if let Some(reason) = field.strip_prefix("dead-letters-") {
        return gauge(
            "larder_tube_dead_letters",
            "Buried jobs (dead letters), by tube and reason.",
            None,
        )
        .label("reason", reason);
    }
    if let Some(limit) = field.strip_prefix("refused-") {
        return counter(
            "larder_tube_refusals",
            "Puts refused by a tube's own limits, by tube and limit.",
            None,
        )
        .label("limit", limit);
    }
    if crate::protocol::TubeSetting::ALL
        .iter()
        .any(|s| s.name() == field)
    {
        return gauge(
            "larder_tube_setting",
            "Tube settings in force, as stats-tube shows them (delays in milliseconds).",
            None,
        )
        .label("setting", field);
    }
    match field {
        "total-jobs" => counter(
            "larder_tube_jobs_created",
            "Jobs put into the tube while it lived.",
            None,
        ),
        "current-using" => gauge("larder_tube_using", "Connections using the tube.", None),
        "current-watching" => gauge(
            "larder_tube_watching",
            "Connections watching the tube.",
            None,
        ),
        "current-waiting" => gauge(
            "larder_tube_waiting",
            "Connections blocked in reserve watching the tube.",
            None,
        ),
        "cmd-delete" => counter("larder_tube_deletes", "Jobs of the tube deleted.", None),
        "cmd-pause-tube" => counter(
            "larder_tube_pauses",
            "pause-tube commands on the tube.",
            None,
        ),
        "pause" => gauge(
            "larder_tube_pause",
            "Length of the pause in force (0: not paused).",
            Some(Unit::Seconds),
        ),
        "pause-time-left" => gauge(
            "larder_tube_pause_left",
            "Time left in the pause in force.",
            Some(Unit::Seconds),
        ),
        "current-bytes" => gauge(
            "larder_tube_body",
            "Body bytes of the tube's jobs.",
            Some(Unit::Bytes),
        ),
        other => gauge(
            &format!("larder_tube_stat_{}", other.replace('-', "_")),
            &format!("The stats-tube field {other}."),
            None,
        ),
    }
}

/// `key: value` lines of a stats YAML document.
fn fields(yaml: &str) -> impl Iterator<Item = (&str, &str)> {
    yaml.lines()
        .filter_map(|line| line.split_once(": "))
        .map(|(k, v)| (k.trim(), v.trim()))
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
