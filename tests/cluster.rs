//! Cluster mode against real processes: three `larder serve --node-id …` on loopback, every
//! inter-node link through a fault-injecting proxy in this process, clients that record
//! every confirmation they saw, and a checker run against the surviving nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::{free_port, ChildServer};

/// How long a client waits for one reply before it gives up on the connection.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// How long the tests wait for a leader, a recovery, or progress.
const PATIENCE: Duration = Duration::from_secs(30);

/// A proxy on one directed link: `from` dials it to reach `to`. Blocking it closes every
/// connection through it and refuses new ones until healed.
struct Link {
    blocked: Arc<AtomicBool>,
    /// Where it forwards to (moved if the node had to take another port).
    target: Arc<Mutex<SocketAddr>>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    addr: SocketAddr,
}

impl Link {
    fn start(target: SocketAddr) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link proxy");
        let addr = listener.local_addr().expect("proxy address");
        let blocked = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let (b, o, t) = (blocked.clone(), open.clone(), target.clone());
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                if b.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let target = *t.lock().unwrap_or_else(|e| e.into_inner());
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let pairs = [
                    (client.try_clone(), upstream.try_clone()),
                    (upstream.try_clone(), client.try_clone()),
                ];
                {
                    let mut open = o.lock().unwrap_or_else(|e| e.into_inner());
                    open.extend(client.try_clone());
                    open.extend(upstream.try_clone());
                }
                for pair in pairs {
                    if let (Ok(mut from), Ok(mut to)) = pair {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                }
            }
        });
        Link {
            blocked,
            target,
            open,
            addr,
        }
    }

    fn block(&self) {
        self.blocked.store(true, Ordering::SeqCst);
        for s in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn heal(&self) {
        self.blocked.store(false, Ordering::SeqCst);
    }
}

struct Node {
    id: u64,
    client: SocketAddr,
    cluster: SocketAddr,
    metrics: SocketAddr,
    dir: PathBuf,
    server: Option<ChildServer>,
}

/// Three nodes and a proxy on each of the six directed links.
struct Cluster {
    nodes: Vec<Node>,
    /// (from, to) → the proxy `from` dials to reach `to`.
    links: BTreeMap<(u64, u64), Link>,
    /// More arguments for some nodes.
    extra: BTreeMap<u64, Vec<String>>,
    /// With mutual TLS among members: the directory of `ca.pem` and each member's
    /// `n{id}.pem` and `n{id}.key`.
    tls: Option<PathBuf>,
}

fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port())
        .parse()
        .expect("address")
}

impl Cluster {
    fn start(name: &str) -> Cluster {
        Cluster::start_full(name, 3, BTreeMap::new(), false)
    }

    /// Starts three nodes, giving node `id` the arguments `extra[id]` too.
    fn start_with(name: &str, extra: BTreeMap<u64, Vec<String>>) -> Cluster {
        Cluster::start_full(name, 3, extra, false)
    }

    /// Three nodes with mutual TLS on their cluster ports.
    fn start_tls(name: &str) -> Cluster {
        Cluster::start_full(name, 3, BTreeMap::new(), true)
    }

    /// `size` nodes, node `id` with the arguments `extra[id]` too, and with mutual TLS on
    /// their cluster ports if `tls`: a CA made here, and a certificate for 127.0.0.1 (the
    /// address every member dials, proxy or not) per member.
    fn start_full(name: &str, size: u64, extra: BTreeMap<u64, Vec<String>>, tls: bool) -> Cluster {
        let base =
            std::env::temp_dir().join(format!("larder-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let nodes: Vec<Node> = (1..=size)
            .map(|id| Node {
                id,
                client: addr(),
                cluster: addr(),
                metrics: addr(),
                dir: base.join(format!("n{id}")),
                server: None,
            })
            .collect();
        // The proxies hold their ports before the nodes' ports are chosen, so none of
        // those can be a proxy's.
        std::fs::create_dir_all(&base).expect("cluster directory");
        std::fs::write(base.join("token"), "cluster secret\n").expect("token file");
        let mut links = BTreeMap::new();
        for from in &nodes {
            for to in &nodes {
                if from.id != to.id {
                    links.insert((from.id, to.id), Link::start(to.cluster));
                }
            }
        }
        let mut nodes = nodes;
        for node in &mut nodes {
            node.client = addr();
            node.cluster = addr();
            node.metrics = addr();
        }
        for ((_, to), link) in &links {
            *link.target.lock().unwrap_or_else(|e| e.into_inner()) =
                nodes[(to - 1) as usize].cluster;
        }
        let tls = tls.then(|| {
            let dir = base.join("tls");
            std::fs::create_dir_all(&dir).expect("certificate directory");
            let ca = crate::security::Ca::new("cluster CA");
            std::fs::write(dir.join("ca.pem"), ca.pem()).expect("CA file");
            for node in &nodes {
                let (cert, key) = member_certificate(&ca);
                std::fs::write(dir.join(format!("n{}.pem", node.id)), cert).expect("cert file");
                std::fs::write(dir.join(format!("n{}.key", node.id)), key).expect("key file");
            }
            dir
        });
        let mut cluster = Cluster {
            nodes,
            links,
            extra,
            tls,
        };
        for id in 1..=size {
            cluster.launch(id);
        }
        cluster
    }

    fn node(&self, id: u64) -> &Node {
        &self.nodes[(id - 1) as usize]
    }

    /// Starts node `id` on its data directory (kept across restarts). If another process
    /// took one of its ports meanwhile, it moves to new ones (its peers reach it through
    /// the proxies, which follow it).
    fn launch(&mut self, id: u64) {
        for _ in 0..10 {
            match self.try_launch(id) {
                Ok(()) => return,
                Err(log) if log.contains("Address already in use") => {
                    let node = &mut self.nodes[(id - 1) as usize];
                    node.client = addr();
                    node.cluster = addr();
                    node.metrics = addr();
                    let cluster = node.cluster;
                    for ((_, to), link) in &self.links {
                        if *to == id {
                            *link.target.lock().unwrap_or_else(|e| e.into_inner()) = cluster;
                        }
                    }
                }
                Err(log) => panic!("node {id} did not start:\n{log}"),
            }
        }
        panic!("node {id} never found free ports");
    }

    fn try_launch(&mut self, id: u64) -> Result<(), String> {
        let me = self.node(id);
        let mut args = vec![
            "--listen".to_owned(),
            me.client.to_string(),
            "--data-dir".to_owned(),
            me.dir.display().to_string(),
            "--node-id".to_owned(),
            id.to_string(),
            "--cluster-listen".to_owned(),
            me.cluster.to_string(),
            // Small segments: entries cross segment boundaries often.
            "--wal-segment-size".to_owned(),
            "65536".to_owned(),
            "--cluster-token-file".to_owned(),
            me.dir
                .parent()
                .expect("base")
                .join("token")
                .display()
                .to_string(),
            "--metrics-listen".to_owned(),
            me.metrics.to_string(),
        ];
        if let Some(dir) = &self.tls {
            for (flag, file) in [
                ("--cluster-tls-cert", format!("n{id}.pem")),
                ("--cluster-tls-key", format!("n{id}.key")),
                ("--cluster-tls-ca", "ca.pem".to_owned()),
            ] {
                args.push(flag.to_owned());
                args.push(dir.join(file).display().to_string());
            }
        }
        for other in &self.nodes {
            if other.id != id {
                args.push("--peer".to_owned());
                args.push(format!("{}={}", other.id, other.cluster));
                // Nodes added later are reached directly (no proxy on their links).
                if let Some(link) = self.links.get(&(id, other.id)) {
                    args.push("--peer-route".to_owned());
                    args.push(format!("{}={}", other.id, link.addr));
                }
            }
        }
        args.extend(self.extra.get(&id).cloned().unwrap_or_default());
        let mut server = ChildServer::larder_unchecked(&args, me.client);
        if !server.wait_for_log("cluster node started") {
            return Err(server.log());
        }
        self.nodes[(id - 1) as usize].server = Some(server);
        Ok(())
    }

    /// Breaks every connection between members (they are made again at once).
    fn reconnect_all(&self) {
        for link in self.links.values() {
            link.block();
        }
        for link in self.links.values() {
            link.heal();
        }
    }

    /// Sends SIGHUP to node `id`.
    fn sighup(&self, id: u64) {
        let pid = self.node(id).server.as_ref().expect("running").child.id();
        let status = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP {pid}");
    }

    fn kill9(&mut self, id: u64) {
        if let Some(server) = self.nodes[(id - 1) as usize].server.take() {
            server.kill9();
        }
    }

    /// The node that most recently opened as leader and is still running, once one has.
    fn leader(&mut self) -> u64 {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.supervise();
            let mut best: Option<(u64, u64)> = None;
            for node in &mut self.nodes {
                let Some(server) = &mut node.server else {
                    continue;
                };
                if matches!(server.child.try_wait(), Ok(Some(_))) {
                    continue;
                }
                // The node's last word on leadership: opened (with its term) or lost.
                let log = server.log();
                let last = log.lines().rfind(|l| {
                    l.contains("leader: serving commands") || l.contains("lost leadership")
                });
                let term = last
                    .filter(|line| line.contains("leader: serving commands"))
                    .and_then(|line| line.split("term=").nth(1))
                    .and_then(|t| t.split_whitespace().next())
                    .and_then(|t| t.parse::<u64>().ok());
                if let Some(term) = term {
                    if best.is_none_or(|(t, _)| term > t) {
                        best = Some((term, node.id));
                    }
                }
            }
            if let Some((_, id)) = best {
                // Only a leader whose term no running node has gone past.
                if self.nodes.iter().all(|n| {
                    n.server.as_ref().is_none_or(|s| {
                        !s.log()
                            .contains(&format!("term={}", best.map_or(0, |b| b.0) + 1))
                    })
                }) {
                    return id;
                }
            }
            assert!(Instant::now() < deadline, "no leader within {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test if a node stopped by itself (a node that loses leadership rebuilds
    /// its state and goes on as a follower; nothing should make it exit).
    fn supervise(&mut self) {
        for node in &mut self.nodes {
            if let Some(server) = &mut node.server {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!("node {} stopped ({status}):\n{}", node.id, server.log());
                }
            }
        }
    }

    fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.server.is_some())
            .map(|n| n.id)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.server.take());
        }
        if let Some(first) = self.nodes.first() {
            if let Some(base) = first.dir.parent() {
                let _ = std::fs::remove_dir_all(base);
            }
        }
    }
}

