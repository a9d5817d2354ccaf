//! Shared fixtures: a real provider on an ephemeral port, the users and
//! clients every test uses, a cookie-keeping browser that never follows
//! redirects, and small helpers for PKCE, login forms and forged JWTs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use echo_core::audit::MemoryAuditSink;
use echo_core::{Clock, ManualClock, SystemClock};
use echo_crypto::seal::MasterKey;
use echo_crypto::secret::{b64url, random_token, sha256};
use echo_identity::admin::{ClientSecret, NewClient, NewUser, add_client, add_user};
use echo_identity::mail::{Mailer, Outbox, SmtpSettings};
use echo_identity::{IdentityConfig, Provider};
use echo_identity_store::Store;
use echo_queue::{JobQueue, QueueConfig, SqliteQueue};
use echo_testkit::TempDir;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::Value;
use url::Url;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";
pub const EMAIL: &str = "alice@example.test";
/// The sender of the provider's mail in tests.
pub const MAIL_FROM: &str = "Echo <echo@example.test>";

/// Confidential web application: authorization code, Basic auth.
pub const WEB: &str = "web";
pub const WEB_SECRET: &str = "web-secret-0123456789abcdefghijklmnopqrstuv";
pub const WEB_REDIRECT: &str = "http://127.0.0.1:9999/cb";
pub const WEB_LOGOUT: &str = "http://127.0.0.1:9999/signed-out";

/// Public single-page application: authorization code, PKCE only.
pub const SPA: &str = "spa";
pub const SPA_REDIRECT: &str = "http://127.0.0.1:9998/app/cb";

/// Service: client credentials for the `audit` audience.
pub const SVC: &str = "svc";
pub const SVC_SECRET: &str = "svc-secret-0123456789abcdefghijklmnopqrstuv";
pub const SVC_SCOPE: &str = "audit.write";

/// A provider serving real HTTP on 127.0.0.1, with the fixtures registered.
pub struct Server {
    pub issuer: String,
    pub provider: Arc<Provider>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub audit: Arc<MemoryAuditSink>,
    pub user_id: String,
    /// The database's URL, where a test may count rows (`None` when the
    /// test handed in its own store).
    pub db_url: Option<String>,
    task: tokio::task::JoinHandle<()>,
    _dir: Option<TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// SQLite in a fresh data directory, real clock.
    pub async fn start() -> Self {
        let dir = echo_testkit::data_dir();
        let store =
            echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .expect("open sqlite store");
        Self::start_with(store, Arc::new(SystemClock), Some(dir), |_| {}).await
    }

    /// SQLite in a fresh data directory, real clock, configuration
    /// adjusted by `configure`.
    pub async fn start_configured(configure: impl FnOnce(&mut IdentityConfig)) -> Self {
        let dir = echo_testkit::data_dir();
        let store =
            echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .expect("open sqlite store");
        Self::start_with(store, Arc::new(SystemClock), Some(dir), configure).await
    }

    /// SQLite, with a clock the test moves by hand.
    pub async fn start_with_manual_clock() -> (Self, Arc<ManualClock>) {
        Self::start_manual(|_| {}).await
    }

