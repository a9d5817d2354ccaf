//! Where a signing key is in its life, derived from its stored times and
//! those of the other keys of its scope. No I/O: every function takes the
//! keys and the time.
//!
//! A key's *scope* is its algorithm and audience (`None`: general). Within
//! a scope keys follow each other in order of activation:
//!
//! ```text
//!  created ──(publish delay)──▶ activates ──▶ successor activates ──(retention)──▶ unpublished
//!  │ next: published,          │ active:     │ retired: published,                │ expired
//!  │ signs nothing             │ signs       │ signs nothing                      │
//! ```
//!
//! A key retires when the next key of its scope activates (or earlier, when
//! an operator retires it), so rotation needs no step at activation time
//! and every server sharing the database switches at the same instant. A
//! retired key stays in the JWKS (RFC 7517 §5) for `retention` seconds —
//! the longest lifetime of a token it may have signed — so every token it
//! signed verifies until it expires. A revoked key leaves at once.

use echo_identity_store::StoredKey;

/// A key's state at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published ahead of its activation; signs nothing yet.
    Next,
    /// Signs the tokens of its scope.
    Active,
    /// Signs no more; published until the last token it signed expired.
    Retired,
    /// Retired long enough that no token it signed is valid: unpublished.
    Expired,
    /// Unpublished at once and never used again.
    Revoked,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retired => "retired",
            KeyState::Expired => "expired",
            KeyState::Revoked => "revoked",
        }
    }

    /// Whether the JWKS carries the key in this state.
    pub fn published(self) -> bool {
        matches!(self, KeyState::Next | KeyState::Active | KeyState::Retired)
    }
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn same_scope(a: &StoredKey, b: &StoredKey) -> bool {
    a.alg == b.alg && a.audience == b.audience
}

/// The order in which the keys of a scope follow each other.
fn order(k: &StoredKey) -> (i64, i64, &str) {
    (k.activates_at, k.created_at, &k.kid)
}

/// Whether the key gets to sign at all (not revoked, not retired before it
/// activated), and so can take over from the keys before it.
fn takes_over(k: &StoredKey) -> bool {
    k.revoked_at.is_none() && k.retired_at.is_none_or(|r| r > k.activates_at)
}

/// When `key` stops signing: retired by an operator, or superseded by the
/// next key of its scope, whichever comes first.
pub fn retires_at(key: &StoredKey, keys: &[StoredKey]) -> Option<i64> {
    let superseded = keys
        .iter()
        .filter(|k| same_scope(k, key) && order(k) > order(key) && takes_over(k))
        .map(|k| k.activates_at)
        .min();
    match (key.retired_at, superseded) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// When `key` leaves the JWKS: when revoked, else `retention` after it
/// retires.
pub fn unpublished_at(key: &StoredKey, keys: &[StoredKey], retention: i64) -> Option<i64> {
    key.revoked_at
        .or_else(|| retires_at(key, keys).map(|r| r + retention))
}

/// The state of `key` at `now`.
pub fn state(key: &StoredKey, keys: &[StoredKey], now: i64, retention: i64) -> KeyState {
    if key.revoked_at.is_some() {
        return KeyState::Revoked;
    }
    match retires_at(key, keys) {
        Some(retired) if retired + retention <= now => KeyState::Expired,
        Some(retired) if retired <= now => KeyState::Retired,
        _ if now < key.activates_at => KeyState::Next,
        _ => KeyState::Active,
    }
}

/// The key that signs a token for `audience` with `alg` at `now`: the
/// active key scoped to that audience, else the active general key.
pub fn signer<'a>(
    keys: &'a [StoredKey],
    alg: &str,
    audience: Option<&str>,
    now: i64,
) -> Option<&'a StoredKey> {
    let active_in = |scope: Option<&str>| {
        keys.iter()
            .filter(|k| k.alg == alg && k.audience.as_deref() == scope)
            .filter(|k| state(k, keys, now, 0) == KeyState::Active)
            .max_by(|a, b| order(a).cmp(&order(b)))
    };
    audience
        .and_then(|aud| active_in(Some(aud)))
        .or_else(|| active_in(None))
}

