//! The auth service on the broker: `Auth.Token`, `Auth.Jwks`, `Auth.Rules` (public) and the
//! management endpoints `Accounts.*`, `ApiKeys.*`, `Rules.*`, `Keys.Rotate` (scope `admin`).

use std::sync::Arc;

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use super::grant::{OAuthError, TokenRequest, TokenResponse};
use super::layer::AuthLayer;
use super::rules::Rule;
use super::service::{ApiKey, AuthService, Credentials, NewAccount};
use super::store::Account;
use crate::server::{Req, State};
use crate::service::{Service, ServiceBuilder, ServiceHandle};
use crate::status::Status;

/// `{id}`: what the delete endpoints take.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ById {
    /// The id.
    pub id: String,
}

/// `ApiKeys.Create`'s request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewApiKey {
    /// The account the key acts as.
    pub account: String,
    /// Scopes (space-separated), some of the account's; default all.
    #[serde(default)]
    pub scope: Option<String>,
}

async fn token(State(auth): State<AuthService>, Req(req): Req<TokenRequest>) -> Result<TokenResponse, Status> {
    tokio::task::spawn_blocking(move || auth.grant(&req))
        .await
        .map_err(|_| Status::internal("the grant failed"))?
        .map_err(|e: OAuthError| e.to_status())
}

async fn jwks(State(auth): State<AuthService>) -> Result<JwkSet, Status> {
    auth.jwks()
}

async fn rules(State(auth): State<AuthService>) -> Result<Vec<Rule>, Status> {
    auth.rules()
}

async fn accounts(State(auth): State<AuthService>) -> Result<Vec<Account>, Status> {
    auth.accounts()
}

async fn create_account(State(auth): State<AuthService>, Req(new): Req<NewAccount>) -> Result<Credentials, Status> {
    tokio::task::spawn_blocking(move || auth.create_account(new)).await.map_err(|_| Status::internal("failed"))?
}

async fn delete_account(State(auth): State<AuthService>, Req(r): Req<ById>) -> Result<bool, Status> {
    auth.delete_account(&r.id)
}

async fn create_api_key(State(auth): State<AuthService>, Req(r): Req<NewApiKey>) -> Result<ApiKey, Status> {
    auth.create_api_key(&r.account, r.scope.as_deref())
}

async fn delete_api_key(State(auth): State<AuthService>, Req(r): Req<ById>) -> Result<bool, Status> {
    auth.delete_api_key(&r.id)
}

async fn create_rule(State(auth): State<AuthService>, Req(rule): Req<Rule>) -> Result<Rule, Status> {
    auth.create_rule(rule).await
}

async fn delete_rule(State(auth): State<AuthService>, Req(r): Req<ById>) -> Result<bool, Status> {
    auth.delete_rule(&r.id).await
}

async fn rotate(State(auth): State<AuthService>) -> Result<ById, Status> {
    auth.rotate_keys().await.map(|kid| ById { id: kid })
}

impl AuthService {
    /// The auth service as a toolkit service on `transport`, its management endpoints behind
    /// its own auth layer (scope `admin`). Add more to the builder, or start it.
    pub fn service(&self, transport: &str) -> ServiceBuilder {
        let layer = AuthLayer::new(self.shared_verifier(), Arc::new(self.own_policy()), None);
        Service::builder(self.config().name.clone())
            .transport(transport)
            .state(self.clone())
            .wrap(layer)
            .handle("Auth.Token", token)
            .handle("Auth.Jwks", jwks)
            .idempotent("Auth.Jwks")
            .handle("Auth.Rules", rules)
            .idempotent("Auth.Rules")
            .handle("Accounts.List", accounts)
            .handle("Accounts.Create", create_account)
            .handle("Accounts.Delete", delete_account)
            .handle("ApiKeys.Create", create_api_key)
            .handle("ApiKeys.Delete", delete_api_key)
            .handle("Rules.List", rules)
            .handle("Rules.Create", create_rule)
            .handle("Rules.Delete", delete_rule)
            .handle("Keys.Rotate", rotate)
    }

    /// Starts the toolkit service on `transport`; changes to rules and keys are announced on
    /// [`CHANGED_TOPIC`](super::CHANGED_TOPIC) from then on.
    pub async fn start(&self, transport: &str) -> crate::Result<ServiceHandle> {
        let handle = self.service(transport).start().await?;
        self.set_notifier(handle.client().clone());
        Ok(handle)
    }
}
