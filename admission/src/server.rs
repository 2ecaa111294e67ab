//! Listeners, connections and shutdown: the I/O shell around [`crate::review::answer`].

use crate::cli::Args;
use crate::metrics::{DecisionLabels, Metrics};
use crate::review;
use crate::store::PolicyStore;
use crate::tls::{CertSource, CertStore};
use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ck8s_policy_runtime::Runtime;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct AppState {
    store: PolicyStore,
    metrics: Metrics,
    /// Policies loaded and not shutting down.
    ready: AtomicBool,
    permits: Semaphore,
    max_inflight: usize,
    queue_timeout: Duration,
}

/// A bound, loaded server, ready to [`Server::serve`].
pub struct Server {
    args: Args,
    state: Arc<AppState>,
    https: TcpListener,
    plain: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    certs: Arc<CertStore>,
    cert_source: CertSource,
    started: Instant,
}

impl Server {
    /// Loads the policies and the certificate and binds both listeners. Every error here is
    /// a start-up error: the process should exit and say why.
    pub async fn bind(args: Args) -> anyhow::Result<Server> {
        let started = Instant::now();
        let metrics = Metrics::new();
        let cache = args
            .cache_dir
            .clone()
            .or_else(Runtime::default_artifact_dir);
        let runtime = Runtime::new(args.limits(), cache).context("starting the policy runtime")?;
        let store = PolicyStore::open(
            runtime,
            !args.no_builtin,
            args.policies.clone(),
            args.config.clone(),
            &metrics,
        )
        .map_err(|e| anyhow::anyhow!("loading policies: {e}"))?;

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
        let (key, _) = cert_source
            .load()
            .map_err(|e| anyhow::anyhow!("TLS certificate: {e}"))?;
        let certs = CertStore::new(key);
        let tls = Arc::new(
            crate::tls::server_config(certs.clone(), args.client_ca.as_deref())
                .map_err(|e| anyhow::anyhow!("TLS: {e}"))?,
        );

        let https = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding --listen {}", args.listen))?;
        let plain = TcpListener::bind(args.metrics_listen)
            .await
            .with_context(|| format!("binding --metrics-listen {}", args.metrics_listen))?;
        let state = Arc::new(AppState {
            store,
            metrics,
            ready: AtomicBool::new(true),
            permits: Semaphore::new(args.max_inflight.max(1)),
            max_inflight: args.max_inflight.max(1),
            queue_timeout: args.queue_timeout,
        });
        Ok(Server {
            args,
            state,
            https,
            plain,
            tls,
            certs,
            cert_source,
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
        let Server {
            args,
            state,
            https,
            plain,
            tls,
            certs,
            cert_source,
            started,
        } = self;
        tracing::info!(
            https = %https.local_addr()?, metrics = %plain.local_addr()?,
            policies = state.store.current().len(), ready_ms = started.elapsed().as_secs_f64() * 1e3,
            "ck8s-admission ready"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });

        let reloader = tokio::spawn(reload_loop(
            state.clone(),
            certs,
            cert_source,
            args.reload_interval,
            stop_rx.clone(),
        ));

        let probes = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_handler));
        let admission = probes
            .clone()
            .route("/validate", post(validate))
            .layer(DefaultBodyLimit::max(args.max_body_bytes))
            .with_state(state.clone());
        let probes = probes.with_state(state.clone());

        let mut plain_stop = stop_rx.clone();
        let plain_server = tokio::spawn(async move {
            axum::serve(plain, probes)
                .with_graceful_shutdown(async move { stopped(&mut plain_stop).await })
                .await
        });

        let acceptor = TlsAcceptor::from(tls);
        let graceful = GracefulShutdown::new();
        let mut stop = stop_rx.clone();
        loop {
            tokio::select! {
                accepted = https.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(c) => c,
                        Err(e) => {
                            // e.g. EMFILE: back off instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    let service = TowerToHyperService::new(admission.clone());
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let builder = auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                    });
                }
                _ = stopped(&mut stop) => break,
            }
        }

        state.ready.store(false, Ordering::SeqCst);
        tracing::info!(grace = ?args.shutdown_grace, "shutting down: draining in-flight requests");
        drop(https);
        tokio::select! {
            _ = graceful.shutdown() => tracing::info!("all connections drained"),
            _ = tokio::time::sleep(args.shutdown_grace) => tracing::warn!("shutdown grace elapsed with connections still open"),
        }
        let _ = plain_server.await;
        reloader.abort();
        Ok(())
    }
}

/// Resolves once shutdown was asked for (the guard `wait_for` returns is not `Send`, so it
/// must not live across an await in a spawned task).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
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

async fn validate(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let count = |decision: &'static str| {
        st.metrics
            .requests
            .get_or_create(&DecisionLabels { decision })
            .inc()
    };
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            count(if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            });
            return (rejection.status(), rejection.body_text()).into_response();
        }
    };
    let permit = match tokio::time::timeout(st.queue_timeout, st.permits.acquire()).await {
        Ok(Ok(p)) => p,
        _ => {
            count("overloaded");
            return match review::overloaded(&body, st.max_inflight) {
                Some(json) => json_response(json),
                None => (
                    StatusCode::BAD_REQUEST,
                    "not an admission.k8s.io/v1 AdmissionReview\n",
                )
                    .into_response(),
            };
        }
    };
    st.metrics.inflight.inc();
    // Evaluation is CPU work of tens of microseconds, but a misbehaving policy may use its
    // whole deadline: run it off the async workers so it never stalls other connections.
    let worker = st.clone();
    let result = tokio::task::spawn_blocking(move || {
        let set = worker.store.current();
        review::answer(&body, &set, &worker.metrics)
    })
    .await;
    st.metrics.inflight.dec();
    drop(permit);
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
            count(if answer.decision.allowed {
                "allow"
            } else {
                "deny"
            });
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
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.encode(),
    )
        .into_response()
}

/// Watches the certificate files and the policies directory/config.
async fn reload_loop(
    state: Arc<AppState>,
    certs: Arc<CertStore>,
    source: CertSource,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut cert_fp = source.fingerprint();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped(&mut stop) => return,
        }
        if let Some(fp) = source
            .fingerprint()
            .filter(|fp| Some(fp) != cert_fp.as_ref())
        {
            match source.load() {
                Ok((key, loaded_fp)) => {
                    certs.swap(key);
                    cert_fp = Some(loaded_fp);
                    state.metrics.reload("certificate", true);
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    // Half-written files during rotation: keep the old certificate, retry.
                    cert_fp = Some(fp);
                    state.metrics.reload("certificate", false);
                    tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous certificate");
                }
            }
        }
        let st = state.clone();
        match tokio::task::spawn_blocking(move || st.store.reload_if_changed(&st.metrics)).await {
            Ok(Ok(true)) => tracing::info!("policies reloaded"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "policy reload failed; the previous policy set stays in service")
            }
            Err(e) => tracing::error!(error = %e, "policy reload task failed"),
        }
    }
}
