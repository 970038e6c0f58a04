//! Load shedding, the built-in middleware in front of every endpoint a user binds.

use std::sync::Arc;

use futures::future::LocalBoxFuture;

use super::{Request, Stats};
use crate::middleware::{Middleware, Next, Outcome};
use crate::status::Status;

/// Answers 503 Unavailable, without running the handler, while more than `max` requests are in
/// flight (`ServiceBuilder::max_in_flight`). The toolkit's `Debug.*` probes are not behind it.
pub(crate) struct LoadShed {
    pub(crate) service: Arc<str>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) max: usize,
}

impl Middleware for LoadShed {
    fn call(&self, req: Request, next: Next) -> LocalBoxFuture<'static, Outcome> {
        if !req.is_event() && self.stats.in_flight() as usize > self.max {
            let status =
                Status::unavailable(format!("{} is overloaded ({} requests in flight)", self.service, self.max));
            return Box::pin(futures::future::ready(Err(status)));
        }
        next.run(req)
    }
}