/// A cluster member's certificate for 127.0.0.1 signed by `ca`, and its key, as PEM: for
/// serving and for dialling alike.
fn member_certificate(ca: &crate::security::Ca) -> (String, String) {
    use rcgen::ExtendedKeyUsagePurpose as Usage;
    ca.issue_for(&["127.0.0.1"], vec![Usage::ServerAuth, Usage::ClientAuth])
}

/// A blocking client connection with a reply timeout.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(REPLY_WAIT))?;
        s.set_nodelay(true)?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_owned())
    }

    fn cmd(&mut self, cmd: &str) -> std::io::Result<String> {
        self.w.write_all(cmd.as_bytes())?;
        self.line()
    }

    /// Reads the body a `RESERVED`/`FOUND` line announces.
    fn body(&mut self, line: &str) -> std::io::Result<Vec<u8>> {
        let len: usize = line
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no length in {line}")))?;
        let mut body = vec![0; len + 2];
        self.r.read_exact(&mut body)?;
        body.truncate(len);
        Ok(body)
    }
}

/// A client's connection to one of the nodes, moving to the next node whenever the
/// current one fails it (after a short back-off, so a node that is down is not hammered).
struct Roaming {
    addrs: Vec<SocketAddr>,
    at: usize,
    conn: Option<Conn>,
}

impl Roaming {
    fn new(addrs: Vec<SocketAddr>, first: usize) -> Roaming {
        Roaming {
            addrs,
            at: first,
            conn: None,
        }
    }

    /// The connection, opened if needed; `None` (after moving on) if it cannot be.
    fn conn(&mut self) -> Option<&mut Conn> {
        if self.conn.is_none() {
            match Conn::open(self.addrs[self.at % self.addrs.len()]) {
                Ok(c) => self.conn = Some(c),
                Err(_) => {
                    self.next_node();
                    return None;
                }
            }
        }
        self.conn.as_mut()
    }

    /// Drops the connection and moves to the next node.
    fn next_node(&mut self) {
        self.conn = None;
        self.at += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Everything clients were told.
#[derive(Default)]
struct Seen {
    /// Confirmed puts: id → body.
    inserted: BTreeMap<u64, String>,
    /// Ids confirmed twice (must stay empty).
    twice: Vec<u64>,
    /// Confirmed deletes.
    deleted: BTreeSet<u64>,
    /// Deletes sent, confirmed or not (a job may be gone without its `DELETED` arriving).
    delete_sent: BTreeSet<u64>,
    /// Bodies handed out by reserve: (id, body).
    reserved: Vec<(u64, String)>,
}

/// Producers and a worker that move between nodes whenever their connection fails.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    confirmed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>, producers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let confirmed = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for p in 0..producers {
            let (stop, seen, confirmed, addrs) =
                (stop.clone(), seen.clone(), confirmed.clone(), addrs.clone());
            threads.push(std::thread::spawn(move || {
                let mut roam = Roaming::new(addrs, p);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let Some(c) = roam.conn() else { continue };
                    n += 1;
                    let body = format!("p{p}-{n}-{}", "x".repeat((n % 200) as usize));
                    let reply = c.cmd(&format!("put 0 0 60 {}\r\n{body}\r\n", body.len()));
                    match reply.as_deref().map(|r| r.split_once(' ')) {
                        Ok(Some(("INSERTED", id))) => {
                            let id: u64 = id.parse().expect("job id");
                            let mut s = seen.lock().unwrap_or_else(|e| e.into_inner());
                            if s.inserted.insert(id, body).is_some() {
                                s.twice.push(id);
                            }
                            confirmed.fetch_add(1, Ordering::SeqCst);
                        }
                        // Closed, timed out or NO_QUORUM: the outcome is unknown.
                        _ => roam.next_node(),
                    }
                }
            }));
        }
        {
            let (stop, seen, addrs) = (stop.clone(), seen.clone(), addrs.clone());
            threads.push(std::thread::spawn(move || {
                let mut roam = Roaming::new(addrs, 0);
                while !stop.load(Ordering::SeqCst) {
                    let Some(c) = roam.conn() else { continue };
                    let step = (|| -> std::io::Result<()> {
                        let line = c.cmd("reserve-with-timeout 1\r\n")?;
                        if line == "TIMED_OUT" {
                            return Ok(());
                        }
                        let id: u64 = line
                            .strip_prefix("RESERVED ")
                            .and_then(|r| r.split(' ').next())
                            .and_then(|i| i.parse().ok())
                            .ok_or_else(|| std::io::Error::other(line.clone()))?;
                        let body = String::from_utf8_lossy(&c.body(&line)?).into_owned();
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .reserved
                            .push((id, body));
                        seen.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .delete_sent
                            .insert(id);
                        if c.cmd(&format!("delete {id}\r\n"))? == "DELETED" {
                            seen.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .deleted
                                .insert(id);
                        }
                        Ok(())
                    })();
                    if step.is_err() {
                        roam.next_node();
                    }
                }
            }));
        }
        Load {
            stop,
            seen,
            confirmed,
            threads,
        }
    }

    /// Waits until `more` further puts are confirmed (and checks no node stopped).
    fn progress(&self, cluster: &mut Cluster, more: u64, what: &str) {
        let target = self.confirmed.load(Ordering::SeqCst) + more;
        let deadline = Instant::now() + PATIENCE;
        while self.confirmed.load(Ordering::SeqCst) < target {
            cluster.supervise();
            assert!(
                Instant::now() < deadline,
                "no {more} confirmations within {PATIENCE:?} {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("load thread");
        }
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
            .unwrap_or_else(|_| panic!("load still shared"))
    }
}

