//! The same storage suite against both backends, and PostgreSQL over TLS
//! (`tls`).

use std::sync::Arc;

use echo_identity_store::{
    AuthCode, Client, CodeUse, EmailLink, LinkEffect, LoginCounter, PasswordReset, Purged,
    RefreshToken, SsoSession, Store, StoreError, TotpCredential, User,
};
use echo_testkit::PgTestDb;

mod keys;
mod tls;

fn user(name: &str) -> User {
    User {
        id: format!("id-{name}"),
        username: name.to_owned(),
        email: Some(format!("{name}@example.test")),
        password_hash: "$argon2id$...".into(),
        roles: vec!["admin".into(), "auditor".into()],
        created_at: 100,
        state: "active".into(),
        email_verified: false,
    }
}

fn client(id: &str) -> Client {
    Client {
        id: id.to_owned(),
        secret_hash: Some("sha256:abc".into()),
        redirect_uris: vec!["https://app.test/cb".into()],
        grant_types: vec!["authorization_code".into()],
        audiences: vec!["gateway".into()],
        scopes: vec!["openid".into(), "profile".into()],
        post_logout_redirect_uris: vec!["https://app.test/bye".into()],
        allow_no_pkce: false,
        created_at: 100,
        jwks: None,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
    }
}

fn refresh(hash: &str, family: &str, jti: &str) -> RefreshToken {
    RefreshToken {
        token_hash: hash.to_owned(),
        family_id: family.to_owned(),
        client_id: "web".into(),
        user_id: "id-alice".into(),
        scope: "openid offline_access".into(),
        audience: Some("gateway".into()),
        auth_time: 100,
        issued_at: 100,
        expires_at: 1_000,
        family_expires_at: 5_000,
        access_jti: jti.to_owned(),
        access_expires_at: 700,
        used_at: None,
        revoked_at: None,
        successor: None,
    }
}

fn code(hash: &str) -> AuthCode {
    AuthCode {
        code_hash: hash.to_owned(),
        client_id: "web".into(),
        user_id: "id-alice".into(),
        redirect_uri: "https://app.test/cb".into(),
        scope: "openid".into(),
        nonce: Some("n".into()),
        code_challenge: Some("c".into()),
        audience: None,
        auth_time: 100,
        expires_at: 160,
        amr: vec!["pwd".into(), "otp".into()],
    }
}

fn reset(hash: &str, expires_at: i64) -> PasswordReset {
    PasswordReset {
        token_hash: hash.to_owned(),
        user_id: "id-alice".into(),
        created_at: 1,
        expires_at,
    }
}

