//! Where the writer gets the bearer token the audit service asks for.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;

/// Supplies access tokens whose `aud` is the audit service's audience and
/// whose `sub` is this service (the service stores events under it).
///
/// Errors are plain strings because the writer only logs them and retries
/// later: a token that cannot be had now is a transient failure.
#[async_trait]
pub trait TokenSource: Send + Sync + 'static {
    /// A token to send now; a caching source returns its cached token.
    async fn token(&self) -> Result<String, String>;

    /// Called when the service answered 401 to `rejected`, just before
    /// [`token`](Self::token) is asked again: a caching source drops that
    /// token so the next call fetches a fresh one. The default does nothing,
    /// for sources that fetch on every call.
    async fn invalidate(&self, rejected: &str) {
        let _ = rejected;
    }
}

/// How long before its expiry a cached token is replaced, so a token never
/// expires between being read from the cache and being checked by the
/// service (clock skew and request time included).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long a token is cached when the token endpoint does not say
/// (`expires_in` is only recommended by RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(120);
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The OAuth 2.0 client credentials grant (RFC 6749 §4.4) at identity's
/// token endpoint, authenticated with `client_secret_post`, asking for
/// `audience`. The token is cached until [`REFRESH_MARGIN`] before it
/// expires (from `expires_in`); concurrent callers share one request.
pub struct ClientCredentials {
    http: reqwest::Client,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    audience: String,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// The parts of RFC 6749 §5.1 and §5.2 answers used here.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<i64>,
    error: Option<String>,
    error_description: Option<String>,
}

impl ClientCredentials {
    pub fn new(
        token_endpoint: String,
        client_id: String,
        client_secret: String,
        audience: String,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            token_endpoint,
            client_id,
            client_secret,
            audience,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<(String, Duration), String> {
        let response = self
            .http
            .post(&self.token_endpoint)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
                ("audience", &self.audience),
            ])
            .send()
            .await
            .map_err(|e| format!("token endpoint unreachable: {e}"))?;
        let status = response.status();
        let answer: TokenAnswer = response
            .json()
            .await
            .map_err(|e| format!("token endpoint answered {status} with no token JSON: {e}"))?;
        match answer.access_token {
            Some(token) if status.is_success() => {
                let lifetime = answer
                    .expires_in
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(DEFAULT_LIFETIME, Duration::from_secs);
                Ok((token, lifetime))
            }
            // The OAuth error code and description, never our credentials.
            _ => Err(format!(
                "token endpoint answered {status}: {} {}",
                answer.error.as_deref().unwrap_or("no access_token"),
                answer.error_description.as_deref().unwrap_or_default()
            )
            .trim_end()
            .to_owned()),
        }
    }
}

/// When to fetch again: [`REFRESH_MARGIN`] before expiry, or half-way
/// through a lifetime too short for the margin (so a short-lived token is
/// still reused rather than fetched for every batch).
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime
        .checked_sub(REFRESH_MARGIN)
        .filter(|d| *d >= lifetime / 2)
        .unwrap_or(lifetime / 2)
}

#[async_trait]
impl TokenSource for ClientCredentials {
    async fn token(&self) -> Result<String, String> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + refresh_after(lifetime),
        });
        Ok(token)
    }

    async fn invalidate(&self, rejected: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == rejected) {
            *cached = None;
        }
    }
}

/// Never prints the secret or the cached token.
impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_comes_a_minute_early_or_half_way() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(s(3600)), s(3540));
        assert_eq!(refresh_after(s(300)), s(240));
        assert_eq!(refresh_after(s(120)), s(60));
        assert_eq!(refresh_after(s(90)), s(45));
        assert_eq!(refresh_after(s(30)), s(15));
        assert_eq!(refresh_after(s(0)), s(0));
    }

    #[test]
    fn debug_hides_the_secret() {
        let c = ClientCredentials::new(
            "http://id/token".into(),
            "svc".into(),
            "s3cret-value".into(),
            "audit".into(),
        );
        let shown = format!("{c:?}");
        assert!(shown.contains("svc") && !shown.contains("s3cret-value"));
    }
}