/// Checks what clients saw against what node `at` (any running node: followers forward)
/// holds: every confirmed put is there with its body unless its delete was sent, no
/// confirmed delete is back, no id was confirmed twice, every reserved body is its put's.
fn check(seen: &Seen, at: SocketAddr) {
    assert!(
        seen.twice.is_empty(),
        "ids confirmed twice: {:?}",
        seen.twice
    );
    for (id, body) in &seen.reserved {
        if let Some(put) = seen.inserted.get(id) {
            assert_eq!(body, put, "job {id} was reserved with another body");
        }
    }
    let mut c = Conn::open(at).expect("connect to check");
    let mut present = 0;
    for (id, body) in &seen.inserted {
        let line = c.cmd(&format!("peek {id}\r\n")).expect("peek");
        if seen.deleted.contains(id) {
            assert_eq!(line, "NOT_FOUND", "job {id}'s confirmed delete was undone");
        } else if seen.delete_sent.contains(id) && line == "NOT_FOUND" {
            // Deleted, though the reply was lost with its connection.
        } else {
            assert!(
                line.starts_with(&format!("FOUND {id} ")),
                "confirmed job {id}: {line}"
            );
            let got = c.body(&line).expect("body");
            assert_eq!(String::from_utf8_lossy(&got), *body, "job {id}'s body");
            present += 1;
        }
    }
    for id in &seen.deleted {
        if !seen.inserted.contains_key(id) {
            let line = c.cmd(&format!("peek {id}\r\n")).expect("peek");
            assert_eq!(line, "NOT_FOUND", "job {id}'s confirmed delete was undone");
        }
    }
    // The counters agree with the jobs there are: every id up to a little past the last
    // one given out is peeked (puts whose reply was lost are there too) and the jobs found
    // are what `stats` counts.
    let last = seen
        .inserted
        .keys()
        .chain(&seen.deleted)
        .chain(&seen.delete_sent)
        .max()
        .copied()
        .unwrap_or(0);
    let mut found = 0u64;
    for id in 1..=last + 100 {
        let line = c.cmd(&format!("peek {id}\r\n")).expect("peek");
        if line.starts_with("FOUND ") {
            c.body(&line).expect("body");
            found += 1;
        }
    }
    let line = c.cmd("stats\r\n").expect("stats");
    let stats = String::from_utf8(c.body(&line).expect("stats")).expect("utf-8");
    let count = |key: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in stats:\n{stats}"))
    };
    let counted = ["ready", "reserved", "delayed", "buried"]
        .iter()
        .map(|state| count(&format!("current-jobs-{state}")))
        .sum::<u64>();
    assert_eq!(
        counted, found,
        "stats counts {counted} jobs, {found} are there:\n{stats}"
    );
    eprintln!(
        "checked: {} confirmed puts ({present} present, {found} jobs in all, as stats counts), {} confirmed deletes",
        seen.inserted.len(),
        seen.deleted.len()
    );
}

#[test]
fn confirmed_work_survives_killing_the_leader_again_and_again() {
    let mut cluster = Cluster::start("failover");
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.client).collect();
    cluster.leader();
    let load = Load::start(addrs, 2);
    load.progress(&mut cluster, 50, "before any fault");
    for round in 1..=3 {
        let leader = cluster.leader();
        cluster.kill9(leader);
        load.progress(
            &mut cluster,
            30,
            &format!("after killing leader {leader} (round {round})"),
        );
        cluster.launch(leader);
        load.progress(&mut cluster, 10, &format!("after restarting node {leader}"));
    }
    // A follower killed and brought back.
    let leader = cluster.leader();
    let follower = cluster
        .running()
        .into_iter()
        .find(|&id| id != leader)
        .expect("follower");
    cluster.kill9(follower);
    load.progress(&mut cluster, 20, "with a follower down");
    cluster.launch(follower);
    let seen = load.finish();
    assert!(
        seen.inserted.len() >= 150,
        "too little load: {}",
        seen.inserted.len()
    );
    let leader = cluster.leader();
    check(&seen, cluster.node(leader).client);
    // The two others hold it all too: without the leader, one of them leads on what
    // it has.
    cluster.kill9(leader);
    let next = cluster.leader();
    assert_ne!(next, leader);
    check(&seen, cluster.node(next).client);
    // The stopped node's log reads back whole offline.
    let out = std::process::Command::new(crate::support::larder_bin())
        .args(["wal", "verify", "--data-dir"])
        .arg(&cluster.node(leader).dir)
        .output()
        .expect("larder wal verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("status:          ok"), "{text}");
    let entries: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("raft entries:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no raft entries line: {text}"));
    assert!(entries > 10, "{text}");
}

