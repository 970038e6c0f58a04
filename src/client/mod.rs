//! The client: `call(service, endpoint, &request)` with timeouts, deadline propagation,
//! metadata and trace propagation, node selection and retries; `publish(topic, &event)`.
//!
//! ```
//! # use micro::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Hello { name: String }
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! async fn hello(Req(h): Req<Hello>) -> Result<String, Status> { Ok(format!("Hello {}", h.name)) }
//! let svc = Service::builder("go.micro.srv.doc-client").transport("memory://doc-client")
//!     .handle("Say.Hello", hello).start().await?;
//! let client = Client::connect("memory://doc-client").await?;
//! let reply: String = client.call("go.micro.srv.doc-client", "Say.Hello", &Hello { name: "John".into() }).await?;
//! assert_eq!(reply, "Hello John");
//! svc.stop().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::broker::{Broker, PublishOptions};
use crate::codec::Codec;
use crate::context::CallContext;
use crate::endpoint::EndpointName;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{headers, Deadline, Headers, Message, Metadata};
use crate::middleware::{Answer, ClientLayers, Outgoing, SendFn, Target as Route};
use crate::registry::Registry;
use crate::selector::{Filter, Selector};
use crate::status::{Code, Status};
use crate::subject;
use crate::telemetry::{self, sampling, spans};
use crate::transport::Transport;
use tracing::{Instrument, Span};

mod builder;
mod options;

pub use builder::ClientBuilder;
pub use options::{CallOptions, RetryPolicy};

/// The id client-side errors carry.
pub const CLIENT_ID: &str = "go.micro.client";

/// Client defaults.
#[derive(Clone, Debug)]
pub(crate) struct ClientConfig {
    pub(crate) name: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) codec: Codec,
    pub(crate) filter: Filter,
    pub(crate) layers: ClientLayers,
    /// Sends this process's token on every call (see [`ClientBuilder::auth`]).
    #[cfg(feature = "auth")]
    pub(crate) auth: Option<crate::auth::AuthClient>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            name: CLIENT_ID.to_string(),
            timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            codec: Codec::MsgPack,
            filter: Filter::default(),
            layers: ClientLayers::default(),
            #[cfg(feature = "auth")]
            auth: None,
        }
    }
}

struct Inner {
    transport: Arc<dyn Transport>,
    registry: Registry,
    selector: Selector,
    broker: Broker,
    config: ClientConfig,
    metrics: crate::metrics::ClientMetrics,
}

/// A client handle. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.inner.config.name)
            .field("transport", &self.inner.transport.name())
            .finish()
    }
}

impl Client {
    /// A builder.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects a client with default options.
    pub async fn connect(url: &str) -> Result<Client> {
        Client::builder().transport(url).connect().await
    }

    pub(crate) fn from_parts(
        transport: Arc<dyn Transport>,
        registry: Registry,
        selector: Selector,
        config: ClientConfig,
    ) -> Client {
        let broker = Broker::new(transport.clone(), config.name.clone()).with_layers(config.layers.clone());
        Client { inner: Arc::new(Inner { transport, registry, selector, broker, config, metrics: Default::default() }) }
    }

    /// The registry this client resolves services with.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The selector (and its blacklist).
    pub fn selector(&self) -> &Selector {
        &self.inner.selector
    }

    /// The broker handle for publishing and subscribing.
    pub fn broker(&self) -> &Broker {
        &self.inner.broker
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.inner.transport
    }

    /// Calls `endpoint` of `service` and decodes the reply. `endpoint` is a typed
    /// [`Endpoint`](crate::Endpoint) (the reply type is inferred) or a name (say the reply type:
    /// `let rsp: Response = client.call(..)`).
    ///
    /// ```
    /// # use micro::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Request { name: String }
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Response { msg: String }
    /// const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");
    /// # async fn f(client: Client) -> micro::Result<()> {
    /// let rsp = client.call("go.micro.srv.greeter", SAY_HELLO, &Request { name: "John".into() }).await?;
    /// println!("{}", rsp.msg);
    /// # Ok(()) }
    /// ```
    pub async fn call<Req, Resp, E>(&self, service: &str, endpoint: E, request: &Req) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: EndpointName<Req, Resp>,
    {
        self.call_with(service, endpoint, request, CallOptions::default()).await
    }

