//! `larder stats` and `larder tubes`, the operator's view, against real servers: the
//! summary, `--all`, `--json` as before, several brokers with a total, and `--watch`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;

use crate::support::{larder_bin, ChildServer, Raw, REPLY_TIMEOUT};

fn larder(args: &[&str]) -> std::process::Output {
    Command::new(larder_bin())
        .args(args)
        .output()
        .expect("run larder")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whitespace-separated cells of the first line starting with `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cells| cells.first().is_some_and(|c| c == first))
        .unwrap_or_else(|| panic!("no row {first:?} in\n{text}"))
}

/// Puts `n` one-byte jobs into `tube`.
async fn put(c: &mut Raw, tube: &str, n: usize) {
    assert_eq!(
        c.cmd(&format!("use {tube}\r\n")).await,
        format!("USING {tube}\r\n")
    );
    for _ in 0..n {
        assert!(c.cmd("put 0 0 60 1\r\nx\r\n").await.starts_with("INSERTED"));
    }
}

#[tokio::test]
async fn the_summary_shows_states_dead_letters_refusals_and_limits_near_their_bound() {
    let server = ChildServer::larder(&["--max-jobs", "2"]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    put(&mut c, "mail", 2).await;
    assert_eq!(c.cmd("put 0 0 60 1\r\nx\r\n").await, "REFUSED max-jobs\r\n");
    assert_eq!(c.cmd("watch mail\r\n").await, "WATCHING 2\r\n");
    let reserved = c.cmd("reserve\r\n").await;
    let id = reserved.split(' ').nth(1).expect("id").to_owned();
    assert_eq!(c.cmd(&format!("bury {id} 0\r\n")).await, "BURIED\r\n");

    let out = larder(&["stats", "--addr", &addr]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    // broker ready reserved delayed buried urgent conns waiting (then rates, which depend
    // on the uptime); the connections are this test's and the command's own.
    assert_eq!(
        row(&text, &addr)[1..8],
        ["1", "0", "0", "1", "1", "2", "0"],
        "{text}"
    );
    assert!(text.contains("dead letters: 1 (buried 1)"), "{text}");
    assert!(text.contains("max-jobs 2/2 (100%)"), "{text}");
    assert!(text.contains("refusals since start: max-jobs 1"), "{text}");
    assert!(text.contains("rates: per second since start"), "{text}");
    assert!(
        text.lines().count() < 15,
        "a summary, not every field:\n{text}"
    );
}

#[tokio::test]
async fn all_prints_every_field_and_json_keeps_the_stats_fields() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect_extended(server.addr).await;
    let yaml = c.cmd("stats\r\n").await;
    let fields: Vec<&str> = yaml
        .lines()
        .filter_map(|l| Some(l.split_once(": ")?.0))
        .collect();
    assert!(fields.len() > 50);

    let all = stdout(&larder(&["stats", "--all", "--addr", &addr]));
    for field in &fields {
        assert!(
            all.lines()
                .any(|l| l.split_whitespace().next() == Some(*field)),
            "--all lacks {field}:\n{all}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&larder(&["stats", "--json", "--addr", &addr]).stdout)
            .expect("JSON");
    let keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    // Every field, in the server's order.
    assert_eq!(keys, fields);
    assert_eq!(json["current-jobs-ready"], 0);
}

#[tokio::test]
async fn several_brokers_get_a_row_each_and_a_total() {
    let (a, b) = (ChildServer::larder(&[]), ChildServer::larder(&[]));
    put(&mut Raw::connect(a.addr).await, "mail", 2).await;
    put(&mut Raw::connect(b.addr).await, "mail", 3).await;
    let mut pausing = Raw::connect(b.addr).await;
    assert!(pausing
        .cmd("pause-tube mail 600\r\n")
        .await
        .starts_with("PAUSED"));
    let both = format!("{},{}", a.addr, b.addr);

    let text = stdout(&larder(&["stats", "--addr", &both]));
    assert_eq!(row(&text, &a.addr.to_string())[1], "2");
    assert_eq!(row(&text, &b.addr.to_string())[1], "3");
    assert_eq!(row(&text, "total")[1], "5", "{text}");
    assert!(text.contains("brokers answering: 2/2"), "{text}");

    let tubes = stdout(&larder(&["tubes", "--addr", &both]));
    let mail: Vec<Vec<&str>> = tubes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cells| cells.first() == Some(&"mail"))
        .collect();
    assert_eq!(mail.len(), 3, "two brokers and a total:\n{tubes}");
    let b_row = mail
        .iter()
        .find(|r| r[1] == b.addr.to_string())
        .expect("b's row");
    assert_eq!(b_row[2], "3");
    assert!(b_row.join(" ").contains("s left"), "paused on b:\n{tubes}");
    let total = mail.iter().find(|r| r[1] == "total").expect("total row");
    assert_eq!(total[2], "5");

    let json: serde_json::Value =
        serde_json::from_slice(&larder(&["tubes", "--json", "--addr", &both]).stdout)
            .expect("JSON");
    let ready: u64 = json
        .as_array()
        .expect("array")
        .iter()
        .filter(|t| t["name"] == "mail")
        .map(|t| t["current-jobs-ready"].as_u64().expect("count"))
        .sum();
    assert_eq!(ready, 5);

    // A broker that does not answer is named, the others still shown, and the exit is 1.
    drop(b);
    let out = larder(&["stats", "--addr", &both]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(row(&text, &a.addr.to_string())[1], "2");
    assert!(text.contains("brokers answering: 1/2"), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}

#[tokio::test]
async fn watch_refreshes_with_rates_since_the_last_sample() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut child = Command::new(larder_bin())
        .args(["stats", "--watch", "1", "--addr", &addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    let reader = BufReader::new(child.stdout.take().expect("stdout"));
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut frames = 0;
    let mut lines = Vec::new();
    while frames < 2 {
        let line = rx
            .recv_timeout(REPLY_TIMEOUT * 2)
            .unwrap_or_else(|_| panic!("no second frame; got {lines:#?}"));
        frames += usize::from(line.starts_with("larder at "));
        lines.push(line);
    }
    // The rest of the second frame.
    while !lines.last().is_some_and(|l| l.starts_with("limits:")) {
        lines.push(
            rx.recv_timeout(REPLY_TIMEOUT)
                .expect("the rest of the frame"),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(text.contains("rates: per second since start"), "{text}");
    assert!(
        text.contains("rates: per second since the last sample"),
        "{text}"
    );

    for command in ["stats", "tubes"] {
        let out = larder(&[command, "--watch", "0", "--addr", &addr]);
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--watch"));
    }
}
