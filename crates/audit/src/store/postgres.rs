use echo_crypto::TrustedRoots;
use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Postgres};

use super::sql::{AuditBackend, EVENT_COLUMNS, SqlAuditStore, TEXT_COLUMNS};
use super::{Result, RowPage};

/// The audit chain in PostgreSQL.
pub type PgAuditStore = SqlAuditStore<Postgres>;

impl PgAuditStore {
    /// Connects to `url`, over TLS as its `sslmode` says, trusting `roots`.
    pub async fn connect(url: &str, roots: &TrustedRoots) -> Result<Self> {
        let pools =
            echo_sql::postgres::open_pools(url, roots, 8, &sqlx::migrate!("./migrations/postgres"))
                .await?;
        Ok(Self { pools })
    }
}

impl AuditBackend for Postgres {
    const OPTIMIZE: &'static str = "ANALYZE audit_events";
    // The GIN index over `audit_text(...)` (migration 0003) keeps itself.
    const INDEX_NEW: Option<&'static str> = None;
    const UNINDEX_THROUGH: Option<&'static str> = None;
    const TEXT_FROM: &'static str =
        " FROM audit_events WHERE audit_text(message, action, actor) @@ to_tsquery('simple', ";
    const TEXT_FROM_END: &'static str = ")";
    const TEXT_ORDER: &'static str = " ORDER BY seq DESC";

    /// A tsquery: each word a lexeme (a prefix if it ends in `*`), all
    /// required. Words are letters and digits only, so they need no quoting.
    fn text_query(words: &[String]) -> String {
        let terms: Vec<String> = words
            .iter()
            .map(|w| match w.strip_suffix('*') {
                Some(prefix) => format!("{prefix}:*"),
                None => w.clone(),
            })
            .collect();
        terms.join(" & ")
    }

    async fn scan_page(read: &PgPool, after: i64, through: i64, limit: i64) -> Result<RowPage> {
        use futures_util::TryStreamExt;
        use sqlx::Row;
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
        );
        let mut rows = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(through)
            .bind(limit)
            .fetch(read);
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