async fn suite(store: Arc<dyn Store>) {
    // users
    store.insert_user(&user("alice")).await.unwrap();
    assert!(matches!(
        store.insert_user(&user("alice")).await,
        Err(StoreError::Conflict(_))
    ));
    store.insert_user(&user("bob")).await.unwrap();
    assert_eq!(
        store.user_by_username("alice").await.unwrap(),
        Some(user("alice"))
    );
    assert_eq!(
        store.user_by_id("id-bob").await.unwrap().unwrap().username,
        "bob"
    );
    assert_eq!(store.user_by_username("carol").await.unwrap(), None);
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // clients
    store.insert_client(&client("web")).await.unwrap();
    assert!(matches!(
        store.insert_client(&client("web")).await,
        Err(StoreError::Conflict(_))
    ));
    let public = Client {
        secret_hash: None,
        allow_no_pkce: true,
        ..client("spa")
    };
    store.insert_client(&public).await.unwrap();
    assert_eq!(store.client("web").await.unwrap(), Some(client("web")));
    assert_eq!(store.client("spa").await.unwrap(), Some(public));
    assert_eq!(store.list_clients().await.unwrap().len(), 2);

    keys::lifecycle(&*store).await;

    // codes: consumed once, then a replay, and unknown codes are not found
    store.insert_code(&code("h1")).await.unwrap();
    assert_eq!(
        store.consume_code("h1", 120).await.unwrap(),
        CodeUse::Consumed(code("h1"))
    );
    assert_eq!(
        store.consume_code("h1", 121).await.unwrap(),
        CodeUse::Replayed(code("h1"))
    );
    assert_eq!(
        store.consume_code("nope", 121).await.unwrap(),
        CodeUse::NotFound
    );

    // concurrent consumption: exactly one winner
    store.insert_code(&code("h2")).await.unwrap();
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.consume_code("h2", 130).await.unwrap() })
    });
    let mut winners = 0;
    for attempt in attempts {
        if matches!(attempt.await.unwrap(), CodeUse::Consumed(_)) {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);

    // sessions
    let session = SsoSession {
        id_hash: "s1".into(),
        user_id: "id-alice".into(),
        auth_time: 100,
        expires_at: 200,
        amr: vec!["pwd".into()],
        created_at: 100,
        last_seen_at: 150,
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into(),
        address: "192.0.2.7".into(),
    };
    store.insert_session(&session).await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), Some(session));
    store.delete_session("s1").await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), None);

    // client-secret rotation keeps the old hash as the previous one
    assert!(
        store
            .rotate_client_secret("web", "sha256:new", 500)
            .await
            .unwrap()
    );
    let rotated = store.client("web").await.unwrap().unwrap();
    assert_eq!(rotated.secret_hash.as_deref(), Some("sha256:new"));
    assert_eq!(rotated.previous_secret_hash.as_deref(), Some("sha256:abc"));
    assert_eq!(rotated.previous_secret_expires_at, Some(500));
    assert!(
        !store
            .rotate_client_secret("spa", "sha256:x", 500)
            .await
            .unwrap(),
        "a public client has no secret to rotate"
    );
    // a registration's grants, audiences and scopes can be replaced
    let access = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert!(
        store
            .update_client_access(
                "web",
                &access(&["client_credentials"]),
                &access(&["audit", "docs"]),
                &access(&["audit.write"]),
            )
            .await
            .unwrap()
    );
    let updated = store.client("web").await.unwrap().unwrap();
    assert_eq!(updated.grant_types, access(&["client_credentials"]));
    assert_eq!(updated.audiences, access(&["audit", "docs"]));
    assert_eq!(updated.scopes, access(&["audit.write"]));
    assert_eq!(
        updated.secret_hash, rotated.secret_hash,
        "nothing else changes"
    );
    assert!(
        !store
            .update_client_access("nobody", &[], &[], &[])
            .await
            .unwrap()
    );
    let keyed = Client {
        secret_hash: None,
        jwks: Some(r#"{"keys":[]}"#.into()),
        ..client("jwt-client")
    };
    store.insert_client(&keyed).await.unwrap();
    assert_eq!(store.client("jwt-client").await.unwrap(), Some(keyed));

    refresh_tokens(&*store).await;
    concurrent_rotations(store.clone()).await;
    rate_limits(store.clone()).await;
    admin_pages(&*store).await;
}

