//! The stop signal of a subscription loop, checked before every message at the cost of an
//! atomic load.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use futures::future::BoxFuture;
use tokio::sync::watch;

/// Turns true (or its sender is dropped) when a subscription loop must stop taking messages.
///
/// A loop asks [`asked`](StopSignal::asked) before each message: that reads the channel's
/// version and nothing more. Only when the loop is about to wait does it call
/// [`poll_asked`](StopSignal::poll_asked), which registers its waker with the channel (a
/// waiter under a lock), and that only when the waker or the value changed since the last
/// time, so a busy loop pays for the wait once, not per message.
pub(crate) struct StopSignal {
    probe: watch::Receiver<bool>,
    stopping: BoxFuture<'static, ()>,
    /// The waker `stopping` was last polled with (it will wake that one).
    waiting_with: Option<Waker>,
}

impl StopSignal {
    pub(crate) fn new(mut stop: watch::Receiver<bool>) -> StopSignal {
        let probe = stop.clone();
        let stopping = Box::pin(async move {
            while stop.changed().await.is_ok() {
                if *stop.borrow() {
                    return;
                }
            }
        });
        StopSignal { probe, stopping, waiting_with: None }
    }

    /// True once a stop was asked for or the sender is gone.
    pub(crate) fn asked(&mut self) -> bool {
        match self.probe.has_changed() {
            Ok(false) => false,
            Ok(true) => {
                // A new value: `stopping` saw it too, and must be polled again to wait on.
                self.waiting_with = None;
                *self.probe.borrow_and_update()
            }
            Err(_) => true,
        }
    }

    /// Ready once a stop was asked for; otherwise `cx` is woken when it is.
    pub(crate) fn poll_asked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.waiting_with.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        self.waiting_with = Some(cx.waker().clone());
        Pin::new(&mut self.stopping).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn stopped(signal: &mut StopSignal) {
        let wait = std::future::poll_fn(|cx| if signal.asked() { Poll::Ready(()) } else { signal.poll_asked(cx) });
        tokio::time::timeout(Duration::from_secs(5), wait).await.expect("the stop was seen");
    }

    #[tokio::test]
    async fn a_stop_wakes_a_waiting_loop() {
        let (tx, rx) = watch::channel(false);
        let mut signal = StopSignal::new(rx);
        assert!(!signal.asked());
        let stop = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(true).unwrap();
            tx
        });
        stopped(&mut signal).await;
        drop(stop.await);
    }

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl futures::task::ArcWake for Counting {
        fn wake_by_ref(this: &std::sync::Arc<Self>) {
            this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_false_value_does_not_stop_and_a_later_true_one_still_wakes() {
        let (tx, rx) = watch::channel(false);
        let mut signal = StopSignal::new(rx);
        let wakes = std::sync::Arc::new(Counting(Default::default()));
        let waker = futures::task::waker(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let woken = || wakes.0.load(std::sync::atomic::Ordering::SeqCst);
        // Waiting, with the same waker twice (the second poll costs nothing).
        assert!(signal.poll_asked(&mut cx).is_pending());
        assert!(signal.poll_asked(&mut cx).is_pending());
        tx.send(false).unwrap();
        assert_eq!(woken(), 1);
        assert!(!signal.asked());
        // The same waker again: the wait must be set up anew, or the next value wakes nobody.
        assert!(signal.poll_asked(&mut cx).is_pending());
        tx.send(true).unwrap();
        assert_eq!(woken(), 2, "a stop after a false value woke the loop");
        assert!(signal.asked());
    }

    #[tokio::test]
    async fn a_dropped_sender_stops() {
        let (tx, rx) = watch::channel(false);
        let mut signal = StopSignal::new(rx);
        drop(tx);
        assert!(signal.asked());
    }
}
