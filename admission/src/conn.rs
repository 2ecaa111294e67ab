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
//!
//! A phase's bound holds while the connection is closing too. hyper's graceful shutdown
//! finishes a request whose head has begun, so a connection asked to close (evicted, idle too
//! long, or drained) in the instant its client sent a byte would otherwise read that head with
//! no bound: a slow client could hold its place for ever, and many of them the whole cap.
//! Closing, a phase whose bound passes drops the connection at once. (hyper's own header
//! timeout is not used: the watch is the one bound, and it costs a request no timer.)
//!
//! `ck8s_admission_oldest_connection_seconds{phase}` shows the age in its phase of the oldest
//! connection in each phase: a `head` or `handshake` figure above its timeout is an escape.

use crate::metrics::ConnectionMetrics;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
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

/// A connection's phase, and since when it is in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake(Instant),
    Idle(Instant),
    Head(Instant),
    Busy(Instant),
}

impl Phase {
    /// The phases as `/metrics` names them, in [`Phase::index`] order.
    const NAMES: [&'static str; 4] = ["handshake", "idle", "head", "busy"];

    fn index(self) -> usize {
        match self {
            Phase::Handshake(_) => 0,
            Phase::Idle(_) => 1,
            Phase::Head(_) => 2,
            Phase::Busy(_) => 3,
        }
    }

    fn since(self) -> Instant {
        match self {
            Phase::Handshake(t) | Phase::Idle(t) | Phase::Head(t) | Phase::Busy(t) => t,
        }
    }

    /// When the phase's bound passes, for the phases the serving loop bounds itself (the
    /// handshake is bounded around it; a busy connection by the body, queue and evaluation
    /// limits of the request it serves).
    fn deadline(self, limits: &ConnLimits) -> Option<(Instant, &'static str)> {
        match self {
            Phase::Idle(since) => Some((since + limits.idle, "idle")),
            Phase::Head(since) => Some((since + limits.header, "header")),
            Phase::Handshake(_) | Phase::Busy(_) => None,
        }
    }
}

/// What a connection's task and its watchers share.
///
/// Only the connection's own task changes its phase, always while it polls hyper's connection,
/// and the serving loop re-reads the deadline after each such poll: a phase change wakes
/// nothing. (Waking the task from inside its own poll would make tokio reschedule it as a
/// yield and wake a second worker to steal it: a futex wake-up and a context switch on
/// another core for every request.)
struct Shared {
    phase: Mutex<Phase>,
    /// The connection was asked to close ([`Shared::evict`]).
    wake: Notify,
    evict: AtomicBool,
}

impl Shared {
    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap()
    }

