//! Helpers shared by the integration tests: servers on ephemeral ports and a raw client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use larder::config::{ListenAddr, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A larder server running inside the test process on an ephemeral port.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// A temporary data directory this value made, removed when it is dropped.
    temp_dir: Option<std::path::PathBuf>,
}

impl InProcess {
    /// Starts a server with default settings.
    pub async fn start() -> InProcess {
        InProcess::with_config(ServerConfig::default()).await
    }

    /// Starts a server with `config` (its listen address is replaced by an ephemeral port,
    /// and the default data directory by a fresh temporary one).
    pub async fn with_config(mut config: ServerConfig) -> InProcess {
        let mut temp_dir = None;
        if config.data_dir == ServerConfig::default().data_dir {
            static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            config.data_dir =
                std::env::temp_dir().join(format!("larder-inproc-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&config.data_dir);
            // Thousands of these run per test pass: a small disk reserve will do.
            config.disk_reserve = 1 << 20;
            temp_dir = Some(config.data_dir.clone());
        }
        let listen = ListenAddr::Tcp("127.0.0.1:0".parse().expect("addr"));
        let listener = larder::server::bind(&listen).expect("bind");
        let addr = listener.tcp_addr().expect("local addr");
        config.listen = ListenAddr::Tcp(addr);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(larder::server::run(listener, config, async move {
            let _ = rx.await;
        }));
        InProcess {
            addr,
            stop: Some(tx),
            task: Some(task),
            temp_dir,
        }
    }

    /// How the server task ended, waiting for it up to [`REPLY_TIMEOUT`] (for reporting a
    /// server that stopped on its own).
    pub async fn outcome(&mut self) -> String {
        match self.task.take() {
            Some(task) => match tokio::time::timeout(REPLY_TIMEOUT, task).await {
                Ok(result) => format!("{result:?}"),
                Err(_) => "still running".to_owned(),
            },
            None => "already collected".to_owned(),
        }
    }

    /// A raw connection to the server.
    pub async fn connect(&self) -> Raw {
        Raw::connect(self.addr).await
    }

    /// Connects and asks for larder's fields in `stats-job` and `stats-tube`.
    pub async fn connect_extended(&self) -> Raw {
        Raw::connect_extended(self.addr).await
    }

    /// Asks the server to shut down and waits until it has.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(dir) = self.temp_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A connection that sends raw bytes and reads raw replies, for transcript tests.
pub struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// How long a test waits for a reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

impl Raw {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and sends `extended-stats`, so `stats-job` and `stats-tube` carry larder's
    /// fields (protocol.md §7.5).
    pub async fn connect_extended(addr: SocketAddr) -> Raw {
        let mut c = Raw::connect(addr).await;
        assert_eq!(c.cmd("extended-stats\r\n").await, "EXTENDED\r\n");
        c
    }

    /// Sends bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads until `n` bytes are buffered or the timeout passes; returns them.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        while self.buf.len() < n {
            self.fill(deadline, &format!("{n} bytes")).await;
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one reply: a line, plus a body if the line announces one.
    pub async fn reply(&mut self) -> String {
        let line = self.line().await;
        let body_len = body_len(&line);
        match body_len {
            Some(n) => {
                let body = self.read_exact(n + 2).await;
                format!("{line}{}", String::from_utf8_lossy(&body))
            }
            None => line,
        }
    }

    /// Reads one `\r\n`-terminated line, including the terminator.
    pub async fn line(&mut self) -> String {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return String::from_utf8_lossy(&line).into_owned();
            }
            self.fill(deadline, "a line").await;
        }
    }

    /// Reads more bytes into the buffer; panics on timeout or end of stream.
    async fn fill(&mut self, deadline: tokio::time::Instant, waiting_for: &str) {
        self.buf.reserve(65536);
        let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "timed out waiting for {waiting_for}; have {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
            .expect("read");
        assert!(
            read > 0,
            "connection closed; have {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Reads one reply, or `None` if the server closes the connection first.
    pub async fn try_reply(&mut self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("timed out waiting for a reply or a close"),
            }
        }
    }

    /// Sends `cmd` and returns the reply.
    pub async fn cmd(&mut self, cmd: &str) -> String {
        self.send(cmd.as_bytes()).await;
        self.reply().await
    }

    /// Whether the server closed the connection (reads EOF within the timeout).
    pub async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        matches!(
            tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Whether nothing arrives within `wait` (for asserting a reserve is still blocked).
    pub async fn silent_for(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Ok(Err(_)) => false,
        }
    }

    /// Half-closes the connection (no more sending); replies can still be read.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown");
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// The body length a reply line announces (`RESERVED id n`, `FOUND id n`, `OK n`).
pub fn body_len(line: &str) -> Option<usize> {
    let words: Vec<&str> = line.trim_end().split(' ').collect();
    match words.as_slice() {
        ["RESERVED" | "FOUND", _, n] | ["OK", n] => n.parse().ok(),
        _ => None,
    }
}

/// Path of the built `larder` binary.
pub fn larder_bin() -> &'static str {
    env!("CARGO_BIN_EXE_larder")
}

/// A free TCP port on 127.0.0.1 (bound then released), never one handed out before in
/// this test process. Two tests given the same port would race for it, and the loser's
/// readiness probe (a `stats`) would reach the winner's server and count in its
/// statistics, which the differential test compares with beanstalkd's.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    for _ in 0..10_000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
    panic!("no port left that was not handed out before");
}

