//! The gateway's path normalisation on arbitrary paths: it never panics,
//! and what it accepts is absolute, free of dot segments and `//`, and
//! normalises to itself.

#![no_main]

use echo_gateway::normalise;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normal) = normalise(path) else {
        return;
    };
    let normal = normal.path.into_owned();
    assert!(normal.starts_with('/'), "{path:?} -> {normal:?}");
    assert!(!normal.contains("//"), "{path:?} -> {normal:?}");
    let again = normalise(&normal).expect("a normal path stays acceptable");
    assert!(!again.had_dot_segments, "{path:?} -> {normal:?}");
    assert_eq!(again.path, normal, "{path:?}");
});
