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
