//! Keep-alive HTTP/1.1 connections from the sidecar to its app (hyper's `client::conn`).
//!
//! One app, one address, plain HTTP on this machine or next to it: no proxy, no TLS, no
//! redirects, no DNS cache, so a general client's machinery (awc's per-request date service,
//! its response decoder's buffers) is cost without use. A request goes out on an idle
//! connection when there is one, on a new one otherwise; a connection goes back to the pool
//! once its answer is read whole. A pooled connection the app closed while it sat idle hands
//! the request back unsent (hyper's `try_send_request`), and it goes out on another one. A
//! request that may have reached the app is never sent again: callers retry a 503 elsewhere, so
//! only a request the app cannot have seen is one ([`SendError::Unsent`]).

use std::cell::RefCell;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept for the next requests; more are opened under load and closed once
/// their answer is read.
const MAX_IDLE: usize = 64;
/// How long a connection may sit idle and still be used. Servers close idle keep-alive
/// connections after a while of their own (gunicorn after 2 s, uvicorn and Node.js after 5 s),
/// and a request written just as that happens is lost with the connection (a 502): the sidecar
/// lets go of them first.
const IDLE_FOR: Duration = Duration::from_secs(1);

/// Why a request got no usable answer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// Not sent: no connection could be opened, or it closed before the request was written.
    /// The app has not seen it.
    Unsent(String),
    /// Sent, and the connection failed before the whole answer: the app may have acted on it.
    NoAnswer(String),
    /// The answer's body is larger than the limit.
    TooLarge(usize),
}

/// The pool of connections to one `host:port`. It lives on one thread (the arbiter that
/// serves the app), as the handlers that use it do.
pub(crate) struct Connections {
    addr: Box<str>,
    /// Idle connections and when each became idle, the latest last.
    idle: RefCell<Vec<(SendRequest<Full<Bytes>>, Instant)>>,
}

impl Connections {
    /// Connections to `addr` (`127.0.0.1:5000`, or `host:port`, resolved on each connect).
    pub(crate) fn new(addr: &str) -> Connections {
        Connections { addr: addr.into(), idle: RefCell::new(Vec::new()) }
    }

    /// Sends `req` (origin-form URI, `Host` set) and reads the answer's body up to `limit`
    /// bytes.
    pub(crate) async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), SendError> {
        while let Some(mut conn) = self.take_idle() {
            if conn.ready().await.is_err() {
                continue;
            }
            match conn.try_send_request(req).await {
                Ok(rsp) => return self.read(conn, rsp, limit).await,
                Err(mut e) => match e.take_message() {
                    // Never written: the app had closed the connection. Another one.
                    Some(unsent) => req = unsent,
                    None => return Err(SendError::NoAnswer(e.into_error().to_string())),
                },
            }
        }
        let mut conn = self.connect().await?;
        match conn.try_send_request(req).await {
            Ok(rsp) => self.read(conn, rsp, limit).await,
            Err(e) if e.message().is_some() => Err(SendError::Unsent(e.into_error().to_string())),
            Err(e) => Err(SendError::NoAnswer(e.into_error().to_string())),
        }
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.borrow_mut();
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() > IDLE_FOR {
                // The latest is too old: all the others are older.
                idle.clear();
                return None;
            }
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let stream = TcpStream::connect(&*self.addr).await.map_err(|e| SendError::Unsent(e.to_string()))?;
        // Requests and answers are one small write each: no Nagle delay on either.
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream)).await.map_err(|e| SendError::Unsent(e.to_string()))?;
        actix_rt::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "a connection to the app failed");
            }
        });
        Ok(sender)
    }

    async fn read(
        &self,
        conn: SendRequest<Full<Bytes>>,
        rsp: hyper::Response<hyper::body::Incoming>,
        limit: usize,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let status = rsp.status();
        let body = Limited::new(rsp.into_body(), limit).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                SendError::TooLarge(limit)
            } else {
                SendError::NoAnswer(e.to_string())
            }
        })?;
        let mut idle = self.idle.borrow_mut();
        if idle.len() < MAX_IDLE && !conn.is_closed() {
            idle.push((conn, Instant::now()));
        }
        Ok((status, body.to_bytes()))
    }
}
