//! The NATS transport (async-nats): core request/reply with the client's muxed inbox, queue
//! groups for shared subjects, headers for the envelope.
//!
//! Durable events use JetStream: one stream `MICRO_EVENTS` stores every subject under
//! `micro.event.>` (created by the first durable publisher or subscriber); a durable
//! subscription is a durable pull consumer with explicit acks, one per (group, pattern). The
//! event id is the `Nats-Msg-Id`, so the stream drops duplicates within its window.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::kit;
use super::options::{self, ConnectOptions};
use super::{
    ConnectionState, DurableSpec, DurableSubscription, Incoming, Reply, ReplySink, Subscription, SubscriptionStream,
    Transport,
};

mod jetstream;
mod login;

use crate::error::{Error, ErrorKind, Result};
use crate::message::{Headers, Message};
pub(crate) use jetstream::consumer_name;
pub use jetstream::EVENTS_STREAM;

/// A NATS connection.
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let t = micro::transport::NatsTransport::connect("nats://127.0.0.1:4222").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsTransport {
    client: async_nats::Client,
    /// Without its credentials: it goes into error messages.
    url: String,
    js: async_nats::jetstream::Context,
    /// Set once the events stream is known to exist on this connection.
    stream_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    state: tokio::sync::watch::Receiver<ConnectionState>,
}

/// The longest wait between two attempts to reconnect (async-nats' own grows to 4 s): a
/// broker that is back is found again within this.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

impl NatsTransport {
    /// Connects; fails with [`ErrorKind::Connect`] naming the URL (without its credentials) when
    /// the server is unreachable, [`ErrorKind::BrokerAuth`] when it refuses the login and
    /// [`ErrorKind::Tls`] when TLS fails (an unknown CA, a certificate it requires): at once,
    /// never retrying a first connection.
    ///
    /// Credentials come in the URL: `nats://user:password@host:port`, or `nats://token@host:port`
    /// (percent-encode reserved characters), TLS settings in its query
    /// (`tls://host:4222?tls_ca=/etc/micro/ca.pem`), and both from the environment; see
    /// [`ConnectOptions`](crate::transport::ConnectOptions) and `docs/tls.md`.
    pub async fn connect(url: &str) -> Result<NatsTransport> {
        NatsTransport::connect_with(url, &ConnectOptions::default()).await
    }

    /// As [`connect`](NatsTransport::connect), with TLS and login settings given in code (they
    /// come before the URL's and the environment's).
    pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<NatsTransport> {
        let (client, shown) = connect_client(url, options).await?;
        let js = async_nats::jetstream::new(client.0.clone());
        Ok(NatsTransport { client: client.0, url: shown, js, stream_ready: Default::default(), state: client.1 })
    }
    /// The URL this transport connected to, without its credentials: fit to print.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// A connected async-nats client and the state of its connection.
pub(crate) type Connected = (async_nats::Client, tokio::sync::watch::Receiver<ConnectionState>);

/// Connects an async-nats client: TLS and login from `code`, else the URL, else the
/// environment; reconnects forever once connected (subscriptions are restored), but a first
/// connection that fails is an error at once. Query parameters that are not
/// [`ConnectOptions`]' are refused. Returns the client and the URL fit to print (no credentials, no query).
pub(crate) async fn connect_client(url: &str, code: &ConnectOptions) -> Result<(Connected, String)> {
    let (server, from_url) = options::split_url(url, true)?;
    let (server, rest) = server.split_once('?').map_or((server.as_str(), ""), |(s, q)| (s, q));
    if !rest.is_empty() {
        return Err(Error::config(format!(
            "unknown parameter in the NATS URL {}: {rest:?}; use {}",
            super::redact(server),
            options::query_keys()
        )));
    }
    let options = code.clone().or(from_url).or(ConnectOptions::from_env());
    options.validate()?;
    let shown = super::redact(server);
    let (state_tx, state) = tokio::sync::watch::channel(ConnectionState::default());
    let connects = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let log = log_event(shown.clone());
    let opts = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .name(format!("actix-micro/{}", env!("CARGO_PKG_VERSION")))
        // Reconnects are forever (with async-nats' backoff); subscriptions are restored. A
        // first connection is tried once (no `retry_on_initial_connect`).
        .max_reconnects(None::<usize>)
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.saturating_sub(1)).unwrap_or(u32::MAX).min(16);
            Duration::from_millis(2u64.pow(exp)).min(RECONNECT_MAX_DELAY)
        })
        .event_callback(move |event| {
            match &event {
                async_nats::Event::Connected => {
                    // The first connection is not a reconnect.
                    let n = connects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    state_tx.send_modify(|s| {
                        s.connected = true;
                        s.reconnects = n;
                    });
                }
                async_nats::Event::Disconnected => state_tx.send_modify(|s| s.connected = false),
                _ => {}
            }
            log(event)
        });
    let opts = login::apply(opts, &options).await?;
    let client = opts.connect(server).await.map_err(|e| login::connect_error(&shown, &options, e))?;
    Ok(((client, state), shown))
}

