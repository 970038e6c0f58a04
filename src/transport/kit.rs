//! What every backend needs and would otherwise write again: subject checks, channel-fed
//! streams, delayed retries, the reconnect backoff, a stable hash, and the durable defaults.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;
use tokio::sync::mpsc;

use super::{Delivery, DurableSpec, DurableStream, Incoming, SubscriptionStream};
use crate::error::{Error, Result};
use crate::subject;

/// Most deliveries a durable member holds unsettled, unless told otherwise.
pub(crate) const DURABLE_CONCURRENCY: usize = 32;
/// How long a durable delivery may stay unsettled before the broker hands it out again.
pub(crate) const DURABLE_ACK_WAIT: Duration = Duration::from_secs(30);
/// How long a durable group is kept unused: the NATS events stream's retention too.
pub(crate) const DURABLE_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A subject (or, with `wildcards`, a subscription pattern) every backend accepts alike;
/// anything else is a [`Config`](crate::ErrorKind::Config) error.
pub(crate) fn check_subject(subject: &str, wildcards: bool) -> Result<()> {
    if subject::is_valid(subject, wildcards) {
        Ok(())
    } else {
        Err(Error::config(format!("invalid subject {subject:?}")))
    }
}

/// What a backend checks of a durable subscription before it asks the broker for one.
pub(crate) fn check_durable(spec: &DurableSpec) -> Result<()> {
    check_subject(&spec.subject, true)?;
    if spec.group.is_empty() {
        return Err(Error::config("a durable subscription needs a group"));
    }
    Ok(())
}

#[cfg(any(feature = "nats", feature = "rabbitmq"))]
/// The 64-bit FNV-1a hash: stable across processes and versions, for broker-side names.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// The backoff between attempts to restore a connection, a consumer or a subscription: 100 ms doubling to
/// 5 s, with jitter, forever.
pub(crate) fn reconnect_backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build()
}

/// The next wait of a [`reconnect_backoff`] (it never runs out).
pub(crate) fn next_delay(backoff: &mut backon::ExponentialBackoff) -> Duration {
    backoff.next().unwrap_or(Duration::from_secs(5))
}

/// Runs `then` after `delay` in the background: a retry with a delay where the broker has no
/// such thing (the delay is the feature, not a wait for something).
pub(crate) fn after<F>(delay: Duration, then: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        then.await;
    });
}

/// Spawns `fut` on the current runtime if there is one (from a `Drop`, there may be none).
pub(crate) fn spawn_if_running<F>(fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(fut);
    }
}

/// A channel a backend task feeds a subscription through.
pub(crate) trait Feed: Send + Unpin + 'static {
    type Item;
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::Item>>;
}

impl<T: Send + 'static> Feed for mpsc::Receiver<T> {
    type Item = T;
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        mpsc::Receiver::poll_recv(self, cx)
    }
}

impl<T: Send + 'static> Feed for mpsc::UnboundedReceiver<T> {
    type Item = T;
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        mpsc::UnboundedReceiver::poll_recv(self, cx)
    }
}

/// How a backend stops feeding a subscription: [`drain`](Stop::drain) stops new messages (the
/// feed then ends after what it holds); dropping the `Stop` stops it for good.
pub(crate) trait Stop: Send + Unpin + 'static {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// A subscription (plain or durable) that yields what its backend task sends down a channel.
pub(crate) struct Fed<R, S> {
    feed: R,
    stop: S,
}

impl<R: Feed, S: Stop> Fed<R, S> {
    pub(crate) fn new(feed: R, stop: S) -> Self {
        Fed { feed, stop }
    }
}

impl<R: Feed, S: Stop> Stream for Fed<R, S> {
    type Item = R::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<R::Item>> {
        self.feed.poll_recv(cx)
    }
}

impl<R: Feed<Item = Incoming>, S: Stop> SubscriptionStream for Fed<R, S> {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        self.stop.drain()
    }
}

impl<R: Feed<Item = Delivery>, S: Stop> DurableStream for Fed<R, S> {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        self.stop.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(any(feature = "nats", feature = "rabbitmq"))]
    fn fnv1a_is_the_published_function() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn subjects_are_checked_alike() {
        assert!(check_subject("micro.event.user.>", true).is_ok());
        let e = check_subject("micro.event.user.>", false).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        assert!(check_subject("a..b", true).is_err());
        assert!(check_durable(&DurableSpec::new("micro.event.x", "")).is_err());
        assert!(check_durable(&DurableSpec::new("micro.event.x", "g")).is_ok());
    }
}
