//! The audit service inside `echod up`, and `echod audit verify` against
//! each way of tampering with the stored chain.

use std::path::Path;
use std::process::Command;

use sqlx::{Connection, SqliteConnection};

use super::{
    SECRET, add_svc_a, client_credentials, echod, run_with_stdin, start, start_up, up_on_free_ports,
};

/// Registers `svc-a` as [`add_svc_a`] does, with scope `audit.write`: a
/// writer to the audit log.
fn add_writer(dir: &Path) {
    let mut cmd = echod(dir);
    cmd.args([
        "client",
        "add",
        "svc-a",
        "--secret-stdin",
        "--grant",
        "client_credentials",
        "--audience",
        "audit",
        "--scope",
        "audit.write",
    ]);
    let out = run_with_stdin(cmd, &format!("{SECRET}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A data directory whose audit log holds events e1..e10 from service
/// `svc-a` and a signed checkpoint over all ten.
async fn seeded() -> echo_testkit::TempDir {
    let dir = echo_testkit::data_dir();
    add_writer(dir.path());
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
        sqlx::query(sqlx::AssertSqlSafe(*statement))
            .execute(&mut db)
            .await
            .unwrap();
    }
    db.close().await.unwrap();
}

fn verify(dir: &Path) -> (bool, String) {
    verify_with(dir, &[])
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

/// Issue 14 §13: no client may be registered under the name of one of
/// Echo's own services, whose names its tokens' `sub` would carry into the
/// audit log.
#[test]
fn audit_and_identity_cannot_be_registered_as_clients() {
    let dir = echo_testkit::data_dir();
    for reserved in ["audit", "identity"] {
        let out = echod(dir.path())
            .args([
                "client",
                "add",
                reserved,
                "--generate-secret",
                "--grant",
                "client_credentials",
                "--scope",
                "audit.write",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{reserved} was registered");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("client id \"{reserved}\" is reserved")),
            "{stderr}"
        );
    }
}

/// Issue 14 §13: a client without scope `audit.write` cannot write to the
/// audit log over HTTP (it could before); one with it can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_writes_need_scope_audit_write() {
    let dir = echo_testkit::data_dir();
    add_svc_a(echod(dir.path()));
    let server = start_up(up_on_free_ports(dir.path()));
    let audit = server.ready[1].clone();
    let token: serde_json::Value = client_credentials(&server.addr, "svc-a", SECRET)
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap();
    let client = reqwest::Client::new();
    let event =
        serde_json::json!([{"id": "x1", "level": "info", "action": "test.event", "message": "hi"}]);
    let refused = client
        .post(format!("http://{audit}/v1/events"))
        .bearer_auth(token)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let log = serde_json::json!({"service": "svc-a", "level": "INFO", "message": "hi"});
    let refused = client
        .post(format!("http://{audit}/log"))
        .bearer_auth(token)
        .json(&log)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
}

/// `echod audit verify` with extra arguments.
fn verify_with(dir: &Path, args: &[&str]) -> (bool, String) {
    verify_by(echod(dir), args)
}

/// `echod audit verify` (with `args`) run by `cmd`, an `echod` command on
/// the chain's data directory and database: whether the chain verified,
/// and what it printed.
pub(super) fn verify_by(mut cmd: Command, args: &[&str]) -> (bool, String) {
    let out = cmd.args(["audit", "verify"]).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Posts `events` to the audit service at `audit` (its base URL) with
/// `token`.
pub(super) async fn post_events(
    http: &reqwest::Client,
    audit: &str,
    token: &str,
    events: &[serde_json::Value],
) -> reqwest::Response {
    http.post(format!("{audit}/v1/events"))
        .bearer_auth(token)
        .json(events)
        .send()
        .await
        .unwrap()
}

/// `echod audit checkpoint`'s signed note.
fn checkpoint_note(dir: &Path) -> String {
    let out = echod(dir).args(["audit", "checkpoint"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// What an attacker with the database (and not the signing key) does to
/// rewrite history: edits event `id`, recomputes every hash after it and
/// the head, and deletes every checkpoint.
async fn rewrite(dir: &Path, id: &str) {
    use echo_audit::event::{Event, Level};
    type Row = (
        i64,
        String,
        i64,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        String,
    );
    let url = format!("sqlite://{}", dir.join("audit.db").display());
    let mut db = SqliteConnection::connect(&url).await.unwrap();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT seq, id, time, service, level, action, actor, outcome, ip, user_agent, trace_id, message, context FROM audit_events ORDER BY seq",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut prev = echo_audit::chain::GENESIS;
    for row in rows {
        let mut event = Event {
            id: row.1,
            time: row.2,
            service: row.3,
            level: Level::parse(&row.4).unwrap(),
            action: row.5,
            actor: row.6,
            outcome: row.7,
            ip: row.8,
            user_agent: row.9,
            trace_id: row.10,
            message: row.11,
            context: serde_json::from_str(&row.12).unwrap(),
        };
        if event.id == id {
            event.message = "nothing happened".into();
        }
        prev = echo_audit::chain::link(&prev, &event);
        sqlx::query("UPDATE audit_events SET message = ?, hash = ? WHERE seq = ?")
            .bind(&event.message)
            .bind(prev.to_vec())
            .bind(row.0)
            .execute(&mut db)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE audit_head SET hash = ?")
        .bind(prev.to_vec())
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_checkpoints")
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
}

/// Issue 14 §12: checkpoints in the database are the attacker's to delete.
/// Cutting the newest events with every checkpoint above the cut, or
/// rewriting the chain with recomputed hashes and deleting every
/// checkpoint, verified `ok`; checkpoints kept elsewhere
/// (`echod audit checkpoint >> FILE`) catch both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_with_trusted_checkpoints_catches_truncation_and_rewrites() {
    let seeded = seeded().await;
    let note = checkpoint_note(seeded.path());
    let body: Vec<&str> = note.lines().collect();
    assert_eq!(body[0], "echo-audit", "{note}");
    assert_eq!(body[4], "", "a C2SP signed note: {note}");
    assert!(body[5].starts_with("\u{2014} echo-audit "), "{note}");
    // Kept on another host: a file of notes appended one after another.
    let elsewhere = echo_testkit::data_dir();
    let trusted = elsewhere.path().join("checkpoints");
    std::fs::write(
        &trusted,
        format!("{note}{}", checkpoint_note(seeded.path())),
    )
    .unwrap();
    let trusted = trusted.to_str().unwrap();
    let (ok, out) = verify_with(seeded.path(), &["--trusted-checkpoint", trusted]);
    assert!(ok, "{out}");
    assert!(
        out.contains("2 trusted checkpoints, the newest at size 14"),
        "{out}"
    );

    // Truncation: the newest events and every checkpoint above the cut.
    let cut = copy_dir(seeded.path());
    tamper(
        cut.path(),
        &[
            "DELETE FROM audit_events WHERE seq > (SELECT seq FROM audit_events WHERE id = 'e7')",
            "DELETE FROM audit_checkpoints WHERE size > (SELECT seq FROM audit_events WHERE id = 'e7')",
            "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_events), hash = (SELECT hash FROM audit_events ORDER BY seq DESC LIMIT 1)",
        ],
    )
    .await;
    let (ok, out) = verify(cut.path());
    assert!(ok, "the database alone cannot tell: {out}");
    let (ok, out) = verify_with(cut.path(), &["--trusted-checkpoint", trusted]);
    assert!(!ok, "{out}");
    assert!(out.contains("broken: Truncated at event e7"), "{out}");

    // A rewrite with every hash recomputed and every checkpoint deleted.
    let rewritten = copy_dir(seeded.path());
    rewrite(rewritten.path(), "e5").await;
    let (ok, out) = verify(rewritten.path());
    assert!(ok, "the database alone cannot tell: {out}");
    let (ok, out) = verify_with(rewritten.path(), &["--trusted-checkpoint", trusted]);
    assert!(!ok, "{out}");
    assert!(out.contains("broken: Changed at event e10"), "{out}");

    // A trusted checkpoint must carry the audit key's signature.
    let forged = elsewhere.path().join("forged");
    std::fs::write(&forged, note.replacen("\n14\n", "\n15\n", 1)).unwrap();
    let (ok, out) = verify_with(
        seeded.path(),
        &["--trusted-checkpoint", forged.to_str().unwrap()],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("does not verify with the audit signing key"),
        "{out}"
    );
}

/// The size a `GET /v1/checkpoint` answer's note signs.
fn size_of(checkpoint: &serde_json::Value) -> i64 {
    let note = checkpoint["checkpoint"].as_str().unwrap();
    note.lines().nth(1).unwrap().parse().unwrap()
}

/// Issue 14 §12: deleting checkpoints from the database went unnoticed.
/// The service signs one every interval while the log grows, so events
/// between two checkpoints spanning more than two intervals mean deleted
/// checkpoints (`Gap`), and events past the newest checkpoint older than
/// two intervals mean deleted ones over the tail (`Unpinned`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_catches_deleted_checkpoints() {
    let dir = echo_testkit::data_dir();
    add_writer(dir.path());
    let mut up = up_on_free_ports(dir.path());
    up.args(["--audit-checkpoint-seconds", "1"]);
    let server = start_up(up);
    let audit = server.ready[1].clone();
    let token: serde_json::Value = client_credentials(&server.addr, "svc-a", SECRET)
        .await
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let client = reqwest::Client::new();
    let mut sizes = Vec::new();
    for (batch, pause) in [("g", 0), ("h", 1500), ("i", 5500)] {
        tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
        let events: Vec<serde_json::Value> = (1..=3)
            .map(|i| serde_json::json!({"id": format!("{batch}{i}"), "level": "info", "action": "test.event", "message": "m"}))
            .collect();
        let stored = post_events(&client, &format!("http://{audit}"), &token, &events).await;
        assert_eq!(stored.status(), 200);
        let checkpoint: serde_json::Value = client
            .get(format!("http://{audit}/v1/checkpoint"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        sizes.push(size_of(&checkpoint));
    }
    drop(server);
    let interval = ["--checkpoint-seconds", "2"];
    let (ok, out) = verify_with(dir.path(), &interval);
    assert!(ok, "{out}");

    let gap = copy_dir(dir.path());
    tamper(
        gap.path(),
        &[&format!(
            "DELETE FROM audit_checkpoints WHERE size > {} AND size < {}",
            sizes[0], sizes[2]
        )],
    )
    .await;
    let (ok, out) = verify_with(gap.path(), &interval);
    assert!(!ok, "{out}");
    assert!(out.contains("broken: Gap at event "), "{out}");

    let tail = copy_dir(dir.path());
    tamper(
        tail.path(),
        &[&format!(
            "DELETE FROM audit_checkpoints WHERE size > {}",
            sizes[0]
        )],
    )
    .await;
    let (ok, out) = verify_with(tail.path(), &interval);
    assert!(!ok, "{out}");
    assert!(out.contains("broken: Unpinned at event "), "{out}");
}