#[test]
fn a_partitioned_leader_confirms_nothing_steps_down_and_rejoins() {
    let mut cluster = Cluster::start("partition");
    let leader = cluster.leader();
    let mut on_leader = Conn::open(cluster.node(leader).client).expect("connect");
    assert!(on_leader
        .cmd("put 0 0 60 6\r\nbefore\r\n")
        .expect("put")
        .starts_with("INSERTED "));
    for ((from, to), link) in &cluster.links {
        if *from == leader || *to == leader {
            link.block();
        }
    }
    // The cut-off leader cannot commit: this put is never confirmed. Once no quorum has
    // answered for an election timeout it stops leading, rebuilds its state from its
    // committed log and closes its clients.
    let started = Instant::now();
    let reply = on_leader.cmd("put 0 0 60 6\r\nduring\r\n");
    assert!(
        !matches!(&reply, Ok(r) if r.starts_with("INSERTED")),
        "a partitioned leader confirmed a put: {reply:?}"
    );
    assert!(
        started.elapsed() < PATIENCE,
        "the partitioned leader held its client for {:?}",
        started.elapsed()
    );
    let log = cluster
        .node(leader)
        .server
        .as_ref()
        .map(|s| s.log())
        .unwrap_or_default();
    assert!(log.contains("lost leadership: state rebuilt"), "{log}");
    // The majority elects a new leader and goes on.
    let next = cluster.leader();
    assert_ne!(next, leader);
    let mut c = Conn::open(cluster.node(next).client).expect("connect");
    assert!(c
        .cmd("put 0 0 60 5\r\nafter\r\n")
        .expect("put")
        .starts_with("INSERTED "));
    // Healed, the old leader follows and forwards clients to the new one.
    for link in cluster.links.values() {
        link.heal();
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut c = Conn::open(cluster.node(leader).client).expect("connect");
        let line = c.cmd("peek-ready\r\n").expect("peek-ready");
        if line.starts_with("FOUND") {
            let body = c.body(&line).expect("body");
            assert_eq!(body, b"before");
            break;
        }
        assert_eq!(
            line, "NO_QUORUM",
            "unexpected reply from the rejoining node"
        );
        assert!(Instant::now() < deadline, "the old leader never rejoined");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ready for traffic again: it knows the leader (and forwards to it).
    let (code, body) = http_get(cluster.node(leader).metrics, "/readyz");
    assert_eq!(code, 200, "{body}");
    let mut c = Conn::open(cluster.node(leader).client).expect("connect");
    let line = c.cmd("stats-tube default\r\n").expect("stats-tube");
    assert!(line.starts_with("OK "), "{line}");
    let yaml = String::from_utf8_lossy(&c.body(&line).expect("yaml")).into_owned();
    // "before" and "after" are there; "during" never was.
    assert!(yaml.contains("current-jobs-ready: 2\n"), "{yaml}");
    // The operator's view, asked of the old leader (a follower now): the leader answers.
    let out = std::process::Command::new(crate::support::larder_bin())
        .args(["cluster", "status", "--addr"])
        .arg(cluster.node(leader).client.to_string())
        .output()
        .expect("larder cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with(&format!("leader {next}, term ")), "{text}");
    assert!(text.contains("members 1,2,3; answered by node"), "{text}");
    for id in 1..=3 {
        let role = if id == next { "leader" } else { "follower" };
        assert!(
            text.lines().any(|l| l
                .split_whitespace()
                .take(2)
                .eq([id.to_string().as_str(), role])),
            "node {id} as {role}: {text}"
        );
    }
}

/// `GET path` on an HTTP listener: (status code, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics listener");
    s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// One member of a three-node cluster whose peers never start: it never has a leader.
fn lonely_node(dir: &std::path::Path, extra: &[&str]) -> ChildServer {
    lonely_node_at(dir, extra, addr())
}

fn lonely_node_at(dir: &std::path::Path, extra: &[&str], cluster: SocketAddr) -> ChildServer {
    let client = addr();
    let mut args: Vec<String> = [
        "--listen",
        &client.to_string(),
        "--data-dir",
        &dir.display().to_string(),
        "--node-id",
        "1",
        "--cluster-listen",
        &cluster.to_string(),
        "--peer",
        &format!("2={}", addr()),
        "--peer",
        &format!("3={}", addr()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    ChildServer::larder_unchecked(&args, client)
}

#[test]
fn without_a_leader_every_command_gets_no_quorum_at_once() {
    let dir = std::env::temp_dir().join(format!("larder-cluster-alone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let metrics = addr();
    let mut node = lonely_node(&dir, &["--metrics-listen", &metrics.to_string()]);
    assert!(node.wait_for_log("cluster node started"), "{}", node.log());
    // Not ready for traffic: no leader.
    let (code, body) = http_get(metrics, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"no-leader\""), "{body}");
    let mut c = Conn::open(node.addr).expect("connect");
    // A put's body is read (the next command is in step), nothing is stored.
    assert_eq!(
        c.cmd("put 0 0 60 5\r\nhello\r\n").expect("put"),
        "NO_QUORUM"
    );
    assert_eq!(c.cmd("stats\r\n").expect("stats"), "NO_QUORUM");
    assert_eq!(c.cmd("peek 1\r\n").expect("peek"), "NO_QUORUM");
    assert_eq!(
        c.cmd("reserve-with-timeout 5\r\n").expect("reserve"),
        "NO_QUORUM"
    );
    // A malformed command gets its own error; quit still closes.
    assert_eq!(c.cmd("put x\r\n").expect("bad put"), "BAD_FORMAT");
    c.w.write_all(b"quit\r\n").expect("quit");
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).expect("closed");
    assert!(rest.is_empty(), "{rest:?}");
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cluster_node_refuses_a_single_node_data_directory_and_bad_settings() {
    let dir = std::env::temp_dir().join(format!("larder-cluster-single-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    {
        let single = ChildServer::larder_in(&dir, &[]);
        let mut c = Conn::open(single.addr).expect("connect");
        assert!(c
            .cmd("put 0 0 60 1\r\na\r\n")
            .expect("put")
            .starts_with("INSERTED"));
        assert_eq!(single.terminate().code(), Some(0));
    }
    let mut node = lonely_node(&dir, &[]);
    let status = node.child.wait().expect("exit");
    assert_eq!(status.code(), Some(1), "{}", node.log());
    assert!(
        node.log()
            .contains("this data directory belongs to a single-node server"),
        "{}",
        node.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
    for (extra, says) in [
        (
            &["--fsync", "never"][..],
            "cluster mode needs --fsync always",
        ),
        (
            &["--peer", "1=127.0.0.1:1"][..],
            "names this node's own id 1",
        ),
        (
            &["--peer-route", "9=127.0.0.1:1"][..],
            "--peer-route names 9",
        ),
        (
            &["--cluster-tls-cert", "n1.pem"][..],
            "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together: --cluster-tls-key and --cluster-tls-ca missing",
        ),
        (
            &[
                "--cluster-tls-cert",
                "/nonexistent/n1.pem",
                "--cluster-tls-key",
                "/nonexistent/n1.key",
                "--cluster-tls-ca",
                "/nonexistent/ca.pem",
            ][..],
            "reading --cluster-tls-cert /nonexistent/n1.pem",
        ),
    ] {
        let mut node = lonely_node(&dir, extra);
        let status = node.child.wait().expect("exit");
        assert_ne!(status.code(), Some(0));
        assert!(node.log().contains(says), "{says}: {}", node.log());
    }
    let _ = std::fs::remove_dir_all(&dir);
    // A key file that holds no key, and the flags without cluster mode.
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = crate::security::Ca::new("cluster CA");
    let (cert, _) = member_certificate(&ca);
    let (cert_file, ca_file) = (dir.join("n1.pem"), dir.join("ca.pem"));
    std::fs::write(&cert_file, cert).expect("cert file");
    std::fs::write(&ca_file, ca.pem()).expect("CA file");
    let flags = |key: &std::path::Path| {
        [
            "--cluster-tls-cert".to_owned(),
            cert_file.display().to_string(),
            "--cluster-tls-key".to_owned(),
            key.display().to_string(),
            "--cluster-tls-ca".to_owned(),
            ca_file.display().to_string(),
        ]
    };
    let no_key = flags(&cert_file);
    let no_key: Vec<&str> = no_key.iter().map(String::as_str).collect();
    let mut node = lonely_node(&dir.join("data"), &no_key);
    assert_ne!(node.child.wait().expect("exit").code(), Some(0));
    assert!(
        node.log().contains(&format!(
            "reading --cluster-tls-key {}",
            cert_file.display()
        )),
        "{}",
        node.log()
    );
    let client = addr();
    let mut args = vec![
        "--listen".to_owned(),
        client.to_string(),
        "--data-dir".to_owned(),
        dir.join("single").display().to_string(),
    ];
    args.extend(flags(&dir.join("n1.key")));
    let mut single = ChildServer::larder_unchecked(&args, client);
    assert_ne!(single.child.wait().expect("exit").code(), Some(0));
    assert!(
        single.log().contains(
            "--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca are for cluster mode"
        ),
        "{}",
        single.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Random faults for a while under load: SIGKILL of the leader or a follower (restarted
/// once the others made progress), and the leader or a follower cut off from both others
/// for two seconds. After every fault, puts must be confirmed again within
/// [`PATIENCE`]; at the end every confirmation is checked on two nodes.
///
/// CI runs it for 8 seconds; `LARDER_CLUSTER_SOAK_SECS=600 cargo test --release --test tests
/// cluster::random_faults` is the long run (`LARDER_CLUSTER_SOAK_SEED` repeats one).
#[test]
fn random_faults_for_a_while_lose_no_confirmation() {
    soak(
        "soak",
        3,
        env_number("LARDER_CLUSTER_SOAK_SECS").unwrap_or(8),
    );
}

#[test]
fn five_nodes_lose_no_confirmation_with_two_down_at_once() {
    soak(
        "soak5",
        5,
        env_number("LARDER_CLUSTER_SOAK5_SECS").unwrap_or(6),
    );
}

/// The environment variable `name` read as a number, if set to one.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Random faults on a cluster of `size` nodes under load for `secs` seconds: the leader or
/// a follower killed or cut off from every other node (with five nodes, two of them at
/// once, a leader among them or not), each healed after a while; then every confirmation
/// checked on the leader and again on the next one. `LARDER_CLUSTER_SOAK_SEED` repeats a
/// run; `LARDER_CLUSTER_SOAK_TLS=1` runs it with mutual TLS among the members.
fn soak(name: &str, size: u64, secs: u64) {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    let seed: u64 =
        env_number("LARDER_CLUSTER_SOAK_SEED").unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("soak: {size} nodes, {secs} s, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // LARDER_CLUSTER_SOAK_TLS=1: with mutual TLS among the members.
    let tls = std::env::var("LARDER_CLUSTER_SOAK_TLS").is_ok_and(|v| v == "1");
    let mut cluster = Cluster::start_full(name, size, BTreeMap::new(), tls);
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.client).collect();
    cluster.leader();
    let load = Load::start(addrs, 2);
    load.progress(&mut cluster, 20, "before any fault");
    let started = Instant::now();
    let mut faults: BTreeMap<String, u32> = BTreeMap::new();
    let mut longest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(secs) {
        let leader = cluster.leader();
        let mut others: Vec<u64> = cluster
            .running()
            .into_iter()
            .filter(|&i| i != leader)
            .collect();
        others.shuffle(&mut rng);
        // Up to a minority of the nodes at once.
        let count = rng.gen_range(1..=((size - 1) / 2) as usize);
        let with_leader = rng.gen_bool(0.5);
        let mut victims: Vec<u64> = others
            .into_iter()
            .take(count - usize::from(with_leader))
            .collect();
        if with_leader {
            victims.push(leader);
        }
        let kill = rng.gen_bool(0.5);
        let kind = format!(
            "{} {} node(s){}",
            if kill { "kill" } else { "cut off" },
            victims.len(),
            if with_leader {
                ", the leader among them"
            } else {
                ""
            }
        );
        *faults.entry(kind.clone()).or_default() += 1;
        let fault_at = Instant::now();
        if kill {
            for &victim in &victims {
                cluster.kill9(victim);
            }
            load.progress(&mut cluster, 5, &format!("after: {kind} {victims:?}"));
            longest = longest.max(fault_at.elapsed());
            for &victim in &victims {
                cluster.launch(victim);
            }
        } else {
            for ((from, to), link) in &cluster.links {
                if victims.contains(from) || victims.contains(to) {
                    link.block();
                }
            }
            load.progress(&mut cluster, 5, &format!("after: {kind} {victims:?}"));
            longest = longest.max(fault_at.elapsed());
            std::thread::sleep(Duration::from_millis(rng.gen_range(500..2000)));
            for link in cluster.links.values() {
                link.heal();
            }
        }
        load.progress(&mut cluster, 5, &format!("after healing: {kind}"));
    }
    let seen = load.finish();
    let leader = cluster.leader();
    check(&seen, cluster.node(leader).client);
    cluster.kill9(leader);
    let next = cluster.leader();
    check(&seen, cluster.node(next).client);
    eprintln!(
        "soak: {size} nodes, {:?}, {} confirmed puts, {} confirmed deletes, faults {faults:?}, longest wait for a confirmation after a fault {longest:?}",
        started.elapsed(),
        seen.inserted.len(),
        seen.deleted.len()
    );
}

#[test]
fn the_cluster_port_closes_strangers_without_effect() {
    let dir = std::env::temp_dir().join(format!("larder-cluster-port-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let token = dir.join("token");
    std::fs::write(&token, "s3cret\n").expect("token");
    let cluster_port = addr();
    let mut node = lonely_node_at(
        &dir.join("data"),
        &["--cluster-token-file", &token.display().to_string()],
        cluster_port,
    );
    assert!(node.wait_for_log("cluster node started"), "{}", node.log());
    let closed = |preamble: &[u8], then: &[u8]| {
        let mut s = TcpStream::connect(cluster_port).expect("connect");
        s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
        let _ = s.write_all(preamble);
        let _ = s.write_all(then);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // A raft connection with the wrong token, with none, and an unknown type: closed with
    // no answer, whatever follows.
    let vote_frame = [5, 0, 0, 0, 2, 1, 2, 3, 4];
    assert!(closed(b"R\x05wrong", &vote_frame).is_empty());
    assert!(closed(b"R\x00", &vote_frame).is_empty());
    assert!(closed(b"X\x06s3cret", &vote_frame).is_empty());
    // The right token, then a frame longer than any member sends, or one that does not
    // decode: closed, nothing allocated for the announced length.
    assert!(closed(b"R\x06s3cret", &[0xff, 0xff, 0xff, 0x7f, 1]).is_empty());
    assert!(closed(b"R\x06s3cret", &vote_frame).is_empty());
    assert!(
        node.log()
            .contains("a connection with the wrong token was closed"),
        "{}",
        node.log()
    );
    // The node is still there and still answers its clients.
    let mut c = Conn::open(node.addr).expect("connect");
    assert_eq!(c.cmd("stats\r\n").expect("stats"), "NO_QUORUM");
    assert!(matches!(node.child.try_wait(), Ok(None)));
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `larder cluster ARGS… --addr ADDR` and returns (success, standard output and error).
fn cluster_cli(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(crate::support::larder_bin())
        .arg("cluster")
        .args(args)
        .arg("--addr")
        .arg(addr.to_string())
        .output()
        .expect("larder cluster");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_member_is_added_and_the_leader_removed_under_load() {
    let mut cluster = Cluster::start("membership");
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.client).collect();
    cluster.leader();
    let load = Load::start(addrs, 2);
    load.progress(&mut cluster, 30, "before the change");
    // Node 4 starts empty with the members as its peers; it waits to be added.
    let base = cluster.nodes[0].dir.parent().expect("base").to_path_buf();
    cluster.nodes.push(Node {
        id: 4,
        client: addr(),
        cluster: addr(),
        metrics: addr(),
        dir: base.join("n4"),
        server: None,
    });
    cluster.launch(4);
    let four = cluster.node(4).cluster.to_string();
    let (ok, text) = cluster_cli(cluster.node(1).client, &["add", "4", &four]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), "node 4 added");
    // Again: it is a member already.
    let (ok, text) = cluster_cli(cluster.node(2).client, &["add", "4", &four]);
    assert!(ok, "{text}");
    let (ok, text) = cluster_cli(cluster.node(3).client, &["remove", "9"]);
    assert!(!ok && text.contains("no such member"), "{text}");
    load.progress(&mut cluster, 20, "with four members");
    // The leader takes itself out: it steps down once that is committed, the others elect
    // a new leader among themselves, and the load goes on.
    let leader = cluster.leader();
    let (ok, text) = cluster_cli(cluster.node(4).client, &["remove", &leader.to_string()]);
    assert!(ok, "{text}");
    assert_eq!(text.trim(), format!("node {leader} removed"));
    cluster.kill9(leader);
    load.progress(&mut cluster, 30, "after the old leader left");
    let seen = load.finish();
    let next = cluster.leader();
    assert_ne!(next, leader);
    let (ok, text) = cluster_cli(cluster.node(4).client, &["status"]);
    assert!(ok, "{text}");
    let members: Vec<String> = (1..=4u64)
        .filter(|&i| i != leader)
        .map(|i| i.to_string())
        .collect();
    assert!(
        text.contains(&format!("members {};", members.join(","))),
        "{text}"
    );
    // The newcomer holds everything: checked through it, then with it leading or not
    // after the current leader is gone too.
    check(&seen, cluster.node(4).client);
    if next != 4 {
        cluster.kill9(next);
        let third = cluster.leader();
        check(&seen, cluster.node(third).client);
    }
}

/// The `cluster-*` field `key` of `stats` asked through `at`.
fn cluster_field(at: SocketAddr, key: &str) -> Option<u64> {
    let mut c = Conn::open(at).ok()?;
    if c.cmd("extended-stats\r\n").ok()? != "EXTENDED" {
        return None;
    }
    let line = c.cmd("stats\r\n").ok()?;
    let body = c.body(&line).ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")))
        .and_then(|v| v.trim().parse().ok())
}

/// Files in `dir` whose names end with `suffix`.
fn count_files(dir: &std::path::Path, suffix: &str) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until `what` holds, failing with `why` (and what it last saw) after PATIENCE.
fn eventually(
    cluster: &mut Cluster,
    why: &str,
    mut what: impl FnMut(&mut Cluster) -> Result<(), String>,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        cluster.supervise();
        match what(cluster) {
            Ok(()) => return,
            Err(last) => assert!(Instant::now() < deadline, "{why}: {last}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn snapshots_bound_the_log_and_catch_up_a_member_that_missed_the_purged_entries() {
    let mut cluster = Cluster::start("snapshot");
    let leader = cluster.leader();
    let others: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    let (away, other) = (others[0], others[1]);
    cluster.kill9(away);
    let at = cluster.node(leader).client;
    let mut c = Conn::open(at).expect("connect to the leader");
    // Jobs that stay: some ready, some buried after a reservation, in their own tube.
    assert_eq!(c.cmd("use keep\r\n").expect("use"), "USING keep");
    let mut keepers = BTreeMap::new();
    for i in 0..200 {
        let body = format!("keeper {i} {}", "k".repeat(700));
        let line = c
            .cmd(&format!(
                "put {} 0 120 {}\r\n{body}\r\n",
                100 + i,
                body.len()
            ))
            .expect("put");
        let id: u64 = line
            .strip_prefix("INSERTED ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("put: {line}"));
        keepers.insert(id, body);
    }
    assert_eq!(c.cmd("watch keep\r\n").expect("watch"), "WATCHING 2");
    let mut buried = BTreeSet::new();
    for _ in 0..10 {
        let line = c.cmd("reserve-with-timeout 0\r\n").expect("reserve");
        assert!(line.starts_with("RESERVED "), "{line}");
        let id: u64 = line
            .split(' ')
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("id");
        c.body(&line).expect("body");
        assert_eq!(c.cmd(&format!("bury {id} 1\r\n")).expect("bury"), "BURIED");
        buried.insert(id);
    }
    // A setting and a pause that must outlive the log they were recorded in.
    assert_eq!(
        c.cmd("config-tube keep max-attempts 5\r\n")
            .expect("config"),
        "CONFIGURED"
    );
    assert_eq!(c.cmd("pause-tube keep 3600\r\n").expect("pause"), "PAUSED");
    // Churn: many times the segment size of jobs put and deleted, so the log is
    // snapshotted and purged again and again.
    assert_eq!(c.cmd("use churn\r\n").expect("use"), "USING churn");
    let filler = "c".repeat(900);
    let mut last = 0;
    for _ in 0..3000 {
        let line = c
            .cmd(&format!("put 0 0 60 {}\r\n{filler}\r\n", filler.len()))
            .expect("put");
        let id: u64 = line
            .strip_prefix("INSERTED ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("put: {line}"));
        assert_eq!(
            c.cmd(&format!("delete {id}\r\n")).expect("delete"),
            "DELETED"
        );
        last = id;
    }
    drop(c);
    // About 5.6 MB of log went through 64 KiB segments: the leader keeps a few of them
    // and at most a couple of snapshot files.
    let leader_dir = cluster.node(leader).dir.clone();
    eventually(&mut cluster, "the leader's log was never cut down", |_| {
        let segments = count_files(&leader_dir.join("wal"), ".wal");
        let snaps = count_files(&leader_dir.join("snapshots"), ".snap");
        if segments <= 24 && (1..=2).contains(&snaps) {
            Ok(())
        } else {
            Err(format!("{segments} segments, {snaps} snapshot files"))
        }
    });
    let purged = cluster_field(at, "cluster-purged-index").expect("purged index");
    let snapshot = cluster_field(at, "cluster-snapshot-index").expect("snapshot index");
    assert!(
        purged > 1000 && snapshot >= purged,
        "snapshot {snapshot}, purged {purged}"
    );
    // The same figures, as the node itself sees them, on its metrics listener.
    let (code, text) = http_get(cluster.node(leader).metrics, "/metrics");
    assert_eq!(code, 200, "{text}");
    let metric = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    };
    assert!(
        metric("larder_cluster_log_index{kind=\"purged\"}").is_some_and(|p| p >= purged),
        "{text}"
    );
    assert_eq!(metric("larder_cluster_leader"), Some(leader), "{text}");
    assert!(
        metric(&format!(
            "larder_cluster_member_match_index{{node=\"{other}\"}}"
        ))
        .is_some_and(|m| m > purged),
        "{text}"
    );
    // The member that was away needs entries that are gone: it gets the snapshot.
    cluster.launch(away);
    eventually(
        &mut cluster,
        "the returning member did not catch up",
        |cluster| {
            let lag = cluster_field(at, &format!("cluster-node-{away}-lag"));
            let log = cluster
                .node(away)
                .server
                .as_ref()
                .map(|s| s.log())
                .unwrap_or_default();
            match lag {
                Some(0) if log.contains("snapshot installed") => Ok(()),
                other => Err(format!("lag {other:?}")),
            }
        },
    );
    // Leave the returning member alone in the cluster (the others removed, then stopped),
    // so that everything is read from the state it got from the snapshot and the log.
    leave_alone(&mut cluster, away);
    let mut c = Conn::open(cluster.node(away).client).expect("connect to the new leader");
    for (id, body) in &keepers {
        let line = c.cmd(&format!("peek {id}\r\n")).expect("peek");
        assert!(
            line.starts_with(&format!("FOUND {id} ")),
            "keeper {id}: {line}"
        );
        assert_eq!(
            c.body(&line).expect("body"),
            body.as_bytes(),
            "keeper {id}'s body"
        );
        let line = c.cmd(&format!("stats-job {id}\r\n")).expect("stats-job");
        let yaml = String::from_utf8(c.body(&line).expect("stats")).expect("utf-8");
        let (state, reserves) = if buried.contains(id) {
            ("buried", 1)
        } else {
            ("ready", 0)
        };
        assert!(
            yaml.contains(&format!("state: {state}\n")),
            "keeper {id}: {yaml}"
        );
        assert!(
            yaml.contains(&format!("reserves: {reserves}\n")),
            "keeper {id}: {yaml}"
        );
        assert!(
            yaml.contains("tube: \"keep\"\n") || yaml.contains("tube: keep\n"),
            "{yaml}"
        );
    }
    assert_eq!(c.cmd("extended-stats\r\n").expect("extended"), "EXTENDED");
    let line = c.cmd("stats-tube keep\r\n").expect("stats-tube");
    let yaml = String::from_utf8(c.body(&line).expect("stats")).expect("utf-8");
    assert!(yaml.contains("max-attempts: 5\n"), "{yaml}");
    let pause_left: u64 = yaml
        .lines()
        .find_map(|l| l.strip_prefix("pause-time-left: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(pause_left > 3000, "the pause was lost: {yaml}");
    for id in [1, last / 2, last] {
        if !keepers.contains_key(&id) {
            assert_eq!(c.cmd(&format!("peek {id}\r\n")).expect("peek"), "NOT_FOUND");
        }
    }
    let line = c.cmd("put 0 0 60 3\r\nnew\r\n").expect("put");
    let id: u64 = line
        .strip_prefix("INSERTED ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("put: {line}"));
    assert!(id > last, "id {id} given out again (the last was {last})");
    // The old leader's data directory reads back whole offline, snapshot included; a
    // flipped byte in its snapshot is reported.
    let verify = |dir: &std::path::Path| {
        let out = std::process::Command::new(crate::support::larder_bin())
            .args(["wal", "verify", "--data-dir"])
            .arg(dir)
            .output()
            .expect("larder wal verify");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = verify(&leader_dir);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("status:          ok"), "{text}");
    assert!(text.contains("raft purged:     to index"), "{text}");
    assert!(text.contains(" jobs, "), "{text}");
    let snap = std::fs::read_dir(leader_dir.join("snapshots"))
        .expect("snapshots")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .max()
        .expect("a snapshot file");
    let mut bytes = std::fs::read(&snap).expect("read the snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&snap, bytes).expect("corrupt the snapshot");
    let (code, text) = verify(&leader_dir);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("CORRUPT SNAPSHOT"), "{text}");
}

#[test]
fn a_node_whose_storage_fails_under_raft_exits_and_the_others_go_on() {
    let mut cluster = Cluster::start("storage-fault");
    let failing = cluster.leader();
    // The leader's snapshot directory becomes a file: its first snapshot cannot be written.
    let snapshots = cluster.node(failing).dir.join("snapshots");
    std::fs::remove_dir_all(&snapshots).expect("remove the snapshot directory");
    std::fs::write(&snapshots, b"not a directory").expect("put a file in its place");
    let mut c = Conn::open(cluster.node(failing).client).expect("connect to the leader");
    let filler = "f".repeat(900);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let server = cluster.nodes[(failing - 1) as usize]
            .server
            .as_mut()
            .expect("running");
        if let Ok(Some(status)) = server.child.try_wait() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node never stopped:\n{}",
            server.log()
        );
        // Churn until the log is long enough for a snapshot (errors once it is gone).
        if let Ok(line) = c.cmd(&format!("put 0 0 60 {}\r\n{filler}\r\n", filler.len())) {
            if let Some(id) = line.strip_prefix("INSERTED ") {
                let _ = c.cmd(&format!("delete {id}\r\n"));
            }
        }
    };
    let server = cluster.nodes[(failing - 1) as usize]
        .server
        .take()
        .expect("its process");
    let log = server.log();
    assert_eq!(status.code(), Some(76), "{log}");
    assert!(
        log.contains("openraft stopped after a fatal error"),
        "{log}"
    );
    assert!(log.contains("snapshot"), "the cause is not logged:\n{log}");
    drop(server);
    // The others elect a leader and serve.
    let next = cluster.leader();
    assert_ne!(next, failing);
    let mut c = Conn::open(cluster.node(next).client).expect("connect to the new leader");
    let line = c.cmd("put 0 0 60 5\r\nafter\r\n").expect("put");
    assert!(line.starts_with("INSERTED "), "{line}");
    // Repaired and restarted, the node rejoins and catches up.
    std::fs::remove_file(&snapshots).expect("remove the file");
    cluster.launch(failing);
    let at = cluster.node(next).client;
    eventually(
        &mut cluster,
        "the repaired node did not catch up",
        |_| match cluster_field(at, &format!("cluster-node-{failing}-lag")) {
            Some(0) => Ok(()),
            other => Err(format!("lag {other:?}")),
        },
    );
}

/// Removes every member but `keep` (through whoever leads meanwhile) and stops them, so
/// that `keep` leads alone.
fn leave_alone(cluster: &mut Cluster, keep: u64) {
    let gone: Vec<u64> = (1..=3).filter(|&i| i != keep).collect();
    for id in gone {
        eventually(cluster, "a member could not be removed", |cluster| {
            let current = cluster.leader();
            let (ok, text) =
                cluster_cli(cluster.node(current).client, &["remove", &id.to_string()]);
            if ok {
                Ok(())
            } else {
                Err(text)
            }
        });
        cluster.kill9(id);
    }
    assert_eq!(cluster.leader(), keep, "the last member should lead");
}

#[test]
fn a_new_leader_whose_clock_is_behind_moves_it_forward_and_delays_stay_on_time() {
    // Node 3's clock runs a minute behind the others'.
    let extra = BTreeMap::from([(3, vec!["--clock-offset-ms".to_owned(), "-60000".to_owned()])]);
    let mut cluster = Cluster::start_with("clock", extra);
    let mut leader = cluster.leader();
    if leader == 3 {
        cluster.kill9(3);
        leader = cluster.leader();
        cluster.launch(3);
    }
    let at = cluster.node(leader).client;
    let mut c = Conn::open(at).expect("connect to the leader");
    let line = c.cmd("put 0 2 60 5\r\nlater\r\n").expect("put");
    let id: u64 = line
        .strip_prefix("INSERTED ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("put: {line}"));
    drop(c);
    eventually(
        &mut cluster,
        "node 3 did not catch up",
        |_| match cluster_field(at, "cluster-node-3-lag") {
            Some(0) => Ok(()),
            other => Err(format!("lag {other:?}")),
        },
    );
    leave_alone(&mut cluster, 3);
    let log = cluster
        .node(3)
        .server
        .as_ref()
        .map(|s| s.log())
        .unwrap_or_default();
    assert!(log.contains("clock is behind the previous leader"), "{log}");
    // Due 2 s after it was put by the leader's clock: with node 3's own clock it would be
    // another minute.
    let mut c = Conn::open(cluster.node(3).client).expect("connect to node 3");
    let line = c.cmd("reserve-with-timeout 20\r\n").expect("reserve");
    assert!(line.starts_with(&format!("RESERVED {id} ")), "{line}");
    assert_eq!(c.body(&line).expect("body"), b"later");
}

/// Puts `body` through the node at `at` until it is confirmed (a follower that does not
/// know the leader yet answers `NO_QUORUM`); returns the job's id.
fn confirmed_put(cluster: &mut Cluster, at: SocketAddr, body: &str) -> u64 {
    let mut id = None;
    eventually(cluster, &format!("no confirmed put through {at}"), |_| {
        let mut c = Conn::open(at).map_err(|e| e.to_string())?;
        let line = c
            .cmd(&format!("put 0 0 60 {}\r\n{body}\r\n", body.len()))
            .map_err(|e| e.to_string())?;
        id = line
            .strip_prefix("INSERTED ")
            .and_then(|i| i.parse::<u64>().ok());
        id.map(|_| ()).ok_or(line)
    });
    id.expect("confirmed")
}

#[test]
fn a_cluster_with_mutual_tls_elects_forwards_and_survives_losing_its_leader() {
    let mut cluster = Cluster::start_tls("tls");
    for node in &cluster.nodes {
        let log = node.server.as_ref().expect("running").log();
        assert!(
            log.contains("cluster port: mutual TLS among members"),
            "node {}:\n{log}",
            node.id
        );
    }
    let leader = cluster.leader();
    let follower = (1..=3).find(|&i| i != leader).expect("a follower");
    let mut seen = Seen::default();
    for (at, body) in [
        (leader, "through the leader"),
        (follower, "through a follower"),
    ] {
        let addr = cluster.node(at).client;
        let id = confirmed_put(&mut cluster, addr, body);
        seen.inserted.insert(id, body.to_owned());
    }
    // A follower answers a put itself only with NO_QUORUM: the second INSERTED came from
    // the leader, through the connection the follower forwarded over TLS.
    assert_eq!(seen.inserted.len(), 2);
    check(&seen, cluster.node(leader).client);
    // Raft and forwarding over TLS carry on under a new leader, which holds both puts.
    cluster.kill9(leader);
    let next = cluster.leader();
    assert_ne!(next, leader);
    let other = (1..=3).find(|&i| i != leader && i != next).expect("other");
    let addr = cluster.node(other).client;
    let id = confirmed_put(&mut cluster, addr, "after the failover");
    seen.inserted.insert(id, "after the failover".to_owned());
    check(&seen, cluster.node(next).client);
}

/// The raft term node `metrics` reports.
fn metrics_term(metrics: SocketAddr) -> u64 {
    let (code, body) = http_get(metrics, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix("larder_cluster_term "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no larder_cluster_term in:\n{body}"))
}

/// A TLS client trusting `ca` and presenting `identity` (certificate, key) if given.
fn tls_client(
    ca: &std::path::Path,
    identity: Option<(PathBuf, PathBuf)>,
) -> Arc<rustls::ClientConfig> {
    let roots = larder::pem::read_roots(ca, "CA").expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(larder::pem::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots);
    Arc::new(match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                larder::pem::read_certs(&cert, "cert").expect("cert"),
                larder::pem::read_key(&key, "key").expect("key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    })
}

/// Opens TLS to `addr` with `config` and sends `bytes`; the stream, to read the answer.
fn tls_send(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    bytes: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("TLS client");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // A refused certificate may show here already, or only at the first read (TLS 1.3).
    let _ = tls.write_all(bytes).and_then(|()| tls.flush());
    tls
}

#[test]
fn a_tls_cluster_port_closes_strangers_without_effect() {
    use rcgen::ExtendedKeyUsagePurpose as Usage;
    let dir = std::env::temp_dir().join(format!("larder-cluster-tls-port-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let ca = crate::security::Ca::new("cluster CA");
    let ca_pem = file("ca.pem", &ca.pem());
    let (cert, key) = member_certificate(&ca);
    let (cert, key) = (file("n1.pem", &cert), file("n1.key", &key));
    let (other, other_key) = member_certificate(&ca);
    let member = (file("n2.pem", &other), file("n2.key", &other_key));
    let stranger_ca = crate::security::Ca::new("stranger CA");
    let (forged, forged_key) =
        stranger_ca.issue_for(&["127.0.0.1"], vec![Usage::ServerAuth, Usage::ClientAuth]);
    let stranger = (file("s.pem", &forged), file("s.key", &forged_key));
    let token = file("token", "s3cret\n");
    let (cluster_port, metrics) = (addr(), addr());
    let mut node = lonely_node_at(
        &dir.join("data"),
        &[
            "--cluster-token-file",
            &token.display().to_string(),
            "--cluster-tls-cert",
            &cert.display().to_string(),
            "--cluster-tls-key",
            &key.display().to_string(),
            "--cluster-tls-ca",
            &ca_pem.display().to_string(),
            "--metrics-listen",
            &metrics.to_string(),
        ],
        cluster_port,
    );
    assert!(node.wait_for_log("cluster node started"), "{}", node.log());
    // A connection that never starts its handshake is closed once the limit passes.
    let mut silent = TcpStream::connect(cluster_port).expect("connect");
    silent.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let opened = Instant::now();

    // A vote for candidate 2 in term 1000000, with a log ahead of anything node 1 has:
    // node 1 would grant it and move to that term.
    const BOGUS_TERM: u64 = 1_000_000;
    let vote = openraft::raft::VoteRequest::<u64>::new(
        openraft::Vote::new(BOGUS_TERM, 2),
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(BOGUS_TERM, 2),
            BOGUS_TERM,
        )),
    );
    let body = bincode::serialize(&vote).expect("encode the vote");
    let mut raft = b"R\x06s3cret".to_vec();
    raft.extend_from_slice(&(body.len() as u32 + 1).to_le_bytes());
    raft.push(2);
    raft.extend_from_slice(&body);

    // Plain TCP with the right token: at most a TLS alert back, then closed.
    let mut s = TcpStream::connect(cluster_port).expect("connect");
    s.set_read_timeout(Some(REPLY_WAIT)).expect("timeout");
    let _ = s.write_all(&raft);
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("closed, not timed out");
    assert!(got.is_empty() || got[0] == 0x15, "not an alert: {got:?}");
    // TLS with a certificate of another CA, or none, and the right token: no answer.
    for (what, identity) in [
        ("a stranger's certificate", Some(stranger)),
        ("no certificate", None),
    ] {
        let mut tls = tls_send(cluster_port, tls_client(&ca_pem, identity), &raft);
        let mut got = Vec::new();
        let read = tls.read_to_end(&mut got);
        assert!(got.is_empty(), "{what}: answered {got:?}");
        assert!(
            read.as_ref()
                .is_err_and(|e| e.kind() != std::io::ErrorKind::WouldBlock),
            "{what}: not closed: {read:?}"
        );
    }
    assert!(
        node.log().contains("TLS handshake failed"),
        "{}",
        node.log()
    );
    // Nothing changed: the vote was not counted, the node still serves.
    assert!(metrics_term(metrics) < BOGUS_TERM);
    let mut c = Conn::open(node.addr).expect("connect");
    assert_eq!(c.cmd("stats\r\n").expect("stats"), "NO_QUORUM");
    assert!(matches!(node.child.try_wait(), Ok(None)));

    // The silent connection was closed within the 5-second handshake limit.
    let mut got = Vec::new();
    silent.read_to_end(&mut got).expect("closed, not timed out");
    assert!(got.is_empty(), "{got:?}");
    assert!(opened.elapsed() < REPLY_WAIT);

    // The same bytes from a member's certificate are a vote node 1 answers and counts:
    // the refusals above were the TLS layer's.
    let mut tls = tls_send(cluster_port, tls_client(&ca_pem, Some(member)), &raft);
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).expect("an answer frame");
    assert!(u32::from_le_bytes(len) > 0);
    let deadline = Instant::now() + PATIENCE;
    while metrics_term(metrics) < BOGUS_TERM {
        assert!(
            Instant::now() < deadline,
            "the member's vote was not counted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Completes a TLS handshake with `addr` as a client with `config`.
fn handshake(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(REPLY_WAIT))
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[test]
fn cluster_certificates_are_replaced_on_sighup_without_a_restart() {
    let mut cluster = Cluster::start_tls("tls-reload");
    let leader = cluster.leader();
    let at = cluster.node(leader).client;
    let first = confirmed_put(&mut cluster, at, "before");
    let dir = cluster.tls.clone().expect("a TLS cluster");
    let old_ca = std::fs::read_to_string(dir.join("ca.pem")).expect("the first CA");
    let sighup_all = |cluster: &mut Cluster, reloads: usize| {
        for id in 1..=3 {
            cluster.sighup(id);
        }
        eventually(
            cluster,
            "a member did not reload its certificates",
            |cluster| {
                for node in &cluster.nodes {
                    let log = node.server.as_ref().map(|s| s.log()).unwrap_or_default();
                    let done = log.matches("cluster TLS certificates reloaded").count();
                    if done < reloads {
                        return Err(format!("node {}: {done} reloads:\n{log}", node.id));
                    }
                }
                Ok(())
            },
        );
    };
    // Rotate to a new CA: first trust both and move every member to a certificate of the
    // new one, then trust only the new one.
    let new_ca = crate::security::Ca::new("second cluster CA");
    std::fs::write(dir.join("ca.pem"), format!("{old_ca}{}", new_ca.pem())).expect("CA bundle");
    for id in 1..=3 {
        let (cert, key) = member_certificate(&new_ca);
        std::fs::write(dir.join(format!("n{id}.pem")), cert).expect("cert file");
        std::fs::write(dir.join(format!("n{id}.key")), key).expect("key file");
    }
    sighup_all(&mut cluster, 1);
    std::fs::write(dir.join("ca.pem"), new_ca.pem()).expect("the new CA alone");
    sighup_all(&mut cluster, 2);
    // Node 1 now presents its new certificate: a client trusting only the new CA completes
    // a handshake with its cluster port, one trusting only the first CA does not.
    let old_ca_file = dir.join("old-ca.pem");
    std::fs::write(&old_ca_file, &old_ca).expect("old CA file");
    let member = Some((dir.join("n2.pem"), dir.join("n2.key")));
    let port = cluster.node(1).cluster;
    handshake(port, tls_client(&dir.join("ca.pem"), member.clone()))
        .expect("a handshake trusting the new CA");
    assert!(
        handshake(port, tls_client(&old_ca_file, member)).is_err(),
        "node 1 still presents a certificate of the first CA"
    );
    // Every connection between members made again: only the reloaded certificates and CA
    // can carry them now (the first CA's certificates would be refused).
    cluster.reconnect_all();
    let next = cluster.leader();
    let at = cluster.node(next).client;
    let second = confirmed_put(&mut cluster, at, "after");
    assert!(second > first);
    // A reload that fails (a missing key) keeps the certificates in force.
    std::fs::remove_file(dir.join("n1.key")).expect("remove a key");
    cluster.sighup(1);
    eventually(
        &mut cluster,
        "the failed reload was not reported",
        |cluster| {
            let log = cluster
                .node(1)
                .server
                .as_ref()
                .map(|s| s.log())
                .unwrap_or_default();
            if log.contains("cluster TLS reload failed") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    cluster.reconnect_all();
    let next = cluster.leader();
    let at = cluster.node(next).client;
    confirmed_put(&mut cluster, at, "still");
}
