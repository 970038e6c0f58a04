//! Queue and routing-key names: how subjects, queue groups and durable groups map onto
//! RabbitMQ's exchange, queues and bindings.

/// The protocol's request subjects (a service's shared one, a node's own) are also the names of
/// the queues that take them, so requests to them can use the default exchange.
pub(super) fn is_point_to_point(subject: &str) -> bool {
    (subject.starts_with(crate::subject::RPC_PREFIX) || subject.starts_with(crate::subject::NODE_PREFIX))
        && subject.len() <= 255
        && !has_wildcard_token(subject)
}

/// True when a token of `subject` is `*` or `>`. Byte-wise, and only split when such a byte is
/// there at all: `str::split` with a char pattern runs a UTF-8 searcher per token, and this runs
/// for every request.
fn has_wildcard_token(subject: &str) -> bool {
    let bytes = subject.as_bytes();
    bytes.iter().any(|&b| b == b'*' || b == b'>') && bytes.split(|&b| b == b'.').any(|t| t == b"*" || t == b">")
}

/// A request subject (`micro.rpc.<service>.<Handler>.<Method>`, `micro.node.<id>.<Handler>.<Method>`)
/// split into the queue that takes it and the endpoint, which travels in the `type` property:
/// the default exchange then routes it straight to the queue.
pub(super) fn request_route(subject: &str) -> Option<(&str, &str)> {
    let endpoint = crate::subject::endpoint_of(subject)?;
    let queue = &subject[..subject.len() - endpoint.len() - 1];
    (is_point_to_point(subject) && queue.len() > crate::subject::RPC_PREFIX.len()).then_some((queue, endpoint))
}

/// The queue of a node's or service's endpoints pattern (`<queue>.*.*`), named after its base.
pub(super) fn endpoints_queue(pattern: &str) -> Option<&str> {
    pattern.strip_suffix(".*.*").filter(|base| is_point_to_point(base))
}

/// The routing key pattern of a subject pattern: NATS `>` becomes AMQP `#`.
pub(super) fn binding_key(pattern: &str) -> String {
    pattern.split('.').map(|t| if t == ">" { "#" } else { t }).collect::<Vec<_>>().join(".")
}

/// The queue of a queue group: one per (group, pattern), so a group on two patterns gets two
/// queues, as NATS queue groups are per subject.
pub(super) fn group_queue(group: &str, pattern: &str) -> String {
    bounded(if group == pattern { group.to_string() } else { format!("{group}@{pattern}") })
}

/// The durable queue of a durable group on a pattern.
pub(super) fn durable_queue(group: &str, pattern: &str) -> String {
    bounded(format!("durable:{group}@{pattern}"))
}

/// The queue that keeps a group's dead letters: the dead-letter subject without `micro.event.`.
pub(super) fn dead_letter_queue(dead_letter: &str) -> String {
    bounded(dead_letter.strip_prefix(crate::subject::EVENT_PREFIX).unwrap_or(dead_letter).to_string())
}

/// A queue name within AMQP's 255 bytes: a long one is cut and made unique by a hash.
fn bounded(name: String) -> String {
    if name.len() <= 255 {
        name
    } else {
        let mut cut = 200;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}~{:016x}", &name[..cut], crate::transport::kit::fnv1a(name.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_subjects_go_point_to_point() {
        assert!(is_point_to_point("micro.rpc.go.micro.srv.greeter"));
        assert!(is_point_to_point("micro.node.go.micro.srv.greeter-0193"));
        assert!(!is_point_to_point("micro.event.user.login"));
        assert!(!is_point_to_point("micro.rpc.*"));
        assert!(!is_point_to_point("micro.node.>"));
        assert!(!is_point_to_point("micro.rpc.a.*.b"));
        // `*` and `>` inside a token are not wildcards.
        assert!(is_point_to_point("micro.rpc.a*b.c>d"));
        assert!(!is_point_to_point(&format!("micro.node.{}", "x".repeat(300))));
    }

    #[test]
    fn requests_name_their_queue_and_endpoint() {
        assert_eq!(
            request_route("micro.rpc.go.micro.srv.greeter.Say.Hello"),
            Some(("micro.rpc.go.micro.srv.greeter", "Say.Hello"))
        );
        assert_eq!(request_route("micro.node.g-1.Debug.Health"), Some(("micro.node.g-1", "Debug.Health")));
        assert_eq!(request_route("micro.event.user.login"), None);
        assert_eq!(request_route("micro.rpc.Say.Hello"), None);
        assert_eq!(endpoints_queue("micro.rpc.greeter.*.*"), Some("micro.rpc.greeter"));
        assert_eq!(endpoints_queue("micro.event.*.*"), None);
    }

    #[test]
    fn wildcards_map_to_amqp() {
        assert_eq!(binding_key("micro.event.order.>"), "micro.event.order.#");
        assert_eq!(binding_key("micro.event.*.login"), "micro.event.*.login");
    }

    #[test]
    fn group_queues_are_per_pattern_and_bounded() {
        assert_eq!(group_queue("micro.rpc.greeter", "micro.rpc.greeter"), "micro.rpc.greeter");
        assert_eq!(group_queue("audit", "micro.event.user.login"), "audit@micro.event.user.login");
        assert!(group_queue("g", &"x.".repeat(200)).len() <= 255);
    }

    #[test]
    fn durable_queues_are_named_after_group_and_pattern_and_bounded() {
        assert_eq!(durable_queue("audit", "micro.event.user.>"), "durable:audit@micro.event.user.>");
        assert_eq!(dead_letter_queue("micro.event.audit.dlq"), "audit.dlq");
        assert!(durable_queue("g", &"x.".repeat(200)).len() <= 255);
        assert!(durable_queue("g", &"é.".repeat(200)).len() <= 255);
        assert_ne!(durable_queue("g", &"x.".repeat(200)), durable_queue("g", &"x.".repeat(201)));
    }
}
