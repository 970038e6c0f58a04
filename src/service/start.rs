//! Starting a service: checking the builder, wiring transport, registry, selector, broker and
//! server, announcing the node, and the `Debug.*` endpoints every node serves.

use super::*;

impl ServiceBuilder {
    fn validate(&self) -> Result<()> {
        if !subject::is_valid(&self.name, false)
            || !self.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(Error::config(format!(
                "invalid service name {:?}: use dotted names of [A-Za-z0-9_-]",
                self.name
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for e in &self.endpoints {
            if !subject::is_endpoint(&e.name) {
                return Err(Error::config(format!(
                    "invalid endpoint name {:?}: use Handler.Method, two names of [A-Za-z0-9_-]",
                    e.name
                )));
            }
            if e.name.starts_with("Debug.") {
                return Err(Error::config(format!("endpoint {} is reserved", e.name)));
            }
            if !seen.insert(e.name.as_str()) {
                return Err(Error::config(format!("endpoint {} is bound twice", e.name)));
            }
        }
        if let Some(unknown) = self.idempotent.iter().find(|n| !seen.contains(n.as_str())) {
            return Err(Error::config(format!("idempotent({unknown}) names no bound endpoint")));
        }
        if self.registry.heartbeat >= self.registry.ttl {
            return Err(Error::config(format!(
                "registry heartbeat ({:?}) must be shorter than the TTL ({:?})",
                self.registry.heartbeat, self.registry.ttl
            )));
        }
        for s in &self.subscriptions {
            if !subject::is_valid(&s.topic, true) {
                return Err(Error::config(format!("invalid topic {:?}", s.topic)));
            }
            s.options.check(&s.topic)?;
            if s.options.is_durable() && s.options.queue_group().is_none() {
                return Err(Error::config(format!("durable subscription to {:?} needs a group", s.topic)));
            }
        }
        Ok(())
    }

    /// Every `State<S>` a handler takes must be registered: an error now, not a 500 per call.
    fn check_state(&self) -> Result<()> {
        let handlers = self.endpoints.iter().map(|e| (e.name.as_str(), &e.endpoint));
        let handlers = handlers.chain(self.subscriptions.iter().map(|s| (s.topic.as_str(), &s.endpoint)));
        for (name, handler) in handlers {
            for (id, type_name) in handler.required_state() {
                if !self.state.contains(id) && id != std::any::TypeId::of::<Client>() {
                    return Err(Error::config(format!(
                        "the handler of {name} takes State<{type_name}>, but no such state is registered: \
                         add .state(value) to the builder of {}",
                        self.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// Connects, subscribes, registers and serves in the background on the current arbiter.
    pub async fn start(self) -> Result<ServiceHandle> {
        self.validate()?;
        self.check_state()?;
        // First, so that every handle made from here on records.
        #[cfg(feature = "prometheus")]
        let metrics = match self.metrics_addr.map(Ok).or_else(metrics_address_from_env).transpose()? {
            Some(addr) => Some(crate::metrics::prometheus::serve(addr).await?),
            None => None,
        };
        let url = transport::resolve_url(self.transport.as_deref());
        let transport = transport::connect_with(&url, &self.connect_options).await?;
        let registry_transport = match &self.registry_url {
            Some(u) => Some(transport::connect_with(u, &self.connect_options).await?),
            None => None,
        };
        let registry =
            Registry::start(registry_transport.clone().unwrap_or_else(|| transport.clone()), self.registry.clone())
                .await?;
        let selector = Selector::new(self.strategy);
        SelectorActor::start(selector.clone(), &registry).await?;
        let client = Client::from_parts(
            transport.clone(),
            registry.clone(),
            selector,
            ClientConfig {
                name: self.name.clone(),
                timeout: self.client_timeout,
                retry: self.client_retry,
                layers: self.client_layers,
                #[cfg(feature = "auth")]
                auth: self.client_auth,
                ..Default::default()
            },
        );

        let node_id = format!("{}-{}", self.name, uuid::Uuid::now_v7());
        let stats = Arc::new(Stats::new(&Arc::from(self.name.as_str())));
        let has_checks = !self.checks.is_empty();
        let health = self.checks.start().await;
        stats.metrics.healthy.set(if health.healthy() { 1.0 } else { 0.0 });
        let supervisor = Rc::new(Supervisor::new(self.restart));
        let info = ServerInfo {
            service: self.name.clone(),
            version: self.version.clone(),
            node_id: node_id.clone(),
            max_in_flight: self.max_in_flight,
            transport: transport.name(),
        };

        // The user's middleware wraps every endpoint and subscription. Endpoints shed load first,
        // then check auth (both inline in dispatch: they cost nothing as a layer would), then run
        // the user's layers; with none, the handler is called directly.
        let user_layers: Rc<[Rc<dyn Middleware>]> = self.layers.into();

        let mut record = registry::ServiceRecord::new(&self.name, &self.version);
        let mut endpoints = crate::server::Routes::default();
        for mut spec in self.endpoints {
            if self.idempotent.contains(&spec.name) {
                spec.metadata.insert("idempotent".into(), "true".into());
            }
            let route =
                Route::new(&spec.name, Wrapped::around(&user_layers, spec.endpoint), spec.metadata.clone()).shed_load();
            #[cfg(feature = "auth")]
            let route = route.gated(self.auth_gate.clone());
            record.endpoints.push(registry::Endpoint { name: spec.name, metadata: spec.metadata });
            endpoints.insert(route.name.clone(), route);
        }
        let draining = Rc::new(std::cell::Cell::new(false));
        let broker_cell = Rc::new(std::cell::OnceCell::new());
        for (name, ep) in debug_endpoints(&info, &stats, &draining, &broker_cell, &health) {
            let mut metadata = BTreeMap::new();
            metadata.insert("idempotent".to_string(), "true".to_string());
            let route = Route::new(name, ep, metadata.clone());
            record.endpoints.push(registry::Endpoint { name: name.to_string(), metadata });
            endpoints.insert(route.name.clone(), route);
        }
        let mut node_meta = self.metadata.clone();
        node_meta.insert("transport".into(), transport.name().into());
        node_meta.insert("protocol".into(), crate::PROTOCOL.into());
        node_meta.insert("server".into(), concat!("actix-micro/", env!("CARGO_PKG_VERSION")).into());
        if !self.subscriptions.is_empty() {
            let topics: Vec<&str> = self.subscriptions.iter().map(|s| s.topic.as_str()).collect();
            node_meta.insert("subscriptions".into(), topics.join(","));
        }
        if has_checks {
            node_meta.insert(HEALTH_KEY.into(), health_label(health.healthy()).into());
        }
        record.nodes.push(registry::Node {
            id: node_id.clone(),
            address: subject::node(&node_id),
            metadata: node_meta,
        });

        let mut state = self.state;
        state.insert(client.clone());
        let server = Server::new(info, endpoints, state, stats.clone(), supervisor.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = server.serve(subscribe_node(&transport, &self.name, &node_id).await?, stop_rx.clone());
        // On NATS the node also answers the NATS services API, for the ecosystem's tools.
        if transport.name() == "nats" {
            let node = &record.nodes[0];
            let identity = NatsMicroIdentity::new(&self.name, &self.version, &node_id, &node.metadata);
            loops.extend(serve_nats_micro(&transport, &server, identity, stop_rx.clone()).await?);
        }
        // The broker actor owns the subscriptions: it subscribes, serves, restarts and drains them.
        let runtime = crate::server::Runtime { supervisor: supervisor.clone(), stats: stats.clone() };
        let declared = self.subscriptions.into_iter().map(|spec| {
            let endpoint = Wrapped::around(&user_layers, spec.endpoint);
            endpoint.start(&runtime);
            Declared { topic: spec.topic, options: spec.options, endpoint }
        });
        let broker = BrokerActor::start(transport.clone(), server.clone(), stop_rx.clone(), declared.collect()).await?;
        // Weak: the actor holds the server, whose Debug.Stats must not keep the actor alive.
        let _ = broker_cell.set(broker.downgrade());
        // The server must know our subscriptions before anyone learns our address.
        transport.flush().await?;
        registry.register(record.clone()).await?;
        if has_checks {
            follow_health(&health, record, &registry, &stats, &draining, stop_rx.clone());
        }
        tracing::info!(service = %self.name, version = %self.version, node = %node_id, transport = %url, "service started");

        Ok(ServiceHandle {
            url: crate::transport::redact(&url),
            name: self.name,
            node_id,
            grace: self.grace,
            client,
            registry,
            transport,
            registry_transport,
            server,
            supervisor,
            draining,
            stop_tx,
            loops,
            broker,
            health,
            #[cfg(feature = "prometheus")]
            metrics,
        })
    }

    /// Starts, serves until SIGINT or SIGTERM, then shuts down gracefully: deregisters, stops
    /// taking requests, drains in-flight ones within the grace period. Returns an
    /// [`ErrorKind::RestartIntensity`](crate::ErrorKind::RestartIntensity) error (so `main` exits non-zero) if handlers panicked
    /// more often than the restart policy allows.
    pub async fn run(self) -> Result<()> {
        self.start().await?.serve().await
    }
}

/// The node metadata key that says whether its health checks pass (`ok`, `unhealthy`).
pub(crate) const HEALTH_KEY: &str = "health";

fn health_label(healthy: bool) -> &'static str {
    if healthy {
        "ok"
    } else {
        "unhealthy"
    }
}

/// The address of `MICRO_METRICS_ADDRESS`, if set.
#[cfg(feature = "prometheus")]
fn metrics_address_from_env() -> Option<Result<std::net::SocketAddr>> {
    let v = std::env::var("MICRO_METRICS_ADDRESS").ok().filter(|v| !v.trim().is_empty())?;
    Some(
        v.trim().parse().map_err(|e| {
            Error::config(format!("MICRO_METRICS_ADDRESS={v:?} is not an address like 127.0.0.1:9464: {e}"))
        }),
    )
}

/// Announces the node again at once whenever its health checks start or stop passing, so
/// selectors skip it while they fail.
fn follow_health(
    health: &Health,
    mut record: registry::ServiceRecord,
    registry: &Registry,
    stats: &Arc<Stats>,
    draining: &Rc<std::cell::Cell<bool>>,
    mut stop: watch::Receiver<bool>,
) {
    let (mut changes, registry, stats, draining, report) =
        (health.watch(), registry.clone(), stats.clone(), draining.clone(), health.clone());
    actix_rt::spawn(async move {
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = stop.changed() => return,
            }
            let healthy = *changes.borrow_and_update();
            stats.metrics.healthy.set(if healthy { 1.0 } else { 0.0 });
            if draining.get() {
                return;
            }
            let node = &mut record.nodes[0];
            if healthy {
                tracing::info!(service = %record.name, node = %node.id, "health checks pass again");
            } else {
                let failing = HealthStatus { checks: report.report(), ..HealthStatus::default() }.failing();
                tracing::warn!(service = %record.name, node = %node.id, %failing, "health check failing: node marked unhealthy");
            }
            node.metadata.insert(HEALTH_KEY.into(), health_label(healthy).into());
            if let Err(e) = registry.register(record.clone()).await {
                tracing::warn!(error = %e, "could not announce the node's health");
            }
        }
    });
}

fn debug_endpoints(
    info: &ServerInfo,
    stats: &Arc<Stats>,
    draining: &Rc<std::cell::Cell<bool>>,
    broker: &Rc<std::cell::OnceCell<actix::WeakAddr<BrokerActor>>>,
    checks: &Health,
) -> Vec<(&'static str, Rc<dyn Dispatch>)> {
    let health = HealthStatus {
        status: "ok".into(),
        service: info.service.clone(),
        version: info.version.clone(),
        node: info.node_id.clone(),
        checks: Vec::new(),
    };
    let (draining, checks) = (draining.clone(), checks.clone());
    let health_ep = move || {
        let mut h = health.clone();
        h.checks = checks.report();
        if draining.get() {
            h.status = "draining".into();
        } else if !checks.healthy() {
            h.status = "unhealthy".into();
        }
        async move { Ok::<_, Status>(h) }
    };
    let (stats, info, broker) = (stats.clone(), info.clone(), broker.clone());
    let stats_ep = move || {
        let mut s = stats.snapshot(&info.service, &info.version, &info.node_id);
        let broker = broker.get().and_then(actix::WeakAddr::upgrade);
        async move {
            if let Some(broker) = broker {
                s.subscriptions = broker.send(Subscriptions).await.unwrap_or_default();
            }
            Ok::<_, Status>(s)
        }
    };
    vec![
        ("Debug.Health", Rc::new(FnEndpoint::<_, ()>::new(health_ep)) as Rc<dyn Dispatch>),
        ("Debug.Stats", Rc::new(FnEndpoint::<_, ()>::new(stats_ep)) as Rc<dyn Dispatch>),
    ]
}
