//! Corrupt and hostile files: a clear 4xx, quickly, and the service goes on.

use std::time::{Duration, Instant};

use echo_parser::Limits;
use echo_testkit::files;
use serde_json::Value;

use crate::{Fixture, samples};

#[tokio::test]
async fn a_truncated_pdf_is_a_422() {
    let fixture = Fixture::start().await;
    let pdf = files::pdf(&["Hello from Echo"]);
    for cut in [pdf.len() / 2, pdf.len() - 30, 20] {
        let (status, body) = fixture.parse(None, pdf[..cut].to_vec()).await;
        assert_eq!(status, 422, "cut at {cut}: {body}");
        assert!(!body["detail"].as_str().unwrap().is_empty());
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
        body["detail"].as_str().unwrap().contains("zip bomb"),
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
        body["detail"].as_str().unwrap().contains("entries"),
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
    assert!(
        body["detail"].as_str().unwrap().contains("nested"),
        "{body}"
    );
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
        body["detail"].as_str().unwrap().contains("took too long"),
        "{body}"
    );
}

/// Cut at a third, a half, two thirds, one byte short, and inside the
/// first multi-byte UTF-8 character past the middle (if any).
fn cuts(bytes: &[u8]) -> Vec<usize> {
    let len = bytes.len();
    let inside = (len / 2..len).find(|&i| (0x80..0xC0).contains(&bytes[i]));
    [len / 3, len / 2, 2 * len / 3, len - 1]
        .into_iter()
        .chain(inside)
        .collect()
}

/// `bytes` with `noise` written over them from `at`.
fn overwritten(bytes: &[u8], at: usize, noise: &[u8]) -> Vec<u8> {
    let mut damaged = bytes.to_vec();
    damaged[at..at + noise.len()].copy_from_slice(noise);
    damaged
}

/// The text the service answered, without what a cut leaves at its end (a
/// line break, a space, a character cut in two).
fn survived(body: &Value) -> &str {
    body["text"]
        .as_str()
        .unwrap()
        .trim_end()
        .trim_end_matches('\u{FFFD}')
}

#[tokio::test]
async fn every_format_truncated_at_several_points() {
    let fixture = Fixture::start().await;
    for sample in samples::all() {
        let (status, full) = fixture.parse(sample.filename, sample.bytes.clone()).await;
        assert_eq!((status, full["type"].as_str()), (200, Some(sample.kind)));
        let full_text = full["text"].as_str().unwrap();
        let len = sample.bytes.len();
        for cut in cuts(&sample.bytes) {
            let part = &sample.bytes[..cut];
            let (status, body) = fixture.parse(sample.filename, part.to_vec()).await;
            let case = format!("{} cut at {cut} of {len}: {status} {body}", sample.kind);
            let expected = match sample.kind {
                // The text before the cut; a character cut in two is U+FFFD.
                "txt" | "md" => {
                    assert_eq!(body["text"], *String::from_utf8_lossy(part), "{case}");
                    200
                }
                // html5ever closes what the cut left open; the rows before
                // the cut, the last as far as it goes: what survived is a
                // prefix of the whole text, and scripts stay hidden.
                "html" | "csv" => {
                    assert!(full_text.starts_with(survived(&body)), "{case}");
                    assert!(!survived(&body).contains("secret"), "{case}");
                    200
                }
                // Only the line break after `%%EOF` may go.
                "pdf" if cut == len - 1 => {
                    assert_eq!(body["text"], full_text, "{case}");
                    200
                }
                "json" | "pdf" | "docx" => 422,
                other => unreachable!("{other}"),
            };
            assert_eq!(status, expected, "{case}");
            match status {
                200 => assert_eq!(body["type"], sample.kind, "{case}"),
                _ => assert!(!body["detail"].as_str().unwrap().is_empty(), "{case}"),
            }
        }
        fixture.assert_alive().await;
    }
}