/// What the admin API pages through and edits: users by search and
/// cursor, clients by cursor, a client's registration replaced, a client
/// deleted with its tokens.
async fn admin_pages(store: &dyn Store) {
    for name in ["carol", "dan_x", "dave%y", "erin"] {
        store.insert_user(&user(name)).await.unwrap();
    }
    let names = |users: Vec<User>| users.into_iter().map(|u| u.username).collect::<Vec<_>>();
    let first = store.users_page(None, "", 2).await.unwrap();
    assert_eq!(names(first), ["alice", "bob"]);
    let next = store.users_page(None, "bob", 2).await.unwrap();
    assert_eq!(names(next), ["carol", "dan_x"]);
    assert_eq!(
        names(store.users_page(Some("DA"), "", 10).await.unwrap()),
        ["dan_x", "dave%y"],
        "search ignores case"
    );
    // Unescaped, both would match every address ("@example").
    assert_eq!(
        names(store.users_page(Some("e%"), "", 10).await.unwrap()),
        ["dave%y"],
        "wildcards are literal"
    );
    assert_eq!(
        names(store.users_page(Some("_x"), "", 10).await.unwrap()),
        ["dan_x"]
    );
    assert_eq!(
        names(
            store
                .users_page(Some("erin@EXAMPLE"), "", 10)
                .await
                .unwrap()
        ),
        ["erin"],
        "search covers the email"
    );
    assert!(
        store
            .users_page(Some("zed"), "", 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Invitations: invited without a password (an administrator's), not
    // a sign-up waiting for its address (invited, with a password).
    let invited = |name: &str, password_hash: &str| User {
        state: "invited".into(),
        password_hash: password_hash.into(),
        ..user(name)
    };
    for name in ["inv-a", "inv-b", "inv-c"] {
        store.insert_user(&invited(name, "")).await.unwrap();
    }
    store
        .insert_user(&invited("signup", "$argon2id$..."))
        .await
        .unwrap();
    assert_eq!(
        names(store.invitations_page("", 2).await.unwrap()),
        ["inv-a", "inv-b"]
    );
    assert_eq!(
        names(store.invitations_page("inv-b", 2).await.unwrap()),
        ["inv-c"]
    );

    let ids = |clients: Vec<Client>| clients.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = ids(store.list_clients().await.unwrap());
    assert_eq!(ids(store.clients_page("", 2).await.unwrap()), all[..2]);
    assert_eq!(
        ids(store.clients_page(&all[1], 100).await.unwrap()),
        all[2..]
    );

    store.insert_client(&client("edit-me")).await.unwrap();
    let edited = Client {
        redirect_uris: vec!["https://new.test/cb".into()],
        post_logout_redirect_uris: vec![],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        audiences: vec!["docs".into()],
        scopes: vec!["openid".into()],
        allow_no_pkce: true,
        // not part of the registration: kept
        secret_hash: Some("sha256:other".into()),
        created_at: 999,
        ..client("edit-me")
    };
    assert!(store.update_client(&edited).await.unwrap());
    let stored = store.client("edit-me").await.unwrap().unwrap();
    assert_eq!(
        stored,
        Client {
            secret_hash: Some("sha256:abc".into()),
            created_at: 100,
            ..edited.clone()
        }
    );
    assert!(!store.update_client(&client("nobody")).await.unwrap());

    let token = RefreshToken {
        client_id: "edit-me".into(),
        ..refresh("edit-me-token", "edit-me-family", "edit-me-jti")
    };
    store.insert_refresh_token(&token).await.unwrap();
    store
        .insert_code(&AuthCode {
            client_id: "edit-me".into(),
            ..code("edit-me-code")
        })
        .await
        .unwrap();
    store
        .record_code_access_token("edit-me-code", "edit-me-code-jti", 700)
        .await
        .unwrap();
    assert!(store.delete_client("edit-me", 200).await.unwrap());
    assert_eq!(store.client("edit-me").await.unwrap(), None);
    let revoked = store.refresh_token("edit-me-token").await.unwrap().unwrap();
    assert_eq!(revoked.revoked_at, Some(200), "its refresh tokens end");
    for jti in ["edit-me-jti", "edit-me-code-jti"] {
        assert!(
            store.access_token_revoked(jti).await.unwrap(),
            "{jti}: its access tokens are revoked"
        );
    }
    assert_eq!(
        store.consume_code("edit-me-code", 200).await.unwrap(),
        CodeUse::NotFound,
        "its codes are gone"
    );
    assert!(!store.delete_client("edit-me", 200).await.unwrap());
}

/// Rate-limit windows: concurrent hits (replicas counting at once) all
/// count, a later window starts over, a late hit of an earlier one changes
/// nothing.
async fn rate_limits(store: Arc<dyn Store>) {
    let mut hits = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        hits.spawn(async move { store.hit_window("ip", 60_000, 200).await.unwrap() });
    }
    let mut counts = hits.join_all().await;
    counts.sort_unstable();
    assert_eq!(counts, (1..=20).collect::<Vec<u64>>());
    assert_eq!(store.window_hits("ip", 60_000).await.unwrap(), 20);
    assert_eq!(store.window_hits("other", 60_000).await.unwrap(), 0);
    assert_eq!(store.hit_window("ip", 120_000, 260).await.unwrap(), 1);
    assert_eq!(store.window_hits("ip", 60_000).await.unwrap(), 0);
    assert_eq!(
        store.hit_window("ip", 60_000, 200).await.unwrap(),
        1,
        "a late hit of the last window answers the current one"
    );
    assert_eq!(store.window_hits("ip", 120_000).await.unwrap(), 1);
}

/// Rotation is atomic and single-winner; family revocation takes every
/// token of the family and the access tokens issued with them.
async fn refresh_tokens(store: &dyn Store) {
    store
        .insert_refresh_token(&refresh("r1", "f1", "j1"))
        .await
        .unwrap();
    assert_eq!(
        store.refresh_token("r1").await.unwrap(),
        Some(refresh("r1", "f1", "j1"))
    );
    assert_eq!(store.refresh_token("nope").await.unwrap(), None);
    let (token, owner) = store.refresh_grant("r1").await.unwrap().unwrap();
    assert_eq!(token, refresh("r1", "f1", "j1"));
    assert_eq!(Some(owner), store.user_by_id("id-alice").await.unwrap());
    assert_eq!(store.refresh_grant("nope").await.unwrap(), None);
    let next = refresh("r2", "f1", "j2");
    assert!(
        store
            .rotate_refresh_token("r1", 200, b"sealed", &next)
            .await
            .unwrap()
    );
    assert!(
        !store
            .rotate_refresh_token("r1", 201, b"other", &refresh("r3", "f1", "j3"))
            .await
            .unwrap(),
        "a spent token cannot be rotated again"
    );
    assert_eq!(
        store.refresh_token("r3").await.unwrap(),
        None,
        "loser left no row"
    );
    let spent = store.refresh_token("r1").await.unwrap().unwrap();
    assert_eq!(spent.used_at, Some(200));
    assert_eq!(spent.successor.as_deref(), Some(&b"sealed"[..]));

    store
        .insert_refresh_token(&refresh("other", "f2", "j9"))
        .await
        .unwrap();
    assert_eq!(store.revoke_refresh_family("f1", 300).await.unwrap(), 2);
    assert_eq!(store.revoke_refresh_family("f1", 301).await.unwrap(), 0);
    for hash in ["r1", "r2"] {
        let t = store.refresh_token(hash).await.unwrap().unwrap();
        assert_eq!(t.revoked_at, Some(300), "{hash}");
    }
    assert!(store.access_token_revoked("j1").await.unwrap());
    assert!(store.access_token_revoked("j2").await.unwrap());
    assert!(
        !store.access_token_revoked("j9").await.unwrap(),
        "other family untouched"
    );
    assert!(
        store
            .refresh_token("other")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    assert!(
        !store
            .rotate_refresh_token("r2", 302, b"x", &refresh("r4", "f1", "j4"))
            .await
            .unwrap(),
        "a revoked token cannot be rotated"
    );

    // a replayed code revokes its access token and the family named after it
    store.insert_code(&code("c9")).await.unwrap();
    store.consume_code("c9", 120).await.unwrap();
    store
        .record_code_access_token("c9", "jc", 700)
        .await
        .unwrap();
    store
        .insert_refresh_token(&refresh("rc", "c9", "jr"))
        .await
        .unwrap();
    assert_eq!(store.revoke_code_grant("c9", 130).await.unwrap(), 1);
    assert!(store.access_token_revoked("jc").await.unwrap());
    assert!(store.access_token_revoked("jr").await.unwrap());

    store.revoke_access_token("ja", 400).await.unwrap();
    store.revoke_access_token("ja", 400).await.unwrap();
    assert!(store.access_token_revoked("ja").await.unwrap());

    assert!(
        store
            .record_client_assertion("web", "a1", 400)
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_client_assertion("web", "a1", 400)
            .await
            .unwrap()
    );
    assert!(
        store
            .record_client_assertion("spa", "a1", 400)
            .await
            .unwrap()
    );
}

/// Concurrent rotations share transactions (group commit) and still keep
/// the rule: of the uses of one token exactly one rotates.
async fn concurrent_rotations(store: Arc<dyn Store>) {
    for i in 0..40 {
        store
            .insert_refresh_token(&refresh(&format!("cr{i}"), "fc", &format!("jc{i}")))
            .await
            .unwrap();
    }
    // Concurrent lookups share queries; each gets its own answer, in order.
    let lookups: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { (i, store.refresh_grant(&format!("cr{i}")).await.unwrap()) })
        })
        .collect();
    for lookup in lookups {
        let (i, grant) = lookup.await.unwrap();
        match grant {
            Some((token, owner)) => {
                assert!(i < 40);
                assert_eq!(token.token_hash, format!("cr{i}"));
                assert_eq!(owner.id, token.user_id);
            }
            None => assert!(i >= 40, "cr{i} exists"),
        }
    }
    // Each of 40 tokens presented once, and cr0 eight more times at once.
    let uses = (0..40).map(|i| (i, 0)).chain((1..=8).map(|copy| (0, copy)));
    let rotations: Vec<_> = uses
        .map(|(i, copy)| {
            let store = store.clone();
            tokio::spawn(async move {
                let successor = format!("cr{i}-next{copy}");
                let rotated = store
                    .rotate_refresh_token(
                        &format!("cr{i}"),
                        500,
                        successor.as_bytes(),
                        &refresh(&successor, "fc", &format!("jn{i}-{copy}")),
                    )
                    .await
                    .unwrap();
                (i, successor, rotated)
            })
        })
        .collect();
    let mut winners = std::collections::HashMap::new();
    for rotation in rotations {
        let (i, successor, rotated) = rotation.await.unwrap();
        let stored = store.refresh_token(&successor).await.unwrap();
        assert_eq!(
            stored.is_some(),
            rotated,
            "{successor}: a row only for the winner"
        );
        if rotated {
            assert!(
                winners.insert(i, successor).is_none(),
                "cr{i} rotated twice"
            );
        }
    }
    assert_eq!(winners.len(), 40, "every token rotated exactly once");
    for (i, successor) in winners {
        let spent = store
            .refresh_token(&format!("cr{i}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(spent.used_at, Some(500));
        assert_eq!(
            spent.successor.as_deref(),
            Some(successor.as_bytes()),
            "cr{i} keeps its winner's sealed answer"
        );
    }
}

/// Purging in batches of 3 removes exactly what has ended.
async fn purge(store: &dyn Store) {
    for i in 0..8 {
        let mut c = code(&format!("pc{i}"));
        c.expires_at = if i < 7 { 100 } else { 10_000 };
        store.insert_code(&c).await.unwrap();
        let mut r = refresh(&format!("pr{i}"), &format!("pf{i}"), &format!("pj{i}"));
        r.expires_at = if i < 5 { 100 } else { 10_000 };
        store.insert_refresh_token(&r).await.unwrap();
        store
            .revoke_access_token(&format!("pj{i}"), if i < 4 { 100 } else { 10_000 })
            .await
            .unwrap();
        store
            .record_client_assertion("web", &format!("pa{i}"), if i < 3 { 100 } else { 10_000 })
            .await
            .unwrap();
        store
            .insert_session(&SsoSession {
                id_hash: format!("ps{i}"),
                user_id: "id-alice".into(),
                auth_time: 1,
                expires_at: if i < 6 { 100 } else { 10_000 },
                amr: vec!["pwd".into()],
                ..SsoSession::default()
            })
            .await
            .unwrap();
        store
            .hit_window(&format!("pw{i}"), 0, if i < 2 { 100 } else { 10_000 })
            .await
            .unwrap();
    }
    for i in 0..3 {
        store
            .insert_password_reset(&reset(&format!("pw{i}"), if i < 2 { 100 } else { 10_000 }))
            .await
            .unwrap();
    }
    let purged = store.purge_expired(100, 3).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            codes: 7,
            refresh_tokens: 5,
            revoked_tokens: 4,
            client_assertions: 3,
            sessions: 6,
            rate_limit_windows: 2,
            password_resets: 2,
            email_links: 0,
        }
    );
    assert_eq!(
        store.purge_expired(100, 3).await.unwrap(),
        Purged::default()
    );
    assert!(store.refresh_token("pr5").await.unwrap().is_some());
    assert!(store.refresh_token("pr4").await.unwrap().is_none());
    assert!(store.session("ps6").await.unwrap().is_some());
    assert!(store.access_token_revoked("pj4").await.unwrap());
    assert!(!store.access_token_revoked("pj3").await.unwrap());
    assert_eq!(store.window_hits("pw2", 0).await.unwrap(), 1);
    assert_eq!(store.window_hits("pw1", 0).await.unwrap(), 0);
}

