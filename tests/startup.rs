//! Start-up against the real binary: signals while the log replays, and beanstalkd's
//! flags (`-u -s -c -n -V -v`). Every server here runs with its log captured, so a
//! failure shows what it said.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use larder::engine::{record, Change, Timestamp};
use larder::protocol::{JobId, TubeName};
use larder::wal::{storage::FsStorage, Wal, WalOptions};

use crate::support::{free_port, larder_bin, Raw};

/// How long a test waits for a log line or an exit.
const WAIT: Duration = Duration::from_secs(60);

/// Jobs in the log the signal tests replay.
const BIG_LOG_JOBS: u64 = 200_000;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-startup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Writes a log of `jobs` ready jobs (tiny bodies) into `data_dir`, as a server would.
fn write_log(data_dir: &Path, jobs: u64) {
    let dir = larder::cli::wal_dir(data_dir);
    let (mut wal, _, _) =
        Wal::open(FsStorage::new(), &dir, WalOptions::default()).expect("open log");
    let tube = TubeName::new(b"big").expect("tube name");
    for id in 1..=jobs {
        let change = Change::Put {
            id: JobId(id),
            tube: tube.clone(),
            pri: 100,
            delay: 0,
            ttr: 60,
            created_at: Timestamp(1),
            ready_at: None,
            body: bytes::Bytes::from_static(b"job"),
        };
        let (kind, payload) = record::encode(&change);
        wal.append(kind, &payload).expect("append");
    }
    wal.sync().expect("sync");
}

