//! [`RowPage`]: a page of stored rows in one text arena, so verifying a
//! million rows allocates per page, not per field.

use crate::event::StoredFields;
use crate::store::ScannedRow;

/// Text fields of a row, in [`EVENT_COLUMNS`](super::sql::EVENT_COLUMNS)
/// order: id, service, level, action, actor, outcome, ip, user_agent,
/// trace_id, message, context.
const TEXT_FIELDS: usize = 11;
/// Marks an absent (SQL NULL) optional field.
const NULL: (u32, u32) = (u32::MAX, u32::MAX);

/// Rows as stored, their text in one buffer.
#[derive(Debug, Default)]
pub struct RowPage {
    text: String,
    rows: Vec<PageRow>,
}

#[derive(Debug)]
struct PageRow {
    seq: i64,
    time: i64,
    /// Byte ranges of the text fields in `text`.
    spans: [(u32, u32); TEXT_FIELDS],
    hash: [u8; 32],
    /// False if the stored hash is not 32 bytes: the row is then lent with
    /// an empty hash, which the verifier reports.
    hash_ok: bool,
}

impl RowPage {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds a row: `text(i)` gives the i-th text field (`None` for NULL).
    pub(crate) fn push<'t>(
        &mut self,
        seq: i64,
        time: i64,
        hash: &[u8],
        mut text: impl FnMut(usize) -> Option<&'t str>,
    ) {
        let mut spans = [NULL; TEXT_FIELDS];
        for (i, span) in spans.iter_mut().enumerate() {
            if let Some(value) = text(i) {
                let start = self.text.len();
                self.text.push_str(value);
                // A page stays far below 4 GiB: it holds at most a few
                // thousand rows of at most ~70 KiB each.
                *span = (start as u32, self.text.len() as u32);
            }
        }
        let stored = <[u8; 32]>::try_from(hash);
        self.rows.push(PageRow {
            seq,
            time,
            spans,
            hash_ok: stored.is_ok(),
            hash: stored.unwrap_or_default(),
        });
    }

    pub fn rows(&self) -> impl Iterator<Item = ScannedRow<'_>> {
        self.rows.iter().map(|row| {
            let field = |i: usize| match row.spans[i] {
                NULL => None,
                (start, end) => Some(&self.text[start as usize..end as usize]),
            };
            let required = |i: usize| field(i).unwrap_or_default();
            ScannedRow {
                seq: row.seq,
                fields: StoredFields {
                    id: required(0),
                    time: row.time,
                    service: required(1),
                    level: required(2),
                    action: required(3),
                    actor: field(4),
                    outcome: field(5),
                    ip: field(6),
                    user_agent: field(7),
                    trace_id: field(8),
                    message: required(9),
                    context: required(10),
                },
                hash: if row.hash_ok { &row.hash } else { &[] },
            }
        })
    }
}
