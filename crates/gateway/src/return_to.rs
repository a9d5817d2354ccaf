//! Where a browser may be sent after login: only back to this gateway.

use crate::{GatewayError, Result};

/// Longest `return_to` kept.
const MAX_LEN: usize = 2048;

/// A same-origin path (with optional query) to land on after login; `/`
/// when none is given. Anything that a browser could read as another
/// origin is refused: absolute URLs, scheme-relative `//host`, `/\host`
/// (browsers treat `\` as `/`), and control characters (a tab or newline
/// inside `//` is dropped by URL parsers).
pub fn safe_return_to(raw: Option<&str>) -> Result<String> {
    let Some(path) = raw.filter(|p| !p.is_empty()) else {
        return Ok("/".to_owned());
    };
    let refused = || GatewayError::BadRequest("return_to must be a path on this site".into());
    if path.len() > MAX_LEN
        || !path.starts_with('/')
        || path.starts_with("//")
        || path.contains('\\')
        || path.chars().any(char::is_control)
    {
        return Err(refused());
    }
    // Belt and braces: resolved against any origin it must stay there.
    let base = url::Url::parse("http://gateway.invalid/").map_err(|_| refused())?;
    match base.join(path) {
        Ok(joined) if joined.origin() == base.origin() => Ok(path.to_owned()),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_on_this_site_pass() {
        assert_eq!(safe_return_to(None).unwrap(), "/");
        assert_eq!(safe_return_to(Some("")).unwrap(), "/");
        for ok in ["/", "/account", "/logs?level=warn&q=a%2Fb", "/a/b#frag"] {
            assert_eq!(safe_return_to(Some(ok)).unwrap(), ok);
        }
    }

    #[test]
    fn open_redirects_are_refused() {
        for bad in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "\\\\evil.test",
            "/\t/evil.test",
            "/\n/evil.test",
            "javascript:alert(1)",
            "evil.test",
            "http:evil.test",
        ] {
            assert!(safe_return_to(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(safe_return_to(Some(&format!("/{}", "a".repeat(MAX_LEN)))).is_err());
    }
}
