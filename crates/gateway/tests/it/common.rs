//! The platform under test (identity + gateway sharing a hand-moved clock,
//! the gateway's sessions in SQLite or Redis), and a small browser: a cookie jar (by name: cookies ignore ports, so
//! identity's and the gateway's share it as in a real browser) over a
//! client that never follows redirects.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use echo_core::audit::MemoryAuditSink;
use echo_core::{Clock, ManualClock, SystemClock};
use echo_crypto::seal::MasterKey;
use echo_gateway::{
    ClientSecret, Gateway, GatewayConfig, RedisSessionStore, SessionStore, SqliteSessionStore,
};
use echo_identity::admin::{self, NewClient, NewUser};
use echo_identity::mail::{Mailer, Outbox, SmtpSettings};
use echo_identity::{IdentityConfig, Provider};
use echo_queue::{QueueConfig, SqliteQueue};
use echo_testkit::TempDir;
use echo_verify::{HttpJwks, Verifier, VerifierOptions};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use url::Url;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "correct horse battery staple";
pub const GATEWAY_SECRET: &str = "gateway-secret-0123456789abcdefghijklmnop";
/// The audience of the test upstreams.
pub const UPSTREAM_AUDIENCE: &str = "upstream";

/// Where the gateway under test keeps its sessions.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    /// At [`echo_testkit::redis_url`], under a prefix of the test's own.
    Redis,
}

/// Defines each named `async fn(Backend)` as a test per session store:
/// `sqlite::<name>` and `redis::<name>`.
macro_rules! on_every_store {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Sqlite).await;
                }
            )+
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test($crate::common::Backend::Redis).await;
                }
            )+
        }
    };
}
pub(crate) use on_every_store;

/// A session store of `backend` for one test, and what must outlive it.
pub struct TestStore {
    pub store: Arc<dyn SessionStore>,
    _keys: Option<echo_testkit::RedisKeys>,
}

impl TestStore {
    /// Sessions idle out after `idle_ttl` seconds (Redis expires them so).
    pub async fn open(backend: Backend, dir: &std::path::Path, idle_ttl: i64) -> Self {
        match backend {
            Backend::Sqlite => Self {
                store: Arc::new(
                    SqliteSessionStore::open(&dir.join("gateway.db"))
                        .await
                        .unwrap(),
                ),
                _keys: None,
            },
            Backend::Redis => {
                let keys = echo_testkit::RedisKeys::new();
                let store = RedisSessionStore::open(
                    &keys.url,
                    &echo_crypto::TrustedRoots::system(),
                    &keys.prefix,
                    idle_ttl,
                )
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "Redis at {} is not reachable ({e}); start it or set {}",
                        keys.url,
                        echo_testkit::REDIS_URL_VAR
                    )
                });
                Self {
                    store: Arc::new(store),
                    _keys: Some(keys),
                }
            }
        }
    }
}

