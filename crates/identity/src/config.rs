use std::time::Duration;

use echo_crypto::Algorithm;
use echo_crypto::secret::{constant_time_eq, sha256};
use echo_identity_store::LoginCounter;
use echo_verify::VerifierOptions;

use crate::{IdentityError, Result};

/// Longest access-token lifetime allowed (RFC 9068 tokens are bearer
/// tokens; a short life bounds the damage of a leak).
pub const MAX_ACCESS_TOKEN_TTL: i64 = 15 * 60;

/// Longest refresh-token reuse grace allowed: a longer one lets a stolen
/// token ride along with the legitimate client unnoticed.
pub const MAX_REFRESH_GRACE: Duration = Duration::from_secs(60);

/// The scopes of Echo's own services that only services hold: reading
/// and writing the audit log, indexing documents.
pub const SERVICE_SCOPES: [&str; 4] = [
    "audit.read",
    "audit.write",
    "docs.index",
    echo_edge::METRICS_SCOPE,
];

/// Who may open an account themselves (`ECHO_REGISTRATION`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RegistrationPolicy {
    /// Only administrators create accounts; an invited user is activated
    /// by an administrator (`echod user activate --password-stdin`).
    #[default]
    Closed,
    /// Administrators invite people by mail; the invitee chooses a password.
    Invite,
    /// Anyone may sign up at `/register` (from an allowed domain); the
    /// account is active once its address is verified. Invitations too.
    Open,
}

impl RegistrationPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationPolicy::Closed => "closed",
            RegistrationPolicy::Invite => "invite",
            RegistrationPolicy::Open => "open",
        }
    }

    /// Whether invitations go out by mail (with an SMTP server).
    pub fn invites_by_mail(self) -> bool {
        self != RegistrationPolicy::Closed
    }
}

impl std::str::FromStr for RegistrationPolicy {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "closed" => Ok(RegistrationPolicy::Closed),
            "invite" => Ok(RegistrationPolicy::Invite),
            "open" => Ok(RegistrationPolicy::Open),
            other => Err(IdentityError::BadInput(format!(
                "registration {other:?}: expected closed, invite or open"
            ))),
        }
    }
}

/// How the provider behaves. Lifetimes are in seconds.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The issuer URL, without a trailing slash.
    pub issuer: String,
    /// Algorithm of access tokens (ID tokens are always RS256).
    pub access_token_alg: Algorithm,
    pub access_token_ttl: i64,
    pub id_token_ttl: i64,
    pub code_ttl: i64,
    pub sso_session_ttl: i64,
    /// Failed-or-not login attempts allowed per IP per minute.
    pub login_attempts_per_minute: u32,
    /// Failed client authentications (at `/token`, `/revoke` and
    /// `/introspect` together) allowed per IP per minute; past it the IP
    /// gets 429 until the minute ends. Only failures count, so a busy
    /// service is never slowed.
    pub client_auth_failures_per_minute: u32,
    /// Tokens `/verify` may refuse per minute to one client from one
    /// address; past it the pair gets 429 until the minute ends. Only
    /// refusals count, so a busy resource server is never slowed.
    pub verify_refusals_per_minute: u32,
    /// Password-reset requests (`/password/forgot`) allowed per address
    /// per hour, and per client IP per hour; past either, 429 until the
    /// hour ends.
    pub reset_requests_per_address: u32,
    pub reset_requests_per_ip: u32,
    /// A refresh token unused this long expires (idle lifetime).
    pub refresh_token_idle_ttl: i64,
    /// No refresh token of a family outlives the family's start by more
    /// than this (absolute lifetime).
    pub refresh_token_absolute_ttl: i64,
    /// Within this long of a rotation (compared in milliseconds), the same
    /// client authenticating the same way may present the spent refresh
    /// token again (a second tab, a retry after a lost response) and get the
    /// same successor instead of revoking the family. Zero by default
    /// (RFC 9700 §4.14.2: any reuse revokes); at most [`MAX_REFRESH_GRACE`].
    pub refresh_token_grace: Duration,
    /// Seconds between two purges of expired rows; 0 runs none.
    pub purge_interval: u64,
    /// Rows deleted per statement by a purge.
    pub purge_batch: u32,
    /// Per-account guessing protection: progressive delay, then lockout.
    pub lockout: LockoutPolicy,
    /// Every failed password step is answered this long after it arrived
    /// (later only if its work took longer), whatever the account: unknown,
    /// active, delayed, locked, suspended or invited. It must cover the
    /// lockout's settle wait (2 s) and one argon2 check, or a delayed or
    /// locked account answers later than an unknown one (3 s by default;
    /// zero turns the padding off, for tests that do not measure time).
    pub failed_login_time: Duration,
    /// Users with any of these roles must pass a second factor (TOTP); one
    /// who has not set it up enrols during login. Default: `admin`.
    pub mfa_required_roles: Vec<String>,
    /// The gateway's public URL, where the navigation bar of the account
    /// pages leads to the user's other pages and, for admins, the console
    /// (`echo_edge::Nav`); `None`: the bar has the account pages only.
    pub portal_url: Option<String>,
    /// Scopes only services get (client credentials): a user flow asking
    /// for one is refused with `invalid_scope`, even from a client that
    /// registered it for its own service token. Default: the scopes of
    /// Echo's own services, [`SERVICE_SCOPES`].
    pub service_scopes: Vec<String>,
    /// Signing-key rotation: publish delay, schedule, reload interval.
    pub keys: KeyPolicy,
    /// Reverse proxies whose `X-Forwarded-For` names the client; none by
    /// default, so the peer address is the client.
    pub trusted_proxies: echo_edge::TrustedProxies,
    /// Who may open an account (`/register`, invitations by mail).
    pub registration: RegistrationPolicy,
    /// Domains whose addresses may sign up at `/register` (lower case,
    /// compared exactly); empty allows every domain.
    pub registration_domains: Vec<String>,
    /// RFC 7591 dynamic client registration (`/oauth2/register`), open to
    /// holders of this initial access token; `None` (the default) turns
    /// the endpoint off.
    pub client_registration: Option<InitialAccessToken>,
}