impl std::fmt::Debug for NatsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsTransport").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Logs what happens to the connection, which async-nats keeps to itself: losing it (whatever the
/// cause: a server gone, or a message it could not parse), getting it back, and what the server
/// refused (a permissions violation names the subject).
fn log_event(url: String) -> impl Fn(async_nats::Event) -> futures::future::Ready<()> + Send + Sync + 'static {
    use std::sync::atomic::{AtomicBool, Ordering};
    let lost = AtomicBool::new(false);
    move |event| {
        use async_nats::Event;
        match event {
            Event::Disconnected => {
                lost.store(true, Ordering::Relaxed);
                tracing::warn!(%url, "NATS connection lost; reconnecting")
            }
            Event::Connected if lost.swap(false, Ordering::Relaxed) => {
                tracing::info!(%url, "NATS connection re-established")
            }
            Event::ServerError(e) => tracing::warn!(%url, "NATS server error: {e}"),
            Event::ClientError(e) => tracing::warn!(%url, "NATS client error: {e}"),
            Event::SlowConsumer(sid) => tracing::warn!(%url, "NATS slow consumer: subscription {sid} dropped messages"),
            other => tracing::debug!(%url, "NATS connection {other}"),
        }
        futures::future::ready(())
    }
}

pub(super) fn to_header_map(headers: &Headers) -> Result<HeaderMap> {
    header_map(headers, None)
}

/// The headers as async-nats' map, without the one named `skip`.
pub(super) fn header_map(headers: &Headers, skip: Option<&str>) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.pairs() {
        if skip.is_some_and(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        crate::message::check_pair(name, value)?;
        // Names were checked above: the protocol's own (static) ones cost no allocation.
        let name = match name {
            std::borrow::Cow::Borrowed(s) => HeaderName::from_static(s),
            std::borrow::Cow::Owned(s) => s.parse().map_err(|_| Error::config(format!("invalid header name {s:?}")))?,
        };
        map.insert(name, HeaderValue::from(value.as_str()));
    }
    Ok(map)
}

pub(super) fn from_nats(msg: async_nats::Message) -> (Message, Option<async_nats::Subject>) {
    let mut headers = match &msg.headers {
        Some(map) => Headers::with_capacity(map.len()),
        None => Headers::new(),
    };
    if let Some(map) = &msg.headers {
        use crate::message::headers::{intern, ID, NATS_MSG_ID};
        let mut dedup_id = None;
        for (name, values) in map.iter() {
            let name: &str = name.as_ref();
            if let Some(v) = values.first() {
                // JetStream's dedup id is the event id of a durable publish (protocol §6.1): it
                // becomes `Micro-Id` unless that is there, and is never passed on, so a copy
                // (a retry, a dead letter) is not taken for the original.
                if name.eq_ignore_ascii_case(NATS_MSG_ID) {
                    dedup_id = Some(v.as_str());
                    continue;
                }
                headers.push(intern(name), v.as_str());
            }
        }
        if let Some(id) = dedup_id.filter(|_| headers.get(ID).is_none()) {
            headers.push(ID, id);
        }
    }
    (Message { headers, body: msg.payload }, msg.reply)
}

struct NatsReply {
    client: std::sync::Arc<async_nats::Client>,
    subject: async_nats::Subject,
}

impl ReplySink for NatsReply {
    fn send(self: Box<Self>, message: Message) -> BoxFuture<'static, Result<()>> {
        async move {
            let sent = if message.headers.is_empty() {
                self.client.publish(self.subject, message.body).await
            } else {
                self.client.publish_with_headers(self.subject, to_header_map(&message.headers)?, message.body).await
            };
            sent.map_err(|e| Error::transport(format!("reply failed: {e}")).with_source(e))
        }
        .boxed()
    }
}

struct NatsSubscription {
    sub: async_nats::Subscriber,
    /// Shared by the replies to its requests: cloning an `async_nats::Client` allocates.
    client: std::sync::Arc<async_nats::Client>,
}

