//! Authentication and roles (protocol.md §10): the auth file, the `auth` command, and the
//! check that every command is one the connection's roles allow.
//!
//! Without `--auth-file` none of this runs and every client may run every command, as in
//! beanstalkd. With it, a connection starts with no role, unless mutual TLS presented a
//! certificate the auth file names; until it has one it may send only `auth` and `quit`.
//!
//! Tokens are stored as a salted SHA-256 (`sha256:<salt hex>:<digest hex>`). Tokens are
//! long random secrets (`larder auth hash --generate` makes 32 random bytes), not
//! passwords a person chose, so a dictionary or brute-force attack on a leaked file is
//! hopeless however fast the hash is; a slow password hash would only cost every
//! connection time. The salt keeps equal tokens from having equal lines.
//!
//! Failed attempts are bounded without any per-address memory: each waits
//! `--auth-failure-delay` before its reply, a connection is closed after
//! `--max-auth-failures`, the number of connections is bounded by `--max-connections`,
//! and the log gets at most [`LOGGED_PER_SECOND`] lines a second about them, with a count
//! of those left out.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use ring::digest::{digest, SHA256};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::config::SecurityConfig;
use crate::protocol::{Command, CommandKind, ProtocolError, Reply};

/// Longest token `auth` accepts, in bytes: what fits the 224-byte line with `auth ` and
/// `\r\n`.
pub const MAX_TOKEN_LEN: usize = crate::protocol::MAX_LINE_LEN - 7;

/// Most log lines a second about failed attempts, over all connections.
pub const LOGGED_PER_SECOND: u32 = 10;

const SALT_LEN: usize = 16;

/// One role of the auth file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Puts jobs.
    Producer,
    /// Takes and finishes jobs.
    Worker,
    /// Everything, including pausing, configuring, kicking and the dead-letter commands.
    Admin,
}

impl Role {
    const ALL: [Role; 3] = [Role::Producer, Role::Worker, Role::Admin];

    fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    /// Whether this role may run commands of `class`.
    fn allows(self, class: Class) -> bool {
        match self {
            Role::Admin => true,
            Role::Producer => matches!(class, Class::Session | Class::Read | Class::Produce),
            Role::Worker => matches!(
                class,
                Class::Session | Class::Read | Class::Peek | Class::Consume
            ),
        }
    }
}

/// A set of roles: a connection may run a command if any of them allows it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles(u8);

impl Roles {
    /// Whether any role in the set allows `cmd`.
    pub fn allow(self, cmd: &Command) -> bool {
        let class = Class::of(cmd);
        Role::ALL
            .iter()
            .any(|r| self.0 & r.bit() != 0 && r.allows(class))
    }
}

impl std::str::FromStr for Roles {
    type Err = String;

    /// `producer`, `worker`, `admin`, or several joined by commas.
    fn from_str(s: &str) -> Result<Roles, String> {
        let mut set = 0;
        for word in s.split(',') {
            let role = Role::ALL
                .into_iter()
                .find(|r| r.name() == word)
                .ok_or_else(|| format!("unknown role {word:?} (producer, worker or admin)"))?;
            set |= role.bit();
        }
        Ok(Roles(set))
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| self.0 & r.bit() != 0)
            .map(Role::name)
            .collect();
        f.write_str(&names.join(","))
    }
}

/// The command classes of protocol.md §10.3's role table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// `quit`, `auth`: allowed before authentication.
    Session,
    /// `use`, `stats*`, `list-tubes*`, `extended-stats`: reading counts and names.
    Read,
    /// `peek*`: reading job bodies.
    Peek,
    /// `put`.
    Produce,
    /// `watch`, `ignore`, `reserve*`, `delete`, `release`, `bury`, `touch`, `fail`.
    Consume,
    /// `pause-tube`, `config-tube`, `kick`, `kick-job`, `list-dead`, `kick-dead`,
    /// `delete-dead`.
    Admin,
}

impl Class {
    /// The class of `cmd`.
    pub fn of(cmd: &Command) -> Class {
        Class::of_kind(cmd.kind())
    }

