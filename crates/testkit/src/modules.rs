//! The import graph between the modules of one crate, and its cycles: what
//! the architecture tests check, so that a module never depends (directly
//! or through others) on a module that depends on it.
//!
//! The graph is read from the source text: a module depends on every module
//! its code names through `crate::…` (including names `lib.rs`/`main.rs`
//! re-export with `pub use module::Name`) or `super::…`. Comments and the
//! `#[cfg(test)] mod tests` at the end of a file do not count.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Module path (`""` for the crate root, `"http::account"`) → the modules
/// it depends on.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// The import graph of the crate whose `src` directory is `src`.
pub fn graph(src: &Path) -> Graph {
    let mut sources = BTreeMap::new();
    collect(src, src, &mut sources);
    let root = sources.get("").cloned().unwrap_or_default();
    let reexports = reexports(&root);
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    sources
        .iter()
        .map(|(module, text)| {
            let mut deps = BTreeSet::new();
            for path in crate_paths(text) {
                if let Some(dep) = resolve(&path, &modules, &reexports) {
                    deps.insert(dep);
                }
            }
            for name in idents_after(text, "super::") {
                let parent = parent(module);
                let candidate = if parent.is_empty() {
                    name.clone()
                } else {
                    format!("{parent}::{name}")
                };
                deps.insert(if modules.contains(&candidate) {
                    candidate
                } else {
                    parent.to_owned()
                });
            }
            deps.remove(module);
            deps.remove("");
            (module.clone(), deps)
        })
        .collect()
}

/// Every set of two or more modules that depend on each other (the
/// strongly connected components of the graph), each sorted.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    // Tarjan's algorithm.
    struct State<'a> {
        graph: &'a Graph,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// The source of every module under `dir`, comments and tests removed.
fn collect(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path).with_extension("");
        let mut parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        if parts == ["lib"] || parts == ["main"] {
            parts.clear();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        out.insert(parts.join("::"), code_of(&text));
    }
}

/// `text` without line comments and without its trailing test module.
fn code_of(text: &str) -> String {
    let code = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `Name → module` for the root's `pub use module::Name` (and `{A, B}`).
fn reexports(root: &str) -> HashMap<String, String> {
    let mut names = HashMap::new();
    for statement in root.split(';') {
        let Some(rest) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let rest = rest.strip_prefix("self::").unwrap_or(rest);
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for item in items.split([',', '{', '}']) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let name = item.rsplit(" as ").next().unwrap_or(item);
            names.insert(name.to_owned(), module.trim().to_owned());
        }
    }
    names
}

/// Every path named after `crate::`, with `crate::{a, b::c}` groups
/// expanded.
fn crate_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            paths.extend(group[..end].split(',').map(|p| path_at(p.trim())));
        } else {
            paths.push(path_at(rest));
        }
    }
    paths.retain(|p| !p.is_empty());
    paths
}

/// The `a::b::C` path at the start of `text`.
fn path_at(text: &str) -> String {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(text.len());
    text[..end].trim_end_matches(':').to_owned()
}

fn idents_after(text: &str, prefix: &str) -> Vec<String> {
    text.match_indices(prefix)
        .map(|(at, _)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

/// The longest prefix of `path` that is a module, or the module the root
/// re-exports its first segment from.
fn resolve(
    path: &str,
    modules: &BTreeSet<String>,
    reexports: &HashMap<String, String>,
) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    for len in (1..=parts.len()).rev() {
        let candidate = parts[..len].join("::");
        if modules.contains(&candidate) {
            return Some(candidate);
        }
    }
    reexports.get(parts[0]).cloned()
}

fn parent(module: &str) -> &str {
    module.rsplit_once("::").map_or("", |(parent, _)| parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crate_of(files: &[(&str, &str)]) -> crate::TempDir {
        let dir = crate::data_dir();
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_cycle_through_a_reexport_is_found_and_comments_do_not_count() {
        let dir = crate_of(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\npub use b::Thing;\n"),
            ("a.rs", "use crate::Thing;\n// crate::c::Never\n"),
            ("b.rs", "use crate::a::helper;\n"),
            ("c.rs", "use crate::{a::x, b};\n"),
        ]);
        let graph = graph(dir.path());
        assert_eq!(graph["c"], ["a", "b"].map(String::from).into());
        assert_eq!(cycles(&graph), vec![vec!["a".to_owned(), "b".to_owned()]]);
    }

    #[test]
    fn super_in_a_nested_module_names_its_sibling() {
        let dir = crate_of(&[
            ("lib.rs", "mod http;\n"),
            ("http/mod.rs", "mod pages;\nmod handlers;\n"),
            ("http/pages.rs", "use super::handlers::x;\n"),
            (
                "http/handlers.rs",
                "fn f() {}\n#[cfg(test)]\nmod tests { use super::super::pages; }\n",
            ),
        ]);
        let graph = graph(dir.path());
        assert!(graph["http::pages"].contains("http::handlers"));
        assert!(cycles(&graph).is_empty());
    }
}
