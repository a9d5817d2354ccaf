use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The `aud` claim: one string or an array of them (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Audience::One(one) => one == audience,
            Audience::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::One(one) => Audience::One(one),
            Raw::Many(many) => Audience::Many(many),
        })
    }
}

/// The registered claims a verifier checks, plus every other claim as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

impl Claims {
    /// Whether the space-separated `scope` claim includes `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split(' ').any(|s| s == scope))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_accepts_string_or_array() {
        let one: Audience = serde_json::from_str(r#""audit""#).unwrap();
        let many: Audience = serde_json::from_str(r#"["audit","parser"]"#).unwrap();
        assert!(one.contains("audit") && !one.contains("parser"));
        assert!(many.contains("parser") && !many.contains("gateway"));
        assert!(serde_json::from_str::<Audience>("5").is_err());
    }

    #[test]
    fn scope_lookup_is_by_whole_word() {
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "iss": "i", "sub": "s", "aud": "a", "exp": 1, "scope": "audit.read openid"
        }))
        .unwrap();
        assert!(claims.has_scope("audit.read"));
        assert!(!claims.has_scope("audit"));
    }
}
