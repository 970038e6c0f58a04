//! The app as a service: registered through the ordinary [`Service`] machinery while its
//! health check passes, one forwarding handler per endpoint and one per durable subscription.

use std::time::Duration;

use tokio::sync::watch;

use super::app::{AppClient, AppPath};
use super::json::{from_json, AppRequest, Encoded};
use super::SidecarConfig;
use crate::broker::SubscribeOptions;
use crate::context::CallContext;
use crate::error::Result;
use crate::service::{Service, ServiceBuilder, ServiceHandle};
use crate::status::{Code, Status};

/// Keeps the app registered while it is healthy (`GET {app}{health}` answers 2xx, when there
/// is a health path), until `stop` turns true; `registered` says whether it is.
pub(crate) async fn keep_registered(
    config: SidecarConfig,
    app: AppClient,
    health: Option<AppPath>,
    mut stop: watch::Receiver<bool>,
    registered: watch::Sender<bool>,
) {
    let probe_within = config.health_interval.min(Duration::from_secs(2));
    let mut running: Option<ServiceHandle> = None;
    loop {
        let healthy = match &health {
            Some(path) => app.healthy(path, probe_within).await,
            None => true,
        };
        if healthy && running.is_none() {
            match start(&config, &app).await {
                Ok(handle) => {
                    tracing::info!(service = %config.name, node = %handle.node_id(), app = %config.app, "app registered");
                    running = Some(handle);
                    registered.send_replace(true);
                }
                Err(e) => tracing::warn!(service = %config.name, error = %e, "cannot register the app yet"),
            }
        } else if !healthy {
            if let Some(handle) = running.take() {
                tracing::warn!(service = %config.name, app = %config.app, "the app's health check failed: deregistering");
                registered.send_replace(false);
                if let Err(e) = handle.stop().await {
                    tracing::warn!(error = %e, "deregistration failed");
                }
            }
        }
        if health.is_none() && running.is_some() {
            // Nothing to watch: registered until the sidecar stops.
            let _ = stop.wait_for(|s| *s).await;
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(config.health_interval) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    registered.send_replace(false);
    if let Some(handle) = running.take() {
        if let Err(e) = handle.stop().await {
            tracing::warn!(error = %e, "deregistration failed");
        }
    }
}

/// Registers the app: its endpoints from the configuration or its `.well-known/micro`.
async fn start(config: &SidecarConfig, app: &AppClient) -> Result<ServiceHandle> {
    let mut version = config.version.clone();
    let mut metadata = config.metadata.clone();
    let endpoints = if config.endpoints.is_empty() {
        let manifest = app.manifest().await?;
        version = manifest.version.unwrap_or(version);
        metadata.extend(manifest.metadata);
        manifest.endpoints.iter().map(|e| e.name().to_string()).collect()
    } else {
        config.endpoints.clone()
    };
    let mut builder = Service::builder(config.name.clone())
        .version(version)
        .transport(config.transport.clone())
        .metadata("sidecar", "http")
        .grace_period(config.timeout.min(Duration::from_secs(5)));
    for (k, v) in metadata {
        builder = builder.metadata(k, v);
    }
    for endpoint in endpoints {
        let to = app.endpoint(&endpoint)?;
        builder = forward_endpoint(builder, endpoint, to, app.clone());
    }
    for (topic, path) in &config.durable {
        let (min, max) = config.durable_backoff;
        let mut options =
            SubscribeOptions::durable(config.name.clone()).max_attempts(config.durable_attempts).backoff(min, max);
        if let Some(d) = config.durable_expire {
            options = options.expire_after(d);
        }
        builder = deliver_events(builder, topic, options, app.path(path)?, app.clone());
    }
    builder.start().await
}

/// `Handler.Method` served by `POST {app}/Handler.Method`. The bodies cross between the
/// caller's codec and the app's JSON without a value tree (`json`).
fn forward_endpoint(builder: ServiceBuilder, endpoint: String, to: AppPath, app: AppClient) -> ServiceBuilder {
    builder.handle(endpoint, move |req: AppRequest, ctx: CallContext| {
        let (app, to) = (app.clone(), to.clone());
        async move {
            let answer = match app.call(&to, &ctx, req.json).await {
                Ok(answer) => answer,
                Err(status) => return Encoded(Err(status)),
            };
            Encoded(from_json(&answer, req.codec).map_err(|e| {
                Status::new(Code::BAD_GATEWAY, format!("{}: the app's answer is not JSON: {e}", ctx.endpoint()))
                    .with_id(ctx.service())
            }))
        }
    })
}

/// The events of `topic` delivered to `POST {app}{path}`: an `Err` retries or dead-letters
/// as the durable subscription's policy says.
fn deliver_events(
    builder: ServiceBuilder,
    topic: &str,
    options: SubscribeOptions,
    to: AppPath,
    app: AppClient,
) -> ServiceBuilder {
    builder.subscribe_with(topic, options, move |req: AppRequest, ctx: CallContext| {
        let (app, to) = (app.clone(), to.clone());
        async move { app.deliver(&to, &ctx, req.json).await }
    })
}
