//! Property tests on the format modules, without HTTP: for arbitrary bytes
//! and for valid files truncated, overwritten and spliced, [`sniff`] and
//! [`extract`] answer `Ok` or a [`ParseError`] within a time bound and never
//! panic (PDF aside: `pdf-extract` panics by policy, which is why the
//! service runs it isolated; here a PDF panic is caught and allowed). Every
//! `Ok` keeps the output contract: `chars` counts the text's characters,
//! never more than `max_output_chars`, and the text under a small limit is
//! the unlimited text cut there, `truncated` exactly when something was cut.

use std::panic::AssertUnwindSafe;
use std::sync::LazyLock;
use std::sync::mpsc;
use std::time::Duration;

use echo_parser::{Limits, ParseError, Parsed, extract};
use echo_testkit::files;
use echo_text::{Kind, sniff};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;

use crate::samples::{self, Sample};

/// Longest one extraction of these small files may take, in a debug build.
const BOUND: Duration = Duration::from_secs(5);

/// Cases per property (PDFs are slower and get fewer), or `PROPTEST_CASES`
/// for a longer hunt.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        max_shrink_iters: 512,
        // Failures become regression tests below, not files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

static SAMPLES: LazyLock<Vec<Sample>> = LazyLock::new(samples::all);

/// `extract` on its own thread, bounded by [`BOUND`]: `Ok(None)` for a
/// caught PDF panic; a panic of any other kind, or a parse past the bound,
/// fails the case.
fn run(
    kind: Kind,
    bytes: &[u8],
    limits: Limits,
) -> Result<Option<Result<Parsed, ParseError>>, TestCaseError> {
    let (sender, receiver) = mpsc::channel();
    let bytes = bytes.to_vec();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| extract(kind, &bytes, &limits)));
        let _ = sender.send(result);
    });
    match receiver.recv_timeout(BOUND) {
        Err(_) => Err(TestCaseError::fail(format!(
            "{kind:?} took longer than {BOUND:?}"
        ))),
        Ok(Err(_)) if kind == Kind::Pdf => Ok(None),
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned());
            Err(TestCaseError::fail(format!(
                "{kind:?} panicked: {message:?}"
            )))
        }
        Ok(Ok(result)) => Ok(Some(result)),
    }
}

/// Sniffs `bytes` and extracts them twice, without a practical output limit
/// and with `max_chars`, checking the contract on both answers.
fn check(bytes: &[u8], filename: Option<&str>, max_chars: usize) -> Result<(), TestCaseError> {
    let Some(kind) = sniff(bytes, filename) else {
        return Ok(());
    };
    let limits = Limits::default();
    let small = Limits {
        max_output_chars: max_chars,
        ..limits.clone()
    };
    let (Some(full), Some(cut)) = (run(kind, bytes, limits.clone())?, run(kind, bytes, small)?)
    else {
        return Ok(());
    };
    for (result, max) in [(&full, limits.max_output_chars), (&cut, max_chars)] {
        match result {
            Ok(parsed) => {
                prop_assert_eq!(parsed.kind, kind);
                prop_assert_eq!(parsed.chars, parsed.text.chars().count());
                prop_assert!(parsed.chars <= max, "{} chars over {max}", parsed.chars);
            }
            Err(ParseError::Invalid(message) | ParseError::Unsupported(message)) => {
                prop_assert!(!message.is_empty());
            }
            Err(other) => prop_assert!(false, "extract answered {other:?}"),
        }
    }
    match (&full, &cut) {
        (Ok(full), Ok(cut)) => {
            prop_assert!(!full.truncated, "{full:?}");
            let expected: String = full.text.chars().take(max_chars).collect();
            prop_assert_eq!(&cut.text, &expected);
            prop_assert_eq!(cut.truncated, full.chars > max_chars);
        }
        // A smaller limit may stop reading before the damage, never after.
        (Err(_), _) => {}
        (Ok(_), Err(e)) => prop_assert!(false, "fails only under a limit: {e:?}"),
    }
    Ok(())
}

/// One change to a file.
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    Overwrite(Index, Vec<u8>),
    Splice(Index, Vec<u8>),
}

/// Mostly bytes that mean something to one of the formats (pieces of
/// UTF-8 among them), rarely arbitrary ones: enough binary to stay text.
fn byte() -> impl Strategy<Value = u8> {
    const SYNTAX: &[u8] = b"{}[]\",:;<>/=&#\\!-'() \t\r\n09aZ%\xc3\xa9\xe2\x80\x94\xff";
    prop_oneof![40 => select(SYNTAX), 1 => any::<u8>()]
}

/// `tokens` strung together at random.
fn soup(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(select(tokens), 0..max).prop_map(|t| t.concat())
}

const TAGS: &[&str] = &[
    "<p>",
    "</p>",
    "<div>",
    "</div>",
    "<script>",
    "</script>",
    "<style>",
    "</style>",
    "<template>",
    "</template>",
    "<svg>",
    "</svg>",
    "<title>",
    "</title>",
    "<head>",
    "<body>",
    "</body>",
    "<table><tr><td>",
    "</td>",
    "<br>",
    "<!--",
    "-->",
    "<",
    ">",
    "</",
    "=\"",
    "&amp;",
    "&#233;",
    "&bogus;",
    "word",
    " ",
    "\n",
    "é",
    "—",
    "<![CDATA[",
];

