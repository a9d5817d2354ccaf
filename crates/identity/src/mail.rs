//! Mail to users (password-reset links), over SMTP, through a durable job
//! queue.
//!
//! ```text
//!  request ──queue_mail──► Outbox queue (sealed job "identity.send_mail")
//!                               │ every second (`delivery.rs`): take
//!                               ▼
//!                          Mailer::send ──► SMTP server
//!                               │ refused for now (down, 4xx, our login refused): fail(Transient), retried
//!                               │ refused for good (other 5xx): fail(Permanent), dead letter
//!                               └ sent: complete
//! ```
//!
//! - [`SmtpSettings`] name the server (`smtp_url`), the sender
//!   (`smtp_from`) and the password (`smtp_password_file`): `smtp://host:port`
//!   upgrades with STARTTLS when the server offers it, `?tls=required`
//!   refuses a server that does not, `smtps://host:port` is TLS from the
//!   first byte. TLS trusts the platform's [`TrustedRoots`] (the system's
//!   and `--ca-file`'s), through rustls on aws-lc-rs.
//! - [`Outbox`] is a [`JobQueue`] of identity's own (one implementation of
//!   the queue, another queue: the worker of the document pipeline takes
//!   every job of its queue) with the [`Mailer`]. A request only enqueues,
//!   so a mail server that is down delays a message and loses nothing:
//!   the job is retried with the queue's back-off until the server answers.
//! - The payload is sealed with a key derived from the master key: a queued
//!   reset link is as secret as the token it carries.
//! - Every message has a plain-text and an HTML part (`multipart/alternative`).

use std::sync::Arc;
use std::time::Duration;

use askama::Template;
use echo_crypto::TrustedRoots;
use echo_crypto::seal::MasterKey;
use echo_crypto::secret::{b64url, b64url_decode};
use echo_queue::{Failure, JobQueue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{IdentityError, Result};

/// The job kind of one message.
pub const SEND_MAIL: &str = "identity.send_mail";
/// How long one delivery may hold its job.
const MAIL_LEASE: Duration = Duration::from_secs(120);
/// How long an SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Associated data of sealed payloads.
const MAIL_AAD: &[u8] = b"identity-mail";

/// Where and as whom identity sends mail.
#[derive(Clone)]
pub struct SmtpSettings {
    /// `smtp://[user@]host[:port][?tls=required]` or `smtps://[user@]host[:port]`.
    pub url: String,
    /// The `From:` address, e.g. `Echo <echo@example.com>`.
    pub from: String,
    /// The SMTP password of the URL's user.
    pub password: Option<String>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &self.url)
            .field("from", &self.from)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// An SMTP client for [`SmtpSettings`].
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// Checks the settings and prepares the client (it connects per send).
    pub fn new(settings: &SmtpSettings, roots: &TrustedRoots) -> Result<Self> {
        let from = settings.from.parse().map_err(|e| {
            bad(format!(
                "smtp_from {:?} is not an address: {e}",
                settings.from
            ))
        })?;
        let transport = transport(&settings.url, settings.password.as_deref(), roots)?;
        Ok(Self { transport, from })
    }

    /// Sends `mail` now; the error says whether trying again may help.
    async fn send(&self, mail: &Mail) -> std::result::Result<(), (String, Failure)> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|e| (format!("recipient {:?}: {e}", mail.to), Failure::Permanent))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.as_str())
            .multipart(MultiPart::alternative_plain_html(
                mail.text.clone(),
                mail.html.clone(),
            ))
            .map_err(|e| (e.to_string(), Failure::Permanent))?;
        self.transport.send(message).await.map(drop).map_err(|e| {
            let failure = if e.is_permanent() && !refuses_our_login(&e) {
                Failure::Permanent
            } else {
                Failure::Transient
            };
            (e.to_string(), failure)
        })
    }
}

/// RFC 4954 §6: 530 (authentication required), 534 (mechanism too weak),
/// 535 (credentials invalid) and 538 (encryption required) refuse this
/// client's login, not the message: it waits, retried, until the settings
/// are put right (a rotated password, say) instead of being dropped.
fn refuses_our_login(error: &lettre::transport::smtp::Error) -> bool {
    error
        .status()
        .map(u16::from)
        .is_some_and(|code| matches!(code, 530 | 534 | 535 | 538))
}

fn bad(message: String) -> IdentityError {
    IdentityError::BadInput(message)
}

