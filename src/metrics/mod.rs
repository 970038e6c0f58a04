//! Metrics through the [`metrics`](https://docs.rs/metrics) facade: requests, errors and latency
//! per endpoint on servers and clients, events published, handled, retried and dead-lettered,
//! requests in flight, restarts and panics, the registry's size and the selector's blacklist.
//!
//! The library only records; a process chooses where the numbers go by installing a recorder.
//! With the `prometheus` feature, [`prometheus::install`] installs the Prometheus recorder once
//! per process and [`ServiceBuilder::metrics_addr`](crate::ServiceBuilder::metrics_addr), the
//! gateway and `micro web` serve it at `/metrics`. Without a recorder every handle is a no-op:
//! a server keeps its handles per endpoint (made once when the service starts), so a request
//! costs a branch per counter, and the per-call lookups of clients and publishers are skipped
//! entirely until [`enable`] was called (the Prometheus installation calls it).
//!
//! Install the recorder **before** starting services: handles made while no recorder is
//! installed stay no-ops. Every name, its labels and its meaning are in the [`names`] module and
//! in `docs/observability.md`.
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! // With your own recorder (any `metrics::Recorder`) installed first:
//! micro::metrics::enable(); // client and publisher metrics too
//! assert!(micro::metrics::enabled());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Instant;

use ::metrics::{counter, gauge, histogram, Counter, Gauge, Histogram, SharedString};
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::status::{Code, Status};

#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;

