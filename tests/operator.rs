//! The `larder` CLI as an operator uses it in an incident: looking changes nothing, counts
//! say when a list is cut, errors name the real problem, dlq verbs are symmetric, JSON has
//! one schema, and export/import put jobs back. Each test runs the real binary against a
//! real server (larder, or beanstalkd where the point is what larder's CLI says to it).

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{larder_bin, ChildServer, Raw};

fn larder(args: &[&str]) -> std::process::Output {
    Command::new(larder_bin())
        .args(args)
        .output()
        .expect("run larder")
}

fn larder_ok(args: &[&str]) -> String {
    let out = larder(args);
    assert!(out.status.success(), "larder {args:?} failed: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Runs larder expecting exit status 1; returns standard error.
fn larder_fails(args: &[&str]) -> String {
    let out = larder(args);
    assert_eq!(out.status.code(), Some(1), "larder {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value of `key` in a YAML reply.
fn field(reply: &str, key: &str) -> String {
    let yaml = reply.split_once("\r\n").map(|(_, y)| y).unwrap_or_default();
    larder::client::parse_yaml_map(yaml.as_bytes())
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no field {key} in {reply:?}"))
}

/// Checks the documented job schema (README, "JSON output"): kebab-case keys, and each
/// field's type.
fn assert_job_schema(v: &Value) {
    let m = assert_kebab_keys(v);
    for key in ["id", "pri", "attempts", "buried-at"] {
        assert!(m[key].is_u64(), "{key} is not an unsigned number: {v}");
    }
    for key in ["tube", "state", "bury-reason", "last-error"] {
        assert!(m[key].is_string(), "{key} is not a string: {v}");
    }
    assert!(
        ["ready", "reserved", "delayed", "buried"].contains(&m["state"].as_str().unwrap_or("")),
        "{v}"
    );
    assert!(
        m["buried-at-time"].is_string() || m["buried-at-time"].is_null(),
        "{v}"
    );
    if let Some(body) = m.get("body") {
        assert!(body.is_string(), "{v}");
        assert!(["utf-8", "base64"].contains(&m["body-encoding"].as_str().unwrap_or("")));
    }
}

/// Checks that `v` is an object whose keys are all kebab-case (the schema's first rule).
fn assert_kebab_keys(v: &Value) -> &serde_json::Map<String, Value> {
    let m = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"));
    for key in m.keys() {
        assert!(
            key.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "key {key:?} is not kebab-case"
        );
    }
    m
}

/// Puts `bodies` into `tube` and buries each; returns their ids.
async fn bury_jobs(c: &mut Raw, tube: &str, bodies: &[&str]) -> Vec<u64> {
    assert_eq!(
        c.cmd(&format!("use {tube}\r\n")).await,
        format!("USING {tube}\r\n")
    );
    let mut ids = Vec::new();
    for body in bodies {
        let reply = c
            .cmd(&format!("put 7 0 90 {}\r\n{body}\r\n", body.len()))
            .await;
        let id: u64 = reply
            .trim()
            .strip_prefix("INSERTED ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{reply}"));
        assert!(c
            .cmd(&format!("reserve-job {id}\r\n"))
            .await
            .starts_with("RESERVED"));
        assert_eq!(c.cmd(&format!("bury {id} 7\r\n")).await, "BURIED\r\n");
        ids.push(id);
    }
    ids
}

#[tokio::test]
async fn peek_looks_at_a_job_without_changing_it_and_reserve_keep_is_refused() {
    let server = ChildServer::larder(&["--max-attempts", "2"]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect_extended(server.addr).await;
    assert_eq!(c.cmd("use mail\r\n").await, "USING mail\r\n");
    assert_eq!(c.cmd("put 5 0 90 5\r\nhello\r\n").await, "INSERTED 1\r\n");

    // Three looks (the number that dead-lettered a job through reserve --keep).
    for _ in 0..3 {
        let text = larder_ok(&["peek", "1", "--addr", &addr]);
        assert!(text.contains("state         ready"), "{text}");
        assert!(text.contains("ttr           90s"), "{text}");
        assert!(text.ends_with("body (5 bytes):\nhello\n"), "{text}");
    }
    let json: Value =
        serde_json::from_str(&larder_ok(&["peek", "1", "--addr", &addr, "--json"])).expect("json");
    assert_job_schema(&json);
    assert_eq!(json["body"], "hello");
    assert_eq!(json["ttr"], 90);
    let next: Value = serde_json::from_str(&larder_ok(&[
        "peek", "--ready", "--tube", "mail", "--addr", &addr, "--json",
    ]))
    .expect("json");
    assert_eq!(next["id"], 1);

    let err = larder_fails(&["reserve", "--keep", "--tube", "mail", "--addr", &addr]);
    assert!(err.contains("larder peek --ready --tube mail"), "{err}");
    let st = c.cmd("stats-job 1\r\n").await;
    assert_eq!(field(&st, "state"), "ready");
    assert_eq!(field(&st, "reserves"), "0");
    assert_eq!(field(&st, "attempts"), "0");

    assert!(larder_fails(&["peek", "99", "--addr", &addr]).contains("no job 99"));
    let err = larder_fails(&["peek", "--buried", "--tube", "mail", "--addr", &addr]);
    assert!(err.contains("tube \"mail\" has no buried job"), "{err}");
}

#[tokio::test]
async fn dlq_list_says_when_it_shows_fewer_than_match() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    bury_jobs(&mut c, "t", &["a", "b", "c"]).await;

    let text = larder_ok(&["dlq", "list", "--addr", &addr, "--limit", "2"]);
    assert!(
        text.ends_with("showing 2 of 3 dead letters (use --limit to see more)\n"),
        "{text}"
    );
    let text = larder_ok(&["dlq", "list", "--addr", &addr]);
    assert!(text.ends_with("\n3 dead letters\n"), "{text}");
    let text = larder_ok(&[
        "dlq", "list", "--addr", &addr, "--limit", "1", "--grep", "b",
    ]);
    assert!(text.ends_with("\n1 dead letter\n"), "{text}");

    let json: Value = serde_json::from_str(&larder_ok(&[
        "dlq", "list", "--addr", &addr, "--limit", "2", "--json",
    ]))
    .expect("json");
    assert_kebab_keys(&json);
    assert_eq!(json["total"], 3);
    assert_eq!(json["shown"], 2);
    let rows = json["dead-letters"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    for row in rows {
        assert_job_schema(row);
    }
}

#[tokio::test]
async fn dlq_errors_name_the_real_problem() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    let ids = bury_jobs(&mut c, "mail", &["x"]).await;
    assert_eq!(c.cmd("put 0 0 60 1\r\ny\r\n").await, "INSERTED 2\r\n");
    let id = ids[0].to_string();

    let err = larder_fails(&["dlq", "delete", &id, "--tube", "other", "--addr", &addr]);
    assert!(
        err.contains("job 1 is a dead letter of tube \"mail\", not of \"other\""),
        "{err}"
    );
    assert!(err.contains("1 id given was not acted on"), "{err}");
    let err = larder_fails(&["dlq", "delete", "9999", "--addr", &addr]);
    assert!(err.contains("no job 9999"), "{err}");
    let err = larder_fails(&["dlq", "show", "9999", "--addr", &addr]);
    assert!(err.contains("no job 9999"), "{err}");
    let err = larder_fails(&["dlq", "show", "2", "--addr", &addr]);
    assert!(err.contains("job 2 is ready, not a dead letter"), "{err}");
    let err = larder_fails(&["dlq", "redrive", "2", "--addr", &addr]);
    assert!(err.contains("job 2 is ready, not a dead letter"), "{err}");
    // Nothing changed.
    assert_eq!(
        field(&c.cmd("stats-tube mail\r\n").await, "current-jobs-buried"),
        "1"
    );
    assert!(c.cmd("peek 2\r\n").await.starts_with("FOUND 2"));

    let missing = std::env::temp_dir().join(format!("larder-no-such-{}", std::process::id()));
    let err = larder_fails(&[
        "wal",
        "verify",
        "--data-dir",
        &missing.display().to_string(),
    ]);
    assert!(err.contains("no data directory at"), "{err}");
    assert!(!err.contains("CORRUPT"), "{err}");
}

#[test]
fn extension_commands_against_beanstalkd_say_it_lacks_them() {
    let server = ChildServer::beanstalkd(&[]);
    let addr = server.addr.to_string();
    let err = larder_fails(&["dlq", "list", "--addr", &addr]);
    assert!(
        err.contains("this server does not support list-dead"),
        "{err}"
    );
    assert!(!err.contains("UnknownCommand"), "{err}");
    let err = larder_fails(&[
        "tube",
        "config",
        "t",
        "--max-attempts",
        "3",
        "--addr",
        &addr,
    ]);
    assert!(
        err.contains("this server does not support config-tube"),
        "{err}"
    );
    // Plain beanstalkd statistics still work: only larder's extra fields are missing.
    let json: Value = serde_json::from_str(&larder_ok(&[
        "stats", "--tube", "default", "--addr", &addr, "--json",
    ]))
    .expect("json");
    assert_eq!(json["name"], "default");
}

#[tokio::test]
async fn redrive_and_delete_take_ids_limits_dry_runs_and_confirmation_alike() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    let ids = bury_jobs(&mut c, "d", &["1", "2", "3", "4"]).await;
    let buried = |reply: String| field(&reply, "current-jobs-buried");

    for verb in ["redrive", "delete"] {
        let text = larder_ok(&["dlq", verb, "--addr", &addr, "--dry-run", "--limit", "3"]);
        assert!(
            text.ends_with(&format!(
                "would {verb} 3 dead letters (4 match; --limit took the first 3)\n"
            )),
            "{text}"
        );
        let err = larder_fails(&["dlq", verb, "--addr", &addr, "--confirm-above", "2"]);
        assert!(
            err.contains(&format!("refusing to {verb} 4 dead letters without --yes")),
            "{err}"
        );
    }
    assert_eq!(buried(c.cmd("stats-tube d\r\n").await), "4");

    let text = larder_ok(&["dlq", "redrive", &ids[0].to_string(), "--addr", &addr]);
    assert!(text.starts_with("redrove 1 of 1 dead letter"), "{text}");
    let text = larder_ok(&["dlq", "delete", "--addr", &addr, "--limit", "1"]);
    assert!(text.starts_with("deleted 1 of 1 dead letter in "), "{text}");
    assert!(
        text.ends_with("(3 match; --limit took the first 1)\n"),
        "{text}"
    );
    assert!(c
        .cmd(&format!("peek {}\r\n", ids[1]))
        .await
        .starts_with("NOT_FOUND"));
    assert_eq!(buried(c.cmd("stats-tube d\r\n").await), "2");

    // Redrive into another tube: the job is put there anew, with its priority, TTR and body.
    let text = larder_ok(&[
        "dlq",
        "redrive",
        "--addr",
        &addr,
        "--to-tube",
        "retry",
        "--limit",
        "1",
    ]);
    assert!(
        text.starts_with("redrove 1 of 1 dead letter into \"retry\""),
        "{text}"
    );
    let st = c.cmd("stats-tube retry\r\n").await;
    assert_eq!(field(&st, "current-jobs-ready"), "1");
    assert_eq!(buried(c.cmd("stats-tube d\r\n").await), "1");
    assert!(c
        .cmd(&format!("peek {}\r\n", ids[2]))
        .await
        .starts_with("NOT_FOUND"));
    assert_eq!(c.cmd("use retry\r\n").await, "USING retry\r\n");
    let ready = c.cmd("peek-ready\r\n").await;
    assert!(ready.ends_with(" 1\r\n3\r\n"), "{ready}");
    let new_id = ready.split(' ').nth(1).expect("id").to_owned();
    let st = c.cmd(&format!("stats-job {new_id}\r\n")).await;
    assert_eq!(
        (field(&st, "pri"), field(&st, "ttr")),
        ("7".into(), "90".into())
    );
}

#[tokio::test]
async fn export_carries_what_import_needs_to_put_jobs_back() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    bury_jobs(&mut c, "src", &["first", "second"]).await;
    let export = larder_ok(&["dlq", "export", "--addr", &addr]);
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 2);
    for line in &lines {
        assert_job_schema(line);
        assert_eq!(line["ttr"], 90);
        assert!(line["exported-at"].is_string());
    }

    // Into a second server, through standard input.
    let other = ChildServer::larder(&[]);
    let other_addr = other.addr.to_string();
    let mut child = Command::new(larder_bin())
        .args(["dlq", "import", "--addr", &other_addr])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(export.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("imported 2 jobs\n"), "{text}");
    let mut o = Raw::connect(other.addr).await;
    assert_eq!(o.cmd("use src\r\n").await, "USING src\r\n");
    assert_eq!(o.cmd("peek-ready\r\n").await, "FOUND 1 5\r\nfirst\r\n");
    let st = o.cmd("stats-job 2\r\n").await;
    assert_eq!(
        (field(&st, "pri"), field(&st, "ttr")),
        ("7".into(), "90".into())
    );

    // A bad line anywhere: nothing is put.
    let file = std::env::temp_dir().join(format!("larder-import-{}.jsonl", std::process::id()));
    std::fs::write(&file, format!("{export}{{\"id\": 3}}\n")).expect("write");
    let err = larder_fails(&[
        "dlq",
        "import",
        &file.display().to_string(),
        "--addr",
        &other_addr,
    ]);
    assert!(err.contains("line 3: nothing was imported"), "{err}");
    let _ = std::fs::remove_file(&file);
    assert_eq!(field(&o.cmd("stats\r\n").await, "total-jobs"), "2");
}