/// The SMTP transport `url` names, trusting `roots`.
fn transport(
    url: &str,
    password: Option<&str>,
    roots: &TrustedRoots,
) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let parsed = url::Url::parse(url).map_err(|e| bad(format!("smtp_url {url:?}: {e}")))?;
    let host = parsed
        .host_str()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| bad(format!("smtp_url {url:?} names no host")))?;
    let mut tls_required = false;
    for (key, value) in parsed.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("tls", "required") if parsed.scheme() == "smtp" => tls_required = true,
            _ => {
                return Err(bad(format!(
                    "smtp_url {url:?}: unknown option {key}={value} (smtp:// takes ?tls=required)"
                )));
            }
        }
    }
    let tls_parameters = TlsParameters::builder(host.to_owned())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(
            Certificate::from_pem(&roots.pem())
                .map_err(|e| bad(format!("the trusted roots: {e}")))?,
        )
        .build_rustls()
        .map_err(|e| bad(format!("smtp_url {url:?}: TLS: {e}")))?;
    let (tls, default_port) = match parsed.scheme() {
        "smtp" if tls_required => (Tls::Required(tls_parameters), 587),
        "smtp" => (Tls::Opportunistic(tls_parameters), 587),
        "smtps" => (Tls::Wrapper(tls_parameters), 465),
        other => {
            return Err(bad(format!(
                "smtp_url {url:?}: scheme {other}:// (expected smtp:// or smtps://)"
            )));
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(parsed.port().unwrap_or(default_port))
        .tls(tls)
        .timeout(Some(SMTP_TIMEOUT));
    let user = percent_decoded(parsed.username());
    match (user.is_empty(), password) {
        (false, password) => {
            builder = builder.credentials(Credentials::new(
                user,
                password.unwrap_or_default().to_owned(),
            ));
        }
        (true, Some(_)) => {
            return Err(bad(format!(
                "an SMTP password needs a user in smtp_url (smtp://user@host), not in {url:?}"
            )));
        }
        (true, None) => {}
    }
    if parsed.password().is_some() {
        return Err(bad(
            "smtp_url must not hold the password: give it by smtp_password_file".to_owned(),
        ));
    }
    Ok(builder.build())
}

/// `text` with its `%XX` escapes decoded (a `+` stays a `+`).
fn percent_decoded(text: &str) -> String {
    let query = format!("u={}", text.replace('+', "%2B"));
    url::form_urlencoded::parse(query.as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

/// One message, as it waits in the queue (sealed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The words of a message that carries one link.
#[derive(Debug, Clone)]
pub(crate) struct LinkWords<'a> {
    pub subject: &'a str,
    /// What happened and what the link does (before it).
    pub message: &'a str,
    /// The link's text in the HTML part.
    pub action: &'a str,
    /// How long it works, and what to do if unexpected (after it).
    pub footer: &'a str,
}

#[derive(Template)]
#[template(path = "mail/link.txt")]
struct LinkText<'a> {
    name: &'a str,
    message: &'a str,
    link: &'a str,
    footer: &'a str,
}

#[derive(Template)]
#[template(path = "mail/link.html")]
struct LinkHtml<'a> {
    name: &'a str,
    message: &'a str,
    action: &'a str,
    link: &'a str,
    footer: &'a str,
}

impl Mail {
    /// A message to `name` at `to` carrying `link`, in `words`.
    pub(crate) fn with_link(
        to: &str,
        name: &str,
        link: &str,
        words: &LinkWords<'_>,
    ) -> Result<Self> {
        let render = |e: askama::Error| IdentityError::Mail(format!("template: {e}"));
        Ok(Self {
            to: to.to_owned(),
            subject: words.subject.to_owned(),
            text: LinkText {
                name,
                message: words.message,
                link,
                footer: words.footer,
            }
            .render()
            .map_err(render)?,
            html: LinkHtml {
                name,
                message: words.message,
                action: words.action,
                link,
                footer: words.footer,
            }
            .render()
            .map_err(render)?,
        })
    }

    /// The message carrying a password-reset `link`, valid `minutes`.
    pub(crate) fn password_reset(
        to: &str,
        username: &str,
        link: &str,
        minutes: i64,
    ) -> Result<Self> {
        let message = format!(
            "Someone asked to reset the password of your Echo account. To choose a new \
             password, open this link within {minutes} minutes:"
        );
        let words = LinkWords {
            subject: "Reset your Echo password",
            message: &message,
            action: "Choose a new password",
            footer: "The link works once. If you did not ask for this, ignore this message: \
                     your password stays as it is.",
        };
        Self::with_link(to, username, link, &words)
    }
}

/// Identity's queue of messages and the client that sends them.
pub struct Outbox {
    queue: Arc<dyn JobQueue>,
    mailer: Mailer,
}