/// A served service, stopped gracefully on [`Served::stop`] or drop.
struct Served {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn spawn<F>(serve: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F) -> Self
    where
        F: Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = serve(Box::pin(async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move {
            served.await.expect("serve");
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Identity's mail to the SMTP server at `url`, queued in `dir`.
async fn outbox(url: &str, dir: &std::path::Path) -> Outbox {
    let queue = SqliteQueue::open(&dir.join("mail-queue.db"), QueueConfig::default())
        .await
        .unwrap();
    let settings = SmtpSettings {
        url: url.to_owned(),
        from: "Echo <echo@example.test>".to_owned(),
        password: None,
    };
    let mailer = Mailer::new(&settings, &echo_crypto::TrustedRoots::system()).unwrap();
    Outbox::new(Arc::new(queue), mailer)
}

/// Identity and a gateway registered with it as client `gateway`.
pub struct Platform {
    pub issuer: String,
    pub gateway_url: String,
    pub provider: Arc<Provider>,
    /// Identity's database, as `echod user …` reaches it.
    pub identity_store: Arc<dyn echo_identity_store::Store>,
    pub clock: Arc<ManualClock>,
    pub identity_audit: Arc<MemoryAuditSink>,
    pub gateway_audit: Arc<MemoryAuditSink>,
    identity: Served,
    _gateway: Served,
    _sessions: TestStore,
    _dir: TempDir,
}

impl Platform {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A platform whose gateway keeps its sessions in `backend`.
    pub async fn start_on(backend: Backend) -> Self {
        Self::launch(backend, |_| {}, |_| {}, None).await
    }

    /// A platform whose identity configuration `configure` adjusts.
    pub async fn start_with_identity(configure: impl FnOnce(&mut IdentityConfig)) -> Self {
        Self::launch(Backend::Sqlite, |_| {}, configure, None).await
    }

    /// [`Platform::start_with_identity`], identity sending its mail to the
    /// SMTP server at `smtp_url` (through a queue of its own).
    pub async fn start_mailing(
        smtp_url: &str,
        configure: impl FnOnce(&mut IdentityConfig),
    ) -> Self {
        Self::launch(Backend::Sqlite, |_| {}, configure, Some(smtp_url)).await
    }

    /// A platform whose gateway configuration `configure` adjusts (routes,
    /// limits); the gateway client may exchange tokens for the audiences
    /// [`UPSTREAM_AUDIENCE`] and `audit`.
    pub async fn start_with(configure: impl FnOnce(&mut GatewayConfig)) -> Self {
        Self::launch(Backend::Sqlite, configure, |_| {}, None).await
    }

    async fn launch(
        backend: Backend,
        configure: impl FnOnce(&mut GatewayConfig),
        configure_identity: impl FnOnce(&mut IdentityConfig),
        smtp_url: Option<&str>,
    ) -> Self {
        let dir = echo_testkit::data_dir();
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let identity_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", identity_listener.local_addr().unwrap());
        let gateway_url = format!("http://{}", gateway_listener.local_addr().unwrap());

        let store =
            echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .unwrap();
        let identity_audit = Arc::new(MemoryAuditSink::default());
        let new_user = NewUser {
            username: USER.into(),
            password: PASSWORD.into(),
            email: None,
            roles: vec!["auditor".into()],
        };
        admin::add_user(&*store, &*identity_audit, &*clock, new_user)
            .await
            .unwrap();
        let client = NewClient {
            id: "gateway".into(),
            secret: admin::ClientSecret::Provided(GATEWAY_SECRET.into()),
            redirect_uris: vec![format!("{gateway_url}/callback")],
            grants: vec![
                "authorization_code".into(),
                "refresh_token".into(),
                "client_credentials".into(),
                echo_identity::grant::GRANT_TOKEN_EXCHANGE.into(),
            ],
            // `identity` for the admin console, as `echod up` registers it.
            audiences: vec![
                "gateway".into(),
                UPSTREAM_AUDIENCE.into(),
                "audit".into(),
                "identity".into(),
            ],
            // `audit.read` for its own service token, as `echod up`
            // registers it.
            scopes: ["openid", "profile", "offline_access", "audit.read"]
                .map(String::from)
                .to_vec(),
            post_logout_redirect_uris: vec![format!("{gateway_url}/signed-out")],
            allow_no_pkce: false,
        };
        admin::add_client(&*store, &*identity_audit, &*clock, client)
            .await
            .unwrap();
        let clock_dyn: Arc<dyn Clock> = clock.clone();
        let mut identity_config = IdentityConfig::new(&issuer);
        configure_identity(&mut identity_config);
        let provider = Provider::new(
            identity_config,
            store.clone(),
            &MasterKey::generate(),
            identity_audit.clone(),
            clock_dyn.clone(),
        )
        .await
        .unwrap();
        let provider = Arc::new(match smtp_url {
            Some(url) => provider.with_outbox(outbox(url, dir.path()).await),
            None => provider,
        });
        let serving = provider.clone();
        let identity =
            Served::spawn(move |stop| echo_identity::serve(identity_listener, serving, stop));

        let mut config =
            GatewayConfig::new(&gateway_url, &issuer, ClientSecret::new(GATEWAY_SECRET)).unwrap();
        configure(&mut config);
        let sessions = TestStore::open(backend, dir.path(), config.session_idle_ttl).await;
        // Every unknown `kid` refetches at once, so a test can see the
        // fetch fail without waiting out the rate limit.
        let options = VerifierOptions {
            refresh_interval: Duration::ZERO,
            ..VerifierOptions::default()
        };
        let jwks = HttpJwks::new(format!("{issuer}/jwks"), &Default::default());
        let verifier = Verifier::with_clock(&issuer, Arc::new(jwks), options, clock_dyn.clone());
        let gateway_audit = Arc::new(MemoryAuditSink::default());
        let gateway = Arc::new(Gateway::new(
            config,
            sessions.store.clone(),
            &MasterKey::generate(),
            Arc::new(verifier),
            gateway_audit.clone(),
            clock_dyn,
        ));
        let gateway_served =
            Served::spawn(move |stop| echo_gateway::serve(gateway_listener, gateway, stop));
        Self {
            issuer,
            gateway_url,
            provider,
            identity_store: store,
            clock,
            identity_audit,
            gateway_audit,
            identity,
            _gateway: gateway_served,
            _sessions: sessions,
            _dir: dir,
        }
    }

    /// Adds the active user `username` (password [`PASSWORD`]) with
    /// `roles` at identity, as `echod user add` does; their id.
    pub async fn add_user(&self, username: &str, roles: &[&str]) -> String {
        let new = NewUser {
            username: username.into(),
            password: PASSWORD.into(),
            email: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        admin::add_user(
            &*self.identity_store,
            &*self.identity_audit,
            &*self.clock,
            new,
        )
        .await
        .unwrap()
        .id
    }

    pub fn gw(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    /// Stops identity: its JWKS can no longer be fetched.
    pub async fn stop_identity(&mut self) {
        self.identity.stop().await;
    }

    pub fn gateway_audited(&self, action: &str) -> Vec<echo_core::audit::AuditEvent> {
        self.gateway_audit
            .events()
            .into_iter()
            .filter(|e| e.action == action)
            .collect()
    }

    /// Signs in `browser` through identity's login form, from `/login` with
    /// `return_to`; answers the callback's response.
    pub async fn sign_in(&self, browser: &Browser, return_to: Option<&str>) -> Page {
        let login = match return_to {
            Some(path) => format!(
                "{}?return_to={}",
                self.gw("/login"),
                url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>()
            ),
            None => self.gw("/login"),
        };
        let authorize = browser.get(&login).await.location_url();
        self.finish_sign_in(browser, &authorize).await
    }

    /// From identity's `/authorize` URL to the gateway's answer to the
    /// callback.
    pub async fn finish_sign_in(&self, browser: &Browser, authorize: &str) -> Page {
        let callback = self.callback_url(browser, authorize).await;
        browser.get(&callback).await
    }

    /// From identity's `/authorize` URL to the gateway callback URL it
    /// answers, posting the login form if identity shows one.
    pub async fn callback_url(&self, browser: &Browser, authorize: &str) -> String {
        self.callback_url_as(browser, authorize, USER).await
    }

    /// Signs `browser` in as `username` (whose password is [`PASSWORD`])
    /// from `/login`; answers the callback's response.
    pub async fn sign_in_as(&self, browser: &Browser, username: &str) -> Page {
        let authorize = browser.get(&self.gw("/login")).await.location_url();
        let callback = self.callback_url_as(browser, &authorize, username).await;
        browser.get(&callback).await
    }

    /// [`Platform::callback_url`], signing in as `username`.
    pub async fn callback_url_as(
        &self,
        browser: &Browser,
        authorize: &str,
        username: &str,
    ) -> String {
        let page = browser.get(authorize).await;
        let callback = if page.status == StatusCode::OK {
            assert!(page.body.contains(r#"name="password""#), "{}", page.body);
            let mut form = page.inputs();
            form.insert("username".into(), username.into());
            form.insert("password".into(), PASSWORD.into());
            let posted = browser
                .post_form(&format!("{}/login", self.issuer), &form, &[])
                .await;
            posted.location_url()
        } else {
            page.location_url()
        };
        assert!(callback.starts_with(&self.gw("/callback")), "{callback}");
        callback
    }
}

/// A cookie-keeping client that never follows redirects.
pub struct Browser {
    http: reqwest::Client,
    pub jar: Mutex<BTreeMap<String, String>>,
}

impl Browser {
    pub fn new() -> Self {
        Self::with(reqwest::Client::builder())
    }

    /// A browser that says it is `user_agent`.
    pub fn named(user_agent: &str) -> Self {
        Self::with(reqwest::Client::builder().user_agent(user_agent))
    }

    fn with(builder: reqwest::ClientBuilder) -> Self {
        Self {
            http: builder
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            jar: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.jar.lock().unwrap().get(name).cloned()
    }

    pub fn set_cookie(&self, name: &str, value: &str) {
        self.jar.lock().unwrap().insert(name.into(), value.into());
    }

    pub fn cookie_header(&self) -> String {
        let jar = self.jar.lock().unwrap();
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = request.header(reqwest::header::COOKIE, self.cookie_header());
        let response = request.send().await.unwrap();
        let page = Page {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        };
        let mut jar = self.jar.lock().unwrap();
        for set in page.headers.get_all(SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if attributes.contains("Max-Age=0") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().into(), value.into());
            }
        }
        page
    }

    pub async fn get(&self, url: &str) -> Page {
        self.send(self.http.get(url)).await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Page {
        let mut request = self.http.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    pub async fn post_form(
        &self,
        url: &str,
        form: &BTreeMap<String, String>,
        headers: &[(&str, &str)],
    ) -> Page {
        let mut request = self.http.post(url).form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request).await
    }

    /// `/api/me` as a browser script would call it: with the CSRF header.
    pub async fn api_me(&self, platform: &Platform) -> Page {
        self.get_with(&platform.gw("/api/me"), &[("x-echo-csrf", "1")])
            .await
    }
}

/// A response, body read.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn location(&self) -> &str {
        assert_eq!(
            self.status,
            StatusCode::SEE_OTHER,
            "expected a redirect: {}",
            self.body
        );
        self.header(LOCATION.as_str()).expect("Location")
    }

    /// The redirect's target as an absolute URL string.
    pub fn location_url(&self) -> String {
        self.location().to_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `name` → `value` of every `<input>` with both, unescaped, as a
    /// browser posts them (a checkbox only when ticked).
    pub fn inputs(&self) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        for tag in self.body.split("<input").skip(1) {
            let tag = tag.split('>').next().unwrap_or("");
            if tag.contains(r#"type="checkbox""#) && !tag.contains(" checked") {
                continue;
            }
            let attribute = |name: &str| {
                let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
                let end = tag[start..].find('"')? + start;
                Some(unescape(&tag[start..end]))
            };
            if let (Some(name), Some(value)) = (attribute("name"), attribute("value")) {
                found.insert(name, value);
            }
        }
        found
    }
}

pub fn unescape(text: &str) -> String {
    text.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&#34;", "\"")
        .replace("&#38;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// `url`'s query as a map.
pub fn query_of(url: &str) -> BTreeMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

/// `url` with query parameter `key` set to `value`.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut parsed = Url::parse(url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .into_owned()
        .filter(|(k, _)| k != key)
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs)
        .append_pair(key, value);
    parsed.into()
}