/// A server running as a child process, killed when dropped (its data directory, if it
/// has one of ours, is removed then).
pub struct ChildServer {
    /// The child.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    data_dir: Option<std::path::PathBuf>,
    /// Where the child's standard error goes; printed if the test fails, then removed.
    log: std::path::PathBuf,
}

impl ChildServer {
    /// Spawns `program args…` and waits until `addr` accepts connections.
    pub fn spawn(program: &str, args: &[String], addr: SocketAddr) -> ChildServer {
        let mut server = ChildServer::start(program, args, addr);
        server.wait_listening();
        server
    }

    /// Spawns `program args…` without waiting, its standard error captured in a log file
    /// (see [`ChildServer::log`]).
    fn start(program: &str, args: &[String], addr: SocketAddr) -> ChildServer {
        ChildServer::start_with_env(program, args, addr, &[])
    }

    /// [`ChildServer::start`] with extra environment variables for the child.
    fn start_with_env(
        program: &str,
        args: &[String],
        addr: SocketAddr,
        env: &[(&str, &str)],
    ) -> ChildServer {
        let log = server_log_path();
        let stderr = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        ChildServer {
            child,
            addr,
            data_dir: None,
            log,
        }
    }

    /// Starts the larder binary with `args` (after `serve`), its client port at `addr`,
    /// without waiting for anything: for cluster nodes, whose readiness is a log line and
    /// whose `stats` a follower forwards to the leader. The data directory is the caller's.
    pub fn larder_unchecked(args: &[String], addr: SocketAddr) -> ChildServer {
        let mut all = vec!["serve".to_owned()];
        all.extend(args.iter().cloned());
        ChildServer::start(larder_bin(), &all, addr)
    }