const CELLS: &[&str] = &[
    ",", "\"", "\"\"", "\n", "\r\n", "\r", "a", "é", " ", "\t", "1",
];

/// A JSON value a few levels deep.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = || prop::collection::vec(byte(), 1..48);
    prop_oneof![
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), bytes()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        (any::<Index>(), bytes()).prop_map(|(at, b)| Mutation::Splice(at, b)),
    ]
}

fn mutated(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for mutation in mutations {
        let len = bytes.len();
        match mutation {
            Mutation::Truncate(at) => bytes.truncate(at.index(len + 1)),
            Mutation::Overwrite(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..(at + new.len()).min(len), new.iter().copied());
            }
            Mutation::Splice(at, new) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, new.iter().copied());
            }
        }
    }
    bytes
}

fn filename() -> impl Strategy<Value = Option<&'static str>> {
    select(vec![
        None,
        Some("a.txt"),
        Some("a.md"),
        Some("a.csv"),
        Some("a.json"),
    ])
}

/// The samples of one kind or of every kind but it.
fn samples_where(pdf: bool) -> Vec<usize> {
    (0..SAMPLES.len())
        .filter(|&i| (SAMPLES[i].kind == "pdf") == pdf)
        .collect()
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024),
                       filename in filename(), max in 0usize..200) {
        check(&bytes, filename, max)?;
    }

    /// Behind each format's signature, so that the parsers (not sniffing)
    /// meet the garbage.
    #[test]
    fn arbitrary_bytes_after_a_signature(
        head in select(vec![&b"%PDF-1.4\n"[..], b"PK\x03\x04", b"{\"a\": ", b"[", b"<html><body>",
                            b"a,b\n1,2\n", b"# Title\n"]),
        tail in prop::collection::vec(byte(), 0..512),
        filename in filename(), max in 0usize..200,
    ) {
        check(&[head, &tail[..]].concat(), filename, max)?;
    }

    #[test]
    fn arbitrary_text(text in any::<String>(), filename in filename(), max in 0usize..64) {
        check(text.as_bytes(), filename, max)?;
    }

    #[test]
    fn html_tag_soup(soup in soup(TAGS, 64), max in 0usize..100) {
        check(format!("<!DOCTYPE html>{soup}").as_bytes(), None, max)?;
    }

    #[test]
    fn csv_cell_soup(soup in soup(CELLS, 128), max in 0usize..100) {
        check(soup.as_bytes(), Some("a.csv"), max)?;
    }

    #[test]
    fn json_values(value in json_value(), max in 0usize..200) {
        check(value.to_string().as_bytes(), None, max)?;
    }

    /// Every kind but PDF, truncated, overwritten and spliced.
    #[test]
    fn mutated_files(sample in select(samples_where(false)),
                     mutations in prop::collection::vec(mutation(), 1..4),
                     max in 0usize..400) {
        let sample = &SAMPLES[sample];
        check(&mutated(&sample.bytes, &mutations), sample.filename, max)?;
    }

    /// A DOCX whose zip is sound but whose XML is damaged.
    #[test]
    fn mutated_docx_xml(document in prop::collection::vec(mutation(), 0..4),
                        core in prop::collection::vec(mutation(), 0..3),
                        max in 0usize..200) {
        let document = mutated(DOCUMENT.as_bytes(), &document);
        let core = mutated(CORE.as_bytes(), &core);
        let docx = files::zip(&[("word/document.xml", &document), ("docProps/core.xml", &core)]);
        check(&docx, None, max)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn mutated_pdfs(mutations in prop::collection::vec(mutation(), 1..4), max in 0usize..200) {
        let sample = &SAMPLES[samples_where(true)[0]];
        check(&mutated(&sample.bytes, &mutations), None, max)?;
    }
}

const DOCUMENT: &str = r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t xml:space="preserve">Fish &amp; chips &#233;</w:t></w:r><w:r><w:tab/><w:t>naïve</w:t><w:br/></w:r></w:p><w:p/><w:p><w:r><w:t>Second</w:t></w:r></w:p></w:body></w:document>"#;

const CORE: &str = r#"<?xml version="1.0" encoding="UTF-8"?><cp:coreProperties xmlns:cp="urn:cp" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Report &amp; more</dc:title><dc:creator>Echo</dc:creator></cp:coreProperties>"#;

/// The valid samples themselves keep the contract (and parse).
#[test]
fn the_samples_parse() {
    for sample in SAMPLES.iter() {
        let kind = sniff(&sample.bytes, sample.filename).unwrap();
        let parsed = extract(kind, &sample.bytes, &Limits::default()).unwrap();
        assert!(parsed.chars > 0, "{}", sample.kind);
        for max in [0, 1, 7, parsed.chars - 1, parsed.chars] {
            check(&sample.bytes, sample.filename, max).unwrap();
        }
    }
}
