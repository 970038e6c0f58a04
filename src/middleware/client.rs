//! Client middleware: [`ClientMiddleware`], [`Outgoing`], [`ClientNext`] and [`client_fn`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::client::RawReply;
use crate::error::Result;
use crate::message::{headers, Headers, Message};

/// Wraps every call and publish of a client ([`ClientBuilder::wrap`], and for a service's own
/// client `ServiceBuilder::wrap_client`).
///
/// A client middleware sees the outgoing message with all its headers already set (id,
/// deadline, trace, metadata), can change them (say, add a token) and sees the outcome: the
/// reply of a call, or [`Answer::Published`]. It can also answer at once without sending
/// anything, with an error: `Err(Status::unauthorized(..).into())`. It wraps the whole call,
/// retries included. Clients are shared across threads, so it is `Send + Sync`.
///
/// ```
/// use micro::middleware::{client_fn, Answer};
///
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let client = micro::Client::builder()
///     .transport("memory://client-mw-doc")
///     .wrap(client_fn(|mut out, next| async move {
///         out.set_metadata("tenant", "acme"); // every call and event carries it
///         let target = out.service().or(out.topic()).unwrap_or_default().to_string();
///         let answer = next.run(out).await;
///         tracing::debug!(%target, ok = answer.is_ok(), "sent");
///         answer
///     }))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
///
/// [`ClientBuilder::wrap`]: crate::client::ClientBuilder::wrap
pub trait ClientMiddleware: Send + Sync + 'static {
    /// Handles one outgoing call or event: usually `next.run(out)` with something around it.
    fn call(&self, out: Outgoing, next: ClientNext) -> BoxFuture<'static, Result<Answer>>;
}

/// What a call or publish produced.
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// A call's reply.
    Reply(RawReply),
    /// The event was handed to the broker (and stored, for a durable publish).
    Published,
}

/// What an outgoing message is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Call { service: String, endpoint: String },
    Publish { topic: String, durable: bool },
}

/// An outgoing call or event, as a [`ClientMiddleware`] sees it.
#[derive(Debug)]
pub struct Outgoing {
    pub(crate) target: Target,
    pub(crate) message: Message,
}

impl Outgoing {
    /// The service called, for a call.
    pub fn service(&self) -> Option<&str> {
        match &self.target {
            Target::Call { service, .. } => Some(service),
            Target::Publish { .. } => None,
        }
    }

    /// The endpoint called, for a call.
    pub fn endpoint(&self) -> Option<&str> {
        match &self.target {
            Target::Call { endpoint, .. } => Some(endpoint),
            Target::Publish { .. } => None,
        }
    }

    /// The topic, for a publish.
    pub fn topic(&self) -> Option<&str> {
        match &self.target {
            Target::Publish { topic, .. } => Some(topic),
            Target::Call { .. } => None,
        }
    }

    /// True for a publish (plain or durable), false for a call.
    pub fn is_publish(&self) -> bool {
        matches!(self.target, Target::Publish { .. })
    }

    /// True for a durable publish.
    pub fn is_durable(&self) -> bool {
        matches!(self.target, Target::Publish { durable: true, .. })
    }

    /// The message id (`Micro-Id`).
    pub fn id(&self) -> &str {
        self.message.headers.get(headers::ID).unwrap_or_default()
    }

    /// The headers about to be sent.
    pub fn headers(&self) -> &Headers {
        &self.message.headers
    }

    /// The headers, to change before sending.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.message.headers
    }

    /// The encoded body.
    pub fn body(&self) -> &Bytes {
        &self.message.body
    }

    /// Sets a metadata key (sent as `Micro-Meta-<key>`; keys are lower-cased on receipt).
    pub fn set_metadata(&mut self, key: &str, value: impl Into<String>) {
        self.message.headers.insert(format!("{}{key}", headers::META_PREFIX), value.into());
    }
}

/// The last step of a client chain: sends the message.
pub(crate) type SendFn = Box<dyn FnOnce(Outgoing) -> BoxFuture<'static, Result<Answer>> + std::marker::Send>;

/// The rest of a client chain: the middleware after this one, then the send.
pub struct ClientNext {
    layers: ClientLayers,
    at: usize,
    send: SendFn,
}

impl ClientNext {
    /// Runs the rest of the chain on `out`.
    pub fn run(self, out: Outgoing) -> BoxFuture<'static, Result<Answer>> {
        let ClientNext { layers, at, send } = self;
        match layers.0.get(at).cloned() {
            Some(layer) => layer.call(out, ClientNext { layers, at: at + 1, send }),
            None => send(out),
        }
    }
}

impl std::fmt::Debug for ClientNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext").field("remaining", &(self.layers.0.len() - self.at)).finish()
    }
}

/// A client middleware from an async closure:
/// `client_fn(|out, next| async move { next.run(out).await })`.
///
/// One that refuses to call anything but the services of one namespace:
///
/// ```
/// use micro::middleware::client_fn;
/// use micro::Status;
///
/// let builder = micro::Client::builder().wrap(client_fn(|out, next| async move {
///     if out.service().is_some_and(|s| !s.starts_with("com.example.")) {
///         return Err(Status::forbidden("only com.example.* may be called from here").into());
///     }
///     next.run(out).await
/// }));
/// ```
pub fn client_fn<F, Fut>(f: F) -> ClientFromFn<F>
where
    F: Fn(Outgoing, ClientNext) -> Fut + std::marker::Send + Sync + 'static,
    Fut: Future<Output = Result<Answer>> + std::marker::Send + 'static,
{
    ClientFromFn(f)
}

/// A client middleware made by [`client_fn`].
#[derive(Clone)]
pub struct ClientFromFn<F>(F);

impl<F> std::fmt::Debug for ClientFromFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientFromFn")
    }
}

impl<F, Fut> ClientMiddleware for ClientFromFn<F>
where
    F: Fn(Outgoing, ClientNext) -> Fut + std::marker::Send + Sync + 'static,
    Fut: Future<Output = Result<Answer>> + std::marker::Send + 'static,
{
    fn call(&self, out: Outgoing, next: ClientNext) -> BoxFuture<'static, Result<Answer>> {
        Box::pin((self.0)(out, next))
    }
}

/// A client's middleware, first the outermost. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct ClientLayers(Arc<[Arc<dyn ClientMiddleware>]>);

impl ClientLayers {
    pub(crate) fn push(&mut self, layer: Arc<dyn ClientMiddleware>) {
        let mut v: Vec<_> = self.0.iter().cloned().collect();
        v.push(layer);
        self.0 = v.into();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs `out` through the middleware, then `send`.
    pub(crate) fn run(&self, out: Outgoing, send: SendFn) -> BoxFuture<'static, Result<Answer>> {
        ClientNext { layers: self.clone(), at: 0, send }.run(out)
    }
}

impl std::fmt::Debug for ClientLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientLayers({})", self.0.len())
    }
}
