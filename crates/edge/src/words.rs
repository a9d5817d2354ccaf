//! How the pages of every service say a time and a browser: identity's
//! and the gateway's sessions pages list sessions alike.

/// The longest browser name a page shows, in characters.
const BROWSER_CHARS: usize = 80;

/// `then` relative to `now` (Unix seconds), in words ("just now",
/// "5 minutes ago").
pub fn ago(now: i64, then: i64) -> String {
    let seconds = (now - then).max(0);
    let (count, unit) = match seconds {
        0..60 => return "just now".to_owned(),
        60..3_600 => (seconds / 60, "minute"),
        3_600..86_400 => (seconds / 3_600, "hour"),
        _ => (seconds / 86_400, "day"),
    };
    let plural = if count == 1 { "" } else { "s" };
    format!("{count} {unit}{plural} ago")
}

/// A `User-Agent` as a page shows it: cut at [`BROWSER_CHARS`]
/// characters, "unknown browser" when there was none.
pub fn browser(user_agent: &str) -> String {
    match user_agent.chars().count() {
        0 => "unknown browser".to_owned(),
        n if n > BROWSER_CHARS => {
            let cut: String = user_agent.chars().take(BROWSER_CHARS).collect();
            format!("{cut}…")
        }
        _ => user_agent.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_words() {
        assert_eq!(ago(100, 100), "just now");
        assert_eq!(ago(100, 200), "just now", "a clock behind");
        assert_eq!(ago(160, 100), "1 minute ago");
        assert_eq!(ago(100 + 7_200, 100), "2 hours ago");
        assert_eq!(ago(100 + 3 * 86_400, 100), "3 days ago");
    }

    #[test]
    fn browsers_are_named_and_cut() {
        assert_eq!(browser(""), "unknown browser");
        assert_eq!(browser("curl/8"), "curl/8");
        let long = browser(&"é".repeat(200));
        assert_eq!(long.chars().count(), BROWSER_CHARS + 1);
        assert!(long.ends_with('…'));
    }
}