impl IdentityConfig {
    pub fn new(issuer: &str) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_owned(),
            // EdDSA: measured on aws-lc-rs, it signs 2x faster than ES256
            // and 30x faster than RS256, and verifies 1.6x faster than ES256
            // (BENCHMARKS.md, "JWS algorithms"). RS256 verifies fastest but
            // cannot sign at the issuance rate a mesh needs.
            access_token_alg: Algorithm::EdDSA,
            access_token_ttl: 10 * 60,
            id_token_ttl: 60 * 60,
            code_ttl: 60,
            sso_session_ttl: 8 * 60 * 60,
            login_attempts_per_minute: 30,
            client_auth_failures_per_minute: 30,
            verify_refusals_per_minute: 300,
            reset_requests_per_address: 3,
            reset_requests_per_ip: 30,
            // Keycloak's and Hydra's defaults: 30 days idle, 90 days at most.
            refresh_token_idle_ttl: 30 * 24 * 60 * 60,
            refresh_token_absolute_ttl: 90 * 24 * 60 * 60,
            refresh_token_grace: Duration::ZERO,
            purge_interval: 5 * 60,
            purge_batch: 500,
            lockout: LockoutPolicy::default(),
            failed_login_time: Duration::from_secs(3),
            mfa_required_roles: vec!["admin".to_owned()],
            portal_url: None,
            service_scopes: SERVICE_SCOPES.map(str::to_owned).to_vec(),
            keys: KeyPolicy::default(),
            trusted_proxies: echo_edge::TrustedProxies::default(),
            registration: RegistrationPolicy::Closed,
            registration_domains: Vec::new(),
            client_registration: None,
        }
    }

    /// Cookies get `Secure` (and the `__Host-` prefix) when served over https.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// The audience under which access tokens may call `/userinfo`.
    pub fn userinfo_audience(&self) -> String {
        format!("{}/userinfo", self.issuer)
    }

    /// How long a retired signing key stays published: the longest
    /// lifetime of a token it signed, plus the verifiers' clock leeway.
    pub fn key_retention(&self) -> i64 {
        self.access_token_ttl.max(self.id_token_ttl) + VerifierOptions::default().leeway
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }
}

/// Where RFC 7591 dynamic client registration is served (`/register` is
/// the users' sign-up).
pub const CLIENT_REGISTRATION_PATH: &str = "/oauth2/register";

/// The initial access token of RFC 7591 §3 that dynamic client
/// registration asks for. Only its SHA-256 is kept, so neither `Debug` nor
/// the configuration's memory shows it, and a presented token is compared
/// digest to digest, in constant time.
#[derive(Clone)]
pub struct InitialAccessToken([u8; 32]);

impl InitialAccessToken {
    /// The shortest token accepted: as long as a generated client secret,
    /// so that guessing it is out of reach.
    pub const MIN_LEN: usize = echo_crypto::secret::MIN_CLIENT_SECRET_LEN;

    pub fn new(token: &str) -> Result<Self> {
        if token.chars().count() < Self::MIN_LEN {
            return Err(IdentityError::BadInput(format!(
                "the client registration token must be at least {} characters",
                Self::MIN_LEN
            )));
        }
        Ok(Self(sha256(token.as_bytes())))
    }

    /// Whether `presented` is the token.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(&sha256(presented.as_bytes()), &self.0)
    }
}

impl std::fmt::Debug for InitialAccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitialAccessToken(<redacted>)")
    }
}

/// The window of the password-reset request limits, in seconds.
pub(crate) const RESET_REQUEST_WINDOW: i64 = 60 * 60;

