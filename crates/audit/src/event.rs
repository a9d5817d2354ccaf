//! The audit event record, its validation, and its canonical bytes.
//!
//! An [`Event`] is what a writer submits and what the store keeps. Its
//! [`canonical_bytes`](Event::canonical_bytes) are what the hash chain
//! (see [`crate::chain`]) commits to, so that encoding is a stored format:
//! every hash ever written depends on it, and changing it would make every
//! existing chain fail verification.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest event id, in characters.
pub const MAX_ID_LEN: usize = 128;
/// Longest service name, in characters.
pub const MAX_SERVICE_LEN: usize = 64;
/// Longest action, in characters.
pub const MAX_ACTION_LEN: usize = 128;
/// Longest message, in bytes (64 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest canonical JSON of `context`, in bytes (64 KiB).
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;
/// Longest optional string field (`actor`, `outcome`, `ip`, `user_agent`,
/// `trace_id`), in bytes (1 KiB).
pub const MAX_OPTIONAL_BYTES: usize = 1024;

/// How severe an event is. Serialized in lowercase (`"warn"`), which is also
/// how it appears in the canonical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Critical,
    ];

    /// The lowercase name, as serialized and hashed.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }

    /// Parses a lowercase level name. `"warning"` is accepted as [`Level::Warn`]
    /// because common logging libraries spell it that way; anything else,
    /// including upper case, is `None` so a query filter never silently widens.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "warning" {
            return Some(Level::Warn);
        }
        Self::ALL.into_iter().find(|level| level.as_str() == s)
    }
}

