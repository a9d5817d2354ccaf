//! The session store's contract, session lifetimes, CSRF on session API
//! calls, and the refresh of the access token by one request at a time:
//! each test runs once per session store (SQLite, Redis).

use echo_core::{Clock, SystemClock};
use echo_gateway::{LoginAttempt, Session, SessionStore};
use reqwest::StatusCode;

use crate::common::{Backend, Browser, Platform, TestStore, on_every_store};

on_every_store!(
    the_store_keeps_attempts_single_use_and_sessions_until_they_end,
    an_idle_session_sends_pages_to_login_and_back_and_the_api_gets_401,
    use_keeps_a_session_alive_until_its_absolute_end,
    session_api_calls_need_the_csrf_header_and_this_origin,
    twenty_parallel_requests_at_expiry_refresh_once_and_the_session_survives,
);

fn session(id: &str, last_seen_at: i64, expires_at: i64) -> Session {
    Session {
        id_hash: id.into(),
        subject: "u1".into(),
        name: Some("alice".into()),
        roles: vec!["admin".into()],
        created_at: last_seen_at,
        last_seen_at,
        expires_at,
        access_expires_at: last_seen_at + 600,
        tokens: vec![1, 2, 3],
    }
}

/// The idle timeout of a store [`store_contract`] runs on.
pub const CONTRACT_IDLE: i64 = 1800;

async fn the_store_keeps_attempts_single_use_and_sessions_until_they_end(backend: Backend) {
    let dir = echo_testkit::data_dir();
    let sessions = TestStore::open(backend, dir.path(), CONTRACT_IDLE).await;
    store_contract(&*sessions.store).await;
}

/// On the store alone, in real time (Redis expires keys by its own clock),
/// whose idle timeout is [`CONTRACT_IDLE`].
pub async fn store_contract(store: &dyn SessionStore) {
    const IDLE: i64 = CONTRACT_IDLE;
    let now = SystemClock.now();
    let attempt = LoginAttempt {
        state_hash: "s".into(),
        browser_hash: "b".into(),
        nonce: "n".into(),
        pkce_verifier: "v".into(),
        return_to: "/x".into(),
        expires_at: now + 600,
    };
    store.insert_attempt(&attempt).await.unwrap();
    assert_eq!(store.take_attempt("s").await.unwrap(), Some(attempt));
    assert_eq!(store.take_attempt("s").await.unwrap(), None, "single use");

    store
        .insert_session(&session("a", now, now + 3600))
        .await
        .unwrap();
    let anonymous = Session {
        name: None,
        ..session("anonymous", now, now + 3600)
    };
    store.insert_session(&anonymous).await.unwrap();
    store
        .insert_session(&session("idle", now - IDLE - 10, now + 3600))
        .await
        .unwrap();
    store
        .insert_session(&session("old", now - 60, now - 1))
        .await
        .unwrap();
    store.touch_session("a", now + 70).await.unwrap();
    store.touch_session("a", now + 10).await.unwrap();
    store
        .update_tokens("a", &[9, 0, 255], now + 900, &["auditor".into()])
        .await
        .unwrap();
    let a = store.session("a").await.unwrap().unwrap();
    assert_eq!(
        (a.last_seen_at, a.access_expires_at, a.tokens, a.roles),
        (
            now + 70,
            now + 900,
            vec![9, 0, 255],
            vec!["auditor".to_owned()]
        ),
        "use only moves forward"
    );
    assert_eq!(a.name.as_deref(), Some("alice"));
    assert_eq!(store.session("anonymous").await.unwrap(), Some(anonymous));

    store.purge(now, now - IDLE).await.unwrap();
    for ended in ["idle", "old"] {
        assert_eq!(store.session(ended).await.unwrap(), None, "{ended}");
    }
    store
        .update_tokens("old", &[1], now + 900, &[])
        .await
        .unwrap();
    assert_eq!(
        store.session("old").await.unwrap(),
        None,
        "an update does not bring a session back"
    );
    assert!(store.session("a").await.unwrap().is_some());
    assert!(store.delete_session("a").await.unwrap());
    assert!(!store.delete_session("a").await.unwrap());
    assert_eq!(store.session("a").await.unwrap(), None);
}

