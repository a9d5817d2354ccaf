//! The web UI in a real browser: `echod up` driven through headless
//! Chromium (Debian's `chromium` and `chromium-driver`) over WebDriver.
//! Every page visited is saved as a screenshot under
//! `target/browser-screenshots/<test>/`.
//!
//! Without Chromium the tests say so and pass, except under `CI=true`,
//! where a missing browser is a failure (`.ci/run` installs it). The https
//! run (`up --dev-tls`) also needs NSS's `certutil` (`libnss3-tools`): the
//! browser trusts the development CA through a certificate database of its
//! own, so its certificates are validated as any site's are.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use echo_testkit::between;
use echo_testkit::smtp::SmtpServer;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{Server, echod, run_with_stdin, start_up, up_on_free_ports};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CERTUTIL: &str = "/usr/bin/certutil";

/// chromedriver on a free port, with one headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
    taken: usize,
    /// The home (and NSS database) of a browser that trusts a CA.
    home: Option<tempfile::TempDir>,
}

impl Browser {
    /// `None` (after saying why) when Chromium is not installed outside CI.
    async fn start(test: &str) -> Option<Self> {
        Self::launch(test, None).await
    }

    /// A browser that trusts the CA in `ca`: Chromium on Linux takes its
    /// roots from the NSS database under `$HOME/.pki/nssdb`, here a
    /// throwaway home of its own.
    async fn start_trusting(test: &str, ca: &Path) -> Option<Self> {
        if !Path::new(CERTUTIL).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs {CERTUTIL} (apt-get install libnss3-tools)"
            );
            eprintln!("skipping {test}: no {CERTUTIL} (apt-get install libnss3-tools)");
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        let nssdb = home.path().join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        for args in [
            vec!["-N", "-d", &db, "--empty-password"],
            vec!["-A", "-d", &db, "-t", "C,,", "-n", "echo-dev", "-i"],
        ] {
            let status = Command::new(CERTUTIL)
                .args(&args)
                .args(args.contains(&"-A").then_some(ca))
                .status()
                .unwrap();
            assert!(status.success(), "certutil {args:?}");
        }
        let mut browser = Self::launch(test, Some(home.path())).await?;
        browser.home = Some(home);
        Some(browser)
    }

    /// Chromium under chromedriver, with `$HOME` at `home` if given.
    async fn launch(test: &str, home: Option<&Path>) -> Option<Self> {
        if !Path::new(CHROMIUM).exists() || !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
            );
            eprintln!(
                "skipping {test}: no {CHROMIUM} or {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(CHROMEDRIVER);
        if let Some(home) = home {
            driver.env("HOME", home);
        }
        let driver = driver
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--window-size=1200,900",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connected = ClientBuilder::rustls()
                .expect("rustls")
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match connected {
                Ok(client) => break client,
                Err(e) if Instant::now() > deadline => panic!("chromedriver: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("browser-screenshots")
            .join(test);
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        Some(Self {
            client,
            driver,
            shots,
            taken: 0,
            home: None,
        })
    }

    /// Goes to `url`.
    async fn goto(&mut self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Saves a screenshot of the page as `<n>-<name>.png`.
    async fn shot(&mut self, name: &str) {
        self.taken += 1;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(
            self.shots.join(format!("{:02}-{name}.png", self.taken)),
            png,
        )
        .unwrap();
    }

    /// The page once it contains `needle` (or the last one after 10 s).
    async fn text_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().await;
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The page once `wanted` holds for it (or the last one after `secs`).
    async fn text_when(&self, secs: u64, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.text().await;
            if wanted(&text) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The path once it satisfies `wanted` (a click's navigation may
    /// still be under way), or the last one seen after 10 s.
    async fn path_when(&self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = self.path().await;
            if wanted(&path) || Instant::now() > deadline {
                return path;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }
    }

    /// Fills in identity's login form and submits it.
    async fn submit_login(&mut self, username: &str, password: &str) {
        let form = &self.client;
        let field = form
            .find(Locator::Css("#username"))
            .await
            .expect("the login form");
        // Identity keeps the name typed before a failed attempt.
        field.clear().await.unwrap();
        field.send_keys(username).await.unwrap();
        form.find(Locator::Css("#password"))
            .await
            .unwrap()
            .send_keys(password)
            .await
            .unwrap();
        self.shot("login-form").await;
        self.click("button[type=submit]").await;
    }

    /// Types `text` into the first element matching `css`; for a file
    /// input, `text` is the files' paths, one a line.
    async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Clicks the first element matching `css`.
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn stop(self) {
        let _ = self.client.close().await;
        let mut driver = self.driver;
        let _ = driver.kill();
        let _ = driver.wait();
    }
}

/// `echod up` with users `dave` (no role) and `carol` (auditor), with
/// `extra` arguments.
fn platform(dir: &Path, extra: &[&str]) -> (Server, String) {
    for (name, role) in [("dave", None), ("carol", Some("auditor"))] {
        let mut add = echod(dir);
        add.args(["user", "add", name, "--password-stdin"]);
        if let Some(role) = role {
            add.args(["--role", role]);
        }
        let added = run_with_stdin(add, &format!("{name}'s long password\n"));
        assert!(added.status.success(), "{added:?}");
    }
    let mut up = up_on_free_ports(dir);
    up.args(extra);
    let server = start_up(up);
    let gateway = server.up.clone().expect("up line");
    (server, gateway)
}

/// [`platform`] with identity's mail going to `smtp`, under the
/// registration `policy`.
fn mailing_platform(dir: &Path, smtp: &SmtpServer, policy: &str) -> (Server, String) {
    let url = smtp.url();
    platform(
        dir,
        &[
            "--smtp-url",
            &url,
            "--smtp-from",
            MAIL_FROM,
            "--registration",
            policy,
        ],
    )
}

/// The sender of identity's mail in these tests.
const MAIL_FROM: &str = "Echo <echo@example.test>";

/// Follows the gateway's sign-in button to identity's login form; the
/// origin identity serves it from.
async fn to_login(browser: &mut Browser, gateway: &str) -> String {
    browser.goto(gateway).await;
    browser.click("a.button").await;
    let login = browser.client.current_url().await.unwrap();
    login.origin().ascii_serialization()
}

#[tokio::test]
async fn browser_sign_in_wrong_password_home_403_on_logs_and_logout() {
    let Some(mut browser) = Browser::start("sign_in_and_out").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);

    browser.goto(&gateway).await;
    browser.shot("home-anonymous").await;
    browser.click("a.button").await;
    // A wrong password: the generic error, on identity's page.
    browser.submit_login("dave", "not dave's password").await;
    let refused = browser.text_with("Invalid username or password").await;
    assert!(
        refused.contains("Invalid username or password"),
        "{refused}"
    );
    browser.shot("wrong-password").await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    let home = browser.text().await;
    assert!(home.contains("Welcome, dave"), "{home}");
    assert!(home.contains("Your recent activity"));
    assert!(!home.contains("id=\"logs-link\""), "not for a plain user");
    browser.shot("home").await;

    browser.goto(&format!("{gateway}/logs")).await;
    let denied = browser.text().await;
    assert!(denied.contains("Access denied"), "{denied}");
    browser.shot("logs-forbidden").await;

    browser.goto(&format!("{gateway}/account")).await;
    browser.shot("account").await;
    browser.click("form[action='/logout'] button").await;
    let landed = browser.path_when(|p| p.starts_with("/signed-out")).await;
    assert!(landed.starts_with("/signed-out"), "{landed}");
    assert!(
        browser
            .text_with("You are signed out")
            .await
            .contains("You are signed out")
    );
    browser.shot("signed-out").await;
    browser.goto(&format!("{gateway}/account")).await;
    assert!(
        browser.path().await.starts_with("/authorize"),
        "signed out here and at identity: the login form again"
    );
    browser.stop().await;
}

#[tokio::test]
async fn browser_an_auditor_sees_and_filters_events() {
    let Some(mut browser) = Browser::start("auditor_logs").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);
    browser.goto(&format!("{gateway}/logs")).await;
    browser.submit_login("carol", "carol's long password").await;
    assert_eq!(
        browser.path_when(|p| p == "/logs").await,
        "/logs",
        "back where the login started"
    );
    // Identity's audit writer sends in batches: wait for carol's login.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let page = browser.text().await;
        if page.contains("auth.login.success") {
            break;
        }
        assert!(Instant::now() < deadline, "no events: {page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        browser.goto(&format!("{gateway}/logs")).await;
    }
    browser.shot("logs").await;
    browser
        .client
        .find(Locator::Css("input[name=action]"))
        .await
        .unwrap()
        .send_keys("auth.login.failure")
        .await
        .unwrap();
    browser.click("form.filters button").await;
    let filtered = browser.path_when(|p| p.contains("action=")).await;
    assert!(filtered.contains("action=auth.login.failure"), "{filtered}");
    let filtered = browser.text().await;
    assert!(
        !filtered.contains("auth.login.success"),
        "filtered: {filtered}"
    );
    browser.shot("logs-filtered").await;
    browser.goto(&gateway).await;
    assert!(browser.text().await.contains("id=\"logs-link\""));
    browser.shot("home-auditor").await;
    browser.stop().await;
}

#[tokio::test]
async fn browser_an_expired_session_goes_to_login_and_back() {
    let Some(mut browser) = Browser::start("expired_session").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &["--gateway-session-idle", "3s"]);
    browser.goto(&format!("{gateway}/account")).await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/account").await, "/account");
    browser.shot("account").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Idle too long: to login, and (identity's SSO session still alive)
    // straight back to the page asked for.
    browser.goto(&format!("{gateway}/account?tab=roles")).await;
    assert_eq!(
        browser.path_when(|p| p == "/account?tab=roles").await,
        "/account?tab=roles"
    );
    assert!(browser.text().await.contains("Your account"));
    browser.shot("back-after-expiry").await;
    browser.stop().await;
}

/// The question the PDF answers, and the sentence that answers it.
const QUESTION: &str = "How many gulls does the lighthouse keeper count?";
const ANSWER: &str = "The lighthouse keeper counts seventeen gulls";

/// Asks `QUESTION` on `/ask`; the page once the answer is shown (the
/// citation list then carries `data-count`).
async fn ask(browser: &mut Browser, gateway: &str) -> String {
    browser.goto(&format!("{gateway}/ask")).await;
    browser.type_into("#question", QUESTION).await;
    browser.click("#ask-button").await;
    browser
        .text_when(20, |t| {
            t.contains("data-count=") || t.contains("No answer:")
        })
        .await
}

#[tokio::test]
async fn browser_upload_documents_and_ask() {
    let Some(mut browser) = Browser::start("documents").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);
    let files = tempfile::tempdir().unwrap();
    let pdf = files.path().join("lighthouse-log.pdf");
    let answer_line = format!("{ANSWER} on the rocks every morning.");
    let lines = [
        "Log of the north cape light.",
        answer_line.as_str(),
        "The lamp is lit at dusk.",
    ];
    std::fs::write(&pdf, echo_testkit::files::pdf(&lines)).unwrap();
    let docx = files.path().join("harbour-notes.docx");
    let paragraphs = ["The harbour master paints the boats blue every spring."];
    std::fs::write(
        &docx,
        echo_testkit::files::docx("Harbour notes", &paragraphs),
    )
    .unwrap();

    // dave signs in on the way to /upload and uploads both files at once.
    browser.goto(&format!("{gateway}/upload")).await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/upload").await, "/upload");
    browser.shot("upload").await;
    let chosen = format!("{}\n{}", pdf.display(), docx.display());
    browser.type_into("#files", &chosen).await;
    browser.click("#upload-button").await;
    let settled = |t: &str| {
        t.matches(r#"data-status="done""#).count() == 2 || t.contains(r#"data-status="failed""#)
    };
    let uploads = browser.text_when(60, settled).await;
    browser.shot("uploaded").await;
    assert_eq!(
        uploads.matches(r#"data-status="done""#).count(),
        2,
        "both indexed: {uploads}"
    );
    assert_eq!(
        uploads.matches("<progress").count(),
        2,
        "a bar per file: {uploads}"
    );
    assert_eq!(uploads.matches(r#"value="100""#).count(), 2, "{uploads}");
    assert!(uploads.contains("lighthouse-log.pdf") && uploads.contains("harbour-notes.docx"));

    browser.goto(&format!("{gateway}/documents")).await;
    let listed = browser
        .text_when(20, |t| t.contains(r#"data-count="2""#))
        .await;
    browser.shot("documents").await;
    assert!(listed.contains(r#"data-count="2""#), "{listed}");
    assert_eq!(
        listed.matches(r#"data-status="done""#).count(),
        2,
        "{listed}"
    );
    for shown in [
        "lighthouse-log.pdf",
        "harbour-notes.docx",
        ">PDF<",
        ">DOCX<",
        "Download",
        "Delete",
        // The usage against the default quotas.
        "You store 2 of 10,000 documents,",
        "of 1.0 GB.",
    ] {
        assert!(listed.contains(shown), "{shown}: {listed}");
    }

    let answered = ask(&mut browser, &gateway).await;
    browser.shot("answer").await;
    assert!(
        answered.contains(r#"data-count="1""#) || answered.contains(r#"data-count="2""#),
        "{answered}"
    );
    let citations = answered
        .split(r#"id="citations""#)
        .nth(1)
        .expect("the citations")
        .split("</ol>")
        .next()
        .unwrap();
    assert!(citations.contains("lighthouse-log.pdf"), "{citations}");
    assert!(citations.contains(ANSWER), "the sentence: {citations}");
    // A citation leads to its document's row on /documents.
    browser.click("a.citation-link").await;
    assert_eq!(browser.path_when(|p| p == "/documents").await, "/documents");
    let cited = browser
        .text_when(10, |t| t.contains(r#"class="highlight""#))
        .await;
    let row = cited
        .split(r#"class="highlight""#)
        .nth(1)
        .expect("the cited row, highlighted")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(row.contains("lighthouse-log.pdf"), "{row}");
    browser.shot("cited-document").await;

    // carol, signed in after dave signed out, sees none of it.
    browser.goto(&format!("{gateway}/account")).await;
    browser.click("form[action='/logout'] button").await;
    browser.path_when(|p| p.starts_with("/signed-out")).await;
    browser.goto(&format!("{gateway}/documents")).await;
    browser.submit_login("carol", "carol's long password").await;
    assert_eq!(browser.path_when(|p| p == "/documents").await, "/documents");
    let none = browser
        .text_when(10, |t| t.contains(r#"data-count="0""#))
        .await;
    browser.shot("documents-other-user").await;
    assert!(none.contains(r#"data-count="0""#), "{none}");
    assert!(!none.contains("lighthouse-log.pdf") && !none.contains("harbour-notes.docx"));
    let unanswered = ask(&mut browser, &gateway).await;
    browser.shot("answer-other-user").await;
    assert!(unanswered.contains(r#"data-count="0""#), "{unanswered}");
    assert!(!unanswered.contains("seventeen") && !unanswered.contains("lighthouse-log.pdf"));
    browser.stop().await;
}

#[tokio::test]
async fn browser_failed_documents_say_why_and_can_be_deleted() {
    let Some(mut browser) = Browser::start("failed_documents").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);
    let files = tempfile::tempdir().unwrap();
    // A PDF cut in half passes the type check and fails in the parser;
    // noise is refused at upload.
    let torn = files.path().join("torn.pdf");
    let pdf = echo_testkit::files::pdf(&["Half a page."]);
    std::fs::write(&torn, &pdf[..pdf.len() / 2]).unwrap();
    let noise = files.path().join("noise.bin");
    std::fs::write(&noise, echo_testkit::files::noise(4096, 7)).unwrap();

    browser.goto(&format!("{gateway}/upload")).await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/upload").await, "/upload");
    let chosen = format!("{}\n{}", torn.display(), noise.display());
    browser.type_into("#files", &chosen).await;
    browser.click("#upload-button").await;
    let uploads = browser
        .text_when(60, |t| t.matches(r#"data-status="failed""#).count() == 2)
        .await;
    browser.shot("upload-failures").await;
    assert_eq!(
        uploads.matches(r#"data-status="failed""#).count(),
        2,
        "{uploads}"
    );
    assert!(
        uploads.contains(r#"class="upload-error">noise.bin: not a supported type"#),
        "{uploads}"
    );

    browser.goto(&format!("{gateway}/documents")).await;
    let listed = browser
        .text_when(20, |t| t.contains(r#"data-count="1""#))
        .await;
    browser.shot("documents-failed").await;
    let row = listed
        .split(r#"data-status="failed""#)
        .nth(1)
        .expect("the torn PDF, failed")
        .split("</tr>")
        .next()
        .unwrap();
    assert!(row.contains("torn.pdf") && row.contains("Failed"), "{row}");
    let error = row
        .split(r#"class="doc-error">"#)
        .nth(1)
        .and_then(|e| e.split('<').next())
        .unwrap_or_default();
    assert!(!error.trim().is_empty(), "the error in words: {row}");
    assert!(
        !listed.contains("noise.bin"),
        "refused uploads are no documents"
    );

    browser.click("button.delete").await;
    browser
        .client
        .accept_alert()
        .await
        .expect("the confirmation");
    let emptied = browser
        .text_when(10, |t| t.contains(r#"data-count="0""#))
        .await;
    browser.shot("documents-deleted").await;
    assert!(emptied.contains(r#"data-count="0""#), "{emptied}");
    assert!(!emptied.contains("torn.pdf"));
    browser.stop().await;
}

#[tokio::test]
async fn browser_signs_in_over_https_with_the_development_ca() {
    let dir = echo_testkit::data_dir();
    // `up --dev-tls` makes the CA the browser is then told to trust.
    let (_server, gateway) = platform(dir.path(), &["--dev-tls"]);
    assert!(gateway.starts_with("https://"), "{gateway}");
    let ca = dir.path().join("tls/ca.pem");
    let Some(mut browser) = Browser::start_trusting("https_sign_in", &ca).await else {
        return;
    };
    browser.goto(&gateway).await;
    browser.shot("home-anonymous").await;
    browser.click("a.button").await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    let home = browser.text().await;
    assert!(home.contains("Welcome, dave"), "{home}");
    browser.shot("home").await;
    let cookies = browser.client.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name() == "__Host-echo_session")
        .unwrap_or_else(|| panic!("{cookies:?}"));
    assert_eq!(session.secure(), Some(true));
    browser.stop().await;
}

/// Forgot → mail → reset → sign in: `echod up` sending mail to a real SMTP
/// server (aiosmtpd), the link followed in the browser.
#[tokio::test]
async fn browser_forgot_password_mail_reset_and_sign_in() {
    let Some(mut browser) = Browser::start("forgot_password").await else {
        return;
    };
    let smtp = echo_testkit::smtp::SmtpServer::start();
    let dir = echo_testkit::data_dir();
    let mut add = echod(dir.path());
    add.args([
        "user",
        "add",
        "erin",
        "--password-stdin",
        "--email",
        "erin@example.test",
    ]);
    let added = run_with_stdin(add, "erin's long password\n");
    assert!(added.status.success(), "{added:?}");
    let (_server, gateway) = mailing_platform(dir.path(), &smtp, "closed");

    browser.goto(&gateway).await;
    browser.click("a.button").await;
    browser.click("a[href='/password/forgot']").await;
    browser.type_into("#email", "erin@example.test").await;
    browser.shot("forgot").await;
    browser.click("button[type=submit]").await;
    let sent = browser.text_with("Check your email").await;
    assert!(sent.contains("If an account has this address"), "{sent}");
    browser.shot("forgot-sent").await;

    let mail = smtp.wait_for(1, Duration::from_secs(30)).remove(0);
    assert_eq!(mail.to, vec!["erin@example.test".to_owned()]);
    let link = mail.link("/password/reset?token=").expect("a reset link");
    browser.goto(&link).await;
    browser
        .type_into("#new_password", "erin's brand new passphrase")
        .await;
    browser.shot("reset").await;
    browser.click("button[type=submit]").await;
    let done = browser.text_with("Password changed").await;
    assert!(done.contains("Password changed"), "{done}");
    browser.shot("reset-done").await;

    browser.goto(&gateway).await;
    browser.click("a.button").await;
    browser.submit_login("erin", "erin's long password").await;
    assert!(
        browser
            .text_with("Invalid username or password")
            .await
            .contains("Invalid username or password"),
        "the old password no longer works"
    );
    browser
        .submit_login("erin", "erin's brand new passphrase")
        .await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    assert!(browser.text().await.contains("Welcome, erin"));
    browser.stop().await;
}

/// The account's change-password form at identity, then signing in again
/// with the new password.
#[tokio::test]
async fn browser_change_password_then_sign_in_with_it() {
    let Some(mut browser) = Browser::start("change_password").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);

    let identity = to_login(&mut browser, &gateway).await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");

    browser.goto(&format!("{identity}/account/password")).await;
    let form = browser.text_with("Change your password").await;
    assert!(form.contains("Sign out everywhere else"), "{form}");
    browser
        .type_into("#current_password", "dave's long password")
        .await;
    browser
        .type_into("#new_password", "dave's newer passphrase")
        .await;
    browser.shot("change-form").await;
    browser.click("button[type=submit]").await;
    let done = browser.text_with("Password changed").await;
    assert!(done.contains("Password changed"), "{done}");
    browser.shot("changed").await;

    browser.goto(&format!("{gateway}/account")).await;
    browser.click("form[action='/logout'] button").await;
    browser.path_when(|p| p.starts_with("/signed-out")).await;
    browser.goto(&gateway).await;
    browser.click("a.button").await;
    browser
        .submit_login("dave", "dave's newer passphrase")
        .await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    assert!(browser.text().await.contains("Welcome, dave"));
    browser.stop().await;
}

/// Open sign-up at identity: the form, the activation mail, the account
/// page (the address verified), the sessions page and "Sign out
/// everywhere", then signing in again.
#[tokio::test]
async fn browser_sign_up_verify_address_see_sessions_and_sign_out_everywhere() {
    let Some(mut browser) = Browser::start("sign_up").await else {
        return;
    };
    let smtp = echo_testkit::smtp::SmtpServer::start();
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = mailing_platform(dir.path(), &smtp, "open");

    let identity = to_login(&mut browser, &gateway).await;
    // Sign-up is open: the login form offers it.
    browser.click("a[href='/register']").await;
    assert_eq!(browser.path_when(|p| p == "/register").await, "/register");
    browser.type_into("#username", "frank").await;
    browser.type_into("#email", "frank@example.test").await;
    browser
        .type_into("#password", "frank's long passphrase")
        .await;
    browser.shot("register").await;
    browser.click("button[type=submit]").await;
    let sent = browser.text_with("Check your email").await;
    assert!(sent.contains("activate your account"), "{sent}");

    let mail = smtp.wait_for(1, Duration::from_secs(30)).remove(0);
    assert_eq!(mail.to, vec!["frank@example.test".to_owned()]);
    let link = mail
        .link("/email/verify?token=")
        .expect("an activation link");
    browser.goto(&link).await;
    browser.shot("verify").await;
    browser.click("button[type=submit]").await;
    let verified = browser.text_with("Address verified").await;
    assert!(verified.contains("verified"), "{verified}");

    browser.goto(&gateway).await;
    browser.click("a.button").await;
    browser
        .submit_login("frank", "frank's long passphrase")
        .await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    browser.goto(&format!("{identity}/account")).await;
    let account = browser.text_with("frank@example.test").await;
    assert!(
        account.contains("verified") && !account.contains("not verified"),
        "{account}"
    );
    browser.shot("account").await;
    browser.click("nav a[href='/account/sessions']").await;
    let sessions = browser.text_with("Where you are signed in").await;
    assert!(sessions.contains("(this browser)"), "{sessions}");
    assert!(
        sessions.contains("gateway"),
        "the gateway holds a refresh token: {sessions}"
    );
    browser.shot("sessions").await;
    browser
        .click("form[action='/account/sessions/end-all'] button")
        .await;
    let ended = browser.text_with("Signed out everywhere").await;
    assert!(ended.contains("no application keeps access"), "{ended}");
    browser.goto(&format!("{identity}/account")).await;
    assert!(
        browser
            .text_with("Not signed in")
            .await
            .contains("Not signed in")
    );
    browser.stop().await;
}

/// Two browsers signed in as dave: the first finds both on the portal's
/// sessions page (from the shared navigation bar) and signs the other out;
/// the other's session is gone (its script's calls answer 401) while the
/// first's stays. Identity's sessions page leads to the portal's.
#[tokio::test]
async fn browser_portal_sessions_one_browser_signs_another_out() {
    let Some(mut laptop) = Browser::start("portal_sessions").await else {
        return;
    };
    let Some(mut phone) = Browser::start("portal_sessions_other").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);
    let mut identity = String::new();
    for browser in [&mut laptop, &mut phone] {
        identity = to_login(browser, &gateway).await;
        browser.submit_login("dave", "dave's long password").await;
        assert_eq!(browser.path_when(|p| p == "/").await, "/");
    }
    laptop.goto(&format!("{identity}/account/sessions")).await;
    laptop.text_with("Where you are signed in").await;
    laptop.click("#portal-sessions a").await;
    assert_eq!(laptop.path_when(|p| p == "/sessions").await, "/sessions");
    let page = laptop.text_with("(this browser)").await;
    assert_eq!(page.matches("<tr class=\"session\">").count(), 2, "{page}");
    assert!(
        page.contains("127.0.0.1") && page.contains("<td>Mozilla/5.0 (X11"),
        "{page}"
    );
    laptop.shot("portal-sessions").await;

    laptop.click("form[action='/sessions/end'] button").await;
    let after = laptop
        .text_when(10, |t| t.matches("<tr class=\"session\">").count() == 1)
        .await;
    assert!(after.contains("(this browser)"), "{after}");
    laptop.shot("other-signed-out").await;
    let me = |browser: &Browser| {
        let client = browser.client.clone();
        async move {
            client
                .execute(
                    "return fetch('/api/me', {headers: {'x-echo-csrf': '1'}}).then(r => r.status);",
                    vec![],
                )
                .await
                .unwrap()
        }
    };
    assert_eq!(
        me(&phone).await,
        json!(401),
        "the other browser is signed out"
    );
    assert_eq!(me(&laptop).await, json!(200), "this one is not");
    laptop.stop().await;
    phone.stop().await;
}

/// The recovery codes a page lists.
fn recovery_codes(html: &str) -> Vec<String> {
    between(html, r#"<ul class="codes">"#, "</ul>")
        .split("<code>")
        .skip(1)
        .map(|item| item.split("</code>").next().unwrap().to_owned())
        .collect()
}

/// The current TOTP code of `secret`, `steps` steps on.
fn totp_now(secret: &str, steps: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    echo_testkit::totp::code(secret, now + steps * echo_testkit::totp::STEP_SECONDS)
}

/// Enrols from the page `/account/totp` shows (or a replacement's), with
/// the authenticator's current code; the secret and the recovery codes.
async fn enrol(browser: &mut Browser, name: &str) -> (String, Vec<String>) {
    let page = browser.text_with(r#"class="secret""#).await;
    let secret = between(&page, r#"<code class="secret">"#, "</code>").to_owned();
    browser.shot(name).await;
    browser.type_into("#code", &totp_now(&secret, 0)).await;
    browser.click("button[type=submit]").await;
    let page = browser.text_with("Keep these recovery codes").await;
    let codes = recovery_codes(&page);
    assert_eq!(codes.len(), 10, "{page}");
    browser.shot(&format!("{name}-recovery-codes")).await;
    (secret, codes)
}

/// Submits the account page's second-factor form with `code` and the
/// button of `action`.
async fn change_mfa(browser: &mut Browser, identity: &str, code: &str, action: &str) {
    browser.goto(&format!("{identity}/account")).await;
    browser.text_with("Two-step verification is on").await;
    browser.type_into("#mfa_code", code).await;
    browser
        .click(&format!("button[name=action][value={action}]"))
        .await;
}

/// The second factor managed from identity's account page: enrol with the
/// authenticator's code, new recovery codes (the old ones dead), another
/// authenticator (the old one dead), then off.
#[tokio::test]
async fn browser_second_factor_enrol_new_codes_replace_and_remove() {
    let Some(mut browser) = Browser::start("second_factor").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = platform(dir.path(), &[]);
    let identity = to_login(&mut browser, &gateway).await;
    browser.submit_login("dave", "dave's long password").await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");

    browser.goto(&format!("{identity}/account")).await;
    let off = browser.text_with("Two-step verification is off").await;
    assert!(off.contains("Two-step verification is off"), "{off}");
    browser.click("a[href='/account/totp']").await;
    let (first_app, first_codes) = enrol(&mut browser, "enrol").await;
    browser.click("a.button").await;
    let on = browser.text_with("10 recovery codes left").await;
    assert!(on.contains("10 recovery codes left"), "{on}");
    browser.shot("account-mfa-on").await;

    change_mfa(&mut browser, &identity, &first_codes[0], "recovery_codes").await;
    let page = browser.text_with("Keep these recovery codes").await;
    let codes = recovery_codes(&page);
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| !first_codes.contains(c)), "all new");
    browser.shot("new-recovery-codes").await;
    change_mfa(&mut browser, &identity, &first_codes[1], "recovery_codes").await;
    let refused = browser.text_with("Invalid code").await;
    assert!(refused.contains("Invalid code"), "the old batch is gone");
    browser.shot("old-recovery-code-refused").await;

    change_mfa(&mut browser, &identity, &codes[0], "replace").await;
    let (second_app, _) = enrol(&mut browser, "replace").await;
    assert_ne!(second_app, first_app);
    // The first authenticator no longer counts; the second's next code
    // (its current step was spent confirming it) turns the factor off.
    change_mfa(&mut browser, &identity, &totp_now(&first_app, 1), "remove").await;
    assert!(
        browser
            .text_with("Invalid code")
            .await
            .contains("Invalid code")
    );
    change_mfa(&mut browser, &identity, &totp_now(&second_app, 1), "remove").await;
    let removed = browser.text_with("Two-step verification is off").await;
    assert!(
        removed.contains("Signing in takes your password only"),
        "{removed}"
    );
    browser.shot("removed").await;
    browser.goto(&format!("{identity}/account")).await;
    assert!(
        browser
            .text_with("Set up two-step verification")
            .await
            .contains("Two-step verification is off.")
    );
    browser.stop().await;
}

/// An invitation from `echod user invite` (mail set up, policy `invite`):
/// the mail at the real SMTP server, its link opened, a password chosen,
/// then signing in with it.
#[tokio::test]
async fn browser_accept_an_invitation_from_the_mail_and_sign_in() {
    let Some(mut browser) = Browser::start("invitation").await else {
        return;
    };
    let smtp = echo_testkit::smtp::SmtpServer::start();
    let dir = echo_testkit::data_dir();
    let (_server, gateway) = mailing_platform(dir.path(), &smtp, "invite");
    let identity = to_login(&mut browser, &gateway).await;
    assert!(
        !browser.text().await.contains("/register"),
        "no sign-up under invite"
    );

    let invited = echod(dir.path())
        .args(["user", "invite", "gail", "--email", "gail@example.test"])
        .env("ECHO_SMTP_URL", smtp.url())
        .env("ECHO_SMTP_FROM", MAIL_FROM)
        .env("ECHO_REGISTRATION", "invite")
        .env("ECHO_ISSUER", &identity)
        .output()
        .unwrap();
    assert!(invited.status.success(), "{invited:?}");
    let mail = smtp.wait_for(1, Duration::from_secs(30)).remove(0);
    assert_eq!(mail.to, vec!["gail@example.test".to_owned()]);
    let link = mail.link("/invitation?token=").expect("an invitation link");

    browser.goto(&link).await;
    let form = browser.text_with("Welcome, gail").await;
    assert!(form.contains("Choose a password"), "{form}");
    browser
        .type_into("#new_password", "gail's own long passphrase")
        .await;
    browser.shot("invitation").await;
    browser.click("button[type=submit]").await;
    let ready = browser.text_with("Your account is ready").await;
    assert!(ready.contains("Your account is ready"), "{ready}");
    browser.shot("invitation-accepted").await;
    browser.goto(&link).await;
    assert!(
        !browser.text().await.contains("Welcome, gail"),
        "the link works once"
    );

    browser.goto(&gateway).await;
    browser.click("a.button").await;
    browser
        .submit_login("gail", "gail's own long passphrase")
        .await;
    assert_eq!(browser.path_when(|p| p == "/").await, "/");
    assert!(browser.text().await.contains("Welcome, gail"));
    browser.stop().await;
}

/// Signs `username` in from identity's login form, enrolling the TOTP
/// authenticator role `admin` requires on the way (the secret read off
/// the page, the code computed as an app would), and continues past the
/// recovery codes.
async fn sign_in_enrolling(browser: &mut Browser, username: &str, password: &str) {
    browser.submit_login(username, password).await;
    enrol(browser, "enrol").await;
    browser.click("a.button").await;
}

#[tokio::test]
async fn browser_an_admin_registers_a_client_suspends_a_user_and_rotates_keys() {
    let Some(mut browser) = Browser::start("console").await else {
        return;
    };
    let dir = echo_testkit::data_dir();
    let mut add = echod(dir.path());
    add.args(["user", "add", "root", "--password-stdin", "--role", "admin"]);
    let added = run_with_stdin(add, "root's long password\n");
    assert!(added.status.success(), "{added:?}");
    let (_server, gateway) = platform(dir.path(), &[]);

    browser.goto(&format!("{gateway}/admin/clients")).await;
    // A failed sign-in first, for the dashboard.
    browser.submit_login("root", "not root's password").await;
    browser.text_with("Invalid username or password").await;
    sign_in_enrolling(&mut browser, "root", "root's long password").await;
    assert_eq!(
        browser.path_when(|p| p == "/admin/clients").await,
        "/admin/clients"
    );
    let page = browser.text_with("Register a client").await;
    assert!(
        page.contains("id=\"nav-keys\""),
        "console links for an admin"
    );
    browser
        .type_into("#create-client input[name=id]", "web")
        .await;
    browser
        .type_into(
            "#create-client textarea[name=redirect_uris]",
            "https://web.example.test/cb",
        )
        .await;
    browser.shot("client-form").await;
    browser.click("#create-client button").await;
    let shown = browser.text_with("client-secret").await;
    let secret = between(&shown, "id=\"client-secret\">", "<").to_owned();
    assert!(secret.len() >= 32, "{secret}");
    browser.shot("client-secret").await;
    browser.click("#client-link").await;
    let client = browser.text_with("https://web.example.test/cb").await;
    assert!(!client.contains(&secret), "the secret is shown once");

    // suspend dave: asked first, then done
    browser.goto(&format!("{gateway}/admin/users/dave")).await;
    browser.click("#user-suspend button").await;
    let asked = browser.text_with("Suspend user dave?").await;
    assert!(asked.contains("Yes, do it"), "{asked}");
    browser.shot("confirm-suspend").await;
    browser.click("#confirm button").await;
    assert_eq!(
        browser.path_when(|p| p.contains("done=")).await,
        "/admin/users/dave?done=suspended"
    );
    let suspended = browser.text_with("Suspended.").await;
    assert!(
        suspended.contains("id=\"state\" class=\"state-suspended\""),
        "{suspended}"
    );
    browser.shot("suspended").await;

    // rotate the keys: asked first, then one more key per algorithm in use
    browser.goto(&format!("{gateway}/admin/keys")).await;
    let before = browser
        .text_with("Signing keys")
        .await
        .matches("<tr><td><code>")
        .count();
    browser.click("#rotate-keys button").await;
    browser.text_with("Rotate the signing keys?").await;
    browser.click("#confirm button").await;
    assert_eq!(
        browser.path_when(|p| p.contains("done=")).await,
        "/admin/keys?done=rotated"
    );
    let after = browser.text_with("Rotated.").await;
    assert!(after.matches("<tr><td><code>").count() > before, "{after}");
    browser.shot("keys-rotated").await;

    // root's page: their recent events, read from the audit service, hold
    // what they just did (the audit writer sends in batches: wait for it)
    let deadline = Instant::now() + Duration::from_secs(15);
    let own = loop {
        browser.goto(&format!("{gateway}/admin/users/root")).await;
        let page = browser.text().await;
        if page.contains("<td>key.rotated</td>") {
            break page;
        }
        assert!(Instant::now() < deadline, "no events on the page: {page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let events = between(&own, "id=\"user-events\"", "</table>");
    for action in ["admin.client.created", "key.rotated"] {
        assert!(
            events.contains(&format!("<td>{action}</td>")),
            "{action}: {events}"
        );
    }
    browser.shot("user-events").await;

    // the log at 1280 px: the filter form inside the page, filters in the URL
    browser.client.set_window_size(1280, 900).await.unwrap();
    // Identity's audit writer sends in batches: wait for the suspension.
    let filtered = format!("{gateway}/logs?action=admin.user.state_changed");
    let deadline = Instant::now() + Duration::from_secs(15);
    let logs = loop {
        browser.goto(&filtered).await;
        let page = browser.text().await;
        if page.contains("<td>admin.user.state_changed</td>") {
            break page;
        }
        assert!(Instant::now() < deadline, "no event: {page}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        logs.contains("value=\"admin.user.state_changed\""),
        "kept in the form"
    );
    let sizes = browser
        .client
        .execute(
            "const form = document.querySelector('form.filters').getBoundingClientRect();\
             return [form.right, document.documentElement.clientWidth, document.documentElement.scrollWidth];",
            vec![],
        )
        .await
        .unwrap();
    let [right, width, scroll] = [0, 1, 2].map(|i| sizes[i].as_f64().unwrap());
    assert!(right <= width && scroll <= width, "{sizes}");
    // the actor by name, its id beside
    assert!(logs.contains("<td class=\"who\">root <code>"), "{logs}");
    browser.shot("logs-1280").await;

    // the dashboard: the chart, and the latest failures named as in the log
    browser.goto(&format!("{gateway}/admin")).await;
    let dashboard = browser.text_with("Latest failures").await;
    assert!(dashboard.contains("id=\"logins-chart\""), "{dashboard}");
    assert!(
        dashboard.contains("<td>auth.login.failure</td>")
            && dashboard.contains("<td class=\"who\">root</td>"),
        "the failed sign-in, its user by name: {dashboard}"
    );
    browser.shot("dashboard").await;
    browser.stop().await;
}
