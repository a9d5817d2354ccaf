use std::path::Path;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqliteSynchronous};

use super::sql::{AuditBackend, EVENT_COLUMNS, SqlAuditStore, TEXT_COLUMNS};
use super::{AuditStoreError, Result, RowPage};

/// The audit chain in a SQLite file: one writer connection, a reader pool.
pub type SqliteAuditStore = SqlAuditStore<Sqlite>;

impl SqliteAuditStore {
    pub async fn open(path: &Path) -> Result<Self> {
        // Durable commit: an acknowledged event survives a power cut.
        let options = SqliteConnectOptions::new()
            .filename(path)
            .synchronous(SqliteSynchronous::Full);
        let pools =
            echo_sql::sqlite::open_pools(options, &sqlx::migrate!("./migrations/sqlite")).await?;
        Ok(Self { pools })
    }
}

impl AuditBackend for Sqlite {
    // `PRAGMA optimize` with 0x10002: analyse what needs it, on every table.
    const OPTIMIZE: &'static str = "PRAGMA optimize=0x10002";
    // The full-text index is a contentless FTS5 table keyed by seq, filled
    // in the append's transaction from the rows just written.
    const INDEX_NEW: Option<&'static str> = Some(
        "INSERT INTO audit_fts (rowid, fts_message, fts_action, fts_actor) \
         SELECT seq, message, action, actor FROM audit_events WHERE seq > $1",
    );
    const UNINDEX_THROUGH: Option<&'static str> = Some("DELETE FROM audit_fts WHERE rowid <= $1");
    // Driven by the index, newest match first: FTS5 walks its doclists
    // backwards by rowid and stops after `limit` hits.
    const TEXT_FROM: &'static str =
        " FROM audit_fts JOIN audit_events ON seq = audit_fts.rowid WHERE audit_fts MATCH ";
    const TEXT_FROM_END: &'static str = "";
    const TEXT_ORDER: &'static str = " ORDER BY audit_fts.rowid DESC";

    /// An FTS5 match expression: each word a quoted term (a prefix term if
    /// it ends in `*`), all required. Words are letters and digits only, so
    /// quoting cannot be escaped.
    fn text_query(words: &[String]) -> String {
        let terms: Vec<String> = words
            .iter()
            .map(|w| match w.strip_suffix('*') {
                Some(prefix) => format!("\"{prefix}\"*"),
                None => format!("\"{w}\""),
            })
            .collect();
        terms.join(" AND ")
    }

    /// Through rusqlite on a blocking thread, from the file the pool reads:
    /// sqlx copies every value of every row across threads, which made it
    /// the bottleneck of `echod audit verify` (measured in BENCHMARKS.md).
    async fn scan_page(read: &SqlitePool, after: i64, through: i64, limit: i64) -> Result<RowPage> {
        let path = read.connect_options().get_filename().to_owned();
        tokio::task::spawn_blocking(move || scan_file(&path, after, through, limit))
            .await
            .map_err(|e| AuditStoreError::Corrupt(format!("scan stopped: {e}")))?
            .map_err(|e| AuditStoreError::Corrupt(format!("scan failed: {e}")))
    }
}

fn scan_file(path: &Path, after: i64, through: i64, limit: i64) -> rusqlite::Result<RowPage> {
    use rusqlite::OpenFlags;
    let db = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut statement = db.prepare(&format!(
        "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
    ))?;
    let mut rows = statement.query((after, through, limit))?;
    let mut page = RowPage::default();
    while let Some(row) = rows.next()? {
        let mut texts = [None; TEXT_COLUMNS.len()];
        for (slot, column) in texts.iter_mut().zip(TEXT_COLUMNS) {
            *slot = row.get_ref(column)?.as_str_or_null()?;
        }
        page.push(row.get(0)?, row.get(2)?, row.get_ref(13)?.as_blob()?, |i| {
            texts[i]
        });
    }
    Ok(page)
}
