//! Replicas (issue 16): two `echod serve identity` on one PostgreSQL and
//! two `echod serve gateway` on one Redis, and what each pair must agree
//! on — an account's lockout, the rate limits, tokens, sessions and the one
//! refresh of a session's tokens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use echo_testkit::PgTestDb;
use redis::AsyncCommands;

use super::{
    Hop, SECRET, Server, add_svc_a, echod, run_with_stdin, start, start_up, up_on_free_ports,
};

const USER: &str = "carol";
const PASSWORD: &str = "carol's long password";
/// What both identity replicas call themselves (a load balancer's name).
const ISSUER: &str = "http://identity.replicas.test";

/// A key prefix of the test's own in the machine's Redis, and what is
/// under it deleted when the test ends.
struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    fn new(test: &str) -> Self {
        Self {
            prefix: format!("echo:test:{}:{test}:", std::process::id()),
        }
    }

    async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(echo_testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("the machine's Redis")
    }

    async fn keys(&self, pattern: &str) -> Vec<String> {
        self.connection()
            .await
            .keys(format!("{}{pattern}", self.prefix))
            .await
            .unwrap()
    }

    async fn clean(self) {
        let keys = self.keys("*").await;
        if !keys.is_empty() {
            let () = self.connection().await.del(keys).await.unwrap();
        }
    }
}

/// `echod` on identity's shared database.
fn on_db(dir: &Path, db: &PgTestDb) -> Command {
    let mut cmd = echod(dir);
    cmd.env("ECHO_DATABASE_URL", &db.url);
    cmd
}

/// One identity replica on `db` (both share the data directory, so the
/// master key); its rate limits in Redis under `limits` if given (the URL
/// by `ECHO_RATE_LIMIT_URL`, or from `url_file` by its `_FILE`), else in
/// the database.
fn identity_replica(
    dir: &Path,
    db: &PgTestDb,
    limits: Option<&RedisKeys>,
    url_file: Option<&Path>,
) -> Server {
    let mut cmd = on_db(dir, db);
    cmd.args([
        "serve",
        "identity",
        "--listen",
        "127.0.0.1:0",
        "--issuer",
        ISSUER,
        "--lockout-after",
        "6",
    ]);
    cmd.env_remove("ECHO_RATE_LIMIT_URL")
        .env_remove("ECHO_RATE_LIMIT_URL_FILE");
    if let Some(keys) = limits {
        cmd.env("ECHO_RATE_LIMIT_PREFIX", &keys.prefix);
        match url_file {
            Some(file) => cmd.env("ECHO_RATE_LIMIT_URL_FILE", file),
            None => cmd.env("ECHO_RATE_LIMIT_URL", echo_testkit::redis_url()),
        };
    }
    start(cmd, 1)
}

