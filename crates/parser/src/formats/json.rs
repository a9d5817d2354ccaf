//! JSON: one line per value, `path: value`, so that keys and values are
//! both searchable. Nesting is checked before parsing, on the raw bytes,
//! so a deeply nested document is refused without recursion.

use serde_json::{Map, Value};

use crate::{ParseError, Text};

pub fn extract(
    source: &str,
    max_depth: usize,
    out: &mut Text,
) -> Result<Map<String, Value>, ParseError> {
    let depth = nesting(source, max_depth)?;
    let value: Value = serde_json::from_str(source)
        .map_err(|e| ParseError::invalid(format!("malformed JSON: {e}")))?;
    let mut path = String::new();
    write_value(&value, &mut path, out);
    let mut metadata = Map::new();
    let top = match &value {
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        _ => "scalar",
    };
    metadata.insert("top".into(), top.into());
    metadata.insert("depth".into(), depth.into());
    Ok(metadata)
}

/// The deepest nesting of `source`, or an error as soon as it passes
/// `max_depth`. Brackets inside strings do not count.
pub fn nesting(source: &str, max_depth: usize) -> Result<usize, ParseError> {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in source.as_bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    return Err(ParseError::invalid(format!(
                        "JSON nested deeper than the limit of {max_depth} levels"
                    )));
                }
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(deepest)
}

/// Depth is bounded by [`nesting`], so recursion is.
fn write_value(value: &Value, path: &mut String, out: &mut Text) {
    if out.is_full() {
        return;
    }
    let scalar = |out: &mut Text, path: &str, text: &str| {
        if !path.is_empty() {
            out.push(path);
            out.push(": ");
        }
        out.push(text);
        out.push("\n");
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                write_value(child, path, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                write_value(child, path, out);
                path.truncate(len);
            }
        }
        Value::String(s) => scalar(out, path, s),
        Value::Null => scalar(out, path, "null"),
        other => scalar(out, path, &other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_ignores_brackets_in_strings() {
        assert_eq!(nesting(r#"{"a": "[[[[", "b": [[1]]}"#, 3).unwrap(), 3);
        assert_eq!(nesting(r#"["\"[[["]"#, 1).unwrap(), 1);
        assert!(nesting(&"[".repeat(65), 64).is_err());
        assert_eq!(
            nesting(&format!("{}{}", "[".repeat(64), "]".repeat(64)), 64).unwrap(),
            64
        );
    }

    #[test]
    fn values_are_written_with_their_paths() {
        let mut out = Text::new(1000);
        let metadata = extract(r#"{"a": {"b": [1, "two"]}, "c": null}"#, 64, &mut out).unwrap();
        assert_eq!(out.finish().0, "a.b[0]: 1\na.b[1]: two\nc: null\n");
        assert_eq!(metadata["depth"], 3);
    }
}
