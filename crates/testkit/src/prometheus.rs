//! A strict reader of the Prometheus text format (version 0.0.4), for
//! tests that scrape `/metrics`: every line must be a `# HELP`/`# TYPE`
//! comment or a well-formed sample, or the whole exposition is refused.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `# TYPE` of each metric family.
    pub types: BTreeMap<String, String>,
    /// The families with a `# HELP` line.
    pub helped: std::collections::BTreeSet<String>,
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include every pair
    /// of `labels` (0 when none match: a counter not yet moved).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample is named `name` with `labels`.
    pub fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }
}

/// Parses `text`, or says which line is malformed and why.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            match words.next() {
                Some("TYPE") => {
                    let (Some(name), Some(kind), None) = (words.next(), words.next(), words.next())
                    else {
                        return Err(fail("malformed TYPE"));
                    };
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail("unknown type"));
                    }
                    if !is_name(name) {
                        return Err(fail("bad metric name"));
                    }
                    exposition.types.insert(name.to_owned(), kind.to_owned());
                }
                Some("HELP") => match words.next().filter(|name| is_name(name)) {
                    Some(name) => {
                        exposition.helped.insert(name.to_owned());
                    }
                    None => return Err(fail("malformed HELP")),
                },
                _ => {}
            }
            continue;
        }
        exposition
            .samples
            .push(sample(line).map_err(|why| fail(&why))?);
    }
    Ok(exposition)
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_name(name) {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut key = String::new();
        let end = loop {
            let (i, c) = chars.next().ok_or("unterminated labels")?;
            match c {
                '}' if key.is_empty() => break i,
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err("label value not quoted".into());
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().ok_or("unterminated label value")?.1 {
                            '"' => break,
                            '\\' => match chars.next().ok_or("dangling escape")?.1 {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                _ => return Err("bad escape".into()),
                            },
                            c => value.push(c),
                        }
                    }
                    if !is_name(&key) || key.contains(':') {
                        return Err(format!("bad label name {key:?}"));
                    }
                    labels.insert(std::mem::take(&mut key), value);
                    match chars.next().ok_or("unterminated labels")? {
                        (_, ',') => {}
                        (i, '}') => break i,
                        _ => return Err("expected , or }".into()),
                    }
                }
                c => key.push(c),
            }
        };
        rest = &inner[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(timestamp) = fields.next() {
        timestamp
            .parse::<i64>()
            .map_err(|_| format!("bad timestamp {timestamp:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_escaped_labels_and_refuses_garbage() {
        let text = "# HELP x_total Things.\n# TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"uote\"} 3\nx_total{a=\"2\"} 4 1700000000\n\
                    y_seconds_bucket{le=\"+Inf\"} 2\nz 1.5e3\n";
        let parsed = parse(text).unwrap();
        assert_eq!(parsed.sum("x_total", &[]), 7.0);
        assert_eq!(parsed.sum("x_total", &[("b", "q\"uote")]), 3.0);
        assert_eq!(parsed.sum("z", &[]), 1500.0);
        assert_eq!(parsed.types["x_total"], "counter");
        assert!(parsed.has("y_seconds_bucket", &[("le", "+Inf")]));
        for bad in [
            "x{a=1} 1",
            "x 1 2 3",
            "1x 2",
            "x{a=\"1\" 2",
            "x",
            "# TYPE x bogus",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
