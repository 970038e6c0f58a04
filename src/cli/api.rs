//! `micro api`: the gateway.

use std::process::ExitCode;

use super::ApiArgs;
use crate::client::Client;
use crate::gateway::{Gateway, GATEWAY_ID};

pub(super) async fn run(transport: &str, args: ApiArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = Client::builder().name(GATEWAY_ID).transport(transport).connect().await?;
    Gateway::new(client, args.config()).run().await?;
    Ok(ExitCode::SUCCESS)
}
