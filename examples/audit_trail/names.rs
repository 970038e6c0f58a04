//! Topic and service names, all derived from an optional prefix so that several audit trails
//! (parallel tests, say) can share one broker without sharing events.
#![allow(dead_code)]

/// Events the users service publishes (before the prefix).
pub const LOGIN: &str = "user.login";
pub const PROFILE_UPDATED: &str = "user.profile.updated";
pub const ORDER_PLACED: &str = "order.placed";
/// What the audit service subscribes to (before the prefix).
pub const AUDITED: [&str; 2] = ["user.>", "order.>"];

const AUDIT: &str = "go.micro.srv.audit";
const USERS: &str = "go.micro.srv.users";

/// The names for one prefix: `P.user.login`, `go.micro.srv.audit.P` (with `.` in P as `-`, so
/// the suffix stays one gateway path segment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    prefix: Option<String>,
}

impl Names {
    /// Checks the prefix: dotted segments of `[A-Za-z0-9_-]`.
    pub fn new(prefix: Option<&str>) -> Result<Names, String> {
        let Some(p) = prefix.filter(|p| !p.is_empty()) else { return Ok(Names::default()) };
        let segment_ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
        if !p.split('.').all(segment_ok) {
            return Err(format!("invalid prefix {p:?}: use dotted segments of letters, digits, '-' and '_'"));
        }
        Ok(Names { prefix: Some(p.to_string()) })
    }

    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// A topic (or pattern) under the prefix.
    pub fn topic(&self, name: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}.{name}"),
            None => name.to_string(),
        }
    }

    fn service(&self, base: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{base}.{}", p.replace('.', "-")),
            None => base.to_string(),
        }
    }

    /// The audit service, also its durable group.
    pub fn audit_service(&self) -> String {
        self.service(AUDIT)
    }

    pub fn users_service(&self) -> String {
        self.service(USERS)
    }

    /// Where the audit group's dead letters go.
    pub fn dead_letters(&self) -> String {
        format!("{}.dlq", self.audit_service())
    }

    /// `Audit.History` through a gateway with the `rpc` handler in namespace `go.micro.srv`.
    pub fn history_path(&self) -> String {
        match &self.prefix {
            Some(p) => format!("/audit/{}/audit/history", p.replace('.', "-")),
            None => "/audit/history".to_string(),
        }
    }
}