impl Outbox {
    pub fn new(queue: Arc<dyn JobQueue>, mailer: Mailer) -> Self {
        Self { queue, mailer }
    }

    /// Queues `mail`, sealed with `key`.
    pub(crate) async fn enqueue(&self, mail: &Mail, key: &MasterKey) -> Result<()> {
        let json =
            serde_json::to_vec(mail).map_err(|e| IdentityError::Mail(format!("encode: {e}")))?;
        let sealed = b64url(&key.seal(MAIL_AAD, &json)?);
        self.queue
            .enqueue(SEND_MAIL, &json!({ "sealed": sealed }), None)
            .await?;
        Ok(())
    }

    /// Sends every message that is due (sealed with `key`); returns how
    /// many went out. A server that refuses one for now is not asked again
    /// this round: its job waits out its back-off like the others will.
    pub(crate) async fn deliver(&self, key: &MasterKey) -> Result<usize> {
        let mut sent = 0;
        while let Some(job) = self.queue.take("identity-mail", MAIL_LEASE).await? {
            let mail = (job.kind == SEND_MAIL)
                .then(|| open(&job.payload, key))
                .flatten();
            let Some(mail) = mail else {
                tracing::error!(job = %job.id(), kind = job.kind, "unreadable mail job");
                let error = "not a message identity can read";
                self.queue
                    .fail(&job.lease, error, Failure::Permanent)
                    .await?;
                continue;
            };
            match self.mailer.send(&mail).await {
                Ok(()) => {
                    self.queue.complete(&job.lease).await?;
                    sent += 1;
                }
                Err((error, failure)) => {
                    let failed = self.queue.fail(&job.lease, &error, failure).await?;
                    tracing::warn!(job = %job.id(), attempt = job.attempt(), %error, ?failed, "mail not sent");
                    if failure == Failure::Transient {
                        break;
                    }
                }
            }
        }
        Ok(sent)
    }
}

fn open(payload: &serde_json::Value, key: &MasterKey) -> Option<Mail> {
    let sealed = b64url_decode(payload.get("sealed")?.as_str()?)?;
    let json = key.open(MAIL_AAD, &sealed).ok()?;
    serde_json::from_slice(&json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str, password: Option<&str>) -> SmtpSettings {
        SmtpSettings {
            url: url.to_owned(),
            from: "Echo <echo@example.test>".to_owned(),
            password: password.map(str::to_owned),
        }
    }

    fn refusal(url: &str, password: Option<&str>) -> String {
        match Mailer::new(&settings(url, password), &TrustedRoots::system()) {
            Ok(_) => panic!("{url} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn smtp_urls_are_checked() {
        let roots = TrustedRoots::system();
        for url in [
            "smtp://mail.example.test",
            "smtp://mail.example.test:2525",
            "smtp://mail.example.test:587?tls=required",
            "smtps://mail.example.test",
            "smtp://user%40corp@mail.example.test",
        ] {
            assert!(Mailer::new(&settings(url, None), &roots).is_ok(), "{url}");
        }
        assert!(Mailer::new(&settings("smtp://u@h", Some("pw")), &roots).is_ok());
        assert!(refusal("http://mail.example.test", None).contains("smtp:// or smtps://"));
        assert!(refusal("smtp://h?tls=maybe", None).contains("unknown option"));
        assert!(refusal("smtps://h?tls=required", None).contains("unknown option"));
        assert!(refusal("smtp://u:secret@h", None).contains("smtp_password_file"));
        assert!(refusal("smtp://h", Some("pw")).contains("needs a user"));
        assert!(refusal("not a url", None).contains("smtp_url"));
        let from = Mailer::new(
            &SmtpSettings {
                from: "not an address".into(),
                ..settings("smtp://h", None)
            },
            &roots,
        );
        assert!(from.is_err());
    }

    #[test]
    fn the_password_never_prints() {
        let shown = format!("{:?}", settings("smtp://u@h", Some("hunter2-secret")));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn a_reset_mail_has_the_link_in_both_parts() {
        let link = "https://id.example.test/password/reset?token=abc&x=<y>";
        let mail = Mail::password_reset("a@example.test", "alice", link, 30).unwrap();
        assert!(mail.text.contains(link), "{}", mail.text);
        assert!(mail.text.contains("30 minutes"));
        assert!(
            mail.html.contains("token=abc&#38;x=&#60;y&#62;") && !mail.html.contains("<y>"),
            "escaped in HTML: {}",
            mail.html
        );
    }
}
