//! The HTTPS connections' threads: one single-threaded runtime per core.
//!
//! At a cluster's rate each review finds ck8s-admission asleep. On tokio's multi-threaded
//! runtime the worker that wakes for it also wakes a second worker, which finds nothing to do
//! and parks again: a context switch per review for nothing. A connection handed to a runtime
//! of its own is read, judged and answered on one thread, and accepted connections are dealt
//! to the runtimes in turn (the API server keeps its connections open, so they stay spread).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;
use tokio::runtime::{Builder, Handle};
use tokio::sync::oneshot;

pub struct Workers {
    runtimes: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped with the pool: each runtime then stops, and what still runs on it with it.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (mut runtimes, mut stop) = (Vec::new(), Vec::new());
        for i in 0..count.max(1) {
            let runtime = Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = oneshot::channel::<()>();
            runtimes.push(runtime.handle().clone());
            std::thread::Builder::new()
                .name(format!("ck8s-https-{i}"))
                .spawn(move || runtime.block_on(rx).unwrap_or_default())?;
            stop.push(tx);
        }
        Ok(Workers {
            runtimes,
            next: AtomicUsize::new(0),
            _stop: stop,
        })
    }

    /// Serves `tcp` on the next runtime: `serve` runs there, with the stream registered there.
    pub fn serve<F>(&self, tcp: TcpStream, serve: impl FnOnce(TcpStream) -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        let moved = tcp.into_std().map(|tcp| {
            self.runtimes[i].spawn(async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => serve(tcp).await,
                    Err(e) => tracing::warn!(error = %e, "cannot serve the connection on its thread"),
                }
            })
        });
        if let Err(e) = moved {
            tracing::warn!(error = %e, "cannot hand the connection to its thread");
        }
    }
}
