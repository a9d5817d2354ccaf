//! PDF through `pdf-extract` (on `lopdf`), pure Rust. It panics on some
//! malformed files by policy and can run long on hostile ones: this module
//! must only run isolated ([`crate::isolate`]).

use serde_json::{Map, Value};

use crate::{ParseError, Text};

pub fn extract(bytes: &[u8], out: &mut Text) -> Result<Map<String, Value>, ParseError> {
    let pages = pdf_extract::extract_text_from_mem_by_pages(bytes)
        .map_err(|e| ParseError::invalid(format!("unreadable PDF: {e}")))?;
    if pages.is_empty() {
        // What lopdf makes of a damaged catalog or page tree.
        return Err(ParseError::invalid(
            "unreadable PDF: no pages found (a corrupt catalog or page tree?)",
        ));
    }
    for page in &pages {
        out.push(page);
        out.newline();
    }
    let mut metadata = Map::new();
    metadata.insert("pages".into(), pages.len().into());
    Ok(metadata)
}
