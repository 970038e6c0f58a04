//! The pages, rendered on the server with maud (checked at compile time), and the dashboard's
//! own stylesheet and script, compiled into the binary.

use std::collections::BTreeMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use maud::{html, Markup, DOCTYPE};

use super::live::{summarize, Summary};
use super::{html as page, WebState};
use crate::gateway::{valid_name, GatewayError};
use crate::registry::ServiceRecord;

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// How to start a first service, for the empty state.
const START_ONE: &str = "MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --example greeter_server";

pub(crate) async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(CSS)
}

pub(crate) async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header(("cache-control", "public, max-age=300"))
        .body(JS)
}

/// The frame of every page: skip link, navigation, main landmark.
fn layout(title: &str, current: &str, body: Markup) -> Markup {
    let nav = [("/", "Services"), ("/events", "Events")];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · micro web" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    nav aria-label="Main" {
                        span.brand { "micro web" }
                        ul {
                            @for (href, label) in nav {
                                li {
                                    @if href == current {
                                        a href=(href) aria-current="page" { (label) }
                                    } @else {
                                        a href=(href) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main tabindex="-1" { (body) }
            }
        }
    }
}

/// One row of the services table (the script renders the same from a change).
pub(crate) fn service_row(s: &Summary) -> Markup {
    let versions: Vec<&str> = s.versions.keys().map(String::as_str).collect();
    let data = serde_json::to_string(&s.versions).unwrap_or_default();
    html! {
        tr data-service=(s.name) data-versions=(data) {
            th scope="row" { a href={ "/service/" (s.name) } { (s.name) } }
            td.versions { (versions.join(", ")) }
            td.nodes { (s.nodes()) }
            td.health { span.muted { "checking…" } }
        }
    }
}

/// The services list, rendered from registry records.
pub(crate) fn services_page(records: &[ServiceRecord]) -> Markup {
    let services = summarize(records);
    layout(
        "Services",
        "/",
        html! {
            h1 { "Services" }
            p #live-status role="status" { "Live updates: connecting…" }
            p #empty .empty hidden[!services.is_empty()] {
                "No services yet: start one with " code { (START_ONE) } " and it shows here."
            }
            div.scroll {
                table #services hidden[services.is_empty()] {
                    caption.visually-hidden { "Running services, their versions, node counts and health" }
                    thead { tr { th scope="col" { "Service" } th scope="col" { "Versions" } th scope="col" { "Nodes" } th scope="col" { "Health" } } }
                    tbody { @for s in &services { (service_row(s)) } }
                }
            }
        },
    )
}

/// `GET /`.
pub(crate) async fn services(state: web::Data<WebState>) -> Result<HttpResponse, GatewayError> {
    let records = state.client.registry().list_services().await?;
    Ok(page(StatusCode::OK, services_page(&records)))
}

fn pairs(map: &BTreeMap<String, String>) -> Markup {
    html! {
        @if map.is_empty() { span.muted { "none" } }
        @else {
            ul.pairs { @for (k, v) in map { li { code { (k) } " = " (v) } } }
        }
    }
}

fn actions_off(what: &str) -> Markup {
    html! {
        p.notice role="note" {
            "The " (what) " is off: this dashboard listens on a non-loopback address. "
            "Start it with " code { "--allow-actions" } " to turn it on."
        }
    }
}

fn call_form(name: &str, records: &[ServiceRecord]) -> Markup {
    let mut endpoints: Vec<&str> = records.iter().flat_map(|r| r.endpoints.iter().map(|e| e.name.as_str())).collect();
    endpoints.sort_unstable();
    endpoints.dedup();
    // The service's own first endpoint is picked, not one of the Debug ones every service has.
    let first = endpoints.iter().find(|e| !e.starts_with("Debug.")).copied();
    html! {
        form #call-form data-service=(name) {
            div.field {
                label for="call-endpoint" { "Endpoint" }
                select #call-endpoint name="endpoint" {
                    @for e in &endpoints { option value=(e) selected[Some(*e) == first] { (e) } }
                }
            }
            div.field {
                label for="call-request" { "Request (JSON)" }
                textarea #call-request name="request" rows="6" spellcheck="false" { "{}" }
            }
            div.field {
                label for="call-metadata" { "Metadata (JSON object of strings)" }
                textarea #call-metadata name="metadata" rows="2" spellcheck="false" {}
            }
            div.row {
                div.field {
                    label for="call-timeout" { "Timeout (ms)" }
                    input #call-timeout name="timeout" type="number" min="1" value="5000";
                }
                div.field {
                    label for="call-version" { "Version" }
                    select #call-version name="version" {
                        option value="" { "any" }
                        @for r in records { option value=(r.version) { (r.version) } }
                    }
                }
                div.field {
                    label for="call-node" { "Node" }
                    select #call-node name="node" {
                        option value="" { "any (load balanced)" }
                        @for r in records { @for n in &r.nodes { option value=(n.id) { (n.id) } } }
                    }
                }
            }
            button #call-submit type="submit" { "Call" }
        }
        section #call-result aria-labelledby="call-result-title" {
            h3 #call-result-title { "Result" }
            p #call-status role="status" { "No call yet." }
            pre #call-output tabindex="0" {}
        }
    }
}

