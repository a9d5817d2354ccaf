//! Service tokens: how a service gets the bearer token it presents to
//! another ([`ServiceTokens`], the OAuth 2.0 client credentials grant), and
//! the [`TokenSource`] a caller of one audience holds.
//!
//! Tokens are cached per audience and scope until [`REFRESH_MARGIN`]
//! before they expire; concurrent callers of one audience and scope share
//! one request to identity (single flight), and a token an upstream
//! refused is dropped so the next caller fetches a fresh one.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use echo_core::sync::lock;
use echo_tls::ClientTls;
use serde::Deserialize;

/// How long before its expiry a cached token is replaced, so a token never
/// expires between being read from the cache and being checked by the
/// service (clock skew and request time included).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// How long a token is cached when the token endpoint does not say
/// (`expires_in` is only recommended by RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(120);
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Supplies the bearer tokens for calls to one service.
///
/// Errors are plain strings because callers only log them and retry
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

/// A confidential client's tokens from identity's token endpoint (RFC 6749
/// §4.4, `client_secret_basic`), for any audience and scope it is
/// registered for.
pub struct ServiceTokens {
    http: reqwest::Client,
    token_endpoint: String,
    client_id: String,
    client_secret: String,
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

/// One audience and scope's cached token; its lock is the single flight.
#[derive(Default)]
struct Slot(tokio::sync::Mutex<Option<Cached>>);

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

impl ServiceTokens {
    /// Client `client_id` of the identity at `issuer`.
    /// Client `client_id` of the identity at `issuer`, reached with `tls`.
    pub fn new(issuer: &str, client_id: &str, client_secret: &str, tls: &ClientTls) -> Self {
        Self {
            http: tls.http_client(TOKEN_REQUEST_TIMEOUT),
            token_endpoint: format!("{}/token", issuer.trim_end_matches('/')),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    fn slot(&self, audience: &str, scope: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry((audience.to_owned(), scope.to_owned()))
            .or_default()
            .clone()
    }

    /// A token for `audience` with `scope` (empty: the client's registered
    /// scopes), cached.
    pub async fn token(&self, audience: &str, scope: &str) -> Result<String, String> {
        let slot = self.slot(audience, scope);
        let mut cached = slot.0.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.fetch(audience, scope).await?;
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + refresh_after(lifetime),
        });
        Ok(token)
    }

    /// Drops the cached token for `audience` and `scope` if it is
    /// `rejected`.
    pub async fn invalidate(&self, audience: &str, scope: &str, rejected: &str) {
        let slot = self.slot(audience, scope);
        let mut cached = slot.0.lock().await;
        if cached.as_ref().is_some_and(|c| c.token == rejected) {
            *cached = None;
        }
    }

    /// The [`TokenSource`] of calls to `audience` with `scope`.
    pub fn source(self: &Arc<Self>, audience: &str, scope: &str) -> Arc<dyn TokenSource> {
        Arc::new(BoundTokens {
            tokens: self.clone(),
            audience: audience.to_owned(),
            scope: scope.to_owned(),
        })
    }

    async fn fetch(&self, audience: &str, scope: &str) -> Result<(String, Duration), String> {
        let mut form = vec![("grant_type", "client_credentials"), ("audience", audience)];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        // RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
        let encode =
            |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let response = self
            .http
            .post(&self.token_endpoint)
            .headers(crate::trace::headers())
            .basic_auth(encode(&self.client_id), Some(encode(&self.client_secret)))
            .form(&form)
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

/// Never prints the secret or a cached token.
impl fmt::Debug for ServiceTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTokens")
            .field("token_endpoint", &self.token_endpoint)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// [`ServiceTokens`] for one audience and scope.
struct BoundTokens {
    tokens: Arc<ServiceTokens>,
    audience: String,
    scope: String,
}

#[async_trait]
impl TokenSource for BoundTokens {
    async fn token(&self) -> Result<String, String> {
        self.tokens.token(&self.audience, &self.scope).await
    }

    async fn invalidate(&self, rejected: &str) {
        self.tokens
            .invalidate(&self.audience, &self.scope, rejected)
            .await;
    }
}

/// When to fetch again: [`REFRESH_MARGIN`] before expiry, or half-way
/// through a lifetime too short for the margin (so a short-lived token is
/// still reused rather than fetched for every call).
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime
        .checked_sub(REFRESH_MARGIN)
        .filter(|d| *d >= lifetime / 2)
        .unwrap_or(lifetime / 2)
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
        let tokens = ServiceTokens::new("http://id", "svc", "s3cret-value", &ClientTls::default());
        let shown = format!("{tokens:?}");
        assert!(shown.contains("svc") && !shown.contains("s3cret-value"));
        assert!(shown.contains("http://id/token"));
    }

    /// One token endpoint call per audience and scope, however many ask at
    /// once; another audience is another token.
    #[tokio::test]
    async fn concurrent_callers_share_one_fetch_per_audience_and_scope() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let counted = counted.clone();
                async move {
                    let n = counted.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let audience = body
                        .split('&')
                        .find_map(|p| p.strip_prefix("audience="))
                        .unwrap_or_default()
                        .to_owned();
                    axum::Json(serde_json::json!({
                        "access_token": format!("{audience}-{n}"), "expires_in": 300
                    }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let tokens = Arc::new(ServiceTokens::new(
            &issuer,
            "svc",
            "secret",
            &ClientTls::default(),
        ));
        let docs = tokens.source("docs", "");
        let asks: Vec<_> = (0..20)
            .map(|_| {
                let docs = docs.clone();
                tokio::spawn(async move { docs.token().await.unwrap() })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap().starts_with("docs-"));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "single flight");
        let parser = tokens.token("parser", "").await.unwrap();
        assert!(parser.starts_with("parser-"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let cached = docs.token().await.unwrap();
        docs.invalidate(&cached).await;
        assert_ne!(
            docs.token().await.unwrap(),
            cached,
            "a refused token is fetched anew"
        );
    }
}
