//! A future that wakes its own task while it is being polled is polled again at once, on the
//! same thread, instead of being rescheduled.
//!
//! Why: hyper's HTTP/1 request body is a channel. When the handler, which runs inside the
//! connection's task, first polls it, the receiver wakes the dispatcher (the same task) to read
//! the body. tokio's multi-threaded scheduler reschedules a task woken during its own poll as
//! a yield, and a yield wakes a second, parked worker to steal it: a futex wake-up and two
//! context switches on the other core for every request, for nothing (the first worker polls
//! the task again before the second one gets there). Behind a real API server, at a cluster's
//! rate, every review arrives on idle workers, and those switches were most of ck8s-admission's
//! CPU per review (BENCHMARKS.md, issue 24).

use futures::task::AtomicWaker;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, Wake, Waker};

/// How many times one poll of the task polls the future again before yielding as usual: the
/// bound keeps a future that always wakes itself (tokio's cooperative budget spent) fair.
const MAX_POLLS: usize = 8;

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const WOKEN_WHILE_POLLING: u8 = 2;

/// One per connection: the waker its futures see.
pub struct SelfWakes {
    shared: Arc<Shared>,
    waker: Waker,
}

struct Shared {
    state: AtomicU8,
    /// The task's own waker, for wakes that come while it is not being polled.
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self.state.compare_exchange(
            POLLING,
            WOKEN_WHILE_POLLING,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // The poll in progress will poll again.
            Ok(_) | Err(WOKEN_WHILE_POLLING) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl SelfWakes {
    pub fn new() -> SelfWakes {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::new(),
        });
        SelfWakes {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Runs `future`, polling it again within the same poll when it woke itself.
    pub async fn run<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        std::future::poll_fn(|cx| self.poll(future.as_mut(), cx)).await
    }

    fn poll<F: Future>(&self, mut future: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.shared.task.register(cx.waker());
        let mut inner = Context::from_waker(&self.waker);
        let state = &self.shared.state;
        for _ in 0..MAX_POLLS {
            state.store(POLLING, Ordering::Release);
            if let Poll::Ready(output) = future.as_mut().poll(&mut inner) {
                state.store(IDLE, Ordering::Release);
                return Poll::Ready(output);
            }
            let left = state.compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire);
            if left.is_ok() {
                return Poll::Pending;
            }
        }
        state.store(IDLE, Ordering::Release);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Default for SelfWakes {
    fn default() -> Self {
        SelfWakes::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// The task's wake counter, its waker, and the connection's self-wakes.
    fn setup() -> (Arc<Counted>, Waker, SelfWakes) {
        let task = Arc::new(Counted::default());
        (task.clone(), Waker::from(task), SelfWakes::new())
    }

    /// Pending `n` times, waking itself during each of those polls (as hyper's body channel
    /// does), then ready with the number of polls.
    fn wakes_itself(n: usize) -> impl Future<Output = usize> {
        let mut polls = 0;
        std::future::poll_fn(move |cx| {
            polls += 1;
            if polls > n {
                return Poll::Ready(polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })
    }

    #[test]
    fn a_self_wake_is_polled_again_without_waking_the_task() {
        let (task, waker, wakes) = setup();
        let mut cx = Context::from_waker(&waker);
        let mut run = pin!(wakes.run(wakes_itself(3)));
        assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(4));
        assert_eq!(task.0.load(Ordering::SeqCst), 0, "the task was woken");
    }

    #[test]
    fn a_future_that_keeps_waking_itself_yields_after_the_bound() {
        let (task, waker, wakes) = setup();
        let mut cx = Context::from_waker(&waker);
        let mut run = pin!(wakes.run(wakes_itself(MAX_POLLS + 2)));
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "a yield wakes the task once"
        );
        assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(MAX_POLLS + 3));
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (task, waker, wakes) = setup();
        let mut cx = Context::from_waker(&waker);
        let (tx, rx) = futures::channel::oneshot::channel::<u8>();
        let mut run = pin!(wakes.run(rx));
        assert!(run.as_mut().poll(&mut cx).is_pending());
        assert_eq!(task.0.load(Ordering::SeqCst), 0);
        std::thread::spawn(move || tx.send(7).unwrap())
            .join()
            .unwrap();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the other thread's wake was lost"
        );
        assert_eq!(run.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    }
}