    /// Calls with per-call options.
    pub async fn call_with<Req, Resp, E>(
        &self,
        service: &str,
        endpoint: E,
        request: &Req,
        opts: CallOptions,
    ) -> Result<Resp>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
        E: EndpointName<Req, Resp>,
    {
        let codec = opts.codec.unwrap_or(self.inner.config.codec);
        let body = codec.encode(request)?;
        let reply = self.call_raw(service, endpoint.endpoint_name(), body, codec, opts).await?;
        reply.decode()
    }

    /// Calls with an already encoded body; the reply is returned undecoded with its codec.
    pub async fn call_raw(
        &self,
        service: &str,
        endpoint: &str,
        body: Bytes,
        codec: Codec,
        opts: CallOptions,
    ) -> Result<RawReply> {
        let timer = self.inner.metrics.start(service, endpoint);
        let result = self.call_prepared(service, endpoint, body, codec, opts).await;
        timer.finish(&result);
        result
    }

    async fn call_prepared(
        &self,
        service: &str,
        endpoint: &str,
        body: Bytes,
        codec: Codec,
        mut opts: CallOptions,
    ) -> Result<RawReply> {
        let config = &self.inner.config;
        let timeout = opts.timeout.unwrap_or(config.timeout);
        let mut deadline = Deadline::after(timeout);
        // The server is told a deadline when the call has one: a timeout set for this call, or
        // the deadline of the request being handled. The client's default timeout only bounds
        // how long this side waits.
        let mut send_deadline = opts.timeout.is_some();
        let mut metadata = std::mem::take(&mut opts.metadata);
        let mut parent = None;
        let mut trace_state = None;
        CallContext::with_current(|ctx| {
            if let Some(d) = ctx.deadline {
                deadline = deadline.min(d);
                send_deadline = true;
            }
            parent = ctx.trace;
            trace_state = ctx.trace_state.clone();
            metadata.merge_missing(&ctx.metadata);
        });
        if let Some(trace) = opts.trace.take() {
            (parent, trace_state) = (Some(trace.0), trace.1);
        }
        // The call's span; the traceparent sent is its context (a child of the current trace,
        // or a new root). With no one recording, a child of the current trace, if any.
        let span = sampling::making(sampling::unsampled(parent), || spans::client(service, endpoint));
        let trace = if span.is_disabled() {
            parent.map(|t| t.child())
        } else {
            Some(telemetry::identify(&span, parent, spans::Parent::Local))
        };
        // Only what is set travels: a trace when the caller is inside one, a caller when it
        // has a name, an id when the options give one.
        let mut h = Headers::new();
        if let Some(ct) = codec.content_type_for(&body) {
            h.push(headers::CONTENT_TYPE, ct);
        }
        if send_deadline {
            h.push(headers::DEADLINE, itoa::Buffer::new().format(deadline.as_millis()).to_string());
        }
        if let Some(id) = opts.id.take() {
            h.push(headers::ID, id);
        }
        // The serial of the process's own token when this call carries it whole.
        #[cfg(feature = "auth")]
        let mut whole_token = None;
        match opts.token.take() {
            Some(token) => h.push(headers::AUTHORIZATION, format!("Bearer {token}")),
            None => {
                #[cfg(feature = "auth")]
                if let Some(auth) = config.auth.as_ref().filter(|a| a.sends_token_to(service, endpoint)) {
                    let token = match auth.fresh_call_token() {
                        Some(token) => token,
                        // Renewing calls the auth service: boxed, so the common path's future
                        // stays small.
                        None => Box::pin(auth.call_token()).await?,
                    };
                    whole_token = token.full;
                    h.push(headers::AUTHORIZATION, token.header);
                }
            }
        }
        if config.name != CLIENT_ID {
            h.push(headers::CALLER, config.name.clone());
        }
        if let Some(trace) = trace {
            h.push(headers::TRACEPARENT, trace.header_value());
        }
        if let Some(state) = trace_state {
            h.push(headers::TRACESTATE, state);
        }
        h.set_metadata(&metadata);
        let message = Message::with_headers(h, body);
        let result = self.send_call(service, endpoint, message, opts, deadline, &span).await;
        spans::record_error(&span, &result);
        #[cfg(feature = "auth")]
        if let (Some(serial), Some(auth)) = (whole_token, config.auth.as_ref()) {
            // The node took the whole token (anything but 401): from now on it goes by reference.
            let took = match &result {
                Ok(_) => true,
                Err(e) => e.kind() == ErrorKind::Remote && e.status().is_some_and(|s| s.code() != Code::UNAUTHORIZED),
            };
            if took {
                auth.accepted(serial);
            }
        }
        result
    }