impl futures::Stream for NatsSubscription {
    type Item = Incoming;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        self.sub.poll_next_unpin(cx).map(|m| {
            m.map(|msg| {
                let subject = String::from(msg.subject.as_str());
                let (message, reply) = from_nats(msg);
                let reply = reply.map(|subject| Reply::new(NatsReply { client: self.client.clone(), subject }));
                Incoming { subject, message, reply }
            })
        })
    }
}

impl SubscriptionStream for NatsSubscription {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        async move { self.sub.drain().await.map_err(|e| Error::transport(format!("drain failed: {e}"))) }.boxed()
    }
}

impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message>> {
        async move {
            let mut req = async_nats::Request::new().payload(message.body.clone()).timeout(Some(timeout));
            // No header block at all when there are no headers (a plain PUB, as a raw client sends).
            if !message.headers.is_empty() {
                req = req.headers(to_header_map(&message.headers)?);
            }
            match self.client.send_request(async_nats::Subject::from(subject), req).await {
                Ok(msg) => Ok(from_nats(msg).0),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::NoResponders => Error::unavailable(format!("no responders on {subject}")),
                    RequestErrorKind::TimedOut => Error::timeout(format!("no reply on {subject} within {timeout:?}")),
                    _ => Error::transport(format!("request on {subject} failed: {e}")),
                }
                .with_source(e)),
            }
        }
        .boxed()
    }

    fn gather<'a>(
        &'a self,
        subject: &'a str,
        message: Message,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Message>>> {
        async move {
            let failed = |e: &dyn std::fmt::Display| Error::transport(format!("request on {subject} failed: {e}"));
            let inbox = self.client.new_inbox();
            let mut replies = self.client.subscribe(inbox.clone()).await.map_err(|e| failed(&e))?;
            let headers = to_header_map(&message.headers)?;
            self.client
                .publish_with_reply_and_headers(subject.to_string(), inbox, headers, message.body)
                .await
                .map_err(|e| failed(&e))?;
            let until = tokio::time::Instant::now() + window;
            let mut out = Vec::new();
            while let Ok(Some(msg)) = tokio::time::timeout_at(until, replies.next()).await {
                if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    break;
                }
                out.push(from_nats(msg).0);
            }
            let _ = replies.unsubscribe().await;
            Ok(out)
        }
        .boxed()
    }

    fn publish<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            let sent = if message.headers.is_empty() {
                self.client.publish(async_nats::Subject::from(subject), message.body).await
            } else {
                self.client
                    .publish_with_headers(subject.to_string(), to_header_map(&message.headers)?, message.body)
                    .await
            };
            sent.map_err(|e| Error::new(ErrorKind::Broker, format!("publish on {subject} failed: {e}")).with_source(e))
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, subject: &'a str, queue: Option<&'a str>) -> BoxFuture<'a, Result<Subscription>> {
        async move {
            kit::check_subject(subject, true)?;
            let sub = match queue {
                Some(q) => self.client.queue_subscribe(subject.to_string(), q.to_string()).await,
                None => self.client.subscribe(subject.to_string()).await,
            }
            .map_err(|e| Error::new(ErrorKind::Broker, format!("subscribe to {subject} failed: {e}")).with_source(e))?;
            Ok(Subscription::new(NatsSubscription { sub, client: std::sync::Arc::new(self.client.clone()) }))
        }
        .boxed()
    }

    fn publish_durable<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        self.js_publish(subject, message).boxed()
    }

    fn subscribe_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<DurableSubscription>> {
        self.js_subscribe(spec).boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        // Drain: subscriptions stop, what was published is flushed, then the connection closes
        // (for every clone of this transport). Unacknowledged durable events go back to their group.
        async move {
            self.client.drain().await.map_err(|e| Error::transport(format!("closing failed: {e}")).with_source(e))
        }
        .boxed()
    }

    fn delete_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<()>> {
        self.js_delete(spec).boxed()
    }

    fn durable_pending<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<Option<u64>>> {
        self.js_pending(spec).boxed()
    }

    fn durable_groups(&self) -> BoxFuture<'_, Result<Vec<crate::transport::DurableGroup>>> {
        self.js_groups().boxed()
    }

    fn connection(&self) -> Option<tokio::sync::watch::Receiver<ConnectionState>> {
        Some(self.state.clone())
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.client
                .flush()
                .await
                .map_err(|e| Error::transport(format!("flush failed: {e}")).with_source(e))
        }
        .boxed()
    }
}
