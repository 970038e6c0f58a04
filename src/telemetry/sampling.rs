//! Traces that are not sampled cost their spans' bookkeeping, not their export.
//!
//! A request or event whose `traceparent` says "not sampled" (flags bit 0 clear: an upstream
//! sampler dropped the trace) still gets its `tracing` span, so log lines keep their context
//! and JSON lines their trace id, and its `traceparent` still travels on (a child with the
//! same flags), so every hop after it agrees. What it no longer gets is an OpenTelemetry span:
//! the toolkit marks the span, and everything made while its handler is polled, as unsampled,
//! and [`otel::Sampled`](super::otel::Sampled), the filter `init` puts on the OTel layer, keeps
//! them from that layer. Without that filter the OTel SDK's parent-based sampler reaches the
//! same decision, after building the span.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use crate::message::TraceParent;

thread_local! {
    /// Set while this thread makes spans for, or polls the handler of, an unsampled trace.
    static UNSAMPLED: Cell<bool> = const { Cell::new(false) };
}

/// Whether spans made now belong to a trace that is not sampled.
#[cfg(feature = "otel")]
pub(crate) fn now() -> bool {
    UNSAMPLED.with(Cell::get)
}

/// Whether a span whose parent is `parent` belongs to a trace that is not sampled: only a
/// parent that says so makes it one; a root is the OTel sampler's to decide. Always false
/// without the `otel` feature, where nothing reads the state.
pub(crate) fn unsampled(parent: Option<TraceParent>) -> bool {
    cfg!(feature = "otel") && parent.is_some_and(|p| !p.sampled())
}

/// Sets the state for as long as it lives, then puts back the one before.
struct Scope(bool);

impl Scope {
    fn enter(unsampled: bool) -> Scope {
        Scope(UNSAMPLED.with(|c| c.replace(unsampled)))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        UNSAMPLED.with(|c| c.set(self.0));
    }
}

/// Runs `make` (which makes a span) in the sampling state `unsampled`.
pub(crate) fn making<R>(unsampled: bool, make: impl FnOnce() -> R) -> R {
    let _scope = Scope::enter(unsampled);
    make()
}

/// Polls `fut` in the unsampled state: the spans and events made inside (the handler's own,
/// the calls and publishes it makes) follow the request's dropped trace.
async fn within<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    std::future::poll_fn(move |cx| -> Poll<F::Output> {
        let _scope = Scope::enter(true);
        fut.as_mut().poll(cx)
    })
    .await
}

/// `fut` itself for a sampled trace; polled [`within`] the unsampled state otherwise.
pub(crate) fn follow<F: Future>(unsampled: bool, fut: F) -> impl Future<Output = F::Output> {
    if unsampled {
        futures::future::Either::Right(within(fut))
    } else {
        futures::future::Either::Left(fut)
    }
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use super::*;

    #[test]
    fn the_state_is_put_back_after_making_and_polling() {
        let dropped = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
        let kept = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(unsampled(dropped) && !unsampled(kept) && !unsampled(None));
        assert!(making(true, now));
        assert!(!now());
        let nested = futures::executor::block_on(within(async { (now(), making(false, now), now()) }));
        assert_eq!(nested, (true, false, true));
        assert!(!now());
    }
}
