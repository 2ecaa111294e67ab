//! Listeners, connections and shutdown: the I/O shell around [`crate::review::answer`].

use crate::body::{BodyError, BodyLimits, Budget};
use crate::cli::Args;
use crate::cluster::ClusterCache;
use crate::conn::{ConnLimits, Connections, stopped};
use crate::metrics::Metrics;
use crate::review;
use crate::store::PolicyStore;
use crate::tls::{CertSource, CertStore};
use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ck8s_policy_runtime::Runtime;
use hyper_util::service::TowerToHyperService;
use rustls::server::danger::ClientCertVerifier;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// Open connections at most on the plain probes listener (kubelet and Prometheus need a few).
const PROBE_CONNECTIONS: usize = 32;

/// Bytes taken from an HTTPS connection's socket per read, below TLS. rustls asks for at most
/// 4 KiB at a time, so the API server's 8.7 KB review of a 4 KB Deployment took three
/// `recvfrom` calls; with this buffer one read takes all that has arrived (BENCHMARKS.md,
/// "One read per review"). 16 KiB, a TLS record's largest plaintext: at the connection cap
/// (256 by default) 4 MiB at most.
const SOCKET_READ: usize = 16 << 10;

struct AppState {
    store: PolicyStore,
    cluster: ClusterCache,
    metrics: Metrics,
    /// Policies loaded and not shutting down.
    ready: AtomicBool,
    permits: Semaphore,
    queue_timeout: Duration,
    budget: Budget,
    body_limits: BodyLimits,
    /// The HTTPS listener's connections (their ages are read into `/metrics`).
    connections: Arc<Connections>,
    /// [`set_id`] of a policy set that has outlived [`INLINE_BUDGET`]: its evaluations run on
    /// the blocking pool. 0: none.
    offloaded: AtomicUsize,
    /// Whether evaluations may run on the async workers at all: not when there is only one
    /// (a runtime of one thread would stall every connection behind an evaluation).
    inline: bool,
}

/// How much CPU an evaluation may take on the async worker that read the request. Evaluations
/// take tens of microseconds: run where the request was read, they spare each review two
/// thread hand-offs (most of ck8s-admission's CPU per review at a cluster's rate). A set that
/// once computes longer (a slow or runaway policy, which may use its whole deadline) runs on
/// the blocking pool from then on, so it stalls the other connections at most once. The
/// thread's CPU time, not the wall clock: an evaluation the kernel preempted for a few
/// milliseconds (a busy or virtualised machine) is not a slow set, and once offloaded a set
/// stays so.
const INLINE_BUDGET: Duration = Duration::from_millis(5);

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// A policy set's identity while it is in service (its address: a set that replaces it at
/// the same address after it is freed inherits the offloading, which costs only speed).
fn set_id(set: &Arc<crate::store::Served>) -> usize {
    Arc::as_ptr(set) as usize
}

/// A bound, loaded server, ready to [`Server::serve`].
pub struct Server {
    args: Args,
    state: Arc<AppState>,
    https: TcpListener,
    plain: TcpListener,
    /// Swapped whole when the client CA changes; new connections take the one in service.
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    certs: Arc<CertStore>,
    cert_source: CertSource,
    /// Fingerprints of the certificate and client CA files in service.
    fingerprints: (Option<String>, Option<String>),
    started: Instant,
}

