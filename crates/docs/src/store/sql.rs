//! The document store's SQL, which both backends run, instantiated per
//! backend by [`sql_document_store!`].

use echo_text::Kind;

use super::Document;
use crate::{DocsError, Result};

pub(crate) const COLUMNS: &str = "id, owner, name, kind, size, sha256, job_id, created_at";

#[derive(sqlx::FromRow)]
pub(crate) struct DocumentRow {
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

pub(crate) fn size_column(document: &Document) -> Result<i64> {
    i64::try_from(document.size)
        .map_err(|_| DocsError::Corrupt(format!("document {}: size", document.id)))
}

/// Implements [`super::DocumentStore`] for `$store` (with `read` and
/// `write` pools).
macro_rules! sql_document_store {
    ($store:ty) => {
        use $crate::Result;
        use $crate::store::sql::{COLUMNS, DocumentRow, kind_name, size_column};
        use $crate::store::{Document, DocumentStore};

        #[async_trait::async_trait]
        impl DocumentStore for $store {
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
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn set_job(&self, id: &str, job_id: &str) -> Result<()> {
                sqlx::query("UPDATE docs_documents SET job_id = $1 WHERE id = $2")
                    .bind(job_id)
                    .bind(id)
                    .execute(&self.write)
                    .await?;
                Ok(())
            }

            async fn get(&self, id: &str) -> Result<Option<Document>> {
                let row: Option<DocumentRow> = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM docs_documents WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
                row.map(Document::try_from).transpose()
            }

            async fn list(&self, owner: Option<&str>) -> Result<Vec<Document>> {
                let rows: Vec<DocumentRow> = sqlx::query_as(&format!(
                    "SELECT {COLUMNS} FROM docs_documents WHERE $1 IS NULL OR owner = $1 \
                     ORDER BY created_at DESC, seq DESC"
                ))
                .bind(owner)
                .fetch_all(&self.read)
                .await?;
                rows.into_iter().map(Document::try_from).collect()
            }

            async fn delete(&self, id: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM docs_documents WHERE id = $1")
                    .bind(id)
                    .execute(&self.write)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn references(&self, sha256: &str) -> Result<bool> {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT id FROM docs_documents WHERE sha256 = $1 LIMIT 1")
                        .bind(sha256)
                        .fetch_optional(&self.read)
                        .await?;
                Ok(found.is_some())
            }
        }
    };
}

pub(crate) use sql_document_store;
