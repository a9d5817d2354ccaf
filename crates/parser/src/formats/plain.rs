//! Plain text and Markdown: the text as it is.

use serde_json::{Map, Value};

use crate::Text;

pub fn text(source: &str, out: &mut Text) -> Map<String, Value> {
    out.push(source);
    let mut metadata = Map::new();
    metadata.insert("lines".into(), source.lines().count().into());
    metadata
}

/// Markdown keeps its markup (it reads well as text); the first ATX heading
/// is its title.
pub fn markdown(source: &str, out: &mut Text) -> Map<String, Value> {
    let mut metadata = text(source, out);
    let title = source.lines().find_map(|line| {
        let rest = line.trim_start_matches('#');
        (rest.len() < line.len() && rest.starts_with(' ')).then(|| rest.trim())
    });
    if let Some(title) = title {
        metadata.insert("title".into(), title.into());
    }
    metadata
}