impl Server {
    /// Loads the policies and the certificate and binds both listeners. Every error here is
    /// a start-up error: the process should exit and say why.
    pub async fn bind(args: Args) -> anyhow::Result<Server> {
        let started = Instant::now();
        args.check().map_err(|e| anyhow::anyhow!(e))?;
        let cert_source = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => CertSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => {
                tracing::warn!(
                    "development mode: no --tls-cert/--tls-key, serving a generated self-signed certificate for localhost; never use this in a cluster"
                );
                CertSource::SelfSigned
            }
        };
        // Compiling policies and reading files: on a blocking thread, not an async worker.
        let (metrics, store, key, verifier, fingerprints) = {
            let (args, cert_source) = (args.clone(), cert_source.clone());
            tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let metrics = Metrics::new();
                let cache = args
                    .cache_dir
                    .clone()
                    .or_else(Runtime::default_artifact_dir);
                let runtime =
                    Runtime::new(args.limits(), cache).context("starting the policy runtime")?;
                let store = PolicyStore::open(runtime, args.policy_sources(), &metrics)
                    .map_err(|e| anyhow::anyhow!("loading policies: {e}"))?;
                let (key, cert_fp) = cert_source
                    .load()
                    .map_err(|e| anyhow::anyhow!("TLS certificate: {e}"))?;
                let cert_fp = matches!(cert_source, CertSource::Files { .. }).then_some(cert_fp);
                let ca_fp = args
                    .client_ca
                    .as_deref()
                    .and_then(|p| crate::tls::fingerprint(&[p]));
                let verifier = args
                    .client_ca
                    .as_deref()
                    .map(crate::tls::client_verifier)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
                Ok((metrics, store, key, verifier, (cert_fp, ca_fp)))
            })
            .await
            .context("start-up task")??
        };
        let certs = CertStore::new(key);
        let tls = Arc::new(ArcSwap::from_pointee(
            crate::tls::server_config(certs.clone(), verifier)
                .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        ));

        let https = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        let plain = TcpListener::bind(args.metrics_listen)
            .await
            .with_context(|| format!("binding --metrics-listen {}", args.metrics_listen))?;
        let budget = Budget::new(args.max_inflight_bytes, metrics.connections.clone());
        let connections = Connections::new(
            ConnLimits {
                max_connections: args.max_connections,
                handshake: args.handshake_timeout,
                header: args.header_timeout,
                idle: args.idle_timeout,
            },
            Some(metrics.connections.clone()),
        );
        let cluster = ClusterCache::new(args.kubeconfig.clone());
        cluster.watch(&store.current().set.vap_needs()).await;
        if let Some(name) = &args.restore_pause {
            match cluster.client().await {
                Ok(client) => {
                    tokio::spawn(crate::breakglass::restore_loop(
                        client,
                        name.clone(),
                        metrics.paused.clone(),
                        metrics.pause_restores.clone(),
                    ));
                }
                Err(e) => anyhow::bail!("--restore-pause needs the API server: {e}"),
            }
        }
        let state = Arc::new(AppState {
            connections,
            store,
            cluster,
            metrics,
            ready: AtomicBool::new(true),
            permits: Semaphore::new(args.max_inflight.max(1)),
            offloaded: AtomicUsize::new(0),
            inline: {
                let runtime = tokio::runtime::Handle::current();
                runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
                    && runtime.metrics().num_workers() > 1
            },
            queue_timeout: args.queue_timeout,
            budget,
            body_limits: BodyLimits {
                max_bytes: args.max_body_bytes,
                base_timeout: args.body_timeout,
                min_rate: args.body_min_rate,
            },
        });
        Ok(Server {
            args,
            state,
            https,
            plain,
            tls,
            certs,
            cert_source,
            fingerprints,
            started,
        })
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.plain
            .local_addr()
            .expect("bound listener has an address")
    }

    /// Serves until `shutdown` completes, then stops accepting, reports not-ready, and lets
    /// in-flight requests finish (up to `--shutdown-grace`).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(
            https = %self.https.local_addr()?, metrics = %self.plain.local_addr()?,
            policies = self.state.store.current().set.len(), ready_ms = self.started.elapsed().as_secs_f64() * 1e3,
            "ck8s-admission ready"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let reloader = tokio::spawn(reload_loop(
            Reloader {
                state: self.state.clone(),
                certs: self.certs,
                tls: self.tls.clone(),
                cert_fp: self.fingerprints.0,
                cert_source: self.cert_source,
                client_ca_fp: self.fingerprints.1,
                client_ca: self.args.client_ca.clone(),
            },
            self.args.reload_interval,
            self.args.watched_dirs(),
            stop_rx.clone(),
        ));

        let probes = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_handler));
        let admission = probes
            .clone()
            .route("/validate", post(validate))
            .with_state(self.state.clone());
        let probes = probes.with_state(self.state.clone());

        let https_conns = self.state.connections.clone();
        let handshake_metrics = self.state.metrics.connections.clone();
        let plain_conns = Connections::new(
            ConnLimits {
                max_connections: PROBE_CONNECTIONS,
                ..https_conns.limits().clone()
            },
            None,
        );
        let plain_server = tokio::spawn(accept_loop(
            self.plain,
            plain_conns.clone(),
            stop_rx.clone(),
            move |tcp, slot, stop| {
                let service = TowerToHyperService::new(probes.clone());
                let ready = |tcp| std::future::ready(Ok(tcp));
                tokio::spawn(crate::conn::serve(slot, tcp, ready, service, stop));
            },
        ));
        accept_loop(
            self.https,
            https_conns.clone(),
            stop_rx.clone(),
            move |tcp, slot, stop| {
                let acceptor = TlsAcceptor::from(self.tls.load_full());
                let service = TowerToHyperService::new(admission.clone());
                let metrics = handshake_metrics.clone();
                let handshake = move |tcp| async move {
                    let tcp = tokio::io::BufReader::with_capacity(SOCKET_READ, tcp);
                    let stream = acceptor.accept(tcp).await?;
                    if let Some(kind) = stream.get_ref().1.handshake_kind() {
                        metrics.handshake(kind);
                    }
                    Ok(stream)
                };
                tokio::spawn(crate::conn::serve(slot, tcp, handshake, service, stop));
            },
        )
        .await;

        self.state.ready.store(false, Ordering::SeqCst);
        tracing::info!(grace = ?self.args.shutdown_grace, "shutting down: draining in-flight requests");
        let _ = plain_server.await;
        tokio::select! {
            _ = async { https_conns.drained().await; plain_conns.drained().await } => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(self.args.shutdown_grace) => tracing::warn!("shutdown grace elapsed with connections still open"),
        }
        reloader.abort();
        Ok(())
    }
}

