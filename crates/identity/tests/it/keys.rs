//! Signing-key lifecycle against a running provider and `echo-verify`
//! verifiers reading its real `/jwks` over HTTP: rotation under load,
//! revocation within the JWKS cache bound, audience-scoped keys, and the
//! retention of retired keys.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use echo_core::{ManualClock, SystemClock};
use echo_crypto::Algorithm;
use echo_identity::admin::{ClientSecret, NewClient, add_client};
use echo_identity::{IdentityConfig, IdentityError, KeyState};
use echo_verify::{Expectations, HttpJwks, Verifier, VerifierOptions, VerifyError};

use crate::common::{Server, client_credentials_token, decode_jwt};

/// A client allowed two audiences, `audit` and `parser`.
const MULTI: &str = "multi";
const MULTI_SECRET: &str = "multi-secret-0123456789abcdefghijklmnopqrstu";

/// A service's verifier of the server's tokens, over its real `/jwks`.
fn verifier(server: &Server, options: VerifierOptions) -> Verifier {
    Verifier::with_clock(
        server.issuer.clone(),
        Arc::new(HttpJwks::new(server.url("/jwks"), &Default::default())),
        options,
        server.clock.clone(),
    )
}

async fn add_multi_client(server: &Server) {
    add_client(
        &*server.store,
        &*server.audit,
        &*server.clock,
        NewClient {
            id: MULTI.into(),
            secret: ClientSecret::Provided(MULTI_SECRET.into()),
            redirect_uris: vec![],
            grants: vec!["client_credentials".into()],
            audiences: vec!["audit".into(), "parser".into()],
            scopes: vec![],
            post_logout_redirect_uris: vec![],
            allow_no_pkce: false,
        },
    )
    .await
    .expect("add client");
}

/// A client-credentials token of the multi client for `audience`.
async fn token_for(server: &Server, audience: &str) -> String {
    client_credentials_token(server, MULTI, MULTI_SECRET, audience).await
}

fn kid_of(token: &str) -> String {
    decode_jwt(token).0["kid"].as_str().expect("kid").to_owned()
}