/// User states, the failure counter, TOTP credentials and recovery codes.
async fn accounts(store: Arc<dyn Store>) {
    store.insert_user(&user("alice")).await.unwrap();
    let id = "id-alice";

    // the failure counter is a compare-and-swap: of 8 concurrent swaps from
    // one value exactly one wins
    let zero = LoginCounter::default();
    assert_eq!(store.login_counter(id).await.unwrap(), Some(zero));
    assert_eq!(store.login_counter("nobody").await.unwrap(), None);
    let one = LoginCounter {
        failures: 1,
        last_failed_at: 50,
    };
    let swaps = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.swap_login_counter(id, zero, one).await.unwrap() })
    });
    let mut winners = 0;
    for swap in swaps {
        winners += usize::from(swap.await.unwrap());
    }
    assert_eq!(winners, 1);
    assert_eq!(store.login_counter(id).await.unwrap(), Some(one));

    // a state change is conditional on the current state, and ending the
    // sessions revokes the user's refresh tokens, their access tokens and
    // SSO sessions
    store
        .insert_refresh_token(&refresh("ar1", "af1", "aj1"))
        .await
        .unwrap();
    store
        .insert_session(&SsoSession {
            id_hash: "as1".into(),
            user_id: id.into(),
            auth_time: 1,
            expires_at: 10_000,
            amr: vec!["pwd".into()],
            ..SsoSession::default()
        })
        .await
        .unwrap();
    assert!(
        !store
            .set_user_state(id, "suspended", "active", false, 100)
            .await
            .unwrap()
    );
    assert!(
        store
            .set_user_state(id, "active", "suspended", true, 100)
            .await
            .unwrap()
    );
    assert_eq!(
        store.user_by_id(id).await.unwrap().unwrap().state,
        "suspended"
    );
    assert!(
        store
            .refresh_token("ar1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(store.access_token_revoked("aj1").await.unwrap());
    assert_eq!(store.session("as1").await.unwrap(), None);

    assert!(
        store
            .set_user_roles(id, &["reader".to_owned()])
            .await
            .unwrap()
    );
    assert!(store.set_user_password(id, "$argon2id$new").await.unwrap());
    let changed = store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(changed.roles, ["reader"]);
    assert_eq!(changed.password_hash, "$argon2id$new");

    // TOTP: unconfirmed secrets may be replaced, confirmed ones not; a
    // confirmation needs the very secret it checked
    let credential = |secret: &[u8]| TotpCredential {
        user_id: id.into(),
        sealed_secret: secret.to_vec(),
        created_at: 10,
        confirmed_at: None,
        last_step: 0,
    };
    assert!(
        store
            .put_unconfirmed_totp(&credential(b"s1"))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_unconfirmed_totp(&credential(b"s2"))
            .await
            .unwrap()
    );
    let codes = ["rc1".to_owned(), "rc2".to_owned()];
    assert!(!store.confirm_totp(id, b"s1", 7, 20, &codes).await.unwrap());
    assert!(!store.use_totp_step(id, 8).await.unwrap(), "unconfirmed");
    assert!(store.confirm_totp(id, b"s2", 7, 20, &codes).await.unwrap());
    assert!(
        !store
            .put_unconfirmed_totp(&credential(b"s3"))
            .await
            .unwrap()
    );
    let stored = store.totp_credential(id).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.sealed_secret.as_slice(),
            stored.confirmed_at,
            stored.last_step
        ),
        (&b"s2"[..], Some(20), 7)
    );

    // a time step and a recovery code are each accepted once
    assert!(!store.use_totp_step(id, 7).await.unwrap());
    assert!(store.use_totp_step(id, 8).await.unwrap());
    assert!(!store.use_totp_step(id, 8).await.unwrap());
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 2);
    assert!(store.use_recovery_code(id, "rc1", 30).await.unwrap());
    assert!(!store.use_recovery_code(id, "rc1", 31).await.unwrap());
    assert!(!store.use_recovery_code(id, "unknown", 31).await.unwrap());
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 1);

    assert!(store.delete_mfa(id).await.unwrap());
    assert!(!store.delete_mfa(id).await.unwrap());
    assert_eq!(store.totp_credential(id).await.unwrap(), None);
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 0);

    password_resets(store).await;
}

