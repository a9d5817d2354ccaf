//! The document store's SQL, which both backends run:
//! [`SqlDocumentStore`], generic over the backend.

use echo_sql::{Backend, Column, Pools, RowsAffected as _};
use echo_text::Kind;
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Encode, Executor, Postgres, Sqlite, Type};

use super::{BlobOp, Document, DocumentStore, Usage};
use crate::{DocsError, Result};

const COLUMNS: &str = "id, owner, name, kind, size, sha256, job_id, created_at";

#[derive(sqlx::FromRow)]
struct DocumentRow {
    id: String,
    owner: String,
    name: String,
    kind: String,
    size: i64,
    sha256: String,
    job_id: Option<String>,
    created_at: i64,
}

impl TryFrom<DocumentRow> for Document {
    type Error = DocsError;
    fn try_from(r: DocumentRow) -> Result<Self> {
        let corrupt = |what: &str| DocsError::Corrupt(format!("document {}: {what}", r.id));
        Ok(Document {
            kind: parse_kind(&r.kind).ok_or_else(|| corrupt("kind"))?,
            size: u64::try_from(r.size).map_err(|_| corrupt("size"))?,
            id: r.id,
            owner: r.owner,
            name: r.name,
            sha256: r.sha256,
            job_id: r.job_id,
            created_at: r.created_at,
        })
    }
}

pub(crate) fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Pdf => "pdf",
        Kind::Docx => "docx",
        Kind::Html => "html",
        Kind::Md => "md",
        Kind::Txt => "txt",
        Kind::Csv => "csv",
        Kind::Json => "json",
    }
}

fn parse_kind(name: &str) -> Option<Kind> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

fn size_column(document: &Document) -> Result<i64> {
    i64::try_from(document.size)
        .map_err(|_| DocsError::Corrupt(format!("document {}: size", document.id)))
}

/// How a backend holds a blob against every replica's inserts and removals
/// of it, inside their transaction.
pub trait HoldBlob {
    /// The statement taking the hold (its one parameter the blob's
    /// digest), released when the transaction ends; `None` where one
    /// process owns the database and the service's own locks suffice.
    const HOLD_BLOB: Option<&'static str>;
}

impl HoldBlob for Postgres {
    const HOLD_BLOB: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(hashtext('docs_blobs:' || $1))");
}

impl HoldBlob for Sqlite {
    const HOLD_BLOB: Option<&'static str> = None;
}

/// Document records in the database `DB` ([`super::SqliteDocumentStore`],
/// [`super::PgDocumentStore`]).
#[derive(Debug)]
pub struct SqlDocumentStore<DB: Database> {
    pub(super) pools: Pools<DB>,
}

impl<DB: Backend> SqlDocumentStore<DB>
where
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
{
    /// Inserts the record with `executor` (the pool, or a transaction).
    async fn insert_on<'e, E: Executor<'e, Database = DB>>(
        &self,
        executor: E,
        d: &Document,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO docs_documents (id, owner, name, kind, size, sha256, job_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&d.id)
        .bind(&d.owner)
        .bind(&d.name)
        .bind(kind_name(d.kind))
        .bind(size_column(d)?)
        .bind(&d.sha256)
        .bind(&d.job_id)
        .bind(d.created_at)
        .execute(executor)
        .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl<DB: Backend + HoldBlob> DocumentStore for SqlDocumentStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    for<'a> Option<&'a str>: Encode<'a, DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
{
    async fn insert(&self, d: &Document) -> Result<()> {
        self.insert_on(&self.pools.write, d).await
    }

    async fn insert_with_blob(&self, d: &Document, put: BlobOp<'_>) -> Result<()> {
        let Some(hold) = DB::HOLD_BLOB else {
            put.await?;
            return self.insert(d).await;
        };
        let mut transaction = self.pools.write.begin().await?;
        sqlx::query(hold)
            .bind(d.sha256.as_str())
            .execute(&mut *transaction)
            .await?;
        put.await?;
        self.insert_on(&mut *transaction, d).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn remove_unreferenced_blob(&self, sha256: &str, remove: BlobOp<'_>) -> Result<bool> {
        let Some(hold) = DB::HOLD_BLOB else {
            if self.references(sha256).await? {
                return Ok(false);
            }
            remove.await?;
            return Ok(true);
        };
        let mut transaction = self.pools.write.begin().await?;
        sqlx::query(hold)
            .bind(sha256)
            .execute(&mut *transaction)
            .await?;
        let referenced: Option<String> =
            sqlx::query_scalar("SELECT id FROM docs_documents WHERE sha256 = $1 LIMIT 1")
                .bind(sha256)
                .fetch_optional(&mut *transaction)
                .await?;
        if referenced.is_some() {
            return Ok(false);
        }
        remove.await?;
        transaction.commit().await?;
        Ok(true)
    }

    async fn set_job(&self, id: &str, job_id: &str) -> Result<()> {
        sqlx::query("UPDATE docs_documents SET job_id = $1 WHERE id = $2")
            .bind(job_id)
            .bind(id)
            .execute(&self.pools.write)
            .await?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Document>> {
        let row: Option<DocumentRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM docs_documents WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pools.read)
        .await?;
        row.map(Document::try_from).transpose()
    }

    async fn list(&self, owner: Option<&str>) -> Result<Vec<Document>> {
        let rows: Vec<DocumentRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM docs_documents WHERE $1 IS NULL OR owner = $1 \
             ORDER BY created_at DESC, seq DESC"
        )))
        .bind(owner)
        .fetch_all(&self.pools.read)
        .await?;
        rows.into_iter().map(Document::try_from).collect()
    }

    async fn delete(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM docs_documents WHERE id = $1")
            .bind(id)
            .execute(&self.pools.write)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn references(&self, sha256: &str) -> Result<bool> {
        let found: Option<String> =
            sqlx::query_scalar("SELECT id FROM docs_documents WHERE sha256 = $1 LIMIT 1")
                .bind(sha256)
                .fetch_optional(&self.pools.read)
                .await?;
        Ok(found.is_some())
    }

    async fn usage(&self, owner: &str) -> Result<Usage> {
        use sqlx::Row as _;
        // The write pool: a usage read right after an insert sees it.
        let row = sqlx::query(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) \
             FROM docs_documents WHERE owner = $1",
        )
        .bind(owner)
        .fetch_one(&self.pools.write)
        .await?;
        let count = |i: usize| -> Result<u64> {
            let n: i64 = row.try_get(i)?;
            u64::try_from(n).map_err(|_| DocsError::Corrupt(format!("usage of {owner}")))
        };
        Ok(Usage {
            files: count(0)?,
            bytes: count(1)?,
        })
    }

    async fn ping(&self) -> Result<()> {
        Ok(self.pools.ping().await?)
    }
}