    /// What the child has written to its standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the larder binary on a free port with extra arguments and a fresh data
    /// directory.
    pub fn larder(extra: &[&str]) -> ChildServer {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("larder-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = ChildServer::larder_in(&dir, extra);
        server.data_dir = Some(dir);
        server
    }

    /// Starts the larder binary on a free port with `data_dir` (kept when dropped, so a
    /// test can restart a server on it).
    pub fn larder_in(data_dir: &std::path::Path, extra: &[&str]) -> ChildServer {
        ChildServer::on_free_port(larder_bin(), |addr| {
            let mut args = vec![
                "serve".to_owned(),
                "--listen".to_owned(),
                addr.to_string(),
                "--data-dir".to_owned(),
                data_dir.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    /// Starts the larder binary on a free port with extra arguments, a fresh data directory
    /// and extra environment variables.
    pub fn larder_env(extra: &[&str], env: &[(&str, &str)]) -> ChildServer {
        ChildServer::larder_until(
            "larder-test-env",
            extra,
            env,
            ChildServer::try_wait_listening,
        )
    }

    /// Starts the larder binary on a free port with extra arguments and a fresh data
    /// directory, and waits for its "listening" log line instead of asking `stats` (for
    /// servers that speak only TLS or require authentication).
    pub fn larder_logged(extra: &[&str]) -> ChildServer {
        ChildServer::larder_until("larder-logged", extra, &[], |s| s.wait_for_log("listening"))
    }

    /// Starts larder on a free port with a fresh data directory named after `prefix`, until
    /// `ready` says the child (not another process) serves there.
    fn larder_until(
        prefix: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        ready: impl Fn(&mut ChildServer) -> bool,
    ) -> ChildServer {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        for _ in 0..20 {
            let _ = std::fs::remove_dir_all(&dir);
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut args = vec![
                "serve".to_owned(),
                "--listen".to_owned(),
                addr.to_string(),
                "--data-dir".to_owned(),
                dir.display().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let mut server = ChildServer::start_with_env(larder_bin(), &args, addr, env);
            server.data_dir = Some(dir.clone());
            if ready(&mut server) {
                return server;
            }
        }
        panic!("larder never managed to listen");
    }

    /// Waits until the child's log holds `text`; false if it exits first or takes more
    /// than [`REPLY_TIMEOUT`].
    pub fn wait_for_log(&mut self, text: &str) -> bool {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            if self.log().contains(text) {
                return true;
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the server with SIGKILL and waits for it to die.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and returns how it exited.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("wait for the server")
    }

    /// Spawns `program` with the arguments `args(addr)` for a free port, trying another port
    /// if the chosen one was taken meanwhile (the child exits without listening).
    pub fn on_free_port(program: &str, args: impl Fn(SocketAddr) -> Vec<String>) -> ChildServer {
        for _ in 0..20 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let mut server = ChildServer::start(program, &args(addr), addr);
            if server.try_wait_listening() {
                return server;
            }
        }
        panic!("{program} never managed to listen");
    }

    /// Starts beanstalkd (in-memory) on a free port. Panics when it is not installed.
    pub fn beanstalkd(extra: &[&str]) -> ChildServer {
        ChildServer::on_free_port(beanstalkd_bin(), |addr| {
            let mut args = vec![
                "-l".to_owned(),
                "127.0.0.1".to_owned(),
                "-p".to_owned(),
                addr.port().to_string(),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            args
        })
    }

    fn wait_listening(&mut self) {
        assert!(
            self.try_wait_listening(),
            "server at {} never listened",
            self.addr
        );
    }

    /// Waits until the child accepts connections on its address; false if it exits first,
    /// or if the server answering there is another process (the port was taken between
    /// [`free_port`] and the child's bind: this child then fails to bind and exits, while
    /// the connection reaches someone else's server).
    fn try_wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(stream) = std::net::TcpStream::connect(self.addr) {
                return server_pid(stream) == Some(self.child.id());
            }
            if matches!(self.child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends a signal to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- log of the server at {} (pid {}) ----\n{}---- end of log ----",
                self.addr,
                self.child.id(),
                self.log()
            );
        }
        let _ = std::fs::remove_file(&self.log);
        if let Some(dir) = &self.data_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A fresh path for a child server's standard error.
pub fn server_log_path() -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("larder-server-log-{}-{n}.txt", std::process::id()))
}

/// Sends `quit` and reads until the server closes. Both servers forget a connection (its
/// tube use and watches) before they close it on `quit`, so once the end of the stream is
/// read the probe no longer shows in `stats-tube`'s `current-using` or `current-watching`;
/// merely dropping the socket would leave the server to notice the close at some later time.
fn quit_and_wait_for_close(stream: &mut std::net::TcpStream) {
    use std::io::{Read, Write};
    if stream.write_all(b"quit\r\n").is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// The `pid` a beanstalkd-protocol server reports in `stats` over `stream`; the connection
/// is closed by the server before this returns.
fn server_pid(mut stream: std::net::TcpStream) -> Option<u32> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).ok()?;
    stream.write_all(b"stats\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // `pid: N` is a whole line of the YAML body once a newline follows it.
        let text = String::from_utf8_lossy(&got);
        if let Some(at) = text.find("\npid: ") {
            let rest = &text[at + 6..];
            if let Some(end) = rest.find('\n') {
                let pid = rest[..end].trim().parse().ok();
                quit_and_wait_for_close(&mut stream);
                return pid;
            }
        }
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
}

/// The beanstalkd binary: `$BEANSTALKD` or `beanstalkd` on the PATH.
pub fn beanstalkd_bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("BEANSTALKD").unwrap_or_else(|_| "beanstalkd".to_owned()))
}

/// A 1 MiB tmpfs mounted for the life of the value (needs root, as CI has).
pub struct SmallDisk(pub std::path::PathBuf);

impl SmallDisk {
    /// Mounts a fresh tmpfs in a temporary directory named after `name`.
    pub fn mount(name: &str) -> SmallDisk {
        let dir = std::env::temp_dir().join(format!("larder-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk(dir)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
