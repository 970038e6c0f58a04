//! `POST /rpc`: `{service, endpoint, request}` as JSON or as a form, one call, its reply as
//! JSON; and how a bad `/rpc` body is answered.

use std::borrow::Cow;

use actix_web::error::UrlencodedError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use serde_json::value::RawValue;

use super::{
    call_options, json_response, limit_of, payload_error, read_body, too_large, valid_name, GatewayError, State,
};
use crate::codec::Codec;
use crate::status::Code;

/// Read in place from the body: nothing of it is copied unless escaped.
#[derive(serde::Deserialize)]
pub(super) struct RpcBody<'a> {
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(alias = "method", borrow)]
    endpoint: Cow<'a, str>,
    /// Kept as the JSON text it came as: it is passed on, not looked at.
    #[serde(default, borrow)]
    request: Option<&'a RawValue>,
}

/// The form version of [`RpcBody`]: `request` is a JSON text.
#[derive(serde::Deserialize)]
pub(super) struct RpcForm {
    service: String,
    #[serde(alias = "method")]
    endpoint: String,
    #[serde(default)]
    request: Option<String>,
}

/// `/rpc` with another method than POST.
pub(super) async fn rpc_other_method() -> HttpResponse {
    let e = GatewayError::new(Code::METHOD_NOT_ALLOWED, "call /rpc with POST");
    let mut rsp = actix_web::ResponseError::error_response(&e);
    rsp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
    rsp
}

pub(super) fn form_error(e: UrlencodedError, req: &HttpRequest) -> actix_web::Error {
    match e {
        UrlencodedError::Overflow { limit, .. } => too_large(limit),
        UrlencodedError::Payload(e) => payload_error(&e, limit_of(req)),
        UrlencodedError::Parse(e) => GatewayError::bad_request(format!("invalid /rpc form: {e}")),
        e => GatewayError::bad_request(format!("cannot read the request body: {e}")),
    }
    .into()
}

/// `POST /rpc` with a JSON body `{service, endpoint|method, request}`.
pub(super) async fn rpc_json(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let body = read_body(payload, &state).await?;
    let rpc: RpcBody<'_> =
        serde_json::from_slice(&body).map_err(|e| GatewayError::bad_request(format!("invalid /rpc request: {e}")))?;
    call_rpc(&state, &req, &rpc.service, &rpc.endpoint, rpc.request, Some(&body)).await
}

/// `POST /rpc` with form fields, `request` a JSON text (as in the original Micro example).
pub(super) async fn rpc_form(
    state: web::Data<State>,
    req: HttpRequest,
    form: web::Form<RpcForm>,
) -> Result<HttpResponse, GatewayError> {
    let RpcForm { service, endpoint, request } = form.into_inner();
    let request = match request {
        Some(text) => Some(
            RawValue::from_string(text)
                .map_err(|e| GatewayError::bad_request(format!("the request field is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    call_rpc(&state, &req, &service, &endpoint, request.as_deref(), None).await
}

/// Calls `service`'s `endpoint` with `request`, a JSON text read from `body` when given (the
/// call then sends that part of the body as it is, without a copy).
async fn call_rpc(
    state: &State,
    req: &HttpRequest,
    service: &str,
    endpoint: &str,
    request: Option<&RawValue>,
    body: Option<&Bytes>,
) -> Result<HttpResponse, GatewayError> {
    valid_name("service", service)?;
    valid_name("endpoint", endpoint)?;
    state.config.may_call(service, endpoint, true).map_err(|e| GatewayError::new(Code::FORBIDDEN, e))?;
    #[cfg(feature = "auth")]
    super::lockdown::authorize(state, req, service, endpoint)?;
    let bytes = match request {
        // A JSON text inside a string, as some clients send it.
        Some(raw) if raw.get().starts_with('"') => match serde_json::from_str::<String>(raw.get()) {
            Ok(text) if text.trim_start().starts_with(['{', '[']) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&text)
                    .map_err(|e| GatewayError::bad_request(format!("request is not valid JSON: {e}")))?;
                Bytes::from(text)
            }
            _ => as_sent(raw, body),
        },
        Some(raw) => as_sent(raw, body),
        None => Bytes::from_static(b"{}"),
    };
    let opts = call_options(state, req);
    let reply = state.client.call_raw(service, endpoint, bytes, Codec::Json, opts).await?;
    Ok(json_response(reply.to_json()?))
}

/// The JSON text of `raw`: the very bytes of `body` it was read from, or a copy.
fn as_sent(raw: &RawValue, body: Option<&Bytes>) -> Bytes {
    match body {
        Some(body) => body.slice_ref(raw.get().as_bytes()),
        None => Bytes::copy_from_slice(raw.get().as_bytes()),
    }
}
