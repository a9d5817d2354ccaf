//! A real SMTP server for tests: Python's `aiosmtpd` on a port of
//! 127.0.0.1, writing each message it accepts to a directory as JSON
//! (sender, recipients, subject, the plain-text and HTML parts decoded
//! from their transfer encoding, and how the connection was secured and
//! authenticated), which [`SmtpServer::messages`] reads.
//!
//! [`SmtpOptions`] choose the transport: plain, STARTTLS offered, or TLS
//! from the first byte, with a [`TestCa`]'s server certificate; and AUTH
//! (LOGIN and PLAIN offered) required with one user and password, each
//! attempt recorded ([`SmtpServer::auth_attempts`]).
//!
//! `.ci/run` installs `aiosmtpd`; a machine without it fails the test with
//! that said (a test never passes without the server).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::tls::{Process, TestCa, free_port, temp_dir, wait_for_port};

/// The server: a handler that stores each message as `messages/<n>.json`
/// (written to a temporary name first, so a reader never sees half a
/// file), and each AUTH attempt as a line of `auth.jsonl`.
const SERVER: &str = r#"
import asyncio, json, os, ssl, sys
from email import message_from_bytes, policy
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

port, out, tls, cert, key, user, password = sys.argv[1:8]
port = int(port)
messages = os.path.join(out, "messages")

def authenticator(server, session, envelope, mechanism, auth_data):
    login = auth_data.login.decode()
    ok = login == user and auth_data.password.decode() == password
    with open(os.path.join(out, "auth.jsonl"), "a") as f:
        f.write(json.dumps({"mechanism": mechanism, "login": login, "ok": ok}) + "\n")
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

class Keep:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content, policy=policy.default)
        def part(kind):
            body = message.get_body(preferencelist=(kind,))
            return body.get_content() if body is not None else None
        if session.ssl is not None:
            secured = "starttls"
        elif server.transport.get_extra_info("ssl_object") is not None:
            secured = "implicit"
        else:
            secured = None
        Keep.count += 1
        record = {
            "from": envelope.mail_from,
            "to": envelope.rcpt_tos,
            "subject": str(message["subject"]),
            "content_type": message.get_content_type(),
            "text": part("plain"),
            "html": part("html"),
            "tls": secured,
            "login": session.auth_data.login.decode() if session.authenticated else None,
        }
        path = os.path.join(messages, "%06d.json" % Keep.count)
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return "250 OK"

options = {}
if tls != "none":
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if tls == "starttls":
        options["tls_context"] = context
    else:
        options["ssl_context"] = context
if user:
    # aiosmtpd counts only STARTTLS as TLS: over implicit TLS it must be
    # told that AUTH is safe.
    options.update(authenticator=authenticator, auth_required=True,
                   auth_require_tls=(tls != "implicit"))
controller = Controller(Keep(), hostname="127.0.0.1", port=port, **options)
controller.start()
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
"#;

/// How the server's connections are secured.
#[derive(Debug, Clone, Copy, Default)]
pub enum SmtpTls<'a> {
    /// Plain text, no STARTTLS offered.
    #[default]
    None,
    /// STARTTLS offered (not required), with the CA's server certificate.
    StartTls(&'a TestCa),
    /// TLS from the first byte (`smtps://`), with the CA's server
    /// certificate.
    Implicit(&'a TestCa),
}

/// What the server offers and requires.
#[derive(Debug, Clone, Copy, Default)]
pub struct SmtpOptions<'a> {
    pub tls: SmtpTls<'a>,
    /// AUTH required, LOGIN and PLAIN offered, succeeding for this user
    /// and password only (aiosmtpd accepts it only over TLS).
    pub login: Option<(&'a str, &'a str)>,
}

/// One AUTH attempt the server saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `LOGIN` or `PLAIN`.
    pub mechanism: String,
    pub login: String,
    /// The password was the right one.
    pub ok: bool,
}

