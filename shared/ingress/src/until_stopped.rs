//! Serving a connection until the server stops, without asking the stop signal at every
//! wake-up of the connection.
//!
//! `tokio::select!` over a connection and `CancellationToken::cancelled()` polls both whenever
//! the task wakes, which is at least once per request, and the token's poll takes its mutex and
//! re-registers with its `Notify` under another one: about 250 instructions per delivery
//! (tests/bench/webhook/instructions.sh). Here the stop future is polled with a waker of its
//! own, so it is polled once to register and then only after that waker fires; each wake-up of
//! the connection costs a check of one flag and of the task's waker instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Polls `conn` to completion; once `stop` is ready, calls `on_stop` on the connection (for
/// example hyper's `graceful_shutdown`) and keeps polling it.
pub(crate) struct UntilStopped<'a, C, S, F> {
    conn: Pin<&'a mut C>,
    stop: Pin<&'a mut S>,
    on_stop: Option<F>,
    wake: Arc<StopWake>,
}

impl<'a, C, S, F> UntilStopped<'a, C, S, F>
where
    C: Future,
    S: Future<Output = ()>,
    F: FnOnce(Pin<&mut C>),
{
    pub(crate) fn new(conn: Pin<&'a mut C>, stop: Pin<&'a mut S>, on_stop: F) -> Self {
        UntilStopped {
            conn,
            stop,
            on_stop: Some(on_stop),
            // Set, so that the first poll polls `stop` and registers its waker.
            wake: Arc::new(StopWake {
                fired: AtomicBool::new(true),
                task: Mutex::new(None),
            }),
        }
    }
}

/// The waker `stop` is polled with: it marks the stop as worth polling again and wakes the task.
struct StopWake {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for StopWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The flag first: the task, once woken, must find it set.
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

// Nothing is pinned through the wrapper: `conn` and `stop` are pinned references already, and
// `on_stop` is only ever moved out whole.
impl<C, S, F> Unpin for UntilStopped<'_, C, S, F> {}

impl<C, S, F> Future for UntilStopped<'_, C, S, F>
where
    C: Future,
    S: Future<Output = ()>,
    F: FnOnce(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        if this.on_stop.is_some() {
            {
                // The task to wake when `stop` fires: the one polling now (the same one each
                // time under tokio, so this is only a comparison).
                let mut task = this.wake.task.lock().unwrap_or_else(|p| p.into_inner());
                if !task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
                    *task = Some(cx.waker().clone());
                }
            }
            if this.wake.fired.swap(false, Ordering::AcqRel) {
                let waker = Waker::from(Arc::clone(&this.wake));
                let ready = this
                    .stop
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_ready();
                if ready && let Some(on_stop) = this.on_stop.take() {
                    on_stop(this.conn.as_mut());
                }
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A connection that stays pending, counting its polls, until `on_stop` flags it, and then
    /// finishes on its next poll.
    struct Conn {
        polls: Arc<AtomicUsize>,
        stopping: bool,
    }

    impl Future for Conn {
        type Output = &'static str;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<&'static str> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.stopping {
                Poll::Ready("stopped")
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn the_stop_reaches_a_pending_connection_and_is_asked_once_per_firing() {
        let stop = CancellationToken::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let stopped_calls = Arc::new(AtomicUsize::new(0));
        let task = {
            let (stop, polls, stopped_calls) = (stop.clone(), polls.clone(), stopped_calls.clone());
            tokio::spawn(async move {
                let conn = pin!(Conn {
                    polls,
                    stopping: false
                });
                let cancelled = pin!(stop.cancelled());
                UntilStopped::new(conn, cancelled, |mut c: Pin<&mut Conn>| {
                    stopped_calls.fetch_add(1, Ordering::Relaxed);
                    c.stopping = true;
                })
                .await
            })
        };
        // Let it park: the connection was polled and is pending.
        while polls.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        stop.cancel();
        let got = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert_eq!(got.ok().and_then(Result::ok), Some("stopped"));
        assert_eq!(stopped_calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_stop_already_fired_is_seen_on_the_first_poll() {
        let stop = CancellationToken::new();
        stop.cancel();
        let polls = Arc::new(AtomicUsize::new(0));
        let conn = pin!(Conn {
            polls: polls.clone(),
            stopping: false
        });
        let cancelled = pin!(stop.cancelled());
        let got = UntilStopped::new(conn, cancelled, |mut c: Pin<&mut Conn>| {
            c.stopping = true;
        })
        .await;
        assert_eq!(got, "stopped");
        assert_eq!(polls.load(Ordering::Relaxed), 1);
    }

    /// Wake-ups of the connection alone do not poll the stop future again.
    #[tokio::test]
    async fn the_stop_future_is_not_polled_on_the_connections_wake_ups() {
        struct CountingStop {
            polls: Arc<AtomicUsize>,
        }
        impl Future for CountingStop {
            type Output = ();
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                self.polls.fetch_add(1, Ordering::Relaxed);
                Poll::Pending
            }
        }
        /// Ready after `left` polls, waking itself each time.
        struct Busy {
            left: usize,
        }
        impl Future for Busy {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                if self.left == 0 {
                    return Poll::Ready(());
                }
                self.left -= 1;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let stop_polls = Arc::new(AtomicUsize::new(0));
        let conn = pin!(Busy { left: 50 });
        let stop = pin!(CountingStop {
            polls: stop_polls.clone()
        });
        UntilStopped::new(conn, stop, |_: Pin<&mut Busy>| {}).await;
        assert_eq!(stop_polls.load(Ordering::Relaxed), 1);
    }
}
