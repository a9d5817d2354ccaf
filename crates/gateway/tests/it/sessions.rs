//! The session store's contract, session lifetimes, CSRF on session API
//! calls, and the refresh of the access token by one request at a time:
//! each test runs once per session store (SQLite, Redis).

use echo_core::{Clock, SystemClock};
use echo_gateway::{LoginAttempt, Session, SessionStore};
use reqwest::StatusCode;

use crate::common::{Backend, Browser, Page, Platform, TestStore, on_every_store};

on_every_store!(
    the_store_keeps_attempts_single_use_and_sessions_until_they_end,
    an_idle_session_sends_pages_to_login_and_back_and_the_api_gets_401,
    use_keeps_a_session_alive_until_its_absolute_end,
    session_api_calls_need_the_csrf_header_and_this_origin,
    twenty_parallel_requests_at_expiry_refresh_once_and_the_session_survives,
    a_user_lists_their_sessions_and_signs_one_out_from_another,
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
        user_agent: format!("Browser/{id}"),
        address: "192.0.2.7".into(),
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
    assert_eq!(
        store.session("anonymous").await.unwrap(),
        Some(anonymous.clone())
    );

    let bobs = Session {
        subject: "u2".into(),
        ..session("bobs", now, now + 3600)
    };
    store.insert_session(&bobs).await.unwrap();
    let listed = store.user_sessions("u1", now, now - IDLE).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|s| s.id_hash.as_str()).collect();
    assert_eq!(
        ids,
        ["a", "anonymous"],
        "the subject's live sessions, last used first"
    );
    assert_eq!(
        (listed[0].user_agent.as_str(), listed[0].address.as_str()),
        ("Browser/a", "192.0.2.7")
    );
    assert!(
        store
            .user_sessions("nobody", now, now - IDLE)
            .await
            .unwrap()
            .is_empty()
    );

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
    let left = store.user_sessions("u1", now, now - IDLE).await.unwrap();
    assert_eq!(left, [anonymous], "an ended session is not listed");
    let bob = store.user_sessions("u2", now, now - IDLE).await.unwrap();
    assert_eq!(bob, [bobs]);
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

/// The form on `page` that ends a session other than this browser's.
fn end_form(page: &Page) -> std::collections::BTreeMap<String, String> {
    let at = page
        .body
        .find(r#"action="/sessions/end""#)
        .unwrap_or_else(|| panic!("no other session: {}", page.body));
    let end = page.body[at..].find("</form>").unwrap() + at;
    Page {
        status: page.status,
        headers: page.headers.clone(),
        body: page.body[at..end].to_owned(),
    }
    .inputs()
}

/// `/sessions` lists the user's gateway sessions (browser, address, last
/// seen); one ends another, which is then signed out, its refresh token
/// revoked. Refused: a form without its CSRF token or from another
/// origin, and a session that is not the user's.
async fn a_user_lists_their_sessions_and_signs_one_out_from_another(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let laptop = Browser::named("Laptop/1");
    let phone = Browser::named("Phone/1");
    platform.sign_in(&laptop, None).await;
    platform.sign_in(&phone, None).await;
    platform.clock.advance(120);

    let page = laptop.get(&platform.gw("/sessions")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body.matches(r#"<tr class="session">"#).count(), 2);
    assert!(
        page.body
            .contains("Laptop/1 <strong>(this browser)</strong>")
    );
    assert!(page.body.contains("Phone/1</td>") && page.body.contains("127.0.0.1"));
    assert!(page.body.contains("2 minutes ago"), "{}", page.body);
    assert!(
        page.body
            .contains(r#"id="nav-portal-sessions" aria-current="page""#)
    );
    let form = end_form(&page);
    let end = platform.gw("/sessions/end");

    let mut no_csrf = form.clone();
    no_csrf.remove("csrf");
    assert_eq!(
        laptop.post_form(&end, &no_csrf, &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let foreign = laptop
        .post_form(&end, &form, &[("origin", "http://evil.test")])
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    platform.add_user("bob", &[]).await;
    let bob = Browser::new();
    platform.sign_in_as(&bob, "bob").await;
    let bobs_page = bob.get(&platform.gw("/sessions")).await;
    assert_eq!(
        bobs_page.body.matches(r#"<tr class="session">"#).count(),
        1,
        "only his own"
    );
    let mut not_his = form.clone();
    not_his.insert("csrf".into(), bobs_page.inputs()["csrf"].clone());
    let refused = bob.post_form(&end, &not_his, &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused.body.contains("that session ended already"),
        "{}",
        refused.body
    );
    assert_eq!(
        phone.api_me(&platform).await.status,
        StatusCode::OK,
        "all refused"
    );

    let ended = laptop.post_form(&end, &form, &[]).await;
    assert_eq!(ended.location(), "/sessions");
    let api = phone.api_me(&platform).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED, "signed out");
    let page = laptop.get(&platform.gw("/sessions")).await;
    assert_eq!(page.body.matches(r#"<tr class="session">"#).count(), 1);
    assert!(!page.body.contains("Phone/1"));
    let again = laptop.post_form(&end, &form, &[]).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "ended already");

    let alice = platform.gateway_audited("gateway.session.ended");
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].details["current"], false);
    let subject = laptop.api_me(&platform).await.json()["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(alice[0].actor.as_deref(), Some(subject.as_str()));
    assert_eq!(platform.gateway_audited("gateway.csrf.refused").len(), 2);
    assert!(
        platform
            .identity_audit
            .actions()
            .contains(&"oauth.token.revoked"),
        "the ended session's refresh token revoked"
    );
    let signed_out = Browser::new();
    let page = signed_out.get(&platform.gw("/sessions")).await;
    assert_eq!(page.location(), "/login?return_to=%2Fsessions");
}
