//! The operator's side of a running server, against the real binary: `/metrics` checked
//! by the reference OpenMetrics parser, the per-tube cap, `/healthz` and `/readyz`, JSON
//! logs, systemd readiness notices, and the unit file in `contrib/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{free_port, larder_bin, ChildServer, Raw, SmallDisk, REPLY_TIMEOUT};

/// An HTTP response: status code and body.
pub struct Http {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `METHOD path` over a fresh connection to `addr` (the server closes it after replying).
pub fn http(addr: &str, method: &str, path: &str) -> Http {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send request");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| l.strip_prefix("content-type: "))
        .unwrap_or_default()
        .to_owned();
    Http {
        status,
        content_type,
        body: body.to_owned(),
    }
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in\n{text}"))
}

/// Runs the reference OpenMetrics parser over `text`; returns its list of families.
pub fn parse_openmetrics(text: &str) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/metrics/parse_openmetrics.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "the OpenMetrics parser rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metrics_server(extra: &[&str]) -> (ChildServer, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--metrics-listen", metrics.as_str()];
    args.extend_from_slice(extra);
    (ChildServer::larder(&args), metrics)
}

#[tokio::test]
async fn a_scrape_counts_what_happened_and_passes_the_openmetrics_parser() {
    let (server, metrics) = metrics_server(&[]);
    let mut producer = Raw::connect(server.addr).await;
    assert_eq!(producer.cmd("use mail\r\n").await, "USING mail\r\n");
    for _ in 0..3 {
        assert!(producer
            .cmd("put 0 0 60 1\r\nx\r\n")
            .await
            .starts_with("INSERTED"));
    }
    let mut worker = Raw::connect(server.addr).await;
    assert_eq!(worker.cmd("watch mail\r\n").await, "WATCHING 2\r\n");
    assert!(worker.cmd("reserve\r\n").await.starts_with("RESERVED"));
    // A reserve that may block until the put below arrives; it is one more wait either way.
    let mut waiter = Raw::connect(server.addr).await;
    assert_eq!(waiter.cmd("watch idle\r\n").await, "WATCHING 2\r\n");
    assert_eq!(waiter.cmd("ignore default\r\n").await, "WATCHING 1\r\n");
    waiter.send(b"reserve\r\n").await;
    assert_eq!(producer.cmd("use idle\r\n").await, "USING idle\r\n");
    assert!(producer
        .cmd("put 0 0 60 1\r\ny\r\n")
        .await
        .starts_with("INSERTED"));
    assert!(waiter.reply().await.starts_with("RESERVED"));

    let scrape = http(&metrics, "GET", "/metrics");
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    assert!(
        scrape
            .content_type
            .starts_with("application/openmetrics-text"),
        "{}",
        scrape.content_type
    );
    let text = &scrape.body;
    assert_eq!(
        sample(text, "larder_tube_jobs{state=\"ready\",tube=\"mail\"}"),
        2.0
    );
    assert_eq!(
        sample(text, "larder_tube_jobs{state=\"reserved\",tube=\"mail\"}"),
        1.0
    );
    assert_eq!(sample(text, "larder_jobs{state=\"reserved\"}"), 2.0);
    assert_eq!(sample(text, "larder_commands_total{command=\"put\"}"), 4.0);
    assert_eq!(sample(text, "larder_put_confirm_seconds_count"), 4.0);
    assert_eq!(sample(text, "larder_reserve_wait_seconds_count"), 2.0);
    assert!(sample(text, "larder_fsync_seconds_count") >= 1.0, "{text}");
    assert!(
        sample(text, "larder_records_per_fsync_sum") >= 4.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "larder_put_confirm_seconds_bucket{le=\"+Inf\"}"),
        4.0
    );

    let families = parse_openmetrics(text);
    for family in [
        "larder_build info",
        "larder_jobs gauge",
        "larder_commands counter",
        "larder_fsync_seconds histogram",
        "larder_records_per_fsync histogram",
        "larder_put_confirm_seconds histogram",
        "larder_reserve_wait_seconds histogram",
        "larder_tube_jobs gauge",
        "larder_log_bytes gauge",
    ] {
        assert!(
            families.lines().any(|l| l.starts_with(family)),
            "the parser found no {family}: {families}"
        );
    }
}

