//! Sniffing and text decoding on arbitrary bytes never panic, and a name
//! hint never makes binary data text.

#![no_main]

use echo_text::{Kind, decode_text, sniff};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = decode_text(data);
    for hint in [
        None,
        Some("a.txt"),
        Some("a.csv"),
        Some("a.md"),
        Some("a.pdf"),
    ] {
        let kind = sniff(data, hint);
        if matches!(kind, Some(Kind::Txt | Kind::Md | Kind::Csv)) {
            assert!(decoded.is_some(), "sniffed as text but does not decode");
        }
    }
});
