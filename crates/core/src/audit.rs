//! Audit events and the one interface every service writes them through.
//!
//! An [`AuditEvent`] names *what* happened (a dotted `action` such as
//! `auth.login.failure`), *who* did it and with what result. Services hand
//! events to an [`AuditSink`]; which sink runs is the binary's choice. Until
//! the audit service exists, [`LogAuditSink`] writes them to the structured
//! log under the `audit` target.
//!
//! Events never carry a password, a secret or a whole token: callers put
//! identifiers (client id, `kid`, `jti`) in `details`, never credentials.
//! Text a request supplied (a typed username, a claimed client id) goes
//! through [`bounded`] first, so a caller cannot make the audit log store
//! kilobytes per request.

use serde::Serialize;
use serde_json::{Map, Value};

/// Most bytes of caller-supplied text an event keeps per detail.
pub const MAX_DETAIL_BYTES: usize = 256;

/// What ends caller-supplied text that was cut to [`MAX_DETAIL_BYTES`].
pub const TRUNCATED: &str = "…[truncated]";

/// `text` as an audit detail: unchanged when it fits in
/// [`MAX_DETAIL_BYTES`], else cut at a character boundary and ended with
/// [`TRUNCATED`], the whole at most [`MAX_DETAIL_BYTES`] bytes. Use it for
/// every detail whose value came from a request.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_DETAIL_BYTES {
        return text.to_owned();
    }
    let mut cut = MAX_DETAIL_BYTES - TRUNCATED.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{TRUNCATED}", &text[..cut])
}

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
}

/// One security-relevant action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Dotted name, e.g. `auth.login.success`, `token.issued`.
    pub action: &'static str,
    pub outcome: Outcome,
    /// The subject acting: a user id, a client id, or an admin on the CLI.
    pub actor: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The W3C trace id of the request that caused the event.
    pub trace_id: Option<String>,
    /// Everything else worth keeping: client id, audience, `kid`, reason.
    pub details: Map<String, Value>,
}

impl AuditEvent {
    pub fn success(action: &'static str) -> Self {
        Self::new(action, Outcome::Success)
    }

    pub fn failure(action: &'static str) -> Self {
        Self::new(action, Outcome::Failure)
    }

    /// A caller refused at the door (a 401 or 403): `reason` says why; the
    /// actor is the token's subject when the token itself was valid.
    pub fn refused(action: &'static str, reason: &str, subject: Option<&str>) -> Self {
        let event = Self::failure(action).detail("reason", reason);
        match subject {
            Some(subject) => event.actor(subject),
            None => event,
        }
    }

    fn new(action: &'static str, outcome: Outcome) -> Self {
        Self {
            action,
            outcome,
            actor: None,
            ip: None,
            user_agent: None,
            trace_id: None,
            details: Map::new(),
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Records where the request came from.
    pub fn origin(mut self, ip: Option<String>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent;
        self
    }

    /// Records the trace of the request that caused the event.
    pub fn trace(mut self, trace_id: Option<String>) -> Self {
        self.trace_id = trace_id;
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Where audit events go. Recording never blocks the caller and never fails
/// the action being audited: a sink that cannot deliver must say so itself.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: AuditEvent);
}

/// Writes each event as one structured log line (target `audit`).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogAuditSink;

impl AuditSink for LogAuditSink {
    fn record(&self, event: AuditEvent) {
        let details = Value::Object(event.details);
        match event.outcome {
            Outcome::Success => tracing::info!(
                target: "audit",
                action = event.action,
                outcome = "success",
                actor = event.actor.as_deref(),
                ip = event.ip.as_deref(),
                user_agent = event.user_agent.as_deref(),
                trace_id = event.trace_id.as_deref(),
                details = %details,
            ),
            Outcome::Failure => tracing::warn!(
                target: "audit",
                action = event.action,
                outcome = "failure",
                actor = event.actor.as_deref(),
                ip = event.ip.as_deref(),
                user_agent = event.user_agent.as_deref(),
                trace_id = event.trace_id.as_deref(),
                details = %details,
            ),
        }
    }
}

/// Keeps events in memory; for tests that assert what was audited.
#[derive(Debug, Default)]
pub struct MemoryAuditSink(std::sync::Mutex<Vec<AuditEvent>>);

impl MemoryAuditSink {
    pub fn events(&self) -> Vec<AuditEvent> {
        crate::sync::lock(&self.0).clone()
    }

    pub fn actions(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.action).collect()
    }
}

impl AuditSink for MemoryAuditSink {
    fn record(&self, event: AuditEvent) {
        crate::sync::lock(&self.0).push(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_fields() {
        let e = AuditEvent::failure("auth.login.failure")
            .actor("alice")
            .origin(Some("127.0.0.1".into()), None)
            .detail("client_id", "web");
        assert_eq!(e.outcome, Outcome::Failure);
        assert_eq!(e.actor.as_deref(), Some("alice"));
        assert_eq!(e.details["client_id"], "web");
    }

    #[test]
    fn a_refusal_is_a_failure_with_its_reason_and_a_known_subject() {
        let anonymous = AuditEvent::refused("x.denied", "expired", None);
        assert_eq!(anonymous.outcome, Outcome::Failure);
        assert_eq!(anonymous.details["reason"], "expired");
        assert_eq!(anonymous.actor, None);
        let known = AuditEvent::refused("x.denied", "not_a_service_token", Some("alice"));
        assert_eq!(known.actor.as_deref(), Some("alice"));
    }

    #[test]
    fn bounded_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(bounded("alice"), "alice");
        let exact = "a".repeat(MAX_DETAIL_BYTES);
        assert_eq!(bounded(&exact), exact);
        for long in ["a".repeat(60_000), "é".repeat(1_000), "🦀".repeat(100)] {
            let cut = bounded(&long);
            assert!(cut.len() <= MAX_DETAIL_BYTES, "{} bytes", cut.len());
            assert!(cut.ends_with(TRUNCATED));
            assert!(long.starts_with(cut.trim_end_matches(TRUNCATED)));
        }
    }

    #[test]
    fn memory_sink_keeps_order() {
        let sink = MemoryAuditSink::default();
        sink.record(AuditEvent::success("a"));
        sink.record(AuditEvent::failure("b"));
        assert_eq!(sink.actions(), vec!["a", "b"]);
    }
}
