//! Password logins per second on one core against the physical limit: the
//! raw argon2id verification rate with the same parameters (m=19 MiB, t=2,
//! p=1). A login is everything `Provider::login` does for a password-only
//! user: the user lookup, the lockout reservation (a compare-and-swap in
//! SQLite), the argon2id verification on the blocking pool, clearing the
//! counter, opening the SSO session and the audit event.
//!
//! taskset -c 1 cargo bench -p echo-identity --bench login

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use echo_core::SystemClock;
use echo_core::audit::LogAuditSink;
use echo_crypto::password::{hash_password, verify_password};
use echo_crypto::seal::MasterKey;
use echo_edge::Origin;
use echo_identity::admin::{NewUser, add_user};
use echo_identity::login::PasswordOutcome;
use echo_identity::{IdentityConfig, Provider};

const PASSWORD: &str = "correct horse battery staple";

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("password");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(15));

    let phc = hash_password(PASSWORD).expect("hash");
    group.bench_function("argon2id_verify", |b| {
        b.iter(|| assert!(verify_password(PASSWORD, &phc)))
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let provider = runtime.block_on(async {
        let store =
            echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .expect("store");
        let user = NewUser {
            username: "alice".into(),
            password: PASSWORD.into(),
            email: None,
            roles: vec![],
        };
        add_user(&*store, &LogAuditSink, &SystemClock, user)
            .await
            .expect("user");
        let mut config = IdentityConfig::new("http://127.0.0.1:8081");
        config.login_attempts_per_minute = u32::MAX;
        Provider::new(
            config,
            store,
            &MasterKey::generate(),
            Arc::new(LogAuditSink),
            Arc::new(SystemClock),
        )
        .await
        .expect("provider")
    });
    let meta = Origin::unknown();
    group.bench_function("login", |b| {
        b.iter(|| {
            let outcome = runtime
                .block_on(provider.login("alice", PASSWORD, &meta))
                .expect("login");
            assert!(matches!(outcome, PasswordOutcome::LoggedIn(_)));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
