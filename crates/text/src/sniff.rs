//! Deciding what a file is from its bytes.
//!
//! Binary formats (PDF, DOCX) and the marked-up ones (HTML, JSON) are
//! recognised by content alone. A `filename` ending in `.txt`, `.md` or
//! `.csv` only chooses between the textual kinds; it never makes bytes that
//! are not text into text.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The kinds of file the parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pdf,
    Docx,
    Html,
    Md,
    Txt,
    Csv,
    Json,
}

/// How much of the start of a file sniffing looks at.
const HEAD: usize = 1024;

/// The kind of `bytes`, or `None` when they are nothing the parser reads
/// (binary content of another format, or garbage).
pub fn sniff(bytes: &[u8], filename: Option<&str>) -> Option<Kind> {
    let head = &bytes[..bytes.len().min(HEAD)];
    if head.windows(5).any(|w| w == b"%PDF-") {
        return Some(Kind::Pdf);
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Some(Kind::Docx);
    }
    let text = decode_text(bytes)?;
    let extension = filename
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("txt" | "text") => return Some(Kind::Txt),
        Some("md" | "markdown") => return Some(Kind::Md),
        Some("csv") => return Some(Kind::Csv),
        _ => {}
    }
    let start = text.trim_start();
    if start.starts_with('{') || start.starts_with('[') {
        return Some(Kind::Json);
    }
    if looks_like_html(start) {
        return Some(Kind::Html);
    }
    if looks_like_csv(start) {
        return Some(Kind::Csv);
    }
    if looks_like_markdown(start) {
        return Some(Kind::Md);
    }
    Some(Kind::Txt)
}

/// `bytes` as text: UTF-8 (a BOM dropped), or else Latin-1 when the bytes
/// carry no NUL and almost no control characters; `None` for binary data.
/// UTF-8 that is damaged (cut inside a character, a few corrupt bytes) stays
/// UTF-8 with the damage as U+FFFD, rather than all of it read as Latin-1.
pub fn decode_text(bytes: &[u8]) -> Option<Cow<'_, str>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let controls = bytes
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C))
        .count();
    if bytes.contains(&0) || controls * 100 > bytes.len() {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(Cow::Borrowed(text)),
        Err(_) if mostly_utf8(bytes) => Some(String::from_utf8_lossy(bytes)),
        Err(_) => Some(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect())),
    }
}

/// At least as many well-formed multi-byte UTF-8 characters as malformed
/// sequences, and at least one: damaged UTF-8 rather than Latin-1 (whose
/// accented letters are almost never well-formed UTF-8).
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut multibyte, mut malformed) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        multibyte += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        malformed += usize::from(!chunk.invalid().is_empty());
    }
    multibyte > 0 && multibyte >= malformed
}

fn looks_like_html(start: &str) -> bool {
    let head: String = start
        .chars()
        .take(HEAD)
        .collect::<String>()
        .to_ascii_lowercase();
    head.starts_with("<!doctype html")
        || ["<html", "<head", "<body"]
            .iter()
            .any(|tag| head.contains(tag))
}

/// At least two lines, the first few all with the same number (≥ 1) of
/// commas.
fn looks_like_csv(start: &str) -> bool {
    let counts: Vec<usize> = start
        .lines()
        .filter(|line| !line.trim().is_empty())
        .take(5)
        .map(|line| line.matches(',').count())
        .collect();
    counts.len() >= 2 && counts[0] > 0 && counts.iter().all(|&c| c == counts[0])
}

/// An ATX heading or a code fence among the first lines.
fn looks_like_markdown(start: &str) -> bool {
    start.lines().take(50).any(|line| {
        let hashes = line.len() - line.trim_start_matches('#').len();
        (1..=6).contains(&hashes) && line[hashes..].starts_with(' ') || line.starts_with("```")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_formats_are_known_by_content_not_name() {
        assert_eq!(sniff(b"%PDF-1.7\n...", Some("a.txt")), Some(Kind::Pdf));
        assert_eq!(sniff(b"PK\x03\x04rest", Some("a.csv")), Some(Kind::Docx));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some("a.txt")), None);
        assert_eq!(sniff(&[0u8, 1, 2, 3, 200, 7, 8], None), None);
    }

    #[test]
    fn text_kinds_from_content() {
        assert_eq!(sniff(b"  {\"a\": 1}", None), Some(Kind::Json));
        assert_eq!(sniff(b"[1,2]", None), Some(Kind::Json));
        assert_eq!(sniff(b"<!DOCTYPE html><p>x", None), Some(Kind::Html));
        assert_eq!(sniff(b"<div><body>x</body>", None), Some(Kind::Html));
        assert_eq!(sniff(b"a,b,c\n1,2,3\n4,5,6\n", None), Some(Kind::Csv));
        assert_eq!(sniff(b"# Title\n\nbody", None), Some(Kind::Md));
        assert_eq!(sniff(b"#hashtag, not a heading", None), Some(Kind::Txt));
        assert_eq!(sniff(b"just words, and more", None), Some(Kind::Txt));
        assert_eq!(sniff(b"", None), Some(Kind::Txt));
    }

    #[test]
    fn the_name_chooses_only_between_textual_kinds() {
        assert_eq!(sniff(b"[link](x)", Some("notes.md")), Some(Kind::Md));
        assert_eq!(sniff(b"a;b\n1;2", Some("DATA.CSV")), Some(Kind::Csv));
        assert_eq!(sniff(b"# not markdown", Some("a.txt")), Some(Kind::Txt));
        assert_eq!(sniff(b"<html>", Some("page.pdf")), Some(Kind::Html));
    }

    #[test]
    fn latin1_text_is_text_and_a_bom_is_dropped() {
        assert_eq!(decode_text(b"caf\xe9").as_deref(), Some("café"));
        assert_eq!(decode_text(b"\xEF\xBB\xBFhi").as_deref(), Some("hi"));
        assert_eq!(decode_text(b"a\x01\x02\x03b"), None);
    }

    #[test]
    fn damaged_utf8_stays_utf8() {
        // Cut inside the last character: the rest is not Latin-1 mojibake.
        let text = "naïve café — ".as_bytes();
        let cut = &text[..text.len() - 2];
        assert_eq!(decode_text(cut).as_deref(), Some("naïve café \u{FFFD}"));
        assert_eq!(
            decode_text(b"caf\xc3\xa9 \xff ok").as_deref(),
            Some("café \u{FFFD} ok")
        );
        // Latin-1 with one accidental UTF-8 pair stays Latin-1.
        assert_eq!(
            decode_text(b"\xc3\xa9t\xe9 \xe0 \xe7a").as_deref(),
            Some("Ã©té à ça")
        );
    }
}
