//! Sign and verify cost of each JWS algorithm on one core: the measurement
//! that picks Echo's default access-token algorithm (see BENCHMARKS.md).
//!
//! cargo bench -p echo-crypto --bench jws

use criterion::{Criterion, criterion_group, criterion_main};
use echo_crypto::jws::CompactJws;
use echo_crypto::{Algorithm, SigningKey, VerifyingKey};
use serde_json::json;

fn claims() -> serde_json::Value {
    json!({
        "iss": "http://127.0.0.1:8081", "sub": "svc-a", "aud": "audit",
        "exp": 1_900_000_000, "iat": 1_899_999_100, "jti": "dGhpcyBpcyBhIGp0aSB2YWx1ZQ",
        "client_id": "svc-a", "scope": "audit.write",
    })
}

fn bench(c: &mut Criterion) {
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, "bench").expect("key");
        let claims = claims();
        c.bench_function(&format!("sign/{alg}"), |b| {
            b.iter(|| key.sign("at+jwt", &claims).expect("sign"))
        });
        let token = key.sign("at+jwt", &claims).expect("sign");
        let verifier = VerifyingKey::from_jwk(&key.public_jwk()).expect("jwk");
        c.bench_function(&format!("verify/{alg}"), |b| {
            b.iter(|| {
                let jws = CompactJws::parse(&token).expect("parse");
                verifier.verify(&jws).expect("verify")
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
