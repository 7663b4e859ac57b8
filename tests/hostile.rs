//! What one careless or hostile client can do to the others and to the log (protocol.md
//! §9): floods of connections under a tight descriptor limit, and commands never finished.

use crate::support::{ChildServer, Raw};

/// The `stats` value of `name` (the extended fields included).
async fn stat(c: &mut Raw, name: &str) -> String {
    assert_eq!(c.cmd("extended-stats\r\n").await, "EXTENDED\r\n");
    c.send(b"stats\r\n").await;
    let yaml = c.reply().await;
    yaml.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {yaml}"))
        .to_owned()
}

/// The larder binary under `prlimit --nofile=N:N`, so its descriptor limit is exactly N.
fn larder_with_open_files(limit: u64, data_dir: &std::path::Path, extra: &[&str]) -> ChildServer {
    let dir = data_dir.display().to_string();
    ChildServer::on_free_port("prlimit", |addr| {
        let mut args = vec![
            format!("--nofile={limit}:{limit}"),
            "--".to_owned(),
            crate::support::larder_bin().to_owned(),
            "serve".to_owned(),
            "--listen".to_owned(),
            addr.to_string(),
            "--data-dir".to_owned(),
            dir.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    })
}

#[tokio::test]
async fn a_connection_flood_under_a_tight_open_files_limit_never_fails_the_log() {
    let dir = std::env::temp_dir().join(format!("larder-fdflood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // The limit a systemd default gives a server told to take 40 connections: 40 + 64.
    let server = larder_with_open_files(
        104,
        &dir,
        &["--max-connections", "40", "--wal-segment-size", "4096"],
    );
    let mut producer = Raw::connect(server.addr).await;
    assert_eq!(
        producer.cmd("list-tube-used\r\n").await,
        "USING default\r\n"
    );
    // Far more connections than descriptors, all held open while the producer works.
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(s) = tokio::net::TcpStream::connect(server.addr).await {
            flood.push(s);
        }
    }
    let body = vec![b'x'; 100];
    let mut inserted = Vec::new();
    let mut refused = 0;
    for _ in 0..400 {
        producer
            .send(format!("put 0 0 60 {}\r\n", body.len()).as_bytes())
            .await;
        producer.send(&body).await;
        producer.send(b"\r\n").await;
        let reply = producer.reply().await;
        if let Some(id) = reply.strip_prefix("INSERTED ") {
            inserted.push(id.trim_end().to_owned());
        } else {
            assert_eq!(reply, "REFUSED open-files\r\n", "{}", server.log());
            refused += 1;
        }
    }
    drop(flood);
    // Once the flood is gone, puts go through again by themselves.
    for _ in 0..20 {
        producer.send(b"put 0 0 60 2\r\nhi\r\n").await;
        let reply = producer.reply().await;
        let id = reply
            .strip_prefix("INSERTED ")
            .unwrap_or_else(|| panic!("{reply} after the flood; log:\n{}", server.log()));
        inserted.push(id.trim_end().to_owned());
    }
    eprintln!(
        "{} inserted, {refused} refused during the flood",
        inserted.len() - 20
    );
    assert!(inserted.len() > 20, "nothing was inserted during the flood");
    assert_eq!(
        stat(&mut producer, "current-jobs-ready").await,
        inserted.len().to_string()
    );
    // Every confirmed job is in the log.
    server.kill9();
    let server = ChildServer::larder_in(&dir, &[]);
    let mut c = Raw::connect(server.addr).await;
    for id in &inserted {
        let reply = c.cmd(&format!("peek {id}\r\n")).await;
        assert!(
            reply.starts_with(&format!("FOUND {id} ")),
            "job {id}: {reply}"
        );
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_half_sent_command_does_not_hold_its_connection_forever() {
    let server = ChildServer::larder(&["--max-connections", "3", "--command-timeout", "1"]);
    let mut slow = Raw::connect(server.addr).await;
    slow.send(b"put 0 0 60 5\r\nhe").await;
    let mut waiting = Raw::connect(server.addr).await;
    waiting.send(b"reserve-with-timeout 3\r\n").await;
    // The slow client is dropped after its second; the one waiting in reserve is not.
    assert!(
        slow.closed().await,
        "the half-sent command held its connection"
    );
    assert_eq!(waiting.reply().await, "TIMED_OUT\r\n");
    let mut next = Raw::connect(server.addr).await;
    assert_eq!(stat(&mut next, "command-timeout-disconnects").await, "1");
    assert_eq!(stat(&mut next, "current-jobs-ready").await, "0");
}

#[tokio::test]
async fn settings_in_force_are_not_rewritten_with_every_batch() {
    let dir = std::env::temp_dir().join(format!("larder-relog-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // 2,000 tube settings fill more than one 16 KiB segment.
    let server = ChildServer::larder_in(&dir, &["--wal-segment-size", "16384"]);
    let mut c = Raw::connect(server.addr).await;
    let mut script = String::new();
    for i in 0..2000 {
        script.push_str(&format!("config-tube t{i} max-attempts {}\r\n", i % 7 + 1));
    }
    c.send(script.as_bytes()).await;
    for _ in 0..2000 {
        assert_eq!(c.reply().await, "CONFIGURED\r\n");
    }
    let records = |stats: String| -> u64 { stats.parse().expect("count") };
    let before = records(stat(&mut c, "log-records-written").await);
    for i in 0..100 {
        let id = c.cmd("put 0 0 60 1\r\nx\r\n").await;
        let id = id
            .strip_prefix("INSERTED ")
            .expect("inserted")
            .trim_end()
            .to_owned();
        assert_eq!(
            c.cmd(&format!("delete {id}\r\n")).await,
            "DELETED\r\n",
            "put {i}"
        );
    }
    let written = records(stat(&mut c, "log-records-written").await) - before;
    // 200 records for the jobs (the old broker rewrote all 2,000 settings with every
    // batch once they filled a segment: hundreds of thousands of records).
    eprintln!("{written} records written for 100 put+delete");
    assert!(written < 200 + 2000, "{written} records for 100 put+delete");
    // Jobs with 1 KiB bodies roll the log over many segments: old segments go, the
    // settings move forward, and the log stays about as large as what it holds.
    let body = vec![b'y'; 1024];
    for _ in 0..300 {
        c.send(format!("put 0 0 60 {}\r\n", body.len()).as_bytes())
            .await;
        c.send(&body).await;
        c.send(b"\r\n").await;
        let id = c.reply().await;
        let id = id
            .strip_prefix("INSERTED ")
            .expect("inserted")
            .trim_end()
            .to_owned();
        assert_eq!(c.cmd(&format!("delete {id}\r\n")).await, "DELETED\r\n");
    }
    let removed = records(stat(&mut c, "log-segments-removed").await);
    let segments = records(stat(&mut c, "log-segments").await);
    eprintln!("{removed} segments removed, {segments} left");
    assert!(removed >= 10, "only {removed} segments were removed");
    assert!(
        segments <= 12,
        "{segments} segments kept for 2,000 settings"
    );
    // Every setting is still in force after a crash.
    server.kill9();
    let server = ChildServer::larder_in(&dir, &["--wal-segment-size", "16384"]);
    let mut c = Raw::connect_extended(server.addr).await;
    for i in (0..2000).step_by(97) {
        c.send(format!("stats-tube t{i}\r\n").as_bytes()).await;
        let yaml = c.reply().await;
        let want = format!("\nmax-attempts: {}\n", i % 7 + 1);
        assert!(yaml.contains(&want), "t{i}: {yaml}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
