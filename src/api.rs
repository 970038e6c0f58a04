//! `api.Request` and `api.Response`: the HTTP request as the gateway's `api` handler hands it to
//! an api service, and the HTTP response the service hands back (go-micro's `api` proto, JSON
//! field names included). Maps hold `{key, values}` pairs keyed by name.
//!
//! ```
//! use micro::api;
//! use micro::prelude::*;
//!
//! async fn hello(Req(req): Req<api::Request>) -> Result<api::Response, Status> {
//!     let name = req.query("name").ok_or_else(|| Status::bad_request("name is required"))?;
//!     Ok(api::Response::json(200, &serde_json::json!({ "message": format!("Hello {name}") })))
//! }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A key with its values (a header, query or form field may repeat).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// The name as it appeared.
    pub key: String,
    /// Every value, in order.
    #[serde(default)]
    pub values: Vec<String>,
}

/// Pairs by key.
pub type Pairs = BTreeMap<String, Pair>;

/// An HTTP request as an api service receives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, ...
    #[serde(default)]
    pub method: String,
    /// The request path (`/greeter/say/hello`).
    #[serde(default)]
    pub path: String,
    /// Headers, by name as received.
    #[serde(default)]
    pub header: Pairs,
    /// Query parameters.
    #[serde(default)]
    pub get: Pairs,
    /// Form fields of an `application/x-www-form-urlencoded` body.
    #[serde(default)]
    pub post: Pairs,
    /// The raw body (UTF-8; lossy for binary bodies).
    #[serde(default)]
    pub body: String,
    /// The full request URL as received (path and query).
    #[serde(default)]
    pub url: String,
}

fn first<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs.get(key).and_then(|p| p.values.first()).map(String::as_str)
}

impl Request {
    /// The first value of a query parameter.
    pub fn query(&self, key: &str) -> Option<&str> {
        first(&self.get, key)
    }

    /// The first value of a form field.
    pub fn form(&self, key: &str) -> Option<&str> {
        first(&self.post, key)
    }

    /// The first value of a header (name compared ignoring ASCII case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header
            .values()
            .find(|p| p.key.eq_ignore_ascii_case(name))
            .and_then(|p| p.values.first())
            .map(String::as_str)
    }
}

/// An HTTP response as an api service returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The HTTP status (0 means 200).
    #[serde(rename = "statusCode", default)]
    pub status_code: i32,
    /// Headers to set.
    #[serde(default)]
    pub header: Pairs,
    /// The body.
    #[serde(default)]
    pub body: String,
}

impl Response {
    /// A response with a JSON body and `Content-Type: application/json`.
    pub fn json<T: Serialize + ?Sized>(status: i32, value: &T) -> Response {
        let body = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        Response::new(status, body).with_header("Content-Type", "application/json")
    }

    /// A response with a plain body.
    pub fn new(status: i32, body: impl Into<String>) -> Response {
        Response { status_code: status, header: Pairs::new(), body: body.into() }
    }

    /// Adds a header value.
    pub fn with_header(mut self, key: &str, value: impl Into<String>) -> Response {
        self.header
            .entry(key.to_string())
            .or_insert_with(|| Pair { key: key.to_string(), values: Vec::new() })
            .values
            .push(value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_matches_go_micro() {
        let r = Response::json(201, &serde_json::json!({"ok": true}));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["statusCode"], 201);
        assert_eq!(v["header"]["Content-Type"]["values"][0], "application/json");
        let req: Request = serde_json::from_value(serde_json::json!({
            "method": "GET", "path": "/greeter/say/hello",
            "get": {"name": {"key": "name", "values": ["John"]}},
            "header": {"Accept": {"key": "Accept", "values": ["*/*"]}}
        }))
        .unwrap();
        assert_eq!(req.query("name"), Some("John"));
        assert_eq!(req.header("accept"), Some("*/*"));
    }
}