async fn an_idle_session_sends_pages_to_login_and_back_and_the_api_gets_401(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);

    platform.clock.advance(31 * 60);
    let api = browser.api_me(&platform).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["type"], "urn:echo:problem:session_expired");
    assert!(
        api.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer"))
    );
    let expired = platform.gateway_audited("gateway.session.expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].details["reason"], "idle_timeout");

    let page = browser.get(&platform.gw("/account?tab=roles")).await;
    assert_eq!(page.location(), "/login?return_to=%2Faccount%3Ftab%3Droles");
    // Identity's SSO session is still alive: straight back, no form.
    let login = browser.get(&platform.gw(page.location())).await;
    let landed = platform.finish_sign_in(&browser, login.location()).await;
    assert_eq!(landed.location(), "/account?tab=roles");
    assert_eq!(
        browser.get(&platform.gw("/account")).await.status,
        StatusCode::OK
    );
}

async fn use_keeps_a_session_alive_until_its_absolute_end(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    // 12 h absolute: used every 20 minutes, it still ends.
    let mut alive = 0;
    for _ in 0..40 {
        platform.clock.advance(20 * 60);
        if browser.api_me(&platform).await.status != StatusCode::OK {
            break;
        }
        alive += 1;
    }
    assert_eq!(alive, 35, "20-minute steps within 12 hours");
    let expired = platform.gateway_audited("gateway.session.expired");
    assert_eq!(expired[0].details["reason"], "absolute_timeout");
}

async fn session_api_calls_need_the_csrf_header_and_this_origin(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let no_header = browser.get(&platform.gw("/api/me")).await;
    assert_eq!(no_header.status, StatusCode::FORBIDDEN);
    assert_eq!(no_header.json()["type"], "urn:echo:problem:csrf");
    let cross = browser
        .get_with(
            &platform.gw("/api/me"),
            &[("x-echo-csrf", "1"), ("origin", "http://evil.test")],
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let same = browser
        .get_with(
            &platform.gw("/api/me"),
            &[("x-echo-csrf", "1"), ("origin", &platform.gateway_url)],
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(platform.gateway_audited("gateway.csrf.refused").len(), 2);
}

async fn twenty_parallel_requests_at_expiry_refresh_once_and_the_session_survives(
    backend: Backend,
) {
    let platform = Platform::start_on(backend).await;
    let browser = std::sync::Arc::new(Browser::new());
    platform.sign_in(&browser, None).await;
    let refreshes = || {
        platform
            .identity_audit
            .events()
            .iter()
            .filter(|e| e.action == "token.issued" && e.details["grant"] == "refresh_token")
            .count()
    };
    assert_eq!(refreshes(), 0);

    // Access tokens live 10 minutes; the session idles out after 30.
    platform.clock.advance(10 * 60 + 1);
    let calls = (0..20).map(|_| {
        let browser = browser.clone();
        let url = platform.gw("/api/me");
        async move { browser.get_with(&url, &[("x-echo-csrf", "1")]).await }
    });
    let pages = futures_join_all(calls).await;
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    }
    assert_eq!(refreshes(), 1, "one refresh for twenty requests");
    let identity_actions = platform.identity_audit.actions();
    assert!(
        !identity_actions.contains(&"oauth.refresh.reuse_detected"),
        "{identity_actions:?}"
    );

    // The rotated refresh token works next time too.
    platform.clock.advance(10 * 60 + 1);
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);
    assert_eq!(refreshes(), 2);
}

/// Runs `futures` concurrently, in spawned tasks.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// The Redis store's refresh lock, which every gateway on that Redis sees:
/// taken once, released only by its holder, gone at its expiry. The SQLite
/// store, one process's, has none (its gateway's own locks suffice).
#[tokio::test]
async fn the_redis_store_locks_a_sessions_refresh_for_every_gateway() {
    let dir = echo_testkit::data_dir();
    let sessions = TestStore::open(Backend::Redis, dir.path(), CONTRACT_IDLE).await;
    let lock = sessions.store.shared_lock().expect("a shared lock");
    let ttl = std::time::Duration::from_millis(300);
    assert!(lock.try_lock("s", "a", ttl).await.unwrap());
    assert!(!lock.try_lock("s", "b", ttl).await.unwrap(), "held");
    assert!(
        lock.try_lock("t", "b", ttl).await.unwrap(),
        "one per session"
    );
    lock.unlock("s", "b").await.unwrap();
    assert!(
        !lock.try_lock("s", "b", ttl).await.unwrap(),
        "only its holder releases it"
    );
    lock.unlock("s", "a").await.unwrap();
    assert!(lock.try_lock("s", "b", ttl).await.unwrap());
    tokio::time::sleep(ttl * 2).await;
    assert!(lock.try_lock("s", "c", ttl).await.unwrap(), "expired");

    let sqlite = TestStore::open(Backend::Sqlite, dir.path(), CONTRACT_IDLE).await;
    assert!(sqlite.store.shared_lock().is_none());
}
