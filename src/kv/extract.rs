//! [`Kv`] as a handler argument: the store registered with `ServiceBuilder::state`.

use std::any::TypeId;

use super::Kv;
use crate::server::{ArgOf, FromRequest, Request};
use crate::status::Status;

impl FromRequest for Kv {
    fn from_request(req: &Request) -> Result<Self, Status> {
        req.state.get::<Kv>().cloned().ok_or_else(|| {
            Status::internal("no kv store registered; add `.state(Kv::from_env().await?)` to the service builder")
        })
    }

    fn required_state() -> Option<crate::server::StateNeed> {
        Some((TypeId::of::<Kv>(), "micro::kv::Kv"))
    }
}

impl<Rq> ArgOf<Rq> for Kv {}
