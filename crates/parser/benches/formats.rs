//! Parse throughput per format, in MB/s of input on one core: the
//! extraction itself (`echo_parser::extract`), on files of about 1 MB that
//! the bench builds. (The child process `echod serve parser` adds per
//! request is a fixed cost, measured by the pipeline bench.)
//!
//! cargo bench -p echo-parser --bench formats

use std::fmt::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use echo_parser::{Limits, extract};
use echo_testkit::files;
use echo_text::{Kind, sniff};

const TARGET_BYTES: usize = 1 << 20;

/// Deterministic English-like sentences.
fn sentences(count: usize) -> Vec<String> {
    const WORDS: [&str; 16] = [
        "echo", "parser", "document", "token", "service", "identity", "audit", "gateway", "queue",
        "worker", "index", "search", "answer", "citation", "owner", "passage",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count)
        .map(|_| {
            let mut sentence = String::new();
            for i in 0..12 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if i > 0 {
                    sentence.push(' ');
                }
                sentence.push_str(WORDS[(seed % 16) as usize]);
            }
            sentence.push('.');
            sentence
        })
        .collect()
}

/// One input of about [`TARGET_BYTES`] per format.
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let lines = sentences(TARGET_BYTES / 80);
    let text = lines.join("\n");
    let markdown: String = lines
        .chunks(8)
        .map(|c| format!("## Section\n\n{}\n\n", c.join(" ")))
        .collect();
    let mut html = String::from("<html><head><style>p{color:red}</style></head><body>");
    for chunk in lines.chunks(8) {
        let _ = write!(
            html,
            "<p>{}</p><script>var x = 1;</script>",
            chunk.join(" ")
        );
    }
    html.push_str("</body></html>");
    let mut csv = String::from("id,title,body\n");
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(csv, "{i},row {i},\"{line}\"");
    }
    let json = serde_json::to_vec(&serde_json::json!({
        "items": lines.iter().enumerate()
            .map(|(i, l)| serde_json::json!({"id": i, "body": l}))
            .collect::<Vec<_>>()
    }))
    .unwrap_or_default();
    let paragraphs: Vec<&str> = lines.iter().map(String::as_str).collect();
    // A PDF page holds a few dozen lines; many short pages would measure the
    // page tree, so this is one long content stream of text operators.
    let pdf = files::pdf(&paragraphs[..paragraphs.len().min(12_000)]);
    let docx = files::docx("Bench", &paragraphs);
    vec![
        ("txt", text.into_bytes()),
        ("md", markdown.into_bytes()),
        ("html", html.into_bytes()),
        ("csv", csv.into_bytes()),
        ("json", json),
        ("pdf", pdf),
        ("docx", docx),
    ]
}

fn formats(c: &mut Criterion) {
    let limits = Limits {
        max_output_chars: usize::MAX,
        ..Limits::default()
    };
    let mut group = c.benchmark_group("extract");
    group.sample_size(10);
    for (name, bytes) in inputs() {
        let hint = format!("bench.{name}");
        let kind: Kind = sniff(&bytes, Some(&hint)).unwrap_or(Kind::Txt);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| extract(kind, &bytes, &limits).map(|p| p.chars))
        });
    }
    group.finish();
}

criterion_group!(benches, formats);
criterion_main!(benches);
