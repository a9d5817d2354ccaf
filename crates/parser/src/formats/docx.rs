//! DOCX: a zip archive whose `word/document.xml` holds the text.
//!
//! A zip can promise little and deliver a lot (a "zip bomb"), so before
//! anything is decompressed the central directory is checked: the number
//! of entries, each entry's declared size and compression ratio, and the
//! declared total. Declared sizes can lie, so every read is also capped by
//! what the entry may really yield.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};
use zip::ZipArchive;
use zip::result::ZipError;

use crate::{Limits, ParseError, Text};

const DOCUMENT: &str = "word/document.xml";
const CORE_PROPERTIES: &str = "docProps/core.xml";

pub fn extract(
    bytes: &[u8],
    limits: &Limits,
    out: &mut Text,
) -> Result<Map<String, Value>, ParseError> {
    let mut archive = ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| ParseError::invalid(format!("not a readable DOCX (zip): {e}")))?;
    check_directory(&mut archive, limits)?;
    let document = match read_entry(&mut archive, DOCUMENT, limits)? {
        Some(document) => document,
        None => {
            return Err(ParseError::Unsupported(format!(
                "a zip archive without {DOCUMENT} is not a DOCX"
            )));
        }
    };
    let mut metadata = Map::new();
    let paragraphs = document_text(&document, out)?;
    metadata.insert("paragraphs".into(), paragraphs.into());
    if let Some(core) = read_entry(&mut archive, CORE_PROPERTIES, limits)? {
        for (element, key) in [("title", "title"), ("creator", "author")] {
            if let Some(value) = element_text(&core, element) {
                metadata.insert(key.into(), value.into());
            }
        }
    }
    Ok(metadata)
}

/// The central directory within the limits, before any inflating.
fn check_directory(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    limits: &Limits,
) -> Result<(), ParseError> {
    if archive.len() > limits.max_zip_entries {
        return Err(ParseError::invalid(format!(
            "the DOCX has {} entries, more than the limit of {}",
            archive.len(),
            limits.max_zip_entries
        )));
    }
    let mut total: u64 = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).map_err(corrupt)?;
        let (size, packed) = (entry.size(), entry.compressed_size());
        let name = || {
            entry
                .name()
                .map(|n| n.into_owned())
                .unwrap_or_else(|_| format!("#{i}"))
        };
        if size > limits.max_zip_entry_bytes {
            return Err(ParseError::invalid(format!(
                "DOCX entry {} would decompress to {size} bytes, more than the limit of {}",
                name(),
                limits.max_zip_entry_bytes
            )));
        }
        if size > packed.max(1).saturating_mul(limits.max_zip_ratio) {
            return Err(ParseError::invalid(format!(
                "DOCX entry {} is compressed more than {}:1 (a zip bomb?)",
                name(),
                limits.max_zip_ratio
            )));
        }
        total = total.saturating_add(size);
    }
    if total > limits.max_zip_total_bytes {
        return Err(ParseError::invalid(format!(
            "the DOCX would decompress to {total} bytes, more than the limit of {}",
            limits.max_zip_total_bytes
        )));
    }
    Ok(())
}

/// Entry `name`, decompressed; never more than its declared size (already
/// checked against the limits) however much the data would really inflate.
fn read_entry(
    archive: &mut ZipArchive<Cursor<&[u8]>>,
    name: &str,
    limits: &Limits,
) -> Result<Option<Vec<u8>>, ParseError> {
    let entry = match archive.by_name(name) {
        Ok(entry) => entry,
        Err(ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(corrupt(e)),
    };
    let cap = entry.size().min(limits.max_zip_entry_bytes);
    let mut data = Vec::new();
    entry
        .take(cap + 1)
        .read_to_end(&mut data)
        .map_err(|e| ParseError::invalid(format!("DOCX entry {name} is corrupt: {e}")))?;
    if data.len() as u64 > cap {
        return Err(ParseError::invalid(format!(
            "DOCX entry {name} inflates past its declared size (a zip bomb?)"
        )));
    }
    Ok(Some(data))
}

fn corrupt(e: ZipError) -> ParseError {
    ParseError::invalid(format!("the DOCX (zip) is corrupt: {e}"))
}

/// The text runs (`w:t`) of `word/document.xml`, a line per paragraph
/// (`w:p`), tabs and breaks kept. Returns the number of paragraphs.
fn document_text(xml: &[u8], out: &mut Text) -> Result<usize, ParseError> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut in_run_text = false;
    let mut paragraphs = 0;
    while !out.is_full() {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| ParseError::invalid(format!("{DOCUMENT} is not well-formed XML: {e}")))?;
        match event {
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_run_text = true,
            Event::End(e) => match e.local_name().as_ref() {
                b"t" => in_run_text = false,
                b"p" => {
                    paragraphs += 1;
                    out.newline();
                }
                _ => {}
            },
            Event::Empty(e) => match e.local_name().as_ref() {
                b"tab" => out.push("\t"),
                b"br" | b"cr" => out.push("\n"),
                b"p" => paragraphs += 1,
                _ => {}
            },
            Event::Text(e) if in_run_text => out.push(&e.decode().map_err(xml_error)?),
            Event::GeneralRef(e) if in_run_text => push_reference(&e, out)?,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(paragraphs)
}

/// `&amp;`, `&#233;` and the like inside text.
fn push_reference(
    reference: &quick_xml::events::BytesRef<'_>,
    out: &mut Text,
) -> Result<(), ParseError> {
    if let Some(c) = reference
        .resolve_char_ref()
        .map_err(|e| ParseError::invalid(e.to_string()))?
    {
        out.push(c.encode_utf8(&mut [0; 4]));
    } else if let Some(s) =
        quick_xml::escape::resolve_predefined_entity(&reference.decode().map_err(xml_error)?)
    {
        out.push(s);
    }
    Ok(())
}

fn xml_error(e: impl std::fmt::Display) -> ParseError {
    ParseError::invalid(format!("bad text in {DOCUMENT}: {e}"))
}

/// The text of the first element named `local` (any namespace), for the
/// core properties.
fn element_text(xml: &[u8], local: &str) -> Option<String> {
    let mut out = Text::new(1024);
    let mut reader = Reader::from_reader(xml);
    let mut inside = false;
    loop {
        match reader.read_event().ok()? {
            Event::Start(e) if e.local_name().as_ref() == local.as_bytes() => inside = true,
            Event::End(e) if inside && e.local_name().as_ref() == local.as_bytes() => break,
            Event::Text(e) if inside => out.push(&e.decode().ok()?),
            Event::GeneralRef(e) if inside => push_reference(&e, &mut out).ok()?,
            Event::Eof => return None,
            _ => {}
        }
    }
    let text = out.finish().0.trim().to_owned();
    (!text.is_empty()).then_some(text)
}