#[tokio::test]
async fn a_ttr_expiry_and_a_disconnect_record_themselves_as_the_last_error() {
    let dir = std::env::temp_dir().join(format!("larder-op-lasterr-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let server = ChildServer::larder_in(&dir, &["--max-attempts", "2"]);
    let addr = server.addr.to_string();
    let mut a = Raw::connect(server.addr).await;
    assert_eq!(a.cmd("put 0 0 1 4\r\nwork\r\n").await, "INSERTED 1\r\n");
    assert!(a.cmd("reserve\r\n").await.starts_with("RESERVED 1 "));
    // B's reserve is answered only once A's one-second TTR has run out.
    let mut b = Raw::connect_extended(server.addr).await;
    assert!(b
        .cmd("reserve-with-timeout 10\r\n")
        .await
        .starts_with("RESERVED 1 "));
    assert_eq!(
        field(&b.cmd("stats-job 1\r\n").await, "last-error"),
        "ttr expired (attempt 1)"
    );
    b.close().await;
    // The disconnect ends the second attempt: the job is dead-lettered.
    let mut c = Raw::connect_extended(server.addr).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while field(&c.cmd("stats-job 1\r\n").await, "state") != "buried" {
        assert!(std::time::Instant::now() < deadline, "job 1 never buried");
        tokio::task::yield_now().await;
    }
    let show = |addr: &str| -> Value {
        serde_json::from_str(&larder_ok(&["dlq", "show", "1", "--addr", addr, "--json"]))
            .expect("json")
    };
    let json = show(&addr);
    // `dlq show` uses the same kebab-case job schema as `dlq list` and `dlq export`.
    assert_job_schema(&json);
    assert_eq!(json["last-error"], "worker disconnected (attempt 2)");
    assert_eq!(json["bury-reason"], "max-attempts");

    // Replay rebuilds the same text.
    assert!(server.terminate().success());
    let server = ChildServer::larder_in(&dir, &[]);
    assert_eq!(
        show(&server.addr.to_string())["last-error"],
        "worker disconnected (attempt 2)"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sizes_and_durations_have_one_syntax_and_output_shows_units_and_sources() {
    let server = ChildServer::larder(&["--max-bytes", "1GiB", "--retry-delay", "2s"]);
    let addr = server.addr.to_string();
    let stats: Value =
        serde_json::from_str(&larder_ok(&["stats", "--addr", &addr, "--json"])).expect("json");
    assert_kebab_keys(&stats);
    assert_eq!(stats["max-bytes"], 1u64 << 30);
    assert!(stats["current-jobs-ready"].is_u64());
    for key in ["version", "id", "hostname", "log-fsync"] {
        assert!(stats[key].is_string(), "{key}: {}", stats[key]);
    }
    assert!(stats["version"].is_string(), "{}", stats["version"]);

    assert_eq!(
        larder_ok(&["put", "--addr", &addr, "--delay", "2s", "--ttr", "1m", "x"]),
        "1\n"
    );
    let mut c = Raw::connect(server.addr).await;
    let st = c.cmd("stats-job 1\r\n").await;
    assert_eq!(
        (field(&st, "delay"), field(&st, "ttr")),
        ("2".into(), "60".into())
    );
    // A flag that does not parse is a usage error: status 2, as for any clap error.
    let out = larder(&["put", "--addr", &addr, "--delay", "1500ms", "x"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("whole number of seconds"));

    let text = larder_ok(&[
        "tube",
        "config",
        "t",
        "--max-attempts",
        "3",
        "--max-tube-bytes",
        "10MiB",
        "--addr",
        &addr,
    ]);
    assert_eq!(
        text,
        "t: max-attempts = 3\nt: max-tube-bytes = 10.0 MiB (10485760 B)\n"
    );
    let text = larder_ok(&["tube", "show", "t", "--addr", &addr]);
    let row = |name: &str| -> String {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{text}"))
            .to_owned()
    };
    assert!(
        row("max-attempts").contains("tube (larder tube config)"),
        "{text}"
    );
    assert!(row("retry-delay").contains("2s"), "{text}");
    assert!(row("retry-delay").contains("server default"), "{text}");
    assert!(row("retry-max").contains("0 (no cap)"), "{text}");
    let json: Value = serde_json::from_str(&larder_ok(&[
        "tube", "show", "t", "--addr", &addr, "--json",
    ]))
    .expect("json");
    assert_eq!(
        json["own-settings"],
        serde_json::json!(["max-attempts", "max-tube-bytes"])
    );
    assert_kebab_keys(&json);
    assert_eq!(json["retry-delay"], 2000);
    assert_eq!(json["name"], "t");
    let same: Value = serde_json::from_str(&larder_ok(&[
        "stats", "--tube", "t", "--addr", &addr, "--json",
    ]))
    .expect("json");
    assert_eq!(same["own-settings"], json["own-settings"]);

    let err = larder_fails(&["serve", "--retry-delay", "5"]);
    assert!(
        err.contains("write 5s for seconds or 5ms for milliseconds"),
        "{err}"
    );
    let out = larder(&["serve", "--max-bytes", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}

#[test]
fn every_subcommand_help_states_units_and_defaults() {
    let help = |args: &[&str]| -> String {
        let mut all = args.to_vec();
        all.push("--help");
        larder_ok(&all)
    };
    let serve = help(&["serve"]);
    for needle in [
        "[default: 64MiB]",
        "[default: 4GiB]",
        "[default: 65535]",
        "a size with a unit",
        "a duration with a unit",
        "[default: 60]",
    ] {
        assert!(serve.contains(needle), "serve --help lacks {needle:?}");
    }
    let put = help(&["put"]);
    assert!(
        put.contains("[default: 1024]") && put.contains("seconds"),
        "{put}"
    );
    for sub in [
        &["stats"][..],
        &["put"],
        &["reserve"],
        &["peek"],
        &["tube", "show"],
        &["tube", "config"],
        &["dlq", "list"],
        &["dlq", "show"],
        &["dlq", "redrive"],
        &["dlq", "delete"],
        &["dlq", "export"],
        &["dlq", "import"],
    ] {
        let text = help(sub);
        assert!(text.contains("[default: 127.0.0.1:11300]"), "{sub:?}");
        assert!(text.contains("[default: 64MiB]"), "{sub:?}: max reply size");
    }
    let config = help(&["tube", "config"]);
    assert!(config.contains("a duration with a unit") && config.contains("a size with a unit"));
    assert!(help(&["dlq", "list"]).contains("[default: 100]"));
    assert!(help(&["dlq", "delete"]).contains("[default: 10]"));
    assert!(help(&["wal", "verify"]).contains("[default: ./larder-data]"));
}

#[tokio::test]
async fn ids_past_the_limit_are_said_to_be_left() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    let ids = bury_jobs(&mut c, "l", &["1", "2", "3"]).await;
    let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut args = vec!["dlq", "delete", "--addr", &addr, "--limit", "2"];
    args.extend(ids.iter().map(String::as_str));
    let text = larder_ok(&args);
    assert!(
        text.starts_with("deleted 2 of 2 dead letters in "),
        "{text}"
    );
    assert!(
        text.ends_with("(3 match; --limit took the first 2)\n"),
        "{text}"
    );
    assert!(c
        .cmd(&format!("peek {}\r\n", ids[2]))
        .await
        .starts_with("FOUND"));
}
