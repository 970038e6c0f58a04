//! [`CallContext`]: what a handler knows about the request it serves (id, caller, deadline,
//! trace, metadata), and the task-local that lets calls made from inside a handler inherit the
//! remaining deadline, the trace and the metadata without passing them by hand.
//!
//! ```
//! # use micro::prelude::*;
//! async fn whoami(ctx: CallContext) -> Result<String, Status> {
//!     Ok(format!("{} asked {} (trace {:?})", ctx.caller().unwrap_or("someone"), ctx.endpoint(),
//!         ctx.trace().map(|t| t.trace_id())))
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::message::{Deadline, Metadata, TraceParent};

tokio::task_local! {
    static CURRENT: Arc<CallContext>;
}

/// Facts about the request or event being handled. Also an extractor: take it as a handler
/// argument.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub(crate) service: Arc<str>,
    pub(crate) endpoint: Arc<str>,
    pub(crate) id: String,
    pub(crate) caller: Option<String>,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) trace: Option<TraceParent>,
    pub(crate) trace_state: Option<String>,
    pub(crate) metadata: Metadata,
    pub(crate) event: Option<EventInfo>,
    /// The `Authorization` header as received (requests only); never passed on.
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) authorization: Option<String>,
    /// Who called, once an auth layer verified the caller's token.
    pub(crate) identity: std::sync::OnceLock<Arc<Identity>>,
}

/// A caller whose token an auth layer verified: its account id, kind and scopes. Handlers read
/// it with [`CallContext::identity`].
///
/// ```
/// let who = micro::Identity::new("go.micro.srv.billing", ["invoices.read"]);
/// assert!(who.has_scope("invoices.read"));
/// assert!(!who.has_scope("admin"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Identity {
    /// The account id (the token's `sub`).
    pub id: String,
    /// `user` or `service` (the token's `typ` claim), when the token says.
    pub kind: Option<String>,
    /// The scopes the token grants.
    pub scopes: Vec<String>,
}

impl Identity {
    /// An identity with scopes.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(id: impl Into<String>, scopes: I) -> Identity {
        Identity { id: id.into(), kind: None, scopes: scopes.into_iter().map(Into::into).collect() }
    }

    /// Sets the kind (`user`, `service`).
    pub fn with_kind(mut self, kind: impl Into<String>) -> Identity {
        self.kind = Some(kind.into());
        self
    }

    /// True when the token grants this scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Event facts, for contexts of event handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    /// The topic it was published on.
    pub topic: String,
    /// When it was published, milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Who published it.
    pub publisher: Option<String>,
}

impl CallContext {
    /// The service serving this request.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The endpoint (`Say.Hello`), or the topic for an event.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The message id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who called, if the caller said.
    pub fn caller(&self) -> Option<&str> {
        self.caller.as_deref()
    }

    /// The caller's deadline.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// Time left before the caller gives up.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(Deadline::remaining)
    }

    /// The W3C trace context this request belongs to.
    pub fn trace(&self) -> Option<&TraceParent> {
        self.trace.as_ref()
    }

    /// The W3C `tracestate` that came with the trace context (passed on unchanged).
    pub fn trace_state(&self) -> Option<&str> {
        self.trace_state.as_deref()
    }

    /// User metadata sent by the caller.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// For an event handler: topic, timestamp and publisher.
    pub fn event(&self) -> Option<&EventInfo> {
        self.event.as_ref()
    }

    /// The verified caller: set by an auth layer (`ServiceBuilder::auth`) when the request
    /// carried a valid token; `None` without one (a public endpoint) or without an auth layer.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.get().map(|i| &**i)
    }

    /// Records the verified caller (the first one set stays).
    #[cfg_attr(not(feature = "auth"), allow(dead_code))]
    pub(crate) fn set_identity(&self, identity: Arc<Identity>) {
        let _ = self.identity.set(identity);
    }

    /// The context of the request the current task is serving, if any.
    pub fn current() -> Option<CallContext> {
        CURRENT.try_with(|c| CallContext::clone(c)).ok()
    }

    pub(crate) fn with_current<R>(f: impl FnOnce(&CallContext) -> R) -> Option<R> {
        CURRENT.try_with(|c| f(c)).ok()
    }

    pub(crate) async fn scope_shared<F: std::future::Future>(ctx: Arc<CallContext>, f: F) -> F::Output {
        CURRENT.scope(ctx, f).await
    }

    /// Runs a future with this context as the current one, so calls it makes inherit deadline,
    /// trace and metadata. The server does this for every handler; use it for work you spawn.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        CURRENT.scope(Arc::new(self), f).await
    }
}
