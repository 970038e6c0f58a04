//! Subject names of the wire protocol (the vocabulary every transport speaks) and NATS-style
//! wildcard matching.
//!
//! ```
//! use micro::subject;
//! assert_eq!(subject::service("go.micro.srv.greeter"), "micro.rpc.go.micro.srv.greeter");
//! assert_eq!(subject::request("micro.rpc.go.micro.srv.greeter", "Say.Hello"), "micro.rpc.go.micro.srv.greeter.Say.Hello");
//! assert_eq!(subject::endpoint_of("micro.rpc.go.micro.srv.greeter.Say.Hello"), Some("Say.Hello"));
//! assert!(subject::matches("micro.event.user.*", "micro.event.user.login"));
//! assert!(subject::matches("micro.event.>", "micro.event.order.placed"));
//! assert!(!subject::matches("micro.event.user.*", "micro.event.user.profile.updated"));
//! ```

/// Prefix of a service's shared request subject.
pub const RPC_PREFIX: &str = "micro.rpc.";
/// Prefix of a node's own request subject.
pub const NODE_PREFIX: &str = "micro.node.";
/// Prefix of event subjects.
pub const EVENT_PREFIX: &str = "micro.event.";
/// Registry announcements (register, heartbeat, deregister).
pub const REGISTRY_ANNOUNCE: &str = "micro.registry.announce";
/// Registry discovery requests.
pub const REGISTRY_DISCOVER: &str = "micro.registry.discover";
/// Prefix of a registry's private inbox for discovery answers.
pub const REGISTRY_INBOX_PREFIX: &str = "micro.registry.inbox.";

/// The shared subject of a service, served by all its nodes in the queue group of the same name.
pub fn service(name: &str) -> String {
    format!("{RPC_PREFIX}{name}")
}

/// The subject of one node.
pub fn node(node_id: &str) -> String {
    format!("{NODE_PREFIX}{node_id}")
}

/// The subject a request for `endpoint` is sent on: the service's shared subject or a node's
/// address, then the endpoint's two tokens (`micro.rpc.go.micro.srv.greeter.Say.Hello`).
pub fn request(base: &str, endpoint: &str) -> String {
    let mut s = String::with_capacity(base.len() + 1 + endpoint.len());
    s.push_str(base);
    s.push('.');
    s.push_str(endpoint);
    s
}

/// The pattern a node subscribes to for every endpoint under a base subject: `<base>.*.*`.
pub fn endpoints(base: &str) -> String {
    format!("{base}.*.*")
}

/// The endpoint a request subject names: its last two tokens (`Say.Hello`); `None` when the
/// subject has fewer than three tokens.
pub fn endpoint_of(subject: &str) -> Option<&str> {
    // Byte by byte from the end: the two tokens are short, and `rfind`'s vectorised search
    // costs more to set up than it saves on them (it runs for every request).
    let bytes = subject.as_bytes();
    let method = bytes.iter().rposition(|&b| b == b'.')?;
    let handler = bytes[..method].iter().rposition(|&b| b == b'.')?;
    Some(&subject[handler + 1..])
}

/// True for a valid endpoint name: `Handler.Method`, two tokens of `[A-Za-z0-9_-]`, because the
/// endpoint is the last two tokens of the request subject.
pub fn is_endpoint(name: &str) -> bool {
    let token = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    matches!(name.split_once('.'), Some((h, m)) if token(h) && token(m))
}

/// The subject an event topic (or topic pattern) is published on.
pub fn event(topic: &str) -> String {
    // One allocation of the right size (`format!` guesses, then grows).
    [EVENT_PREFIX, topic].concat()
}

/// True if `subject` is a valid dotted name: non-empty tokens of printable ASCII without
/// whitespace; `*` and `>` only when `wildcards` and only as whole tokens (`>` last).
pub fn is_valid(subject: &str, wildcards: bool) -> bool {
    // One pass over the bytes, one table lookup each (every publish checks its topic): a token
    // ends at a `.` or at the end, and is checked then.
    let bytes = subject.as_bytes();
    let mut start = 0;
    let mut wildcard = false;
    for (i, &b) in bytes.iter().enumerate() {
        match BYTE_CLASS[usize::from(b)] {
            NAME => {}
            DOT => {
                // `>` must be the last token.
                if !token_ok(&bytes[start..i], wildcard, wildcards) || bytes[start..i] == *b">" {
                    return false;
                }
                start = i + 1;
                wildcard = false;
            }
            WILDCARD => wildcard = true,
            _ => return false,
        }
    }
    token_ok(&bytes[start..], wildcard, wildcards)
}