fn add_user(cmd: Command) {
    let mut cmd = cmd;
    cmd.args(["user", "add", USER, "--password-stdin"]);
    let out = run_with_stdin(cmd, &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A public client `web` to sign in through, and its authorize URL at
/// `identity`.
fn add_web_client(cmd: Command) {
    let mut cmd = cmd;
    cmd.args([
        "client",
        "add",
        "web",
        "--public",
        "--redirect-uri",
        "http://127.0.0.1:9/callback",
    ]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn authorize_url(identity: &str) -> String {
    format!(
        "{identity}/authorize?response_type=code&client_id=web\
         &redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&scope=openid\
         &state=state-0123456789&nonce=nonce-0123456789\
         &code_challenge=tAHCbVSU4qVIQ62VyFuXlCMqS1x8jm6SyRhi1wqhO8Q&code_challenge_method=S256"
    )
}

/// A login at `identity` with `password`: its status.
async fn log_in(identity: &str, password: &str) -> reqwest::StatusCode {
    let mut hop = Hop::default();
    let (status, _, _) = hop
        .log_in_at_identity(identity, &authorize_url(identity), USER, password)
        .await;
    status
}

async fn post(url: String, form: &[(&str, &str)]) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .basic_auth("svc-a", Some(SECRET))
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn introspect(identity: &str, token: &str) -> serde_json::Value {
    let answer = post(format!("{identity}/introspect"), &[("token", token)]).await;
    assert_eq!(answer.status(), 200);
    answer.json().await.unwrap()
}

/// Waits, if need be, for a fixed one-minute window with `needed` seconds
/// left, so a test's requests count in one window.
async fn with_window_left(needed: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let left = 60 - now % 60;
    if left < needed {
        tokio::time::sleep(Duration::from_secs(left + 1)).await;
    }
}

/// A lockout made through one replica holds at the other (the counter is
/// the user's row in the shared database); a token one replica issued is
/// known, then revoked, at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_replicas_share_lockouts_and_tokens() {
    let db = PgTestDb::create("identity_replicas_share_lockouts_and_tokens").await;
    let limits = RedisKeys::new("identity_replicas_share_lockouts_and_tokens");
    let dir = echo_testkit::data_dir();
    add_user(on_db(dir.path(), &db));
    add_web_client(on_db(dir.path(), &db));
    add_svc_a(on_db(dir.path(), &db));
    let a = identity_replica(dir.path(), &db, Some(&limits), None);
    let b = identity_replica(dir.path(), &db, Some(&limits), None);
    let (a_url, b_url) = (format!("http://{}", a.addr), format!("http://{}", b.addr));

    // Six wrong passwords at A at once: five free, the sixth after its
    // delay, and the account is locked.
    let guesses: Vec<_> = (0..6)
        .map(|_| {
            let a_url = a_url.clone();
            tokio::spawn(async move { log_in(&a_url, "a wrong password").await })
        })
        .collect();
    for guess in guesses {
        assert_eq!(guess.await.unwrap(), 401);
    }
    assert_eq!(
        log_in(&b_url, PASSWORD).await,
        401,
        "the right password at B meets A's lock"
    );
    // `user show` reads the counter both replicas advanced (it judges it by
    // the default policy, which locks after 10).
    let show = on_db(dir.path(), &db)
        .args(["user", "show", USER])
        .output()
        .unwrap();
    // The failures made at A are the user's, in the shared database (`user
    // show` judges them by the default policy, which locks at 10).
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(shown.contains("6 recent failed attempts"), "{shown}");

    // A token from A is active at B, revoked at B, and then inactive at A
    // (within its revocation cache's 2 s).
    let grant = post(
        format!("{a_url}/token"),
        &[("grant_type", "client_credentials"), ("audience", "audit")],
    )
    .await;
    assert_eq!(grant.status(), 200);
    let token = grant.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(introspect(&b_url, &token).await["active"], true);
    assert_eq!(introspect(&a_url, &token).await["active"], true);
    let revoked = post(format!("{b_url}/revoke"), &[("token", &token)]).await;
    assert_eq!(revoked.status(), 200);
    assert_eq!(introspect(&b_url, &token).await["active"], false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while introspect(&a_url, &token).await["active"] == true {
        assert!(Instant::now() < deadline, "A still honours B's revocation");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    drop((a, b));
    limits.clean().await;
    db.drop_db().await;
}

/// Failed client authentications split over both replicas hit the limit
/// (30 a minute per address and client) at the combined count: in Redis
/// with `ECHO_RATE_LIMIT_URL`, in the shared PostgreSQL without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_across_identity_replicas() {
    for redis in [true, false] {
        let db = PgTestDb::create("rate_limits_count_across_identity_replicas").await;
        let limits = RedisKeys::new("rate_limits_count_across_identity_replicas");
        let dir = echo_testkit::data_dir();
        add_svc_a(on_db(dir.path(), &db));
        let shared = redis.then_some(&limits);
        // B reads the URL from a file, as a secret may come.
        let url_file = dir.path().join("rate-limit-url");
        std::fs::write(&url_file, echo_testkit::redis_url()).unwrap();
        let replicas = [
            identity_replica(dir.path(), &db, shared, None),
            identity_replica(dir.path(), &db, shared, Some(&url_file)),
        ];
        with_window_left(20).await;
        let grant = [("grant_type", "client_credentials"), ("audience", "audit")];
        for attempt in 0..30 {
            let replica = &replicas[attempt % 2];
            let refused = reqwest::Client::new()
                .post(format!("http://{}/token", replica.addr))
                .basic_auth("svc-a", Some("a wrong secret, 0123456789abcdef"))
                .form(&grant)
                .send()
                .await
                .unwrap();
            assert_eq!(refused.status(), 401, "attempt {attempt} (redis: {redis})");
        }
        for replica in &replicas {
            let limited = post(format!("http://{}/token", replica.addr), &grant).await;
            assert_eq!(limited.status(), 429, "redis: {redis}");
            assert!(limited.headers().contains_key("retry-after"));
        }
        if redis {
            assert!(!limits.keys("identity:client_auth:*").await.is_empty());
        }
        drop(replicas);
        limits.clean().await;
        db.drop_db().await;
    }
}

/// A Redis that cannot be reached at start stops the start, naming the
/// setting, rather than running with limits that are not there.
#[test]
fn an_unreachable_rate_limit_redis_stops_the_start() {
    let dir = echo_testkit::data_dir();
    for service in ["identity", "gateway", "docs"] {
        let out = echod(dir.path())
            .args(["serve", service, "--listen", "127.0.0.1:0"])
            .env("ECHO_GATEWAY_CLIENT_SECRET", SECRET)
            .env("ECHO_RATE_LIMIT_URL", "redis://127.0.0.1:1")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{service}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ECHO_RATE_LIMIT_URL"),
            "{service}: {stderr}"
        );
    }
}

/// `echod up` counts identity's and the gateway's rate limits in the Redis
/// `ECHO_RATE_LIMIT_URL` names, as replicas do (it used to ignore it and
/// count in the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_counts_its_rate_limits_in_the_redis_named() {
    let limits = RedisKeys::new("up_counts_its_rate_limits_in_the_redis_named");
    let dir = echo_testkit::data_dir();
    let mut up = up_on_free_ports(dir.path());
    up.env("ECHO_RATE_LIMIT_URL", echo_testkit::redis_url())
        .env("ECHO_RATE_LIMIT_PREFIX", &limits.prefix);
    let server = start_up(up);
    assert!(limits.keys("*").await.is_empty());
    let refused = reqwest::Client::new()
        .post(format!("http://{}/token", server.addr))
        .basic_auth("gateway", Some("a wrong secret, 0123456789abcdef"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(!limits.keys("identity:client_auth:*").await.is_empty());
    let gateway = &server.ready[2];
    let page = reqwest::get(format!("http://{gateway}/login"))
        .await
        .unwrap();
    assert!(page.status().is_success() || page.status().is_redirection());
    assert!(!limits.keys("gateway:*").await.is_empty());
    drop(server);
    limits.clean().await;
}

/// `echod serve gateway` at `public_url` (default: its own address), its
/// sessions and rate limits in Redis under `keys`, its routes and limits
/// from `config` if given.
fn gateway_replica(
    dir: &Path,
    identity: &Server,
    keys: &RedisKeys,
    public_url: Option<&str>,
    config: Option<&Path>,
) -> Server {
    let mut cmd = echod(dir);
    cmd.args(["serve", "gateway", "--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("http://{}", identity.addr))
        .env("ECHO_GATEWAY_CLIENT_SECRET", SECRET)
        .env("ECHO_REDIS_URL", echo_testkit::redis_url())
        .env("ECHO_REDIS_PREFIX", format!("{}sessions:", keys.prefix))
        .env("ECHO_RATE_LIMIT_URL", echo_testkit::redis_url())
        .env("ECHO_RATE_LIMIT_PREFIX", format!("{}limits:", keys.prefix));
    if let Some(url) = public_url {
        cmd.args(["--public-url", url]);
    }
    if let Some(file) = config {
        cmd.env("ECHO_CONFIG", file);
    }
    start(cmd, 1)
}

/// Registers the gateway at `public_url` as `echod up` does.
fn add_gateway_client(dir: &Path, public_url: &str) {
    let mut cmd = echod(dir);
    cmd.args([
        "client",
        "add",
        "gateway",
        "--secret-stdin",
        "--redirect-uri",
    ])
    .arg(format!("{public_url}/callback"))
    .arg("--post-logout-redirect-uri")
    .arg(format!("{public_url}/signed-out"));
    for grant in ["authorization_code", "refresh_token", "client_credentials"] {
        cmd.args(["--grant", grant]);
    }
    for audience in ["gateway", "audit"] {
        cmd.args(["--audience", audience]);
    }
    for scope in [
        "openid",
        "profile",
        "offline_access",
        "audit.read",
        "audit.write",
    ] {
        cmd.args(["--scope", scope]);
    }
    let out = run_with_stdin(cmd, &format!("{SECRET}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Refresh grants identity has answered.
async fn refreshes(identity: &Server) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", identity.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    echo_testkit::prometheus::parse(&text).unwrap().sum(
        "echo_identity_tokens_issued_total",
        &[("grant", "refresh_token")],
    )
}

async fn me(browser: &Hop, gateway: &str) -> (reqwest::StatusCode, String) {
    let cookie: Vec<String> = browser
        .cookies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let answer = browser
        .http
        .get(format!("{gateway}/api/me"))
        .header("x-echo-csrf", "1")
        .header("cookie", cookie.join("; "))
        .send()
        .await
        .unwrap();
    (answer.status(), answer.text().await.unwrap())
}

/// Two gateways on one Redis: a session made through A works through B;
/// twenty requests at its access token's expiry, ten through each, make
/// exactly one refresh at identity and all succeed; logging out at B ends
/// it at A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_replicas_share_sessions_and_refresh_once() {
    let keys = RedisKeys::new("gateway_replicas_share_sessions_and_refresh_once");
    let dir = echo_testkit::data_dir();
    add_user(echod(dir.path()));
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let identity = start(cmd, 1);
    let a = gateway_replica(dir.path(), &identity, &keys, None, None);
    let a_url = format!("http://{}", a.addr);
    // Behind a load balancer both answer at one public URL (here A's).
    let b = gateway_replica(dir.path(), &identity, &keys, Some(&a_url), None);
    let b_url = format!("http://{}", b.addr);
    add_gateway_client(dir.path(), &a_url);

    let mut browser = Hop::default();
    let (status, landed) = browser
        .sign_in_through_gateway(&identity, &a_url, USER, PASSWORD)
        .await;
    assert_eq!((status.as_u16(), landed.as_str()), (303, "/"));
    let (status, body) = me(&browser, &b_url).await;
    assert_eq!(status, 200, "A's session works through B: {body}");

    // The session's access token is at its expiry (as the session records
    // it): the next requests must refresh it, once.
    let sessions = keys.keys("sessions:session:*").await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let expired_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let () = keys
        .connection()
        .await
        .hset(&sessions[0], "access_expires_at", expired_at)
        .await
        .unwrap();
    let before = refreshes(&identity).await;
    let requests = (0..20).map(|i| {
        let gateway = if i % 2 == 0 { &a_url } else { &b_url };
        me(&browser, gateway)
    });
    for (status, body) in futures_util::future::join_all(requests).await {
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(
        refreshes(&identity).await - before,
        1.0,
        "one refresh for the cluster"
    );
    let access_expires_at: u64 = keys
        .connection()
        .await
        .hget(&sessions[0], "access_expires_at")
        .await
        .unwrap();
    assert!(access_expires_at > expired_at + 60);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !keys.keys("sessions:refresh:*").await.is_empty() {
        assert!(Instant::now() < deadline, "the refresh lock is released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Logging out at B ends the session at A.
    let (_, _, home) = browser.send(browser.http.get(format!("{b_url}/"))).await;
    let csrf = home
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the logout form's csrf field")
        .to_owned();
    let logout = browser
        .http
        .post(format!("{b_url}/logout"))
        .form(&[("csrf", csrf)]);
    let (status, _, _) = browser.send(logout).await;
    assert_eq!(status, 303);
    assert_eq!(me(&browser, &a_url).await.0, 401);

    drop((a, b, identity));
    keys.clean().await;
}

/// A route's limit (15 a minute per caller and address here) counted by
/// two gateways on one Redis: fifteen requests, eight through A and seven
/// through B, use it up, and the next is refused at both. Each replica
/// alone has seen fewer than fifteen, so a limit counted in each process
/// would have let both through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_replicas_count_a_routes_limit_together() {
    const LIMIT: usize = 15;
    let keys = RedisKeys::new("gateway_replicas_count_a_routes_limit_together");
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let identity = start(cmd, 1);
    // 15 per 60 s (a window of exactly one minute). A request the limit
    // lets through goes on to the token exchange, which identity refuses
    // (the gateway may not ask for `limited`): a 403, after the limit was
    // taken. So no upstream need run.
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        "[[routes]]\nprefix = \"/api/limited\"\nupstream = \"http://127.0.0.1:9\"\n\
         audience = \"limited\"\nrate_limit = { per_second = 0.25, burst = 15 }\n",
    )
    .unwrap();
    let a = gateway_replica(dir.path(), &identity, &keys, None, Some(&config));
    let a_url = format!("http://{}", a.addr);
    let b = gateway_replica(dir.path(), &identity, &keys, Some(&a_url), Some(&config));
    let b_url = format!("http://{}", b.addr);
    add_gateway_client(dir.path(), &a_url);

    // A caller with a bearer token for the gateway: its own client's.
    let grant = reqwest::Client::new()
        .post(format!("http://{}/token", identity.addr))
        .basic_auth("gateway", Some(SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("audience", "gateway"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(grant.status(), 200);
    let token = grant.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let call = |gateway: &str| {
        reqwest::Client::new()
            .get(format!("{gateway}/api/limited/x"))
            .bearer_auth(&token)
            .send()
    };

    with_window_left(20).await;
    let mut seen = [0; 2];
    for i in 0..LIMIT {
        let (replica, gateway) = if i % 2 == 0 { (0, &a_url) } else { (1, &b_url) };
        let answer = call(gateway).await.unwrap();
        assert_eq!(answer.status(), 403, "request {i} passes the limit");
        seen[replica] += 1;
    }
    assert!(seen.iter().all(|&n| n < LIMIT), "{seen:?}");
    for gateway in [&a_url, &b_url] {
        let refused = call(gateway).await.unwrap();
        assert_eq!(refused.status(), 429, "at {gateway}");
        assert!(refused.headers().contains_key("retry-after"));
    }
    assert!(!keys.keys("limits:*").await.is_empty());

    drop((a, b, identity));
    keys.clean().await;
}
