use std::fmt;

use echo_edge::TrustedProxies;
use echo_tls::ClientTls;

use url::Url;

use crate::routes::{GatewayFile, RateLimits, RouteTable};
use crate::{GatewayError, Result};

/// The gateway's client secret at identity. Never printed.
#[derive(Clone)]
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into().trim().to_owned())
    }

    /// The secret itself, to send to identity. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(..)")
    }
}

/// How the gateway behaves. Times are in seconds.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The gateway's external base URL (scheme, host, port), without a
    /// trailing slash: redirect URIs and the `Origin` check are built on it.
    pub public_url: String,
    /// Identity's issuer URL, without a trailing slash.
    pub issuer: String,
    /// The gateway's client id at identity; also the `aud` of the ID tokens
    /// it accepts.
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// The `aud` bearer tokens for `/api/...` must carry.
    pub audience: String,
    /// Scopes asked for at login; `offline_access` brings a refresh token.
    pub scopes: String,
    /// A session unused this long ends.
    pub session_idle_ttl: i64,
    /// No session outlives its login by more than this.
    pub session_absolute_ttl: i64,
    /// How long a started login may take (from `/login` to `/callback`).
    pub login_ttl: i64,
    /// An access token this close to its expiry is refreshed before use.
    pub refresh_margin: i64,
    /// Seconds between two purges of ended sessions and stale logins; 0
    /// runs none.
    pub purge_interval: u64,
    /// Path prefix → upstream (from the configuration file).
    pub routes: RouteTable,
    pub rate_limits: RateLimits,
    /// Peers whose `X-Forwarded-For` is believed (addresses or CIDR
    /// blocks); none by default.
    pub trusted_proxies: TrustedProxies,
    /// The audit service the logs page, the dashboard and the home page's
    /// activity read from (`GET /v1/events`); `None` hides them.
    pub audit_url: Option<String>,
    /// The audit service's audience.
    pub audit_audience: String,
    /// Whom the gateway trusts when it calls identity, the audit service
    /// and its routes' upstreams, and the certificate it presents.
    pub tls: ClientTls,
}

impl GatewayConfig {
    /// Defaults for a gateway at `public_url` in front of `issuer`.
    pub fn new(public_url: &str, issuer: &str, client_secret: ClientSecret) -> Result<Self> {
        let public = Url::parse(public_url)
            .map_err(|e| GatewayError::Config(format!("public URL {public_url:?}: {e}")))?;
        if !matches!(public.scheme(), "http" | "https") || public.host_str().is_none() {
            return Err(GatewayError::Config(format!(
                "public URL {public_url:?} must be http(s)://host[:port]"
            )));
        }
        if public.path() != "/" || public.query().is_some() {
            return Err(GatewayError::Config(format!(
                "public URL {public_url:?} must not have a path or query"
            )));
        }
        Url::parse(issuer).map_err(|e| GatewayError::Config(format!("issuer {issuer:?}: {e}")))?;
        Ok(Self {
            public_url: public.origin().ascii_serialization(),
            issuer: issuer.trim_end_matches('/').to_owned(),
            client_id: "gateway".into(),
            client_secret,
            audience: "gateway".into(),
            scopes: "openid profile offline_access".into(),
            session_idle_ttl: 30 * 60,
            session_absolute_ttl: 12 * 60 * 60,
            login_ttl: 10 * 60,
            refresh_margin: 30,
            purge_interval: 5 * 60,
            routes: RouteTable::default(),
            rate_limits: RateLimits::default(),
            trusted_proxies: TrustedProxies::default(),
            audit_url: None,
            audit_audience: "audit".into(),
            tls: ClientTls::default(),
        })
    }

    /// Takes the routes, rate limits and trusted proxies of a validated
    /// configuration file. A route whose audience is one of Echo's own
    /// services (the gateway's, audit's, identity's) is refused unless it
    /// says `allow_internal_audience = true`: a user's exchanged token for
    /// them would otherwise reach whatever upstream the route names.
    pub fn apply_file(&mut self, file: &GatewayFile) -> Result<()> {
        let userinfo = format!("{}/userinfo", self.issuer);
        let internal = [
            self.audience.as_str(),
            self.audit_audience.as_str(),
            self.client_id.as_str(),
            "gateway",
            "audit",
            "identity",
            self.issuer.as_str(),
            userinfo.as_str(),
        ];
        if let Some(spec) = file.routes.iter().find(|spec| {
            !spec.allow_internal_audience && internal.contains(&spec.audience.as_str())
        }) {
            return Err(GatewayError::Config(format!(
                "route {:?}: audience {:?} is one of Echo's own services; \
                 set allow_internal_audience = true if the upstream is meant to get tokens for it",
                spec.prefix, spec.audience
            )));
        }
        self.routes = file.route_table()?;
        self.rate_limits = file.rate_limits()?;
        self.trusted_proxies = file.trusted_proxies()?;
        Ok(())
    }

    /// Served over https: `Secure`, `__Host-` cookies and HSTS.
    pub fn https(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `<public URL><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// Where identity sends the browser back with the code.
    pub fn redirect_uri(&self) -> String {
        self.url("/callback")
    }

    /// Where identity sends the browser after RP-initiated logout.
    pub fn post_logout_redirect_uri(&self) -> String {
        self.url("/signed-out")
    }

    /// `<issuer><path>`: identity's endpoints sit at fixed paths, so the
    /// gateway needs no discovery round trip before it can serve.
    pub fn identity_endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_an_origin() {
        let secret = || ClientSecret::new("s");
        let c = GatewayConfig::new("http://127.0.0.1:8080/", "http://id/", secret()).unwrap();
        assert_eq!(c.public_url, "http://127.0.0.1:8080");
        assert_eq!(c.redirect_uri(), "http://127.0.0.1:8080/callback");
        assert_eq!(c.identity_endpoint("/token"), "http://id/token");
        assert!(!c.https());
        assert!(
            GatewayConfig::new("https://gw.test", "http://id", secret())
                .unwrap()
                .https()
        );
        for bad in [
            "gw.test",
            "ftp://gw.test",
            "http://gw.test/app",
            "http://gw.test/?a=1",
        ] {
            assert!(
                GatewayConfig::new(bad, "http://id", secret()).is_err(),
                "{bad}"
            );
        }
        assert_eq!(format!("{:?}", secret()), "ClientSecret(..)");
    }
}
