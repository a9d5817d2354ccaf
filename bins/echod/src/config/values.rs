//! The types of the file's values: each checked as it is read (so a bad
//! value is an error at its line), each written back as the text of its
//! variable.

use std::path::PathBuf;

use serde::Deserialize;

use crate::args::TokenAlg;

/// A value of the file, as its variable holds it.
pub trait Value {
    /// The variable's text.
    fn to_env(&self) -> String;
    /// The TOML text of a variable's value.
    fn toml(env: &str) -> String
    where
        Self: Sized,
    {
        quoted(env)
    }
}

/// `text` as a TOML basic string (JSON's escapes are TOML's).
pub fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

impl Value for String {
    fn to_env(&self) -> String {
        self.clone()
    }
}

impl Value for PathBuf {
    fn to_env(&self) -> String {
        self.display().to_string()
    }
}

impl Value for bool {
    fn to_env(&self) -> String {
        self.to_string()
    }
    fn toml(env: &str) -> String {
        env.to_owned()
    }
}

macro_rules! number {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            fn to_env(&self) -> String {
                self.to_string()
            }
            fn toml(env: &str) -> String {
                env.to_owned()
            }
        }
    )*};
}
number!(u16, u32, u64, usize, i64);

/// A list, comma-separated in its variable.
impl Value for Vec<String> {
    fn to_env(&self) -> String {
        self.join(",")
    }
    fn toml(env: &str) -> String {
        let items: Vec<String> = env
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(quoted)
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// A duration as humantime writes it (`30s`, `15m`, `90d`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Span(String);

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        humantime::parse_duration(&text)
            .map(|_| Self(text.clone()))
            .map_err(|e| {
                format!("{text:?} is not a duration (e.g. \"30s\", \"15m\", \"90d\"): {e}")
            })
    }
}

impl Value for Span {
    fn to_env(&self) -> String {
        self.0.clone()
    }
}

/// An address to listen on, `host:port`.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Address(String);

impl TryFrom<String> for Address {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(Self(text)),
            _ => Err(format!(
                "{text:?} is not an address to listen on (host:port, e.g. \"127.0.0.1:8081\")"
            )),
        }
    }
}

impl Value for Address {
    fn to_env(&self) -> String {
        self.0.clone()
    }
}

/// A URL. One with a password is refused in the file (a secret is given
/// by the `…_file` key instead), and redacted wherever it is printed.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Url(String);

impl TryFrom<String> for Url {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let url = url::Url::parse(&text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if url.password().is_some() {
            return Err(
                "this URL carries a password: the file holds no secret; put the URL in a file \
                 named by the `…_file` key beside this one"
                    .to_owned(),
            );
        }
        Ok(Self(text))
    }
}

impl Value for Url {
    fn to_env(&self) -> String {
        self.0.clone()
    }
    fn toml(env: &str) -> String {
        quoted(&redact_url(env))
    }
}

/// `url` with its password, if any, replaced by `REDACTED`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("REDACTED"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        // Not a URL: it may still hold a secret; show none of it.
        Err(_) => "REDACTED (not a URL)".to_owned(),
    }
}

/// Development (the default) or production: production refuses to start
/// on development defaults (`production.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Development,
    Production,
}

impl Value for Mode {
    fn to_env(&self) -> String {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
        .to_owned()
    }
}

impl Value for TokenAlg {
    fn to_env(&self) -> String {
        echo_crypto::Algorithm::from(*self).to_string()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Value for LogFormat {
    fn to_env(&self) -> String {
        format!("{self:?}").to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_redacted_and_a_non_url_hidden() {
        assert_eq!(
            redact_url("postgres://echo:hunter2@db/echo"),
            "postgres://echo:REDACTED@db/echo"
        );
        assert_eq!(redact_url("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
        assert!(!redact_url("hunter2").contains("hunter2"));
    }

    #[test]
    fn values_are_checked_as_read() {
        assert!(Span::try_from("30x".to_owned()).is_err());
        assert!(Address::try_from("127.0.0.1".to_owned()).is_err());
        assert!(Address::try_from("[::1]:8080".to_owned()).is_ok());
        assert!(Url::try_from("postgres://u:p@db/x".to_owned()).is_err());
        assert_eq!(
            <Vec<String> as Value>::toml("admin, auditor"),
            r#"["admin", "auditor"]"#
        );
    }
}
