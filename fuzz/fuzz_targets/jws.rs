//! A compact JWS from arbitrary bytes: parsing never panics, and no
//! forged token verifies under a key it was not signed with.

#![no_main]

use std::sync::LazyLock;

use echo_crypto::jws::CompactJws;
use echo_crypto::{Algorithm, SigningKey, VerifyingKey};
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<Vec<VerifyingKey>> = LazyLock::new(|| {
    [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256]
        .into_iter()
        .map(|alg| {
            let key = SigningKey::generate(alg, "k1").expect("a key");
            VerifyingKey::from_jwk(&key.public_jwk()).expect("its public key")
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(jws) = CompactJws::parse(token) else {
        return;
    };
    let _ = jws.payload();
    for key in KEYS.iter() {
        // Keys made here sign nothing the fuzzer can see: any success is a
        // forgery.
        assert!(
            key.verify(&jws).is_err(),
            "a forged token verified: {token}"
        );
    }
});
