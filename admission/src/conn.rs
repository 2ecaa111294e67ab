//! Connections: the cap on open connections, the timeouts of each one, which to close first.
//!
//! Every connection is in one phase at a time, and each phase has its own bound:
//!
//! | phase | until | bound | counted as |
//! | --- | --- | --- | --- |
//! | handshake | TLS is up | `--handshake-timeout` | `reason="handshake"` |
//! | idle | the first byte of the next request | `--idle-timeout` | `reason="idle"` |
//! | head | the request's headers are in | `--header-timeout` | `reason="header"` |
//! | busy | the answer is written | body: `--body-timeout` + size / `--body-min-rate` ([`crate::body`]); queue: `--queue-timeout`; evaluation: `--policy-timeout` | `reason="body"` |
//!
//! HTTP/1.1 only, so a connection carries one request at a time and the cap bounds requests
//! as well. At the cap, an idle connection is closed to make room; if none is idle, the next
//! accepted connection waits (and the listen queue holds the rest) until one ends.

use crate::metrics::ConnectionMetrics;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// The per-connection limits.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub handshake: Duration,
    pub header: Duration,
    pub idle: Duration,
}

/// hyper's read buffer per connection: headers must fit (the API server sends a few hundred
/// bytes of them); body reads come in pieces of at most this size.
const READ_BUFFER: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Idle(Instant),
    Head(Instant),
    Busy,
}

/// What a connection's task and its watchers share.
struct Shared {
    phase: Mutex<Phase>,
    /// The phase changed or the connection was asked to close.
    wake: Notify,
    evict: AtomicBool,
}

impl Shared {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
        self.wake.notify_one();
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap()
    }

    /// A read returned bytes: an idle connection has started its next request.
    fn bytes_read(&self) {
        let mut p = self.phase.lock().unwrap();
        if let Phase::Idle(_) = *p {
            *p = Phase::Head(Instant::now());
            drop(p);
            self.wake.notify_one();
        }
    }
}

/// The open connections of one listener.
pub struct Connections {
    limits: ConnLimits,
    metrics: Option<ConnectionMetrics>,
    open: Mutex<HashMap<u64, Arc<Shared>>>,
    next_id: std::sync::atomic::AtomicU64,
    /// A connection ended or became idle.
    changed: Notify,
}

/// A connection's place under the cap; leaving it frees the place.
pub struct Slot {
    id: u64,
    shared: Arc<Shared>,
    owner: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.open.lock().unwrap().remove(&self.id);
        if let Some(m) = &self.owner.metrics {
            m.open.dec();
        }
        self.owner.changed.notify_waiters();
    }
}

impl Connections {
    /// `metrics`: `None` for the plain probes listener, which is not counted.
    pub fn new(limits: ConnLimits, metrics: Option<ConnectionMetrics>) -> Arc<Connections> {
        Arc::new(Connections {
            limits,
            metrics,
            open: Mutex::new(HashMap::new()),
            next_id: 0.into(),
            changed: Notify::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A place for a new connection: at once under the cap; at the cap, after an idle
    /// connection was closed for it or a busy one ended.
    pub async fn admit(self: &Arc<Self>) -> Slot {
        let mut waited = false;
        loop {
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            {
                let mut open = self.open.lock().unwrap();
                if open.len() < self.limits.max_connections {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::new(Shared {
                        phase: Mutex::new(Phase::Handshake),
                        wake: Notify::new(),
                        evict: AtomicBool::new(false),
                    });
                    open.insert(id, shared.clone());
                    if let Some(m) = &self.metrics {
                        m.open.inc();
                    }
                    return Slot {
                        id,
                        shared,
                        owner: self.clone(),
                    };
                }
                if !waited {
                    waited = true;
                    if let Some(m) = &self.metrics {
                        m.cap_waits.inc();
                    }
                }
                // The longest idle first: it is the least likely to be reused soon.
                let idlest = open
                    .values()
                    .filter(|c| !c.evict.load(Ordering::Relaxed))
                    .filter_map(|c| match c.phase() {
                        Phase::Idle(since) => Some((since, c)),
                        _ => None,
                    })
                    .min_by_key(|(since, _)| *since);
                if let Some((_, c)) = idlest {
                    c.evict.store(true, Ordering::Relaxed);
                    c.wake.notify_one();
                }
            }
            changed.await;
        }
    }

    /// Resolves once every connection has ended.
    pub async fn drained(&self) {
        loop {
            let changed = self.changed.notified();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if self.is_empty() {
                return;
            }
            changed.await;
        }
    }

    fn timeout(&self, reason: &'static str) {
        if let Some(m) = &self.metrics {
            m.timeout(reason);
        }
    }

    fn evicted(&self) {
        if let Some(m) = &self.metrics {
            m.evicted.inc();
        }
    }
}

/// The TLS (or plain) stream, noting when bytes arrive.
struct Watched<T> {
    inner: T,
    shared: Arc<Shared>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.shared.bytes_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The service, marking the connection busy while a request is answered.
#[derive(Clone)]
struct Marked<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Marks the connection idle again when the answer is ready (or the request abandoned).
struct BusyGuard(Arc<Shared>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.set(Phase::Idle(Instant::now()));
    }
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for Marked<S>
where
    S: hyper::service::Service<hyper::Request<Incoming>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        self.shared.set(Phase::Busy);
        let guard = BusyGuard(self.shared.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(guard);
            r
        })
    }
}

/// Serves one accepted connection under `slot` until it ends, times out, is evicted, or
/// `stop` turns true (then it finishes the request in flight and closes).
pub async fn serve<IO, T, H, HF, S, B>(
    slot: Slot,
    io: IO,
    handshake: H,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    IO: Send + 'static,
    H: FnOnce(IO) -> HF,
    HF: Future<Output = std::io::Result<T>>,
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let owner = slot.owner.clone();
    let limits = owner.limits.clone();
    let shared = slot.shared.clone();
    let stream = match tokio::time::timeout(limits.handshake, handshake(io)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            owner.timeout("handshake");
            tracing::debug!("TLS handshake timed out");
            return;
        }
    };
    shared.set(Phase::Idle(Instant::now()));
    let io = TokioIo::new(Watched {
        inner: stream,
        shared: shared.clone(),
    });
    let service = Marked {
        inner: service,
        shared: shared.clone(),
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper's own header timer starts when it waits for a request, so it bounds idle and
    // head together: a backstop behind the finer watch below.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle + limits.header)
        .keep_alive(true)
        .max_buf_size(READ_BUFFER);
    let conn = builder.serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut closing = false;
    loop {
        let deadline = match shared.phase() {
            Phase::Idle(since) => Some((since + limits.idle, "idle")),
            Phase::Head(since) => Some((since + limits.header, "header")),
            Phase::Handshake | Phase::Busy => None,
        };
        let expired = async {
            match deadline {
                Some((at, reason)) => {
                    tokio::time::sleep_until(at).await;
                    reason
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        owner.timeout("header");
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            reason = expired, if !closing => {
                // Still in the phase the deadline was set for: it passed.
                let still = matches!(
                    (shared.phase(), reason),
                    (Phase::Idle(_), "idle") | (Phase::Head(_), "header")
                );
                if still {
                    owner.timeout(reason);
                    if reason == "header" {
                        return; // dropping the connection closes it
                    }
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = shared.wake.notified() => {
                if shared.evict.load(Ordering::Relaxed) && !closing {
                    owner.evicted();
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = stopped(&mut stop), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Resolves once `stop` turns true (the guard `wait_for` returns is not `Send`, so it must
/// not live across an await in a spawned task).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
