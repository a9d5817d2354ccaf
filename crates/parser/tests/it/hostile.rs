//! Corrupt and hostile files: a clear 4xx, quickly, and the service goes on.

use std::time::{Duration, Instant};

use echo_parser::Limits;
use echo_testkit::files;

use crate::Fixture;

#[tokio::test]
async fn a_truncated_pdf_is_a_422() {
    let fixture = Fixture::start().await;
    let pdf = files::pdf(&["Hello from Echo"]);
    for cut in [pdf.len() / 2, pdf.len() - 30, 20] {
        let (status, body) = fixture.parse(None, pdf[..cut].to_vec()).await;
        assert_eq!(status, 422, "cut at {cut}: {body}");
        assert!(!body["error"].as_str().unwrap().is_empty());
        fixture.assert_alive().await;
    }
}

#[tokio::test]
async fn a_zip_bomb_docx_is_refused_before_inflating() {
    let fixture = Fixture::start().await;
    let zeros = vec![0u8; 32 * 1024 * 1024];
    let bomb = files::zip(&[("word/document.xml", &zeros)]);
    assert!(bomb.len() < 200_000, "{}", bomb.len());
    let started = Instant::now();
    let (status, body) = fixture.parse(None, bomb).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("zip bomb"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    fixture.assert_alive().await;
}

#[tokio::test]
async fn a_docx_over_the_declared_size_limits_is_refused() {
    let fixture = Fixture::with_limits(Limits {
        max_zip_entry_bytes: 1000,
        ..Default::default()
    })
    .await;
    let big = files::docx("t", &[&"x".repeat(2000)]);
    let (status, body) = fixture.parse(None, big).await;
    assert_eq!(status, 422, "{body}");
    let many: Vec<(String, &[u8])> = (0..50)
        .map(|i| (format!("f{i}.xml"), &b"<a/>"[..]))
        .collect();
    let entries: Vec<(&str, &[u8])> = many.iter().map(|(n, c)| (n.as_str(), *c)).collect();
    let fixture = Fixture::with_limits(Limits {
        max_zip_entries: 10,
        ..Default::default()
    })
    .await;
    let (status, body) = fixture.parse(None, files::zip(&entries)).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("entries"),
        "{body}"
    );
}

#[tokio::test]
async fn a_zip_that_is_not_a_docx_is_unsupported_and_a_broken_one_invalid() {
    let fixture = Fixture::start().await;
    let (status, _) = fixture.parse(None, files::zip(&[("a.txt", b"hi")])).await;
    assert_eq!(status, 415);
    let docx = files::docx("t", &["text"]);
    let (status, body) = fixture.parse(None, docx[..docx.len() / 2].to_vec()).await;
    assert_eq!(status, 422, "{body}");
    fixture.assert_alive().await;
}

#[tokio::test]
async fn deeply_nested_json_is_a_422() {
    let fixture = Fixture::start().await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, body) = fixture.parse(None, deep).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nested"), "{body}");
    let (status, _) = fixture.parse(None, r#"{"a": [1, 2"#).await;
    assert_eq!(status, 422);
    fixture.assert_alive().await;
}

#[tokio::test]
async fn random_bytes_are_refused() {
    let fixture = Fixture::start().await;
    for seed in 1..6 {
        let (status, body) = fixture.parse(Some("x.txt"), files::noise(4096, seed)).await;
        assert!(status == 415 || status == 422, "{status} {body}");
    }
    let mut fake_pdf = b"%PDF-1.7\n".to_vec();
    fake_pdf.extend(files::noise(4096, 7));
    assert_eq!(fixture.parse(None, fake_pdf).await.0, 422);
    let mut fake_zip = b"PK\x03\x04".to_vec();
    fake_zip.extend(files::noise(4096, 8));
    assert_eq!(fixture.parse(None, fake_zip).await.0, 422);
    fixture.assert_alive().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413() {
    let fixture = Fixture::with_limits(Limits {
        max_input_bytes: 1024,
        ..Default::default()
    })
    .await;
    let (status, body) = fixture.parse(Some("a.txt"), "x".repeat(1025)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(fixture.parse(Some("a.txt"), "x".repeat(1024)).await.0, 200);
}

#[tokio::test]
async fn a_parse_past_the_time_limit_is_a_422() {
    let fixture = Fixture::with_limits(Limits {
        timeout: Duration::from_millis(1),
        ..Default::default()
    })
    .await;
    let page = format!(
        "<html><body>{}</body></html>",
        "<p>words and words</p>".repeat(200_000)
    );
    let (status, body) = fixture.parse(None, page).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("took too long"),
        "{body}"
    );
}