#[tokio::test]
async fn every_format_corrupted_in_the_middle() {
    let fixture = Fixture::start().await;
    // Binary noise (with NULs), and printable junk with one byte that is
    // not UTF-8.
    let mut binary = files::noise(48, 11);
    binary[24] = 0;
    let mut junk: Vec<u8> = files::noise(48, 12).iter().map(|b| b'!' + b % 94).collect();
    junk[24] = 0xFF;
    for sample in samples::all() {
        let (_, full) = fixture.parse(sample.filename, sample.bytes.clone()).await;
        let full_text = full["text"].as_str().unwrap();
        let first_line = full_text.lines().find(|l| !l.trim().is_empty()).unwrap();
        let middle = sample.bytes.len() / 2 - 24;
        for (noise, what) in [(&binary, "binary noise"), (&junk, "junk")] {
            let damaged = overwritten(&sample.bytes, middle, noise);
            let (status, body) = fixture.parse(sample.filename, damaged.clone()).await;
            let case = format!("{} with {what}: {status} {body}", sample.kind);
            let expected = match (sample.kind, what) {
                // Binary bytes make a text file binary: not a kind it reads.
                ("txt" | "md" | "html" | "csv" | "json", "binary noise") => 415,
                // The damaged text as it is, the broken byte as U+FFFD.
                ("txt" | "md", _) => {
                    assert_eq!(body["text"], *String::from_utf8_lossy(&damaged), "{case}");
                    200
                }
                // Tolerant formats keep what is before the damage; the
                // PDF's damage lands in a string of its content stream.
                ("html" | "csv" | "pdf", _) => {
                    let text = body["text"].as_str().unwrap();
                    assert!(text.contains(first_line), "{case}");
                    assert!(!text.contains("secret"), "{case}");
                    200
                }
                ("json" | "docx", _) => 422,
                (other, _) => unreachable!("{other}"),
            };
            assert_eq!(status, expected, "{case}");
        }
        fixture.assert_alive().await;
    }

    // PDF structures, each damaged: the catalog (no pages), the xref table,
    // the font selection before text is shown (pdf-extract panics; the
    // isolation makes that a 422).
    let pdf = samples::all().remove(5).bytes;
    let at = |needle: &str| {
        pdf.windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap()
    };
    for (site, offset, noise) in [
        ("catalog", at("<< /Type /Catalog"), &junk[..20]),
        ("xref", at("xref\n") + 10, &junk[..20]),
        ("font selection", at("/F1 18 Tf"), &[b' '; 9][..]),
    ] {
        let (status, body) = fixture.parse(None, overwritten(&pdf, offset, noise)).await;
        assert_eq!(status, 422, "{site}: {body}");
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    // Binary noise over the operators leaves a page with no text: a 200
    // with nothing, as for a PDF of scanned images.
    let (status, body) = fixture
        .parse(None, overwritten(&pdf, at("stream\n") + 7, &binary[..20]))
        .await;
    assert_eq!((status, body["text"].as_str()), (200, Some("")), "{body}");

    // A DOCX whose zip is intact but whose document.xml is not XML.
    let document = br#"<w:document xmlns:w="w"><w:body><w:p><w:r><w:t>text</w:t></w:r></w:p></w:body></w:document>"#;
    let broken = overwritten(document, 40, &junk[..20]);
    let (status, body) = fixture
        .parse(None, files::zip(&[("word/document.xml", &broken)]))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("XML"), "{body}");
    fixture.assert_alive().await;
}

/// Posts `body` chunked, without a `Content-Length`, over a raw
/// connection: the size limit must hold while the body streams in.
async fn parse_chunked(fixture: &Fixture, filename: Option<&str>, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = fixture.url.trim_start_matches("http://");
    let query = filename
        .map(|f| format!("?filename={f}"))
        .unwrap_or_default();
    let mut request = format!(
        "POST /v1/parse{query} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        fixture.token(serde_json::json!({}))
    )
    .into_bytes();
    for chunk in body.chunks(100) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let status = String::from_utf8_lossy(&response[..12]).into_owned();
    status["HTTP/1.1 ".len()..].parse().unwrap()
}

#[tokio::test]
async fn every_format_over_the_input_limit_is_a_413() {
    for sample in samples::all() {
        let len = sample.bytes.len();
        let limited = |max_input_bytes| {
            Fixture::with_limits(Limits {
                max_input_bytes,
                ..Default::default()
            })
        };
        let fixture = limited(len - 1).await;
        let (status, body) = fixture.parse(sample.filename, sample.bytes.clone()).await;
        assert_eq!(status, 413, "{} declared: {body}", sample.kind);
        assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
        let streamed = parse_chunked(&fixture, sample.filename, &sample.bytes).await;
        assert_eq!(streamed, 413, "{} streamed", sample.kind);
        fixture.assert_alive().await;
        // At the limit exactly, it parses.
        let fixture = limited(len).await;
        let (status, body) = fixture.parse(sample.filename, sample.bytes.clone()).await;
        assert_eq!((status, body["type"].as_str()), (200, Some(sample.kind)));
        let streamed = parse_chunked(&fixture, sample.filename, &sample.bytes).await;
        assert_eq!(streamed, 200, "{} streamed", sample.kind);
    }
}