async fn published_kids(server: &Server) -> Vec<String> {
    let jwks: serde_json::Value = reqwest::get(server.url("/jwks"))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("jwks json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// The general EdDSA key signing now.
fn general_signer(server: &Server) -> String {
    server
        .provider
        .keys()
        .signer(Algorithm::EdDSA, None, server.clock.now())
        .expect("signer")
        .kid()
        .to_owned()
}

/// A real clock; `postgres_url` `None` for SQLite.
async fn start_real(
    postgres_url: Option<&str>,
    configure: impl FnOnce(&mut IdentityConfig),
) -> Server {
    let dir = echo_testkit::data_dir();
    let store = echo_identity_store::open(
        postgres_url,
        &echo_crypto::TrustedRoots::system(),
        dir.path(),
    )
    .await
    .expect("open store");
    let server = Server::start_with(store, Arc::new(SystemClock), Some(dir), configure).await;
    add_multi_client(&server).await;
    server
}

/// Keys published 5 s ahead (at least 4 s: times are whole seconds),
/// servers reloading every second.
fn fast_keys(config: &mut IdentityConfig) {
    config.keys.publish_delay = 5;
    config.keys.reload_interval = 1;
    config.keys.rotation_interval = 0;
}

// ---- rotation under load -------------------------------------------------------

/// Four tasks issue tokens and verify them (and their first token again)
/// while keys are rotated, scoped to an audience and retired. Verifiers
/// refetch keys older than 1 s and practically never on an unknown `kid`
/// (at most once an hour), so a token signed by a key they had not seen
/// would fail: publishing ahead (5 s, over a bound of 1 s reload + 1 s key
/// age, leaving room for a loaded machine) must make that impossible.
async fn rotation_under_load_fails_no_verification(server: &Server) {
    let stop = AtomicBool::new(false);
    let verified = AtomicUsize::new(0);
    let load = |audience: &'static str| {
        let options = VerifierOptions {
            max_key_age: Duration::from_secs(1),
            refresh_interval: Duration::from_secs(3_600),
            ..Default::default()
        };
        let verifier = verifier(server, options);
        let (stop, verified) = (&stop, &verified);
        async move {
            let mut first: Option<String> = None;
            let mut failures = Vec::new();
            let mut kids = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let token = token_for(server, audience).await;
                kids.insert(kid_of(&token));
                let first = first.get_or_insert_with(|| token.clone());
                for t in [&token, &*first] {
                    match verifier
                        .verify(t, &Expectations::access_token(audience))
                        .await
                    {
                        Ok(_) => {
                            verified.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.push((kid_of(t), e)),
                    }
                }
            }
            (failures, kids)
        }
    };

    let admin = server.provider.key_admin();
    let first = general_signer(server);
    let operations = async {
        let settle = Duration::from_millis(5_500);
        let rotated = admin.rotate(Some(Algorithm::EdDSA), None).await.unwrap();
        tokio::time::sleep(settle).await;
        assert_eq!(
            general_signer(server),
            rotated[0].kid,
            "the successor signs"
        );
        let scoped = admin
            .rotate(Some(Algorithm::EdDSA), Some("parser"))
            .await
            .unwrap();
        tokio::time::sleep(settle).await;
        admin.retire(&scoped[0].kid).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        admin.rotate(None, None).await.unwrap();
        tokio::time::sleep(settle).await;
        stop.store(true, Ordering::Relaxed);
        [rotated[0].kid.clone(), scoped[0].kid.clone()]
    };
    let (a, b, c, d, [rotated, scoped]) = tokio::join!(
        load("audit"),
        load("parser"),
        load("audit"),
        load("parser"),
        operations
    );

    let mut failures = Vec::new();
    let mut kids_seen = BTreeSet::new();
    for (failed, kids) in [a, b, c, d] {
        failures.extend(failed);
        kids_seen.extend(kids);
    }
    assert!(
        failures.is_empty(),
        "valid tokens refused: {failures:?}\nkeys: {:#?}\npublished: {:?}",
        admin.list().await.unwrap(),
        published_kids(server).await
    );
    assert!(verified.load(Ordering::Relaxed) > 40, "the load ran");
    for kid in [&first, &rotated, &scoped] {
        assert!(
            kids_seen.contains(kid),
            "{kid} signed tokens: {kids_seen:?}"
        );
    }
    assert_eq!(
        server.audited("key.rotated"),
        4,
        "EdDSA, parser's, then RS256 and EdDSA"
    );
    assert_eq!(server.audited("key.retired"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_verification_on_sqlite() {
    let server = start_real(None, fast_keys).await;
    rotation_under_load_fails_no_verification(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_verification_on_postgres() {
    let db = echo_testkit::PgTestDb::create("identity_key_rotation_load").await;
    {
        let server = start_real(Some(&db.url), fast_keys).await;
        rotation_under_load_fails_no_verification(&server).await;
    }
    db.drop_db().await;
}

// ---- revocation ----------------------------------------------------------------

/// A verifier that had already accepted (and cached) a token refuses it
/// within the bound: the server's reload interval (1 s) plus the
/// verifier's key age (2 s); identity's own `/verify` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_by_verifiers_within_the_cache_bound() {
    let server = start_real(None, fast_keys).await;
    let verifier = verifier(
        &server,
        VerifierOptions {
            max_key_age: Duration::from_secs(2),
            ..Default::default()
        },
    );
    let token = token_for(&server, "audit").await;
    let expect = Expectations::access_token("audit");
    verifier
        .verify(&token, &expect)
        .await
        .expect("valid at first");

    let revoked = kid_of(&token);
    let revocation = server.provider.key_admin().revoke(&revoked).await.unwrap();
    let started = Instant::now();
    assert_eq!(revocation.revoked.state, KeyState::Revoked);
    let takeover = revocation.takeover.expect("a key takes over signing");
    assert_eq!(takeover.state, KeyState::Active);

    let refused = loop {
        match verifier.verify(&token, &expect).await {
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(4),
                    "still accepted after the bound"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(refused, VerifyError::UnknownKey);
    assert!(!published_kids(&server).await.contains(&revoked));
    let answer = crate::common::verify(&server, &token, "audit").await;
    assert_eq!(answer["valid"], false, "identity refuses it too: {answer}");

    let fresh = token_for(&server, "audit").await;
    assert_eq!(kid_of(&fresh), takeover.kid, "signing never stopped");
    verifier
        .verify(&fresh, &expect)
        .await
        .expect("new tokens pass");
    assert_eq!(server.audited("key.revoked"), 1);
    assert!(matches!(
        server.provider.key_admin().revoke(&revoked).await,
        Err(IdentityError::BadInput(_))
    ));
}

// ---- audience-scoped keys -------------------------------------------------------

/// Manual clock, keys published 600 s ahead, reloaded only when the test
/// says so (`refresh_keys`).
fn manual_keys(config: &mut IdentityConfig) {
    config.keys.publish_delay = 600;
    config.keys.reload_interval = 0;
    config.keys.rotation_interval = 0;
    config.id_token_ttl = 600;
}

async fn start_manual(postgres_url: Option<&str>) -> (Server, Arc<ManualClock>) {
    let (server, clock) = Server::start_manual_on(postgres_url, manual_keys).await;
    add_multi_client(&server).await;
    (server, clock)
}

async fn revoking_an_audience_key_touches_that_audience_only(server: &Server, clock: &ManualClock) {
    let admin = server.provider.key_admin();
    let scoped = admin
        .rotate(Some(Algorithm::EdDSA), Some("parser"))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(scoped.state, KeyState::Next);
    server.provider.refresh_keys().await.unwrap();
    assert!(published_kids(server).await.contains(&scoped.kid));
    assert_ne!(kid_of(&token_for(server, "parser").await), scoped.kid);
    clock.advance(600);

    let parser = token_for(server, "parser").await;
    let audit = token_for(server, "audit").await;
    assert_eq!(kid_of(&parser), scoped.kid, "parser's tokens use its key");
    assert_ne!(kid_of(&audit), scoped.kid, "other audiences keep theirs");
    let verifier = verifier(
        server,
        VerifierOptions {
            max_key_age: Duration::ZERO,
            ..Default::default()
        },
    );
    verifier
        .verify(&parser, &Expectations::access_token("parser"))
        .await
        .unwrap();

    let revocation = admin.revoke(&scoped.kid).await.unwrap();
    assert_eq!(
        revocation.takeover, None,
        "parser falls back to the general key"
    );
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(
        verifier
            .verify(&parser, &Expectations::access_token("parser"))
            .await,
        Err(VerifyError::UnknownKey),
        "parser's tokens are invalid"
    );
    verifier
        .verify(&audit, &Expectations::access_token("audit"))
        .await
        .expect("audit's tokens are untouched");
    let after = token_for(server, "parser").await;
    assert_eq!(
        kid_of(&after),
        kid_of(&audit),
        "parser gets general tokens now"
    );
    verifier
        .verify(&after, &Expectations::access_token("parser"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_audience_key_touches_that_audience_only_on_sqlite() {
    let (server, clock) = start_manual(None).await;
    revoking_an_audience_key_touches_that_audience_only(&server, &clock).await;
}

// ---- retirement ----------------------------------------------------------------

/// The old key signs until its successor activates, then stays published
/// until the last token it signed has expired (retention: the longest
/// token lifetime, 600 s here, plus 10 s of leeway), then leaves.
async fn a_retired_key_stays_published_until_its_last_token_expired(
    server: &Server,
    clock: &ManualClock,
) {
    let admin = server.provider.key_admin();
    let old = general_signer(server);
    let next = admin
        .rotate(Some(Algorithm::EdDSA), None)
        .await
        .unwrap()
        .remove(0);
    server.provider.refresh_keys().await.unwrap();
    let kids = published_kids(server).await;
    assert!(kids.contains(&old) && kids.contains(&next.kid), "{kids:?}");

    clock.advance(599);
    let last = token_for(server, "audit").await;
    assert_eq!(kid_of(&last), old, "the old key signs until the switch");
    clock.advance(1);
    assert_eq!(kid_of(&token_for(server, "audit").await), next.kid);
    let verifier = verifier(
        server,
        VerifierOptions {
            max_key_age: Duration::ZERO,
            ..Default::default()
        },
    );
    clock.advance(608);
    server.provider.refresh_keys().await.unwrap();
    assert!(published_kids(server).await.contains(&old));
    verifier
        .verify(&last, &Expectations::access_token("audit"))
        .await
        .expect("its last token is still valid (within the leeway)");

    clock.advance(2);
    server.provider.refresh_keys().await.unwrap();
    assert!(
        !published_kids(server).await.contains(&old),
        "then it leaves"
    );
    let listed = admin.list().await.unwrap();
    let state = |kid: &str| listed.iter().find(|k| k.kid == kid).unwrap().state;
    assert_eq!(state(&old), KeyState::Expired);
    assert_eq!(state(&next.kid), KeyState::Active);

    // The active general key cannot be retired (its tokens would have no
    // signer); a waiting one can, and never signs.
    let refused = admin.retire(&next.kid).await.unwrap_err().to_string();
    assert!(
        refused.contains("echod keys rotate --alg EdDSA"),
        "{refused}"
    );
    let waiting = admin
        .rotate(Some(Algorithm::EdDSA), None)
        .await
        .unwrap()
        .remove(0);
    admin.retire(&waiting.kid).await.unwrap();
    clock.advance(600);
    assert_eq!(general_signer(server), next.kid);
    assert!(admin.retire("no-such-kid").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_key_stays_published_until_its_last_token_expired_on_sqlite() {
    let (server, clock) = start_manual(None).await;
    a_retired_key_stays_published_until_its_last_token_expired(&server, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lifecycle_on_postgres() {
    let db = echo_testkit::PgTestDb::create("identity_key_lifecycle").await;
    {
        let (server, clock) = start_manual(Some(&db.url)).await;
        revoking_an_audience_key_touches_that_audience_only(&server, &clock).await;
        a_retired_key_stays_published_until_its_last_token_expired(&server, &clock).await;
    }
    db.drop_db().await;
}

// ---- automatic rotation ----------------------------------------------------------

/// With a 1 h schedule, a successor appears 600 s (the publish delay)
/// before the current key turns 1 h old, activates on time, and the next
/// rotation follows an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_rotate_on_schedule() {
    let (server, clock) = Server::start_manual(|config| {
        manual_keys(config);
        config.keys.rotation_interval = 3_600;
    })
    .await;
    let first = general_signer(&server);
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(server.audited("key.rotated"), 0, "not due yet");
    clock.advance(3_000);
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(server.audited("key.rotated"), 2, "RS256 and EdDSA");
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(server.audited("key.rotated"), 2, "one successor at a time");
    assert_eq!(general_signer(&server), first);
    clock.advance(600);
    let second = general_signer(&server);
    assert_ne!(second, first, "the successor signs on time");
    clock.advance(2_999);
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(server.audited("key.rotated"), 2);
    clock.advance(1);
    server.provider.refresh_keys().await.unwrap();
    assert_eq!(server.audited("key.rotated"), 4);
}