/// Password changes and reset links: a change may keep the session that
/// made it; a link is found by its hash only while live, and spent once
/// however many use it at the same time, ending every session.
async fn password_resets(store: Arc<dyn Store>) {
    let id = "id-alice";
    store
        .insert_user(&User {
            email: Some("Alice@Example.test".into()),
            ..user("alice2")
        })
        .await
        .unwrap();
    let found = store.user_by_email("alice@example.TEST").await.unwrap();
    assert_eq!(
        found.map(|u| u.username),
        Some("alice".to_owned()),
        "the oldest"
    );
    assert_eq!(
        store.user_by_email("nobody@example.test").await.unwrap(),
        None
    );

    for session in ["keep", "other"] {
        store
            .insert_session(&SsoSession {
                id_hash: session.into(),
                user_id: id.into(),
                auth_time: 1,
                expires_at: 10_000,
                amr: vec!["pwd".into()],
                ..SsoSession::default()
            })
            .await
            .unwrap();
    }
    store
        .insert_refresh_token(&refresh("pwr1", "pwf1", "pwj1"))
        .await
        .unwrap();
    assert!(
        store
            .change_password(id, "h1", Some("keep"), 100)
            .await
            .unwrap()
    );
    assert!(store.session("keep").await.unwrap().is_some());
    assert!(store.session("other").await.unwrap().is_none());
    assert!(
        store
            .refresh_token("pwr1")
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    assert!(store.access_token_revoked("pwj1").await.unwrap());
    assert!(store.change_password(id, "h2", None, 100).await.unwrap());
    assert!(store.session("keep").await.unwrap().is_some());
    assert!(
        !store
            .change_password("nobody", "h", None, 100)
            .await
            .unwrap()
    );

    store
        .insert_password_reset(&reset("live", 1_000))
        .await
        .unwrap();
    store
        .insert_password_reset(&reset("old", 100))
        .await
        .unwrap();
    assert_eq!(
        store
            .password_reset_user("live", 500)
            .await
            .unwrap()
            .as_deref(),
        Some(id)
    );
    assert_eq!(store.password_reset_user("old", 500).await.unwrap(), None);
    assert_eq!(store.password_reset_user("none", 500).await.unwrap(), None);
    assert_eq!(store.reset_password("old", "h3", 500).await.unwrap(), None);

    let counter = LoginCounter {
        failures: 9,
        last_failed_at: 400,
    };
    let current = store.login_counter(id).await.unwrap().unwrap();
    assert!(
        store
            .swap_login_counter(id, current, counter)
            .await
            .unwrap()
    );
    let uses = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .reset_password("live", &format!("new{i}"), 500)
                .await
                .unwrap()
        })
    });
    let mut winners = 0;
    for used in uses {
        winners += usize::from(used.await.unwrap().is_some());
    }
    assert_eq!(winners, 1, "one use of a link succeeds");
    assert_eq!(store.password_reset_user("live", 500).await.unwrap(), None);
    let user = store.user_by_id(id).await.unwrap().unwrap();
    assert!(user.password_hash.starts_with("new"));
    assert_eq!(
        store.login_counter(id).await.unwrap(),
        Some(LoginCounter::default())
    );
    assert!(
        store.session("keep").await.unwrap().is_none(),
        "every session ends"
    );
    self_service(store).await;
}

