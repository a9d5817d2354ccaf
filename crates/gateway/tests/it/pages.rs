//! The document pages (`/upload`, `/documents`, `/ask`) and their script:
//! signed-in only, no inline script, the script served as JavaScript.

use reqwest::StatusCode;

use crate::common::{Browser, Platform};

const PAGES: [&str; 3] = ["/upload", "/documents", "/ask"];

#[tokio::test]
async fn document_pages_send_a_visitor_to_login_and_back() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    for path in PAGES {
        let page = browser.get(&platform.gw(path)).await;
        let encoded = path.replace('/', "%2F");
        assert_eq!(page.location(), format!("/login?return_to={encoded}"));
    }
    let landed = platform.sign_in(&browser, Some("/documents")).await;
    assert_eq!(landed.location(), "/documents");
}

#[tokio::test]
async fn document_pages_load_their_script_and_nothing_inline() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let home = browser.get(&platform.gw("/")).await;
    for link in [
        r#"href="/upload""#,
        r#"href="/documents""#,
        r#"href="/ask""#,
    ] {
        assert!(home.body.contains(link), "home links {link}");
    }
    for (path, marker) in [
        (
            "/upload",
            r#"<input type="file" id="files" name="file" multiple"#,
        ),
        ("/documents", r#"id="document-rows""#),
        ("/ask", r#"id="ask-form""#),
    ] {
        let page = browser.get(&platform.gw(path)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains(marker), "{path}: {}", page.body);
        assert!(page.body.contains("<noscript>"), "{path}");
        assert_eq!(
            page.body.matches("<script").count(),
            1,
            "{path}: one script"
        );
        assert!(
            page.body
                .contains(r#"<script src="/static/documents.js" defer></script>"#)
        );
        assert!(
            !has_inline_handler(&page.body),
            "{path}: no inline handlers"
        );
        let csp = page.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("script-src 'self';"), "{path}: {csp}");
        assert_eq!(page.header("cache-control"), Some("no-store"));
    }
}

#[tokio::test]
async fn the_script_is_served_as_javascript() {
    let platform = Platform::start().await;
    let script = Browser::new()
        .get(&platform.gw("/static/documents.js"))
        .await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(script.header("cache-control"), Some("public, max-age=3600"));
    assert_eq!(script.header("x-content-type-options"), Some("nosniff"));
    assert!(script.body.contains(r#"CSRF_HEADER = "X-Echo-CSRF""#));
    // File names, answers and snippets are user text: never parsed as HTML.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
    ] {
        assert!(!script.body.contains(sink), "{sink}");
    }
    assert!(!script.body.contains("http://") && !script.body.contains("https://"));
}

/// Whether a tag in `html` has an `on…=` attribute.
fn has_inline_handler(html: &str) -> bool {
    html.split('<').skip(1).any(|tag| {
        let tag = tag.split('>').next().unwrap_or("");
        tag.split_whitespace().skip(1).any(|attribute| {
            let name = attribute.split('=').next().unwrap_or("");
            attribute.contains('=') && name.len() > 2 && name.starts_with("on")
        })
    })
}
