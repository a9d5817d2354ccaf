//! Black-box tests of the shared verifier: each attack from the identity
//! issue performed against it, plus key-set refresh behaviour.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use echo_core::ManualClock;
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_verify::{Expectations, JwksSource, Verifier, VerifierOptions, VerifyError};
use serde_json::{Value, json};

const ISSUER: &str = "http://127.0.0.1:8081";
const NOW: i64 = 1_800_000_000;

/// A JWKS source the test controls: its key set, whether it is reachable,
/// and how often it was asked.
#[derive(Default)]
struct TestSource {
    set: Mutex<JwkSet>,
    down: AtomicBool,
    fetches: AtomicUsize,
}

#[async_trait]
impl JwksSource for TestSource {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(VerifyError::KeysUnavailable("connection refused".into()));
        }
        Ok(self.set.lock().unwrap().clone())
    }
}

struct Fixture {
    key: SigningKey,
    source: Arc<TestSource>,
    clock: Arc<ManualClock>,
    verifier: Verifier,
}

fn fixture(alg: Algorithm) -> Fixture {
    let key = SigningKey::generate(alg, "k1").unwrap();
    let source = Arc::new(TestSource::default());
    source.set.lock().unwrap().keys.push(key.public_jwk());
    let clock = Arc::new(ManualClock::new(NOW));
    let options = VerifierOptions {
        refresh_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let verifier = Verifier::with_clock(ISSUER, source.clone(), options, clock.clone());
    Fixture {
        key,
        source,
        clock,
        verifier,
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "svc-a", "aud": "audit", "exp": NOW + 300, "iat": NOW, "jti": "j1"})
}

fn with(mut base: Value, key: &str, value: Value) -> Value {
    base[key] = value;
    base
}

const AT: Expectations<'static> = Expectations {
    audience: Some("audit"),
    typ: "at+jwt",
    allow_expired: false,
};

