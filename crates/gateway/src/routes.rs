//! The gateway's configuration file (TOML): the routing table, rate
//! limits and trusted proxies. Typed with `deny_unknown_fields` and
//! validated once, at start, into a [`RouteTable`] and [`RateLimits`]; a
//! mistake is an error that names the route and the field.
//!
//! ```toml
//! trusted_proxies = ["127.0.0.1", "10.0.0.0/8"]  # read X-Forwarded-For only from these
//!
//! [rate_limit]                         # every request (per IP) and every signed-in caller
//! per_ip = { per_second = 50, burst = 100 }
//! per_user = { per_second = 20, burst = 40 }
//!
//! [[routes]]
//! prefix = "/api/docs"                 # this path and everything under it
//! upstream = "http://127.0.0.1:8083"   # may carry a base path
//! audience = "docs"                    # aud of the token the upstream receives
//! roles = ["user", "admin"]            # any one of them (default: any caller)
//! scopes = []                          # all of them
//! strip_prefix = true                  # /api/docs/x → /x (default false)
//! timeout = "30s"                      # until the upstream's response head
//! rate_limit = { per_second = 5, burst = 10 }   # this route, per IP and per user
//! ```

use std::time::Duration;

use echo_edge::Limit;
use serde::Deserialize;
use url::Url;

use crate::{GatewayError, Result};

/// Paths the gateway answers itself; no route may take them (or sit
/// under them, or above them).
const RESERVED: [&str; 18] = [
    "/account",
    "/sessions",
    "/upload",
    "/documents",
    "/ask",
    "/login",
    "/callback",
    "/logout",
    "/signed-out",
    "/logs",
    "/admin",
    "/api/me",
    "/static",
    "/ping",
    "/healthz",
    "/readyz",
    "/metrics",
    "/favicon.ico",
];

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    /// Addresses or CIDR blocks.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitSpec>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub per_ip: Option<Limit>,
    pub per_user: Option<Limit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub prefix: String,
    pub upstream: String,
    pub audience: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub strip_prefix: bool,
    pub timeout: Option<String>,
    pub rate_limit: Option<Limit>,
    /// The route's audience may be one of Echo's own services (the
    /// gateway, audit, identity): a user's token for them reaches the
    /// upstream only when the route says so.
    #[serde(default)]
    pub allow_internal_audience: bool,
}

/// Rate limits in force; `None` is unlimited.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub per_ip: Option<Limit>,
    pub per_user: Option<Limit>,
}

impl Default for RateLimits {
    /// Generous enough for people and scripts, low enough to slow a flood.
    fn default() -> Self {
        Self {
            per_ip: Some(Limit {
                per_second: 50.0,
                burst: 100,
            }),
            per_user: Some(Limit {
                per_second: 20.0,
                burst: 40,
            }),
        }
    }
}

/// One validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `/a/b`: matches `/a/b` and `/a/b/...`, not `/a/bc`.
    pub prefix: String,
    /// Scheme, host and port of the upstream.
    pub origin: String,
    /// The upstream's base path, without a trailing `/` (often empty).
    pub base_path: String,
    pub audience: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub strip_prefix: bool,
    pub timeout: Duration,
    pub rate_limit: Option<Limit>,
}

/// The routes, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteTable(Vec<Route>);

impl Route {
    fn matches(&self, path: &str) -> bool {
        path.strip_prefix(&self.prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether `path` is an API path (JSON errors, bearer tokens) rather
    /// than pages.
    pub fn is_api(&self) -> bool {
        self.prefix.starts_with("/api/")
    }

    /// The upstream's path and query for the request's `path_and_query`.
    pub fn upstream_path(&self, path_and_query: &str) -> String {
        let rest = if self.strip_prefix {
            &path_and_query[self.prefix.len()..]
        } else {
            path_and_query
        };
        // The prefix itself goes to the base path itself (`/` without one).
        let base = if self.base_path.is_empty() && (rest.is_empty() || rest.starts_with('?')) {
            "/"
        } else {
            &self.base_path
        };
        format!("{base}{rest}")
    }
}

impl RouteTable {
    /// The route for `path`, if any (the longest matching prefix).
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.0.iter().find(|route| route.matches(path))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.0
    }
}

impl GatewayFile {
    /// Parses the file's text; unknown fields are errors.
    pub fn parse(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| GatewayError::Config(e.to_string()))
    }

