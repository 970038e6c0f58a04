//! The traits a backend implements for plain subscriptions and replies (public in
//! [`micro::dev`](crate::dev)).

use futures::future::BoxFuture;
use futures::Stream;

use super::Incoming;
use crate::error::Result;
use crate::message::Message;

/// A backend's subscription: what a [`Subscription`](crate::transport::Subscription) wraps.
pub trait SubscriptionStream: Stream<Item = Incoming> + Send + Unpin + 'static {
    /// Unsubscribes but keeps delivering what is buffered; the stream ends afterwards.
    fn drain(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// A backend's way of answering one request: what a [`Reply`](crate::transport::Reply) wraps.
pub trait ReplySink: Send + 'static {
    /// Sends the reply message.
    fn send(self: Box<Self>, message: Message) -> BoxFuture<'static, Result<()>>;
}
