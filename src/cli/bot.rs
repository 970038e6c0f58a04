//! `micro bot`: the CLI over chat.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{parse_duration, CLI_ID};
use crate::bot::{
    Bot, BotConfig, BotError, Input, IrcConfig, IrcInput, SlackConfig, SlackInput, StdinInput, XmppConfig, XmppInput,
    DEFAULT_NAMESPACE, DEFAULT_SLACK_API_URL, STDIN_ROOM,
};

/// `micro bot` options; every flag also reads a `MICRO_BOT_*` variable (Slack's `MICRO_SLACK_*`).
#[derive(Debug, Args)]
#[command(after_help = "\
Inputs: `stdin` (one command a line, for a terminal), `irc` (the server of --irc), an IRC URL
irc://host:port/nick?channel=%23ops, `xmpp` (--xmpp-jid, --xmpp-password, --xmpp-room; StartTLS), or
`slack` (Socket Mode: MICRO_SLACK_APP_TOKEN, MICRO_SLACK_BOT_TOKEN; rooms are channel ids, users
user ids, given with --room and --user).
In a channel or room the bot answers `micro: command` (Slack: `@bot command`) or `!command`; in a
private message, any text. The channels and rooms joined, and stdin, are allowed rooms.

Commands: help, services, service NAME, call SERVICE ENDPOINT {json}, health SERVICE,
stats SERVICE, publish TOPIC {json}, echo TEXT, and every service <namespace>.<command> that
serves Command.Help and Command.Exec (found while the bot runs).

Examples:
  micro bot --input stdin --allow-call 'go.micro.srv.*'
  micro bot --input 'irc://127.0.0.1:6667/micro?channel=%23ops' --user alice --allow-publish deploys
  micro bot --input slack --room C0123ABCD --user U0456EFGH --allow-call 'go.micro.srv.*'")]
pub struct BotArgs {
    /// Where to listen: stdin, irc, irc://host:port/nick?channel=%23ops, xmpp, or slack (repeatable).
    #[arg(long = "input", env = "MICRO_BOT_INPUTS", value_delimiter = ',', required = true)]
    pub inputs: Vec<String>,
    /// The IRC server `--input irc` joins.
    #[arg(long, env = "MICRO_BOT_IRC", default_value = "irc://127.0.0.1:6667/micro?channel=%23micro")]
    pub irc: String,
    /// The XMPP account `--input xmpp` signs in as (user@domain).
    #[arg(long, env = "MICRO_BOT_XMPP_JID")]
    pub xmpp_jid: Option<String>,
    /// Its password (better given as MICRO_BOT_XMPP_PASSWORD than on the command line).
    #[arg(long, env = "MICRO_BOT_XMPP_PASSWORD", hide_env_values = true)]
    pub xmpp_password: Option<String>,
    /// The XMPP server as host:port; default: found through the domain's DNS SRV records.
    #[arg(long, env = "MICRO_BOT_XMPP_SERVER")]
    pub xmpp_server: Option<String>,
    /// Multi-user chat rooms the XMPP input joins (room@conference.domain).
    #[arg(long = "xmpp-room", env = "MICRO_BOT_XMPP_ROOMS", value_delimiter = ',')]
    pub xmpp_rooms: Vec<String>,
    /// The Slack app-level token (xapp-…) `--input slack` opens Socket Mode with (better given in
    /// the environment than on the command line).
    #[arg(long, env = "MICRO_SLACK_APP_TOKEN", hide_env_values = true)]
    pub slack_app_token: Option<String>,
    /// The Slack bot token (xoxb-…) replies are posted with (likewise).
    #[arg(long, env = "MICRO_SLACK_BOT_TOKEN", hide_env_values = true)]
    pub slack_bot_token: Option<String>,
    /// Slack's Web API base URL.
    #[arg(long, env = "MICRO_SLACK_API_URL", default_value = DEFAULT_SLACK_API_URL)]
    pub slack_api_url: String,
    /// More rooms to answer in (the channels joined always are; Slack: channel ids).
    #[arg(long = "room", env = "MICRO_BOT_ROOMS", value_delimiter = ',')]
    pub rooms: Vec<String>,
    /// Users to answer; when set, only they are answered, and they may also write privately.
    #[arg(long = "user", env = "MICRO_BOT_USERS", value_delimiter = ',')]
    pub users: Vec<String>,
    /// Services `call` may reach: names, prefixes ending in `*`, or `*` (none by default).
    #[arg(long = "allow-call", env = "MICRO_BOT_ALLOW_CALL", value_delimiter = ',')]
    pub allow_call: Vec<String>,
    /// Topics `publish` may send to, likewise (none by default).
    #[arg(long = "allow-publish", env = "MICRO_BOT_ALLOW_PUBLISH", value_delimiter = ',')]
    pub allow_publish: Vec<String>,
    /// Namespace of command services.
    #[arg(long, env = "MICRO_BOT_NAMESPACE", default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Time one command may take.
    #[arg(long, env = "MICRO_BOT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl BotArgs {
    /// The inputs and the bot configuration these flags describe.
    pub fn build(&self) -> Result<(Vec<Box<dyn Input>>, BotConfig), BotError> {
        let nonempty = |v: &[String]| v.iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>();
        let mut config = BotConfig::default().namespace(&self.namespace).timeout(self.timeout);
        config.rooms = nonempty(&self.rooms);
        config.users = nonempty(&self.users);
        config.call_allow = nonempty(&self.allow_call);
        config.publish_allow = nonempty(&self.allow_publish);
        let mut inputs: Vec<Box<dyn Input>> = Vec::new();
        for input in nonempty(&self.inputs) {
            let url = match input.as_str() {
                "stdin" => {
                    config.rooms.push(STDIN_ROOM.to_string());
                    inputs.push(Box::new(StdinInput::new()));
                    continue;
                }
                "xmpp" => {
                    let (Some(jid), Some(password)) = (&self.xmpp_jid, &self.xmpp_password) else {
                        return Err(BotError::Config("--input xmpp needs --xmpp-jid and --xmpp-password".into()));
                    };
                    let mut xmpp = XmppConfig::new(jid, password);
                    xmpp.server = self.xmpp_server.clone().filter(|s| !s.is_empty());
                    xmpp.rooms = nonempty(&self.xmpp_rooms);
                    config.rooms.extend(xmpp.rooms.iter().cloned());
                    inputs.push(Box::new(XmppInput::new(xmpp)));
                    continue;
                }
                "slack" => {
                    let (Some(app), Some(bot)) = (&self.slack_app_token, &self.slack_bot_token) else {
                        return Err(BotError::Config(
                            "--input slack needs MICRO_SLACK_APP_TOKEN and MICRO_SLACK_BOT_TOKEN".into(),
                        ));
                    };
                    let slack = SlackConfig::new(app, bot).api_url(&self.slack_api_url);
                    slack.validate()?;
                    inputs.push(Box::new(SlackInput::new(slack)));
                    continue;
                }
                "irc" => self.irc.as_str(),
                url if url.starts_with("irc://") => url,
                other => {
                    return Err(BotError::Config(format!(
                        "unknown input {other:?}; use stdin, irc, irc://host:port/nick, xmpp or slack"
                    )))
                }
            };
            let irc = IrcConfig::from_url(url)?;
            config.rooms.extend(irc.channels.iter().cloned());
            inputs.push(Box::new(IrcInput::new(irc)));
        }
        Ok((inputs, config))
    }
}

