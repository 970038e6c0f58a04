//! For backend authors: what a [`Transport`](crate::transport::Transport) implementation is
//! made of. Services and clients do not need any of it.
//!
//! - the registry's gossip messages ([`Announcement`], [`RegistryAction`], [`Discover`]), for a
//!   tool that speaks the registry protocol of `docs/protocol.md` itself;
//! - handler plumbing: [`FromRequestTuple`] and [`ArgsOf`], the extractor tuples behind
//!   `ServiceBuilder::handle` (implement [`FromRequest`](crate::server::FromRequest) and
//!   [`ArgOf`](crate::server::ArgOf) for an extractor of your own instead);
//! - plain subscriptions and replies: a backend's [`SubscriptionStream`] and [`ReplySink`],
//!   wrapped in a [`Subscription`](crate::transport::Subscription) and a
//!   [`Reply`](crate::transport::Reply);
//! - durable subscriptions: what the broker asks for ([`DurableSpec`]), the stream a backend
//!   yields ([`DurableStream`], wrapped in a [`DurableSubscription`]) and its [`Delivery`]s,
//!   each settled through an [`Acker`] around the backend's [`AckSink`].
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! use futures::StreamExt;
//! use micro::dev::DurableSpec;
//! use micro::message::Message;
//! let t = micro::transport::connect("memory://dev-doc").await?;
//! let mut sub = t.subscribe_durable(&DurableSpec::new("micro.event.order.*", "billing")).await?;
//! t.publish_durable("micro.event.order.placed", Message::new("7".into())).await?;
//! let d = sub.next().await.unwrap();
//! assert_eq!((d.subject.as_str(), d.attempt), ("micro.event.order.placed", 1));
//! d.acker.ack().await?;
//! # Ok(()) }
//! ```

pub use crate::registry::{Action as RegistryAction, Announcement, Discover};
pub use crate::server::{ArgsOf, FromRequestTuple};
pub use crate::transport::backend::{ReplySink, SubscriptionStream};
pub use crate::transport::durable::{
    AckSink, Acker, Delivery, DurableGroup, DurableSpec, DurableStream, DurableSubscription, DEFAULT_EXPIRY,
};

/// The JetStream durable consumer a durable group on a subject pattern uses (its naming rule
/// is in `docs/protocol.md` §6.1).
///
/// ```
/// let name = micro::dev::nats_consumer_name("audit", "micro.event.user.>");
/// assert!(name.starts_with("audit__user__"));
/// ```
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub fn nats_consumer_name(group: &str, subject: &str) -> String {
    crate::transport::nats_consumer_name(group, subject)
}
