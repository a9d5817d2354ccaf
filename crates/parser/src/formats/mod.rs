//! One module per kind of file. Each reads bytes and writes into a capped
//! [`Text`] plus a little metadata; none of them does I/O, so they run the
//! same inside the service, in a worker process, or in a test.

mod delimited;
mod docx;
mod html;
mod json;
mod pdf;
mod plain;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use echo_text::{Kind, decode_text};

use crate::{Limits, ParseError, Text};

/// What the parser answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    #[serde(rename = "type")]
    pub kind: Kind,
    pub text: String,
    pub metadata: Map<String, Value>,
    /// Whether `text` was cut at the output limit (or rows were left out).
    pub truncated: bool,
    /// Length of `text` in characters.
    pub chars: usize,
}

/// Extracts the text of `bytes`, already sniffed as `kind`. May panic or
/// run long on hostile input when `kind` is PDF: call it isolated (see
/// [`crate::isolate`]).
pub fn extract(kind: Kind, bytes: &[u8], limits: &Limits) -> Result<Parsed, ParseError> {
    let mut text = Text::new(limits.max_output_chars);
    let metadata = match kind {
        Kind::Pdf => pdf::extract(bytes, &mut text)?,
        Kind::Docx => docx::extract(bytes, limits, &mut text)?,
        Kind::Html => html::extract(&decoded(bytes)?, &mut text),
        Kind::Md => plain::markdown(&decoded(bytes)?, &mut text),
        Kind::Txt => plain::text(&decoded(bytes)?, &mut text),
        Kind::Csv => delimited::extract(&decoded(bytes)?, limits.max_csv_rows, &mut text)?,
        Kind::Json => json::extract(&decoded(bytes)?, limits.max_json_depth, &mut text)?,
    };
    let (text, truncated, chars) = text.finish();
    Ok(Parsed {
        kind,
        text,
        metadata,
        truncated,
        chars,
    })
}

fn decoded(bytes: &[u8]) -> Result<std::borrow::Cow<'_, str>, ParseError> {
    decode_text(bytes).ok_or_else(|| ParseError::invalid("the file is not text"))
}