/// The metric names, one constant each, with their labels and units.
pub mod names {
    /// Counter `{service, endpoint, code}`: requests a node answered (`code` 200 for success,
    /// else the status code of the error).
    pub const SERVER_REQUESTS: &str = "micro_server_requests_total";
    /// Histogram `{service, endpoint}`, seconds: time from dispatch to the handler's result.
    pub const SERVER_DURATION: &str = "micro_server_duration_seconds";
    /// Gauge `{service}`: requests and events being handled now.
    pub const SERVER_IN_FLIGHT: &str = "micro_server_in_flight";
    /// Counter `{service}`: requests dropped because their deadline had passed on arrival.
    pub const SERVER_EXPIRED: &str = "micro_server_expired_total";
    /// Counter `{service}`: handler panics (async fns, actors, event handlers).
    pub const SERVER_PANICS: &str = "micro_server_panics_total";
    /// Counter `{service}`: restarts (a panicked handler, a dead actor started again from its
    /// factory, a subscription loop subscribed again).
    pub const SERVER_RESTARTS: &str = "micro_server_restarts_total";
    /// Counter `{service, endpoint, code}`: calls a client made (`code` 200 for success, the
    /// remote status code, or the nearest code of a local failure: 503 no node, 408 timeout).
    pub const CLIENT_REQUESTS: &str = "micro_client_requests_total";
    /// Histogram `{service, endpoint}`, seconds: a call's whole time, retries included.
    pub const CLIENT_DURATION: &str = "micro_client_duration_seconds";
    /// Counter `{topic, durable, outcome}`: events published (`outcome` ok or error).
    pub const EVENTS_PUBLISHED: &str = "micro_events_published_total";
    /// Counter `{service, topic, durable, outcome}`: events handed to a subscription's handler
    /// (`topic` is the subscribed pattern; `outcome` ok or error, a malformed event or a panic
    /// counting as error).
    pub const EVENTS_HANDLED: &str = "micro_events_handled_total";
    /// Histogram `{service, topic}`, seconds: an event handler's time.
    pub const EVENTS_DURATION: &str = "micro_events_duration_seconds";
    /// Counter `{service, topic}`: durable events handed back to the broker for another attempt.
    pub const EVENTS_RETRIED: &str = "micro_events_retried_total";
    /// Counter `{service, topic}`: durable events published to the group's dead-letter topic.
    pub const EVENTS_DEAD_LETTERED: &str = "micro_events_dead_lettered_total";
    /// Gauge: services known to the process's registries (summed over them).
    pub const REGISTRY_SERVICES: &str = "micro_registry_services";
    /// Gauge: nodes known to the process's registries (summed over them).
    pub const REGISTRY_NODES: &str = "micro_registry_nodes";
    /// Gauge: nodes on the blacklists of the process's selectors (summed over them).
    pub const SELECTOR_BLACKLISTED: &str = "micro_selector_blacklisted";
    /// Gauge `{service}`: 1 while every health check of the node passes, else 0.
    pub const HEALTH_HEALTHY: &str = "micro_health_healthy";
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static DESCRIBED: Once = Once::new();

/// Turns on the metrics that are looked up per call (clients and publishers: their labels are
/// only known at the call). Call it after installing a recorder of your own;
/// [`prometheus::install`] calls it. Servers, subscriptions, the registry and the selector
/// record to whatever recorder is installed when they start, without it.
pub fn enable() {
    describe();
    ENABLED.store(true, Ordering::Release);
}

/// True once [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Describes every metric to the installed recorder (units and help texts), once.
fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    DESCRIBED.call_once(|| {
        describe_counter!(names::SERVER_REQUESTS, "Requests a node answered, by endpoint and status code.");
        describe_histogram!(names::SERVER_DURATION, Unit::Seconds, "Time a node took to handle a request.");
        describe_gauge!(names::SERVER_IN_FLIGHT, "Requests and events a node is handling now.");
        describe_counter!(names::SERVER_EXPIRED, "Requests dropped because their deadline had passed on arrival.");
        describe_counter!(names::SERVER_PANICS, "Handler panics.");
        describe_counter!(names::SERVER_RESTARTS, "Handlers, actors and subscription loops started again.");
        describe_counter!(names::CLIENT_REQUESTS, "Calls made, by service, endpoint and status code.");
        describe_histogram!(names::CLIENT_DURATION, Unit::Seconds, "Time a call took, retries included.");
        describe_counter!(names::EVENTS_PUBLISHED, "Events published, by topic and outcome.");
        describe_counter!(names::EVENTS_HANDLED, "Events handed to a subscription's handler, by outcome.");
        describe_histogram!(names::EVENTS_DURATION, Unit::Seconds, "Time an event handler took.");
        describe_counter!(names::EVENTS_RETRIED, "Durable events handed back to the broker for another attempt.");
        describe_counter!(names::EVENTS_DEAD_LETTERED, "Durable events published to a dead-letter topic.");
        describe_gauge!(names::REGISTRY_SERVICES, "Services known to the process's registries.");
        describe_gauge!(names::REGISTRY_NODES, "Nodes known to the process's registries.");
        describe_gauge!(names::SELECTOR_BLACKLISTED, "Nodes on the blacklists of the process's selectors.");
        describe_gauge!(names::HEALTH_HEALTHY, "1 while every health check of the node passes, else 0.");
    });
}

/// The `code` label of a success.
const OK: &str = "200";

/// The label text of a status code, without allocating for the common ones.
fn code_label(code: Code) -> SharedString {
    let s: &'static str = match code.as_u16() {
        200 => OK,
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        408 => "408",
        409 => "409",
        413 => "413",
        429 => "429",
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        n => return SharedString::from(n.to_string()),
    };
    SharedString::const_str(s)
}

/// A service's handles: in flight, expired, panics, restarts, health.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    pub(crate) in_flight: Gauge,
    pub(crate) expired: Counter,
    pub(crate) panics: Counter,
    pub(crate) restarts: Counter,
    pub(crate) healthy: Gauge,
}

impl ServiceMetrics {
    pub(crate) fn new(service: &Arc<str>) -> ServiceMetrics {
        let s = SharedString::from(service.clone());
        ServiceMetrics {
            in_flight: gauge!(names::SERVER_IN_FLIGHT, "service" => s.clone()),
            expired: counter!(names::SERVER_EXPIRED, "service" => s.clone()),
            panics: counter!(names::SERVER_PANICS, "service" => s.clone()),
            restarts: counter!(names::SERVER_RESTARTS, "service" => s.clone()),
            healthy: gauge!(names::HEALTH_HEALTHY, "service" => s),
        }
    }
}