impl Level {
    /// A level as writers send it: any case, with the names common logging
    /// libraries use (`WARNING` is `warn`, `FATAL` is `critical`), so that
    /// services written for the original design (`"level": "INFO"`) log
    /// unchanged. Stored events always carry the lowercase name.
    pub fn from_writer(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fatal" => Some(Level::Critical),
            lower => Self::parse(lower),
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audit event as stored. `time` is Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Chosen by the writer, so a retried submission is recognised as the
    /// same event instead of being logged twice.
    pub id: String,
    /// Unix milliseconds, as reported by the writer.
    pub time: i64,
    pub service: String,
    pub level: Level,
    /// Dotted lowercase segments, e.g. `"auth.login.failure"`.
    pub action: String,
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub message: String,
    /// Free-form structured detail: a JSON object, or null.
    #[serde(default)]
    pub context: Value,
}

/// Why an event was refused: the offending field and a short reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EventError {
    EventError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// A top-level field of the canonical object, borrowed from the event.
enum Field<'a> {
    Str(&'a str),
    OptStr(Option<&'a str>),
    Int(i64),
    Json(&'a Value),
    /// Already canonical JSON, copied verbatim.
    Raw(&'a str),
}

/// An event's fields borrowed as stored, for hashing rows straight from the
/// database without building an [`Event`]: `context` is the stored text,
/// which [`Event::context_json`] wrote in canonical form.
#[derive(Debug, Clone, Copy)]
pub struct StoredFields<'a> {
    pub id: &'a str,
    pub time: i64,
    pub service: &'a str,
    pub level: &'a str,
    pub action: &'a str,
    pub actor: Option<&'a str>,
    pub outcome: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub trace_id: Option<&'a str>,
    pub message: &'a str,
    pub context: &'a str,
}

impl StoredFields<'_> {
    /// [`Event::canonical_bytes`] of the stored event, into `out` (cleared
    /// first, so one buffer serves a whole scan). Equal to it whenever the
    /// stored context is canonical, as every row written by this crate's
    /// stores is.
    pub fn canonical_bytes_into(&self, out: &mut Vec<u8>) {
        out.clear();
        self.write_canonical(Field::Raw(self.context), out);
    }

    /// The canonical top-level object, with `context` written as given.
    fn write_canonical(&self, context: Field<'_>, out: &mut Vec<u8>) {
        // Already in lexicographic order; a unit test checks it.
        let fields: [(&str, Field<'_>); 12] = [
            ("action", Field::Str(self.action)),
            ("actor", Field::OptStr(self.actor)),
            ("context", context),
            ("id", Field::Str(self.id)),
            ("ip", Field::OptStr(self.ip)),
            ("level", Field::Str(self.level)),
            ("message", Field::Str(self.message)),
            ("outcome", Field::OptStr(self.outcome)),
            ("service", Field::Str(self.service)),
            ("time", Field::Int(self.time)),
            ("trace_id", Field::OptStr(self.trace_id)),
            ("user_agent", Field::OptStr(self.user_agent)),
        ];
        out.push(b'{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(key, out);
            out.push(b':');
            match value {
                Field::Str(s) | Field::OptStr(Some(s)) => write_string(s, out),
                Field::OptStr(None) => out.extend_from_slice(b"null"),
                Field::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
                Field::Json(v) => write_canonical(v, out),
                Field::Raw(json) => out.extend_from_slice(json.as_bytes()),
            }
        }
        out.push(b'}');
    }
}

impl Event {
    /// Deterministic bytes hashed into the chain.
    ///
    /// A JSON object with keys in lexicographic (UTF-8 byte) order at every
    /// depth, including inside `context`; no insignificant whitespace; absent
    /// options as `null`; numbers as serde_json writes them; strings escaped
    /// as serde_json escapes them (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`,
    /// other control characters as lowercase `\u00xx`, everything else
    /// verbatim UTF-8). Every field is always present, so two equal events
    /// have equal bytes and any change to any field changes them.
    ///
    /// **This is a stored format: never change it.** Every chain hash already
    /// written was computed over these bytes. The top-level object is written
    /// from an explicit field list rather than through `Serialize`, so a later
    /// serde attribute (say, `skip_serializing_if`) cannot change it silently;
    /// keys are sorted here rather than relying on serde_json's map order,
    /// which changes if any crate in the build enables `preserve_order`.
    /// A new field would need a new chain format version, not an edit here.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.message.len());
        self.stored_fields("")
            .write_canonical(Field::Json(&self.context), &mut out);
        out
    }

    /// The event's fields borrowed, with `context` standing for the stored
    /// context text.
    pub fn stored_fields<'a>(&'a self, context: &'a str) -> StoredFields<'a> {
        StoredFields {
            id: &self.id,
            time: self.time,
            service: &self.service,
            level: self.level.as_str(),
            action: &self.action,
            actor: self.actor.as_deref(),
            outcome: self.outcome.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            trace_id: self.trace_id.as_deref(),
            message: &self.message,
            context,
        }
    }

    /// `context` as stored: its canonical JSON, so the stored text is the
    /// very bytes the chain hashes (see [`StoredFields`]).
    pub fn context_json(&self) -> String {
        // Canonical JSON is built from `str`s and ASCII, so always UTF-8.
        String::from_utf8_lossy(&canonical_json(&self.context)).into_owned()
    }

    /// Checks writer input before it is redacted, chained and stored.
    ///
    /// - `id`: 1..=128 characters of `[A-Za-z0-9._:-]`, so it is safe in URLs,
    ///   logs and idempotency look-ups;
    /// - `service`: 1..=64 characters of `[A-Za-z0-9._-]`;
    /// - `action`: 1..=128 characters, dotted lowercase segments `[a-z0-9_-]+`
    ///   (no empty segment), so queries by prefix (`auth.`) are meaningful;
    /// - `message`: at most 64 KiB; `context`: null or an object whose
    ///   canonical JSON is at most 64 KiB; each optional string at most 1 KiB.
    ///
    /// The limits bound what one writer can make every verifier hash forever.
    /// `time` and `level` are not checked: any `i64` and any [`Level`] is valid.
    pub fn validate(&self) -> Result<(), EventError> {
        check_token(&self.id, "id", MAX_ID_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
        })?;
        check_token(&self.service, "service", MAX_SERVICE_LEN, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
        })?;
        check_action(&self.action)?;
        if self.message.len() > MAX_MESSAGE_BYTES {
            return Err(invalid(
                "message",
                format!("longer than {MAX_MESSAGE_BYTES} bytes"),
            ));
        }
        for (field, value) in [
            ("actor", &self.actor),
            ("outcome", &self.outcome),
            ("ip", &self.ip),
            ("user_agent", &self.user_agent),
            ("trace_id", &self.trace_id),
        ] {
            if value.as_ref().is_some_and(|s| s.len() > MAX_OPTIONAL_BYTES) {
                return Err(invalid(
                    field,
                    format!("longer than {MAX_OPTIONAL_BYTES} bytes"),
                ));
            }
        }
        match &self.context {
            Value::Null => {}
            Value::Object(_) => {
                if canonical_json(&self.context).len() > MAX_CONTEXT_BYTES {
                    return Err(invalid(
                        "context",
                        format!("canonical JSON longer than {MAX_CONTEXT_BYTES} bytes"),
                    ));
                }
            }
            _ => return Err(invalid("context", "must be an object or null")),
        }
        Ok(())
    }
}

fn check_token(
    value: &str,
    field: &'static str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if let Some(c) = value.chars().find(|&c| !allowed(c)) {
        return Err(invalid(field, format!("character {c:?} not allowed")));
    }
    // Only ASCII passed the character check, so bytes are characters.
    if value.len() > max {
        return Err(invalid(field, format!("longer than {max} characters")));
    }
    Ok(())
}

fn check_action(action: &str) -> Result<(), EventError> {
    check_token(action, "action", MAX_ACTION_LEN, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
    })?;
    if action.split('.').any(str::is_empty) {
        return Err(invalid(
            "action",
            "must be dot-separated non-empty segments of [a-z0-9_-]",
        ));
    }
    Ok(())
}