    /// The class of a kind of command: protocol.md §10.3's role table, by
    /// [`CommandKind`].
    pub fn of_kind(kind: CommandKind) -> Class {
        use CommandKind as K;
        match kind {
            K::Quit | K::Auth => Class::Session,
            K::Use
            | K::Stats
            | K::StatsJob
            | K::StatsTube
            | K::ListTubes
            | K::ListTubeUsed
            | K::ListTubesWatched
            | K::ExtendedStats => Class::Read,
            K::Peek | K::PeekReady | K::PeekDelayed | K::PeekBuried => Class::Peek,
            K::Put => Class::Produce,
            K::Watch
            | K::Ignore
            | K::Reserve
            | K::ReserveWithTimeout
            | K::ReserveJob
            | K::Delete
            | K::Release
            | K::Bury
            | K::Touch
            | K::Fail => Class::Consume,
            K::PauseTube
            | K::ConfigTube
            | K::Kick
            | K::KickJob
            | K::ListDead
            | K::KickDead
            | K::DeleteDead
            | K::ClusterAdd
            | K::ClusterRemove => Class::Admin,
        }
    }
}

struct TokenEntry {
    name: String,
    roles: Roles,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

struct CertEntry {
    subject: ServerName<'static>,
    roles: Roles,
}

/// The parsed auth file.
#[derive(Default)]
pub struct Credentials {
    tokens: Vec<TokenEntry>,
    certs: Vec<CertEntry>,
}

impl Credentials {
    /// Reads and parses the auth file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Credentials> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the auth file {}", path.display()))?;
        Credentials::parse(&text).map_err(|e| anyhow::anyhow!("auth file {}: {e}", path.display()))
    }

    /// Parses an auth file: one entry a line, `#` starts a comment line.
    ///
    /// ```text
    /// token <name> <roles> sha256:<salt hex>:<digest hex>
    /// cert  <DNS name or IP address in the certificate's SAN> <roles>
    /// ```
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut creds = Credentials::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |e: String| format!("line {}: {e}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["token", name, roles, hash] => {
                    let roles = roles.parse().map_err(at)?;
                    let (salt, digest) = parse_hash(hash).map_err(at)?;
                    creds.tokens.push(TokenEntry {
                        name: (*name).to_owned(),
                        roles,
                        salt,
                        digest,
                    });
                }
                ["cert", subject, roles] => {
                    let roles = roles.parse().map_err(at)?;
                    let subject = ServerName::try_from((*subject).to_owned())
                        .map_err(|e| at(format!("{subject:?} is not a DNS name or IP: {e}")))?;
                    creds.certs.push(CertEntry { subject, roles });
                }
                _ => {
                    return Err(at(
                        "expected `token NAME ROLES sha256:SALT:DIGEST` or `cert SUBJECT ROLES`"
                            .to_owned(),
                    ))
                }
            }
        }
        Ok(creds)
    }

    /// The name and roles of the entry whose token is `token`. Every entry is checked,
    /// in constant time each, whether or not an earlier one matched.
    fn check_token(&self, token: &[u8]) -> Option<(&str, Roles)> {
        let mut found = None;
        for entry in &self.tokens {
            let d = salted(&entry.salt, token);
            if constant_time_eq(d.as_ref(), &entry.digest) && found.is_none() {
                found = Some((entry.name.as_str(), entry.roles));
            }
        }
        found
    }

    /// The roles of the first `cert` entry whose subject the certificate is valid for
    /// (a DNS name or IP address among its subject alternative names).
    pub fn for_certificate(&self, cert: &CertificateDer<'_>) -> Option<(String, Roles)> {
        let cert = webpki::EndEntityCert::try_from(cert).ok()?;
        self.certs
            .iter()
            .find(|e| cert.verify_is_valid_for_subject_name(&e.subject).is_ok())
            .map(|e| (e.subject.to_str().into_owned(), e.roles))
    }
}

fn salted(salt: &[u8], token: &[u8]) -> ring::digest::Digest {
    let mut input = Vec::with_capacity(salt.len() + token.len());
    input.extend_from_slice(salt);
    input.extend_from_slice(token);
    digest(&SHA256, &input)
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_hash(hash: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bad = || format!("{hash:?} is not sha256:SALT:DIGEST (hex)");
    let rest = hash.strip_prefix("sha256:").ok_or_else(bad)?;
    let (salt, d) = rest.split_once(':').ok_or_else(bad)?;
    let salt = from_hex(salt).ok_or_else(bad)?;
    let d = from_hex(d).filter(|d| d.len() == 32).ok_or_else(bad)?;
    if salt.is_empty() {
        return Err(bad());
    }
    Ok((salt, d))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `token` is one `auth` accepts: 1 to [`MAX_TOKEN_LEN`] printable ASCII bytes
/// other than space.
pub fn valid_token(token: &[u8]) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN_LEN && token.iter().all(|b| b.is_ascii_graphic())
}

/// A fresh token: 32 random bytes, as 64 hex digits.
pub fn new_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    Ok(to_hex(&bytes))
}