/// One endpoint's handles, made when the service starts. Error counters are made on the first
/// error of each code.
#[derive(Debug)]
pub(crate) struct EndpointMetrics {
    service: SharedString,
    endpoint: SharedString,
    ok: Counter,
    duration: Histogram,
    errors: std::cell::RefCell<Vec<(u16, Counter)>>,
}

impl EndpointMetrics {
    pub(crate) fn new(service: &Arc<str>, endpoint: &Arc<str>) -> EndpointMetrics {
        let (service, endpoint) = (SharedString::from(service.clone()), SharedString::from(endpoint.clone()));
        EndpointMetrics {
            ok: counter!(names::SERVER_REQUESTS, "service" => service.clone(), "endpoint" => endpoint.clone(), "code" => OK),
            duration: histogram!(names::SERVER_DURATION, "service" => service.clone(), "endpoint" => endpoint.clone()),
            service,
            endpoint,
            errors: Default::default(),
        }
    }

    /// No handles (until the server names the endpoint's service).
    pub(crate) fn noop() -> EndpointMetrics {
        EndpointMetrics {
            service: SharedString::const_str(""),
            endpoint: SharedString::const_str(""),
            ok: Counter::noop(),
            duration: Histogram::noop(),
            errors: Default::default(),
        }
    }

    /// Counts one answered request and its time.
    pub(crate) fn record(&self, took: std::time::Duration, error: Option<&Status>) {
        self.duration.record(took.as_secs_f64());
        match error {
            None => self.ok.increment(1),
            Some(status) => self.error(status.code()).increment(1),
        }
    }

    fn error(&self, code: Code) -> Counter {
        let n = code.as_u16();
        if let Some((_, c)) = self.errors.borrow().iter().find(|(k, _)| *k == n) {
            return c.clone();
        }
        let c = counter!(names::SERVER_REQUESTS, "service" => self.service.clone(), "endpoint" => self.endpoint.clone(), "code" => code_label(code));
        self.errors.borrow_mut().push((n, c.clone()));
        c
    }
}

/// One subscription's handles, made when the service starts.
#[derive(Debug)]
pub(crate) struct SubscriptionMetrics {
    pub(crate) ok: Counter,
    pub(crate) errors: Counter,
    pub(crate) duration: Histogram,
    pub(crate) retried: Counter,
    pub(crate) dead_lettered: Counter,
}

impl SubscriptionMetrics {
    pub(crate) fn new(service: &str, topic: &str, durable: bool) -> SubscriptionMetrics {
        let (s, t) = (SharedString::from(service.to_string()), SharedString::from(topic.to_string()));
        let d = if durable { "true" } else { "false" };
        SubscriptionMetrics {
            ok: counter!(names::EVENTS_HANDLED, "service" => s.clone(), "topic" => t.clone(), "durable" => d, "outcome" => "ok"),
            errors: counter!(names::EVENTS_HANDLED, "service" => s.clone(), "topic" => t.clone(), "durable" => d, "outcome" => "error"),
            duration: histogram!(names::EVENTS_DURATION, "service" => s.clone(), "topic" => t.clone()),
            retried: counter!(names::EVENTS_RETRIED, "service" => s.clone(), "topic" => t.clone()),
            dead_lettered: counter!(names::EVENTS_DEAD_LETTERED, "service" => s, "topic" => t),
        }
    }

    pub(crate) fn noop() -> SubscriptionMetrics {
        SubscriptionMetrics {
            ok: Counter::noop(),
            errors: Counter::noop(),
            duration: Histogram::noop(),
            retried: Counter::noop(),
            dead_lettered: Counter::noop(),
        }
    }
}