const NAME: u8 = 0;
const DOT: u8 = 1;
const WILDCARD: u8 = 2;
const REFUSED: u8 = 3;

/// What each byte is in a subject: printable ASCII is a name byte, but for `.`, `*` and `>`;
/// `#` is a wildcard on AMQP, kept out of names so every transport routes alike; the rest
/// (space, controls, non-ASCII) is refused.
const BYTE_CLASS: [u8; 256] = {
    let mut class = [REFUSED; 256];
    let mut b = b'!';
    while b <= b'~' {
        class[b as usize] = NAME;
        b += 1;
    }
    class[b'.' as usize] = DOT;
    class[b'*' as usize] = WILDCARD;
    class[b'>' as usize] = WILDCARD;
    class[b'#' as usize] = REFUSED;
    class
};

/// A token of [`is_valid`]: not empty; a wildcard only where allowed, and only alone.
fn token_ok(token: &[u8], has_wildcard: bool, wildcards: bool) -> bool {
    !token.is_empty() && (!has_wildcard || (wildcards && token.len() == 1))
}

/// NATS wildcard matching: `*` matches one token, `>` one or more trailing tokens.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches("*.b.>", "x.b.c.d"));
        assert!(!matches("a.*", "a"));
    }

    #[test]
    fn endpoints_are_the_last_two_tokens() {
        assert_eq!(endpoint_of("micro.node.a.b-1.Debug.Health"), Some("Debug.Health"));
        assert_eq!(endpoint_of("a.b"), None);
        assert!(is_endpoint("Say.Hello"));
        assert!(is_endpoint("Say_2.Hello-x"));
        assert!(!is_endpoint("Hello"));
        assert!(!is_endpoint("Say.Hello.World"));
        assert!(!is_endpoint("Say.*"));
        assert!(matches(&endpoints("micro.rpc.greeter"), "micro.rpc.greeter.Say.Hello"));
        assert!(!matches(&endpoints("micro.rpc.greeter"), "micro.rpc.greeter.admin.Say.Hello"));
    }

    #[test]
    fn validity() {
        assert!(is_valid("user.login", false));
        assert!(!is_valid("user..login", false));
        assert!(!is_valid("user.*", false));
        assert!(is_valid("user.*", true));
        assert!(!is_valid("user.>.x", true));
        assert!(!is_valid("us er", true));
        assert!(!is_valid("user.lo*", true));
        assert!(!is_valid("user.#", true));
        assert!(!is_valid("", false));
        assert!(!is_valid(".user", false));
        assert!(!is_valid("user.", false));
        assert!(!is_valid("user.>", false));
        assert!(is_valid("user.>", true));
        assert!(is_valid(">", true));
        assert!(is_valid("*.*.>", true));
        assert!(!is_valid("user.>>", true));
        assert!(!is_valid("user.*x", true));
        assert!(!is_valid("user.\tx", false));
        assert!(!is_valid("usér", false));
        assert!(is_valid("go.micro.srv-greeter_v2:x", false));
    }

    /// The rule of [`is_valid`] token by token, as its doc states it.
    fn valid_by_tokens(subject: &str, wildcards: bool) -> bool {
        let tokens: Vec<&str> = subject.split('.').collect();
        tokens.iter().enumerate().all(|(i, t)| {
            let wildcard = t.contains(['*', '>']);
            !t.is_empty()
                && t.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
                && (!wildcard || (wildcards && t.len() == 1 && (*t == "*" || i + 1 == tokens.len())))
        })
    }

    proptest::proptest! {
        #[test]
        fn validity_is_the_token_rule(
            tokens in proptest::collection::vec("|a|ab|\\*|>|a\\*|>a|#|a b|\t|é", 1..5),
            wildcards: bool,
        ) {
            let subject = tokens.join(".");
            proptest::prop_assert_eq!(is_valid(&subject, wildcards), valid_by_tokens(&subject, wildcards));
        }
    }
}