/// The auth file line for a token `name` with `roles`, hashed with a fresh salt.
pub fn token_line(name: &str, roles: Roles, token: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        valid_token(token.as_bytes()),
        "a token is 1 to {MAX_TOKEN_LEN} printable ASCII characters without spaces"
    );
    anyhow::ensure!(
        !name.is_empty() && !name.contains(char::is_whitespace),
        "a token's name is one word"
    );
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| anyhow::anyhow!("the system's random number generator failed"))?;
    let d = salted(&salt, token.as_bytes());
    Ok(format!(
        "token {name} {roles} sha256:{}:{}",
        to_hex(&salt),
        to_hex(d.as_ref())
    ))
}

/// Authentication for the whole server: the auth file (replaced on SIGHUP) and the
/// bounds on failed attempts.
pub struct Auth {
    path: PathBuf,
    creds: RwLock<Arc<Credentials>>,
    max_failures: u32,
    delay: Duration,
    log: Mutex<FailureLog>,
}

impl Auth {
    /// Loads the auth file `config` names; `None` when there is none.
    pub fn load(config: &SecurityConfig) -> anyhow::Result<Option<Arc<Auth>>> {
        let Some(path) = &config.auth_file else {
            return Ok(None);
        };
        let creds = Credentials::load(path)?;
        tracing::info!(
            tokens = creds.tokens.len(),
            certificates = creds.certs.len(),
            file = %path.display(),
            "authentication required"
        );
        Ok(Some(Arc::new(Auth {
            path: path.clone(),
            creds: RwLock::new(Arc::new(creds)),
            max_failures: config.max_auth_failures,
            delay: Duration::from_millis(config.auth_failure_delay_ms),
            log: Mutex::new(FailureLog::default()),
        })))
    }

    /// Reads the auth file again; on an error the entries in force stay.
    pub fn reload(&self) -> anyhow::Result<()> {
        let creds = Credentials::load(&self.path)?;
        *self.creds.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(creds);
        Ok(())
    }

    fn credentials(&self) -> Arc<Credentials> {
        self.creds.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The gate for a new connection from `peer`, given its TLS client certificate.
    pub fn gate(self: &Arc<Self>, peer: String, cert: Option<&CertificateDer<'_>>) -> Gate {
        let roles = cert.and_then(|c| self.credentials().for_certificate(c));
        if let Some((subject, roles)) = &roles {
            tracing::debug!(%peer, %subject, %roles, "authenticated by certificate");
        }
        Gate {
            auth: self.clone(),
            roles: roles.map(|(_, r)| r),
            failures: 0,
            peer,
        }
    }

    fn failed(&self, peer: &str, attempt: u32) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(left_out) = log.admit(Instant::now()) {
            tracing::warn!(%peer, attempt, left_out, "auth failed");
        }
    }
}

/// Rate limit for log lines about failures clients can cause at will (failed `auth`,
/// failed TLS handshakes): at most [`LOGGED_PER_SECOND`] a second.
#[derive(Default)]
pub(super) struct FailureLog {
    second: Option<Instant>,
    logged: u32,
    left_out: u64,
}

impl FailureLog {
    /// Whether a failure at `now` is logged; if so, how many were left out before it.
    pub(super) fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= Duration::from_secs(1))
        {
            self.second = Some(now);
            self.logged = 0;
        }
        if self.logged < LOGGED_PER_SECOND {
            self.logged += 1;
            Some(std::mem::take(&mut self.left_out))
        } else {
            self.left_out += 1;
            None
        }
    }
}

type Item = Result<Command, ProtocolError>;

/// One connection's standing: its roles, and its failed attempts.
pub struct Gate {
    auth: Arc<Auth>,
    roles: Option<Roles>,
    failures: u32,
    peer: String,
}

