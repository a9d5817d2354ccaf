//! The document store's SQL, which both backends run:
//! [`SqlDocumentStore`], generic over the backend.

use echo_sql::{Backend, Column, Pools, RowsAffected as _};
use echo_text::Kind;
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Encode, Executor, Type};

use super::{Document, DocumentStore, Usage};
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

/// Document records in the database `DB` ([`super::SqliteDocumentStore`],
/// [`super::PgDocumentStore`]).
#[derive(Debug)]
pub struct SqlDocumentStore<DB: Database> {
    pub(super) pools: Pools<DB>,
}

#[async_trait::async_trait]
impl<DB: Backend> DocumentStore for SqlDocumentStore<DB>
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
        .execute(&self.pools.write)
        .await?;
        Ok(())
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
