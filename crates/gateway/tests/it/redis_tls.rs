//! Sessions in a Redis that speaks TLS only (`rediss://`), started by the
//! test with a certificate from a test CA.

use echo_crypto::TrustedRoots;
use echo_gateway::RedisSessionStore;
use echo_testkit::tls::{TestCa, TlsRedis};

use crate::sessions::{CONTRACT_IDLE, store_contract};

const PREFIX: &str = "echo:gateway:";

#[tokio::test]
async fn sessions_keep_their_contract_over_rediss_trusting_the_ca_file() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(
        "sessions_keep_their_contract_over_rediss_trusting_the_ca_file",
        &ca,
    );
    let roots = TrustedRoots::load(Some(&ca.ca_file)).unwrap();
    let store = RedisSessionStore::open(&redis.url(), &roots, PREFIX, CONTRACT_IDLE)
        .await
        .unwrap();
    store_contract(&store).await;
}

#[tokio::test]
async fn a_redis_whose_certificate_chains_to_an_unknown_ca_is_refused() {
    let ca = TestCa::new();
    let redis = TlsRedis::start(
        "a_redis_whose_certificate_chains_to_an_unknown_ca_is_refused",
        &ca,
    );
    let other_ca = TestCa::new();
    for roots in [
        TrustedRoots::load(Some(&other_ca.ca_file)).unwrap(),
        TrustedRoots::system(),
    ] {
        let error = RedisSessionStore::open(&redis.url(), &roots, PREFIX, CONTRACT_IDLE)
            .await
            .expect_err("an unknown CA is not trusted")
            .to_string();
        assert!(error.contains("invalid peer certificate"), "{error}");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }
}
