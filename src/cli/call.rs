//! `micro call SERVICE ENDPOINT [JSON]`.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::input::{self, ContentType};
use super::output::{self, Output, Spinner};
use super::registry::{close, is_foreign, lookup};
use super::{connect_client, parse_duration, suggest, CliError, EXIT_REMOTE};
use crate::client::CallOptions;
use crate::error::ErrorKind;
use crate::registry::{nats_micro, ServiceRecord};
use crate::status::Code;

/// `micro call` options.
#[derive(Debug, Args)]
#[command(after_help = "\
The request is JSON: the argument, or stdin when the argument is `-` or absent (absent with stdin
a terminal sends {}). It is checked before anything is sent; a syntax error names the line and
column. The reply is printed as JSON on stdout (indented on a terminal, one line otherwise).

A service error prints its status as JSON on stdout, {\"id\", \"code\", \"detail\", \"status\"}, and
exits 3. A failure here (broker unreachable, unknown service, bad JSON, timeout) prints `error: ...`
on stderr and exits 1.

Examples:
  micro call go.micro.srv.greeter Say.Hello '{\"name\": \"John\"}'
  echo '{\"name\": \"John\"}' | micro call go.micro.srv.greeter Say.Hello -m tenant=acme --timeout 2s")]
pub struct CallArgs {
    /// The service, e.g. go.micro.srv.greeter.
    pub service: String,
    /// The endpoint, e.g. Say.Hello.
    pub endpoint: String,
    /// The request as JSON; `-` reads stdin.
    pub request: Option<String>,
    /// Time the call may take, retries included (e.g. 500ms, 5s, 1m).
    #[arg(long, short = 't', default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Metadata sent with the call as key=value (repeatable); it arrives as Micro-Meta-KEY.
    #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = input::parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// Only nodes of this service version (--version prints micro's own version).
    #[arg(long = "service-version", visible_alias = "sv", value_name = "VERSION")]
    pub service_version: Option<String>,
    /// How the request is sent: json as typed, or msgpack (the JSON transcoded to MessagePack).
    #[arg(long, value_enum, default_value_t)]
    pub content_type: ContentType,
}

pub(super) async fn run(url: &str, out: &Output, args: CallArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Bad input fails before anything connects or is sent.
    let body = input::body(args.request.as_deref(), args.content_type)?;
    let client = connect_client(url).await?;
    let result = async {
        let records = lookup(&client, url, &args.service).await?;
        if let Some(v) = &args.service_version {
            check_version(&records, &args.service, v)?;
        }
        let mut opts = CallOptions::new().timeout(args.timeout);
        for (k, v) in &args.metadata {
            opts = opts.metadata(k, v);
        }
        if let Some(v) = &args.service_version {
            opts = opts.version(v);
        }
        let reply = {
            let _spin = Spinner::start(format!("calling {} {}", args.service, args.endpoint));
            if records.iter().all(is_foreign) {
                call_foreign(&client, &records, &args, body, opts).await?
            } else {
                client.call_raw(&args.service, &args.endpoint, body, args.content_type.codec(), opts).await
            }
        };
        Ok::<_, Box<dyn std::error::Error>>((records, reply))
    }
    .await;
    close(&client).await;
    let (records, reply) = result?;
    match reply {
        Ok(reply) => {
            let json = reply.to_json()?;
            let value: serde_json::Value = serde_json::from_slice(&json)?;
            out.print_json(&value)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.status().filter(|_| e.kind() == ErrorKind::Remote) {
            Some(status) => {
                out.print_json(status)?;
                if status.code() == Code::NOT_FOUND {
                    endpoint_hint(&records, &args.endpoint);
                }
                Ok(ExitCode::from(EXIT_REMOTE))
            }
            None => Err(e.into()),
        },
    }
}

/// Calls an endpoint of a service of another NATS services library: a request to the subject
/// its `INFO` gave, with the same headers a call carries (it may ignore them).
async fn call_foreign(
    client: &crate::Client,
    records: &[ServiceRecord],
    args: &CallArgs,
    body: bytes::Bytes,
    opts: CallOptions,
) -> Result<crate::Result<crate::client::RawReply>, CliError> {
    let subject = records
        .iter()
        .filter_map(|s| s.endpoint(&args.endpoint))
        .find_map(|e| e.metadata.get(nats_micro::META_SUBJECT))
        .ok_or_else(|| {
            let names: Vec<&str> = records.iter().flat_map(|s| s.endpoints.iter().map(|e| e.name.as_str())).collect();
            CliError(format!(
                "{} has no endpoint {}\n  its endpoints: {}",
                args.service,
                args.endpoint,
                names.join(", ")
            ))
        })?;
    Ok(client.call_subject(subject, body, args.content_type.codec(), opts).await)
}

fn check_version(records: &[ServiceRecord], service: &str, version: &str) -> Result<(), CliError> {
    if records.iter().any(|s| s.version == version) {
        return Ok(());
    }
    let versions: Vec<&str> = records.iter().map(|s| s.version.as_str()).collect();
    Err(CliError(format!("no node of {service} runs version {version}\n  its versions: {}", versions.join(", "))))
}

/// After a 404: if the registry does not list the endpoint, suggest close ones.
fn endpoint_hint(records: &[ServiceRecord], endpoint: &str) {
    let mut names: Vec<&str> = records.iter().flat_map(|s| s.endpoints.iter().map(|e| e.name.as_str())).collect();
    names.sort_unstable();
    names.dedup();
    if names.contains(&endpoint) {
        return;
    }
    match suggest::did_you_mean(&suggest::close_names(endpoint, names.iter().copied())) {
        Some(s) => output::hint(&s),
        None => output::hint(&format!("its endpoints: {}", names.join(", "))),
    }
}
