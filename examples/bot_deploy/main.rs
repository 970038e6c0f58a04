//! A bot command as a service: `go.micro.bot.deploy` serves `Command.Help` and `Command.Exec`,
//! so `deploy SERVICE VERSION` works in `micro bot` as soon as this runs, and is gone when it stops.
//!
//! ```text
//! MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --features bot --example bot_deploy
//! cargo run --features cli --bin micro -- bot --input stdin      # then type: deploy greeter 1.2.0
//! ```
//!
//! It deploys nothing: it says what it would do, and who asked (the bot's `bot-user` metadata).

use micro::bot::{CommandExec, CommandHelp, CommandResult, DEFAULT_NAMESPACE, EXEC_ENDPOINT, HELP_ENDPOINT};
use micro::prelude::*;

async fn help(Req(_): Req<serde_json::Value>) -> Result<CommandHelp, Status> {
    Ok(CommandHelp { usage: "deploy SERVICE VERSION".into(), description: "rolls VERSION of SERVICE out".into() })
}

async fn exec(Req(e): Req<CommandExec>, Meta(m): Meta) -> Result<CommandResult, Status> {
    let who = m.get("bot-user").unwrap_or("someone");
    // args[0] is the command's own name.
    Ok(match e.args.as_slice() {
        [_, service, version] => {
            CommandResult { result: format!("deploying {service} {version} (asked by {who})"), error: String::new() }
        }
        _ => CommandResult { result: String::new(), error: "usage: deploy SERVICE VERSION".into() },
    })
}

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let name = format!("{DEFAULT_NAMESPACE}.deploy");
    let service = Service::builder(&name)
        .version("1.0.0")
        .handle(HELP_ENDPOINT, help)
        .handle(EXEC_ENDPOINT, exec)
        .start()
        .await?;
    println!("{name} serves the bot command `deploy`");
    Ok(service.serve().await?)
}