    /// The trusted proxies, each an address or a CIDR block.
    pub fn trusted_proxies(&self) -> Result<echo_edge::TrustedProxies> {
        self.trusted_proxies
            .iter()
            .map(|entry| entry.parse())
            .collect::<std::result::Result<Vec<_>, String>>()
            .map(echo_edge::TrustedProxies::from_cidrs)
            .map_err(|e| GatewayError::Config(format!("trusted_proxies: {e}")))
    }

    /// The validated routing table.
    pub fn route_table(&self) -> Result<RouteTable> {
        let mut routes = self
            .routes
            .iter()
            .map(RouteSpec::validate)
            .collect::<Result<Vec<_>>>()?;
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        if let Some(pair) = routes.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(GatewayError::Config(format!(
                "two routes for prefix {:?}",
                pair[0].prefix
            )));
        }
        Ok(RouteTable(routes))
    }

    /// The global limits: the file's, else the defaults. A `[rate_limit]`
    /// table without `per_ip` (or `per_user`) turns that limit off.
    pub fn rate_limits(&self) -> Result<RateLimits> {
        let Some(spec) = &self.rate_limit else {
            return Ok(RateLimits::default());
        };
        for (name, limit) in [("per_ip", &spec.per_ip), ("per_user", &spec.per_user)] {
            if let Some(limit) = limit {
                validate_limit(limit, &format!("rate_limit.{name}"))?;
            }
        }
        Ok(RateLimits {
            per_ip: spec.per_ip,
            per_user: spec.per_user,
        })
    }
}

fn validate_limit(limit: &Limit, what: &str) -> Result<()> {
    if !(limit.per_second.is_finite() && limit.per_second > 0.0) || limit.burst == 0 {
        return Err(GatewayError::Config(format!(
            "{what}: per_second must be positive and burst at least 1"
        )));
    }
    Ok(())
}

