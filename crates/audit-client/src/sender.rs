//! One batch, one `POST /v1/events`: what the answer means for the batch,
//! and how long to wait before trying again.

use std::sync::Arc;
use std::time::Duration;

use echo_crypto::secret::random_bytes;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;

use echo_edge::TokenSource;

/// What became of one attempt to deliver a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The service holds every event of the batch (some perhaps from an
    /// earlier attempt whose answer was lost: `duplicates`).
    Delivered { stored: u64, duplicates: u64 },
    /// Worth retrying later: the service is down or slow, or answered 5xx,
    /// or no token could be had, or a token was refused twice.
    /// `misconfigured` marks answers (403, 404) that retrying will not fix
    /// until an operator does, which are logged as errors rather than warnings.
    Transient { reason: String, misconfigured: bool },
    /// The service refused the batch itself (400, 413): resent as it is, it
    /// would never be accepted and would block everything behind it, so
    /// [`crate::split`] halves it instead.
    Poison { status: u16, reason: String },
}

/// Posts batches to the audit service.
pub struct Sender {
    http: reqwest::Client,
    url: String,
    token: Arc<dyn TokenSource>,
}

impl Sender {
    /// `endpoint` is the service's base URL, reached with `http` (whose
    /// timeout makes a slow request a transient failure).
    pub fn new(endpoint: &str, http: &reqwest::Client, token: Arc<dyn TokenSource>) -> Self {
        Self {
            http: http.clone(),
            url: format!("{}/v1/events", endpoint.trim_end_matches('/')),
            token,
        }
    }

    /// Sends `body` (a JSON array of events). On 401 the token source is
    /// told the token was refused and the batch goes once more, at once,
    /// with a fresh token: an expired cached token should cost one round
    /// trip, not a backoff.
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let token = match self.token.token().await {
            Ok(token) => token,
            Err(e) => return transient(format!("no token for the audit service: {e}")),
        };
        match self.post(&token, body.clone()).await {
            Attempt::Done(outcome) => outcome,
            Attempt::Unauthorized(reason) => {
                tracing::info!(%reason, "audit service refused the token; fetching a fresh one");
                self.token.invalidate(&token).await;
                let fresh = match self.token.token().await {
                    Ok(token) => token,
                    Err(e) => return transient(format!("no token for the audit service: {e}")),
                };
                match self.post(&fresh, body).await {
                    Attempt::Done(outcome) => outcome,
                    Attempt::Unauthorized(reason) => {
                        transient(format!("audit service refused a fresh token: {reason}"))
                    }
                }
            }
        }
    }

    async fn post(&self, token: &str, body: Vec<u8>) -> Attempt {
        let response = match self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => return Attempt::Done(transient(format!("{}: {e}", self.url))),
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        classify(status, &text)
    }
}

enum Attempt {
    Done(Outcome),
    Unauthorized(String),
}

fn transient(reason: String) -> Outcome {
    Outcome::Transient {
        reason,
        misconfigured: false,
    }
}

/// The service's `{"error": …}`, or the start of whatever else it said.
fn error_text(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

fn classify(status: StatusCode, body: &str) -> Attempt {
    if status.is_success() {
        let answer: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        return Attempt::Done(Outcome::Delivered {
            stored: answer["stored"].as_u64().unwrap_or(0),
            duplicates: answer["duplicates"].as_u64().unwrap_or(0),
        });
    }
    let reason = format!("{status}: {}", error_text(body));
    Attempt::Done(match status {
        StatusCode::UNAUTHORIZED => return Attempt::Unauthorized(reason),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Outcome::Poison {
            status: status.as_u16(),
            reason,
        },
        StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            Outcome::Transient {
                reason,
                misconfigured: true,
            }
        }
        _ => transient(reason),
    })
}

/// Exponential backoff with full jitter: the n-th consecutive failure waits
/// a uniformly random time in `[0, min(cap, 100 ms × 2ⁿ)]`. The jitter
/// spreads the retries of many services that lost the audit service at the
/// same moment, so they do not all return at once when it comes back.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    failures: u32,
}

/// The first retry's ceiling.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Self { cap, failures: 0 }
    }

    /// The ceiling of the wait after `failures` consecutive failures (≥ 1).
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(31);
        BACKOFF_BASE.saturating_mul(1 << exponent).min(self.cap)
    }

    /// Counts a failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        jitter(
            self.ceiling(self.failures),
            u64::from_le_bytes(random_bytes()),
        )
    }

    /// After a success the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// A point in `[0, ceiling]` chosen by `random` (uniform for a uniform
/// `random`, to the nanosecond).
pub fn jitter(ceiling: Duration, random: u64) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(random % nanos.saturating_add(1).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_100ms_up_to_the_cap() {
        let b = Backoff::new(Duration::from_secs(30));
        let ms: Vec<u128> = (1..=12).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(
            ms,
            vec![
                100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000
            ]
        );
        // No overflow however long the outage.
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(30));
        assert_eq!(
            Backoff::new(Duration::from_millis(50)).ceiling(1),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn delays_stay_within_bounds_and_reset() {
        let mut b = Backoff::new(Duration::from_secs(2));
        for n in 1..=40 {
            let delay = b.next_delay();
            assert!(delay <= b.ceiling(n), "{n}: {delay:?}");
            assert!(delay <= Duration::from_secs(2));
        }
        assert_eq!(b.failures(), 40);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert!(b.next_delay() <= BACKOFF_BASE);
    }

    #[test]
    fn jitter_covers_the_whole_range() {
        let ceiling = Duration::from_millis(100);
        assert_eq!(jitter(ceiling, 0), Duration::ZERO);
        assert_eq!(jitter(ceiling, 100_000_000), ceiling);
        assert_eq!(jitter(ceiling, 100_000_001), Duration::ZERO);
        assert!(jitter(ceiling, u64::MAX) <= ceiling);
        assert_eq!(jitter(Duration::ZERO, 12345), Duration::ZERO);
        // Full jitter: over many draws both halves of the range are used.
        let mut b = Backoff::new(Duration::from_millis(100));
        let draws: Vec<Duration> = (0..200)
            .map(|_| {
                b.reset();
                b.next_delay()
            })
            .collect();
        assert!(draws.iter().any(|d| *d < Duration::from_millis(50)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(50)));
    }

    #[test]
    fn answers_are_classified() {
        let outcome =
            |status: u16, body: &str| match classify(StatusCode::from_u16(status).unwrap(), body) {
                Attempt::Done(o) => o,
                Attempt::Unauthorized(r) => Outcome::Transient {
                    reason: format!("401 path: {r}"),
                    misconfigured: false,
                },
            };
        assert_eq!(
            outcome(200, r#"{"stored":3,"duplicates":2,"size":9}"#),
            Outcome::Delivered {
                stored: 3,
                duplicates: 2
            }
        );
        assert!(matches!(
            outcome(400, r#"{"error":"event 0: action: bad"}"#),
            Outcome::Poison { status: 400, reason } if reason.contains("event 0: action: bad")
        ));
        assert!(matches!(
            outcome(413, ""),
            Outcome::Poison { status: 413, .. }
        ));
        assert!(matches!(
            outcome(401, r#"{"error":"expired"}"#),
            Outcome::Transient { reason, .. } if reason.starts_with("401 path") && reason.contains("expired")
        ));
        for status in [403, 404] {
            assert!(matches!(
                outcome(status, "{}"),
                Outcome::Transient {
                    misconfigured: true,
                    ..
                }
            ));
        }
        for status in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(
                outcome(status, "<html>"),
                Outcome::Transient {
                    misconfigured: false,
                    ..
                }
            ));
        }
    }
}
