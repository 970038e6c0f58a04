//! The policy engine: [`Rule`]s (resource × who → allow/deny, with priorities) and the
//! [`Policy`] that decides a request with them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

use crate::context::Identity;

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Access {
    /// The request may go on.
    Allow,
    /// The request is refused.
    Deny,
}

impl std::str::FromStr for Access {
    type Err = String;
    fn from_str(s: &str) -> Result<Access, String> {
        match s {
            "allow" => Ok(Access::Allow),
            "deny" => Ok(Access::Deny),
            other => Err(format!("unknown access {other:?}: use allow or deny")),
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Allow => "allow",
            Access::Deny => "deny",
        })
    }
}

/// Who a rule is about, written as a string in [`Rule::who`]:
///
/// | `who` | applies to |
/// |---|---|
/// | `public` | everyone, with or without a token (a public endpoint) |
/// | `*` | every caller with a valid token |
/// | `account:<id>` | the account `<id>` |
/// | `<scope>` | callers whose token grants that scope |
pub const PUBLIC: &str = "public";

/// One rule: a resource (service and endpoint patterns, `*` matching any run of characters)
/// and who it is about, with an access and a priority. The rule with the highest priority
/// among those that match decides (deny first when two tie); when none matches, the request is
/// refused.
///
/// ```
/// use micro::auth::{Access, Rule};
/// let rule = Rule::new("go.micro.srv.greeter", "Say.*", "greeter").priority(10);
/// let public = Rule::new("go.micro.srv.greeter", "Say.Ping", "public");
/// let no_debug = Rule::new("*", "Debug.*", "*").access(Access::Deny).priority(100);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Rule {
    /// Unique id (given by the auth service when empty).
    #[serde(default)]
    pub id: String,
    /// Service name pattern (`go.micro.srv.*`, `*`).
    pub service: String,
    /// Endpoint pattern (`Say.Hello`, `Say.*`, `*`).
    pub endpoint: String,
    /// Who: `public`, `*`, `account:<id>` or a scope.
    pub who: String,
    /// Allow or deny.
    pub access: Access,
    /// Higher first (default 0).
    #[serde(default)]
    pub priority: i32,
}

impl Rule {
    /// A rule that allows `who` to call `service`'s `endpoint`, priority 0.
    pub fn new(service: impl Into<String>, endpoint: impl Into<String>, who: impl Into<String>) -> Rule {
        Rule {
            id: String::new(),
            service: service.into(),
            endpoint: endpoint.into(),
            who: who.into(),
            access: Access::Allow,
            priority: 0,
        }
    }

    /// Sets the id.
    pub fn id(mut self, id: impl Into<String>) -> Rule {
        self.id = id.into();
        self
    }

    /// Sets the access (default allow).
    pub fn access(mut self, access: Access) -> Rule {
        self.access = access;
        self
    }

    /// Sets the priority (default 0; higher wins).
    pub fn priority(mut self, p: i32) -> Rule {
        self.priority = p;
        self
    }

    /// True when the rule's patterns cover this service and endpoint.
    pub fn covers(&self, service: &str, endpoint: &str) -> bool {
        glob(&self.service, service) && glob(&self.endpoint, endpoint)
    }

    /// True when the rule is about this caller (`None`: no valid token).
    pub fn applies_to(&self, who: Option<&Identity>) -> bool {
        match self.who.as_str() {
            PUBLIC => true,
            "*" => who.is_some(),
            w => match (w.strip_prefix("account:"), who) {
                (Some(id), Some(i)) => i.id == id,
                (None, Some(i)) => i.has_scope(w),
                (_, None) => false,
            },
        }
    }

    /// Checks the patterns and names: what the auth service refuses to store.
    pub fn validate(&self) -> Result<(), String> {
        let ok = |s: &str| !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_graphic());
        if !ok(&self.service) || !ok(&self.endpoint) || !ok(&self.who) {
            return Err("a rule needs a service, an endpoint and a who, each 1 to 255 visible characters".into());
        }
        Ok(())
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == s;
    };
    let Some(mut s) = s.strip_prefix(first) else { return false };
    let parts: Vec<&str> = rest.split('*').collect();
    let (last, middle) = parts.split_last().expect("split yields one part at least");
    for part in middle {
        match s.find(part) {
            Some(i) => s = &s[i + part.len()..],
            None => return false,
        }
    }
    s.len() >= last.len() && s.ends_with(last)
}

