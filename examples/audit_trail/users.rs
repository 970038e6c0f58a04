//! The demo `users` service: each endpoint publishes a durable event (whose payload has the
//! `user_id` the audit service files it under) and answers with the event's id.
#![allow(dead_code)]

use futures::StreamExt;
use micro::broker::Broker;
use micro::prelude::*;
use serde::{Deserialize, Serialize};

use super::names::{Names, LOGIN, ORDER_PLACED, PROFILE_UPDATED};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Login {
    pub user_id: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProfileUpdate {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Order {
    pub user_id: String,
    pub order_id: String,
    pub total_cents: u64,
}

/// The users service's endpoints, typed for the service and its callers.
pub const USERS_LOGIN: Endpoint<Login, Published> = Endpoint::new("Users.Login");
pub const USERS_UPDATE_PROFILE: Endpoint<ProfileUpdate, Published> = Endpoint::new("Users.UpdateProfile");
pub const ORDERS_PLACE: Endpoint<Order, Published> = Endpoint::new("Orders.Place");

/// Every endpoint's answer: the id of the event it published.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Published {
    pub event_id: String,
}

pub fn service(names: &Names) -> micro::ServiceBuilder {
    Service::builder(names.users_service())
        .version("1.0.0")
        .state(names.clone())
        .handle(USERS_LOGIN, login)
        .handle(USERS_UPDATE_PROFILE, update_profile)
        .handle(ORDERS_PLACE, place_order)
}

async fn login(Req(e): Req<Login>, client: Client, State(n): State<Names>) -> Result<Published, Status> {
    publish(&client, &n.topic(LOGIN), &e.user_id, &e).await
}

async fn update_profile(
    Req(e): Req<ProfileUpdate>,
    client: Client,
    State(n): State<Names>,
) -> Result<Published, Status> {
    publish(&client, &n.topic(PROFILE_UPDATED), &e.user_id, &e).await
}

async fn place_order(Req(e): Req<Order>, client: Client, State(n): State<Names>) -> Result<Published, Status> {
    publish(&client, &n.topic(ORDER_PLACED), &e.user_id, &e).await
}

/// Publishes durably: answers only once the broker has stored the event.
async fn publish<T: Serialize>(client: &Client, topic: &str, user_id: &str, event: &T) -> Result<Published, Status> {
    if user_id.is_empty() {
        return Err(Status::bad_request("user_id is required"));
    }
    let event_id =
        client.broker().publish_durable(topic, event).await.map_err(|e| e.to_status("go.micro.srv.users"))?;
    Ok(Published { event_id })
}

/// Publishes `count` events durably, `in_flight` at a time, rotating over the three topics, for
/// `user` or users `user-0`..`user-9`. Each result is the event id or why it was not stored.
pub async fn publish_many(
    broker: &Broker,
    names: &Names,
    count: usize,
    user: Option<&str>,
    in_flight: usize,
) -> Vec<micro::Result<String>> {
    futures::stream::iter(0..count)
        .map(|i| async move {
            let user_id = user.map_or_else(|| format!("user-{}", i % 10), str::to_string);
            let opts = PublishOptions::new().durable();
            let stored = match i % 3 {
                0 => broker.publish_with(&names.topic(LOGIN), &Login { user_id }, opts).await,
                1 => {
                    let e = ProfileUpdate { user_id, name: Some(format!("name {i}")), email: None };
                    broker.publish_with(&names.topic(PROFILE_UPDATED), &e, opts).await
                }
                _ => {
                    let e = Order { user_id, order_id: format!("order-{i}"), total_cents: 100 + i as u64 };
                    broker.publish_with(&names.topic(ORDER_PLACED), &e, opts).await
                }
            };
            stored
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await
}
