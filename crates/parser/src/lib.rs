//! The parser service: text and metadata out of the files users upload.
//!
//! `POST /v1/parse` takes a file's raw bytes from a service (a JWT whose
//! `aud` is the parser's audience and whose `sub` is the calling client)
//! and answers `{"type", "text", "metadata", "truncated", "chars"}`.
//!
//! The data flow of one request:
//!
//! 1. [`http`]: authenticate, read the body up to [`Limits::max_input_bytes`]
//!    (413 above).
//! 2. [`echo_text::sniff`]: decide the [`Kind`] from the content; the `filename` hint
//!    only chooses between the textual kinds (txt, md, csv). Nothing
//!    recognisable is 415.
//! 3. [`isolate`]: run [`formats::extract`] where a hostile file cannot hurt
//!    the service: a child process with memory and CPU limits
//!    ([`Isolation::Process`], what `echod serve parser` uses), or a
//!    blocking thread whose panics are caught ([`Isolation::Thread`]). Either
//!    way the request gives up after [`Limits::timeout`] (422).
//! 4. [`formats`]: one module per kind, each writing into a [`Text`] that
//!    stops at [`Limits::max_output_chars`] and marks the answer `truncated`.
//!
//! Errors are one enum, [`ParseError`], mapped to HTTP in one place.

pub mod error;
pub mod formats;
pub mod http;
pub mod isolate;
mod text;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use error::ParseError;
pub use formats::{Parsed, extract};
pub use http::{ParserApp, build, router, serve};
pub use isolate::{Isolation, run_worker};
pub use text::Text;

/// Every bound on one parse. The defaults are generous; the original design
/// cut text at 20,000 characters, here it is 2,000,000.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest body accepted (413 above).
    pub max_input_bytes: usize,
    /// Longest text returned; longer text is cut and marked `truncated`.
    pub max_output_chars: usize,
    /// Longest one parse may take (422 after).
    pub timeout: Duration,
    /// Address space of a parse worker process, in bytes.
    pub worker_memory_bytes: u64,
    /// Deepest JSON nesting accepted.
    pub max_json_depth: usize,
    /// CSV rows read; more are ignored (and the answer marked `truncated`).
    pub max_csv_rows: usize,
    /// Entries a DOCX (zip) archive may hold.
    pub max_zip_entries: usize,
    /// Decompressed size of one zip entry, declared or actual.
    pub max_zip_entry_bytes: u64,
    /// Decompressed size of all zip entries together, as declared.
    pub max_zip_total_bytes: u64,
    /// Largest decompressed / compressed ratio of a zip entry.
    pub max_zip_ratio: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_input_bytes: 25 * 1024 * 1024,
            max_output_chars: 2_000_000,
            timeout: Duration::from_secs(10),
            worker_memory_bytes: 1024 * 1024 * 1024,
            max_json_depth: 64,
            max_csv_rows: 1_000_000,
            max_zip_entries: 2_000,
            max_zip_entry_bytes: 128 * 1024 * 1024,
            max_zip_total_bytes: 256 * 1024 * 1024,
            max_zip_ratio: 200,
        }
    }
}
