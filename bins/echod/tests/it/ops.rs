//! The operations endpoints of every service (docs/operations.md):
//! `/healthz`, `/readyz` and `/metrics` inside `echod up`, the metrics
//! moving with real actions, readiness following a database that stops
//! answering, who may read `/metrics`, and the worker's `--health-listen`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use echo_testkit::prometheus::{self, Exposition};
use serde_json::{Value, json};

use super::docs::{User, add_user};
use super::{
    Hop, SECRET, add_svc_a, client_credentials, echod, run_with_stdin, start, start_up,
    up_on_free_ports,
};

/// `echod up`'s services, in the order of their `ready` lines.
const SERVICES: [&str; 5] = ["identity", "audit", "gateway", "docs", "parser"];

async fn get_json(url: &str) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `/metrics` of the service at `addr`, read strictly.
async fn scrape(addr: &str) -> Exposition {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    prometheus::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Scrapes `addr` until `holds` (gauges are brought up to date every few
/// seconds), at most `within`.
async fn eventually(addr: &str, what: &str, holds: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = scrape(addr).await;
        if holds(&metrics) {
            return metrics;
        }
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `/readyz` at `addr` until its status is `expected`, at most 20 s.
async fn readiness_becomes(addr: &str, expected: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get_json(&format!("http://{addr}/readyz")).await;
        if status == expected {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "readiness still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn check_names(readiness: &Value) -> BTreeSet<&str> {
    readiness["checks"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn every_service_of_up_answers_health_readiness_and_metrics_that_move() {
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "dora");
    add_user(dir.path(), "mallory");
    add_svc_a(echod(dir.path()));
    // A route whose upstream does not answer.
    let config = dir.path().join("echo.toml");
    std::fs::write(
        &config,
        format!(
            "[[gateway.routes]]\nprefix = \"/api/down\"\nupstream = \"http://127.0.0.1:{}\"\n\
             audience = \"docs\"\n",
            echo_testkit::tls::free_port()
        ),
    )
    .unwrap();
    let mut cmd = up_on_free_ports(dir.path());
    cmd.args(["--lockout-after", "6"])
        .arg("--config")
        .arg(&config);
    let server = start_up(cmd);
    let expected_checks: [&[&str]; 5] = [
        &["audit", "database", "signing_keys"],
        &["database", "issuer_keys"],
        &["audit", "issuer_keys", "sessions"],
        &["audit", "database", "issuer_keys", "queue"],
        &["audit", "issuer_keys"],
    ];
    for ((addr, service), checks) in server.ready.iter().zip(SERVICES).zip(expected_checks) {
        let health = get_json(&format!("http://{addr}/healthz")).await;
        assert_eq!(health, (200, json!({"status": "ok"})), "{service}");
        let ready = readiness_becomes(addr, 200).await;
        assert_eq!(ready["status"], "ready", "{service}: {ready}");
        assert_eq!(
            check_names(&ready),
            checks.iter().copied().collect(),
            "{service}"
        );
        let metrics = scrape(addr).await;
        let readyz = [
            ("service", service),
            ("method", "GET"),
            ("route", "/readyz"),
            ("status", "200"),
        ];
        assert!(
            metrics.sum("echo_http_requests_total", &readyz) >= 1.0,
            "{service}'s own requests, by route template and status"
        );
        assert!(metrics.sum("echo_http_request_duration_seconds_count", &readyz) >= 1.0);
        assert_eq!(
            metrics.types["echo_http_request_duration_seconds"],
            "histogram"
        );
    }
    let identity = server.ready[0].as_str();
    let gateway = server.up.clone().unwrap();

    // A token grant, counted by grant and client.
    let issued = [("grant", "client_credentials"), ("client", "svc-a")];
    let before = scrape(identity).await;
    assert_eq!(
        client_credentials(identity, "svc-a", SECRET).await.status(),
        200
    );
    let after = scrape(identity).await;
    assert_eq!(
        after.sum("echo_identity_tokens_issued_total", &issued)
            - before.sum("echo_identity_tokens_issued_total", &issued),
        1.0
    );

    // Wrong passwords until the lock, then the right one, refused.
    let logins =
        |m: &Exposition, outcome| m.sum("echo_identity_logins_total", &[("outcome", outcome)]);
    // Each failure takes identity's failed-login time (3 s): at once.
    let mut hops: Vec<Hop> = (0..6).map(|_| Hop::default()).collect();
    let guesses = futures_util::future::join_all(
        hops.iter_mut()
            .map(|hop| hop.log_in_from_gateway(&server, &gateway, "mallory", "a wrong guess")),
    )
    .await;
    for (status, _, _) in guesses {
        assert_eq!(status, 401);
    }
    let (status, _, _) = Hop::default()
        .log_in_from_gateway(&server, &gateway, "mallory", "mallory's long password")
        .await;
    assert_eq!(status, 401, "locked");
    let locked = scrape(identity).await;
    assert_eq!(
        logins(&locked, "wrong_password") - logins(&after, "wrong_password"),
        6.0
    );
    assert_eq!(logins(&locked, "locked") - logins(&after, "locked"), 1.0);
    assert_eq!(
        locked.sum("echo_identity_lockouts_total", &[])
            - after.sum("echo_identity_lockouts_total", &[]),
        1.0
    );

    // An upload through the gateway: proxied, queued, worked on, indexed.
    let mut dora = User::sign_in(&server, "dora").await;
    assert!(logins(&scrape(identity).await, "success") >= 1.0);
    let id = dora
        .upload(&[("note.txt", b"metrics move with real work".to_vec())])
        .await
        .remove(0);
    let view = dora.wait_for(&id, Duration::from_secs(30)).await;
    assert_eq!(view["status"], "done", "{view}");
    // A route whose upstream is down: an error of that route.
    let (status, _) = dora.download("/api/down").await;
    assert_eq!(status, 502);
    let metrics = eventually(identity, "every gauge published", |m| {
        m.sum("echo_gateway_live_sessions", &[]) >= 1.0
            && m.has("echo_queue_pending_jobs", &[])
            && m.has("echo_queue_dead_letters", &[])
            && m.has("echo_audit_writer_queue_depth", &[("writer", "docs")])
    })
    .await;
    let done = [("result", "done")];
    assert!(metrics.sum("echo_worker_jobs_total", &done) >= 1.0);
    assert!(metrics.sum("echo_worker_job_duration_seconds_count", &done) >= 1.0);
    let uploaded = [("route", "/api/documents"), ("outcome", "2xx")];
    assert!(metrics.sum("echo_gateway_upstream_duration_seconds_count", &uploaded) >= 1.0);
    let down = [("route", "/api/down"), ("outcome", "unavailable")];
    assert!(
        metrics.sum("echo_gateway_upstream_errors_total", &down) >= 1.0,
        "the route whose upstream is down"
    );
    assert!(metrics.has("echo_gateway_upstream_duration_seconds_count", &down));
    assert!(
        !metrics.has(
            "echo_gateway_upstream_errors_total",
            &[("route", "/api/documents")]
        ),
        "no error of the docs route"
    );
    let stored = [
        ("service", "docs"),
        ("method", "POST"),
        ("route", "/v1/documents"),
        ("status", "201"),
    ];
    assert_eq!(metrics.sum("echo_http_requests_total", &stored), 1.0);
    assert!(
        !metrics
            .samples
            .iter()
            .any(|s| s.labels.get("route").is_some_and(|r| r.contains(&id))),
        "routes are templates, never raw paths"
    );
    for sample in metrics
        .samples
        .iter()
        .filter(|s| s.name.starts_with("echo_"))
    {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| sample.name.strip_suffix(suffix))
            .filter(|family| metrics.types.get(*family).is_some_and(|t| t == "histogram"))
            .unwrap_or(sample.name.as_str());
        assert!(
            metrics.types.contains_key(family),
            "{family} has no # TYPE line"
        );
        assert!(
            metrics.helped.contains(family),
            "{family} has no # HELP line: add it to echo_edge's metrics catalogue"
        );
    }
    assert!(metrics.sum("echo_jwks_fetches_total", &[]) >= 1.0);
    assert_eq!(metrics.sum("echo_jwks_fetch_failures_total", &[]), 0.0);
    for writer in ["identity", "gateway", "docs", "parser"] {
        assert!(
            metrics.has("echo_audit_writer_spool_bytes", &[("writer", writer)]),
            "{writer}"
        );
        let writer = [("writer", writer)];
        assert!(metrics.has("echo_audit_writer_events_dropped_total", &writer));
        assert_eq!(
            metrics.sum("echo_audit_writer_events_dropped_total", &writer),
            0.0
        );
    }
    assert!(
        scrape(&server.ready[3])
            .await
            .has("echo_gateway_live_sessions", &[]),
        "every service of one process shows the process's metrics"
    );
}

/// A token of client `id` (secret [`SECRET`]) for the gateway's audience,
/// with `scope` if given.
async fn gateway_token(identity: &str, id: &str, scope: Option<&str>) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("audience", "gateway"),
    ];
    form.extend(scope.map(|scope| ("scope", scope)));
    let response = reqwest::Client::new()
        .post(format!("http://{identity}/token"))
        .basic_auth(id, Some(SECRET))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

fn add_gateway_client(dir: &std::path::Path, id: &str, scope: Option<&str>) {
    let mut add = echod(dir);
    add.args([
        "client",
        "add",
        id,
        "--secret-stdin",
        "--grant",
        "client_credentials",
        "--audience",
        "gateway",
    ]);
    if let Some(scope) = scope {
        add.args(["--scope", scope]);
    }
    let out = run_with_stdin(add, &format!("{SECRET}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_are_refused_to_callers_elsewhere_without_a_metrics_token() {
    let dir = echo_testkit::data_dir();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "trusted_proxies = [\"127.0.0.1\"]\n").unwrap();
    add_gateway_client(dir.path(), "prometheus", Some("metrics.read"));
    add_gateway_client(dir.path(), "nosy", None);
    let mut cmd = up_on_free_ports(dir.path());
    cmd.arg("--config").arg(&file).arg("--no-worker");
    let server = start_up(cmd);
    let identity = server.ready[0].as_str();
    let gateway = server.up.clone().unwrap();
    let http = reqwest::Client::new();
    let metrics_from = |client: &'static str| {
        http.get(format!("{gateway}/metrics"))
            .header("x-forwarded-for", client)
    };

    // Through the trusted proxy, for a client elsewhere: the gate's 401.
    let refused = metrics_from("203.0.113.9").send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // A service token without the scope: 403; with it: the metrics.
    let nosy = gateway_token(identity, "nosy", None).await;
    let refused = metrics_from("203.0.113.9")
        .bearer_auth(&nosy)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let token = gateway_token(identity, "prometheus", Some("metrics.read")).await;
    let allowed = metrics_from("203.0.113.9")
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    prometheus::parse(&allowed.text().await.unwrap()).unwrap();
    // A local proxy identity does not trust still names its client: refused.
    let forwarded = http
        .get(format!("http://{identity}/metrics"))
        .header("x-forwarded-for", "198.51.100.4")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.status(), 401);
    // A caller on this machine reads them without a token.
    assert_eq!(
        scrape(identity)
            .await
            .sum("echo_jwks_fetch_failures_total", &[]),
        0.0
    );
    let gateway_addr = &server.ready[2];
    let refusals = scrape(gateway_addr).await.sum(
        "echo_http_requests_total",
        &[
            ("service", "gateway"),
            ("route", "/metrics"),
            ("status", "401"),
        ],
    );
    assert_eq!(refusals, 1.0, "the refusal is counted like any answer");
}

#[tokio::test]
async fn readiness_names_the_database_that_stopped_answering_and_recovers() {
    let db = echo_testkit::PgTestDb::create("ops_readiness").await;
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.env("ECHO_DATABASE_URL", &db.url)
        .args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let server = start(cmd, 1);
    let ready = readiness_becomes(&server.addr, 200).await;
    assert_eq!(ready["checks"]["database"]["state"], "ok");

    db.set_reachable(false).await;
    let down = readiness_becomes(&server.addr, 503).await;
    assert_eq!(down["status"], "not ready");
    assert_eq!(down["checks"]["database"]["state"], "failed", "{down}");
    assert_eq!(down["checks"]["signing_keys"]["state"], "ok", "{down}");
    let health = get_json(&format!("http://{}/healthz", server.addr)).await;
    assert_eq!(health.0, 200, "the process still runs");

    db.set_reachable(true).await;
    let back = readiness_becomes(&server.addr, 200).await;
    assert_eq!(back["checks"]["database"]["state"], "ok");
    drop(server);
    db.drop_db().await;
}

#[tokio::test]
async fn the_worker_answers_health_readiness_and_metrics_on_its_health_listener() {
    let dir = echo_testkit::data_dir();
    // Nothing listens on the docs and parser addresses it is given.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut cmd = echod(dir.path());
    cmd.env("ECHO_WORKER_CLIENT_SECRET", SECRET)
        .env("ECHO_WORKER_HEALTH_LISTEN", "127.0.0.1:0")
        .args([
            "serve",
            "worker",
            "--docs-url",
            &nowhere,
            "--parser-url",
            &nowhere,
        ]);
    let server = start(cmd, 1);
    let health = get_json(&format!("http://{}/healthz", server.addr)).await;
    assert_eq!(health, (200, json!({"status": "ok"})));
    let down = readiness_becomes(&server.addr, 503).await;
    assert_eq!(down["checks"]["queue"]["state"], "ok", "{down}");
    assert_eq!(down["checks"]["docs"]["state"], "failed", "{down}");
    assert_eq!(down["checks"]["parser"]["state"], "failed", "{down}");
    let metrics = eventually(&server.addr, "the queue's gauges", |m| {
        m.has("echo_queue_pending_jobs", &[])
    })
    .await;
    assert_eq!(metrics.sum("echo_queue_pending_jobs", &[]), 0.0);
    assert!(metrics.has(
        "echo_http_requests_total",
        &[
            ("service", "worker"),
            ("route", "/readyz"),
            ("status", "503")
        ]
    ));
}

/// A service whose issuer does not answer counts its JWKS fetches and their
/// failures, and is not ready.
#[tokio::test]
async fn a_service_counts_the_jwks_fetches_that_fail() {
    let dir = echo_testkit::data_dir();
    let nowhere = format!("http://127.0.0.1:{}", echo_testkit::tls::free_port());
    let mut cmd = echod(dir.path());
    cmd.args([
        "serve",
        "parser",
        "--listen",
        "127.0.0.1:0",
        "--issuer",
        &nowhere,
    ]);
    let server = start(cmd, 1);
    let down = readiness_becomes(&server.addr, 503).await;
    assert_eq!(down["checks"]["issuer_keys"]["state"], "failed", "{down}");
    let metrics = eventually(&server.addr, "a failed JWKS fetch counted", |m| {
        m.sum("echo_jwks_fetch_failures_total", &[]) >= 1.0
    })
    .await;
    assert!(
        metrics.sum("echo_jwks_fetches_total", &[])
            >= metrics.sum("echo_jwks_fetch_failures_total", &[])
    );
}
