//! The server as a process: signals, shutdown, restart on the same port, Unix sockets.

use std::time::{Duration, Instant};

use crate::support::{ChildServer, Raw};

fn wait_exit(server: &mut ChildServer) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test]
async fn sigusr1_enters_drain_mode() {
    let server = ChildServer::larder(&[]);
    let mut c = Raw::connect(server.addr).await;
    assert_eq!(c.cmd("put 0 0 10 1\r\na\r\n").await, "INSERTED 1\r\n");
    server.signal(libc::SIGUSR1);
    // The signal is handled asynchronously: poll until puts are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut reply = String::new();
    while Instant::now() < deadline {
        reply = c.cmd("put 0 0 10 1\r\nb\r\n").await;
        if reply == "DRAINING\r\n" {
            break;
        }
        assert!(reply.starts_with("INSERTED"), "unexpected {reply:?}");
        tokio::task::yield_now().await;
    }
    assert_eq!(reply, "DRAINING\r\n");
    let stats = c.cmd("stats\r\n").await;
    assert!(stats.contains("\ndraining: true\n"), "{stats}");
    // Workers still drain.
    assert_eq!(c.cmd("reserve\r\n").await, "RESERVED 1 1\r\na\r\n");
    assert_eq!(c.cmd("delete 1\r\n").await, "DELETED\r\n");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_work_and_exits_zero() {
    let mut server = ChildServer::larder(&[]);
    let mut c = Raw::connect(server.addr).await;
    // A large put in flight: the command is sent, then the signal arrives.
    let body = "x".repeat(60_000);
    c.send(format!("put 0 0 10 {}\r\n{body}\r\n", body.len()).as_bytes())
        .await;
    assert_eq!(c.reply().await, "INSERTED 1\r\n");
    server.signal(libc::SIGTERM);
    assert!(c.closed().await, "connection not closed on shutdown");
    let status = wait_exit(&mut server);
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_restarted_server_takes_the_same_port_at_once() {
    let mut first = ChildServer::larder(&[]);
    let addr = first.addr;
    let mut c = Raw::connect(addr).await;
    assert_eq!(c.cmd("list-tube-used\r\n").await, "USING default\r\n");
    // Leave a connection open so the port has sockets in TIME_WAIT / CLOSE_WAIT.
    first.signal(libc::SIGTERM);
    assert!(wait_exit(&mut first).success());
    let args = vec![
        "serve".to_owned(),
        "--listen".to_owned(),
        addr.to_string(),
        "--data-dir".to_owned(),
        std::env::temp_dir()
            .join(format!("larder-restart-{}", addr.port()))
            .display()
            .to_string(),
    ];
    let second = ChildServer::spawn(crate::support::larder_bin(), &args, addr);
    let mut c = Raw::connect(second.addr).await;
    assert_eq!(c.cmd("list-tube-used\r\n").await, "USING default\r\n");
}

#[tokio::test]
async fn serves_a_unix_socket_given_beanstalkd_style() {
    let dir = std::env::temp_dir().join(format!("larder-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("larder.sock");
    // A stale socket file from an earlier run must not stop the server.
    let _stale = std::os::unix::net::UnixListener::bind(&path).expect("stale socket");
    drop(_stale);
    /// Kills the server if the test fails before it stops it, and shows its log then.
    struct Child(std::process::Child, std::path::PathBuf);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            if std::thread::panicking() {
                let log = std::fs::read_to_string(&self.1).unwrap_or_default();
                eprintln!("---- server log ----\n{log}---- end of log ----");
            }
            let _ = std::fs::remove_file(&self.1);
        }
    }
    let log = crate::support::server_log_path();
    let mut child = Child(
        std::process::Command::new(crate::support::larder_bin())
            .args(["serve", "-l", &format!("unix:{}", path.display()), "-b"])
            .arg(dir.join("data"))
            .env("LARDER_LOG", "debug")
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn"),
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match tokio::net::UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::task::yield_now().await,
            Err(e) => panic!("never listened on {}: {e}", path.display()),
        }
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = stream;
    stream
        .write_all(b"put 0 0 1 2\r\nhi\r\nlist-tube-used\r\n")
        .await
        .expect("write");
    let expect = b"INSERTED 1\r\nUSING default\r\n";
    let mut got = vec![0u8; expect.len()];
    stream.read_exact(&mut got).await.expect("read");
    assert_eq!(got, expect);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert!(child.0.wait().expect("wait").success());
    assert!(!path.exists(), "socket file left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = std::env::temp_dir().join(format!("larder-lock-{}", std::process::id()));
    let port = crate::support::free_port();
    let args = vec![
        "serve".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{port}"),
        "--data-dir".to_owned(),
        dir.display().to_string(),
    ];
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _first = ChildServer::spawn(crate::support::larder_bin(), &args, addr);
    let out = std::process::Command::new(crate::support::larder_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .output()
        .expect("run second server");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another larder process"), "{err}");
    drop(_first);
    let _ = std::fs::remove_dir_all(&dir);
}
