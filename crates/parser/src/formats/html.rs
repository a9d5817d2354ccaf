//! HTML through a real parser (html5ever, via scraper): the text of the
//! body without scripts, styles, templates or comments; the title into the
//! metadata. The tree is walked iteratively, so deep nesting cannot
//! overflow the stack.

use ego_tree::iter::Edge;
use scraper::{Html, Node};
use serde_json::{Map, Value};

use crate::Text;

/// Elements whose content is not text for a reader.
const SKIPPED: &[&str] = &["script", "style", "noscript", "template", "head", "svg"];

/// Elements that start a new line.
const BLOCKS: &[&str] = &[
    "p",
    "div",
    "br",
    "li",
    "ul",
    "ol",
    "tr",
    "table",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "header",
    "footer",
    "blockquote",
    "pre",
    "hr",
    "dd",
    "dt",
    "title",
];

pub fn extract(source: &str, out: &mut Text) -> Map<String, Value> {
    let document = Html::parse_document(source);
    let mut metadata = Map::new();
    let mut skipping = 0usize;
    let mut title = None;
    for edge in document.tree.root().traverse() {
        if out.is_full() {
            break;
        }
        match edge {
            Edge::Open(node) => match node.value() {
                Node::Element(element) => {
                    let name = element.name();
                    if name == "title" && title.is_none() {
                        let text: String = node
                            .descendants()
                            .filter_map(|n| n.value().as_text().map(|t| t.to_string()))
                            .collect();
                        title = Some(collapse(&text).trim().to_owned());
                    }
                    if SKIPPED.contains(&name) {
                        skipping += 1;
                    } else if BLOCKS.contains(&name) && skipping == 0 {
                        out.newline();
                    }
                }
                Node::Text(text) if skipping == 0 => {
                    let collapsed = collapse(text);
                    if !collapsed.trim().is_empty() {
                        out.push(&collapsed);
                    }
                }
                _ => {}
            },
            Edge::Close(node) => {
                if let Node::Element(element) = node.value() {
                    let name = element.name();
                    if SKIPPED.contains(&name) {
                        skipping -= 1;
                    } else if BLOCKS.contains(&name) && skipping == 0 {
                        out.newline();
                    }
                }
            }
        }
    }
    if let Some(title) = title.filter(|t| !t.is_empty()) {
        metadata.insert("title".into(), title.into());
    }
    metadata
}

/// Runs of whitespace as one space, as a browser renders them.
fn collapse(text: &str) -> String {
    let mut collapsed = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if !space {
                collapsed.push(' ');
            }
            space = true;
        } else {
            collapsed.push(c);
            space = false;
        }
    }
    collapsed
}
