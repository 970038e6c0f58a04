//! Path to service and endpoint, the rules of the original Micro api handler.
//!
//! | path | service | endpoint |
//! |---|---|---|
//! | `/greeter` | `<ns>.greeter` | `Greeter.Call` |
//! | `/customer/orders` | `<ns>.customer` | `Customer.Orders` |
//! | `/greeter/say/hello` | `<ns>.greeter` | `Say.Hello` |
//! | `/foo/bar/baz/cat` (4+) | `<ns>.foo.bar` | `Baz.Cat` (the last two name the endpoint) |
//! | `/v1/greeter/say/hello` | `<ns>.v1.greeter` | `Say.Hello` (a leading `v<N>` joins the service) |

/// A path resolved to a call target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The full service name.
    pub service: String,
    /// `Handler.Method`.
    pub endpoint: String,
}

/// Why a path could not be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPath(pub String);

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

fn is_segment(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_version(s: &str) -> bool {
    s.len() > 1 && s.starts_with('v') && s[1..].bytes().all(|b| b.is_ascii_digit())
}

/// Splits a (decoded, already checked) path into segments, validating each.
pub fn segments(path: &str) -> Result<Vec<&str>, BadPath> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(bad) = parts.iter().find(|s| !is_segment(s)) {
        return Err(BadPath(format!("invalid path segment {bad:?}: use letters, digits, '-' and '_'")));
    }
    Ok(parts)
}

/// Resolves a path in a namespace.
pub fn resolve(namespace: &str, path: &str) -> Result<Route, BadPath> {
    let parts = segments(path)?;
    let (prefix, rest): (Vec<&str>, &[&str]) = match parts.first() {
        Some(v) if is_version(v) && parts.len() > 1 => (vec![v], &parts[1..]),
        _ => (vec![], &parts[..]),
    };
    let (service_parts, handler, method): (Vec<&str>, String, String) = match rest {
        [] => return Err(BadPath("the path names no service".into())),
        [s] => (vec![s], title(s), "Call".into()),
        [s, m] => (vec![s], title(s), title(m)),
        [s, h, m] => (vec![s], title(h), title(m)),
        [svc @ .., h, m] => (svc.to_vec(), title(h), title(m)),
    };
    let service = std::iter::once(namespace)
        .filter(|n| !n.is_empty())
        .chain(prefix)
        .chain(service_parts)
        .collect::<Vec<_>>()
        .join(".");
    Ok(Route { service, endpoint: format!("{handler}.{method}") })
}

/// The service a path's first segments name, for the proxy: `/greeter/anything` →
/// (`<ns>.greeter`, `/anything`); a leading `v<N>` joins the service.
pub fn proxy_target<'a>(namespace: &str, path: &'a str) -> Result<(String, &'a str), BadPath> {
    let trimmed = path.trim_start_matches('/');
    let mut split = trimmed.splitn(2, '/');
    let first = split.next().unwrap_or("");
    let mut rest = split.next().unwrap_or("");
    let mut names = vec![first];
    if is_version(first) {
        let mut s = rest.splitn(2, '/');
        names.push(s.next().unwrap_or(""));
        rest = s.next().unwrap_or("");
    }
    if let Some(bad) = names.iter().find(|s| !is_segment(s)) {
        return Err(BadPath(format!("invalid service segment {bad:?}")));
    }
    let service = std::iter::once(namespace).filter(|n| !n.is_empty()).chain(names).collect::<Vec<_>>().join(".");
    let rest_start = path.len() - rest.len();
    Ok((service, if rest.is_empty() { "/" } else { &path[rest_start - 1..] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(path: &str) -> (String, String) {
        let route = resolve("go.micro.api", path).unwrap();
        (route.service, route.endpoint)
    }

    #[test]
    fn the_documented_rules() {
        assert_eq!(r("/greeter"), ("go.micro.api.greeter".into(), "Greeter.Call".into()));
        assert_eq!(r("/customer/orders"), ("go.micro.api.customer".into(), "Customer.Orders".into()));
        assert_eq!(r("/greeter/say/hello"), ("go.micro.api.greeter".into(), "Say.Hello".into()));
        assert_eq!(r("/foo/bar/baz/cat"), ("go.micro.api.foo.bar".into(), "Baz.Cat".into()));
        assert_eq!(r("/v1/greeter/say/hello"), ("go.micro.api.v1.greeter".into(), "Say.Hello".into()));
        assert_eq!(r("/v2/customer"), ("go.micro.api.v2.customer".into(), "Customer.Call".into()));
    }

    #[test]
    fn rejects_odd_segments() {
        assert!(resolve("ns", "/").is_err());
        assert!(resolve("ns", "/a.b/c").is_err());
        assert!(resolve("ns", "/a/%2e%2e").is_err());
        assert!(resolve("ns", "/a/b c").is_err());
    }

    #[test]
    fn proxy_targets() {
        assert_eq!(
            proxy_target("go.micro.web", "/dash/static/app.js").unwrap(),
            ("go.micro.web.dash".into(), "/static/app.js")
        );
        assert_eq!(proxy_target("go.micro.web", "/dash").unwrap(), ("go.micro.web.dash".into(), "/"));
        assert_eq!(proxy_target("ns", "/v1/dash/x").unwrap(), ("ns.v1.dash".into(), "/x"));
        assert!(proxy_target("ns", "/d.a/x").is_err());
    }
}
