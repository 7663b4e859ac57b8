//! TLS and authentication (protocol.md §10): real handshakes with certificates made here,
//! mutual TLS, the roles against every command class, failed attempts, a certificate
//! reload on SIGHUP, an independent TLS client, and the CLI's flags.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use larder::client::{Client, ClientError, TlsOptions};
use larder::config::{SecurityConfig, ServerConfig, TlsFiles};
use larder::protocol::{Command, Reply};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::support::{larder_bin, ChildServer, InProcess, Raw};

/// A directory of PEM files, removed when dropped.
pub(crate) struct Files(PathBuf);

impl Files {
    pub(crate) fn new(name: &str) -> Files {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("larder-security-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        Files(dir)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
pub(crate) struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    pub(crate) fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        Ca { cert, key }
    }

    /// A leaf certificate for `names` (DNS names or IP addresses) and its key, as PEM.
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        self.issue_for(names, vec![purpose])
    }

    /// A leaf certificate for `names` with the extended key usages `purposes` (a cluster
    /// member's needs both serverAuth and clientAuth), and its key, as PEM.
    pub(crate) fn issue_for(
        &self,
        names: &[&str],
        purposes: Vec<ExtendedKeyUsagePurpose>,
    ) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.extended_key_usages = purposes;
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign the leaf");
        (cert.pem(), key.serialize_pem())
    }

    pub(crate) fn pem(&self) -> String {
        self.cert.pem()
    }
}

