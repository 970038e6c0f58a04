//! The greeter **api** service of the original Micro walkthrough: `go.micro.api.greeter`,
//! endpoint `Say.Hello`, takes the HTTP request as an `api::Request`, calls the greeter **srv**
//! service, and answers an `api::Response`.
#![allow(dead_code)]

use micro::api;
use micro::prelude::*;

pub const SERVICE: &str = "go.micro.api.greeter";

/// `Say.Hello` of the api service: an HTTP request in, an HTTP response out.
pub const SAY_HELLO: Endpoint<api::Request, api::Response> = Endpoint::new("Say.Hello");

/// Steps 3–6 of the walkthrough: the api service gets the request, calls the srv service over
/// the transport, and turns its reply into an HTTP response.
pub async fn say_hello(Req(req): Req<api::Request>, client: Client) -> Result<api::Response, Status> {
    let name = req
        .query("name")
        .or_else(|| req.form("name"))
        .ok_or_else(|| Status::bad_request("the name parameter is required"))?;
    let rsp = client
        .call(super::greeter::SERVICE, super::greeter::SAY_HELLO, &super::greeter::Request { name: name.to_string() })
        .await
        .map_err(|e| e.to_status(SERVICE))?;
    Ok(api::Response::json(200, &serde_json::json!({ "message": rsp.msg })))
}

pub fn service() -> micro::ServiceBuilder {
    Service::builder(SERVICE).version("1.0.0").handle(SAY_HELLO, say_hello)
}
