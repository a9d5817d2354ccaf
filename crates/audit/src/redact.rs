//! Secret values removed from an event before it is chained and stored.
//!
//! An audit log is kept for a long time, read by many people and cannot be
//! edited afterwards without breaking the chain (see [`crate::chain`]), so a
//! password or token that reaches it is leaked for good. Redaction therefore
//! runs before hashing and errs on the side of removing too much.
//!
//! A redacted string is replaced by `redacted:sha256:` and the first 16 hex
//! digits of its SHA-256, so the same token can still be followed across
//! events without being recoverable from one. For long random secrets
//! (tokens, keys) that is safe; for a low-entropy value such as a human
//! password, an unsalted 64-bit hash prefix still lets someone holding a
//! candidate list confirm a guess, which is why writers should never put
//! passwords in events in the first place.

use echo_crypto::secret::sha256;
use serde_json::Value;

use crate::event::Event;

/// Substrings of a lowercase key name that mark its value as secret.
pub const SENSITIVE_KEY_PARTS: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "cookie",
    "api_key",
    "apikey",
    "private_key",
    "credential",
];

/// Keys named `code` or `*_code` are redacted (OAuth authorization codes,
/// one-time codes, recovery codes) except these, which are well known not to
/// be secrets and are too useful to lose.
pub const CODE_ALLOW_LIST: [&str; 5] = [
    "status_code",
    "http_code",
    "error_code",
    "zip_code",
    "country_code",
];

/// What a redacted non-string value (number, object, array, null…) becomes.
pub const REDACTED: &str = "redacted";

/// Prefix of the marker that replaces a redacted string.
pub const MARKER_PREFIX: &str = "redacted:sha256:";

/// Redacts `event` in place.
///
/// - In `context`, at any depth (objects inside arrays included), the value of
///   every key judged secret by [`is_sensitive_key`] is replaced whole: a
///   string by [`marker`], anything else by `"redacted"`.
/// - In `message`, and in every other string value of `context`, anything
///   shaped like a JWT (three or more base64url segments separated by dots,
///   the first starting `eyJ`, i.e. a base64url JSON header) is replaced by
///   its marker: bearer tokens end up in error messages far more often than
///   under a key called `token`.
///
/// Idempotent: a value that already is a marker is left alone, so redacting
/// twice (writer library and server, say) gives the same event.
pub fn redact(event: &mut Event) {
    redact_value(&mut event.context);
    if let Some(clean) = redact_jwts(&event.message) {
        event.message = clean;
    }
}

/// Whether the value under `key` must be redacted.
///
/// The name is checked both lowercased as is and in snake case (`authCode`,
/// `auth-code` → `auth_code`; `privateKey` → `private_key`), so camelCase and
/// kebab-case keys are caught too; the allow-list is checked on the snake-case
/// form, so `statusCode` stays. Substring matching over-redacts now and then
/// (`secretary`); that is the safe direction.
pub fn is_sensitive_key(key: &str) -> bool {
    let lower = key.to_lowercase();
    let snake = snake_case(key);
    let contains_part = |name: &str| SENSITIVE_KEY_PARTS.iter().any(|part| name.contains(part));
    let is_code = |name: &str| name == "code" || name.ends_with("_code");
    contains_part(&lower)
        || contains_part(&snake)
        || (is_code(&snake) && !CODE_ALLOW_LIST.contains(&snake.as_str()))
}

/// The marker for a redacted string: `redacted:sha256:` and the first 16 hex
/// digits of SHA-256 of the value.
pub fn marker(value: &str) -> String {
    let digest = sha256(value.as_bytes());
    let mut out = String::with_capacity(MARKER_PREFIX.len() + 16);
    out.push_str(MARKER_PREFIX);
    for byte in &digest[..8] {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn is_marker(value: &str) -> bool {
    value == REDACTED
        || value
            .strip_prefix(MARKER_PREFIX)
            .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| HEX.contains(&b)))
}