/// The outcome of a [`Policy`] check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// A rule allows it.
    Allow,
    /// No rule allows it, or one denies it.
    Deny,
}

/// A set of rules, swapped whole when they change (cheap to read from many threads).
///
/// ```
/// use micro::auth::{Decision, Policy, Rule};
/// use micro::Identity;
/// let policy = Policy::new(vec![Rule::new("go.micro.srv.greeter", "Say.*", "greeter")]);
/// let who = Identity::new("alice", ["greeter"]);
/// assert_eq!(policy.decide("go.micro.srv.greeter", "Say.Hello", Some(&who)), Decision::Allow);
/// assert_eq!(policy.decide("go.micro.srv.greeter", "Say.Hello", None), Decision::Deny);
/// ```
#[derive(Debug, Default)]
pub struct Policy {
    rules: ArcSwap<Vec<Rule>>,
}

impl Policy {
    /// A policy with these rules.
    pub fn new(rules: Vec<Rule>) -> Policy {
        let p = Policy::default();
        p.replace(rules);
        p
    }

    /// Replaces the rules.
    pub fn replace(&self, mut rules: Vec<Rule>) {
        // Highest priority first; at equal priority deny before allow.
        rules.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.access != Access::Deny));
        self.rules.store(Arc::new(rules));
    }

    /// The rules, highest priority first.
    pub fn rules(&self) -> Arc<Vec<Rule>> {
        self.rules.load_full()
    }

    /// The rule that decides a call (the first by priority that covers it and applies to the
    /// caller), if any.
    pub fn matching(&self, service: &str, endpoint: &str, who: Option<&Identity>) -> Option<Rule> {
        self.rules.load().iter().find(|r| r.covers(service, endpoint) && r.applies_to(who)).cloned()
    }

    /// Decides a call of `service`'s `endpoint` by `who`: the first rule (by priority) that
    /// covers it and applies to the caller; deny when none does.
    pub fn decide(&self, service: &str, endpoint: &str, who: Option<&Identity>) -> Decision {
        let rules = self.rules.load();
        for rule in rules.iter() {
            if rule.covers(service, endpoint) && rule.applies_to(who) {
                return match rule.access {
                    Access::Allow => Decision::Allow,
                    Access::Deny => Decision::Deny,
                };
            }
        }
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("Say.*", "Say.Hello"));
        assert!(!glob("Say.*", "Debug.Health"));
        assert!(glob("go.*.greeter", "go.micro.srv.greeter"));
        assert!(glob("*.Health", "Debug.Health"));
        assert!(!glob("a*b*c", "abx"));
        assert!(glob("a*b*c", "a1b2c"));
        assert!(!glob("Say.Hello", "Say.Hello2"));
    }

    #[test]
    fn priorities_and_deny() {
        let p = Policy::new(vec![
            Rule::new("*", "*", "*"),
            Rule::new("*", "Debug.*", "*").access(Access::Deny).priority(10),
            Rule::new("*", "Debug.*", "ops").priority(20),
            Rule::new("svc", "Ping", PUBLIC),
        ]);
        let user = Identity::new("u", ["x"]);
        let ops = Identity::new("o", ["ops"]);
        assert_eq!(p.decide("svc", "Say", Some(&user)), Decision::Allow);
        assert_eq!(p.decide("svc", "Debug.Stats", Some(&user)), Decision::Deny);
        assert_eq!(p.decide("svc", "Debug.Stats", Some(&ops)), Decision::Allow);
        assert_eq!(p.decide("svc", "Ping", None), Decision::Allow);
        assert_eq!(p.decide("svc", "Say", None), Decision::Deny);
        let acct = Policy::new(vec![Rule::new("svc", "*", "account:bob")]);
        assert_eq!(acct.decide("svc", "X", Some(&Identity::new("bob", Vec::<String>::new()))), Decision::Allow);
        assert_eq!(acct.decide("svc", "X", Some(&user)), Decision::Deny);
    }
}