/// Writes a server certificate for 127.0.0.1 and localhost signed by `ca`, and the CA.
fn server_files(files: &Files, ca: &Ca) -> TlsFiles {
    let (cert, key) = ca.issue(
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    files.write("ca.pem", &ca.pem());
    TlsFiles {
        cert: files.write("server.pem", &cert),
        key: files.write("server.key", &key),
        client_ca: None,
    }
}

fn trusting(ca: &Path) -> TlsOptions {
    TlsOptions {
        ca: Some(ca.to_path_buf()),
        identity: None,
        server_name: None,
    }
}

async fn tls_server(tls: TlsFiles, auth_file: Option<PathBuf>) -> InProcess {
    InProcess::with_config(ServerConfig {
        security: SecurityConfig {
            tls: Some(tls),
            auth_file,
            max_auth_failures: 3,
            auth_failure_delay_ms: 1,
        },
        ..ServerConfig::default()
    })
    .await
}

/// Whether a TLS client gets a working session: a handshake, then `list-tube-used`
/// answered. With TLS 1.3 a refused client certificate shows only at the first read.
async fn works(client: Result<Client, ClientError>) -> Result<(), String> {
    let mut client = client.map_err(|e| e.to_string())?;
    match client.call(&Command::ListTubeUsed).await {
        Ok(Reply::Using(_)) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test]
async fn a_put_and_a_reserve_over_a_real_tls_handshake() {
    let files = Files::new("basic");
    let ca = Ca::new("basic CA");
    let server = tls_server(server_files(&files, &ca), None).await;
    let addr = server.addr.to_string();
    let mut client = Client::connect_tls(&addr, &trusting(&files.path("ca.pem")))
        .await
        .expect("TLS connect");
    let id = client.put(0, 0, 60, &b"over tls"[..]).await.expect("put");
    let (got, body) = client
        .reserve(Some(0))
        .await
        .expect("reserve")
        .expect("a job");
    assert_eq!((got, body.as_ref()), (id, &b"over tls"[..]));
    client.delete(id).await.expect("delete");

    // A plain-text client gets no beanstalkd reply from a TLS port.
    let mut plain = Raw::connect(server.addr).await;
    plain.send(b"stats\r\n").await;
    let answer = plain.try_reply().await.unwrap_or_default();
    assert!(!answer.starts_with("OK "), "{answer:?}");

    // So does larder's own client, and it says why.
    let mut plain = Client::connect(&addr).await.expect("plain connect");
    let err = plain
        .call(&Command::Stats)
        .await
        .expect_err("a reply over plain TCP");
    assert!(err.to_string().contains("--tls"), "{err}");

    // A client that trusts another CA refuses the server.
    let other = Files::new("basic-other");
    other.write("ca.pem", &Ca::new("other CA").pem());
    let refused = Client::connect_tls(&addr, &trusting(&other.path("ca.pem"))).await;
    assert!(
        matches!(refused, Err(ClientError::Tls(_))),
        "{:?}",
        refused.err()
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn mutual_tls_refuses_an_unknown_certificate_and_maps_a_known_one_to_a_role() {
    let files = Files::new("mtls");
    let ca = Ca::new("mtls server CA");
    let clients = Ca::new("mtls client CA");
    let stranger = Ca::new("stranger CA");
    let mut tls = server_files(&files, &ca);
    tls.client_ca = Some(files.write("clients.pem", &clients.pem()));
    let (cert, key) = clients.issue(&["worker-1.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let worker = (files.write("w.pem", &cert), files.write("w.key", &key));
    let (cert, key) = clients.issue(&["nobody.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let nobody = (files.write("n.pem", &cert), files.write("n.key", &key));
    let (cert, key) = stranger.issue(&["worker-1.test"], ExtendedKeyUsagePurpose::ClientAuth);
    let forged = (files.write("f.pem", &cert), files.write("f.key", &key));
    let auth = files.write("auth", "cert worker-1.test worker\n");
    let server = tls_server(tls, Some(auth)).await;
    let addr = server.addr.to_string();
    let with = |identity: Option<(PathBuf, PathBuf)>| TlsOptions {
        identity,
        ..trusting(&files.path("ca.pem"))
    };

    for (what, identity) in [
        ("no certificate", None),
        ("a certificate from another CA", Some(forged)),
    ] {
        let result = works(Client::connect_tls(&addr, &with(identity)).await).await;
        assert!(result.is_err(), "{what} was let in");
    }

    // A valid certificate the auth file names: a worker without sending `auth`.
    let mut client = Client::connect_tls(&addr, &with(Some(worker)))
        .await
        .expect("connect as worker-1");
    let put = Command::Put {
        pri: 0,
        delay: 0,
        ttr: 60,
        body: "x".into(),
    };
    assert_eq!(client.call(&put).await.expect("put"), Reply::Forbidden);
    assert_eq!(
        client
            .call(&Command::ReserveWithTimeout(0))
            .await
            .expect("reserve"),
        Reply::TimedOut
    );

    // A valid certificate the auth file does not name must still authenticate.
    let mut client = Client::connect_tls(&addr, &with(Some(nobody)))
        .await
        .expect("connect as nobody");
    assert_eq!(
        client.call(&Command::Stats).await.expect("stats"),
        Reply::AuthRequired
    );
    server.shutdown().await.expect("shutdown");
}

/// The token of each role in [`auth_file`].
const TOKENS: [(&str, &str); 3] = [
    ("producer", "p-0123456789abcdef"),
    ("worker", "w-0123456789abcdef"),
    ("admin", "a-0123456789abcdef"),
];

fn auth_file(files: &Files) -> PathBuf {
    let mut text = String::from("# made by the test\n");
    for (role, token) in TOKENS {
        let roles = role.parse().expect("role");
        let line = larder::server::auth::token_line(role, roles, token).expect("line");
        text.push_str(&line);
        text.push('\n');
    }
    files.write("auth", &text)
}

async fn auth_server(files: &Files, max_failures: u32, delay_ms: u64) -> InProcess {
    InProcess::with_config(ServerConfig {
        security: SecurityConfig {
            tls: None,
            auth_file: Some(auth_file(files)),
            max_auth_failures: max_failures,
            auth_failure_delay_ms: delay_ms,
        },
        ..ServerConfig::default()
    })
    .await
}

async fn login(server: &InProcess, role: &str) -> Raw {
    let token = TOKENS
        .iter()
        .find(|(r, _)| *r == role)
        .map(|(_, t)| *t)
        .expect("a role of TOKENS");
    let mut c = server.connect().await;
    assert_eq!(
        c.cmd(&format!("auth {token}\r\n")).await,
        format!("AUTHENTICATED {role}\r\n")
    );
    c
}

/// One command of each class of protocol.md §10.3, with the class's name.
const COMMANDS: &[(&str, &str)] = &[
    ("read", "use default\r\n"),
    ("read", "stats\r\n"),
    ("read", "stats-tube default\r\n"),
    ("read", "stats-job 1\r\n"),
    ("read", "list-tubes\r\n"),
    ("read", "list-tube-used\r\n"),
    ("read", "list-tubes-watched\r\n"),
    ("read", "extended-stats\r\n"),
    ("peek", "peek 1\r\n"),
    ("peek", "peek-ready\r\n"),
    ("peek", "peek-delayed\r\n"),
    ("peek", "peek-buried\r\n"),
    ("produce", "put 0 0 60 1\r\nx\r\n"),
    ("consume", "watch other\r\n"),
    ("consume", "ignore other\r\n"),
    ("consume", "reserve-job 999\r\n"),
    ("consume", "reserve-with-timeout 0\r\n"),
    ("consume", "touch 999\r\n"),
    ("consume", "release 999 0 0\r\n"),
    ("consume", "bury 999 0\r\n"),
    ("consume", "delete 999\r\n"),
    ("consume", "fail 999 broke\r\n"),
    ("admin", "pause-tube nothing 0\r\n"),
    ("admin", "config-tube other max-attempts 3\r\n"),
    ("admin", "kick 0\r\n"),
    ("admin", "kick-job 999\r\n"),
    ("admin", "list-dead * * 0 0 18446744073709551615 10\r\n"),
    ("admin", "kick-dead * * 0 0 18446744073709551615 0\r\n"),
    ("admin", "delete-dead * * 0 0 18446744073709551615 0\r\n"),
];

/// The classes each role may run, as protocol.md §10.3's table says.
fn allowed(role: &str, class: &str) -> bool {
    match role {
        "producer" => ["read", "produce"].contains(&class),
        "worker" => ["read", "peek", "consume"].contains(&class),
        "admin" => true,
        _ => false,
    }
}

#[tokio::test]
async fn every_role_against_every_command_class() {
    let files = Files::new("roles");
    let server = auth_server(&files, 3, 1).await;
    let mut admin = login(&server, "admin").await;
    assert_eq!(admin.cmd("put 0 0 60 3\r\nabc\r\n").await, "INSERTED 1\r\n");

    for role in ["none", "producer", "worker", "admin"] {
        let mut c = match role {
            "none" => server.connect().await,
            _ => login(&server, role).await,
        };
        for (class, cmd) in COMMANDS {
            let reply = c.cmd(cmd).await;
            let refusal = if role == "none" {
                "AUTH_REQUIRED\r\n"
            } else {
                "FORBIDDEN\r\n"
            };
            if allowed(role, class) {
                assert_ne!(reply, refusal, "{role} may run {cmd:?}");
                assert!(!reply.starts_with("AUTH"), "{role} {cmd:?}: {reply:?}");
            } else {
                assert_eq!(reply, refusal, "{role} must not run {cmd:?}");
            }
        }
        // quit is for everyone.
        c.send(b"quit\r\n").await;
        assert!(c.closed().await, "{role}: quit did not close");
    }
    // Only the producer's and the admin's puts made jobs.
    let stats = admin.cmd("stats\r\n").await;
    assert!(stats.contains("\ntotal-jobs: 3\n"), "{stats}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_refused_command_changes_nothing() {
    let files = Files::new("nothing");
    let server = auth_server(&files, 3, 1).await;
    let mut admin = login(&server, "admin").await;
    assert_eq!(admin.cmd("put 0 0 60 3\r\nabc\r\n").await, "INSERTED 1\r\n");
    let before = admin.cmd("stats\r\n").await;

    let mut anonymous = server.connect().await;
    let mut producer = login(&server, "producer").await;
    let mut worker = login(&server, "worker").await;
    // Pipelined, so a refusal between allowed commands keeps its place in the replies.
    anonymous
        .send(b"put 0 0 60 1\r\nx\r\ndelete 1\r\npause-tube default 100\r\nkick 5\r\n")
        .await;
    for _ in 0..4 {
        assert_eq!(anonymous.reply().await, "AUTH_REQUIRED\r\n");
    }
    producer
        .send(b"delete 1\r\nlist-tube-used\r\nreserve-job 1\r\n")
        .await;
    assert_eq!(producer.reply().await, "FORBIDDEN\r\n");
    assert_eq!(producer.reply().await, "USING default\r\n");
    assert_eq!(producer.reply().await, "FORBIDDEN\r\n");
    worker
        .send(b"put 0 0 60 1\r\nx\r\npause-tube default 100\r\nkick-job 1\r\n")
        .await;
    for _ in 0..3 {
        assert_eq!(worker.reply().await, "FORBIDDEN\r\n");
    }

    let after = admin.cmd("stats\r\n").await;
    let fields = |yaml: &str| -> Vec<String> {
        yaml.lines()
            .filter(|l| l.starts_with("current-jobs-") || l.starts_with("cmd-"))
            .filter(|l| !l.starts_with("cmd-stats:") && !l.starts_with("cmd-list-tube-used:"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(fields(&before), fields(&after));
    let tube = admin.cmd("stats-tube default\r\n").await;
    assert!(tube.contains("pause: 0\n"), "{tube}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn failed_attempts_wait_then_close_the_connection() {
    let files = Files::new("failures");
    let server = auth_server(&files, 2, 300).await;
    let mut c = server.connect().await;
    // Not a token: BAD_FORMAT, not counted as a failure.
    assert_eq!(c.cmd("auth two words\r\n").await, "BAD_FORMAT\r\n");
    let start = Instant::now();
    assert_eq!(c.cmd("auth wrong-token\r\n").await, "AUTH_FAILED\r\n");
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(c.cmd("stats\r\n").await, "AUTH_REQUIRED\r\n");
    assert_eq!(c.cmd("auth wrong-again\r\n").await, "AUTH_FAILED\r\n");
    assert!(c.closed().await, "the second failure did not close");

    // Another connection is not held back by those failures.
    let mut c = login(&server, "worker").await;
    assert_eq!(c.cmd("list-tube-used\r\n").await, "USING default\r\n");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_unix_socket_stays_plain_and_still_requires_auth() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let files = Files::new("unix");
    let path = files.path("larder.sock");
    let listen = larder::config::ListenAddr::Unix(path.clone());
    let listener = larder::server::bind(&listen).expect("bind the socket");
    let data_dir = files.path("data");
    let config = ServerConfig {
        listen,
        data_dir,
        disk_reserve: 1 << 20,
        security: SecurityConfig {
            auth_file: Some(auth_file(&files)),
            ..SecurityConfig::DEFAULT
        },
        ..ServerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(larder::server::run(listener, config, async move {
        let _ = stopped.await;
    }));
    let stream = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"stats\r\nauth w-0123456789abcdef\r\nlist-tube-used\r\n")
        .await
        .expect("send");
    for want in ["AUTH_REQUIRED", "AUTHENTICATED worker", "USING default"] {
        let line = tokio::time::timeout(crate::support::REPLY_TIMEOUT, lines.next_line())
            .await
            .expect("a reply in time")
            .expect("read");
        assert_eq!(line.as_deref().map(|l| l.trim_end()), Some(want));
    }
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

#[tokio::test]
async fn without_an_auth_file_auth_is_an_unknown_command() {
    let server = InProcess::start().await;
    let mut c = server.connect().await;
    assert_eq!(c.cmd("auth whatever\r\n").await, "UNKNOWN_COMMAND\r\n");
    assert_eq!(c.cmd("auth two words\r\n").await, "UNKNOWN_COMMAND\r\n");
    assert_eq!(c.cmd("put 0 0 60 1\r\nx\r\n").await, "INSERTED 1\r\n");
    server.shutdown().await.expect("shutdown");
}

/// A child server serving TLS with `files`' server certificate, and requiring the tokens
/// of [`auth_file`].
fn child_with_tls_and_auth(files: &Files, extra: &[&str]) -> ChildServer {
    let auth = auth_file(files);
    let mut args = vec![
        "--tls-cert",
        files.0.join("server.pem").to_str().expect("utf-8 path"),
        "--tls-key",
        files.0.join("server.key").to_str().expect("utf-8 path"),
        "--auth-file",
        auth.to_str().expect("utf-8 path"),
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ChildServer::larder_logged(&args)
}

#[tokio::test]
async fn sighup_serves_a_new_certificate_to_new_connections_and_keeps_old_ones() {
    let files = Files::new("reload");
    let first = Ca::new("first CA");
    server_files(&files, &first);
    std::fs::rename(files.path("ca.pem"), files.path("first.pem")).expect("rename");
    let mut server = child_with_tls_and_auth(&files, &[]);
    let addr = server.addr.to_string();
    let mut old = Client::connect_tls(&addr, &trusting(&files.path("first.pem")))
        .await
        .expect("connect with the first certificate");
    assert_eq!(old.auth("a-0123456789abcdef").await.expect("auth"), "admin");

    let second = Ca::new("second CA");
    server_files(&files, &second);
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log("TLS certificates reloaded"),
        "no reload logged"
    );

    let new = Client::connect_tls(&addr, &trusting(&files.path("ca.pem"))).await;
    let mut new = new.expect("a new connection gets the second certificate");
    assert_eq!(
        new.auth("w-0123456789abcdef").await.expect("auth"),
        "worker"
    );
    let stale = Client::connect_tls(&addr, &trusting(&files.path("first.pem"))).await;
    assert!(stale.is_err(), "the first certificate is still served");

    // The connection made before the reload still works, both ways.
    let id = old.put(0, 0, 60, &b"after reload"[..]).await.expect("put");
    let (got, body) = new.reserve(Some(5)).await.expect("reserve").expect("job");
    assert_eq!((got, body.as_ref()), (id, &b"after reload"[..]));
    let reply = old.call(&Command::StatsJob(id)).await.expect("stats-job");
    assert!(matches!(reply, Reply::Ok(_)), "{reply:?}");
    drop(server);
}

/// Python's `ssl` module: an independent TLS stack and client.
const PYTHON_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[3])
with socket.create_connection((sys.argv[1], int(sys.argv[2]))) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        f = s.makefile("rwb")
        def cmd(line):
            f.write(line); f.flush()
            return f.readline()
        print(s.version())
        print(cmd(b"auth p-0123456789abcdef\r\n").decode().strip())
        print(cmd(b"put 0 0 60 6\r\npython\r\n").decode().strip())
        print(cmd(b"reserve-with-timeout 0\r\n").decode().strip())
"#;

#[test]
fn an_independent_client_python_ssl_talks_to_the_tls_port() {
    let files = Files::new("python");
    server_files(&files, &Ca::new("python CA"));
    let server = child_with_tls_and_auth(&files, &[]);
    let out = std::process::Command::new("python3")
        .args(["-c", PYTHON_CLIENT, "127.0.0.1"])
        .arg(server.addr.port().to_string())
        .arg(files.path("ca.pem"))
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python3 failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("TLSv1."), "{stdout}");
    // A producer may put but not reserve.
    assert_eq!(
        &lines[1..],
        ["AUTHENTICATED producer", "INSERTED 1", "FORBIDDEN"],
        "{stdout}"
    );
}

#[test]
fn the_cli_speaks_tls_and_sends_its_token() {
    let files = Files::new("cli");
    server_files(&files, &Ca::new("cli CA"));
    let server = child_with_tls_and_auth(&files, &[]);
    let addr = server.addr.to_string();
    let ca = files.path("ca.pem");
    let larder = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(larder_bin());
        cmd.args(args)
            .args(["--addr", &addr, "--tls-ca"])
            .arg(&ca)
            .env_remove("LARDER_TOKEN");
        if let Some(token) = token {
            cmd.env("LARDER_TOKEN", token);
        }
        cmd.output().expect("run larder")
    };
    let put = larder(&["put", "from the cli"], Some("p-0123456789abcdef"));
    assert!(put.status.success(), "{put:?}");
    assert_eq!(String::from_utf8_lossy(&put.stdout).trim(), "1");

    let refused = larder(&["reserve", "--timeout", "0"], Some("p-0123456789abcdef"));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("role does not allow it (FORBIDDEN"),
        "{refused:?}"
    );
    let wrong = larder(&["stats"], Some("not-a-token"));
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("authentication failed: the server rejected the token (AUTH_FAILED)"),
        "{wrong:?}"
    );
    let none = larder(&["stats"], None);
    assert!(!none.status.success());
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("requires authentication (AUTH_REQUIRED)"),
        "{none:?}"
    );

    let reserved = larder(&["reserve", "--timeout", "0"], Some("w-0123456789abcdef"));
    assert!(reserved.status.success(), "{reserved:?}");
    assert_eq!(String::from_utf8_lossy(&reserved.stdout), "from the cli");
}

#[test]
fn larder_auth_hash_makes_a_line_the_server_accepts() {
    let files = Files::new("hash");
    let out = std::process::Command::new(larder_bin())
        .args([
            "auth",
            "hash",
            "--name",
            "ops",
            "--role",
            "admin",
            "--generate",
        ])
        .output()
        .expect("run larder auth hash");
    assert!(out.status.success(), "{out:?}");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = String::from_utf8_lossy(&out.stderr)
        .trim()
        .strip_prefix("token: ")
        .expect("the generated token on stderr")
        .to_owned();
    assert!(!line.contains(&token), "the line holds the token itself");
    let auth = files.write("auth", &line);
    let server = ChildServer::larder_logged(&["--auth-file", auth.to_str().expect("utf-8")]);
    let mut c = std::net::TcpStream::connect(server.addr).expect("connect");
    use std::io::{BufRead, Write};
    c.write_all(format!("auth {token}\r\n").as_bytes())
        .expect("send");
    let mut reply = String::new();
    std::io::BufReader::new(&c)
        .read_line(&mut reply)
        .expect("reply");
    assert_eq!(reply, "AUTHENTICATED admin\r\n");
}

#[test]
fn a_server_open_beyond_loopback_without_tls_or_auth_warns() {
    let server = ChildServer::larder_logged(&["-l", "0.0.0.0"]);
    assert!(
        server.log().contains("neither TLS nor authentication"),
        "{}",
        server.log()
    );
    let quiet = ChildServer::larder_logged(&[]);
    assert!(!quiet.log().contains("neither TLS nor authentication"));
}
