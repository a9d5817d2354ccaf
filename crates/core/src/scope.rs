//! [`Scope`]: an OAuth scope, parsed once.

use std::fmt;

/// RFC 6749 §3.3: a set of scope tokens, written space-separated. Parsing
/// drops empty tokens and repeats and keeps the order first given, so
/// `"openid  openid profile"` is `openid profile`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    /// The scope written as `text` (RFC 6749 §3.3: tokens separated by
    /// spaces).
    pub fn parse(text: &str) -> Self {
        text.split(' ').collect()
    }

    /// Whether `token` is one of the scope's tokens (whole tokens only:
    /// `audit` is not in `audit.read`).
    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The first token of `self` that `other` lacks, if any.
    pub fn first_outside(&self, other: &Scope) -> Option<&str> {
        self.iter().find(|t| !other.contains(t))
    }

    /// Whether every token of `self` is in `other`.
    pub fn is_within(&self, other: &Scope) -> bool {
        self.first_outside(other).is_none()
    }

    /// RFC 6749 §6 (and RFC 8693 §2.1): a request may narrow a granted
    /// scope but never widen it. No request, or an empty one, is the whole
    /// grant; `Err` names the first token asked for that was not granted.
    pub fn narrow(&self, asked: Option<&str>) -> Result<Scope, String> {
        let asked = Scope::parse(asked.unwrap_or_default());
        if asked.is_empty() {
            return Ok(self.clone());
        }
        match asked.first_outside(self) {
            Some(extra) => Err(extra.to_owned()),
            None => Ok(asked),
        }
    }

    /// The tokens of `self` that `keep` accepts.
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> Scope {
        self.iter().filter(|t| keep(t)).collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Scope {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut tokens: Vec<String> = Vec::new();
        for token in iter {
            let token = token.as_ref();
            if !token.is_empty() && !tokens.iter().any(|t| t == token) {
                tokens.push(token.to_owned());
            }
        }
        Scope(tokens)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, token) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(token)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_drops_empty_tokens_and_repeats_in_order() {
        let scope = Scope::parse("  openid openid  profile ");
        assert_eq!(scope.to_string(), "openid profile");
        assert!(scope.contains("profile") && !scope.contains("open"));
        assert!(Scope::parse("   ").is_empty());
    }

    #[test]
    fn a_scope_may_narrow_but_never_widen() {
        let granted = Scope::parse("openid profile offline_access");
        assert_eq!(granted.narrow(None).unwrap(), granted);
        assert_eq!(granted.narrow(Some("  ")).unwrap(), granted);
        assert_eq!(
            granted
                .narrow(Some("openid openid profile"))
                .unwrap()
                .to_string(),
            "openid profile"
        );
        assert_eq!(
            granted.narrow(Some("openid email")),
            Err("email".to_owned())
        );
    }

    #[test]
    fn subsets_and_filters() {
        let small = Scope::parse("a b");
        let big = Scope::parse("b c a");
        assert!(small.is_within(&big));
        assert_eq!(big.first_outside(&small), Some("c"));
        assert_eq!(big.filter(|t| t != "c").to_string(), "b a");
    }
}