/// The active keys due for automatic rotation at `now`: those that will
/// have signed for `interval` seconds once a successor created now has been
/// published for `publish_delay`, and have no successor yet.
pub fn due_for_rotation(
    keys: &[StoredKey],
    now: i64,
    interval: i64,
    publish_delay: i64,
) -> Vec<&StoredKey> {
    keys.iter()
        .filter(|k| state(k, keys, now, 0) == KeyState::Active)
        .filter(|k| k.activates_at + interval - publish_delay <= now)
        .filter(|k| {
            !keys
                .iter()
                .any(|n| same_scope(n, k) && state(n, keys, now, 0) == KeyState::Next)
        })
        .collect()
}

/// What revoking `key` at `now` must do so that its scope keeps a signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// Nothing: the key does not sign, or its audience falls back to the
    /// general key.
    None,
    /// Bring this already published next key's activation forward to now.
    Activate(String),
    /// Create a new general key, active at once.
    Create,
}

/// Revoking the active general key of an algorithm would leave its tokens
/// without a signer: the next key takes over at once if there is one (it is
/// published already, so no verifier meets an unknown `kid`), else a new
/// key does.
pub fn takeover_on_revoke(key: &StoredKey, keys: &[StoredKey], now: i64) -> Takeover {
    if key.audience.is_some() || state(key, keys, now, 0) != KeyState::Active {
        return Takeover::None;
    }
    keys.iter()
        .filter(|k| same_scope(k, key) && state(k, keys, now, 0) == KeyState::Next)
        .min_by(|a, b| order(a).cmp(&order(b)))
        .map_or(Takeover::Create, |next| {
            Takeover::Activate(next.kid.clone())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETENTION: i64 = 3_600;

    fn key(kid: &str, activates_at: i64) -> StoredKey {
        StoredKey {
            kid: kid.to_owned(),
            alg: "EdDSA".into(),
            sealed_private: vec![],
            public_jwk: "{}".into(),
            created_at: activates_at - 600,
            audience: None,
            activates_at,
            retired_at: None,
            revoked_at: None,
        }
    }

    fn scoped(kid: &str, activates_at: i64, audience: &str) -> StoredKey {
        StoredKey {
            audience: Some(audience.to_owned()),
            ..key(kid, activates_at)
        }
    }

    fn states(keys: &[StoredKey], now: i64) -> Vec<KeyState> {
        keys.iter()
            .map(|k| state(k, keys, now, RETENTION))
            .collect()
    }

    use KeyState::*;

    #[test]
    fn a_successor_is_published_first_then_retires_its_predecessor() {
        let keys = [key("old", 1_000), key("new", 10_000)];
        assert_eq!(states(&keys, 9_999), [Active, Next]);
        assert_eq!(signer(&keys, "EdDSA", None, 9_999).unwrap().kid, "old");
        assert_eq!(states(&keys, 10_000), [Retired, Active]);
        assert_eq!(signer(&keys, "EdDSA", None, 10_000).unwrap().kid, "new");
        // Published until the last token it signed has expired.
        assert_eq!(states(&keys, 10_000 + RETENTION - 1), [Retired, Active]);
        assert_eq!(states(&keys, 10_000 + RETENTION), [Expired, Active]);
        assert_eq!(retires_at(&keys[0], &keys), Some(10_000));
        assert_eq!(
            unpublished_at(&keys[0], &keys, RETENTION),
            Some(10_000 + RETENTION)
        );
        assert_eq!(retires_at(&keys[1], &keys), None);
    }

    #[test]
    fn an_operator_retirement_ends_signing_at_once() {
        let mut keys = [key("k", 1_000)];
        keys[0].retired_at = Some(2_000);
        assert_eq!(states(&keys, 1_999), [Active]);
        assert_eq!(states(&keys, 2_000), [Retired]);
        assert_eq!(signer(&keys, "EdDSA", None, 2_000), None);
    }

    #[test]
    fn a_successor_retired_before_it_activated_takes_nothing_over() {
        let mut keys = [key("old", 1_000), key("new", 10_000)];
        keys[1].retired_at = Some(5_000);
        assert_eq!(states(&keys, 20_000), [Active, Expired]);
        assert_eq!(signer(&keys, "EdDSA", None, 20_000).unwrap().kid, "old");
    }

    #[test]
    fn a_revoked_key_leaves_at_once_and_never_signs() {
        let mut keys = [key("k", 1_000)];
        keys[0].revoked_at = Some(2_000);
        assert_eq!(states(&keys, 1_500), [Revoked]);
        assert!(!Revoked.published());
        assert_eq!(signer(&keys, "EdDSA", None, 2_000), None);
        assert_eq!(unpublished_at(&keys[0], &keys, RETENTION), Some(2_000));
        // A revoked successor does not retire its predecessor.
        let mut keys = [key("old", 1_000), key("new", 2_000)];
        keys[1].revoked_at = Some(2_500);
        assert_eq!(states(&keys, 3_000), [Active, Revoked]);
    }

    #[test]
    fn an_audience_key_signs_its_audience_only_and_falls_back_when_gone() {
        let mut keys = [key("general", 1_000), scoped("parser", 1_000, "parser")];
        let kid = |keys: &[StoredKey], aud| signer(keys, "EdDSA", aud, 2_000).unwrap().kid.clone();
        assert_eq!(kid(&keys, Some("parser")), "parser");
        assert_eq!(kid(&keys, Some("audit")), "general");
        assert_eq!(kid(&keys, None), "general");
        assert_eq!(signer(&keys, "RS256", Some("parser"), 2_000), None);
        // Scopes are separate: the audience key does not retire the general one.
        assert_eq!(states(&keys, 2_000), [Active, Active]);
        keys[1].revoked_at = Some(1_500);
        assert_eq!(kid(&keys, Some("parser")), "general");
    }

    #[test]
    fn rotation_is_due_once_per_interval_and_not_while_a_successor_waits() {
        let keys = [key("k", 1_000)];
        let due = |keys: &[StoredKey], now| {
            due_for_rotation(keys, now, 10_000, 600)
                .iter()
                .map(|k| k.kid.clone())
                .collect::<Vec<_>>()
        };
        assert!(due(&keys, 10_399).is_empty());
        assert_eq!(due(&keys, 10_400), ["k"]);
        let keys = [key("k", 1_000), key("next", 11_000)];
        assert!(due(&keys, 10_500).is_empty(), "a successor is waiting");
        assert!(due(&keys, 11_000).is_empty(), "the successor just started");
        assert_eq!(due(&keys, 20_400), ["next"]);
    }

    #[test]
    fn revoking_the_signer_hands_over_to_the_next_key_or_a_new_one() {
        let keys = [key("old", 1_000), key("next", 10_000), key("later", 20_000)];
        assert_eq!(
            takeover_on_revoke(&keys[0], &keys, 5_000),
            Takeover::Activate("next".into())
        );
        assert_eq!(takeover_on_revoke(&keys[1], &keys, 5_000), Takeover::None);
        assert_eq!(
            takeover_on_revoke(&keys[0], &keys[..1], 5_000),
            Takeover::Create
        );
        let aud = [scoped("a", 1_000, "parser")];
        assert_eq!(takeover_on_revoke(&aud[0], &aud, 5_000), Takeover::None);
    }

    #[test]
    fn keys_of_one_instant_follow_each_other_by_creation_then_kid() {
        let mut a = key("a", 1_000);
        let mut b = key("b", 1_000);
        a.created_at = 10;
        b.created_at = 5;
        let keys = [a, b];
        assert_eq!(signer(&keys, "EdDSA", None, 1_000).unwrap().kid, "a");
        assert_eq!(states(&keys, 1_000), [Active, Retired]);
    }
}
