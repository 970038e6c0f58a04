//! The `proxy` handler: a reverse proxy to services that register an HTTP address (node
//! metadata `http`, `host:port`). Bodies stream both ways; WebSocket upgrades are piped frame
//! by frame; hop-by-hop headers are stripped and `X-Forwarded-*` set. The target is only ever
//! an address from the registry: callers cannot name hosts.

use std::time::Duration;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use futures::{SinkExt, StreamExt};

use super::error::GatewayError;
use super::resolve::proxy_target;
use super::too_large;
use super::State;
use crate::registry::ServiceRecord;
use crate::selector::Filter;
use crate::status::Code;

/// The node metadata key that carries a node's HTTP address.
pub const HTTP_ADDRESS_KEY: &str = "http";

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// True for headers that belong to one connection, not to the message.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Headers to forward: without hop-by-hop ones (and those `Connection` names), without
/// inbound `X-Forwarded-*`/`Forwarded` (we set our own).
fn forwardable(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    headers
        .iter()
        .filter(|(n, _)| {
            !is_hop_by_hop(n)
                && !named.iter().any(|x| x == n.as_str())
                && *n != header::HOST
                && *n != header::FORWARDED
                && !n.as_str().starts_with("x-forwarded-")
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn valid_address(a: &str) -> bool {
    match a.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

/// Picks a node of `service` that registered an HTTP address.
async fn target(state: &State, service: &str) -> Result<String, GatewayError> {
    let records = state.client.registry().get_service(service).await?;
    let with_http: Vec<ServiceRecord> = records
        .into_iter()
        .map(|mut s| {
            s.nodes.retain(|n| n.metadata.get(HTTP_ADDRESS_KEY).is_some_and(|a| valid_address(a)));
            s
        })
        .filter(|s| !s.nodes.is_empty())
        .collect();
    let picked = state
        .client
        .selector()
        .select(&with_http, &Filter::default())
        .ok_or_else(|| GatewayError::new(Code::UNAVAILABLE, format!("no node of {service} serves HTTP")))?;
    with_http
        .iter()
        .flat_map(|s| &s.nodes)
        .find(|n| n.id == picked.node_id)
        .and_then(|n| n.metadata.get(HTTP_ADDRESS_KEY).cloned())
        .ok_or_else(|| GatewayError::new(Code::UNAVAILABLE, format!("the node picked for {service} has gone")))
}

thread_local! {
    static HTTP: awc::Client = awc::Client::builder().disable_redirects().timeout(Duration::from_secs(30)).finish();
}

/// Forwards one request (HTTP or WebSocket) to a node of the service the rest of its path
/// (after the route prefix) names.
pub(crate) async fn forward(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let path = req.match_info().unprocessed();
    let (service, rest) = proxy_target(&state.config.namespace, path).map_err(|e| GatewayError::bad_request(e.0))?;
    #[cfg(feature = "auth")]
    super::lockdown::authorize(&state, &req, &service, "HTTP")?;
    if req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok())
        > Some(state.config.max_body)
    {
        return Err(too_large(state.config.max_body));
    }
    let address = target(&state, &service).await?;
    let query = req.query_string();
    let path_and_query = if query.is_empty() { rest.to_string() } else { format!("{rest}?{query}") };
    let peer = req.connection_info().peer_addr().unwrap_or("unknown").to_string();
    let host = req.connection_info().host().to_string();
    let scheme = req.connection_info().scheme().to_string();

    let is_ws = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if is_ws {
        return websocket(&req, payload, &format!("ws://{address}{path_and_query}"), &peer).await;
    }

    let url = format!("http://{address}{path_and_query}");
    let mut upstream = HTTP.with(|c| c.request(req.method().clone(), &url)).timeout(state.config.timeout);
    for (n, v) in forwardable(req.headers()) {
        upstream = upstream.append_header((n, v));
    }
    upstream = upstream
        .insert_header(("x-forwarded-for", peer))
        .insert_header(("x-forwarded-host", host))
        .insert_header(("x-forwarded-proto", scheme));
    if let Some(id) = super::checks::request_id(&req) {
        upstream = upstream.insert_header(("x-request-id", id));
    }
    let limit = state.config.max_body;
    let mut seen = 0usize;
    let body = payload.map(move |chunk| {
        let chunk = chunk?;
        seen += chunk.len();
        if seen > limit {
            return Err(actix_web::error::PayloadError::Overflow);
        }
        Ok(chunk)
    });
    let response = upstream.send_stream(body).await.map_err(|e| match e {
        awc::error::SendRequestError::Timeout => {
            GatewayError::new(Code::GATEWAY_TIMEOUT, format!("{service} did not answer in time"))
        }
        awc::error::SendRequestError::Body(_) => too_large(limit),
        e => GatewayError::new(Code::BAD_GATEWAY, format!("{service} at {address}: {e}")),
    })?;
    let mut out = HttpResponse::build(response.status());
    for (n, v) in forwardable(response.headers()) {
        if n != header::CONTENT_LENGTH {
            out.append_header((n, v));
        }
    }
    Ok(out.streaming(response))
}

/// Accepts the client's upgrade, connects to the backend, and pipes frames both ways until
/// either side closes.
async fn websocket(
    req: &HttpRequest,
    payload: web::Payload,
    url: &str,
    peer: &str,
) -> Result<HttpResponse, GatewayError> {
    let mut backend_req = awc::Client::new().ws(url).max_frame_size(1 << 20).header("x-forwarded-for", peer);
    for name in [header::AUTHORIZATION, header::COOKIE, header::SEC_WEBSOCKET_PROTOCOL] {
        if let Some(v) = req.headers().get(&name) {
            backend_req = backend_req.header(name, v.clone());
        }
    }
    let (_, backend) = backend_req
        .connect()
        .await
        .map_err(|e| GatewayError::new(Code::BAD_GATEWAY, format!("websocket backend {url}: {e}")))?;
    let (response, mut session, client) = actix_ws::handle(req, payload)
        .map_err(|e| GatewayError::bad_request(format!("websocket upgrade failed: {e}")))?;
    let mut client = client.max_frame_size(1 << 20);
    let (mut to_backend, mut from_backend) = backend.split();
    actix_rt::spawn(async move {
        use actix_ws::Message;
        use awc::ws::Frame;
        loop {
            tokio::select! {
                msg = client.next() => {
                    let msg = match msg {
                        Some(Ok(m)) => m,
                        _ => { let _ = to_backend.send(Message::Close(None)).await; break; }
                    };
                    let closing = matches!(msg, Message::Close(_));
                    if to_backend.send(msg).await.is_err() || closing {
                        break;
                    }
                }
                frame = from_backend.next() => {
                    let sent = match frame {
                        Some(Ok(Frame::Text(t))) => match String::from_utf8(t.to_vec()) {
                            Ok(t) => session.text(t).await,
                            Err(_) => break,
                        },
                        Some(Ok(Frame::Binary(b))) => session.binary(b).await,
                        Some(Ok(Frame::Ping(b))) => session.ping(&b).await,
                        Some(Ok(Frame::Pong(b))) => session.pong(&b).await,
                        Some(Ok(Frame::Close(reason))) => { let _ = session.close(reason).await; break; }
                        Some(Ok(Frame::Continuation(_))) => Ok(()),
                        _ => { let _ = session.close(None).await; break; }
                    };
                    if sent.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_forwarded_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert(HeaderName::from_static("x-secret"), HeaderValue::from_static("1"));
        h.insert(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static("6.6.6.6"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let kept: Vec<String> = forwardable(&h).into_iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(kept, ["accept"]);
    }

    #[test]
    fn only_host_port_addresses() {
        assert!(valid_address("127.0.0.1:8080"));
        assert!(valid_address("web-1.internal:80"));
        assert!(!valid_address("evil.com/path:80"));
        assert!(!valid_address("127.0.0.1"));
        assert!(!valid_address("h:0"));
    }
}
