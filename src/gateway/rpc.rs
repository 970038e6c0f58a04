//! `POST /rpc`: `{service, endpoint, request}` as JSON or as a form, one call, its reply as
//! JSON; and how a bad `/rpc` body is answered.

use actix_web::error::{JsonPayloadError, UrlencodedError};
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::{call_scope, json_response, limit_of, payload_error, too_large, valid_name, GatewayError, State};
use crate::codec::Codec;
use crate::status::Code;

#[derive(serde::Deserialize)]
pub(super) struct RpcBody {
    service: String,
    #[serde(alias = "method")]
    endpoint: String,
    /// Kept as the JSON text it came as: it is passed on, not looked at.
    #[serde(default)]
    request: Option<Box<serde_json::value::RawValue>>,
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

pub(super) fn json_error(e: JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    match e {
        JsonPayloadError::Overflow { limit } | JsonPayloadError::OverflowKnownLength { limit, .. } => too_large(limit),
        JsonPayloadError::Payload(e) => payload_error(&e, limit_of(req)),
        JsonPayloadError::Deserialize(e) => GatewayError::bad_request(format!("invalid /rpc request: {e}")),
        e => GatewayError::bad_request(format!("cannot read the request body: {e}")),
    }
    .into()
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
    rpc: web::Json<RpcBody>,
) -> Result<HttpResponse, GatewayError> {
    call_rpc(&state, &req, rpc.into_inner()).await
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
            serde_json::value::RawValue::from_string(text)
                .map_err(|e| GatewayError::bad_request(format!("the request field is not valid JSON: {e}")))?,
        ),
        None => None,
    };
    call_rpc(&state, &req, RpcBody { service, endpoint, request }).await
}

async fn call_rpc(state: &State, req: &HttpRequest, rpc: RpcBody) -> Result<HttpResponse, GatewayError> {
    valid_name("service", &rpc.service)?;
    valid_name("endpoint", &rpc.endpoint)?;
    state.config.may_call(&rpc.service, &rpc.endpoint, true).map_err(|e| GatewayError::new(Code::FORBIDDEN, e))?;
    #[cfg(feature = "auth")]
    super::lockdown::authorize(state, req, &rpc.service, &rpc.endpoint)?;
    let bytes = match rpc.request {
        // A JSON text inside a string, as some clients send it.
        Some(raw) if raw.get().starts_with('"') => match serde_json::from_str::<String>(raw.get()) {
            Ok(text) if text.trim_start().starts_with(['{', '[']) => {
                serde_json::from_str::<serde::de::IgnoredAny>(&text)
                    .map_err(|e| GatewayError::bad_request(format!("request is not valid JSON: {e}")))?;
                Bytes::from(text)
            }
            _ => Bytes::from(String::from(Box::<str>::from(raw))),
        },
        Some(raw) => Bytes::from(String::from(Box::<str>::from(raw))),
        None => Bytes::from_static(b"{}"),
    };
    let (opts, ctx) = call_scope(state, req);
    let reply = ctx.scope(state.client.call_raw(&rpc.service, &rpc.endpoint, bytes, Codec::Json, opts)).await?;
    Ok(json_response(reply.to_json()?))
}
