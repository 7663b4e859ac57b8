//! What each `stats` and `stats-tube` field becomes in `/metrics`: its metric name, type,
//! unit, help text and labels. Fields without an entry here are exported by name
//! (`larder_stat_<field>`, `larder_tube_stat_<field>`) so nothing `stats` knows is dropped.

use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Labels of one sample, in order.
pub(super) type Labels = Vec<(&'static str, String)>;

/// What one `stats` field becomes.
pub(super) struct Mapping {
    /// The metric family.
    pub name: String,
    /// Its help text.
    pub help: String,
    /// Its unit, if any (a suffix of the name).
    pub unit: Option<Unit>,
    /// Counter, gauge, ….
    pub kind: MetricType,
    /// The sample's labels.
    pub labels: Labels,
}

pub(super) fn gauge(name: &str, help: &str, unit: Option<Unit>) -> Mapping {
    Mapping {
        name: name.to_owned(),
        help: help.to_owned(),
        unit,
        kind: MetricType::Gauge,
        labels: Vec::new(),
    }
}

pub(super) fn counter(name: &str, help: &str, unit: Option<Unit>) -> Mapping {
    Mapping {
        kind: MetricType::Counter,
        ..gauge(name, help, unit)
    }
}

impl Mapping {
    pub(super) fn label(mut self, key: &'static str, value: &str) -> Mapping {
        self.labels.push((key, value.to_owned()));
        self
    }
}

/// Fields of `stats` that are not exported: beanstalkd's binlog fields (always 0 in larder),
/// one derived from two counters, and the process id.
pub(super) const SKIPPED: &[&str] = &[
    "binlog-oldest-index",
    "binlog-current-index",
    "binlog-records-migrated",
    "binlog-records-written",
    "binlog-max-size",
    "log-records-per-fsync",
    "pid",
];

/// Text fields of `stats` that become labels of `larder_build_info`.
pub(super) const INFO_FIELDS: &[(&str, &str)] = &[
    ("version", "version"),
    ("id", "instance_id"),
    ("hostname", "hostname"),
    ("log-fsync", "fsync"),
];

/// The mapping of a `cluster-*` field of `stats` (without its prefix): this node's view of
/// the cluster (protocol.md §11).
fn cluster_field(field: &str) -> Option<Mapping> {
    let index = |kind: &str| {
        gauge(
            "larder_cluster_log_index",
            "This node's raft log: its last entry, the last applied, the last its newest snapshot covers, the last purged.",
            None,
        )
        .label("kind", kind)
    };
    Some(match field {
        "node" => gauge("larder_cluster_node", "This node's id.", None),
        "term" => gauge("larder_cluster_term", "The current raft term.", None),
        "leader" => gauge(
            "larder_cluster_leader",
            "The leader's id (absent while there is none).",
            None,
        ),
        "last-log-index" => index("last"),
        "applied-index" => index("applied"),
        "snapshot-index" => index("snapshot"),
        "purged-index" => index("purged"),
        other => {
            let rest = other.strip_prefix("node-")?;
            if let Some(id) = rest.strip_suffix("-match-index") {
                gauge(
                    "larder_cluster_member_match_index",
                    "On the leader: the last entry known to be in each member's log.",
                    None,
                )
                .label("node", id)
            } else if let Some(id) = rest.strip_suffix("-lag") {
                gauge(
                    "larder_cluster_member_lag",
                    "On the leader: how many entries each member is behind its log.",
                    None,
                )
                .label("node", id)
            } else {
                return None;
            }
        }
    })
}

/// The mapping of a server-wide `stats` field.
pub(super) fn server_field(field: &str) -> Mapping {
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
    if let Some(cluster) = field.strip_prefix("cluster-") {
        if let Some(m) = cluster_field(cluster) {
            return m;
        }
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
pub(super) fn tube_field(field: &str) -> Mapping {
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
