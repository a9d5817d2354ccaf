//! Verify rate of the shared verifier on one core, cache miss and hit.
//!
//! cargo bench -p echo-verify --bench verify

use std::sync::Arc;

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_verify::{Expectations, JwksSource, Verifier, VerifierOptions, VerifyError};
use serde_json::json;

struct Fixed(JwkSet);

#[async_trait]
impl JwksSource for Fixed {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        Ok(self.0.clone())
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let expect = Expectations::access_token("audit");
    for alg in Algorithm::ALL {
        let key = SigningKey::generate(alg, "k1").expect("key");
        let source = Arc::new(Fixed(JwkSet {
            keys: vec![key.public_jwk()],
        }));
        let claims = |jti: u64| {
            json!({"iss": "http://127.0.0.1:8081", "sub": "svc-a", "aud": "audit",
                   "exp": 4_000_000_000i64, "iat": 1_800_000_000i64, "jti": jti.to_string(),
                   "client_id": "svc-a", "scope": "audit.write"})
        };
        // Miss: a cache of one entry and a fresh token each time.
        let miss = Verifier::new(
            "http://127.0.0.1:8081",
            source.clone(),
            VerifierOptions {
                cache_capacity: 1,
                ..Default::default()
            },
        );
        let tokens: Vec<String> = (0..1024)
            .map(|i| key.sign("at+jwt", &claims(i)).expect("sign"))
            .collect();
        let mut i = 0usize;
        c.bench_function(&format!("verify_miss/{alg}"), |b| {
            b.iter(|| {
                i = (i + 1) % tokens.len();
                rt.block_on(miss.verify(&tokens[i], &expect))
                    .expect("valid")
            })
        });
        let hit = Verifier::new("http://127.0.0.1:8081", source, VerifierOptions::default());
        let token = &tokens[0];
        c.bench_function(&format!("verify_hit/{alg}"), |b| {
            b.iter(|| rt.block_on(hit.verify(token, &expect)).expect("valid"))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