/// One message as the server received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    /// The top-level content type (`multipart/alternative` for a message
    /// with both parts).
    pub content_type: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// How the connection that brought it was secured: `starttls`,
    /// `implicit`, or `None` (plain text).
    pub tls: Option<String>,
    /// The user it authenticated as, if it did.
    pub login: Option<String>,
}

impl Delivered {
    /// The first `http(s)://…` link in the plain-text part that contains
    /// `path`.
    pub fn link(&self, path: &str) -> Option<String> {
        self.text
            .as_deref()?
            .split_whitespace()
            .find(|word| word.starts_with("http") && word.contains(path))
            .map(str::to_owned)
    }
}

/// `aiosmtpd` on a port of 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct SmtpServer {
    pub port: u16,
    dir: TempDir,
    _process: Process,
}

impl SmtpServer {
    /// Starts it on a free port, plain text, without AUTH.
    pub fn start() -> Self {
        Self::start_with(SmtpOptions::default())
    }

    /// Starts it on a free port with `options`.
    pub fn start_with(options: SmtpOptions<'_>) -> Self {
        Self::start_on_with(free_port(), options)
    }

    /// Starts it on `port` (one a test kept free, to bring a mail server
    /// back where it was down).
    pub fn start_on(port: u16) -> Self {
        Self::start_on_with(port, SmtpOptions::default())
    }

    /// Starts it on `port` with `options`.
    #[allow(clippy::expect_used)]
    pub fn start_on_with(port: u16, options: SmtpOptions<'_>) -> Self {
        let dir = temp_dir("echo-test-smtp-");
        std::fs::create_dir(dir.path().join("messages")).expect("messages directory");
        let log = dir.path().join("smtp.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let (tls, ca) = match options.tls {
            SmtpTls::None => ("none", None),
            SmtpTls::StartTls(ca) => ("starttls", Some(ca)),
            SmtpTls::Implicit(ca) => ("implicit", Some(ca)),
        };
        let (cert, key) = ca.map_or((Path::new(""), Path::new("")), |ca| {
            (ca.cert_file.as_path(), ca.key_file.as_path())
        });
        let (user, password) = options.login.unwrap_or(("", ""));
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(port.to_string())
            .arg(dir.path())
            .args([tls])
            .args([cert, key])
            .args([user, password])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start python3 (aiosmtpd)");
        wait_for_port("aiosmtpd", port, &mut child, &log);
        Self {
            port,
            dir,
            _process: Process(child),
        }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// `smtps://127.0.0.1:<port>`.
    pub fn smtps_url(&self) -> String {
        format!("smtps://127.0.0.1:{}", self.port)
    }

    /// Every AUTH attempt so far, in order.
    #[allow(clippy::expect_used)]
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        let text = std::fs::read_to_string(self.dir.path().join("auth.jsonl")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let record: Value = serde_json::from_str(line).expect("an AUTH record");
                AuthAttempt {
                    mechanism: record["mechanism"].as_str().unwrap_or_default().to_owned(),
                    login: record["login"].as_str().unwrap_or_default().to_owned(),
                    ok: record["ok"].as_bool().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Delivered> {
        read_messages(&self.dir.path().join("messages"))
    }

    /// Waits up to `timeout` until `count` messages have arrived; panics
    /// with what did arrive otherwise.
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Delivered> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} of {count} messages arrived in {timeout:?}: {messages:?}",
                    messages.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[allow(clippy::expect_used)]
fn read_messages(dir: &Path) -> Vec<Delivered> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .expect("messages directory")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).expect("read message");
            let record: Value = serde_json::from_str(&text).expect("message JSON");
            let text_of = |key: &str| record[key].as_str().map(str::to_owned);
            Delivered {
                from: text_of("from").unwrap_or_default(),
                to: record["to"]
                    .as_array()
                    .map(|to| {
                        to.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: text_of("subject").unwrap_or_default(),
                content_type: text_of("content_type").unwrap_or_default(),
                text: text_of("text"),
                html: text_of("html"),
                tls: text_of("tls"),
                login: text_of("login"),
            }
        })
        .collect()
}
