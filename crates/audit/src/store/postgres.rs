use sqlx::postgres::{PgPool, PgPoolOptions};

use super::sql::{EVENT_COLUMNS, TEXT_COLUMNS};
use super::{Result, RowPage};

/// The audit chain in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgAuditStore {
    read: PgPool,
    write: PgPool,
}

impl PgAuditStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

impl PgAuditStore {
    async fn scan_page(&self, after: i64, through: i64, limit: i64) -> Result<RowPage> {
        use futures_util::TryStreamExt;
        use sqlx::Row;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        );
        let mut rows = sqlx::query(&sql)
            .bind(after)
            .bind(through)
            .bind(limit)
            .fetch(&self.read);
        let mut page = RowPage::default();
        while let Some(row) = rows.try_next().await? {
            let texts: Vec<Option<&str>> = TEXT_COLUMNS
                .into_iter()
                .map(|i| row.try_get(i))
                .collect::<Result<_, _>>()?;
            page.push(row.try_get(0)?, row.try_get(2)?, row.try_get(13)?, |i| {
                texts[i]
            });
        }
        Ok(page)
    }
}

/// A tsquery: each word a lexeme (a prefix if it ends in `*`), all
/// required. Words are letters and digits only, so they need no quoting.
fn tsquery(words: &[String]) -> String {
    let terms: Vec<String> = words
        .iter()
        .map(|w| match w.strip_suffix('*') {
            Some(prefix) => format!("{prefix}:*"),
            None => w.clone(),
        })
        .collect();
    terms.join(" & ")
}

super::sql::sql_audit_store!(
    PgAuditStore, sqlx::Postgres,
    optimize: "ANALYZE audit_events",
    // The GIN index over `audit_text(...)` (migration 0003) keeps itself.
    index_new: None,
    unindex_through: None,
    text_from: " FROM audit_events WHERE audit_text(message, action, actor) @@ to_tsquery('simple', ",
    text_from_end: ")",
    text_order: " ORDER BY seq DESC",
    text_query: tsquery,
);
