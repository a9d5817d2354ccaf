//! The layering the docs promise (docs/architecture.md): no module of a
//! service depends, directly or through others, on a module that depends
//! on it, so each crate reads from its leaves up.

use std::path::Path;

fn assert_acyclic(krate: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(krate)
        .join("src");
    let graph = echo_testkit::modules::graph(&src);
    assert!(graph.len() > 3, "{krate}: read {} modules", graph.len());
    let cycles = echo_testkit::modules::cycles(&graph);
    assert!(cycles.is_empty(), "{krate} has import cycles: {cycles:?}");
}

#[test]
fn identity_has_no_import_cycles() {
    assert_acyclic("crates/identity");
}

#[test]
fn the_gateway_has_no_import_cycles() {
    assert_acyclic("crates/gateway");
}

#[test]
fn echod_has_no_import_cycles() {
    assert_acyclic("bins/echod");
}
