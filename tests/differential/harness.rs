//! Server pairs, a blocking raw client, and the transcript runner that sends every step to
//! both servers and compares what comes back.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{self, ChildServer};

use super::compare;

/// How long to wait for one reply before calling it missing.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a [`Expect::settle`] step waits for silence before it stops reading.
pub const SETTLE_QUIET: Duration = Duration::from_millis(250);

/// What a step should make the servers send back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Replies to read from each server (compared pairwise).
    pub replies: usize,
    /// After those replies, the server closes the connection (`quit`).
    pub close: bool,
    /// After those replies, keep reading until both servers are quiet for
    /// [`SETTLE_QUIET`]: for steps where the number of replies is itself under test.
    pub settle: bool,
}

impl Expect {
    /// Exactly `n` replies.
    pub const fn n(n: usize) -> Expect {
        Expect {
            replies: n,
            close: false,
            settle: false,
        }
    }
}

/// One write on one connection.
#[derive(Clone, Debug)]
pub struct Step {
    /// Connection index; a connection is opened on first use (again after a close).
    pub conn: usize,
    /// The exact bytes written, in one write.
    pub bytes: Vec<u8>,
    /// What comes back.
    pub expect: Expect,
}

impl Step {
    /// A step that gets exactly one reply.
    pub fn one(conn: usize, bytes: impl Into<Vec<u8>>) -> Step {
        Step {
            conn,
            bytes: bytes.into(),
            expect: Expect::n(1),
        }
    }
}

/// Server options both sides get.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// `-z` / `--max-job-size`.
    pub max_job_size: Option<u32>,
}

/// A fresh beanstalkd and a fresh larder with the same options.
pub struct Pair {
    beanstalkd: ChildServer,
    larder: ChildServer,
}

impl Pair {
    /// Starts both servers.
    ///
    /// Ports come from `free_port`, which releases the port before the server binds it.
    /// Starting servers one at a time (across this process's threads) keeps two of ours
    /// from picking the same port; a server that still lost its port and exited is
    /// restarted on another.
    pub fn start(opts: Options) -> Pair {
        static SPAWN: Mutex<()> = Mutex::new(());
        let mut args: Vec<String> = Vec::new();
        if let Some(z) = opts.max_job_size {
            args.push("-z".to_owned());
            args.push(z.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _guard = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..5 {
            let larder_args: Vec<String> = opts
                .max_job_size
                .map(|z| vec!["--max-job-size".to_owned(), z.to_string()])
                .unwrap_or_default();
            let larder_args: Vec<&str> = larder_args.iter().map(String::as_str).collect();
            let mut pair = Pair {
                beanstalkd: ChildServer::beanstalkd(&args),
                larder: ChildServer::larder(&larder_args),
            };
            let alive = |c: &mut std::process::Child| matches!(c.try_wait(), Ok(None));
            if alive(&mut pair.beanstalkd.child) && alive(&mut pair.larder.child) {
                return pair;
            }
        }
        panic!("could not start a beanstalkd and a larder that stay up");
    }
}

/// Whether beanstalkd can be run at all.
pub fn beanstalkd_available() -> bool {
    std::process::Command::new(support::beanstalkd_bin())
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// What one read produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Got {
    /// A whole reply: its line and, if announced, its body with `\r\n`.
    Reply(Vec<u8>),
    /// The server closed the connection; any partial reply bytes.
    Closed(Vec<u8>),
    /// Nothing complete within the timeout; any partial reply bytes.
    Silent(Vec<u8>),
}

/// A blocking raw connection.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The length of the complete reply at the start of the buffer, if there is one.
    fn complete(&self) -> Option<usize> {
        let pos = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&self.buf[..pos + 2]);
        let total = match support::body_len(&line) {
            Some(n) => pos + 2 + n + 2,
            None => pos + 2,
        };
        (self.buf.len() >= total).then_some(total)
    }

    /// Reads one reply, waiting at most `timeout`.
    fn reply(&mut self, timeout: Duration) -> Got {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(n) = self.complete() {
                return Got::Reply(self.buf.drain(..n).collect());
            }
            match self.fill(deadline) {
                Fill::More => {}
                Fill::Eof => return Got::Closed(std::mem::take(&mut self.buf)),
                Fill::Timeout => return Got::Silent(std::mem::take(&mut self.buf)),
            }
        }
    }

    /// Waits for the server to close; anything it sends first is returned instead.
    fn closed(&mut self, timeout: Duration) -> Got {
        self.reply(timeout)
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let now = Instant::now();
        if now >= deadline {
            return Fill::Timeout;
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .expect("set_read_timeout");
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::More
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Fill::Timeout
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Fill::More,
            // A reset after a server-side close counts as a close.
            Err(_) => Fill::Eof,
        }
    }
}

enum Fill {
    More,
    Eof,
    Timeout,
}

/// Escapes bytes for the transcript (printable ASCII as is, the rest as `\r`, `\xNN`).
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let mut s = String::new();
    for &b in bytes.iter().take(MAX) {
        s.extend(std::ascii::escape_default(b).map(char::from));
    }
    if bytes.len() > MAX {
        s.push_str(&format!("…(+{} bytes)", bytes.len() - MAX));
    }
    format!("\"{s}\"")
}

fn show_got(got: &Got) -> String {
    match got {
        Got::Reply(r) => show(r),
        Got::Closed(p) if p.is_empty() => "<connection closed>".to_owned(),
        Got::Closed(p) => format!("<connection closed after partial reply {}>", show(p)),
        Got::Silent(p) if p.is_empty() => "<no reply>".to_owned(),
        Got::Silent(p) => format!("<timed out after partial reply {}>", show(p)),
    }
}