pub(super) async fn run(url: &str, args: BotArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (inputs, config) = args.build()?;
    super::warn_memory(url);
    let client = crate::Client::builder().name(format!("{CLI_ID}.bot")).transport(url).connect().await?;
    Bot::new(client, config).run(inputs).await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> super::BotArgs {
        let cli = Cli::try_parse_from([&["micro", "bot"], argv].concat()).unwrap();
        let Command::Bot(args) = cli.command else { panic!("not the bot command") };
        args
    }

    #[test]
    fn inputs_and_their_rooms_come_from_the_flags() {
        let a = args(&["--input", "stdin", "--input", "irc://h:1/n?channel=%23a", "--allow-call", "go.micro.srv.*"]);
        let (inputs, config) = a.build().unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(config.rooms, ["stdin", "#a"]);
        assert_eq!(config.call_allow, ["go.micro.srv.*"]);
        assert!(config.publish_allow.is_empty(), "publish is off unless allowed");
        let e = args(&["--input", "xmpp"]).build().unwrap_err().to_string();
        assert!(e.contains("--xmpp-jid"), "{e}");
        let e = args(&["--input", "matrix"]).build().unwrap_err().to_string();
        assert!(e.contains("unknown input \"matrix\""), "{e}");
        let e = args(&["--input", "slack", "--slack-app-token", "xapp-1"]).build().unwrap_err().to_string();
        assert!(e.contains("MICRO_SLACK_BOT_TOKEN"), "{e}");
        let e = args(&["--input", "slack", "--slack-app-token", "xoxb-1", "--slack-bot-token", "xoxb-2"]).build();
        assert!(e.unwrap_err().to_string().contains("xapp-"));
        let a =
            args(&["--input", "slack", "--slack-app-token", "xapp-1", "--slack-bot-token", "xoxb-2", "--room", "C1"]);
        let (inputs, config) = a.build().unwrap();
        assert_eq!((inputs.len(), config.rooms), (1, vec!["C1".to_string()]));
        let a = args(&["--input", "xmpp", "--xmpp-jid", "b@x", "--xmpp-password", "p", "--xmpp-room", "ops@muc.x"]);
        assert_eq!(a.build().unwrap().1.rooms, ["ops@muc.x"]);
    }
}