impl Gate {
    /// Moves the commands at the front of `items` that may run into `batch`, answering
    /// through `reply` those the gate decides itself (`auth`, and commands the connection
    /// may not run, which change nothing). Stops at the first command it must answer
    /// once `batch` holds some, so replies stay in order. Returns `false` when the
    /// connection must close (too many failed attempts).
    pub async fn screen(
        &mut self,
        items: &mut VecDeque<Item>,
        batch: &mut VecDeque<Item>,
        mut reply: impl FnMut(Reply),
    ) -> bool {
        while let Some(item) = items.front() {
            let decided = match item {
                Ok(Command::Auth(_)) => true,
                Ok(cmd) => !self.roles.is_some_and(|r| r.allow(cmd)) && *cmd != Command::Quit,
                Err(_) => false,
            };
            if !decided {
                batch.extend(items.pop_front());
                continue;
            }
            if !batch.is_empty() {
                return true;
            }
            match items.pop_front() {
                Some(Ok(Command::Auth(token))) => {
                    let (answer, open) = self.authenticate(&token.0).await;
                    reply(answer);
                    if !open {
                        return false;
                    }
                }
                _ if self.roles.is_none() => reply(Reply::AuthRequired),
                _ => reply(Reply::Forbidden),
            }
        }
        true
    }

    /// Answers `auth <token>`, and whether the connection stays open.
    async fn authenticate(&mut self, token: &[u8]) -> (Reply, bool) {
        if !valid_token(token) {
            return (Reply::BadFormat, true);
        }
        if let Some((name, roles)) = self.auth.credentials().check_token(token) {
            tracing::debug!(peer = %self.peer, name, %roles, "authenticated");
            self.roles = Some(roles);
            return (Reply::Authenticated(roles.to_string()), true);
        }
        self.failures += 1;
        self.auth.failed(&self.peer, self.failures);
        tokio::time::sleep(self.auth.delay).await;
        (Reply::AuthFailed, self.failures < self.auth.max_failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_line_verifies_its_token_and_no_other() {
        let line =
            token_line("ci", "producer,worker".parse().expect("roles"), "s3cret").expect("line");
        assert!(
            line.starts_with("token ci producer,worker sha256:"),
            "{line}"
        );
        let creds = Credentials::parse(&format!("# comment\n\n{line}\n")).expect("parse");
        let (name, roles) = creds.check_token(b"s3cret").expect("known token");
        assert_eq!(
            (name, roles.to_string().as_str()),
            ("ci", "producer,worker")
        );
        assert!(creds.check_token(b"s3cret2").is_none());
        assert!(creds.check_token(b"").is_none());
    }

    #[test]
    fn two_lines_for_one_token_differ_by_their_salt() {
        let roles = "admin".parse().expect("roles");
        let a = token_line("a", roles, "tok").expect("line");
        let b = token_line("a", roles, "tok").expect("line");
        assert_ne!(a, b);
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        for (text, want) in [
            ("token a producer", "line 1"),
            (
                "\ntoken a boss sha256:00:00",
                "line 2: unknown role \"boss\"",
            ),
            ("token a admin sha256:zz:00", "not sha256:SALT:DIGEST"),
            ("token a admin md5:00:00", "not sha256:SALT:DIGEST"),
            ("cert -bad- admin", "not a DNS name"),
            ("user x", "expected"),
        ] {
            let err = Credentials::parse(text).err().expect(text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn roles_allow_exactly_their_classes() {
        use crate::protocol::{JobId, TubeName};
        let tube = TubeName::default_tube();
        let put = Command::Put {
            pri: 0,
            delay: 0,
            ttr: 1,
            body: bytes::Bytes::new(),
        };
        let producer: Roles = "producer".parse().expect("roles");
        let worker: Roles = "worker".parse().expect("roles");
        let admin: Roles = "admin".parse().expect("roles");
        assert!(producer.allow(&put) && !worker.allow(&put) && admin.allow(&put));
        assert!(!producer.allow(&Command::Reserve) && worker.allow(&Command::Reserve));
        assert!(!producer.allow(&Command::Peek(JobId(1))) && worker.allow(&Command::PeekReady));
        let pause = Command::PauseTube { tube, delay: 1 };
        assert!(!producer.allow(&pause) && !worker.allow(&pause) && admin.allow(&pause));
        assert!(producer.allow(&Command::Stats) && worker.allow(&Command::Stats));
        assert!(!Roles::default().allow(&Command::Stats));
    }

    #[test]
    fn failure_log_lines_are_bounded_per_second() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        let logged = (0..100).filter(|_| log.admit(t0).is_some()).count();
        assert_eq!(logged, LOGGED_PER_SECOND as usize);
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(90));
    }
}