    /// Runs a prepared call through the client's middleware (if any), then delivers it.
    ///
    /// The call's span is entered only around middleware, whose code may look for it as the
    /// current span. Without middleware nothing inside runs user code: entering the span on
    /// every poll would cost two subscriber round trips per poll for no reader, so the
    /// toolkit's own log lines inside the call name it as their parent instead.
    async fn send_call(
        &self,
        service: &str,
        endpoint: &str,
        message: Message,
        opts: CallOptions,
        deadline: Deadline,
        span: &Span,
    ) -> Result<RawReply> {
        let layers = &self.inner.config.layers;
        if layers.is_empty() {
            return self.deliver(service, endpoint, message, opts, deadline, span).await;
        }
        let (client, call_span) = (self.clone(), span.clone());
        let out =
            Outgoing { target: Route::Call { service: service.to_string(), endpoint: endpoint.to_string() }, message };
        let send: SendFn = Box::new(move |out: Outgoing| {
            Box::pin(async move {
                let Route::Call { service, endpoint } = &out.target else {
                    return Err(Error::config("a client middleware turned a call into a publish"));
                };
                client.deliver(service, endpoint, out.message, opts, deadline, &call_span).await.map(Answer::Reply)
            })
        });
        // Built inside the instrumented future: the first layer runs as it is built, and it
        // must see the call's span as current too.
        match async { layers.run(out, send).await }.instrument(span.clone()).await? {
            Answer::Reply(reply) => Ok(reply),
            Answer::Published => Err(Error::config("a client middleware answered a call as a publish")),
        }
    }

    /// Sends a prepared request, selecting a node and retrying as the options allow.
    async fn deliver(
        &self,
        service: &str,
        endpoint: &str,
        #[cfg_attr(not(feature = "auth"), allow(unused_mut))] mut message: Message,
        opts: CallOptions,
        deadline: Deadline,
        span: &Span,
    ) -> Result<RawReply> {
        let config = &self.inner.config;
        let filter = if opts.filter.is_empty() { config.filter.clone() } else { config.filter.and(&opts.filter) };
        let retry = opts.retry.unwrap_or(config.retry);
        let mut backoff = retry.backoff();
        let mut retries_left = retry.max_retries;
        loop {
            let target = Target {
                service,
                endpoint,
                deadline,
                filter: &filter,
                shared: opts.shared,
                node: opts.node.as_deref(),
                span,
            };
            let attempt = self.attempt(target, &message, opts.idempotent, retries_left).await;
            let (err, idempotent) = match attempt {
                Ok(reply) => return Ok(reply),
                Err(e) => e,
            };
            #[cfg(feature = "auth")]
            if let Some(whole) = self.token_for_refused_ref(&err, &message) {
                // The node does not know the token by reference (it restarted, or never saw it):
                // the same request again with the whole token, at once. It ran nothing.
                message.headers.insert(headers::AUTHORIZATION, whole);
                continue;
            }
            let retryable = match err.kind() {
                ErrorKind::Unavailable => true,
                ErrorKind::Timeout => idempotent,
                ErrorKind::Remote => err.status().is_some_and(|s| s.code() == Code::UNAVAILABLE),
                _ => false,
            };
            let Some(delay) = backoff.next().filter(|_| retryable) else {
                return Err(err);
            };
            if deadline.remaining() <= delay {
                return Err(err);
            }
            retries_left = retries_left.saturating_sub(1);
            tracing::debug!(parent: log_parent(span), service, endpoint, error = %err, ?delay, retries_left, "retrying call");
            tokio::time::sleep(delay).await;
        }
    }

