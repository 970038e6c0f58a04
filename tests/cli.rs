//! The `micro` binary against real services on NATS and RabbitMQ.
//!
//! Services run in-process (on the test's actix arbiter); the binary runs from a blocking task
//! (`spawn_blocking`) so the arbiter keeps serving while the test waits for it, or as a tokio
//! child process for the commands that stream (`subscribe`, `watch`). Every case gets unique
//! service names and topics, so the cases run in parallel on the shared brokers.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use assert_cmd::assert::Assert;
use micro::prelude::*;
use micro::registry::{Node, Registry, RegistryOptions};
use micro::{ErrorKind, Metadata};
use predicates::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::*;

over_brokers!(
    services_lists_versions_and_node_counts,
    service_shows_nodes_versions_and_endpoints,
    call_prints_the_reply_as_json,
    call_sends_metadata_version_filter_and_msgpack,
    call_reads_the_request_from_stdin,
    call_times_out_with_exit_1,
    remote_error_prints_the_status_and_exits_3,
    bad_json_points_at_the_position_and_calls_nothing,
    unknown_service_suggests_close_names,
    publish_and_subscribe_carry_id_metadata_and_data,
    subscribers_in_a_group_share_events,
    durable_publish_waits_for_the_group_that_reads_it_later,
    health_and_stats_ask_every_node,
    health_exits_3_when_a_registered_node_does_not_answer,
    watch_prints_nodes_added_and_removed,
    call_options_node_reaches_that_node_only,
);

const BIN: &str = env!("CARGO_BIN_EXE_micro");

/// Runs `micro` with these arguments and stdin, from a blocking task so the services of this
/// test keep being served meanwhile.
async fn micro(args: &[&str], stdin: &str) -> Assert {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.to_string();
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(BIN)
            .args(&args)
            .env_remove("MICRO_TRANSPORT")
            .env_remove("MICRO_OUTPUT")
            .env("NO_COLOR", "1")
            .write_stdin(stdin)
            .timeout(Duration::from_secs(30))
            .assert()
    })
    .await
    .unwrap()
}

