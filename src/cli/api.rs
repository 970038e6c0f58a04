//! `micro api`: the gateway.

use std::process::ExitCode;

use super::ApiArgs;
use crate::client::Client;
use crate::gateway::{Gateway, GATEWAY_ID};

pub(super) async fn run(transport: &str, args: ApiArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut config = args.config();
    let client = Client::builder().name(GATEWAY_ID).transport(transport).connect().await?;
    if let Some(id) = &args.auth_id {
        let secret = args
            .auth_secret
            .clone()
            .ok_or_else(|| super::CliError("--auth-id needs --auth-secret (or MICRO_API_AUTH_SECRET)".into()))?;
        let auth = crate::auth::AuthClient::builder()
            .service(&args.auth_service)
            .credentials(crate::auth::Credentials::new(id, secret))
            .connect(&client)
            .await?;
        config = config.auth(auth);
    } else {
        // Refused before anything else happens when it would serve open beyond loopback.
        crate::gateway::check_exposure(&config)?;
    }
    Gateway::new(client, config).run().await?;
    Ok(ExitCode::SUCCESS)
}
