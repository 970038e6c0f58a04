//! Handling a message where it was received: a request or event whose handling finishes at
//! once (an async fn that does not wait, a reply the connection takes without waiting) costs no
//! task; only handling that has to wait gets one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

/// Polls `handling` once, in the caller's task; if it is not done, spawns it on the current
/// arbiter to finish there.
///
/// The first poll runs with a waker that does nothing: a handling that waits is spawned right
/// after, and a spawned task is always polled at once, with its own waker, which is the one
/// every resource must wake (a future's contract: the waker of the latest poll). So nothing
/// is missed, and the subscription loop that calls this is never woken for a handling's sake.
///
/// A panic that escapes `handling` (handlers' own panics are caught inside it) is logged and
/// ends this handling only, as it would end its task: the loop that received the message goes
/// on.
pub(crate) fn run_or_spawn(handling: impl Future<Output = ()> + 'static) {
    let mut handling = Box::pin(handling);
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    match std::panic::catch_unwind(AssertUnwindSafe(|| handling.as_mut().poll(&mut cx))) {
        Ok(Poll::Ready(())) => {}
        Ok(Poll::Pending) => {
            actix_rt::spawn(handling);
        }
        Err(panic) => {
            let msg = super::supervision::panic_message(panic.as_ref());
            tracing::error!(panic = %msg, "handling a message panicked outside its handler");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[actix_rt::test]
    async fn handling_that_is_ready_runs_before_the_call_returns() {
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        run_or_spawn(async move { d.set(true) });
        assert!(done.get());
    }

    #[actix_rt::test]
    async fn handling_that_waits_finishes_in_its_own_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        run_or_spawn(async move {
            let v = rx.await.unwrap();
            done_tx.send(v + 1).unwrap();
        });
        // The first poll registered the no-op waker; the spawned task's poll must have
        // replaced it, or this send would wake nobody.
        tokio::task::yield_now().await;
        tx.send(41).unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), done_rx).await;
        assert_eq!(got.expect("the handling finished").unwrap(), 42);
    }

    #[actix_rt::test]
    async fn a_panic_outside_a_handler_ends_only_that_handling() {
        run_or_spawn(async { panic!("boom") });
        let done = Rc::new(Cell::new(false));
        let d = done.clone();
        run_or_spawn(async move { d.set(true) });
        assert!(done.get());
    }
}
