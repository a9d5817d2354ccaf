//! Every document parser on arbitrary bytes: the first byte picks the
//! kind, the rest is the file. A parser may refuse a file (an error) but
//! never panics, and never returns more text than the limit allows.
//! `pdf-extract` panics on malformed PDFs by policy: the service runs it in
//! a worker process (`isolate.rs`), so its panics are caught here the same
//! way, and only ours count.

#![no_main]

use echo_parser::{Limits, extract};
use echo_text::Kind;
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 7] = [
    Kind::Pdf,
    Kind::Docx,
    Kind::Html,
    Kind::Md,
    Kind::Txt,
    Kind::Csv,
    Kind::Json,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(pick) % KINDS.len()];
    let limits = Limits {
        max_output_chars: 10_000,
        ..Limits::default()
    };
    let parsed = if kind == Kind::Pdf {
        match std::panic::catch_unwind(|| extract(kind, file, &limits)) {
            Ok(parsed) => parsed,
            Err(_) => return,
        }
    } else {
        extract(kind, file, &limits)
    };
    if let Ok(parsed) = parsed {
        assert!(
            parsed.chars <= limits.max_output_chars,
            "{kind:?}: {} chars",
            parsed.chars
        );
        assert_eq!(parsed.text.chars().count(), parsed.chars, "{kind:?}");
    }
});