/// The handles of one (service, endpoint) a client calls.
#[derive(Debug)]
struct CallMetrics {
    service: SharedString,
    endpoint: SharedString,
    ok: Counter,
    duration: Histogram,
    errors: parking_lot::Mutex<Vec<(u16, Counter)>>,
}

/// A map looked up on every call: foldhash, seeded per map, rather than SipHash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A client's handles, by service then endpoint, made on the first call of each (only once
/// metrics are [`enable`]d).
#[derive(Debug, Default)]
pub(crate) struct ClientMetrics {
    /// Per service, per endpoint; looked up on every call (foldhash, not SipHash).
    calls: RwLock<FastMap<String, FastMap<String, Arc<CallMetrics>>>>,
}

/// Where a call's outcome is counted; see [`ClientMetrics::start`].
#[derive(Debug)]
pub(crate) struct CallTimer(Option<(Arc<CallMetrics>, Instant)>);

impl ClientMetrics {
    /// Starts timing a call, or nothing when metrics are off.
    pub(crate) fn start(&self, service: &str, endpoint: &str) -> CallTimer {
        if !enabled() {
            return CallTimer(None);
        }
        let found = self.calls.read().get(service).and_then(|m| m.get(endpoint)).cloned();
        let m = found.unwrap_or_else(|| {
            let mut calls = self.calls.write();
            let per = calls.entry(service.to_string()).or_default();
            per.entry(endpoint.to_string())
                .or_insert_with(|| {
                    let (s, e) = (SharedString::from(service.to_string()), SharedString::from(endpoint.to_string()));
                    Arc::new(CallMetrics {
                        ok: counter!(names::CLIENT_REQUESTS, "service" => s.clone(), "endpoint" => e.clone(), "code" => OK),
                        duration: histogram!(names::CLIENT_DURATION, "service" => s.clone(), "endpoint" => e.clone()),
                        service: s,
                        endpoint: e,
                        errors: Default::default(),
                    })
                })
                .clone()
        });
        CallTimer(Some((m, Instant::now())))
    }
}

impl CallTimer {
    /// Counts the call's outcome and time.
    pub(crate) fn finish<T>(self, result: &Result<T>) {
        let Some((m, started)) = self.0 else { return };
        m.duration.record(started.elapsed().as_secs_f64());
        match result {
            Ok(_) => m.ok.increment(1),
            Err(e) => {
                let code = error_code(e);
                let n = code.as_u16();
                let mut errors = m.errors.lock();
                let c = match errors.iter().find(|(k, _)| *k == n) {
                    Some((_, c)) => c.clone(),
                    None => {
                        let c = counter!(names::CLIENT_REQUESTS, "service" => m.service.clone(), "endpoint" => m.endpoint.clone(), "code" => code_label(code));
                        errors.push((n, c.clone()));
                        c
                    }
                };
                drop(errors);
                c.increment(1);
            }
        }
    }
}

/// The code a failed call is counted under.
fn error_code(e: &Error) -> Code {
    e.code()
}

/// Counts a publish (only once metrics are [`enable`]d).
pub(crate) fn published<T>(topic: &str, durable: bool, result: &Result<T>) {
    if !enabled() {
        return;
    }
    let outcome = if result.is_ok() { "ok" } else { "error" };
    let durable = if durable { "true" } else { "false" };
    counter!(names::EVENTS_PUBLISHED, "topic" => topic.to_string(), "durable" => durable, "outcome" => outcome)
        .increment(1);
}

/// The registry gauges, shared by every registry of the process: each adds and removes what
/// it holds. (The selector's blacklist gauge lives with the selector.)
#[derive(Debug)]
pub(crate) struct Sizes {
    pub(crate) services: Gauge,
    pub(crate) nodes: Gauge,
}

impl Sizes {
    pub(crate) fn new() -> Sizes {
        Sizes { services: gauge!(names::REGISTRY_SERVICES), nodes: gauge!(names::REGISTRY_NODES) }
    }
}