    /// SQLite, a clock the test moves by hand, configuration adjusted by
    /// `configure`.
    pub async fn start_manual(
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> (Self, Arc<ManualClock>) {
        Self::start_manual_on(None, configure).await
    }

    /// A clock the test moves by hand, on PostgreSQL at `postgres_url` or
    /// (`None`) SQLite in a fresh data directory; [`Server::db_url`] set.
    pub async fn start_manual_on(
        postgres_url: Option<&str>,
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> (Self, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let dir = echo_testkit::data_dir();
        let store = echo_identity_store::open(
            postgres_url,
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .expect("open store");
        let db_url = match postgres_url {
            Some(url) => url.to_owned(),
            None => format!("sqlite://{}?mode=ro", dir.path().join("echo.db").display()),
        };
        let mut server = Self::start_with(store, clock.clone(), Some(dir), configure).await;
        server.db_url = Some(db_url);
        (server, clock)
    }

    /// How many rows `table` holds now.
    pub async fn row_count(&self, table: &str) -> i64 {
        use sqlx::Connection;
        let url = self
            .db_url
            .as_deref()
            .expect("a server with a known database");
        let query = format!("SELECT COUNT(*) FROM {table}");
        if url.starts_with("postgres") {
            let mut db = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sqlx::AssertSqlSafe(query.as_str()))
                .fetch_one(&mut db)
                .await
        } else {
            let mut db = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query_scalar(sqlx::AssertSqlSafe(query.as_str()))
                .fetch_one(&mut db)
                .await
        }
        .expect("count rows")
    }

    /// SQLite, `clock`, mail through the SMTP server at `smtp_url`, from a
    /// queue that retries fast (back-off from 100 ms, at most 1 s); the
    /// queue is returned too, for a test to watch.
    pub async fn start_mailing(
        smtp_url: &str,
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> (Self, Arc<dyn JobQueue>) {
        let settings = SmtpSettings {
            url: smtp_url.to_owned(),
            from: MAIL_FROM.to_owned(),
            password: None,
        };
        let roots = echo_crypto::TrustedRoots::system();
        Self::start_mailing_as(&settings, &roots, clock, configure).await
    }

    /// [`Server::start_mailing`] with all of `settings` (the SMTP
    /// password among them), the mail server's TLS checked against
    /// `roots`.
    pub async fn start_mailing_as(
        settings: &SmtpSettings,
        roots: &echo_crypto::TrustedRoots,
        clock: Arc<dyn Clock>,
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> (Self, Arc<dyn JobQueue>) {
        let dir = echo_testkit::data_dir();
        let store =
            echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .expect("open sqlite store");
        let retries = QueueConfig {
            max_attempts: 100,
            backoff_base: std::time::Duration::from_millis(100),
            backoff_cap: std::time::Duration::from_secs(1),
            ..QueueConfig::default()
        };
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqliteQueue::open(&dir.path().join("mail-queue.db"), retries)
                .await
                .expect("mail queue"),
        );
        let mailer = Mailer::new(settings, roots).expect("mailer");
        let outbox = Outbox::new(queue.clone(), mailer);
        let db_url = format!("sqlite://{}?mode=ro", dir.path().join("echo.db").display());
        let mut server = Self::start_full(store, clock, Some(dir), configure, Some(outbox)).await;
        server.db_url = Some(db_url);
        (server, queue)
    }

    /// Any store and clock; `dir` is kept alive as long as the server.
    pub async fn start_with(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dir: Option<TempDir>,
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> Self {
        Self::start_full(store, clock, dir, configure, None).await
    }

    /// [`Server::start_with`], sending mail through `outbox` if given.
    async fn start_full(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        dir: Option<TempDir>,
        configure: impl FnOnce(&mut IdentityConfig),
        outbox: Option<Outbox>,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("local addr"));
        let audit = Arc::new(MemoryAuditSink::default());
        let user_id = register_fixtures(&*store, &audit, &*clock).await;
        let mut config = IdentityConfig::new(&issuer);
        // Failed logins answer at once unless a test measures their time
        // (hardening.rs puts the default back).
        config.failed_login_time = std::time::Duration::ZERO;
        configure(&mut config);
        let provider = Provider::new(
            config,
            store.clone(),
            &MasterKey::generate(),
            audit.clone(),
            clock.clone(),
        )
        .await
        .expect("provider");
        let provider = Arc::new(match outbox {
            Some(outbox) => provider.with_outbox(outbox),
            None => provider,
        });
        let serving = provider.clone();
        let task = tokio::spawn(async move {
            echo_identity::serve(listener, serving, std::future::pending())
                .await
                .expect("serve");
        });
        Self {
            issuer,
            provider,
            store,
            clock,
            audit,
            user_id,
            db_url: None,
            task,
            _dir: dir,
        }
    }

    /// Registers another user; returns its id.
    pub async fn add_user(&self, username: &str, password: &str) -> String {
        self.add_user_with_email(username, password, None).await
    }

    /// Registers another user with an email address; returns its id.
    pub async fn add_user_with_email(
        &self,
        username: &str,
        password: &str,
        email: Option<&str>,
    ) -> String {
        let new = NewUser {
            username: username.into(),
            password: password.into(),
            email: email.map(str::to_owned),
            roles: vec![],
        };
        add_user(&*self.store, &*self.audit, &*self.clock, new)
            .await
            .expect("add user")
            .id
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn audited(&self, action: &str) -> usize {
        self.audit
            .actions()
            .iter()
            .filter(|a| **a == action)
            .count()
    }

    /// The one event `action` recorded; panics with every action recorded
    /// when there is none or more than one.
    #[track_caller]
    pub fn audited_once(&self, action: &str) -> echo_core::audit::AuditEvent {
        let events: Vec<_> = self
            .audit
            .events()
            .into_iter()
            .filter(|e| e.action == action)
            .collect();
        match <[_; 1]>::try_from(events) {
            Ok([event]) => event,
            Err(events) => panic!(
                "{} events {action} among {:?}",
                events.len(),
                self.audit.actions()
            ),
        }
    }

    /// `/authorize?…` for `params`.
    pub fn authorize_url(&self, params: &Params) -> String {
        let mut url = Url::parse(&self.url("/authorize")).expect("authorize url");
        url.query_pairs_mut()
            .extend_pairs(params.0.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        url.to_string()
    }
}

async fn register_fixtures(
    store: &dyn Store,
    audit: &MemoryAuditSink,
    clock: &dyn Clock,
) -> String {
    let user = add_user(
        store,
        audit,
        clock,
        NewUser {
            username: USER.into(),
            password: PASSWORD.into(),
            email: Some(EMAIL.into()),
            roles: vec!["auditor".into()],
        },
    )
    .await
    .expect("add user");
    let client = |id: &str, secret: ClientSecret| NewClient {
        id: id.into(),
        secret,
        redirect_uris: vec![],
        grants: vec![],
        audiences: vec![],
        scopes: vec![],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    let clients = [
        NewClient {
            redirect_uris: vec![WEB_REDIRECT.into()],
            grants: vec!["authorization_code".into(), "refresh_token".into()],
            post_logout_redirect_uris: vec![WEB_LOGOUT.into()],
            audiences: vec!["audit".into(), "gateway".into()],
            ..client(WEB, ClientSecret::Provided(WEB_SECRET.into()))
        },
        NewClient {
            redirect_uris: vec![SPA_REDIRECT.into()],
            ..client(SPA, ClientSecret::Public)
        },
        NewClient {
            audiences: vec!["audit".into()],
            scopes: vec![SVC_SCOPE.into()],
            ..client(SVC, ClientSecret::Provided(SVC_SECRET.into()))
        },
    ];
    for new in clients {
        add_client(store, audit, clock, new)
            .await
            .expect("add client");
    }
    user.id
}

/// Query parameters of an authorization request, in order.
#[derive(Debug, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    /// A complete, valid request for `client_id` with a S256 challenge.
    pub fn code_flow(client_id: &str, redirect_uri: &str, pkce: &Pkce) -> Self {
        Self(vec![
            ("response_type".into(), "code".into()),
            ("client_id".into(), client_id.into()),
            ("redirect_uri".into(), redirect_uri.into()),
            ("scope".into(), "openid profile email".into()),
            ("state".into(), format!("st-{}", &random_token()[..12])),
            ("nonce".into(), format!("n-{}", &random_token()[..12])),
            ("code_challenge".into(), pkce.challenge.clone()),
            ("code_challenge_method".into(), "S256".into()),
        ])
    }

    pub fn set(mut self, key: &str, value: &str) -> Self {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.into(), value.into()));
        self
    }

    pub fn without(mut self, key: &str) -> Self {
        self.0.retain(|(k, _)| k != key);
        self
    }

    pub fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

/// RFC 7636 verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = format!("{}-{}", random_token(), random_token());
        let challenge = b64url(&sha256(verifier.as_bytes()));
        Self {
            verifier,
            challenge,
        }
    }
}

/// An HTTP response, body read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: impl reqwest::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> Option<&str> {
        self.header(LOCATION)
    }

