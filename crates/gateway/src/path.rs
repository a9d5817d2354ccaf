//! Request paths as the gateway routes them: normalised first (RFC 3986
//! §5.2.4), so that a route's checks apply to the path an upstream will
//! serve, whatever spelling the client chose.
//!
//! - `.` and `..` segments are resolved, in their percent-encoded spellings
//!   too (`%2e`, `.%2E`, …); a `..` above `/` is refused.
//! - Empty segments (`//`) are dropped.
//! - An encoded slash or backslash (`%2F`, `%5C`), a raw backslash or an
//!   encoded NUL is refused: an upstream that decodes it would see another
//!   path than the one routed.
//!
//! Everything else is kept as sent (other percent-encodings included), so
//! the upstream gets the client's bytes for every segment that stays.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// `%2F`, `%5C`, `\` or `%00`.
    EncodedSeparator,
    /// A `..` that climbs above `/`.
    AboveRoot,
    /// Not an absolute path.
    NotAbsolute,
}

impl BadPath {
    pub fn message(self) -> &'static str {
        match self {
            BadPath::EncodedSeparator => {
                "the path holds an encoded slash, a backslash or an encoded NUL"
            }
            BadPath::AboveRoot => "the path climbs above /",
            BadPath::NotAbsolute => "the path must start with /",
        }
    }
}

/// A normalised path, and whether normalising changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised<'a> {
    pub path: Cow<'a, str>,
    /// The path held `.` or `..` segments (in any spelling).
    pub had_dot_segments: bool,
}

/// `path` (without its query) normalised, or why it is refused.
pub fn normalise(path: &str) -> Result<Normalised<'_>, BadPath> {
    if !path.starts_with('/') {
        return Err(BadPath::NotAbsolute);
    }
    if path.contains('\\') || contains_encoded_separator(path) {
        return Err(BadPath::EncodedSeparator);
    }
    let clean = !path.contains("//") && path.split('/').all(|s| dot_segment(s).is_none());
    if clean {
        return Ok(Normalised {
            path: Cow::Borrowed(path),
            had_dot_segments: false,
        });
    }
    let mut had_dot_segments = false;
    let mut kept: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    // A path ending in `/`, `/.` or `/..` names a directory: it keeps its
    // trailing slash.
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match dot_segment(segment) {
            Some(Dots::One) => {
                had_dot_segments = true;
                trailing_slash = last;
            }
            Some(Dots::Two) => {
                had_dot_segments = true;
                kept.pop().ok_or(BadPath::AboveRoot)?;
                trailing_slash = last;
            }
            None if segment.is_empty() => trailing_slash = last,
            None => {
                kept.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut normal = String::with_capacity(path.len());
    for segment in &kept {
        normal.push('/');
        normal.push_str(segment);
    }
    if normal.is_empty() || trailing_slash {
        normal.push('/');
    }
    Ok(Normalised {
        path: Cow::Owned(normal),
        had_dot_segments,
    })
}

enum Dots {
    One,
    Two,
}

/// Whether `segment` is `.` or `..`, in any mix of `.` and `%2e`/`%2E`.
fn dot_segment(segment: &str) -> Option<Dots> {
    let bytes = segment.as_bytes();
    let mut dots = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            i += 1;
        } else if bytes[i..].len() >= 3
            && bytes[i] == b'%'
            && bytes[i + 1] == b'2'
            && matches!(bytes[i + 2], b'e' | b'E')
        {
            i += 3;
        } else {
            return None;
        }
        dots += 1;
    }
    match dots {
        1 => Some(Dots::One),
        2 => Some(Dots::Two),
        _ => None,
    }
}

fn contains_encoded_separator(path: &str) -> bool {
    path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_uppercase()),
                (b'2', b'F') | (b'5', b'C') | (b'0', b'0')
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normal(path: &str) -> Result<String, BadPath> {
        normalise(path).map(|n| n.path.into_owned())
    }

    #[test]
    fn dot_segments_resolve_in_every_spelling() {
        for (sent, expected) in [
            ("/api/a/../b", "/api/b"),
            ("/api/a/%2e%2e/b", "/api/b"),
            ("/api/a/.%2E/b", "/api/b"),
            ("/api/a/%2E./b", "/api/b"),
            ("/api/./a", "/api/a"),
            ("/api/%2e/a", "/api/a"),
            ("/api//a///b", "/api/a/b"),
            ("/api/a/..", "/api/"),
            ("/api/a/.", "/api/a/"),
            ("/api/a/", "/api/a/"),
            ("//", "/"),
            ("/", "/"),
            ("/a/...", "/a/..."),
            ("/a/%2e%2e%2e", "/a/%2e%2e%2e"),
            ("/a/b%20c", "/a/b%20c"),
        ] {
            assert_eq!(normal(sent).as_deref(), Ok(expected), "{sent}");
        }
    }

    #[test]
    fn clean_paths_are_borrowed_and_marked_clean() {
        let n = normalise("/api/docs/abc").unwrap();
        assert!(matches!(n.path, Cow::Borrowed(_)));
        assert!(!n.had_dot_segments);
        assert!(normalise("/api/../x").unwrap().had_dot_segments);
        assert!(!normalise("/api//x").unwrap().had_dot_segments);
    }

    #[test]
    fn encoded_separators_and_climbs_above_root_are_refused() {
        for sent in [
            "/api/a%2Fb",
            "/api/a%2fb",
            "/a%5Cb",
            "/a%5cb",
            "/a\\b",
            "/a%00b",
        ] {
            assert_eq!(normal(sent), Err(BadPath::EncodedSeparator), "{sent}");
        }
        for sent in ["/..", "/a/../..", "/%2e%2e/etc/passwd", "/a/./../.."] {
            assert_eq!(normal(sent), Err(BadPath::AboveRoot), "{sent}");
        }
        assert_eq!(normal("api"), Err(BadPath::NotAbsolute));
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for sent in ["/a/./b/../c//d/", "/x/%2e%2e/y", "/p/q/..", "/"] {
            let once = normal(sent).unwrap();
            assert_eq!(normal(&once).unwrap(), once, "{sent}");
            assert!(!normalise(&once).unwrap().had_dot_segments);
        }
    }
}