/// `fooBar-baz Qux` → `foo_bar_baz_qux`: an underscore before an upper-case
/// letter that follows a lower-case letter or digit; `-` and space become `_`.
fn snake_case(key: &str) -> String {
    let mut out = String::with_capacity(key.len() + 4);
    let mut prev_lower_or_digit = false;
    for c in key.chars() {
        if c.is_uppercase() && prev_lower_or_digit {
            out.push('_');
        }
        prev_lower_or_digit = c.is_lowercase() || c.is_ascii_digit();
        match c {
            '-' | ' ' => out.push('_'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// Serde_json bounds parsed values to 128 levels, which bounds this recursion.
fn redact_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_sensitive_key(key) {
                    redact_whole(item);
                } else {
                    redact_value(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_value),
        Value::String(s) => {
            if let Some(clean) = redact_jwts(s) {
                *s = clean;
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn redact_whole(value: &mut Value) {
    *value = match value {
        Value::String(s) if is_marker(s) => return,
        Value::String(s) => Value::String(marker(s)),
        _ => Value::String(REDACTED.to_owned()),
    };
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// `text` with every JWT-shaped token replaced by its marker, or `None` if
/// there is none (the common case, which then allocates nothing).
fn redact_jwts(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0; // bytes of `text` already copied into `out`
    let mut i = 0;
    while let Some(found) = text[i..].find("eyJ") {
        let begin = i + found;
        i = begin + 1;
        if begin > 0 && is_b64url(bytes[begin - 1]) {
            continue; // inside a longer word
        }
        let run = |from: usize| {
            let len = bytes[from..].iter().take_while(|&&b| is_b64url(b)).count();
            from + len
        };
        let mut end = run(begin);
        let mut segments = 1;
        while end < bytes.len() && bytes[end] == b'.' {
            let next = run(end + 1);
            if next == end + 1 {
                break; // a dot not followed by a segment ends the token
            }
            end = next;
            segments += 1;
        }
        if segments < 3 {
            continue;
        }
        // Every byte in begin..end is ASCII, so both are char boundaries.
        let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
        buf.push_str(&text[copied..begin]);
        buf.push_str(&marker(&text[begin..end]));
        copied = end;
        i = end;
    }
    let mut buf = out?;
    buf.push_str(&text[copied..]);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Level;
    use serde_json::json;

    const JWT: &str = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlX2J5dGVz";

    fn event(context: Value, message: &str) -> Event {
        Event {
            id: "e1".into(),
            time: 0,
            service: "svc".into(),
            level: Level::Info,
            action: "a.b".into(),
            actor: None,
            outcome: None,
            ip: None,
            user_agent: None,
            trace_id: None,
            message: message.into(),
            context,
        }
    }

    fn redacted(context: Value) -> Value {
        let mut e = event(context, "");
        redact(&mut e);
        e.context
    }

    #[test]
    fn marker_format() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a3...
        assert_eq!(marker("abc"), "redacted:sha256:ba7816bf8f01cfea");
        assert!(is_marker(&marker("x")));
        assert!(is_marker(REDACTED));
        assert!(!is_marker("redacted:sha256:xyz"));
    }

    #[test]
    fn nested_keys_and_arrays_of_objects() {
        let out = redacted(json!({
            "user": {"name": "alice", "Password": "hunter2", "profile": {"api_key": "k1"}},
            "headers": [
                {"name": "accept", "Authorization": "Bearer abc"},
                {"Set-Cookie": "sid=1", "value": 3}
            ],
            "client_secret": {"nested": "object"},
            "refresh_token": 12345,
            "otp": {"code": "123456", "recovery_code": ["a", "b"]},
            "passwd": null,
        }));
        assert_eq!(out["user"]["name"], "alice");
        assert_eq!(out["user"]["Password"], marker("hunter2"));
        assert_eq!(out["user"]["profile"]["api_key"], marker("k1"));
        assert_eq!(out["headers"][0]["name"], "accept");
        assert_eq!(out["headers"][0]["Authorization"], marker("Bearer abc"));
        assert_eq!(out["headers"][1]["Set-Cookie"], marker("sid=1"));
        assert_eq!(out["headers"][1]["value"], 3);
        assert_eq!(out["client_secret"], REDACTED);
        assert_eq!(out["refresh_token"], REDACTED);
        assert_eq!(out["otp"]["code"], marker("123456"));
        assert_eq!(out["otp"]["recovery_code"], REDACTED);
        assert_eq!(out["passwd"], REDACTED);
    }

    #[test]
    fn code_allow_list_and_case_styles() {
        let out = redacted(json!({
            "status_code": 401, "http_code": 500, "error_code": "E1",
            "zip_code": "12345", "country_code": "FR", "statusCode": 200,
            "barcode": "x", "encoded": "y",
            "auth_code": "c1", "authCode": "c2", "auth-code": "c3", "Code": "c4",
            "accessToken": "t", "privateKey": "p", "APIKey": "k", "x-api-key": "k2",
        }));
        for kept in [
            "status_code",
            "http_code",
            "error_code",
            "zip_code",
            "country_code",
            "statusCode",
            "barcode",
            "encoded",
        ] {
            assert!(!out[kept].as_str().is_some_and(is_marker), "{kept}");
        }
        assert_eq!(out["status_code"], 401);
        for gone in [
            "auth_code",
            "authCode",
            "auth-code",
            "Code",
            "accessToken",
            "privateKey",
            "APIKey",
            "x-api-key",
        ] {
            assert!(out[gone].as_str().is_some_and(is_marker), "{gone}");
        }
    }

    #[test]
    fn same_value_same_marker() {
        let out = redacted(
            json!({"token": "abc", "other": {"session_token": "abc"}, "t2": {"token": "abd"}}),
        );
        assert_eq!(out["token"], out["other"]["session_token"]);
        assert_ne!(out["token"], out["t2"]["token"]);
        assert!(!out.to_string().contains("\"abc\""));
    }

    #[test]
    fn idempotent() {
        let mut e = event(
            json!({"password": "pw", "n": [{"secret": 1}], "note": JWT}),
            &format!("got {JWT}"),
        );
        redact(&mut e);
        let once = e.clone();
        redact(&mut e);
        assert_eq!(e, once);
    }

    #[test]
    fn jwt_in_message() {
        let mut e = event(
            Value::Null,
            &format!("rejected Authorization: Bearer {JWT}, retry {JWT}."),
        );
        redact(&mut e);
        let m = marker(JWT);
        assert_eq!(
            e.message,
            format!("rejected Authorization: Bearer {m}, retry {m}.")
        );
        assert!(!e.message.contains("eyJ"));
    }

    #[test]
    fn jwt_in_context_string_and_edges() {
        let out = redacted(json!({"detail": format!("token={JWT}")}));
        assert_eq!(out["detail"], format!("token={}", marker(JWT)));
        // JWE-like five segments: the whole thing goes.
        let five = format!("{JWT}.aaa.bbb");
        assert_eq!(redact_jwts(&five), Some(marker(&five)));
        // Whole string, and at the very end.
        assert_eq!(redact_jwts(JWT), Some(marker(JWT)));
        assert_eq!(
            redact_jwts(&format!("x {JWT}")),
            Some(format!("x {}", marker(JWT)))
        );
        // Not JWTs: two segments, not at a word start, empty segment, no eyJ.
        for text in [
            "eyJabc.def",
            "xeyJabc.def.ghi",
            "eyJabc..ghi",
            "abc.def.ghi",
            "eyJ",
            "see eyJ. ok",
            "",
            "é eyJ…",
        ] {
            assert_eq!(redact_jwts(text), None, "{text}");
        }
        // Non-ASCII around a token is preserved.
        assert_eq!(
            redact_jwts(&format!("é{JWT}ü")),
            Some(format!("é{}ü", marker(JWT)))
        );
    }

    #[test]
    fn null_or_plain_context_untouched() {
        assert_eq!(redacted(Value::Null), Value::Null);
        let plain = json!({"a": 1, "b": ["x", {"c": true}]});
        assert_eq!(redacted(plain.clone()), plain);
    }

    #[test]
    fn other_fields_untouched() {
        let mut e = event(json!({"token": "t"}), "hello");
        e.actor = Some("secret-user".into());
        redact(&mut e);
        assert_eq!(e.actor.as_deref(), Some("secret-user"));
        assert_eq!(e.message, "hello");
    }
}