    /// The whole token to send again when `err` is the 401 of a node that refused the process's
    /// own token by reference.
    #[cfg(feature = "auth")]
    fn token_for_refused_ref(&self, err: &Error, message: &Message) -> Option<String> {
        let auth = self.inner.config.auth.as_ref()?;
        if err.status()?.code() != Code::UNAUTHORIZED {
            return None;
        }
        let sent = message.headers.get(headers::AUTHORIZATION)?;
        sent.starts_with(crate::auth::REF_SCHEME).then(|| auth.full_for_ref(sent)).flatten()
    }

    /// One attempt: choose a node, send, interpret. On failure also says whether the endpoint
    /// is idempotent (so a timeout may be retried).
    async fn attempt(
        &self,
        target: Target<'_>,
        message: &Message,
        idempotent_opt: Option<bool>,
        retries_left: usize,
    ) -> std::result::Result<RawReply, (Error, bool)> {
        let Target { service, endpoint, deadline, filter, shared, node: pinned, span } = target;
        let records;
        let (target, node, registered_idempotent): (String, Option<&str>, bool) = if shared && pinned.is_none() {
            (format!("{}{service}.{endpoint}", subject::RPC_PREFIX), None, false)
        } else {
            records = match self.inner.registry.cached(service) {
                Some(r) => r,
                None => {
                    self.inner.registry.settled(service).await.map_err(|e| (e, false))?;
                    self.inner
                        .registry
                        .cached(service)
                        .ok_or_else(|| (Error::not_in_registry(service, self.inner.transport.name()), false))?
                }
            };
            let (record, node) =
                match pinned {
                    // A pinned node skips selection: its address comes from its registry record.
                    Some(id) => {
                        records.iter().find_map(|s| s.nodes.iter().find(|n| n.id == id).map(|n| (s, n))).ok_or_else(
                            || (Error::unavailable(format!("node {id} of {service} is not in the registry")), false),
                        )?
                    }
                    None => self.inner.selector.pick(&records, filter).ok_or_else(|| {
                        (Error::unavailable(format!("no node of {service} matches {filter:?}")), false)
                    })?,
                };
            let idempotent = record.endpoint(endpoint).is_some_and(|e| e.is_idempotent());
            tracing::debug!(parent: log_parent(span), service, endpoint, node = %node.id, pinned = pinned.is_some(), "node selected");
            (subject::request(&node.address, endpoint), Some(&node.id), idempotent)
        };
        let idempotent = idempotent_opt.unwrap_or(registered_idempotent);
        let remaining = deadline.remaining();
        if remaining.is_zero() {
            return Err((Error::timeout(format!("deadline of {service} {endpoint} passed")), idempotent));
        }
        // A call that may be retried after a timeout must leave time for the retries: the
        // budget is split evenly over the attempts still allowed.
        let attempts = u32::try_from(retries_left).unwrap_or(u32::MAX).saturating_add(1);
        let budget = if idempotent { remaining / attempts } else { remaining };
        match self.inner.transport.request(&target, message, budget).await {
            Ok(reply) => {
                if let Some(n) = node {
                    self.inner.selector.succeeded(n);
                }
                RawReply::from_message(reply).map_err(|e| (e, idempotent))
            }
            Err(e) => {
                if let (Some(n), ErrorKind::Unavailable | ErrorKind::Timeout) = (node, e.kind()) {
                    self.inner.selector.failed(n);
                }
                Err((e, idempotent))
            }
        }
    }

