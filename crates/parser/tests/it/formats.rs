//! Each format, from files the tests generate.

use echo_testkit::files;
use serde_json::json;

use crate::Fixture;

#[tokio::test]
async fn plain_text_and_markdown() {
    let fixture = Fixture::start().await;
    let (status, body) = fixture.parse(None, "hello, world\nsecond line\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "txt");
    assert_eq!(body["text"], "hello, world\nsecond line\n");
    assert_eq!(body["chars"], 25);
    assert_eq!(body["truncated"], false);
    assert_eq!(body["metadata"]["lines"], 2);

    let (status, body) = fixture
        .parse(Some("notes.md"), "# Notes\n\nSome *text*.")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "md");
    assert_eq!(body["metadata"]["title"], "Notes");
    assert!(body["text"].as_str().unwrap().contains("Some *text*."));
}

#[tokio::test]
async fn html_drops_scripts_styles_and_comments() {
    let fixture = Fixture::start().await;
    let page = r#"<!DOCTYPE html><html><head><title> The   Title </title>
        <style>body { color: red }</style><script>var secret = 1;</script></head>
        <body><h1>Heading</h1><!-- a comment --><p>First <b>bold</b> paragraph.</p>
        <script type="text/javascript">alert("x")</script><noscript>enable js</noscript>
        <div>Second</div></body></html>"#;
    let (status, body) = fixture.parse(Some("page.html"), page).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "html");
    assert_eq!(body["metadata"]["title"], "The Title");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("Heading"), "{text}");
    assert!(text.contains("First bold paragraph."), "{text}");
    assert!(text.contains("Second"), "{text}");
    for hidden in ["secret", "alert", "color", "comment", "enable js"] {
        assert!(!text.contains(hidden), "{hidden} in {text:?}");
    }
}

#[tokio::test]
async fn json_values_with_their_paths() {
    let fixture = Fixture::start().await;
    let document = json!({"title": "Report", "tags": ["a", "b"], "n": 3});
    let (status, body) = fixture.parse(Some("x.json"), document.to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "json");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("title: Report") && text.contains("tags[1]: b") && text.contains("n: 3"),
        "{text}"
    );
    assert_eq!(body["metadata"]["depth"], 2);
}

#[tokio::test]
async fn csv_rows_and_counts() {
    let fixture = Fixture::start().await;
    let table = "name,city\nAda,London\n\"Lovelace, A\",\"Marylebone\"\n";
    let (status, body) = fixture.parse(Some("people.csv"), table).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "csv");
    assert_eq!(
        body["text"],
        "name\tcity\nAda\tLondon\nLovelace, A\tMarylebone\n"
    );
    assert_eq!(body["metadata"]["rows"], 3);
    assert_eq!(body["metadata"]["columns"], 2);
    assert_eq!(body["metadata"]["header"], json!(["name", "city"]));
}

#[tokio::test]
async fn docx_paragraphs_and_title() {
    let fixture = Fixture::start().await;
    let file = files::docx("Quarterly", &["First paragraph.", "Fish &amp; chips"]);
    let (status, body) = fixture.parse(Some("a.txt"), file).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "docx");
    assert_eq!(body["text"], "First paragraph.\nFish & chips\n");
    assert_eq!(body["metadata"]["title"], "Quarterly");
    assert_eq!(body["metadata"]["paragraphs"], 2);
}

#[tokio::test]
async fn pdf_text_from_a_handmade_file() {
    let fixture = Fixture::start().await;
    let (status, body) = fixture
        .parse(None, files::pdf(&["Hello from Echo", "The answer is 42"]))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["type"], "pdf");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("Hello from Echo") && text.contains("The answer is 42"),
        "{text:?}"
    );
    assert_eq!(body["metadata"]["pages"], 1);
}

#[tokio::test]
async fn output_is_cut_at_the_character_limit() {
    let fixture = Fixture::with_limits(echo_parser::Limits {
        max_output_chars: 10,
        ..Default::default()
    })
    .await;
    let (status, body) = fixture.parse(Some("a.txt"), "ééééé ééééé ééééé").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["text"], "ééééé éééé");
    assert_eq!(
        (body["truncated"].clone(), body["chars"].clone()),
        (json!(true), json!(10))
    );
}
