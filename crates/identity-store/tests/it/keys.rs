//! Signing keys: stored with their times, and the conditional updates
//! that only ever move a key forward in its life.

use echo_identity_store::{KeyStore, StoreError, StoredKey};

fn key(kid: &str, activates_at: i64, audience: Option<&str>) -> StoredKey {
    StoredKey {
        kid: kid.to_owned(),
        alg: "ES256".into(),
        sealed_private: vec![0, 1, 255],
        public_jwk: "{}".into(),
        created_at: 5,
        audience: audience.map(str::to_owned),
        activates_at,
        retired_at: None,
        revoked_at: None,
    }
}

pub async fn lifecycle(store: &dyn KeyStore) {
    let k1 = key("k1", 5, None);
    store.insert_key(&k1).await.unwrap();
    assert!(matches!(
        store.insert_key(&k1).await,
        Err(StoreError::Conflict(_))
    ));
    let k2 = key("k2", 50, Some("parser"));
    store.insert_key(&k2).await.unwrap();
    // Ordered by activation, whatever the insertion order.
    store.insert_key(&key("k0", 1, None)).await.unwrap();
    let kids = |keys: Vec<StoredKey>| keys.into_iter().map(|k| k.kid).collect::<Vec<_>>();
    assert_eq!(kids(store.keys().await.unwrap()), ["k0", "k1", "k2"]);
    assert_eq!(
        store.keys().await.unwrap()[2],
        k2,
        "every field round-trips"
    );

    // Activation only moves earlier.
    assert!(!store.activate_key("k2", 60).await.unwrap());
    assert!(store.activate_key("k2", 20).await.unwrap());
    assert!(!store.activate_key("nope", 1).await.unwrap());

    // Retirement only moves earlier.
    assert!(store.retire_key("k1", 100).await.unwrap());
    assert!(!store.retire_key("k1", 200).await.unwrap());
    assert!(store.retire_key("k1", 90).await.unwrap());

    // Revocation happens once, and ends every other change.
    assert!(store.revoke_key("k2", 30).await.unwrap());
    assert!(!store.revoke_key("k2", 31).await.unwrap());
    assert!(!store.retire_key("k2", 31).await.unwrap());
    assert!(!store.activate_key("k2", 1).await.unwrap());
    assert!(!store.revoke_key("nope", 1).await.unwrap());

    let keys = store.keys().await.unwrap();
    assert_eq!(kids(keys.clone()), ["k0", "k1", "k2"]);
    assert_eq!(keys[1].retired_at, Some(90));
    assert_eq!(
        (keys[2].activates_at, keys[2].revoked_at, keys[2].retired_at),
        (20, Some(30), None)
    );
}
