//! An audit event from arbitrary JSON: decoding and validating never
//! panic, and the canonical bytes of a valid event are a fixed point (they
//! decode to an event with the same canonical bytes), since every hash of
//! the chain is computed over them.

#![no_main]

use echo_audit::event::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Event>(data) else {
        return;
    };
    if event.validate().is_err() {
        return;
    }
    let canonical = event.canonical_bytes();
    let again: Event = serde_json::from_slice(&canonical).expect("canonical bytes are JSON");
    assert_eq!(
        again.canonical_bytes(),
        canonical,
        "canonical form is not stable"
    );
});