    /// A read returned bytes: an idle connection has started its next request.
    fn bytes_read(&self) {
        let mut p = self.phase.lock().unwrap();
        if let Phase::Idle(_) = *p {
            *p = Phase::Head(Instant::now());
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

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The age in its phase of the oldest connection of each phase, by [`Phase::NAMES`]
    /// (zero where no connection is in that phase).
    pub fn oldest_by_phase(&self) -> [(&'static str, Duration); 4] {
        let now = Instant::now();
        let mut oldest = [Duration::ZERO; 4];
        for c in self.open.lock().unwrap().values() {
            let phase = c.phase();
            let age = now.saturating_duration_since(phase.since());
            let slot = &mut oldest[phase.index()];
            *slot = (*slot).max(age);
        }
        std::array::from_fn(|i| (Phase::NAMES[i], oldest[i]))
    }

    /// Sets `ck8s_admission_oldest_connection_seconds` (called when `/metrics` is read).
    pub fn publish_ages(&self) {
        if let Some(m) = &self.metrics {
            for (phase, age) in self.oldest_by_phase() {
                m.oldest(phase, age);
            }
        }
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
                        phase: Mutex::new(Phase::Handshake(Instant::now())),
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
        self.shared.set(Phase::Busy(Instant::now()));
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
    // No timer for hyper: its header read timeout would arm a timer of its own for every
    // request (an allocation, and an insertion into the runtime's timer wheel and a removal
    // from it), to bound what the watch below bounds already, phase by phase, closing or not.
    builder.keep_alive(true).max_buf_size(READ_BUFFER);
    let conn = builder.serve_connection(io, service);
    let mut conn = pin!(conn);
    let mut closing = false;
    // The deadline whose passing started the close, if one did.
    let mut fired = None;
    // The current phase's deadline, read again after every poll of the connection (see
    // `Shared`).
    let mut armed = None;
    // What `timer` is set to: never later than `armed`. A deadline later than it leaves it
    // alone, and when it goes off early it is set again: each request moves the deadline
    // later twice (its head, then idle), and setting a timer earlier costs the runtime's
    // timer wheel a removal and an insertion, while one that goes off early costs one such
    // step per header timeout, not per request.
    let mut timer_at = Instant::now();
    let mut timer = pin!(tokio::time::sleep_until(timer_at));
    let self_wakes = crate::self_wake::SelfWakes::new();
    loop {
        let mut asked_to_close = pin!(shared.wake.notified());
        let mut stopping = pin!(stopped(&mut stop));
        let event = self_wakes
            .run(std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                    return Poll::Ready(Event::Ended(r));
                }
                let deadline = shared.phase().deadline(&limits);
                if deadline != armed {
                    armed = deadline;
                    if let Some((at, _)) = deadline
                        && at < timer_at
                    {
                        timer_at = at;
                        timer.as_mut().reset(at);
                    }
                }
                // Armed while closing too: see the module doc.
                if let Some((at, reason)) = armed {
                    while timer.as_mut().poll(cx).is_ready() {
                        if timer_at >= at {
                            return Poll::Ready(Event::Expired(reason));
                        }
                        // Gone off before the deadline, which moved later since it was set.
                        timer_at = at;
                        timer.as_mut().reset(at);
                    }
                }
                if asked_to_close.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::AskedToClose);
                }
                if !closing && stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Stopping);
                }
                Poll::Pending
            }))
            .await;
        match event {
            Event::Ended(r) => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            Event::Expired(reason) => {
                // The same deadline fires again at once while the graceful shutdown it
                // started is under way: it is one timeout, counted once.
                if fired != armed {
                    owner.timeout(reason);
                }
                if reason == "header" || closing {
                    return; // dropping the connection closes it
                }
                fired = armed;
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            Event::AskedToClose => {
                if shared.evict.load(Ordering::Relaxed) && !closing {
                    owner.evicted();
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            Event::Stopping => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What woke the serving loop.
enum Event {
    Ended(Result<(), hyper::Error>),
    Expired(&'static str),
    AskedToClose,
    Stopping,
}

/// Resolves once `stop` turns true (the guard `wait_for` returns is not `Send`, so it must
/// not live across an await in a spawned task).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Empty;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    const HEADER: Duration = Duration::from_millis(200);
    /// How long past its header deadline a connection may take to be seen closed on a loaded
    /// machine (before the fix of issue 23 it stayed open for idle + header, the header timeout
    /// of hyper's that the connection then also had).
    const SLACK: Duration = Duration::from_secs(2);

    fn limits(max_connections: usize) -> ConnLimits {
        ConnLimits {
            max_connections,
            handshake: Duration::from_secs(10),
            header: HEADER,
            idle: Duration::from_secs(120),
        }
    }

    /// Serves one in-memory connection under `slot` (no TLS: the handshake is instant);
    /// returns the client's end and the connection's task.
    fn open(
        slot: Slot,
        stop: watch::Receiver<bool>,
    ) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(4096);
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(hyper::Response::new(Empty::<Bytes>::new()))
        });
        let task = tokio::spawn(serve(
            slot,
            server,
            |io| std::future::ready(Ok(io)),
            service,
            stop,
        ));
        (client, task)
    }

    /// Lets the connection's task reach its first wait (on this one-thread runtime).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// Asserts the connection's task ends within its header deadline (plus [`SLACK`]).
    async fn closes_in_time(task: tokio::task::JoinHandle<()>, what: &str) {
        let sent = Instant::now();
        match tokio::time::timeout(HEADER + SLACK, task).await {
            Ok(r) => r.unwrap(),
            Err(_) => panic!(
                "{what}: a connection holding 1 byte of a request head is still open {:?} after it was sent (header timeout {HEADER:?})",
                sent.elapsed()
            ),
        }
    }

    /// Issue 23: a connection picked for eviction at the cap in the instant its client sends
    /// the first byte of a request. Its task is woken for both at once and its select takes
    /// them in either order, so the pair is played many times; in no round may the connection
    /// outlive its header deadline (before the fix, hyper's graceful shutdown went on reading
    /// the head with no deadline but hyper's backstop, idle + header).
    #[tokio::test]
    async fn a_connection_evicted_as_its_request_begins_keeps_its_header_deadline() {
        let conns = Connections::new(limits(1), None);
        let (_stop_tx, stop) = watch::channel(false);
        for round in 0..16 {
            let (mut client, task) = open(conns.admit().await, stop.clone());
            settle().await; // handshake done: idle
            client.write_all(b"P").await.unwrap();
            // The next connection at the cap asks the idle one to close, before its task runs.
            let next = conns.admit();
            let mut next = pin!(next);
            tokio::select! {
                biased;
                _ = next.as_mut() => panic!("round {round}: a place was free at the cap"),
                _ = std::future::ready(()) => {}
            }
            closes_in_time(task, &format!("evicted, round {round}")).await;
            drop(next.await);
            drop(client);
        }
    }

    /// The same with the connection closing for the drain (SIGTERM) instead.
    #[tokio::test]
    async fn a_draining_connection_keeps_its_header_deadline() {
        let conns = Connections::new(limits(4), None);
        for round in 0..16 {
            let (stop_tx, stop) = watch::channel(false);
            let (mut client, task) = open(conns.admit().await, stop);
            settle().await;
            client.write_all(b"P").await.unwrap();
            stop_tx.send(true).unwrap();
            closes_in_time(task, &format!("draining, round {round}")).await;
            drop(client);
        }
    }

    /// Sends one whole request and reads its answer's head.
    async fn one_request(client: &mut DuplexStream) {
        use tokio::io::AsyncReadExt;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: ck8s\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "the connection closed before answering");
            answer.extend_from_slice(&buf[..n]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    }

    /// After a request the connection's deadline moves later (its idle bound) while the timer
    /// still stands at the request's header deadline: the timer goes off early and is set
    /// again, and neither closes a connection before its time nor lets one outlive it.
    #[tokio::test]
    async fn a_deadline_that_moved_later_neither_closes_early_nor_late() {
        const IDLE: Duration = Duration::from_millis(900);
        let conns = Connections::new(
            ConnLimits {
                idle: IDLE,
                ..limits(4)
            },
            None,
        );
        let (_stop_tx, stop) = watch::channel(false);

        // Idle after a request: open past the header deadline, closed at the idle one.
        let (mut client, task) = open(conns.admit().await, stop.clone());
        settle().await;
        one_request(&mut client).await;
        let idle_since = Instant::now();
        tokio::time::sleep(HEADER * 2).await;
        assert!(
            !task.is_finished(),
            "an idle connection closed at its last request's header deadline"
        );
        tokio::time::timeout(IDLE + SLACK, task)
            .await
            .expect("an idle connection outlived --idle-timeout")
            .unwrap();
        assert!(
            idle_since.elapsed() >= IDLE,
            "closed after {:?}, before --idle-timeout",
            idle_since.elapsed()
        );

        // The next request's head after such a timer: its header deadline holds.
        let (mut client, task) = open(conns.admit().await, stop.clone());
        settle().await;
        one_request(&mut client).await;
        tokio::time::sleep(HEADER * 2).await;
        one_request(&mut client).await;
        client.write_all(b"P").await.unwrap();
        closes_in_time(task, "a head after two requests").await;
    }

    /// What `/metrics` shows: the age in its phase of the oldest connection of each phase.
    #[tokio::test]
    async fn the_oldest_connection_of_each_phase_is_reported() {
        let conns = Connections::new(limits(4), None);
        let (_stop_tx, stop) = watch::channel(false);
        let age = |phase: &str| {
            conns
                .oldest_by_phase()
                .into_iter()
                .find(|(p, _)| *p == phase)
                .unwrap()
                .1
        };
        let (_idle_client, _idle) = open(conns.admit().await, stop.clone());
        let (mut slow_client, slow) = open(conns.admit().await, stop.clone());
        settle().await;
        slow_client.write_all(b"PO").await.unwrap();
        tokio::time::sleep(HEADER / 2).await;
        let head = age("head");
        assert!(head >= HEADER / 2 && head < HEADER, "head age {head:?}");
        assert!(age("idle") >= HEADER / 2, "idle age {:?}", age("idle"));
        assert_eq!(age("busy"), Duration::ZERO);
        assert_eq!(age("handshake"), Duration::ZERO);
        closes_in_time(slow, "dribbling").await;
        assert_eq!(
            age("head"),
            Duration::ZERO,
            "the cut connection left the table"
        );
    }
}
