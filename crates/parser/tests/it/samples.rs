//! One small, valid file of every kind, for the hostile and property tests.

use echo_testkit::files;

/// A valid file: its kind as the service names it, the `filename` hint to
/// send, and its bytes.
pub struct Sample {
    pub kind: &'static str,
    pub filename: Option<&'static str>,
    pub bytes: Vec<u8>,
}

/// Lines with multi-byte characters, so that cuts can land inside one.
fn lines(count: usize) -> Vec<String> {
    (1..=count)
        .map(|i| format!("Line {i}: naïve café — Échos"))
        .collect()
}

pub fn all() -> Vec<Sample> {
    let lines = lines(8);
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    // The test PDF's font is WinAnsi: ASCII only.
    let pdf_lines: Vec<String> = (1..=8)
        .map(|i| format!("Line {i} of the Echo report"))
        .collect();
    let pdf_refs: Vec<&str> = pdf_lines.iter().map(String::as_str).collect();
    let paragraphs: String = refs.iter().map(|l| format!("<p>{l}</p>")).collect();
    let rows: String = refs
        .iter()
        .enumerate()
        .map(|(i, l)| format!("{i},\"{l}\",{}\n", i * 7))
        .collect();
    let json = serde_json::json!({"title": "Report", "lines": &refs[..4],
        "nested": {"n": 3, "items": [{"k": "v"}, [1, 2, null]], "s": refs[4]}});
    vec![
        Sample {
            kind: "txt",
            filename: Some("report.txt"),
            bytes: refs.join("\n").into_bytes(),
        },
        Sample {
            kind: "md",
            filename: Some("report.md"),
            bytes: format!(
                "# Report — Échos\n\n{}\n\n```\ncode\n```\n",
                refs.join("\n\n")
            )
            .into_bytes(),
        },
        Sample {
            kind: "html",
            filename: None,
            bytes: format!(
                "<!DOCTYPE html><html><head><title>Report</title>\
                 <script>var secret = 1;</script></head><body><h1>Heading</h1>{paragraphs}\
                 <script>alert('hidden')</script><p>The end</p></body></html>"
            )
            .into_bytes(),
        },
        Sample {
            kind: "csv",
            filename: Some("table.csv"),
            bytes: format!("id,line,n\n{rows}").into_bytes(),
        },
        Sample {
            kind: "json",
            filename: None,
            bytes: json.to_string().into_bytes(),
        },
        Sample {
            kind: "pdf",
            filename: None,
            bytes: files::pdf(&pdf_refs),
        },
        Sample {
            kind: "docx",
            filename: None,
            bytes: files::docx("Report", &refs),
        },
    ]
}
