//! Typed endpoints and the checks a service builder makes at start instead of at run time.

use std::time::Duration;

use micro::prelude::*;
use micro::ErrorKind;

use crate::util::*;

over_transports!(typed_endpoint_round_trip);

/// The descriptor a greeter crate would export for its clients.
const SAY_HELLO: Endpoint<Hello, Greeting> = Endpoint::new("Say.Hello");

async fn typed_hello(Req(h): Req<Hello>, ctx: CallContext) -> Result<Greeting, Status> {
    Ok(Greeting { msg: format!("Hello {}", h.name), node: ctx.service().to_string() })
}

async fn typed_endpoint_round_trip(url: String) {
    let name = unique("typed");
    let svc = Service::builder(&name)
        .transport(&url)
        .handle(SAY_HELLO, typed_hello)
        .idempotent(SAY_HELLO)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    // The reply type comes from the descriptor.
    let g = client.call(&name, SAY_HELLO, &Hello { name: "Ada".into() }).await.unwrap();
    assert_eq!(g, Greeting { msg: "Hello Ada".into(), node: name.clone() });
    // The string form reaches the same endpoint.
    let g: Greeting = client.call(&name, "Say.Hello", &Hello { name: "Bob".into() }).await.unwrap();
    assert_eq!(g.msg, "Hello Bob");
    let record = client.registry().get_service(&name).await.unwrap();
    assert!(record[0].endpoint("Say.Hello").unwrap().is_idempotent());
    svc.stop().await.unwrap();
}

#[actix::test]
async fn unregistered_state_is_an_error_at_start() {
    #[derive(Clone)]
    struct Db;
    async fn needs_db(State(_): State<Db>) -> Result<(), Status> {
        Ok(())
    }
    let err = Service::builder(unique("typed"))
        .transport(memory_url())
        .handle("Db.Ping", needs_db)
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.to_string();
    assert!(msg.contains("Db.Ping") && msg.contains("Db") && msg.contains(".state("), "{msg}");

    // Subscriptions are checked too; registered state passes.
    let err = Service::builder(unique("typed"))
        .transport(memory_url())
        .subscribe("db.changed", needs_db)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("db.changed"), "{err}");
    let svc = Service::builder(unique("typed")).transport(memory_url()).state(Db).handle("Db.Ping", needs_db);
    svc.start().await.unwrap().stop().await.unwrap();
}

#[actix::test]
async fn durable_settings_never_make_a_plain_subscription_durable() {
    let opts = SubscribeOptions::group("audit").max_attempts(3);
    assert!(!opts.is_durable());
    let err = Service::builder(unique("typed"))
        .transport(memory_url())
        .subscribe_with("user.login", opts, |_: CallContext| async { Ok::<_, Status>(()) })
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("max_attempts") && err.to_string().contains("durable"), "{err}");

    let broker = Client::connect(&memory_url()).await.unwrap().broker().clone();
    let opts = SubscribeOptions::broadcast().ack_wait(Duration::from_secs(1));
    assert!(broker.subscribe("user.login", opts).await.is_err());
    assert!(SubscribeOptions::durable("audit").max_attempts(3).is_durable());
}