/// A `larder serve` child whose standard error is read line by line.
struct Logged {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logged {
    fn start(data_dir: &Path, extra: &[&str]) -> Logged {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let mut child = Command::new(larder_bin())
            .arg("serve")
            .args(["--listen", &addr.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--disk-reserve", "0"])
            .args(extra)
            .env_remove("LARDER_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start larder");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Logged {
            child,
            addr,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing `text`; panics with the log so far if the server
    /// exits first or `WAIT` passes.
    fn wait_for(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(text);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(e) => panic!(
                    "no log line with {text:?} ({e}); exit: {:?}; log:\n{}",
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the server to exit (panics after `WAIT`) and returns its status and log.
    fn exit(mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "server did not exit; log:\n{}", self.log());
            // Log lines arrive until the exit; waiting on them paces this loop.
            if let Ok(line) = self.lines.recv_timeout(left.min(Duration::from_millis(50))) {
                self.seen.push(line);
            }
        };
        let log = self.log();
        (status, log)
    }

    /// Every line read so far and every line still to come (once the child has exited).
    fn log(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_while_the_log_replays_exits_0_without_serving() {
    let dir = temp_dir("replay-term");
    write_log(&dir, BIG_LOG_JOBS);
    let mut server = Logged::start(&dir, &[]);
    server.wait_for("replaying the log");
    server.signal(libc::SIGTERM);
    let (status, log) = server.exit();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{log}");
    assert!(log.contains("stopped before serving"), "{log}");
    assert!(!log.contains("listening"), "{log}");
    // The log is intact: a restart finds every job.
    let mut server = Logged::start(&dir, &[]);
    server.wait_for("listening");
    let stats = Raw::connect(server.addr).await.cmd("stats\r\n").await;
    assert!(
        stats.contains(&format!("\ncurrent-jobs-ready: {BIG_LOG_JOBS}\n")),
        "{stats}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigusr1_while_the_log_replays_enters_drain_mode_once_recovered() {
    let dir = temp_dir("replay-usr1");
    write_log(&dir, BIG_LOG_JOBS);
    let mut server = Logged::start(&dir, &[]);
    server.wait_for("replaying the log");
    server.signal(libc::SIGUSR1);
    server.wait_for("listening");
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("put 0 0 60 1\r\nx\r\n").await, "DRAINING\r\n");
    let stats = c.cmd("stats\r\n").await;
    assert!(stats.contains("\ndraining: true\n"), "{stats}");
    assert!(
        stats.contains(&format!("\ncurrent-jobs-ready: {BIG_LOG_JOBS}\n")),
        "{stats}"
    );
    server.signal(libc::SIGTERM);
    let (status, log) = server.exit();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{log}");
    assert!(log.contains("SIGUSR1 during the replay"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readyz_says_recovering_while_the_log_replays_and_healthz_answers() {
    let dir = temp_dir("replay-ready");
    write_log(&dir, BIG_LOG_JOBS);
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut server = Logged::start(&dir, &["--metrics-listen", &metrics]);
    server.wait_for("replaying the log");
    let during = crate::metrics::http(&metrics, "GET", "/readyz");
    let health = crate::metrics::http(&metrics, "GET", "/healthz");
    server.wait_for("listening");
    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(
        during.body.trim(),
        r#"{"ready":false,"reasons":["recovering"]}"#
    );
    assert_eq!(health.status, 200);
    let after = crate::metrics::http(&metrics, "GET", "/readyz");
    assert_eq!(after.status, 200, "{}", after.body);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `/proc/PID/status` shows SIGTERM, SIGINT and SIGUSR1 in the main thread's
/// blocked set (`SigBlk`) or caught set (`SigCgt`).
fn stop_signals_held(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let mask = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let bits = [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1]
        .iter()
        .fold(0u64, |m, s| m | 1 << (s - 1));
    mask("SigBlk:") & bits == bits || mask("SigCgt:") & bits == bits
}

#[test]
fn a_stop_signal_as_soon_as_the_process_runs_exits_0() {
    for round in 0..10 {
        let dir = temp_dir(&format!("early-{round}"));
        let mut server = Logged::start(&dir, &[]);
        // The first moment the process can be seen holding the signals: blocked from
        // `main`'s first statement, caught once the handlers exist.
        let deadline = Instant::now() + WAIT;
        while !stop_signals_held(server.pid()) {
            assert!(
                Instant::now() < deadline && server.child.try_wait().ok().flatten().is_none(),
                "the stop signals were never held; log:\n{}",
                server.log()
            );
            std::thread::yield_now();
        }
        server.signal(libc::SIGTERM);
        let (status, log) = server.exit();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: {status:?}; log:\n{log}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn serve_v_prints_the_version_and_exits_0() {
    for flag in ["-v", "--version"] {
        let out = Command::new(larder_bin())
            .args(["serve", flag])
            .output()
            .expect("run larder");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("larder {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn serve_capital_v_adds_debug_lines() {
    let dir = temp_dir("verbose");
    let mut server = Logged::start(&dir, &["-V"]);
    server.wait_for("configuration");
    server.wait_for("listening");
    server.signal(libc::SIGTERM);
    let (status, log) = server.exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("DEBUG"), "{log}");

    let mut server = Logged::start(&dir, &["-VV"]);
    server.wait_for("listening");
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit().0.code(), Some(0));

    let mut server = Logged::start(&dir, &[]);
    server.wait_for("listening");
    server.signal(libc::SIGTERM);
    let (status, log) = server.exit();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("DEBUG"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn segments(data_dir: &Path) -> usize {
    std::fs::read_dir(larder::cli::wal_dir(data_dir))
        .expect("read wal dir")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "wal"))
        })
        .count()
}

#[tokio::test]
async fn serve_s_sets_the_segment_size() {
    let body = "x".repeat(1000);
    for (flags, more_than_one) in [(&["-s", "4096"][..], true), (&[][..], false)] {
        let dir = temp_dir("segment-size");
        let mut server = Logged::start(&dir, flags);
        server.wait_for("listening");
        let mut c = Raw::connect(server.addr).await;
        for _ in 0..10 {
            let reply = c.cmd(&format!("put 0 0 60 1000\r\n{body}\r\n")).await;
            assert!(reply.starts_with("INSERTED "), "{reply}");
        }
        let n = segments(&dir);
        assert_eq!(n > 1, more_than_one, "{flags:?}: {n} segments");
        server.signal(libc::SIGTERM);
        let (status, log) = server.exit();
        assert_eq!(status.code(), Some(0), "{log}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn serve_accepts_c_and_n_and_says_when_compaction_is_off() {
    for (flags, off) in [
        (&["-n"][..], true),
        (&["-c"][..], false),
        (&["-n", "-c"][..], false),
        (&["-c", "-n"][..], true),
    ] {
        let dir = temp_dir("compaction");
        let mut server = Logged::start(&dir, flags);
        server.wait_for("listening");
        server.signal(libc::SIGTERM);
        let (status, log) = server.exit();
        assert_eq!(status.code(), Some(0), "{flags:?}: {log}");
        assert_eq!(log.contains("compaction is off"), off, "{flags:?}: {log}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The uid the process `pid` runs as (real, effective, saved and filesystem all equal).
fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let ids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|v| v.parse().expect("uid"))
        .collect();
    assert!(ids.iter().all(|&id| id == ids[0]), "mixed uids {ids:?}");
    ids[0]
}

#[tokio::test]
async fn serve_u_runs_as_the_user_and_keeps_the_data_usable() {
    let dir = temp_dir("user");
    let out = Command::new(larder_bin())
        .args([
            "serve",
            "-u",
            "no-such-user-larder",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run larder");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user named \"no-such-user-larder\""),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    // As root (CI), switch to `nobody`; otherwise -u names the user already running.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let target = if root && larder::server::user::lookup("nobody").is_ok() {
        "nobody".to_owned()
    } else {
        larder::server::user::current_name().expect("current user name")
    };
    let account = larder::server::user::lookup(&target).expect("look up target");
    // The directory starts out root's (when root): the server gives it to the user.
    std::fs::create_dir_all(&dir).expect("mkdir");
    for round in 0..2 {
        let mut server = Logged::start(&dir, &["-u", &target]);
        server.wait_for("listening");
        assert_eq!(uid_of(server.pid()), account.uid, "{}", server.log());
        let mut c = Raw::connect(server.addr).await;
        if round == 0 {
            assert_eq!(c.cmd("put 0 0 60 2\r\nhi\r\n").await, "INSERTED 1\r\n");
        } else {
            assert_eq!(c.cmd("peek-ready\r\n").await, "FOUND 1 2\r\nhi\r\n");
        }
        server.signal(libc::SIGTERM);
        let (status, log) = server.exit();
        assert_eq!(status.code(), Some(0), "{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