#[test]
fn the_dashboard_uses_only_metrics_the_server_exposes() {
    let (_server, metrics) = metrics_server(&[]);
    let text = http(&metrics, "GET", "/metrics").body;
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/contrib/grafana-dashboard.json"
        ))
        .expect("contrib/grafana-dashboard.json"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_owned());
        }
    }
    assert!(exprs.len() > 20, "{exprs:?}");
    let mut names = 0;
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("larder_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                text.lines().any(|l| l.starts_with(&name)),
                "the dashboard uses {name}, which /metrics does not have"
            );
            names += 1;
            rest = &rest[at + name.len()..];
        }
    }
    assert!(names >= exprs.len(), "every query names a larder metric");
}

#[tokio::test]
async fn tubes_past_the_cap_are_summed_under_other() {
    let (server, metrics) = metrics_server(&["--metrics-max-tubes", "1"]);
    let mut c = Raw::connect(server.addr).await;
    for tube in ["a", "b", "c"] {
        assert_eq!(
            c.cmd(&format!("use {tube}\r\n")).await,
            format!("USING {tube}\r\n")
        );
        assert!(c.cmd("put 0 0 60 1\r\nx\r\n").await.starts_with("INSERTED"));
    }
    assert!(c.cmd("pause-tube c 100\r\n").await.starts_with("PAUSED"));
    let text = http(&metrics, "GET", "/metrics").body;
    // "a" comes first in name order; b, c and default share one series.
    assert_eq!(
        sample(&text, "larder_tube_jobs{state=\"ready\",tube=\"a\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "larder_tube_jobs{state=\"ready\",tube=\"_other\"}"),
        2.0
    );
    assert_eq!(sample(&text, "larder_tube_paused{tube=\"_other\"}"), 1.0);
    assert_eq!(sample(&text, "larder_tube_paused{tube=\"a\"}"), 0.0);
    assert!(!text.contains("tube=\"b\""), "{text}");
    assert!(!text.contains("tube=\"default\""), "{text}");
    parse_openmetrics(&text);
}

#[test]
fn health_answers_and_readiness_names_why_not() {
    let (server, metrics) = metrics_server(&[]);
    let health = http(&metrics, "GET", "/healthz");
    assert_eq!(
        (health.status, health.content_type.as_str()),
        (200, "application/json")
    );
    let ready = http(&metrics, "GET", "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body.trim(), r#"{"ready":true,"reasons":[]}"#);
    assert_eq!(http(&metrics, "GET", "/nothing").status, 404);
    assert_eq!(http(&metrics, "POST", "/metrics").status, 405);

    // Drain mode (SIGUSR1) takes it out of service; the signal is handled asynchronously.
    server.signal(libc::SIGUSR1);
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let drained = loop {
        let r = http(&metrics, "GET", "/readyz");
        if r.status != 200 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(drained.status, 503, "{}", drained.body);
    assert_eq!(
        drained.body.trim(),
        r#"{"ready":false,"reasons":["draining"]}"#
    );
}

#[test]
fn readiness_fails_below_the_disk_floor() {
    // No disk has this much free space: puts are refused from the start.
    let (_server, metrics) = metrics_server(&["--min-free-disk", "9000000000000000000"]);
    let ready = http(&metrics, "GET", "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let json: serde_json::Value = serde_json::from_str(&ready.body).expect("JSON");
    assert_eq!(json["ready"], false);
    assert_eq!(json["reasons"], serde_json::json!(["min-free-disk"]));
}

/// A full disk (the log's reserve spent) takes the server out of service until space returns.
#[tokio::test]
async fn readiness_fails_while_the_log_is_full() {
    let disk = SmallDisk::mount("readyfull");
    let metrics = format!("127.0.0.1:{}", free_port());
    let args = [
        "--min-free-disk",
        "0",
        "--disk-reserve",
        "262144",
        "--wal-segment-size",
        "131072",
        "--metrics-listen",
        &metrics,
    ];
    let server = ChildServer::larder_in(&disk.0.join("data"), &args);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(http(&metrics, "GET", "/readyz").status, 200);
    let body = "f".repeat(60_000);
    let mut refused = false;
    for _ in 0..40 {
        let reply = c
            .cmd(&format!("put 0 0 60 {}\r\n{body}\r\n", body.len()))
            .await;
        if reply == "REFUSED log-full\r\n" {
            refused = true;
            break;
        }
        assert!(reply.starts_with("INSERTED"), "{reply:?}");
    }
    assert!(refused, "the disk never filled");
    let ready = http(&metrics, "GET", "/readyz");
    assert_eq!(ready.status, 503, "{}", ready.body);
    let json: serde_json::Value = serde_json::from_str(&ready.body).expect("JSON");
    assert_eq!(json["reasons"], serde_json::json!(["log-full"]));
    drop(server);
}

#[test]
fn a_metrics_address_in_use_stops_the_server_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let dir = std::env::temp_dir().join(format!("larder-metrics-taken-{}", std::process::id()));
    let out = Command::new(larder_bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &addr,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run larder");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--metrics-listen"), "{stderr}");
}

#[test]
fn json_log_lines_are_json_objects() {
    let server = ChildServer::larder_env(&[], &[("LARDER_LOG_FORMAT", "json")]);
    let log = server.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "larder started: listening" && l["level"] == "INFO"),
        "{log}"
    );
    let out = Command::new(larder_bin())
        .args(["wal", "verify", "--data-dir", "/nonexistent"])
        .env("LARDER_LOG_FORMAT", "yaml")
        .output()
        .expect("run larder");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected text or json"));
}