impl RouteSpec {
    fn validate(&self) -> Result<Route> {
        let bad = |why: String| GatewayError::Config(format!("route {:?}: {why}", self.prefix));
        let prefix = &self.prefix;
        if !prefix.starts_with('/')
            || prefix.len() < 2
            || prefix.ends_with('/')
            || prefix.contains("//")
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
        {
            return Err(bad(
                "prefix must be a path like /api/docs (no trailing /, no query)".into(),
            ));
        }
        let covers = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
        if let Some(reserved) = RESERVED
            .iter()
            .find(|r| covers(prefix, r) || covers(r, prefix))
        {
            return Err(bad(format!("prefix overlaps the gateway's own {reserved}")));
        }
        let upstream = Url::parse(&self.upstream).map_err(|e| bad(format!("upstream: {e}")))?;
        if !matches!(upstream.scheme(), "http" | "https") || upstream.host_str().is_none() {
            return Err(bad(
                "upstream must be an http(s)://host[:port][/path] URL".into()
            ));
        }
        if upstream.query().is_some() || upstream.fragment().is_some() {
            return Err(bad("upstream must not have a query or fragment".into()));
        }
        if self.audience.is_empty() || self.audience.contains(char::is_whitespace) {
            return Err(bad("audience must be a non-empty word".into()));
        }
        let timeout = match &self.timeout {
            Some(text) => humantime::parse_duration(text)
                .map_err(|e| bad(format!("timeout {text:?}: {e}")))?,
            None => Duration::from_secs(30),
        };
        if timeout.is_zero() {
            return Err(bad("timeout must be positive".into()));
        }
        if let Some(limit) = &self.rate_limit {
            validate_limit(limit, &format!("route {prefix:?} rate_limit"))?;
        }
        Ok(Route {
            prefix: prefix.clone(),
            origin: upstream.origin().ascii_serialization(),
            base_path: upstream.path().trim_end_matches('/').to_owned(),
            audience: self.audience.clone(),
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            strip_prefix: self.strip_prefix,
            timeout,
            rate_limit: self.rate_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> Result<RouteTable> {
        GatewayFile::parse(toml)?.route_table()
    }

    /// Every path the gateway's router answers lies under a reserved
    /// prefix: a route could otherwise take it, and the routed requests
    /// are answered before the router (`http/mod.rs`, `Routed`).
    #[test]
    fn every_path_of_the_gateways_own_is_reserved() {
        let router = include_str!("http/mod.rs");
        let own: Vec<&str> = router
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|literal| literal.starts_with('/') && !literal.contains(' '))
            .collect();
        assert!(own.len() > 20, "the router's paths are found: {own:?}");
        for path in own.into_iter().filter(|path| *path != "/") {
            let covered = RESERVED
                .iter()
                .any(|r| path == *r || path.starts_with(&format!("{r}/")));
            assert!(
                covered,
                "{path} is answered by the gateway but not reserved"
            );
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("routes.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let file = GatewayFile::parse(&example).unwrap();
        let trusted = file.trusted_proxies().unwrap();
        assert!(trusted.contains([127, 0, 0, 1].into()) && trusted.contains([10, 1, 2, 3].into()));
        assert!(!trusted.contains([192, 168, 0, 1].into()));
        let routes = file.route_table().unwrap();
        let route = routes.find("/api/docs/a").unwrap();
        assert_eq!(route.timeout, Duration::from_secs(30));
        assert_eq!(route.upstream_path("/api/docs/a?x=1"), "/a?x=1");
        assert_eq!(file.rate_limits().unwrap().per_user.unwrap().burst, 40);
    }

    #[test]
    fn longest_prefix_wins_and_prefixes_match_whole_segments() {
        let routes = table(
            r#"
            [[routes]]
            prefix = "/api/a"
            upstream = "http://127.0.0.1:1/base/"
            audience = "a"
            [[routes]]
            prefix = "/api/a/b"
            upstream = "http://127.0.0.1:2"
            audience = "b"
            strip_prefix = true
            "#,
        )
        .unwrap();
        assert_eq!(routes.find("/api/a/b/c").unwrap().audience, "b");
        assert_eq!(routes.find("/api/a/bc").unwrap().audience, "a");
        assert_eq!(routes.find("/api/a").unwrap().audience, "a");
        assert!(routes.find("/api/ab").is_none());
        let a = routes.find("/api/a/x").unwrap();
        assert_eq!(a.origin, "http://127.0.0.1:1");
        assert_eq!(a.upstream_path("/api/a/x?q"), "/base/api/a/x?q");
        let stripped = Route {
            strip_prefix: true,
            ..a.clone()
        };
        assert_eq!(stripped.upstream_path("/api/a"), "/base");
        assert_eq!(stripped.upstream_path("/api/a?q"), "/base?q");
        assert_eq!(stripped.upstream_path("/api/a/x"), "/base/x");
        let b = routes.find("/api/a/b").unwrap();
        assert_eq!(b.upstream_path("/api/a/b"), "/");
        assert_eq!(b.upstream_path("/api/a/b?q=1"), "/?q=1");
    }

    #[test]
    fn mistakes_are_clear_errors() {
        let route = |extra: &str| {
            format!("[[routes]]\nupstream = \"http://127.0.0.1:1\"\naudience = \"a\"\n{extra}\n")
        };
        for (bad, expected) in [
            (
                route("prefix = \"/x\"\ncolour = 1"),
                "unknown field `colour`",
            ),
            (route("prefix = \"x\""), "prefix must be a path"),
            (route("prefix = \"/x/\""), "prefix must be a path"),
            (
                route("prefix = \"/login\""),
                "overlaps the gateway's own /login",
            ),
            (
                route("prefix = \"/api\""),
                "overlaps the gateway's own /api/me",
            ),
            (
                route("prefix = \"/x\"\ntimeout = \"soon\""),
                "timeout \"soon\"",
            ),
            (
                route("prefix = \"/x\"\nrate_limit = { per_second = 0.0, burst = 1 }"),
                "per_second must be positive",
            ),
            (
                format!("{}{}", route("prefix = \"/x\""), route("prefix = \"/x\"")),
                "two routes",
            ),
            (
                "[[routes]]\nprefix = \"/x\"\nupstream = \"ftp://h\"\naudience = \"a\"".into(),
                "must be an http(s)://",
            ),
        ] {
            let error = table(&bad).unwrap_err().to_string();
            assert!(error.contains(expected), "{bad}\n→ {error}");
        }
    }
}
