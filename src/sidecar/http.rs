//! The HTTP API the app calls: the gateway's `/rpc` and event publishing (under `/publish`),
//! plus `/registry` and the `/subscribe` WebSocket, behind an optional shared token.

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse};
use futures::future::LocalBoxFuture;
use futures::StreamExt;

use crate::broker::{Event, SubscribeOptions};
use crate::client::Client;
use crate::gateway::{guard_and_tag, same_site_or_allowed, Gateway, GatewayError};
use crate::message::Metadata;
use crate::registry::ServiceRecord;
use crate::status::Code;
use crate::subject;

/// What the sidecar's own handlers share.
pub(crate) struct Api {
    pub(crate) client: Client,
    pub(crate) token: Option<String>,
    pub(crate) origins: Vec<String>,
    /// Turns true when the sidecar stops: open WebSockets close.
    pub(crate) stopping: tokio::sync::watch::Receiver<bool>,
}

/// The app-facing HTTP API.
pub(crate) fn app(
    gateway: &Gateway,
    api: web::Data<Api>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let gateway = gateway.clone();
    let cors = crate::gateway::cors(&api.origins);
    App::new()
        .app_data(api)
        // The last wrapped runs first: path guard and request id, then the token.
        .wrap_fn(require_token)
        .wrap_fn(guard_and_tag)
        .wrap(cors)
        .route("/registry", web::get().to(list))
        .route("/registry/{name}", web::get().to(get))
        .route("/subscribe", web::get().to(subscribe))
        .configure(move |cfg| gateway.configure_routes(cfg))
        .default_service(web::to(not_found))
}

/// Refuses requests without the shared token, when one is set.
fn require_token<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error>>
where
    S: actix_web::dev::Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let expected = req.app_data::<web::Data<Api>>().and_then(|a| a.token.clone());
    if let Some(expected) = expected {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.as_bytes(), expected.as_bytes()) {
            let e = GatewayError::new(Code::UNAUTHORIZED, "this sidecar needs `Authorization: Bearer <token>`");
            let (http, _) = req.into_parts();
            return Box::pin(async move {
                Ok(ServiceResponse::new(http, actix_web::ResponseError::error_response(&e)).map_into_right_body())
            });
        }
    }
    let fut = srv.call(req);
    Box::pin(async move { fut.await.map(ServiceResponse::map_into_left_body) })
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, GatewayError> {
    Err(GatewayError::new(Code::NOT_FOUND, format!("{} {} is not part of the sidecar's API", req.method(), req.path())))
}

/// `GET /registry`: every service, as the registry records them.
async fn list(api: web::Data<Api>) -> Result<HttpResponse, GatewayError> {
    let all: Vec<ServiceRecord> = api.client.registry().list_services().await?;
    Ok(HttpResponse::Ok().json(all))
}

/// `GET /registry/{name}`: the records of one service, or 404.
async fn get(api: web::Data<Api>, name: web::Path<String>) -> Result<HttpResponse, GatewayError> {
    let name = name.into_inner();
    if !subject::is_valid(&name, false) {
        return Err(GatewayError::bad_request(format!("invalid service name {name:?}")));
    }
    let records = api.client.registry().get_service(&name).await?;
    if records.is_empty() {
        return Err(GatewayError::new(Code::NOT_FOUND, format!("service {name} is not in the registry")));
    }
    Ok(HttpResponse::Ok().json(records))
}

#[derive(serde::Deserialize)]
struct SubscribeQuery {
    topic: String,
    #[serde(default)]
    group: Option<String>,
}

/// One event as a WebSocket text frame.
#[derive(serde::Serialize)]
struct EventFrame<'a> {
    id: &'a str,
    topic: &'a str,
    timestamp: u64,
    publisher: Option<&'a str>,
    metadata: &'a Metadata,
    data: serde_json::Value,
}

fn frame(e: &Event) -> Option<String> {
    let data = match e.decode::<serde_json::Value>() {
        Ok(v) => v,
        Err(err) => {
            tracing::warn!(topic = %e.topic, error = %err, "event skipped: its payload is not JSON-compatible");
            return None;
        }
    };
    let f = EventFrame {
        id: &e.id,
        topic: &e.topic,
        timestamp: e.timestamp,
        publisher: e.publisher.as_deref(),
        metadata: &e.metadata,
        data,
    };
    serde_json::to_string(&f).ok()
}

/// `GET /subscribe?topic=..&group=..`: a WebSocket carrying one JSON text frame per event.
async fn subscribe(api: web::Data<Api>, req: HttpRequest, payload: web::Payload) -> Result<HttpResponse, GatewayError> {
    // A browser page on another site must not read the app's events (cross-site WebSocket
    // hijacking): the handshake carries its Origin.
    if !same_site_or_allowed(req.headers(), req.uri(), &api.origins) {
        return Err(GatewayError::new(Code::FORBIDDEN, "cross-site WebSocket refused: its origin is not allowed"));
    }
    let query = web::Query::<SubscribeQuery>::from_query(req.query_string())
        .map_err(|e| GatewayError::bad_request(format!("use /subscribe?topic=T[&group=G]: {e}")))?;
    let SubscribeQuery { topic, group } = query.into_inner();
    let options = match group.filter(|g| !g.is_empty()) {
        Some(g) => SubscribeOptions::group(g),
        None => SubscribeOptions::broadcast(),
    };
    let mut events = api.client.broker().subscribe(&topic, options).await?;
    // Subscribed at the broker before the app hears it is: what it publishes next arrives.
    api.client.transport().flush().await?;
    let (response, mut session, frames) = actix_ws::handle(&req, payload)
        .map_err(|e| GatewayError::bad_request(format!("websocket upgrade failed: {e}")))?;
    let mut frames = frames.max_frame_size(64 * 1024);
    let mut stopping = api.stopping.clone();
    actix_rt::spawn(async move {
        use actix_ws::Message;
        loop {
            tokio::select! {
                _ = stopping.wait_for(|s| *s) => break,
                event = events.next() => {
                    let Some(event) = event else { break };
                    let Some(text) = frame(&event) else { continue };
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                msg = frames.next() => match msg {
                    Some(Ok(Message::Ping(b))) => {
                        if session.pong(&b).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = session.close(None).await;
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abd", b"abc"));
        assert!(!same_secret(b"ab", b"abc"));
    }
}