fn link(hash: &str, purpose: &str, user_id: &str, email: &str) -> EmailLink {
    EmailLink {
        token_hash: hash.to_owned(),
        purpose: purpose.to_owned(),
        user_id: user_id.to_owned(),
        email: email.to_owned(),
        created_at: 100,
        expires_at: 1_000,
    }
}

/// Links sent by mail (spent once, for their purpose and address only),
/// sessions and applications a user sees and ends, recovery codes replaced.
async fn self_service(store: Arc<dyn Store>) {
    let id = "id-carol";
    store
        .insert_user(&User {
            state: "invited".into(),
            password_hash: String::new(),
            ..user("carol")
        })
        .await
        .unwrap();
    let verify = LinkEffect {
        password_hash: None,
        activate: false,
    };
    store
        .insert_email_link(&link("v1", "verify_email", id, "carol@example.test"))
        .await
        .unwrap();
    assert!(
        store
            .email_link("v1", "verify_email", 999)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.email_link("v1", "invitation", 999).await.unwrap(),
        None
    );
    assert_eq!(
        store.email_link("v1", "verify_email", 1_000).await.unwrap(),
        None
    );
    assert_eq!(
        store
            .spend_email_link("v1", "invitation", verify, 500)
            .await
            .unwrap(),
        None,
        "another purpose"
    );
    let uses = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .spend_email_link("v1", "verify_email", verify, 500)
                .await
        })
    });
    let mut winners = 0;
    for used in uses {
        winners += usize::from(used.await.unwrap().unwrap().is_some());
    }
    assert_eq!(winners, 1, "one use of a link succeeds");
    let carol = store.user_by_id(id).await.unwrap().unwrap();
    assert!(carol.email_verified);
    assert_eq!(
        carol.state, "invited",
        "verifying an address activates no one"
    );

    // A change of address unverifies it; a link to the old one proves nothing.
    store
        .insert_email_link(&link("v2", "verify_email", id, "carol@example.test"))
        .await
        .unwrap();
    assert!(store.change_email(id, "carol@new.example").await.unwrap());
    assert!(
        !store
            .change_email("nobody", "x@example.test")
            .await
            .unwrap()
    );
    assert!(!store.user_by_id(id).await.unwrap().unwrap().email_verified);
    assert_eq!(
        store
            .spend_email_link("v2", "verify_email", verify, 500)
            .await
            .unwrap(),
        None
    );
    assert!(!store.user_by_id(id).await.unwrap().unwrap().email_verified);

    // An invitation sets the password and activates.
    store
        .insert_email_link(&link("i1", "invitation", id, "Carol@New.example"))
        .await
        .unwrap();
    let accept = LinkEffect {
        password_hash: Some("$argon2id$new"),
        activate: true,
    };
    assert_eq!(
        store
            .spend_email_link("i1", "invitation", accept, 500)
            .await
            .unwrap(),
        Some(id.to_owned())
    );
    let carol = store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(
        (carol.state.as_str(), carol.password_hash.as_str()),
        ("active", "$argon2id$new")
    );
    assert!(carol.email_verified);

    // Sessions: listed while live, most recently used first; touched at most
    // once per resolution; ended one by one or all together.
    for (hash, seen) in [("cs1", 10), ("cs2", 20), ("cs3", 30)] {
        store
            .insert_session(&SsoSession {
                id_hash: hash.into(),
                user_id: id.into(),
                auth_time: 1,
                expires_at: if hash == "cs3" { 50 } else { 10_000 },
                amr: vec!["pwd".into()],
                created_at: 1,
                last_seen_at: seen,
                user_agent: "agent".into(),
                address: "192.0.2.1".into(),
            })
            .await
            .unwrap();
    }
    let listed = |at| {
        let store = store.clone();
        async move {
            store
                .user_sessions(id, at)
                .await
                .unwrap()
                .into_iter()
                .map(|s| (s.id_hash, s.last_seen_at))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(100).await, [("cs2".into(), 20), ("cs1".into(), 10)]);
    store.touch_session("cs1", 100, 60).await.unwrap();
    store.touch_session("cs1", 150, 60).await.unwrap();
    assert_eq!(listed(100).await[0], ("cs1".into(), 100), "touched once");
    assert!(
        !store.end_user_session("id-alice", "cs1").await.unwrap(),
        "not hers"
    );
    assert!(store.end_user_session(id, "cs1").await.unwrap());
    assert_eq!(listed(100).await, [("cs2".into(), 20)]);

    // Applications: one per client with live refresh tokens, each revocable.
    for (hash, client) in [("cr1", "web"), ("cr2", "web"), ("cr3", "cli")] {
        store
            .insert_refresh_token(&RefreshToken {
                user_id: id.into(),
                client_id: client.into(),
                ..refresh(hash, hash, &format!("j{hash}"))
            })
            .await
            .unwrap();
    }
    let apps = store.user_apps(id, 200).await.unwrap();
    let names: Vec<(&str, i64)> = apps
        .iter()
        .map(|a| (a.client_id.as_str(), a.tokens))
        .collect();
    assert_eq!(names, [("cli", 1), ("web", 2)]);
    assert_eq!(store.revoke_user_app(id, "web", 200).await.unwrap(), 2);
    assert!(store.access_token_revoked("jcr1").await.unwrap());
    assert_eq!(store.user_apps(id, 200).await.unwrap().len(), 1);
    store.end_all_sessions(id, 200).await.unwrap();
    assert!(store.user_apps(id, 200).await.unwrap().is_empty());
    assert!(store.user_sessions(id, 100).await.unwrap().is_empty());

    // Recovery codes are replaced only for a confirmed credential.
    assert!(
        !store
            .replace_recovery_codes(id, &["r1".into()])
            .await
            .unwrap()
    );
    store
        .put_unconfirmed_totp(&TotpCredential {
            user_id: id.into(),
            sealed_secret: vec![1],
            created_at: 1,
            confirmed_at: None,
            last_step: 0,
        })
        .await
        .unwrap();
    assert!(
        store
            .confirm_totp(id, &[1], 5, 2, &["old".into()])
            .await
            .unwrap()
    );
    assert!(
        store
            .replace_recovery_codes(id, &["n1".into(), "n2".into()])
            .await
            .unwrap()
    );
    assert!(!store.use_recovery_code(id, "old", 3).await.unwrap());
    assert_eq!(store.recovery_codes_left(id).await.unwrap(), 2);
}

