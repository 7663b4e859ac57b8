//! The operator's HTTP listener (`--metrics-listen`, off unless given): `/metrics` in
//! OpenMetrics text, `/healthz` and `/readyz`.
//!
//! It is bound before the log is replayed, so during recovery `/healthz` answers 200 and
//! `/readyz` 503 with `{"ready":false,"reasons":["recovering"]}`. Once the broker is
//! serving, `/readyz` answers 200 unless one of these holds (each is a reason in the JSON):
//! `log-failed` (the log is poisoned; nothing can be confirmed until a restart), `draining`,
//! `stopping`, `log-full`, `min-free-disk`, `open-files` (new jobs are being refused), and in
//! cluster mode `no-leader` (the node knows no leader: its clients get `NO_QUORUM`).
//!
//! What the listener can be made to hold is bounded: at most `--metrics-max-connections`
//! HTTP connections are served at once (more wait in the kernel's accept queue), each
//! serves one request and is closed, and a connection that has not been answered within
//! `--command-timeout` seconds is dropped.

mod export;
mod names;
mod timings;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use export::OTHER_TUBES;
pub use timings::{AtomicHistogram, HistogramSnapshot, Timings};

use super::Broker;

/// Settings of the metrics listener (`--metrics-*` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Tubes with series of their own; the rest are summed under `tube="_other"`.
    pub max_tubes: u64,
    /// HTTP connections served at once (at least 1).
    pub max_connections: u64,
}

/// Default `--metrics-max-tubes`.
pub const DEFAULT_MAX_TUBES: u64 = 100;
/// Default `--metrics-max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 8;

/// What the HTTP handlers read: the broker once recovery is done.
struct Shared {
    broker: OnceLock<Arc<Broker>>,
    max_tubes: usize,
}

/// The running listener; stops (with every connection it serves) when dropped.
pub struct MetricsServer {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `settings.listen` and starts serving; `/readyz` says `recovering` until
    /// [`MetricsServer::serving`] is called.
    pub async fn start(
        settings: &MetricsSettings,
        request_timeout: Option<Duration>,
    ) -> anyhow::Result<MetricsServer> {
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding --metrics-listen {}", settings.listen))?;
        let addr = listener.local_addr().context("metrics listener address")?;
        tracing::info!(%addr, "metrics listening");
        let shared = Arc::new(Shared {
            broker: OnceLock::new(),
            max_tubes: usize::try_from(settings.max_tubes).unwrap_or(usize::MAX),
        });
        let permits = usize::try_from(settings.max_connections.max(1)).unwrap_or(usize::MAX);
        let task = tokio::spawn(accept_loop(
            listener,
            shared.clone(),
            Arc::new(Semaphore::new(permits.min(Semaphore::MAX_PERMITS))),
            request_timeout,
        ));
        Ok(MetricsServer { shared, task })
    }

    /// Recovery is done: answer from `broker` from now on.
    pub fn serving(&self, broker: Arc<Broker>) {
        let _ = self.shared.broker.set(broker);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    timeout: Option<Duration>,
) {
    // Owning the connection tasks here means aborting this task ends them too.
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => break stream,
                    Err(e) => {
                        tracing::debug!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&req, &shared)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            match timeout {
                Some(limit) => {
                    let _ = tokio::time::timeout(limit, conn).await;
                }
                None => {
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
        while conns.try_join_next().is_some() {}
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
/// The OpenMetrics content type Prometheus asks for.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn handle<B>(req: &Request<B>, shared: &Shared) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET\n".to_owned(),
        );
    }
    match req.uri().path() {
        "/metrics" => match scrape(shared) {
            Ok(text) => respond(StatusCode::OK, OPENMETRICS, text),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode the metrics");
                respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, format!("{e}\n"))
            }
        },
        "/healthz" => respond(StatusCode::OK, JSON, "{\"status\":\"ok\"}\n".to_owned()),
        "/readyz" => {
            let reasons = not_ready(shared);
            let status = if reasons.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let body = serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons });
            respond(status, JSON, format!("{body}\n"))
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

/// Why the server should not be sent traffic now (empty: ready).
fn not_ready(shared: &Shared) -> Vec<&'static str> {
    let Some(broker) = shared.broker.get() else {
        return vec!["recovering"];
    };
    broker.inspect(|engine, journal| {
        [
            (journal.watermark().is_poisoned(), "log-failed"),
            (engine.draining(), "draining"),
            (journal.is_stopping(), "stopping"),
            (journal.log_full(), "log-full"),
            (engine.below_disk_floor(), "min-free-disk"),
            (journal.out_of_files(), "open-files"),
            (broker.has_no_leader(), "no-leader"),
        ]
        .into_iter()
        .filter_map(|(holds, reason)| holds.then_some(reason))
        .collect()
    })
}

/// The OpenMetrics text of one scrape.
fn scrape(shared: &Shared) -> Result<String, std::fmt::Error> {
    let mut exposition = export::Exposition::default();
    if let Some(broker) = shared.broker.get() {
        let now = broker.clock().now();
        let (server, tubes) = broker.inspect(|engine, _| {
            let mut names = engine.tube_names();
            names.sort();
            let tubes: Vec<(String, Bytes)> = names
                .iter()
                .enumerate()
                .filter_map(|(i, name)| {
                    let own = i < shared.max_tubes && name.as_str() != OTHER_TUBES;
                    let label = if own { name.as_str() } else { OTHER_TUBES };
                    engine
                        .tube_stats_document(name, now)
                        .map(|doc| (label.to_owned(), doc))
                })
                .collect();
            (engine.stats_document(now), tubes)
        });
        exposition.add_server_stats(&String::from_utf8_lossy(&server));
        for (label, doc) in &tubes {
            exposition.add_tube_stats(label, &String::from_utf8_lossy(doc));
        }
        exposition.add_timings(broker.timings());
    }
    exposition.encode()
}

/// Starts the listener `config.metrics` asks for, if any (see [`MetricsServer::start`]).
pub async fn start(config: &crate::config::ServerConfig) -> anyhow::Result<Option<MetricsServer>> {
    let Some(settings) = &config.metrics else {
        return Ok(None);
    };
    let timeout = (config.connections.command_timeout > 0)
        .then(|| Duration::from_secs(config.connections.command_timeout));
    MetricsServer::start(settings, timeout).await.map(Some)
}

/// The server now accepts connections: the metrics listener (if any) answers from
/// `broker`, and systemd is told the service is ready.
pub fn serving(metrics: Option<&MetricsServer>, broker: &Arc<Broker>) {
    if let Some(metrics) = metrics {
        metrics.serving(broker.clone());
    }
    super::notify::ready();
}
