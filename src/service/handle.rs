//! [`ServiceHandle`]: a running service, and its graceful shutdown.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::broker::Broker;
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::registry::Registry;
use crate::server::{Server, SubscriptionInfo, Supervisor};
use crate::transport::Transport;

/// A running service. Stop it with [`stop`](Self::stop).
pub struct ServiceHandle {
    pub(super) url: String,
    pub(super) name: String,
    pub(super) node_id: String,
    pub(super) grace: Duration,
    pub(super) client: Client,
    pub(super) registry: Registry,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) registry_transport: Option<Arc<dyn Transport>>,
    pub(super) server: Rc<Server>,
    pub(super) supervisor: Rc<Supervisor>,
    pub(super) draining: Rc<std::cell::Cell<bool>>,
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) loops: Vec<actix_rt::task::JoinHandle<()>>,
    pub(super) broker: actix::Addr<crate::broker::BrokerActor>,
    pub(super) health: crate::health::Health,
    #[cfg(feature = "prometheus")]
    pub(super) metrics: Option<crate::metrics::prometheus::MetricsListener>,
}

impl std::fmt::Debug for ServiceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceHandle").field("name", &self.name).field("node", &self.node_id).finish()
    }
}

impl ServiceHandle {
    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The transport URL the service serves on (`nats://127.0.0.1:4222`, `memory://`, ...),
    /// with any password masked, fit to print.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves until SIGINT or SIGTERM (or the restart policy trips), then shuts down
    /// gracefully; what [`ServiceBuilder::run`](super::ServiceBuilder::run) does after `start`.
    ///
    /// ```no_run
    /// # use micro::prelude::*;
    /// # #[micro::main] async fn main() -> micro::Result<()> {
    /// let service = Service::builder("go.micro.srv.greeter").start().await?;
    /// println!("{} serving on {}", service.name(), service.url());
    /// service.serve().await
    /// # }
    /// ```
    pub async fn serve(self) -> Result<()> {
        let outcome = self.until_stopped().await;
        self.stop().await?;
        outcome
    }

    /// The service's client (calls made with it carry the service's name as caller).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The service's broker handle.
    pub fn broker(&self) -> &Broker {
        self.client.broker()
    }

    /// The service's registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The node's health checks: their last results (what `Debug.Health` reports).
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    /// Where this service serves `/metrics`, when it was given a metrics address.
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().map(|m| m.local_addr())
    }

    /// The node's event subscriptions, as `Debug.Stats` reports them: per subscription its
    /// topic, group, counters, restarts and, for durable ones, what the broker still holds.
    pub async fn subscriptions(&self) -> Result<Vec<SubscriptionInfo>> {
        self.broker
            .send(crate::broker::Subscriptions)
            .await
            .map_err(|e| Error::new(ErrorKind::Broker, format!("the broker actor is gone: {e}")))
    }

    /// Test hook: aborts the serve loop of the subscription to `topic` as if it had died, so
    /// that its restart can be observed. False if no loop of that topic was running.
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub async fn kill_subscription_loop(&self, topic: &str) -> bool {
        self.broker.send(crate::broker::KillLoop(topic.to_string())).await.unwrap_or(false)
    }

    /// Resolves with `Ok` on SIGINT or SIGTERM, or with an
    /// [`ErrorKind::RestartIntensity`](crate::ErrorKind::RestartIntensity) error once the restart policy is exceeded.
    pub async fn until_stopped(&self) -> Result<()> {
        let mut tripped = self.supervisor.tripped();
        let intensity = async move {
            let _ = tripped.wait_for(|t| *t).await;
        };
        tokio::select! {
            signal = shutdown_signal() => signal,
            _ = intensity => Err(Error::new(
                ErrorKind::RestartIntensity,
                format!("{}: handlers restarted more often than the restart policy allows", self.name),
            )),
        }
    }

    /// Graceful shutdown: deregisters, stops taking new requests (what the broker already
    /// delivered is still answered), waits for in-flight requests up to the grace period, then
    /// closes the service's connection (its client stops working too).
    pub async fn stop(self) -> Result<()> {
        tracing::info!(service = %self.name, node = %self.node_id, "shutting down");
        self.draining.set(true);
        self.health.stop();
        if let Err(e) = self.registry.deregister(&self.node_id).await {
            tracing::warn!(error = %e, "deregistration failed");
        }
        self.stop_tx.send_replace(true);
        for l in self.loops {
            let _ = l.await;
        }
        // The broker actor drains the event subscriptions and says when all have ended.
        if let Ok(drained) = self.broker.send(crate::broker::Drained).await {
            let _ = drained.await;
        }
        tracing::info!(service = %self.name, grace = ?self.grace, "subscriptions drained; finishing the requests in flight");
        let cut = self.server.drain(self.grace).await;
        if cut > 0 {
            tracing::warn!(service = %self.name, requests = cut, grace = ?self.grace, "grace period over; requests still in flight were cut off");
        }
        let _ = self.transport.flush().await;
        self.registry.stop();
        // Closing releases what the broker holds for this node (exclusive queues, consumers).
        for t in std::iter::once(&self.transport).chain(self.registry_transport.as_ref()) {
            if let Err(e) = t.close().await {
                tracing::debug!(error = %e, "closing the transport failed");
            }
        }
        tracing::info!(service = %self.server.info().service, "stopped");
        Ok(())
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
///
/// The wait runs as a task of its own: the future that awaits this one is often the one
/// `#[micro::main]` blocks on, which is polled again on every wake-up of any task (every
/// request), and a join handle is far cheaper to poll than the two signal listeners.
pub(crate) async fn shutdown_signal() -> Result<()> {
    /// Stops listening when the caller stops waiting (the service stopped another way).
    struct AbortOnDrop(tokio::task::JoinHandle<Result<()>>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut waiting = AbortOnDrop(tokio::spawn(wait_for_signal()));
    (&mut waiting.0).await.unwrap_or_else(|e| Err(Error::config(format!("the signal listener failed: {e}"))))
}

async fn wait_for_signal() -> Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| Error::config(format!("cannot listen for SIGTERM: {e}")))?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}
