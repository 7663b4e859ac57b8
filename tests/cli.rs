//! The `larder` binary's client subcommands against a running server.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{larder_bin, ChildServer, Raw};

fn larder(args: &[&str]) -> std::process::Output {
    Command::new(larder_bin())
        .args(args)
        .output()
        .expect("run larder")
}

#[tokio::test]
async fn put_and_reserve_round_trip_a_body_through_the_shell_commands() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let out = larder(&["put", "--addr", &addr, "--tube", "mail", "hello world"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n");

    let mut child = Command::new(larder_bin())
        .args(["put", "--addr", &addr, "--tube", "mail", "--pri", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from\nstdin")
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");

    // Priority 5 beats the default 1024.
    let out = larder(&[
        "reserve",
        "--addr",
        &addr,
        "--tube",
        "mail",
        "--timeout",
        "1",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"from\nstdin");
    let out = larder(&[
        "reserve",
        "--addr",
        &addr,
        "--tube",
        "mail",
        "--timeout",
        "1",
    ]);
    assert_eq!(out.stdout, b"hello world");
    // Both were deleted: nothing is left, and the timeout has its own exit status.
    let out = larder(&[
        "reserve",
        "--addr",
        &addr,
        "--tube",
        "mail",
        "--timeout",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(larder::cli::EXIT_TIMED_OUT));
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("peek 1\r\n").await, "NOT_FOUND\r\n");
}

#[tokio::test]
async fn stats_prints_a_table_or_json() {
    let server = ChildServer::larder(&[]);
    let addr = server.addr.to_string();
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("put 0 0 10 1\r\nx\r\n").await, "INSERTED 1\r\n");

    let out = larder(&["stats", "--addr", &addr, "--all"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let ready = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("current-jobs-ready"))
        .expect("current-jobs-ready row");
    assert_eq!(ready.split_whitespace().nth(1), Some("1"));

    let out = larder(&["stats", "--addr", &addr, "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["current-jobs-ready"], 1);
    assert_eq!(json["total-jobs"], 1);
    assert_eq!(json["draining"], false);
    assert_eq!(json["max-job-size"], 65535);

    let out = larder(&["stats", "--addr", &addr, "--tube", "default", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["name"], "default");
    assert_eq!(json["current-jobs-urgent"], 1);

    let out = larder(&["stats", "--addr", &addr, "--tube", "nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tube named"));
}

#[test]
fn client_commands_fail_clearly_when_the_server_is_unreachable() {
    // A bound socket that never listens: connections to it are refused, and no other test
    // can take the port meanwhile.
    let reserved = tokio::net::TcpSocket::new_v4().expect("socket");
    reserved
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = reserved.local_addr().expect("addr").to_string();
    for args in [
        vec!["stats", "--addr", &addr],
        vec!["put", "--addr", &addr, "x"],
        vec!["reserve", "--addr", &addr, "--timeout", "0"],
    ] {
        let out = larder(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("cannot connect to {addr}")), "{err}");
        // The cause is said once, and the message says what to check.
        assert_eq!(err.matches("refused").count(), 1, "{err}");
        assert!(err.contains("hint: is `larder serve`"), "{err}");
    }
}

#[test]
fn serve_rejects_bad_settings_with_a_message() {
    let out = larder(&["serve", "--max-job-size", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-job-size"));
    let out = larder(&["serve", "--listen", "nonsense"]);
    assert!(!out.status.success());
    let out = larder(&["serve", "-l", "unix:/tmp/x.sock", "-p", "5"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn wal_verify_and_dump_read_a_log_offline_and_name_corruption() {
    use larder::engine::{record, Change, Timestamp};
    use larder::protocol::{JobId, TubeName};
    use larder::wal::{storage::FsStorage, Wal, WalOptions};

    let data = std::env::temp_dir().join(format!("larder-walcli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let dir = larder::cli::wal_dir(&data);
    // Preallocated, as the server writes it: verify and dump stop at the zero fill.
    let options = WalOptions {
        preallocate: true,
        ..WalOptions::default()
    };
    let (mut wal, _, _) = Wal::open(FsStorage::new(), &dir, options).expect("open");
    let changes = [
        Change::Put {
            id: JobId(1),
            tube: TubeName::new(b"mail").expect("name"),
            pri: 5,
            delay: 0,
            ttr: 60,
            created_at: Timestamp(1),
            ready_at: None,
            body: bytes::Bytes::from_static(b"hello"),
        },
        Change::Reserve { id: JobId(1) },
        Change::Delete { id: JobId(1) },
        Change::Put {
            id: JobId(2),
            tube: TubeName::new(b"mail").expect("name"),
            pri: 5,
            delay: 0,
            ttr: 60,
            created_at: Timestamp(2),
            ready_at: None,
            body: bytes::Bytes::from_static(b"stays"),
        },
    ];
    for c in &changes {
        let (kind, payload) = record::encode(c);
        wal.append(kind, &payload).expect("append");
    }
    wal.sync().expect("sync");
    drop(wal);

    let seg = dir.join("00000000000000000001.wal");
    let len = std::fs::metadata(&seg).expect("segment").len();
    assert_eq!(len, options.max_segment_size, "the segment is zero-filled");
    let d = data.display().to_string();
    let out = larder(&["wal", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("records:         4"), "{text}");
    assert!(text.contains("live jobs:       1"), "{text}");
    assert!(text.contains("status:          ok"), "{text}");
    assert!(
        text.contains("torn tail bytes: 0"),
        "zero fill is not torn: {text}"
    );

    let out = larder(&["wal", "dump", "--data-dir", &d]);
    let text = String::from_utf8_lossy(&out.stdout);
    let kinds: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').nth(3))
        .collect();
    assert_eq!(kinds, ["put", "reserve", "delete", "put"]);

    // Flip a byte inside the first record's payload: the record after it is intact, so this
    // is corruption, not a torn tail, and verify names the segment and offset.
    let mut bytes = std::fs::read(&seg).expect("segment");
    bytes[40 + 9 + 3] ^= 0xff;
    std::fs::write(&seg, bytes).expect("write");
    let out = larder(&["wal", "verify", "--data-dir", &d]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CORRUPT"), "{text}");
    assert!(text.contains("00000000000000000001.wal"), "{text}");
    let _ = std::fs::remove_dir_all(&data);
}

/// A fake server on an ephemeral port that answers every connection's first line with
/// `reply` and then closes; returns its address.
fn hostile_server(reply: &'static [u8]) -> String {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            let _ = stream.write_all(reply);
        }
    });
    addr
}

#[test]
fn the_client_refuses_hostile_replies_without_panicking() {
    for (reply, expected) in [
        (
            &b"OK 18446744073709551615\r\n"[..],
            "over the client's limit",
        ),
        (b"OK 1073741824\r\n", "over the client's limit"),
        (b"OK 40\r\n", "closed the connection"),
        (b"RESERVED 1 -5\r\n", "malformed reply"),
        (b"KICKED 99999999999\r\n", "out of range"),
        (&[b'x'; 5000][..], "reply line too long"),
    ] {
        let addr = hostile_server(reply);
        let out = larder(&["stats", "--addr", &addr]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(expected), "{expected:?} not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // The limit is a setting: a smaller one refuses a body the default would take.
    let addr = hostile_server(b"OK 2000\r\n");
    let out = larder(&["stats", "--addr", &addr, "--max-reply-size", "1KiB"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("over the client's limit of 1024 bytes"),
        "{err}"
    );
}

#[test]
fn stats_into_a_closed_pipe_exits_quietly() {
    let server = ChildServer::larder(&[]);
    // A pipe whose read end is already closed: the first write fails with EPIPE, as under
    // `larder stats | head` once head has exited.
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: fds[0] and fds[1] are open descriptors owned by nobody else.
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read_end);
    let out = Command::new(larder_bin())
        .args(["stats", "--addr", &server.addr.to_string()])
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .expect("run larder");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn an_address_without_a_port_or_server_gets_a_hint() {
    let out = larder(&["stats", "--addr", "127.0.0.1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("127.0.0.1:11300"), "{err}");
    assert!(!err.contains("invalid socket address"), "{err}");
}

#[test]
fn the_server_log_names_what_it_runs_on_and_says_when_it_stopped() {
    let dir = std::env::temp_dir().join(format!("larder-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let log_path = dir.join("server.log");
    let data = dir.join("data");
    let log = std::fs::File::create(&log_path).expect("log file");
    let port = crate::support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(larder_bin())
        .args(["serve", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .args(["--fsync", "every=20"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // The port is bound before the log is replayed; serving starts with the line.
    loop {
        let read = std::fs::read_to_string(&log_path).unwrap_or_default();
        if read.contains("larder started") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().ok().flatten().is_none(),
            "server never started; its log:\n{read}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let status = child.wait().expect("wait");
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(status.success(), "{status:?}; log:\n{text}");
    assert!(
        !text.contains('\x1b'),
        "colour codes in a log file:\n{text}"
    );
    let started = text
        .lines()
        .find(|l| l.contains("larder started"))
        .unwrap_or_else(|| panic!("no start-up line:\n{text}"));
    for part in [
        format!("version={}", env!("CARGO_PKG_VERSION")),
        format!("data_dir={}", data.display()),
        "fsync=every=20".to_owned(),
        format!("addr={addr}"),
    ] {
        assert!(started.contains(&part), "{part:?} not in {started}");
    }
    let last = text.lines().last().unwrap_or_default();
    assert!(last.contains("stopped"), "last line {last:?}; log:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