/// Why a run stopped.
#[derive(Debug)]
pub struct Divergence {
    /// Whether this is the harness's fault (beanstalkd did not do what the step expected)
    /// rather than a difference between the servers.
    pub harness: bool,
    /// The transcript up to and including the failing step, with both replies.
    pub report: String,
}

/// Runs `steps` against fresh servers and compares every reply.
pub fn run(opts: Options, steps: &[Step]) -> Result<(), Divergence> {
    let mut pair = Pair::start(opts);
    let result = run_on(&pair, steps);
    result.map_err(|mut d| {
        // A server that died explains any failure best.
        for (name, child) in [
            ("beanstalkd", &mut pair.beanstalkd.child),
            ("larder", &mut pair.larder.child),
        ] {
            if let Ok(Some(status)) = child.try_wait() {
                d.report
                    .push_str(&format!("   !! {name} exited: {status}\n"));
                d.harness &= name == "beanstalkd";
            }
        }
        d
    })
}

/// Runs `steps` against `pair` (whose state should be fresh) and compares every reply.
pub fn run_on(pair: &Pair, steps: &[Step]) -> Result<(), Divergence> {
    let addrs = [pair.beanstalkd.addr, pair.larder.addr];
    let mut conns: Vec<[Option<Conn>; 2]> = Vec::new();
    let mut log = String::new();
    for (index, step) in steps.iter().enumerate() {
        while conns.len() <= step.conn {
            conns.push([None, None]);
        }
        let slot = &mut conns[step.conn];
        if slot[0].is_none() {
            log.push_str(&format!("c{} (new connection)\n", step.conn));
            match (Conn::connect(addrs[0]), Conn::connect(addrs[1])) {
                (Ok(b), Ok(l)) => {
                    slot[0] = Some(b);
                    slot[1] = Some(l);
                }
                (b, l) => {
                    log.push_str(&format!(
                        "   !! step {index}: cannot connect: beanstalkd {:?}, larder {:?}\n",
                        b.err(),
                        l.err()
                    ));
                    return Err(Divergence {
                        harness: false,
                        report: log,
                    });
                }
            }
        }
        log.push_str(&format!("c{} >> {}\n", step.conn, show(&step.bytes)));
        let [Some(bs), Some(ld)] = slot else {
            unreachable!("both connections are open")
        };
        // A failed write (server already closed) shows up as a close when reading.
        let _ = bs.send(&step.bytes);
        let _ = ld.send(&step.bytes);
        let fail = |harness: bool, why: String, b: &Got, l: &Got, log: &mut String| {
            log.push_str(&format!(
                "   !! step {index}: {why}\n   beanstalkd: {}\n   larder:     {}\n",
                show_got(b),
                show_got(l)
            ));
            Err(Divergence {
                harness,
                report: std::mem::take(log),
            })
        };
        let mut pairs: Vec<(Got, Got)> = Vec::new();
        for _ in 0..step.expect.replies {
            let b = bs.reply(READ_TIMEOUT);
            let l = ld.reply(READ_TIMEOUT);
            let done = !matches!(b, Got::Reply(_));
            pairs.push((b, l));
            if done {
                break;
            }
        }
        if step.expect.settle && pairs.iter().all(|(b, _)| matches!(b, Got::Reply(_))) {
            loop {
                let b = bs.reply(SETTLE_QUIET);
                let l = ld.reply(SETTLE_QUIET);
                let quiet = matches!((&b, &l), (Got::Silent(x), Got::Silent(y)) if x.is_empty() && y.is_empty());
                if quiet {
                    break;
                }
                let done = !matches!(b, Got::Reply(_));
                pairs.push((b, l));
                if done {
                    break;
                }
            }
        }
        if step.expect.close && pairs.iter().all(|(b, _)| matches!(b, Got::Reply(_))) {
            let b = bs.closed(READ_TIMEOUT);
            let l = ld.closed(READ_TIMEOUT);
            pairs.push((b, l));
        }
        let mut closed = false;
        for (b, l) in &pairs {
            match (b, l) {
                (Got::Reply(rb), Got::Reply(rl)) => {
                    if let Err(why) = compare::replies(rb, rl) {
                        return fail(false, why, b, l, &mut log);
                    }
                    if rb == rl {
                        log.push_str(&format!("c{} << {}\n", step.conn, show(rb)));
                    } else {
                        log.push_str(&format!(
                            "c{} << beanstalkd {}\n      larder     {}\n",
                            step.conn,
                            show(rb),
                            show(rl)
                        ));
                    }
                }
                (Got::Closed(pb), Got::Closed(pl)) if pb.is_empty() && pl.is_empty() => {
                    log.push_str(&format!("c{} << <connection closed>\n", step.conn));
                    closed = true;
                }
                (Got::Silent(pb), _) if !step.expect.settle => {
                    let why = if pb.is_empty() {
                        "beanstalkd sent no reply where the step expects one (harness problem)"
                    } else {
                        "beanstalkd sent a partial reply (harness problem)"
                    };
                    return fail(true, why.to_owned(), b, l, &mut log);
                }
                (Got::Closed(_), _) if !step.expect.close => {
                    return fail(
                        true,
                        "beanstalkd closed the connection unexpectedly (harness problem)"
                            .to_owned(),
                        b,
                        l,
                        &mut log,
                    );
                }
                _ => return fail(false, "replies differ".to_owned(), b, l, &mut log),
            }
        }
        if closed {
            conns[step.conn] = [None, None];
        }
    }
    for slot in conns.iter_mut() {
        for c in slot.iter_mut().flatten() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }
    Ok(())
}