#[tokio::test]
async fn sqlite_backend_passes_the_suite() {
    let dir = echo_testkit::data_dir();
    suite(
        echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap(),
    )
    .await;
    let dir = echo_testkit::data_dir();
    purge(
        &*echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap(),
    )
    .await;
    let dir = echo_testkit::data_dir();
    accounts(
        echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn postgres_backend_passes_the_suite() {
    let db = PgTestDb::create("postgres_backend_passes_the_suite").await;
    let dir = echo_testkit::data_dir();
    suite(
        echo_identity_store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap(),
    )
    .await;
    db.drop_db().await;
    let db = PgTestDb::create("postgres_backend_purges").await;
    purge(
        &*echo_identity_store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap(),
    )
    .await;
    db.drop_db().await;
    let db = PgTestDb::create("postgres_backend_accounts").await;
    accounts(
        echo_identity_store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap(),
    )
    .await;
    db.drop_db().await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = echo_testkit::data_dir();
    echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
        .await
        .unwrap()
        .insert_user(&user("alice"))
        .await
        .unwrap();
    let again = echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
        .await
        .unwrap();
    assert!(again.user_by_username("alice").await.unwrap().is_some());
}

/// The WAL reaches the database file without the writer stopping to copy
/// it: the background checkpointer does it within moments, although the
/// writer's own threshold is far from reached.
#[tokio::test]
async fn the_wal_is_copied_into_the_database_in_the_background() {
    let dir = echo_testkit::data_dir();
    let store = echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
        .await
        .unwrap();
    store.insert_user(&user("alice")).await.unwrap();
    let file = dir.path().join("echo.db");
    let before = std::fs::metadata(&file).unwrap().len();
    for i in 0..300 {
        let mut token = refresh(&format!("wal{i}"), "fw", &format!("jw{i}"));
        token.successor = Some(vec![7; 1_000]);
        store.insert_refresh_token(&token).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(&file).unwrap().len();
        if now >= before + 300_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "database file still {now} bytes (was {before}): the WAL was not checkpointed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