#[tokio::test]
async fn valid_token_passes_for_every_algorithm_and_is_cached() {
    for alg in Algorithm::ALL {
        let f = fixture(alg);
        let token = f.key.sign("at+jwt", &claims()).unwrap();
        let first = f.verifier.verify(&token, &AT).await.unwrap();
        assert_eq!(first.sub, "svc-a");
        let second = f.verifier.verify(&token, &AT).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "second verification is a cache hit"
        );
        assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn alg_none_is_refused() {
    let f = fixture(Algorithm::ES256);
    let header = B64.encode(br#"{"alg":"none","kid":"k1","typ":"at+jwt"}"#);
    let payload = B64.encode(claims().to_string());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        assert!(f.verifier.verify(&token, &AT).await.is_err(), "{token}");
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture(Algorithm::RS256);
    let jwk = serde_json::to_vec(&f.key.public_jwk()).unwrap();
    let header = B64.encode(br#"{"alg":"HS256","kid":"k1","typ":"at+jwt"}"#);
    let input = format!("{header}.{}", B64.encode(claims().to_string()));
    for secret in [jwk.as_slice(), f.key.public_jwk().n.unwrap().as_bytes()] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        let token = format!("{input}.{}", B64.encode(tag.as_ref()));
        assert_eq!(
            f.verifier.verify(&token, &AT).await.unwrap_err(),
            VerifyError::BadSignature
        );
    }
}

#[tokio::test]
async fn tampered_payload_is_refused() {
    let f = fixture(Algorithm::ES256);
    let token = f.key.sign("at+jwt", &claims()).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let forged_claims = with(claims(), "sub", json!("admin"));
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        B64.encode(forged_claims.to_string()),
        parts[2]
    );
    assert_eq!(
        f.verifier.verify(&forged, &AT).await.unwrap_err(),
        VerifyError::BadSignature
    );
}

#[tokio::test]
async fn expired_token_is_refused_after_the_leeway() {
    let f = fixture(Algorithm::ES256);
    let token = f
        .key
        .sign("at+jwt", &with(claims(), "exp", json!(NOW - 5)))
        .unwrap();
    assert!(
        f.verifier.verify(&token, &AT).await.is_ok(),
        "within 10 s leeway"
    );
    f.clock.advance(6);
    assert_eq!(
        f.verifier.verify(&token, &AT).await.unwrap_err(),
        VerifyError::Expired,
        "cache hit rechecks exp"
    );
    let old = f
        .key
        .sign("at+jwt", &with(claims(), "exp", json!(NOW - 60)))
        .unwrap();
    assert_eq!(
        f.verifier.verify(&old, &AT).await.unwrap_err(),
        VerifyError::Expired
    );
}

#[tokio::test]
async fn not_yet_valid_token_is_refused() {
    let f = fixture(Algorithm::ES256);
    let token = f
        .key
        .sign("at+jwt", &with(claims(), "nbf", json!(NOW + 60)))
        .unwrap();
    assert_eq!(
        f.verifier.verify(&token, &AT).await.unwrap_err(),
        VerifyError::NotYetValid
    );
}

#[tokio::test]
async fn token_for_another_audience_is_refused_even_when_cached() {
    let f = fixture(Algorithm::ES256);
    let token = f.key.sign("at+jwt", &claims()).unwrap();
    f.verifier.verify(&token, &AT).await.unwrap();
    let parser = Expectations {
        audience: Some("parser"),
        ..AT
    };
    assert_eq!(
        f.verifier.verify(&token, &parser).await.unwrap_err(),
        VerifyError::WrongAudience
    );
    let many = f
        .key
        .sign("at+jwt", &with(claims(), "aud", json!(["parser", "audit"])))
        .unwrap();
    assert!(f.verifier.verify(&many, &parser).await.is_ok());
}

#[tokio::test]
async fn wrong_issuer_and_wrong_type_are_refused() {
    let f = fixture(Algorithm::ES256);
    let foreign = f
        .key
        .sign("at+jwt", &with(claims(), "iss", json!("http://evil")))
        .unwrap();
    assert_eq!(
        f.verifier.verify(&foreign, &AT).await.unwrap_err(),
        VerifyError::WrongIssuer
    );
    let id_token = f.key.sign("JWT", &claims()).unwrap();
    assert_eq!(
        f.verifier.verify(&id_token, &AT).await.unwrap_err(),
        VerifyError::WrongType
    );
    let full_media_type = f.key.sign("application/at+jwt", &claims()).unwrap();
    assert!(f.verifier.verify(&full_media_type, &AT).await.is_ok());
}

#[tokio::test]
async fn token_from_an_unpublished_key_is_refused() {
    let f = fixture(Algorithm::ES256);
    let stranger = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let token = stranger.sign("at+jwt", &claims()).unwrap();
    assert_eq!(
        f.verifier.verify(&token, &AT).await.unwrap_err(),
        VerifyError::BadSignature
    );
    let unknown = SigningKey::generate(Algorithm::ES256, "k9")
        .unwrap()
        .sign("at+jwt", &claims())
        .unwrap();
    assert_eq!(
        f.verifier.verify(&unknown, &AT).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}

#[tokio::test]
async fn unknown_kids_refresh_the_key_set_at_most_once_per_interval() {
    let f = fixture(Algorithm::ES256);
    f.verifier
        .verify(&f.key.sign("at+jwt", &claims()).unwrap(), &AT)
        .await
        .unwrap();
    for i in 0..20 {
        let k = SigningKey::generate(Algorithm::ES256, format!("made-up-{i}")).unwrap();
        let _ = f
            .verifier
            .verify(&k.sign("at+jwt", &claims()).unwrap(), &AT)
            .await;
    }
    assert_eq!(
        f.source.fetches.load(Ordering::SeqCst),
        1,
        "refresh is rate limited"
    );
}

/// A service started before its issuer was reachable (behind a load
/// balancer that had not yet seen the issuer up) is ready a second after
/// the issuer is, not `refresh_interval` (here an hour) later: while no key
/// is known, only the backoff after failures spaces the fetches.
#[tokio::test]
async fn without_any_key_the_issuer_is_asked_again_after_the_backoff_not_the_interval() {
    let f = fixture(Algorithm::ES256);
    f.source.down.store(true, Ordering::SeqCst);
    assert!(f.verifier.keys_ready().await.is_err());
    assert!(f.verifier.keys_ready().await.is_err(), "within the backoff");
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 1);
    f.source.down.store(false, Ordering::SeqCst);
    let started = std::time::Instant::now();
    while f.verifier.keys_ready().await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "not ready 3 s after the issuer is"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(f.source.fetches.load(Ordering::SeqCst), 2);
    f.verifier
        .verify(&f.key.sign("at+jwt", &claims()).unwrap(), &AT)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_key_is_picked_up_on_first_sight() {
    let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let source = Arc::new(TestSource::default());
    source.set.lock().unwrap().keys.push(key.public_jwk());
    let verifier = Verifier::new(
        ISSUER,
        source.clone(),
        VerifierOptions {
            refresh_interval: Duration::ZERO,
            ..Default::default()
        },
    );
    verifier
        .verify(&key.sign("at+jwt", &claims()).unwrap(), &AT)
        .await
        .unwrap();
    let next = SigningKey::generate(Algorithm::ES256, "k2").unwrap();
    source.set.lock().unwrap().keys.push(next.public_jwk());
    assert!(
        verifier
            .verify(&next.sign("at+jwt", &claims()).unwrap(), &AT)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn cached_keys_survive_an_unreachable_issuer_but_unknown_kids_are_unavailable() {
    let f = fixture(Algorithm::ES256);
    let token = f.key.sign("at+jwt", &claims()).unwrap();
    f.verifier.verify(&token, &AT).await.unwrap();
    f.source.down.store(true, Ordering::SeqCst);
    let fresh = f
        .key
        .sign("at+jwt", &with(claims(), "jti", json!("j2")))
        .unwrap();
    assert!(
        f.verifier.verify(&fresh, &AT).await.is_ok(),
        "cached key still verifies"
    );
    f.verifier.refresh_keys().await;
    let unknown = SigningKey::generate(Algorithm::ES256, "k2")
        .unwrap()
        .sign("at+jwt", &claims())
        .unwrap();
    assert!(matches!(
        f.verifier.verify(&unknown, &AT).await,
        Err(VerifyError::KeysUnavailable(_))
    ));
}

#[tokio::test]
async fn removing_a_key_from_jwks_ends_its_cached_tokens() {
    let key = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let source = Arc::new(TestSource::default());
    source.set.lock().unwrap().keys.push(key.public_jwk());
    let verifier = Verifier::new(
        ISSUER,
        source.clone(),
        VerifierOptions {
            refresh_interval: Duration::ZERO,
            ..Default::default()
        },
    );
    let token = key.sign("at+jwt", &claims()).unwrap();
    verifier.verify(&token, &AT).await.unwrap();
    source.set.lock().unwrap().keys.clear();
    verifier.refresh_keys().await;
    assert_eq!(
        verifier.verify(&token, &AT).await.unwrap_err(),
        VerifyError::UnknownKey
    );
}

#[tokio::test]
async fn garbage_is_malformed_not_a_panic() {
    let f = fixture(Algorithm::ES256);
    for bad in [
        "",
        "x",
        "a.b.c",
        "e30.e30.e30",
        "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    ] {
        assert!(f.verifier.verify(bad, &AT).await.is_err(), "{bad}");
    }
}
