//! The same storage suite against both backends.

use std::sync::Arc;

use echo_store::{AuthCode, Client, CodeUse, SsoSession, Store, StoreError, StoredKey, User};
use echo_testkit::PgTestDb;

fn user(name: &str) -> User {
    User {
        id: format!("id-{name}"),
        username: name.to_owned(),
        email: Some(format!("{name}@example.test")),
        password_hash: "$argon2id$...".into(),
        roles: vec!["admin".into(), "auditor".into()],
        created_at: 100,
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

    // keys
    let key = StoredKey {
        kid: "k1".into(),
        alg: "ES256".into(),
        sealed_private: vec![0, 1, 255],
        public_jwk: "{}".into(),
        created_at: 5,
    };
    store.insert_key(&key).await.unwrap();
    assert!(matches!(
        store.insert_key(&key).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.keys().await.unwrap(), vec![key]);

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
    };
    store.insert_session(&session).await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), Some(session));
    store.delete_session("s1").await.unwrap();
    assert_eq!(store.session("s1").await.unwrap(), None);
}

#[tokio::test]
async fn sqlite_backend_passes_the_suite() {
    let dir = echo_testkit::data_dir();
    suite(echo_store::open(None, dir.path()).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_backend_passes_the_suite() {
    let Some(db) = PgTestDb::create("postgres_backend_passes_the_suite").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    suite(echo_store::open(Some(&db.url), dir.path()).await.unwrap()).await;
    db.drop_db().await;
}

#[tokio::test]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = echo_testkit::data_dir();
    echo_store::open(None, dir.path())
        .await
        .unwrap()
        .insert_user(&user("alice"))
        .await
        .unwrap();
    let again = echo_store::open(None, dir.path()).await.unwrap();
    assert!(again.user_by_username("alice").await.unwrap().is_some());
}
