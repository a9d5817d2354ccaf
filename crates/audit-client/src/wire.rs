//! The audit service's event format, and how an [`AuditEvent`] becomes one.
//!
//! A batch lives as NDJSON (one compact JSON object per line) from the moment
//! it is built: that is what the spool stores, and
//! [`ndjson_to_json_array`] turns it into the JSON array the service takes
//! without parsing it again.

use std::time::{SystemTime, UNIX_EPOCH};

use echo_core::audit::{AuditEvent, Outcome};
use echo_crypto::secret::random_token;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One event as `POST /v1/events` takes it.
///
/// There is no `service` field: the service attributes every event to the
/// `sub` of the writer's token, so a writer cannot name another service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Chosen here, once, so that a batch resent after a lost answer is
    /// recognised by the service and stored once.
    pub id: String,
    /// Unix milliseconds when the event was recorded, not when it was sent:
    /// a spooled event keeps the time it happened. The service dates events
    /// with its own receive time and keeps this one as `context.client_time`
    /// (refusing it more than five minutes ahead of its clock).
    pub time: i64,
    /// `debug`, `info`, `warn`, `error` or `critical`.
    pub level: String,
    /// Dotted lowercase segments, e.g. `auth.login.failure`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    pub message: String,
    /// Always a JSON object (possibly empty).
    pub context: Value,
}

impl WireEvent {
    /// Converts an event recorded at `time_ms`, giving it a fresh random id.
    ///
    /// Failures are `warn` so that an operator filtering on level sees denied
    /// logins and refused tokens without the routine successes.
    pub fn from_audit(event: AuditEvent, time_ms: i64) -> Self {
        let (level, outcome) = match event.outcome {
            Outcome::Success => ("info", "success"),
            Outcome::Failure => ("warn", "failure"),
        };
        Self {
            id: random_token(),
            time: time_ms,
            level: level.to_owned(),
            action: event.action.to_owned(),
            actor: event.actor,
            outcome: Some(outcome.to_owned()),
            ip: event.ip,
            user_agent: event.user_agent,
            trace_id: event.trace_id,
            message: event.action.to_owned(),
            context: Value::Object(event.details),
        }
    }
}

/// The wall clock in Unix milliseconds (0 if the clock is before 1970, which
/// only a badly broken host reports; recording must not fail over it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Appends `event` as one NDJSON line.
///
/// serde_json's compact output escapes every newline inside strings, so a
/// line is always exactly one event.
pub fn write_ndjson_line(event: &WireEvent, out: &mut Vec<u8>) -> serde_json::Result<()> {
    serde_json::to_writer(&mut *out, event)?;
    out.push(b'\n');
    Ok(())
}

/// `[line1,line2,…]` from NDJSON, without re-parsing: each line already is a
/// complete JSON value. Blank lines are skipped.
pub fn ndjson_to_json_array(ndjson: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ndjson.len() + 2);
    out.push(b'[');
    let mut first = true;
    for line in ndjson.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(line);
    }
    out.push(b']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_is_info_and_failure_is_warn() {
        let ok = WireEvent::from_audit(AuditEvent::success("token.issued").actor("svc"), 42);
        assert_eq!(
            (ok.level.as_str(), ok.outcome.as_deref()),
            ("info", Some("success"))
        );
        assert_eq!(ok.time, 42);
        assert_eq!(ok.message, "token.issued");
        assert_eq!(ok.actor.as_deref(), Some("svc"));
        let bad = WireEvent::from_audit(
            AuditEvent::failure("auth.login.failure")
                .origin(Some("10.0.0.1".into()), Some("curl".into()))
                .detail("client_id", "web"),
            1,
        );
        assert_eq!(
            (bad.level.as_str(), bad.outcome.as_deref()),
            ("warn", Some("failure"))
        );
        assert_eq!(bad.context, json!({"client_id": "web"}));
        assert_eq!(bad.ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(bad.user_agent.as_deref(), Some("curl"));
    }

    #[test]
    fn ids_are_fresh_and_valid_for_the_service() {
        let a = WireEvent::from_audit(AuditEvent::success("a.b"), 0);
        let b = WireEvent::from_audit(AuditEvent::success("a.b"), 0);
        assert_ne!(a.id, b.id);
        assert!(
            a.id.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        );
        assert!(!a.id.is_empty() && a.id.len() <= 128);
    }

    #[test]
    fn wire_json_omits_service_and_absent_options() {
        let e = WireEvent::from_audit(AuditEvent::success("a.b"), 7);
        let v = serde_json::to_value(&e).unwrap();
        let obj = v.as_object().unwrap();
        assert!(!obj.contains_key("service"));
        assert!(!obj.contains_key("actor") && !obj.contains_key("trace_id"));
        assert_eq!(v["context"], json!({}));
        assert_eq!(v["time"], 7);
    }

    #[test]
    fn ndjson_becomes_a_json_array() {
        let events: Vec<WireEvent> = (0..3)
            .map(|i| {
                WireEvent::from_audit(AuditEvent::success("a.b").detail("m", "line\nbreak"), i)
            })
            .collect();
        let mut nd = Vec::new();
        for e in &events {
            write_ndjson_line(e, &mut nd).unwrap();
        }
        assert_eq!(nd.iter().filter(|&&b| b == b'\n').count(), 3);
        let parsed: Vec<WireEvent> = serde_json::from_slice(&ndjson_to_json_array(&nd)).unwrap();
        assert_eq!(parsed, events);
        assert_eq!(ndjson_to_json_array(b""), b"[]");
        assert_eq!(ndjson_to_json_array(b"{}\n\n  \n{}"), b"[{},{}]");
    }

    #[test]
    fn now_is_plausible() {
        assert!(now_ms() > 1_600_000_000_000);
    }
}
