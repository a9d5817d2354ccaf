//! The audit service inside `echod up`, and `echod audit verify` against
//! each way of tampering with the stored chain.

use std::path::Path;

use sqlx::{Connection, SqliteConnection};

use super::{SECRET, add_svc_a, client_credentials, echod, start, start_up, up_on_free_ports};

/// A data directory whose audit log holds events e1..e10 from service
/// `svc-a` and a signed checkpoint over all ten.
async fn seeded() -> echo_testkit::TempDir {
    let dir = echo_testkit::data_dir();
    add_svc_a(echod(dir.path()));
    let server = start_up(up_on_free_ports(dir.path()));
    let audit = server.ready[1].clone();
    let token: serde_json::Value = client_credentials(&server.addr, "svc-a", SECRET)
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();

    // Identity audits the token it just issued through the writer library,
    // over HTTP, with its own service token: it shows up in the log. The
    // writer (svc-a) may not read the log.
    let refused = client
        .get(format!("http://{audit}/v1/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    wait_for_identity_event(dir.path(), "token.issued").await;

    let events: Vec<serde_json::Value> = (1..=10)
        .map(|i| serde_json::json!({"id": format!("e{i}"), "level": "info", "action": "test.event", "message": format!("event {i}")}))
        .collect();
    let stored = client
        .post(format!("http://{audit}/v1/events"))
        .bearer_auth(&token)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(stored.status(), 200, "{}", stored.text().await.unwrap());
    let checkpoint = client
        .get(format!("http://{audit}/v1/checkpoint"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(checkpoint.status(), 200);
    drop(server);
    dir
}

/// Polls the log (with `echod audit tail`) until identity's `action` about
/// svc-a is in it.
async fn wait_for_identity_event(dir: &Path, action: &str) {
    for _ in 0..100 {
        let tail = echod(dir)
            .args(["audit", "tail", "-n", "100"])
            .output()
            .unwrap();
        let found = String::from_utf8_lossy(&tail.stdout).lines().any(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            event["service"] == "identity" && event["action"] == action && event["actor"] == "svc-a"
        });
        if found {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("identity's {action} event never reached the audit log");
}

/// A copy of the data directory's files (databases and keys; the writer's
/// spool directory is left behind, it is empty once the log holds all).
fn copy_dir(from: &Path) -> echo_testkit::TempDir {
    let to = echo_testkit::data_dir();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.path().join(entry.file_name())).unwrap();
        }
    }
    to
}

async fn tamper(dir: &Path, statements: &[&str]) {
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    for statement in statements {
        sqlx::query(statement).execute(&mut db).await.unwrap();
    }
    db.close().await.unwrap();
}

fn verify(dir: &Path) -> (bool, String) {
    let out = echod(dir).args(["audit", "verify"]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_names_every_kind_of_tampering() {
    let seeded = seeded().await;
    let (ok, out) = verify(seeded.path());
    assert!(ok, "{out}");

    let tail = echod(seeded.path())
        .args(["audit", "tail", "-n", "3"])
        .output()
        .unwrap();
    let ids: Vec<String> = String::from_utf8_lossy(&tail.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids, ["e8", "e9", "e10"]);
    // Identity's key.created events (its first two signing keys), its
    // token.issued and audit.query.denied events, then e1..e10.
    assert!(out.starts_with("ok 14 events, head "), "{out}");

    let cases: [(&str, &[&str], &str); 5] = [
        (
            "change one field",
            &["UPDATE audit_events SET message = 'nothing happened' WHERE id = 'e5'"],
            "Changed at event e5",
        ),
        (
            "delete one",
            &["DELETE FROM audit_events WHERE id = 'e5'"],
            "Removed at event e6",
        ),
        (
            "insert one",
            &[
                "UPDATE audit_events SET seq = seq + 1000 WHERE seq >= 5",
                "UPDATE audit_events SET seq = seq - 999 WHERE seq >= 1005",
                "INSERT INTO audit_events SELECT 5, 'forged', time, service, level, action, actor, outcome, ip, user_agent, trace_id, 'forged', context, hash FROM audit_events WHERE seq = 4",
            ],
            "at event forged",
        ),
        (
            "swap two",
            &[
                "UPDATE audit_events SET seq = -1 WHERE id = 'e4'",
                "UPDATE audit_events SET seq = seq - 1 WHERE id = 'e5'",
                "UPDATE audit_events SET seq = (SELECT seq FROM audit_events WHERE id = 'e5') + 1 WHERE id = 'e4'",
            ],
            "Reordered at event e5",
        ),
        (
            "truncate the tail",
            &[
                "DELETE FROM audit_events WHERE seq > (SELECT seq FROM audit_events WHERE id = 'e7')",
            ],
            "Truncated at event e7",
        ),
    ];
    for (what, statements, expected) in cases {
        let dir = copy_dir(seeded.path());
        tamper(dir.path(), statements).await;
        let (ok, out) = verify(dir.path());
        assert!(!ok, "{what}: verify passed: {out}");
        assert!(
            out.contains(expected),
            "{what}: expected {expected:?}, got {out:?}"
        );
    }
}

/// `serve identity --audit-url` and `serve audit` as separate processes:
/// identity's events cross real HTTP with its own token, spooled while the
/// audit service is not up yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_identity_writes_to_a_separate_audit_service() {
    let dir = echo_testkit::data_dir();
    add_svc_a(echod(dir.path()));
    // A free port for the audit service, which starts after identity.
    let audit_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();

    let mut identity = echod(dir.path());
    identity.args([
        "serve",
        "identity",
        "--listen",
        "127.0.0.1:0",
        "--audit-url",
        &format!("http://{audit_addr}"),
    ]);
    let identity = start(identity, 1);
    assert_eq!(
        client_credentials(&identity.addr, "svc-a", SECRET)
            .await
            .status(),
        200
    );

    let mut audit = echod(dir.path());
    audit.args([
        "serve",
        "audit",
        "--listen",
        &audit_addr,
        "--issuer",
        &format!("http://{}", identity.addr),
    ]);
    let _audit = start(audit, 1);
    wait_for_identity_event(dir.path(), "token.issued").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_prune_keeps_recent_events_and_anchors_what_remains() {
    let seeded = seeded().await;
    let dir = copy_dir(seeded.path());
    let prune = |age: &str| {
        let out = echod(dir.path())
            .args(["audit", "prune", "--older-than", age])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(prune("1h"), "pruned 0 events\n");
    // Everything is older than nothing: all fourteen go, and the prune's
    // own record starts the retained chain.
    assert_eq!(prune("0s"), "pruned 14 events\n");
    let (ok, out) = verify(dir.path());
    assert!(ok, "{out}");
    assert!(out.starts_with("ok 1 events, head "), "{out}");
    assert!(out.contains("events 1 to 14 were pruned"), "{out}");

    // Without the checkpoint signed at the cut, the cut is unexplained.
    tamper(
        dir.path(),
        &["DELETE FROM audit_checkpoints WHERE size = 14"],
    )
    .await;
    let (ok, out) = verify(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("Removed at event"), "{out}");
}

#[test]
fn audit_verify_without_the_signing_key_refuses_and_creates_none() {
    let dir = echo_testkit::data_dir();
    let out = echod(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no audit signing key"), "{stderr}");
    assert!(!dir.path().join("audit-signing.key").exists());
}