/// Accepts until `stop`, each connection under a place in `conns`, and hands it to `serve`
/// (which spawns its task); the listener is closed when it returns.
async fn accept_loop(
    listener: TcpListener,
    conns: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    serve: impl Fn(tokio::net::TcpStream, crate::conn::Slot, watch::Receiver<bool>),
) {
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // e.g. EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => return,
        };
        let slot = tokio::select! {
            slot = conns.admit() => slot,
            _ = stopped(&mut stop) => return,
        };
        let _ = tcp.set_nodelay(true);
        serve(tcp, slot, stop.clone());
    }
}

/// Binds and serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = Server::bind(args).await?;
    server.serve(shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

async fn validate(State(st): State<Arc<AppState>>, request: Request) -> Response {
    let start = Instant::now();
    let queue_until = tokio::time::Instant::now() + st.queue_timeout;
    let count = |decision: &'static str| st.metrics.decisions.count(decision);
    let content_length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let read = st
        .budget
        .read(
            request.into_body(),
            content_length,
            &st.body_limits,
            queue_until,
        )
        .await;
    // Answers given before the whole body was read end the connection: what is left of the
    // body must not be taken for the next request.
    let (body, place) = match read {
        Ok(read) => read,
        Err(BodyError::TooLarge) => {
            count("too_large");
            return closing((
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body over --max-body-bytes\n",
            ));
        }
        Err(BodyError::TooSlow) => {
            count("too_slow");
            st.metrics.connections.timeout("body");
            return closing((StatusCode::REQUEST_TIMEOUT, "request body too slow\n"));
        }
        Err(BodyError::Overloaded { prefix }) => {
            count("overloaded");
            return closing(overloaded(&prefix));
        }
        Err(BodyError::Broken(e)) => {
            count("bad_request");
            return closing((
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {e}\n"),
            ));
        }
    };
    let permit = match tokio::time::timeout_at(queue_until, st.permits.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            count("overloaded");
            return overloaded(&body);
        }
    };
    st.metrics.inflight.inc();
    let served = st.store.current();
    let result = if !st.inline || st.offloaded.load(Ordering::Relaxed) == set_id(&served) {
        let worker = st.clone();
        tokio::task::spawn_blocking(move || {
            review::answer(&body, &served, Some(&worker.cluster), &worker.metrics)
        })
        .await
    } else {
        let start = thread_cpu_time();
        let answer = review::answer(&body, &served, Some(&st.cluster), &st.metrics);
        let computed = thread_cpu_time().saturating_sub(start);
        if computed > INLINE_BUDGET {
            st.offloaded.store(set_id(&served), Ordering::Relaxed);
            tracing::warn!(
                cpu_ms = computed.as_millis() as u64,
                "an evaluation outlived the inline budget: this policy set now runs off the async workers"
            );
        }
        Ok(answer)
    };
    st.metrics.inflight.dec();
    drop(permit);
    drop(place);
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            count("error");
            tracing::error!(error = %e, "evaluation task failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "evaluation failed\n").into_response();
        }
    };
    let response = match result {
        Ok(answer) => {
            count(answer.decision_label());
            json_response(answer.body)
        }
        Err(e) => {
            count("bad_request");
            (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()
        }
    };
    st.metrics
        .request_seconds
        .observe(start.elapsed().as_secs_f64());
    response
}

/// The "overloaded" answer: a denial with the review's uid when the first bytes of the body
/// name it (the API server shows its message), else a plain HTTP 429 (the API server then
/// applies the webhook's failurePolicy; without Retry-After its client does not retry).
fn overloaded(body_prefix: &[u8]) -> Response {
    const MESSAGE: &str = "ck8s-admission is overloaded (no room for the review within --queue-timeout); retry the request";
    match crate::body::uid_in_prefix(body_prefix) {
        Some(uid) => json_response(review::overloaded(&uid, MESSAGE.to_string())),
        None => (StatusCode::TOO_MANY_REQUESTS, format!("{MESSAGE}\n")).into_response(),
    }
}