/// The page of one service.
pub(crate) fn service_page(name: &str, records: &[ServiceRecord], actions: bool) -> Markup {
    let versions: Vec<&str> = records.iter().map(|r| r.version.as_str()).collect();
    let mut endpoints: BTreeMap<&str, &crate::registry::Endpoint> = BTreeMap::new();
    for r in records {
        for e in &r.endpoints {
            endpoints.entry(e.name.as_str()).or_insert(e);
        }
    }
    layout(
        name,
        "",
        html! {
            h1 { (name) }
            p { "Versions: " (versions.join(", ")) }
            section aria-labelledby="nodes-title" {
                h2 #nodes-title { "Nodes" }
                p #nodes-status role="status" { "Asking the nodes…" }
                div.scroll {
                    table #nodes data-service=(name) {
                        thead { tr {
                            th scope="col" { "Node" } th scope="col" { "Version" } th scope="col" { "Address" }
                            th scope="col" { "Metadata" } th scope="col" { "Health" } th scope="col" { "Uptime" }
                            th scope="col" { "Requests" } th scope="col" { "Errors" } th scope="col" { "Panics" }
                            th scope="col" { "Restarts" } th scope="col" { "In flight" } th scope="col" { "Memory" }
                        } }
                        tbody {
                            @for r in records { @for n in &r.nodes {
                                tr data-node=(n.id) {
                                    th scope="row" { code { (n.id) } }
                                    td { (r.version) }
                                    td { code { (n.address) } }
                                    td { (pairs(&n.metadata)) }
                                    td.health { "…" }
                                    td {} td {} td {} td {} td {} td {} td {}
                                }
                            } }
                        }
                    }
                }
            }
            section aria-labelledby="subscriptions-title" {
                h2 #subscriptions-title { "Subscriptions" }
                p.muted { "Event subscriptions and durable groups, as each node reports them in Debug.Stats." }
                div.scroll {
                    table #subscriptions {
                        thead { tr {
                            th scope="col" { "Node" } th scope="col" { "Topic" } th scope="col" { "Group" }
                            th scope="col" { "Durable" } th scope="col" { "Handled" } th scope="col" { "Errors" }
                            th scope="col" { "Retries" } th scope="col" { "Dead letters" } th scope="col" { "Pending" }
                        } }
                        tbody {}
                    }
                }
            }
            section aria-labelledby="endpoints-title" {
                h2 #endpoints-title { "Endpoints" }
                @if endpoints.is_empty() { p.muted { "This service registers no endpoints." } }
                @else {
                    div.scroll { table #endpoints {
                        thead { tr { th scope="col" { "Endpoint" } th scope="col" { "Metadata" } @if actions { th scope="col" { span.visually-hidden { "Action" } } } } }
                        tbody { @for (ename, e) in &endpoints {
                            tr {
                                th scope="row" { code { (ename) } }
                                td { (pairs(&e.metadata)) }
                                @if actions { td { button type="button" .pick data-endpoint=(ename) { "Call " span.visually-hidden { (ename) } } } }
                            }
                        } }
                    } }
                }
            }
            section aria-labelledby="call-title" {
                h2 #call-title { "Call" }
                @if actions { (call_form(name, records)) } @else { (actions_off("call form")) }
            }
        },
    )
}

/// `GET /service/{name}`.
pub(crate) async fn service(state: web::Data<WebState>, name: web::Path<String>) -> Result<HttpResponse, GatewayError> {
    valid_name("service", &name)?;
    let records = state.client.registry().get_service(&name).await?;
    if records.is_empty() {
        let body = layout(
            "Not found",
            "",
            html! {
                h1 { "No service " (name.as_str()) }
                p { "The registry knows no node of it (it may have stopped). " a href="/" { "Back to the services" } }
            },
        );
        return Ok(page(StatusCode::NOT_FOUND, body));
    }
    Ok(page(StatusCode::OK, service_page(&name, &records, state.config.actions_enabled())))
}

/// `GET /events`: the event console.
pub(crate) async fn console(state: web::Data<WebState>) -> HttpResponse {
    let body = if !state.config.actions_enabled() {
        html! { h1 { "Events" } (actions_off("event console")) }
    } else {
        html! {
            h1 { "Events" }
            section aria-labelledby="publish-title" {
                h2 #publish-title { "Publish" }
                form #publish-form {
                    div.field { label for="publish-topic" { "Topic" } input #publish-topic name="topic" required placeholder="user.login"; }
                    div.field { label for="publish-body" { "Event (JSON)" } textarea #publish-body name="body" rows="4" spellcheck="false" { "{}" } }
                    div.field { label for="publish-metadata" { "Metadata (JSON object of strings)" } textarea #publish-metadata name="metadata" rows="2" spellcheck="false" {} }
                    div.field.check { input #publish-durable name="durable" type="checkbox"; label for="publish-durable" { "Durable (stored by the broker until a durable group takes it)" } }
                    button type="submit" { "Publish" }
                }
                p #publish-status role="status" {}
            }
            section aria-labelledby="subscribe-title" {
                h2 #subscribe-title { "Subscribe" }
                form #subscribe-form {
                    div.field { label for="subscribe-topic" { "Topic pattern" } input #subscribe-topic name="topic" required placeholder="user.* or order.>"; }
                    button type="submit" { "Subscribe" }
                }
                p #subscribe-status role="status" { "Not subscribed." }
                ol #events aria-label="Events received, newest first" {}
            }
        }
    };
    page(StatusCode::OK, layout("Events", "/events", body))
}