/// Canonical JSON of any value: keys sorted by UTF-8 bytes at every depth, no
/// whitespace. The same encoding [`Event::canonical_bytes`] uses for
/// `context`.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

/// Recursion depth is that of the value; values parsed by serde_json are at
/// most 128 levels deep, which keeps this well within the stack.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // serde_json's Display for Number is what its serializer writes
        // (itoa for integers, ryu for floats); a test pins that.
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
    }
}

/// A JSON string escaped exactly as serde_json escapes it, written here so the
/// stored format does not depend on a library's choice.
fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0C => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1F => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xF) as usize],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    type Mutation = Box<dyn Fn(&mut Event)>;

    fn sample() -> Event {
        Event {
            id: "evt-1".into(),
            time: 1_700_000_000_123,
            service: "identity".into(),
            level: Level::Warn,
            action: "auth.login.failure".into(),
            actor: Some("user:42".into()),
            outcome: Some("denied".into()),
            ip: None,
            user_agent: None,
            trace_id: None,
            message: "bad \"password\"\n".into(),
            context: json!({"z": 1, "a": {"y": [true, null, 1.5], "b": "é"}}),
        }
    }

    #[test]
    fn canonical_bytes_golden() {
        let bytes = sample().canonical_bytes();
        let expected = concat!(
            r#"{"action":"auth.login.failure","actor":"user:42","#,
            r#""context":{"a":{"b":"é","y":[true,null,1.5]},"z":1},"#,
            r#""id":"evt-1","ip":null,"level":"warn","#,
            r#""message":"bad \"password\"\n","outcome":"denied","#,
            r#""service":"identity","time":1700000000123,"trace_id":null,"user_agent":null}"#,
        );
        assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    }

    #[test]
    fn canonical_bytes_are_valid_json_matching_serde() {
        let event = sample();
        let parsed: Value = serde_json::from_slice(&event.canonical_bytes()).unwrap();
        assert_eq!(parsed, serde_json::to_value(&event).unwrap());
        let back: Event = serde_json::from_value(parsed).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn top_level_keys_are_sorted_and_complete() {
        let parsed: Value = serde_json::from_slice(&sample().canonical_bytes()).unwrap();
        let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys.len(), 12);
        // And the raw bytes list them in that order too.
        let text = String::from_utf8(sample().canonical_bytes()).unwrap();
        let positions: Vec<usize> = sorted
            .iter()
            .map(|k| text.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn key_order_independent_of_insertion_order() {
        let mut a = serde_json::Map::new();
        a.insert("b".into(), json!(1));
        a.insert("a".into(), json!({"d": 1, "c": [{"f": 1, "e": 2}]}));
        let mut inner = serde_json::Map::new();
        inner.insert("c".into(), json!([{"e": 2, "f": 1}]));
        inner.insert("d".into(), json!(1));
        let mut b = serde_json::Map::new();
        b.insert("a".into(), Value::Object(inner));
        b.insert("b".into(), json!(1));
        let (mut ea, mut eb) = (sample(), sample());
        ea.context = Value::Object(a);
        eb.context = Value::Object(b);
        assert_eq!(ea.canonical_bytes(), eb.canonical_bytes());
        assert_eq!(
            canonical_json(&ea.context),
            br#"{"a":{"c":[{"e":2,"f":1}],"d":1},"b":1}"#
        );
    }

    #[test]
    fn every_field_changes_the_bytes() {
        let base = sample();
        let original = base.canonical_bytes();
        let mutations: Vec<Mutation> = vec![
            Box::new(|e| e.id.push('x')),
            Box::new(|e| e.time += 1),
            Box::new(|e| e.service.push('x')),
            Box::new(|e| e.level = Level::Error),
            Box::new(|e| e.action.push('x')),
            Box::new(|e| e.actor = None),
            Box::new(|e| e.outcome = Some(String::new())),
            Box::new(|e| e.ip = Some(String::new())),
            Box::new(|e| e.user_agent = Some("null".into())),
            Box::new(|e| e.trace_id = Some("t".into())),
            Box::new(|e| e.message.clear()),
            Box::new(|e| e.context = Value::Null),
            Box::new(|e| e.context["a"]["y"][2] = json!(1.25)),
        ];
        for (i, mutate) in mutations.iter().enumerate() {
            let mut e = base.clone();
            mutate(&mut e);
            assert_ne!(e.canonical_bytes(), original, "mutation {i}");
        }
        // `None` and `Some("null")` must differ too.
        let mut a = base.clone();
        a.ip = Some("null".into());
        assert_ne!(a.canonical_bytes(), original);
    }

    #[test]
    fn string_escaping_matches_serde_json() {
        let mut all: String = (0u8..0x80).map(char::from).collect();
        all.push_str("é€😀\u{2028}\u{2029}\u{7f}/");
        let mut cases = vec![all, String::new(), "plain".into()];
        cases.extend((0u8..0x80).map(|b| char::from(b).to_string()));
        for s in cases {
            let mut ours = Vec::new();
            write_string(&s, &mut ours);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn numbers_match_serde_json() {
        for n in [
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(1e-7),
            json!(0.1),
            json!(123456789.0),
        ] {
            assert_eq!(canonical_json(&n), serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn level_names() {
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
            assert_eq!(
                serde_json::to_string(&level).unwrap(),
                format!("\"{}\"", level.as_str())
            );
        }
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Level::parse("WARN"), None);
        assert_eq!(Level::parse(""), None);
        assert_eq!(Level::parse("fatal"), None);
        for (sent, level) in [
            ("INFO", Level::Info),
            ("Warning", Level::Warn),
            ("WARN", Level::Warn),
            ("CRITICAL", Level::Critical),
            ("FATAL", Level::Critical),
            ("debug", Level::Debug),
            ("Error", Level::Error),
        ] {
            assert_eq!(Level::from_writer(sent), Some(level), "{sent}");
        }
        assert_eq!(Level::from_writer("LOUD"), None);
    }

    #[test]
    fn deserializes_with_defaults() {
        let e: Event = serde_json::from_str(
            r#"{"id":"a","time":1,"service":"s","level":"info","action":"x.y"}"#,
        )
        .unwrap();
        assert_eq!(e.actor, None);
        assert_eq!(e.message, "");
        assert_eq!(e.context, Value::Null);
        assert_eq!(e.validate(), Ok(()));
    }

    fn field_of(result: Result<(), EventError>) -> &'static str {
        match result {
            Err(EventError::Invalid { field, .. }) => field,
            Ok(()) => "ok",
        }
    }

    #[test]
    fn validate_accepts_sample_and_limits() {
        assert_eq!(sample().validate(), Ok(()));
        let mut e = sample();
        e.id = "a".repeat(MAX_ID_LEN);
        e.service = "A-z.0_9".repeat(9).chars().take(MAX_SERVICE_LEN).collect();
        e.action = format!("{}.b", "a".repeat(MAX_ACTION_LEN - 2));
        e.message = "m".repeat(MAX_MESSAGE_BYTES);
        e.actor = Some("x".repeat(MAX_OPTIONAL_BYTES));
        e.context = Value::Null;
        assert_eq!(e.validate(), Ok(()));
        e.id = "urn:x:Y_1-2.3".into();
        e.action = "a-b.c_d.0".into();
        assert_eq!(e.validate(), Ok(()));
    }

    #[test]
    fn validate_rejects() {
        let cases: Vec<(&str, Mutation)> = vec![
            ("id", Box::new(|e| e.id.clear())),
            ("id", Box::new(|e| e.id = "a".repeat(MAX_ID_LEN + 1))),
            ("id", Box::new(|e| e.id = "a b".into())),
            ("id", Box::new(|e| e.id = "a/b".into())),
            ("id", Box::new(|e| e.id = "é".into())),
            ("service", Box::new(|e| e.service.clear())),
            ("service", Box::new(|e| e.service = "s".repeat(65))),
            ("service", Box::new(|e| e.service = "a:b".into())),
            ("action", Box::new(|e| e.action.clear())),
            ("action", Box::new(|e| e.action = "Auth.login".into())),
            ("action", Box::new(|e| e.action = "auth..login".into())),
            ("action", Box::new(|e| e.action = ".auth".into())),
            ("action", Box::new(|e| e.action = "auth.".into())),
            ("action", Box::new(|e| e.action = "auth login".into())),
            ("action", Box::new(|e| e.action = "a".repeat(129))),
            (
                "message",
                Box::new(|e| e.message = "m".repeat(MAX_MESSAGE_BYTES + 1)),
            ),
            ("actor", Box::new(|e| e.actor = Some("x".repeat(1025)))),
            ("outcome", Box::new(|e| e.outcome = Some("x".repeat(1025)))),
            ("ip", Box::new(|e| e.ip = Some("x".repeat(1025)))),
            (
                "user_agent",
                Box::new(|e| e.user_agent = Some("x".repeat(1025))),
            ),
            (
                "trace_id",
                Box::new(|e| e.trace_id = Some("x".repeat(1025))),
            ),
            ("context", Box::new(|e| e.context = json!([1]))),
            ("context", Box::new(|e| e.context = json!("s"))),
            (
                "context",
                Box::new(|e| e.context = json!({"k": "v".repeat(MAX_CONTEXT_BYTES)})),
            ),
        ];
        for (field, mutate) in cases {
            let mut e = sample();
            mutate(&mut e);
            assert_eq!(field_of(e.validate()), field, "{e:?}");
        }
    }
}