    /// Sends an already encoded request to a subject as it is, with the headers a call carries
    /// (deadline, metadata, trace), once: no registry, no selection, no retries. For services
    /// outside this toolkit's registry, such as those found through the NATS services API
    /// ([`registry::nats_micro`](crate::registry::nats_micro)), whose endpoints name their own
    /// subjects.
    pub async fn call_subject(&self, subject: &str, body: Bytes, codec: Codec, opts: CallOptions) -> Result<RawReply> {
        let timeout = opts.timeout.unwrap_or(self.inner.config.timeout);
        let mut h = Headers::new();
        if let Some(ct) = codec.content_type_for(&body) {
            h.push(headers::CONTENT_TYPE, ct);
        }
        h.push(headers::DEADLINE, itoa::Buffer::new().format(Deadline::after(timeout).as_millis()).to_string());
        let mut metadata = opts.metadata;
        CallContext::with_current(|ctx| metadata.merge_missing(&ctx.metadata));
        h.set_metadata(&metadata);
        let reply = self.inner.transport.request(subject, &Message::with_headers(h, body), timeout).await?;
        RawReply::from_message(reply)
    }

    /// Publishes an event on a topic (see [`Broker::publish`]).
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, event: &T) -> Result<String> {
        self.inner.broker.publish(topic, event).await
    }

    /// Publishes with options (metadata, codec).
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
        opts: PublishOptions,
    ) -> Result<String> {
        self.inner.broker.publish_with(topic, event, opts).await
    }
}

/// Where one attempt goes.
struct Target<'a> {
    service: &'a str,
    endpoint: &'a str,
    deadline: Deadline,
    filter: &'a Filter,
    shared: bool,
    /// A node id that skips selection (`CallOptions::node`).
    node: Option<&'a str>,
    /// The call's span, parent of the log lines about it.
    span: &'a Span,
}

/// The parent of a log line about a call: the call's span, or the current span when no one
/// records the call's.
fn log_parent(span: &Span) -> Option<tracing::Id> {
    span.id().or_else(|| Span::current().id())
}

/// A successful reply, still encoded.
#[derive(Clone, Debug)]
pub struct RawReply {
    /// The reply's codec (from its `Content-Type`).
    pub codec: Codec,
    /// The encoded body.
    pub body: Bytes,
    /// The reply's headers.
    pub headers: Headers,
}

impl RawReply {
    fn from_message(m: Message) -> Result<RawReply> {
        let codec = match m.headers.get(headers::CONTENT_TYPE) {
            None => Codec::sniff(&m.body),
            Some(ct) => Codec::from_content_type(ct)
                .ok_or_else(|| Error::codec(format!("reply has unsupported content type {ct}")))?,
        };
        if let Some(code) = m.headers.get(headers::ERROR) {
            // Our services send a Status as the body; other NATS services libraries send the
            // code and its text in headers, with a body of their own.
            let status: Status = codec.decode(&m.body).unwrap_or_else(|_| {
                let code = code.trim().parse().unwrap_or(500);
                let detail = match m.headers.get(headers::ERROR_TEXT) {
                    Some(text) => text.to_string(),
                    None => String::from_utf8_lossy(&m.body).into_owned(),
                };
                Status::new(Code::from_u16(code), detail)
            });
            return Err(Error::remote(status));
        }
        Ok(RawReply { codec, body: m.body, headers: m.headers })
    }

    /// Decodes the body.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.codec.decode(&self.body)
    }

    /// The body as JSON bytes, transcoding if needed.
    pub fn to_json(&self) -> Result<Bytes> {
        if self.codec == Codec::Json {
            return Ok(self.body.clone());
        }
        self.codec.transcode(&self.body, Codec::Json)
    }
}

impl From<&Metadata> for CallOptions {
    fn from(m: &Metadata) -> Self {
        CallOptions { metadata: m.clone(), ..Default::default() }
    }
}
