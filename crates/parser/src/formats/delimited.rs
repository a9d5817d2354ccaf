//! CSV: a line of tab-separated cells per row; row and column counts (and
//! the header row) in the metadata. Rows past the limit are left unread.

use serde_json::{Map, Value};

use crate::{ParseError, Text};

pub fn extract(
    source: &str,
    max_rows: usize,
    out: &mut Text,
) -> Result<Map<String, Value>, ParseError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(source.as_bytes());
    let mut rows = 0usize;
    let mut columns = 0usize;
    let mut header = None;
    for record in reader.records() {
        if out.is_full() {
            break;
        }
        if rows == max_rows {
            out.truncate();
            break;
        }
        let record = record.map_err(|e| ParseError::invalid(format!("malformed CSV: {e}")))?;
        columns = columns.max(record.len());
        if header.is_none() {
            header = Some(record.iter().map(str::to_owned).collect::<Vec<_>>());
        }
        for (i, cell) in record.iter().enumerate() {
            if i > 0 {
                out.push("\t");
            }
            out.push(cell);
        }
        out.push("\n");
        rows += 1;
    }
    let mut metadata = Map::new();
    metadata.insert("rows".into(), rows.into());
    metadata.insert("columns".into(), columns.into());
    if let Some(header) = header {
        metadata.insert("header".into(), header.into());
    }
    Ok(metadata)
}