/// `response` with `Connection: close`.
fn closing(response: impl IntoResponse) -> Response {
    let mut r = response.into_response();
    r.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    r
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    if st.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_handler(State(st): State<Arc<AppState>>) -> Response {
    st.connections.publish_ages();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

/// What the reload loop watches, and the fingerprints of what is in service.
struct Reloader {
    state: Arc<AppState>,
    certs: Arc<CertStore>,
    tls: Arc<ArcSwap<rustls::ServerConfig>>,
    cert_source: CertSource,
    cert_fp: Option<String>,
    client_ca: Option<PathBuf>,
    client_ca_fp: Option<String>,
}

impl Reloader {
    /// One round: file reads, parsing and compiling, so it runs on a blocking thread. `true`
    /// when a new policy set went into service.
    fn tick(&mut self) -> bool {
        let metrics = &self.state.metrics;
        if let Some(fp) = self
            .cert_source
            .fingerprint()
            .filter(|fp| Some(fp) != self.cert_fp.as_ref())
        {
            match self.cert_source.load() {
                Ok((key, loaded_fp)) => {
                    self.certs.swap(key);
                    self.cert_fp = Some(loaded_fp);
                    metrics.reload("certificate", true);
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    // Half-written files during rotation: keep the old certificate, retry.
                    self.cert_fp = Some(fp);
                    metrics.reload("certificate", false);
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous certificate");
                }
            }
        }
        if let Some(path) = &self.client_ca
            && let Some(fp) =
                crate::tls::fingerprint(&[path]).filter(|fp| Some(fp) != self.client_ca_fp.as_ref())
        {
            self.client_ca_fp = Some(fp);
            let config =
                crate::tls::client_verifier(path).and_then(|v: Arc<dyn ClientCertVerifier>| {
                    crate::tls::server_config(self.certs.clone(), Some(v))
                });
            match config {
                Ok(config) => {
                    self.tls.store(Arc::new(config));
                    metrics.reload("client_ca", true);
                    tracing::info!("client CA reloaded");
                }
                Err(e) => {
                    metrics.reload("client_ca", false);
                    tracing::error!(error = %e, "client CA reload failed; keeping the previous one");
                }
            }
        }
        match self.state.store.reload_if_changed(metrics) {
            Ok(true) => {
                tracing::info!("policies reloaded");
                return true;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(error = %e, "policy reload failed; the previous policy set stays in service")
            }
        }
        false
    }
}

/// Wakes `changed` on every file event in `dirs` (not recursive: a ConfigMap or Secret
/// volume swaps its `..data` link in the directory itself). `None` where events are not
/// available: the interval still reloads.
fn file_events(
    dirs: &[PathBuf],
    changed: Arc<tokio::sync::Notify>,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher as _;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            changed.notify_one();
        }
    })
    .inspect_err(|e| tracing::warn!(error = %e, "no file events; reloads on the interval only"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e, "no file events for this directory; it reloads on the interval only");
        }
    }
    Some(watcher)
}

/// An editor, `cp` or a ConfigMap update writes in several steps (truncate, write, rename),
/// each an event: wait until the directory has been quiet for a moment (at most a second), so
/// that one save is one reload and a half-written file is rarely read.
async fn settle(changed: &tokio::sync::Notify) {
    let quiet = Duration::from_millis(20);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::timeout(quiet, changed.notified())
        .await
        .is_ok()
        && tokio::time::Instant::now() < deadline
    {}
}

/// Watches the certificate, the client CA, and the policies directory/config.
///
/// A file event in a watched directory starts a round at once (a saved policy is in force
/// within milliseconds); the interval is the backstop for file systems without events.
async fn reload_loop(
    mut reloader: Reloader,
    every: Duration,
    watched: Vec<PathBuf>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let changed = Arc::new(tokio::sync::Notify::new());
    let _events = file_events(&watched, changed.clone());
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = changed.notified() => settle(&changed).await,
            _ = stopped(&mut stop) => return,
        }
        reloader = match tokio::task::spawn_blocking(move || {
            let reloaded = reloader.tick();
            (reloader, reloaded)
        })
        .await
        {
            Ok((r, reloaded)) => {
                if reloaded {
                    r.state
                        .cluster
                        .watch(&r.state.store.current().set.vap_needs())
                        .await;
                }
                r
            }
            Err(e) => {
                tracing::error!(error = %e, "reload task failed; reloads stop");
                return;
            }
        };
    }
}
