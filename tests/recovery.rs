//! Recovery after a broker outage longer than the registry TTL, on private brokers (never the
//! shared ones): once the broker is back, a calling loop gets its first reply within a bound and
//! never hears that a service which is up is "not found in the registry".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro::dev::{Announcement, RegistryAction};
use micro::prelude::*;
use micro::registry::{RegistryOptions, WatchAction};

use crate::util::*;

/// Records expire 3 s after their last announcement; nodes announce every 2 s.
const TTL: Duration = Duration::from_secs(3);
const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long the broker stays away: well past the TTL.
const OUTAGE: Duration = Duration::from_secs(6);
/// The first reply must come this soon after the broker is back (the target is 1 s; the bound
/// is generous for a loaded machine, and the measured figure is printed).
const BOUND: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Outcome {
    Ok,
    NotFound,
    Failed,
}

type Log = Arc<Mutex<Vec<(Instant, Outcome)>>>;

/// Calls `Say.Hello` in a loop and notes when each call ended and how.
struct Caller {
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Caller {
    fn start(client: Client, service: String) -> Caller {
        let log: Log = Arc::default();
        let log2 = log.clone();
        let task = actix_rt::spawn(async move {
            let mut errors = 0usize;
            loop {
                let r: micro::Result<Greeting> =
                    client.call(&service, "Say.Hello", &Hello { name: "recovery".into() }).await;
                let outcome = match r {
                    Ok(_) => Outcome::Ok,
                    Err(e) => {
                        errors += 1;
                        if errors % 100 == 1 {
                            eprintln!("call failed (expected while the broker is away): {e}");
                        }
                        if e.to_string().contains("not found in the registry") {
                            Outcome::NotFound
                        } else {
                            Outcome::Failed
                        }
                    }
                };
                log2.lock().unwrap().push((Instant::now(), outcome));
                // The loop's pace (a caller's rate, not a wait for something).
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Caller { log, task }
    }

    fn first_ok_after(&self, t: Instant) -> Option<Instant> {
        self.log.lock().unwrap().iter().find(|(at, o)| *at > t && matches!(o, Outcome::Ok)).map(|(at, _)| *at)
    }

    fn not_found(&self, from: Instant, to: Option<Instant>) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(at, o)| *at > from && to.is_none_or(|to| *at <= to) && matches!(o, Outcome::NotFound))
            .count()
    }

    fn last(&self) -> Option<Instant> {
        self.log.lock().unwrap().last().map(|(at, _)| *at)
    }
}

impl Drop for Caller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A private broker that can go away and come back on the same port.
trait Outage {
    fn url(&self) -> String;
    async fn down(&mut self);
    async fn up(&mut self);
}

#[cfg(feature = "nats")]
impl Outage for crate::util::PrivateNats {
    fn url(&self) -> String {
        crate::util::PrivateNats::url(self)
    }
    async fn down(&mut self) {
        self.kill();
    }
    async fn up(&mut self) {
        self.restart().await;
    }
}

#[cfg(feature = "rabbitmq")]
impl Outage for PrivateRabbit {
    fn url(&self) -> String {
        PrivateRabbit::url(self)
    }
    async fn down(&mut self) {
        self.stop_app().await;
    }
    async fn up(&mut self) {
        self.start_app().await;
    }
}

/// A greeter and a client on the broker, a calling loop; the broker goes away for longer than
/// the TTL and comes back on the same port. Asserts the recovery.
async fn recovers(broker: &mut impl Outage) {
    let url = &broker.url();
    let name = unique("go.micro.srv.recovery");
    let options = RegistryOptions::default().ttl(TTL).heartbeat(HEARTBEAT);
    let svc = greeter(url, &name, "a").registry_options(options.clone()).start().await.unwrap();
    let client = Client::builder()
        .transport(url)
        .registry_options(options)
        .timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let caller = Caller::start(client, name.clone());
    let started = Instant::now();
    wait_for("a first reply", WAIT, || async { caller.first_ok_after(started).map(|_| ()) }).await;

    broker.down().await;
    let down = Instant::now();
    // The outage itself: the scenario's length, not a wait for a condition.
    tokio::time::sleep(OUTAGE).await;
    broker.up().await;
    let back = Instant::now();

    let first = wait_for("a reply after the broker came back", Duration::from_secs(30), || async {
        caller.first_ok_after(back)
    })
    .await;
    let took = first - back;
    // Keep calling a while: no "not found" from the moment the broker is back.
    let until = first + Duration::from_secs(2);
    wait_for("two seconds of calls after recovery", WAIT, || async {
        caller.last().is_some_and(|at| at > until).then_some(())
    })
    .await;
    let during = caller.not_found(down, Some(back));
    let after = caller.not_found(back, None);
    eprintln!(
        "{}: first reply {took:?} after the broker came back; \"not found\": {during} during the outage, {after} after",
        &url[..url.find(':').unwrap_or(0)]
    );
    drop(caller);
    svc.stop().await.unwrap();
    assert_eq!(after, 0, "calls heard \"not found\" for a service that is up, after the broker came back");
    assert!(took <= BOUND, "the first reply came {took:?} after the broker came back (bound {BOUND:?})");
}

#[cfg(feature = "nats")]
#[actix::test]
async fn nats_calls_recover_at_once_after_an_outage_longer_than_the_ttl() {
    recovers(&mut crate::util::PrivateNats::start().await).await;
}

#[cfg(feature = "rabbitmq")]
#[actix::test]
async fn amqp_calls_recover_at_once_after_an_outage_longer_than_the_ttl() {
    recovers(&mut PrivateRabbit::start().await).await;
}

over_transports!(a_lost_record_is_asked_for_before_a_call_fails);

/// A client whose registry lost the record of a running service (here: a forged deregistration)
/// asks for the service before it tells a caller the service is not there, and reaches it.
async fn a_lost_record_is_asked_for_before_a_call_fails(url: String) {
    let name = unique("go.micro.srv.asked");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let records = client.registry().get_service(&name).await.unwrap();
    assert_eq!(records.len(), 1, "the client found the service");
    let mut changes = client.registry().watch().await.unwrap();
    let forged = Announcement { action: RegistryAction::Deregister, ttl: 0, service: records[0].clone() };
    let body = micro::Codec::MsgPack.encode(&forged).unwrap();
    client.transport().publish(micro::subject::REGISTRY_ANNOUNCE, micro::message::Message::new(body)).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(change) = changes.next().await {
            if change.action == WatchAction::Removed && change.service.name == name {
                return;
            }
        }
    })
    .await
    .expect("the client's registry dropped the record");

    let reply: Greeting = client.call(&name, "Say.Hello", &Hello { name: "again".into() }).await.unwrap();
    assert_eq!(reply.msg, "Hello again");
    svc.stop().await.unwrap();
}