    pub fn www_authenticate(&self) -> Option<&str> {
        self.header(WWW_AUTHENTICATE)
    }

    pub fn is_html(&self) -> bool {
        self.header(reqwest::header::CONTENT_TYPE)
            .is_some_and(|ct| ct.starts_with("text/html"))
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The `Set-Cookie` header for cookie `name`, if this response sets it.
    pub fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    }

    /// A 303 to `expected_base` (scheme, host, port and path): its query.
    pub fn redirect_to(&self, expected_base: &str) -> HashMap<String, String> {
        assert_eq!(
            self.status,
            StatusCode::SEE_OTHER,
            "expected a redirect, got: {}",
            self.body
        );
        let location = self.location().expect("Location header");
        let url = Url::parse(location).expect("absolute Location");
        let mut base = url.clone();
        base.set_query(None);
        assert_eq!(base.as_str(), expected_base, "redirect target");
        url.query_pairs().into_owned().collect()
    }

    /// A login form: 200/401 HTML with a CSRF field and a password input.
    pub fn is_login_form(&self) -> bool {
        self.is_html()
            && self.body.contains(r#"action="/login""#)
            && self.body.contains(r#"name="password""#)
            && self.inputs().contains_key("csrf")
    }

    /// `name` → `value` of every `<input>` that has both, unescaped.
    pub fn inputs(&self) -> BTreeMap<String, String> {
        parse_inputs(&self.body).into_iter().collect()
    }

    /// The hidden fields of the page's form, in order.
    pub fn hidden_fields(&self) -> Vec<(String, String)> {
        parse_inputs_of_type(&self.body, Some("hidden"))
    }
}

/// `<input … name="…" … value="…">` pairs, without a regex: askama quotes
/// every attribute with `"` and escapes `"` inside values, so a value ends
/// at the next `"`.
pub fn parse_inputs(html: &str) -> Vec<(String, String)> {
    parse_inputs_of_type(html, None)
}

fn parse_inputs_of_type(html: &str, wanted_type: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<input") {
        let tag_and_more = &rest[start..];
        let end = tag_and_more.find('>').unwrap_or(tag_and_more.len());
        let tag = &tag_and_more[..end];
        let kind = attribute(tag, "type");
        if let (Some(name), Some(value)) = (attribute(tag, "name"), attribute(tag, "value"))
            && wanted_type.is_none_or(|t| kind.as_deref() == Some(t))
        {
            out.push((unescape_html(&name), unescape_html(&value)));
        }
        rest = &tag_and_more[end..];
    }
    out
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let needle = format!(" {name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

/// Undoes HTML character references: the named ones askama or any other
/// escaper may use for `&`, `<`, `>`, `"`, `'`, and numeric ones (`&#60;`,
/// `&#x3C;`). Anything else is left as it is.
pub fn unescape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&end| end <= 10).and_then(|end| {
            let entity = &rest[1..end];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                _ => match entity.strip_prefix('#') {
                    Some(hex) if hex.starts_with(['x', 'X']) => u32::from_str_radix(&hex[1..], 16)
                        .ok()
                        .and_then(char::from_u32),
                    Some(dec) => dec.parse().ok().and_then(char::from_u32),
                    None => None,
                },
            };
            c.map(|c| (c, end + 1))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A user agent: keeps cookies by hand (from `Set-Cookie`, honouring
/// `Max-Age=0`), never follows redirects.
pub struct Browser {
    http: reqwest::Client,
    jar: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    pub fn new() -> Self {
        Self {
            http: no_redirect_client(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    /// A browser whose connections come from `ip`, a loopback address
    /// such as `127.0.0.7`: on Linux all of 127.0.0.0/8 reaches the
    /// server, which sees each as a distinct client address.
    pub fn from_address(ip: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(ip.parse::<std::net::IpAddr>().expect("IP address"))
            .build()
            .expect("reqwest client");
        Self {
            http,
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().expect("jar").get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar
            .lock()
            .expect("jar")
            .insert(name.into(), value.into());
    }

    pub fn remove_cookie(&self, name: &str) {
        self.jar.lock().expect("jar").remove(name);
    }

    fn cookie_header(&self) -> Option<String> {
        let jar = self.jar.lock().expect("jar");
        (!jar.is_empty()).then(|| {
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn store_cookies(&self, headers: &HeaderMap) {
        let mut jar = self.jar.lock().expect("jar");
        for value in headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            let mut parts = value.split(';');
            let Some((name, val)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let expired = parts.any(|attr| attr.trim().eq_ignore_ascii_case("max-age=0"));
            if expired || val.is_empty() {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_owned(), val.trim().to_owned());
            }
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match self.cookie_header() {
            Some(cookies) => request.header(reqwest::header::COOKIE, cookies),
            None => request,
        };
        let response = request.send().await.expect("HTTP request");
        self.store_cookies(response.headers());
        read(response).await
    }

    pub async fn get(&self, url: &str) -> Page {
        self.send(self.http.get(url)).await
    }

    pub async fn post_form(&self, url: &str, form: &[(String, String)]) -> Page {
        self.send(self.http.post(url).form(form)).await
    }

    /// Fills in and submits the login form on `page`.
    pub async fn submit_login(
        &self,
        server: &Server,
        page: &Page,
        username: &str,
        password: &str,
    ) -> Page {
        assert!(
            page.is_login_form(),
            "expected the login form, got {}: {}",
            page.status,
            page.body
        );
        let mut form = page.hidden_fields();
        form.push(("username".into(), username.into()));
        form.push(("password".into(), password.into()));
        self.post_form(&server.url("/login"), &form).await
    }

    /// Logs in for `params` (or reuses this browser's SSO session) and
    /// returns the code, after checking `state` and `iss` came back with it.
    pub async fn login_for_code(&self, server: &Server, params: &Params) -> String {
        let page = self.get(&server.authorize_url(params)).await;
        let page = if page.is_login_form() {
            self.submit_login(server, &page, USER, PASSWORD).await
        } else {
            page
        };
        code_from(server, &page, params)
    }
}

/// The `code` of a successful authorization redirect for `params`.
pub fn code_from(server: &Server, page: &Page, params: &Params) -> String {
    let query = page.redirect_to(params.get("redirect_uri"));
    assert_eq!(
        query.get("state").map(String::as_str),
        Some(params.get("state")),
        "state"
    );
    assert_eq!(query.get("iss"), Some(&server.issuer), "RFC 9207 iss");
    assert!(!query.contains_key("error"), "{query:?}");
    query.get("code").cloned().expect("code in redirect")
}

pub fn no_redirect_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

pub async fn read(response: reqwest::Response) -> Page {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.text().await.expect("response body");
    Page {
        status,
        headers,
        body,
    }
}

/// How a client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy)]
pub enum ClientAuth<'a> {
    Basic(&'a str, &'a str),
    Post(&'a str, &'a str),
    Public(&'a str),
}

/// POST /token with `form` and the client's credentials.
pub async fn token_request(server: &Server, auth: ClientAuth<'_>, form: &[(&str, &str)]) -> Page {
    client_request(server, "/token", auth, form).await
}

/// POST `path` with `form` and the client's credentials.
pub async fn client_request(
    server: &Server,
    path: &str,
    auth: ClientAuth<'_>,
    form: &[(&str, &str)],
) -> Page {
    let mut form: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    let mut request = no_redirect_client().post(server.url(path));
    match auth {
        ClientAuth::Basic(id, secret) => {
            request = request.basic_auth(form_encode(id), Some(form_encode(secret)))
        }
        ClientAuth::Post(id, secret) => {
            form.push(("client_id".into(), id.into()));
            form.push(("client_secret".into(), secret.into()));
        }
        ClientAuth::Public(id) => form.push(("client_id".into(), id.into())),
    }
    read(request.form(&form).send().await.expect("client request")).await
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded first.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Redeems `code` for the web client (Basic auth) with `verifier`.
pub async fn redeem(server: &Server, code: &str, verifier: Option<&str>) -> Page {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", WEB_REDIRECT),
    ];
    if let Some(verifier) = verifier {
        form.push(("code_verifier", verifier));
    }
    token_request(server, ClientAuth::Basic(WEB, WEB_SECRET), &form).await
}

/// Four simultaneous redemptions of one code, on separate connections.
pub async fn redeem_concurrently(server: &Server, code: &str, verifier: &str) -> Vec<Page> {
    let (a, b, c, d) = tokio::join!(
        redeem(server, code, Some(verifier)),
        redeem(server, code, Some(verifier)),
        redeem(server, code, Some(verifier)),
        redeem(server, code, Some(verifier)),
    );
    vec![a, b, c, d]
}

/// Asserts an OAuth error response: status and `error` code.
#[track_caller]
pub fn assert_oauth_error(page: &Page, status: StatusCode, error: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert_eq!(page.json()["error"], error, "{}", page.body);
}

/// A signed-in browser and a fresh access token + ID token for the web client.
pub async fn web_tokens(server: &Server) -> (Browser, Value) {
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let code = browser.login_for_code(server, &params).await;
    let tokens = redeem(server, &code, Some(&pkce.verifier)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    (browser, tokens.json())
}

/// A client-credentials access token for the svc client (audience `audit`).
pub async fn service_token(server: &Server) -> String {
    client_credentials_token(server, SVC, SVC_SECRET, "audit").await
}

/// A client-credentials access token of `client` for `audience`.
pub async fn client_credentials_token(
    server: &Server,
    client: &str,
    secret: &str,
    audience: &str,
) -> String {
    let page = token_request(
        server,
        ClientAuth::Basic(client, secret),
        &[("grant_type", "client_credentials"), ("audience", audience)],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// GET /userinfo with `token` as bearer.
pub async fn userinfo(server: &Server, token: &str) -> Page {
    let response = no_redirect_client()
        .get(server.url("/userinfo"))
        .bearer_auth(token)
        .send()
        .await;
    read(response.expect("userinfo request")).await
}

/// GET the discovery document.
pub async fn discovery(server: &Server) -> Page {
    let response = no_redirect_client()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await;
    read(response.expect("discovery request")).await
}

/// POST /verify `{"token","aud"}` as the svc client (Basic).
pub async fn verify(server: &Server, token: &str, aud: &str) -> Value {
    let page = verify_as(server, Some((SVC, SVC_SECRET)), token, aud).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()
}

/// POST /verify `{"token","aud"}` with Basic `credentials`, or none.
pub async fn verify_as(
    server: &Server,
    credentials: Option<(&str, &str)>,
    token: &str,
    aud: &str,
) -> Page {
    let mut request = no_redirect_client()
        .post(server.url("/verify"))
        .json(&serde_json::json!({"token": token, "aud": aud}));
    if let Some((id, secret)) = credentials {
        request = request.basic_auth(form_encode(id), Some(form_encode(secret)));
    }
    read(request.send().await.expect("verify request")).await
}

/// The decoded JOSE header and payload of a compact JWS (unverified).
pub fn decode_jwt(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut part = || {
        let bytes = B64
            .decode(parts.next().expect("JWT part"))
            .expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    (part(), part())
}

pub fn b64_json(value: &Value) -> String {
    B64.encode(value.to_string())
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}