#[test]
fn systemd_hears_ready_once_serving_and_stopping_at_shutdown() {
    let path = std::env::temp_dir().join(format!("larder-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(REPLY_TIMEOUT))
        .expect("timeout");
    let notify = path.display().to_string();
    let server = ChildServer::larder_env(&[], &[("NOTIFY_SOCKET", notify.as_str())]);
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).expect("READY=1 within the timeout");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(TcpStream::connect(server.addr).is_ok());
    assert!(server.terminate().success());
    let n = socket
        .recv(&mut buf)
        .expect("STOPPING=1 within the timeout");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    let _ = std::fs::remove_file(&path);
}

/// The unit file's `KEY=value` settings.
fn unit_settings() -> Vec<(String, String)> {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/larder.service"
    ))
    .expect("contrib/larder.service");
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn the_systemd_unit_starts_larder_with_flags_it_accepts_and_enough_descriptors() {
    use clap::Parser;
    let settings = unit_settings();
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the unit sets no {key}"))
    };
    assert_eq!(get("Type"), "notify");
    let exec = get("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(
        words[0].ends_with("/larder") && words[1] == "serve",
        "{exec}"
    );
    let cli = larder::cli::Cli::try_parse_from(words.iter().copied())
        .unwrap_or_else(|e| panic!("ExecStart does not parse: {e}"));
    let larder::cli::Cmd::Serve(args) = cli.command else {
        panic!("ExecStart is not larder serve")
    };
    let config = args.config().expect("ExecStart's flags are valid");
    let metrics = config.metrics.expect("the unit serves metrics");
    let needed = config.limits.max_connections + 64 + metrics.max_connections + 1;
    let nofile: u64 = get("LimitNOFILE").parse().expect("a number");
    assert!(nofile >= needed, "LimitNOFILE={nofile} < {needed}");
    for hardening in [
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
    ] {
        assert!(!get(hardening).is_empty(), "{hardening}");
    }

    // systemd's own check, where systemd is installed (CI requires it).
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(std::env::var_os("CI").is_none(), "CI needs systemd-analyze");
        return;
    };
    assert!(version.status.success());
    let dir = std::env::temp_dir().join(format!("larder-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/larder.service"
    ))
    .expect("unit")
    .replace(words[0], larder_bin());
    let copy = dir.join("larder.service");
    std::fs::write(&copy, unit).expect("write unit");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze verify");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