fn stdout_json(a: &Assert) -> Value {
    let out = &a.get_output().stdout;
    serde_json::from_slice(out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

fn stderr(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

/// A greeter that also echoes the metadata it receives on `Meta.Echo`.
fn node(url: &str, name: &str, label: &str) -> micro::ServiceBuilder {
    async fn echo(Meta(m): Meta) -> Result<Metadata, Status> {
        Ok(m)
    }
    greeter(url, name, label).handle("Meta.Echo", echo)
}

/// A streaming `micro` (subscribe, watch) as a child process; returns once it printed `ready`
/// on stderr.
async fn spawn_streaming(args: &[&str], ready: &str) -> tokio::process::Child {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env_remove("MICRO_TRANSPORT")
        .env_remove("MICRO_OUTPUT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let seen = tokio::time::timeout(WAIT, async {
        let mut all = String::new();
        while let Some(l) = lines.next_line().await.unwrap() {
            all.push_str(&l);
            all.push('\n');
            if l.contains(ready) {
                return Ok(());
            }
        }
        Err(all)
    })
    .await;
    match seen {
        Ok(Ok(())) => {}
        Ok(Err(stderr)) => panic!("micro {args:?} ended before {ready:?}; stderr:\n{stderr}"),
        Err(_) => panic!("micro {args:?} did not print {ready:?} within {WAIT:?}"),
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    child
}

/// Waits for a streaming child to exit 0 and returns its stdout lines as JSON.
async fn json_lines(child: tokio::process::Child) -> Vec<Value> {
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("micro did not exit").unwrap();
    assert!(out.status.success(), "micro exited with {:?}", out.status);
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

async fn services_lists_versions_and_node_counts(url: String) {
    let name = unique("cli");
    let a = node(&url, &name, "a").start().await.unwrap();
    let b = node(&url, &name, "b").start().await.unwrap();
    let c = node(&url, &name, "c").version("2.0.0").start().await.unwrap();
    // `micro services` waits the discovery window once; on a loaded machine an answer may miss
    // it, so the listing is asked for until it is complete.
    let rows = wait_for("micro services to list both versions", WAIT, || async {
        let a = micro(&["services", "--transport", &url], "").await.success();
        let all = stdout_json(&a);
        let mine: Vec<Value> = all.as_array().unwrap().iter().filter(|s| s["name"] == name.as_str()).cloned().collect();
        (mine.len() == 2 && mine[0]["nodes"] == 2 && mine[1]["nodes"] == 1).then_some(mine)
    })
    .await;
    assert_eq!(rows[0], json!({"name": name, "version": "1.0.0", "nodes": 2}));
    assert_eq!(rows[1], json!({"name": name, "version": "2.0.0", "nodes": 1}));

    // --output table overrides the JSON a pipe gets by default.
    let t = micro(&["services", "--transport", &url, "--output", "table"], "").await.success();
    let text = String::from_utf8_lossy(&t.get_output().stdout).into_owned();
    assert!(text.starts_with("SERVICE"), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().eq([name.as_str(), "2.0.0", "1"])), "{text}");
    for s in [a, b, c] {
        s.stop().await.unwrap();
    }
}

async fn service_shows_nodes_versions_and_endpoints(url: String) {
    let name = unique("cli");
    let a = node(&url, &name, "a").metadata("zone", "eu").start().await.unwrap();
    let b = node(&url, &name, "b").version("2.0.0").start().await.unwrap();
    let records = wait_for("micro service to show both versions", WAIT, || async {
        let a = micro(&["service", &name, "--transport", &url], "").await.success();
        let records = stdout_json(&a);
        (records.as_array().unwrap().len() == 2).then_some(records)
    })
    .await;
    let v1 = &records[0];
    assert_eq!(v1["name"], name.as_str());
    assert_eq!(v1["version"], "1.0.0");
    let n = &v1["nodes"][0];
    assert_eq!(n["id"], a.node_id());
    assert_eq!(n["address"], format!("micro.node.{}", a.node_id()));
    assert_eq!(n["metadata"]["zone"], "eu");
    assert_eq!(n["metadata"]["protocol"], "micro/2");
    let endpoints: Vec<&Value> = v1["endpoints"].as_array().unwrap().iter().collect();
    let hello = endpoints.iter().find(|e| e["name"] == "Say.Hello").expect("Say.Hello listed");
    assert_eq!(hello["metadata"], json!({"idempotent": "true"}));
    assert!(endpoints.iter().any(|e| e["name"] == "Debug.Health"));
    assert_eq!(records[1]["version"], "2.0.0");
    assert_eq!(records[1]["nodes"][0]["id"], b.node_id());

    let t = micro(&["service", &name, "--transport", &url, "-o", "table"], "").await.success();
    let text = String::from_utf8_lossy(&t.get_output().stdout).into_owned();
    assert!(text.starts_with(&format!("{name}  version 1.0.0  1 node\n")), "{text}");
    assert!(text.contains(a.node_id()) && text.contains("zone=eu"), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().eq(["Say.Hello", "idempotent=true"])), "{text}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn call_prints_the_reply_as_json(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let a = micro(&["call", &name, "Say.Hello", r#"{"name": "John"}"#, "--transport", &url], "").await.success();
    assert_eq!(stdout_json(&a), json!({"msg": "Hello John", "node": "a"}));
    svc.stop().await.unwrap();
}

async fn call_sends_metadata_version_filter_and_msgpack(url: String) {
    let name = unique("cli");
    let a = node(&url, &name, "a").start().await.unwrap();
    let b = node(&url, &name, "b").version("2.0.0").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    wait_for("both nodes registered", WAIT, || async {
        let s = client.registry().get_service(&name).await.ok()?;
        (s.iter().map(|v| v.nodes.len()).sum::<usize>() == 2).then_some(())
    })
    .await;

    let m = micro(
        &["call", &name, "Meta.Echo", "{}", "-m", "tenant=acme", "--metadata", "User=42", "--transport", &url],
        "",
    )
    .await
    .success();
    assert_eq!(stdout_json(&m), json!({"tenant": "acme", "user": "42"}));

    // The filter picks the one node of 2.0.0, every time; --sv is its short alias.
    for flag in ["--service-version", "--sv", "--service-version"] {
        let v = micro(&["call", &name, "Say.Hello", r#"{"name":"V"}"#, flag, "2.0.0", "--transport", &url], "")
            .await
            .success();
        assert_eq!(stdout_json(&v)["node"], "b");
    }
    let none = micro(&["call", &name, "Say.Hello", "{}", "--sv", "9.9.9", "--transport", &url], "").await.code(1);
    assert!(stderr(&none).contains("no node of") && stderr(&none).contains("1.0.0, 2.0.0"), "{}", stderr(&none));

    let mp = micro(
        &[
            "call",
            &name,
            "Say.Hello",
            r#"{"name":"Pack"}"#,
            "--content-type",
            "msgpack",
            "--sv",
            "1.0.0",
            "--transport",
            &url,
        ],
        "",
    )
    .await
    .success();
    assert_eq!(stdout_json(&mp), json!({"msg": "Hello Pack", "node": "a"}));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn call_reads_the_request_from_stdin(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let dash =
        micro(&["call", &name, "Say.Hello", "-", "--transport", &url], "{\"name\":\n \"Ada\"}\n").await.success();
    assert_eq!(stdout_json(&dash)["msg"], "Hello Ada");
    let absent = micro(&["call", &name, "Say.Hello", "--transport", &url], r#"{"name":"Bob"}"#).await.success();
    assert_eq!(stdout_json(&absent)["msg"], "Hello Bob");
    svc.stop().await.unwrap();
}

async fn call_times_out_with_exit_1(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let t = micro(&["call", &name, "Say.Slow", r#"{"ms": 600}"#, "--timeout", "100ms", "--transport", &url], "")
        .await
        .code(1)
        .stdout(predicate::str::is_empty());
    assert!(stderr(&t).contains("timed out"), "{}", stderr(&t));
    svc.stop().await.unwrap();
}

async fn remote_error_prints_the_status_and_exits_3(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let bad = micro(&["call", &name, "Say.Hello", r#"{"name": 5}"#, "--transport", &url], "").await.code(3);
    let status = stdout_json(&bad);
    assert_eq!(status["id"], name.as_str());
    assert_eq!(status["code"], 400);
    assert_eq!(status["status"], "Bad Request");
    assert!(status["detail"].as_str().unwrap().contains("name"), "{status}");
    assert_eq!(status.as_object().unwrap().len(), 4, "{status}");

    let missing = micro(&["call", &name, "Say.Helo", "{}", "--transport", &url], "").await.code(3);
    assert_eq!(stdout_json(&missing)["code"], 404);
    assert!(stderr(&missing).contains("did you mean Say.Hello?"), "{}", stderr(&missing));
    svc.stop().await.unwrap();
}

async fn bad_json_points_at_the_position_and_calls_nothing(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let stats = |client: Client, name: String| async move {
        let s: Value = client.call(&name, "Debug.Stats", &()).await.unwrap();
        s["requests"].as_u64().unwrap()
    };
    let before = stats(client.clone(), name.clone()).await;

    let a = micro(&["call", &name, "Say.Hello", r#"{"name" "John"}"#, "--transport", &url], "").await.code(1);
    let err = stderr(&a);
    assert!(err.contains("not valid JSON") && err.contains("line 1 column 9"), "{err}");
    assert!(err.contains("  {\"name\" \"John\"}\n          ^"), "{err}");
    let piped = micro(&["call", &name, "Say.Hello", "--transport", &url], "{\n  \"name\": \"John\",\n}").await.code(1);
    assert!(stderr(&piped).contains("stdin is not valid JSON") && stderr(&piped).contains("line 3 column 1"));
    // Checked before connecting: an unreachable broker is not even tried.
    let early = micro(&["publish", "t.x", "[1,", "--transport", "nats://127.0.0.1:1"], "").await.code(1);
    assert!(stderr(&early).contains("not valid JSON") && !stderr(&early).contains("connect"), "{}", stderr(&early));

    // Only the two Debug.Stats calls reached the service.
    assert_eq!(stats(client, name.clone()).await, before + 1);
    svc.stop().await.unwrap();
}

async fn unknown_service_suggests_close_names(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    let typo = name[..name.len() - 1].to_string();
    for cmd in ["service", "call", "health", "stats"] {
        let mut args = vec![cmd, &typo];
        if cmd == "call" {
            args.push("Say.Hello");
        }
        args.extend(["--transport", &url]);
        let a = micro(&args, "").await.code(1);
        let err = stderr(&a);
        assert!(err.contains(&format!("service {typo} is not in the registry on {}", shown(&url))), "{cmd}: {err}");
        assert!(!err.contains("guest:guest"), "no password printed: {err}");
        assert!(err.contains(&format!("did you mean {name}")), "{cmd}: {err}");
    }
    svc.stop().await.unwrap();
}

async fn publish_and_subscribe_carry_id_metadata_and_data(url: String) {
    let topic = unique("topic");
    let pattern = format!("{topic}.*");
    let sub = spawn_streaming(&["subscribe", &pattern, "--count", "3", "--transport", &url], "subscribed to").await;
    let p1 = micro(
        &["publish", &format!("{topic}.login"), r#"{"user":"ada"}"#, "-m", "tenant=acme", "--transport", &url],
        "",
    )
    .await
    .success();
    let p2 = micro(
        &["publish", &format!("{topic}.logout"), "--content-type", "msgpack", "--transport", &url],
        r#"{"user":"bob"}"#,
    )
    .await
    .success();
    // An event from a service's own broker (MessagePack) reads the same.
    let client = Client::connect(&url).await.unwrap();
    client.publish(&format!("{topic}.admin"), &json!({"user": "eve", "n": [1, 2]})).await.unwrap();

    let lines = json_lines(sub).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let e = &lines[0];
    assert_eq!(e["id"], stdout_json(&p1)["id"]);
    assert_eq!(e["topic"], format!("{topic}.login"));
    assert_eq!(e["publisher"], "go.micro.cli");
    assert_eq!(e["metadata"], json!({"tenant": "acme"}));
    assert_eq!(e["data"], json!({"user": "ada"}));
    assert!(e["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, BTreeSet::from(["id", "topic", "timestamp", "publisher", "metadata", "data"]));
    assert_eq!(lines[1]["id"], stdout_json(&p2)["id"]);
    assert_eq!(lines[1]["data"], json!({"user": "bob"}));
    assert_eq!(lines[2]["data"], json!({"user": "eve", "n": [1, 2]}));
    assert_eq!(lines[2]["publisher"], Value::Null, "an anonymous client names no publisher");
}

async fn subscribers_in_a_group_share_events(url: String) {
    let topic = unique("topic");
    let group = unique("group");
    let args = ["subscribe", &topic, "--group", &group, "--count", "1", "--transport", &url];
    let mut one = spawn_streaming(&args, "subscribed to").await;
    let mut two = spawn_streaming(&args, "subscribed to").await;
    let client = Client::connect(&url).await.unwrap();
    // Each member takes one event and exits; the group then gives the next event to the other.
    let mut n = 0;
    wait_for("both group members to get an event", WAIT, || {
        n += 1;
        let (client, topic) = (client.clone(), topic.clone());
        let done = one.try_wait().unwrap().is_some() && two.try_wait().unwrap().is_some();
        async move {
            if done {
                return Some(());
            }
            client.publish(&topic, &json!({"n": n})).await.unwrap();
            None
        }
    })
    .await;
    let (a, b) = (json_lines(one).await, json_lines(two).await);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_ne!(a[0]["id"], b[0]["id"], "a group shares events; it does not copy them");
}

async fn durable_publish_waits_for_the_group_that_reads_it_later(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("ops");
    // The first read creates the durable group (and finds nothing yet).
    micro(&["subscribe", &topic, "--durable", &group, "--count", "0", "--transport", &url], "").await.success();
    // Nobody is reading now; durable publishes are stored anyway.
    let p1 = micro(&["publish", &topic, r#"{"user":"ada"}"#, "--durable", "--transport", &url], "").await.success();
    let p2 = micro(&["publish", &topic, r#"{"user":"bob"}"#, "--durable", "--transport", &url], "").await.success();
    let sub = spawn_streaming(
        &["subscribe", &topic, "--durable", &group, "--count", "2", "--transport", &url],
        "reading durable group",
    )
    .await;
    let mut lines = json_lines(sub).await;
    lines.sort_by_key(|l| l["data"]["user"].as_str().unwrap_or_default().to_string());
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["id"], stdout_json(&p1)["id"]);
    assert_eq!(lines[1]["id"], stdout_json(&p2)["id"]);
    assert_eq!(lines[0]["attempt"], 1);
    assert_eq!(lines[1]["data"], json!({"user": "bob"}));
    let broker = Client::connect(&url).await.unwrap().broker().clone();
    broker.delete_durable(&topic, &group).await.unwrap();
}

async fn health_and_stats_ask_every_node(url: String) {
    let name = unique("cli");
    let nodes = [
        node(&url, &name, "a").start().await.unwrap(),
        node(&url, &name, "b").start().await.unwrap(),
        node(&url, &name, "c").version("2.0.0").start().await.unwrap(),
    ];
    let ids: BTreeSet<String> = nodes.iter().map(|n| n.node_id().to_string()).collect();
    let (a, health) = wait_for("micro health to see three nodes", WAIT, || async {
        let a = micro(&["health", &name, "--transport", &url], "").await;
        let rows = stdout_json(&a);
        (rows.as_array().unwrap().len() == 3).then_some((a, rows))
    })
    .await;
    a.success();
    let mut seen = BTreeSet::new();
    for r in health.as_array().unwrap() {
        assert_eq!(r["healthy"], true, "{r}");
        assert_eq!(r["status"], "ok");
        assert_eq!(r["address"], format!("micro.node.{}", r["node"].as_str().unwrap()));
        seen.insert(r["node"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ids);

    let stats = micro(&["stats", &name, "--transport", &url], "").await.success();
    let rows = stdout_json(&stats);
    let mut seen = BTreeSet::new();
    for r in rows.as_array().unwrap() {
        // The stats come from the node the row names: each node was asked on its own address.
        assert_eq!(r["stats"]["node"], r["node"], "{r}");
        assert_eq!(r["stats"]["service"], name.as_str());
        assert_eq!(r["stats"]["version"], r["version"]);
        assert!(r["stats"]["memory"].as_u64().unwrap() > 0);
        seen.insert(r["node"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, ids);

    // The version filter narrows the nodes asked.
    let v2 = micro(&["health", &name, "--sv", "2.0.0", "--transport", &url], "").await.success();
    assert_eq!(stdout_json(&v2).as_array().unwrap().len(), 1);
    let table = micro(&["health", &name, "--transport", &url, "-o", "table"], "").await.success();
    let text = String::from_utf8_lossy(&table.get_output().stdout).into_owned();
    assert!(text.starts_with("NODE") && text.contains("3 of 3 node(s) healthy"), "{text}");
    for n in nodes {
        n.stop().await.unwrap();
    }
}

async fn health_exits_3_when_a_registered_node_does_not_answer(url: String) {
    let name = unique("cli");
    let svc = node(&url, &name, "a").start().await.unwrap();
    // A node that died while still registered: its record is announced, its address is silent.
    let transport = micro::transport::connect(&url).await.unwrap();
    let registry = Registry::start(transport, RegistryOptions::default()).await.unwrap();
    let ghost_id = format!("{name}-ghost");
    let mut record = micro::registry::ServiceRecord::new(&name, "1.0.0");
    record.nodes.push(Node { id: ghost_id.clone(), address: format!("micro.node.{ghost_id}"), ..Default::default() });
    registry.register(record).await.unwrap();

    let (a, rows) = wait_for("micro health to see both nodes", WAIT, || async {
        let a = micro(&["health", &name, "--timeout", "1s", "--transport", &url], "").await;
        let rows = stdout_json(&a);
        (rows.as_array().unwrap().len() == 2).then_some((a, rows))
    })
    .await;
    a.code(3);
    let ghost = rows.as_array().unwrap().iter().find(|r| r["node"] == ghost_id.as_str()).unwrap();
    assert_eq!(ghost["healthy"], false);
    assert_eq!(ghost["status"], "error");
    assert!(ghost["error"].as_str().is_some_and(|e| !e.is_empty()), "{ghost}");
    let live = rows.as_array().unwrap().iter().find(|r| r["node"] == svc.node_id()).unwrap();
    assert_eq!(live["healthy"], true, "{rows}");

    let stats = micro(&["stats", &name, "--timeout", "1s", "--transport", &url, "-o", "table"], "").await.code(3);
    let text = String::from_utf8_lossy(&stats.get_output().stdout).into_owned();
    assert!(text.contains("1 of 2 node(s) answered") && text.contains("error:"), "{text}");

    registry.deregister(&ghost_id).await.unwrap();
    registry.stop();
    svc.stop().await.unwrap();
}

async fn watch_prints_nodes_added_and_removed(url: String) {
    let name = unique("cli");
    // Running before the watch starts: present state, not a change.
    let before = node(&url, &name, "old").start().await.unwrap();
    let watch = spawn_streaming(&["watch", &name, "--count", "2", "--transport", &url], "watching").await;
    let svc = node(&url, &name, "a").start().await.unwrap();
    let id = svc.node_id().to_string();
    svc.stop().await.unwrap();
    let lines = json_lines(watch).await;
    let actions: Vec<&Value> = lines.iter().map(|l| &l["action"]).collect();
    assert_eq!(actions, [&json!("added"), &json!("removed")], "{lines:?}");
    for l in &lines {
        assert_eq!(l["service"]["name"], name.as_str());
        assert_eq!(l["service"]["nodes"][0]["id"], id.as_str());
    }
    before.stop().await.unwrap();
}

async fn call_options_node_reaches_that_node_only(url: String) {
    let name = unique("cli");
    let nodes = [
        node(&url, &name, "a").start().await.unwrap(),
        node(&url, &name, "b").start().await.unwrap(),
        node(&url, &name, "c").start().await.unwrap(),
    ];
    let client = Client::connect(&url).await.unwrap();
    wait_for("three nodes registered", WAIT, || async {
        let s = client.registry().get_service(&name).await.ok()?;
        (s[0].nodes.len() == 3).then_some(())
    })
    .await;
    for n in &nodes {
        for _ in 0..5 {
            let opts = CallOptions::new().node(n.node_id());
            let h: Value = client.call_with(&name, "Debug.Health", &(), opts).await.unwrap();
            assert_eq!(h["node"], n.node_id());
        }
    }
    // It also overrides a filter and the broker-balanced route.
    let opts = CallOptions::new().node(nodes[1].node_id()).version("9.9.9").broker_balanced();
    let g: Greeting = client.call_with(&name, "Say.Hello", &Hello { name: "x".into() }, opts).await.unwrap();
    assert_eq!(g.node, "b");
    let e = client
        .call_with::<_, Value, _>(
            &name,
            "Debug.Health",
            &(),
            CallOptions::new().node("nobody").retry(RetryPolicy::none()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.to_string().contains("node nobody"), "{e}");
    for n in nodes {
        n.stop().await.unwrap();
    }
}

#[actix::test]
async fn unreachable_broker_names_the_url_and_how_to_start_one() {
    let nats =
        micro(&["services", "--transport", "nats://127.0.0.1:1"], "").await.code(1).stdout(predicate::str::is_empty());
    let err = stderr(&nats);
    assert!(err.starts_with("error: NATS at nats://127.0.0.1:1 is unreachable"), "{err}");
    assert!(err.contains("nats-server"), "{err}");
    let amqp =
        micro(&["call", "x", "Y.Z", "{}", "--transport", "amqp://guest:guest@127.0.0.1:1/%2f"], "").await.code(1);
    let err = stderr(&amqp);
    assert!(err.starts_with("error: RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f is unreachable"), "{err}");
    assert!(err.contains("rabbitmq-server") && !err.contains("guest:guest"), "{err}");
    let scheme = micro(&["services", "--transport", "carrier-pigeon://x"], "").await.code(1);
    assert!(stderr(&scheme).contains("unknown transport scheme"), "{}", stderr(&scheme));
}

/// A URL as the binary prints it: the password masked.
fn shown(url: &str) -> String {
    match url.split_once("://").and_then(|(scheme, rest)| Some((scheme, rest.split_once('@')?))) {
        Some((scheme, (user, host))) => format!("{scheme}://{}:***@{host}", user.split(':').next().unwrap_or("")),
        None => url.to_string(),
    }
}

#[cfg(feature = "rabbitmq")]
#[actix::test]
async fn a_refused_login_or_virtual_host_says_so_and_prints_no_password() {
    let base = amqp_url();
    let (_, host) = base.split_once('@').unwrap();
    let host = host.split('/').next().unwrap();
    for (url, says) in [
        (format!("amqp://guest:wrong-secret@{host}/%2f"), "refused the authentication"),
        (format!("amqp://guest:guest@{host}/{}", unique("novhost")), "refused the virtual host"),
    ] {
        let a = micro(&["services", "--transport", &url], "").await.code(1).stdout(predicate::str::is_empty());
        let err = stderr(&a);
        assert!(err.starts_with(&format!("error: RabbitMQ at {} {says}", shown(&url))), "{err}");
        assert!(!err.contains("unreachable") && !err.contains("rabbitmq-server"), "the broker is up: {err}");
        assert!(!err.contains("ERROR") && err.lines().count() == 1, "one line, no raw library log: {err}");
        assert!(!err.contains("wrong-secret") && !err.contains("guest:guest"), "{err}");
    }
}

#[cfg(feature = "rabbitmq")]
#[actix::test]
async fn subscribe_notes_print_no_password() {
    let url = amqp_url();
    assert!(url.contains(":guest@"), "the test needs a URL with a password: {url}");
    let topic = unique("topic");
    let group = unique("group");
    for args in
        [vec!["subscribe", &topic, "--count", "0"], vec!["subscribe", &topic, "--durable", &group, "--count", "0"]]
    {
        let mut args = args;
        args.extend(["--transport", &url]);
        let err = stderr(&micro(&args, "").await.success());
        assert!(err.contains(&shown(&url)) && !err.contains(":guest@"), "{args:?}: {err}");
    }
    let broker = Client::connect(&url).await.unwrap().broker().clone();
    broker.delete_durable(&topic, &group).await.unwrap();
}

#[cfg(feature = "nats")]
#[actix::test]
async fn api_drains_the_request_in_flight_on_sigint_as_on_sigterm() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let url = nats_url();
    for signal in ["INT", "TERM"] {
        let ns = unique("api");
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let svc = Service::builder(format!("{ns}.slow"))
            .transport(&url)
            .handle("Say.Slow", move |Req(_): Req<micro::api::Request>| {
                let flag = flag.clone();
                async move {
                    flag.store(true, Ordering::SeqCst);
                    // The work the signal arrives during.
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    Ok::<_, Status>(micro::api::Response::json(200, &json!({"done": true})))
                }
            })
            .start()
            .await
            .unwrap();
        let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let args = ["api", "--address", &address, "--namespace", &ns, "--transport", &url];
        let child = spawn_streaming(&args, "gateway listening").await;
        let http = awc::Client::builder().timeout(WAIT).finish();
        wait_for("the gateway to answer", WAIT, || async {
            let rsp = http.get(format!("http://{address}/health")).send().await.ok()?;
            rsp.status().is_success().then_some(())
        })
        .await;
        let request = http.get(format!("http://{address}/slow/say/slow")).send();
        let answer = actix_rt::spawn(async move {
            let mut rsp = request.await.map_err(|e| e.to_string())?;
            let body = rsp.body().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((rsp.status().as_u16(), String::from_utf8_lossy(&body).into_owned()))
        });
        wait_for("the request to reach the service", WAIT, || async { started.load(Ordering::SeqCst).then_some(()) })
            .await;
        let pid = child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-s", signal, &pid]).status().unwrap().success());
        let (status, body) = answer.await.unwrap().unwrap_or_else(|e| panic!("SIG{signal}: the request was cut: {e}"));
        assert_eq!((status, body.as_str()), (200, r#"{"done":true}"#), "SIG{signal}");
        let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("micro api did not exit").unwrap();
        assert!(out.status.success(), "SIG{signal}: micro api exited with {:?}", out.status);
        svc.stop().await.unwrap();
    }
}

#[actix::test]
async fn help_completions_and_usage_errors() {
    let help = micro(&["--help"], "").await.success();
    let text = String::from_utf8_lossy(&help.get_output().stdout).into_owned();
    assert!(text.contains("nats://127.0.0.1:4222") && text.contains("memory:// cannot see other processes"), "{text}");
    for cmd in
        ["services", "service", "call", "publish", "subscribe", "health", "stats", "watch", "completions", "api", "web"]
    {
        micro(&[cmd, "--help"], "").await.success().stdout(predicate::str::contains("Usage: micro"));
    }
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        micro(&["completions", shell], "").await.success().stdout(predicate::str::contains("subscribe"));
    }
    // Bad usage is clap's exit code 2, distinct from a local failure (1) and a remote error (3).
    micro(&["call", "only-a-service"], "").await.code(2);
    micro(&["completions", "tcsh"], "").await.code(2);
    micro(&["call", "s", "E", "{}", "--timeout", "soon"], "")
        .await
        .code(2)
        .stderr(predicate::str::contains("not a duration"));
    micro(&["call", "s", "E", "{}", "-m", "novalue"], "").await.code(2).stderr(predicate::str::contains("key=value"));
}
