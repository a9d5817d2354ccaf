//! The pure pieces of the document pipeline, shared by the services that
//! run it without one depending on another:
//!
//! - [`sniff`] (`sniff.rs`): the [`Kind`] of a file from its bytes — what
//!   docs checks at upload and the parser dispatches on — and
//!   [`decode_text`], how bytes that are text are read.
//! - [`chunk_text`] (`chunk.rs`): a document's text cut into [`Chunk`]s,
//!   the passages the search index keeps and answers cite — what the worker
//!   makes and docs stores.
//!
//! No I/O: bytes and strings in, values out.

mod chunk;
mod sniff;

pub use chunk::{Chunk, DEFAULT_CHUNK_CHARS, chunk_text};
pub use sniff::{Kind, decode_text, sniff};