/// How signing keys rotate. Times are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// How long a new key is published before it signs. It must cover the
    /// time every verifier needs to see it: a server's reload interval plus
    /// a verifier's JWKS refresh bound (`echo-verify` refetches keys older
    /// than 5 min) plus the JWKS response's `max-age` (60 s). Default
    /// 10 min.
    pub publish_delay: i64,
    /// Age at which a key is replaced automatically (its successor created
    /// `publish_delay` earlier); 0 turns automatic rotation off. Default
    /// 30 days.
    pub rotation_interval: i64,
    /// How often a running server reloads its keys from the store (and
    /// rotates those due); 0 never does. Default 10 s.
    pub reload_interval: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            publish_delay: 10 * 60,
            rotation_interval: 30 * 24 * 60 * 60,
            reload_interval: 10,
        }
    }
}

impl KeyPolicy {
    /// Refuses a schedule that cannot work: negative times, or rotating
    /// more often than a key can be published ahead.
    pub fn validate(&self) -> Result<()> {
        if self.publish_delay < 0 || self.rotation_interval < 0 {
            return Err(IdentityError::BadInput(
                "key publish delay and rotation interval cannot be negative".into(),
            ));
        }
        if self.rotation_interval != 0 && self.rotation_interval <= self.publish_delay {
            return Err(IdentityError::BadInput(
                "the key rotation interval must be longer than the publish delay".into(),
            ));
        }
        Ok(())
    }
}

/// When guesses at one account are slowed and stopped. Times in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Consecutive failures allowed without delay (default 5).
    pub free_failures: i64,
    /// Wait after the first delayed failure (default 1 s); it doubles with
    /// every further failure: 1, 2, 4, 8, 16 s with the defaults.
    pub base_delay: i64,
    /// Consecutive failures that lock the account (default 10).
    pub lock_after: i64,
    /// How long a lock lasts (default 15 min). Failures are forgotten once
    /// this long has passed since the last one.
    pub lock_duration: i64,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            free_failures: 5,
            base_delay: 1,
            lock_after: 10,
            lock_duration: 15 * 60,
        }
    }
}

impl LockoutPolicy {
    /// The counter as it stands at `now`: failures are forgotten after a
    /// quiet `lock_duration`.
    pub fn current(&self, counter: LoginCounter, now: i64) -> LoginCounter {
        if counter.failures > 0 && now >= counter.last_failed_at + self.lock_duration {
            LoginCounter::default()
        } else {
            counter
        }
    }

    /// When the next guess may be made after `counter`'s failures.
    pub fn next_attempt_at(&self, counter: LoginCounter) -> i64 {
        let LoginCounter {
            failures,
            last_failed_at,
        } = counter;
        if failures >= self.lock_after {
            last_failed_at + self.lock_duration
        } else if failures >= self.free_failures {
            let doublings = (failures - self.free_failures).min(32) as u32;
            last_failed_at + self.base_delay.saturating_mul(1 << doublings)
        } else {
            last_failed_at
        }
    }

    /// The counter with one more guess reserved at `now`, or the time
    /// before which no guess is allowed.
    pub fn reserve(&self, counter: LoginCounter, now: i64) -> Result<LoginCounter, i64> {
        let counter = self.current(counter, now);
        let allowed_at = self.next_attempt_at(counter);
        if now < allowed_at {
            return Err(allowed_at);
        }
        Ok(LoginCounter {
            failures: counter.failures + 1,
            last_failed_at: now,
        })
    }

    /// Until when the account is locked at `now`, if it is.
    pub fn locked_until(&self, counter: LoginCounter, now: i64) -> Option<i64> {
        let counter = self.current(counter, now);
        (counter.failures >= self.lock_after).then(|| self.next_attempt_at(counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_access_token_is_long_compared_whole_and_never_shown() {
        let secret = "an initial access token of 32+ chars";
        let token = InitialAccessToken::new(secret).unwrap();
        assert!(token.matches(secret));
        assert!(!token.matches(&secret[..secret.len() - 1]));
        assert!(!token.matches(""));
        assert!(!format!("{token:?}").contains("initial"));
        assert!(InitialAccessToken::new("short").is_err());
    }

    #[test]
    fn a_schedule_must_leave_room_to_publish_ahead() {
        assert!(KeyPolicy::default().validate().is_ok());
        let off = KeyPolicy {
            rotation_interval: 0,
            ..KeyPolicy::default()
        };
        assert!(off.validate().is_ok(), "0 turns rotation off");
        for (publish_delay, rotation_interval) in [(600, 600), (600, 60), (-1, 0), (0, -1)] {
            let policy = KeyPolicy {
                publish_delay,
                rotation_interval,
                reload_interval: 10,
            };
            assert!(policy.validate().is_err(), "{policy:?}");
        }
    }
}
