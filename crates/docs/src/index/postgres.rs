//! The PostgreSQL search backend: chunks in the table `docs_chunks` of the
//! docs database, their English lexemes in a generated `tsvector` column
//! under a GIN index, ranked with `ts_rank_cd` (cover density: passages
//! where the question's words occur often and close together first). Every
//! replica reads and writes the same rows, so a chunk indexed through one
//! is found through any other at once. Chunks reference their document's
//! record (`ON DELETE CASCADE`): no chunk outlives its document, whichever
//! replicas index and delete it.

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use echo_sql::Pools;
use echo_text::Chunk;
use sqlx::Postgres;

use super::{Passage, SearchIndex};
use crate::{DocsError, Result};

/// Connections of the index: searches are short, writes one statement.
const MAX_CONNECTIONS: u32 = 8;

/// The question as a query: its English lexemes, any of them
/// (`plainto_tsquery` requires all, which a question in words rarely
/// meets; its text form quotes every lexeme and joins them with ` & `, so
/// the replacement only ever touches the operators). A hyphenated word
/// stays a phrase.
const QUESTION_QUERY: &str = "replace(plainto_tsquery('english', $2)::text, ' & ', ' | ')::tsquery";

/// Normalisation of `ts_rank_cd`: divide by 1 + log(the chunk's length),
/// so a long chunk does not win by length alone.
const RANK_NORMALIZATION: i32 = 1;

/// Chunks in PostgreSQL, searched with its full-text search.
#[derive(Debug)]
pub struct PgSearchIndex {
    pools: Pools<Postgres>,
}

impl PgSearchIndex {
    /// Connects to the docs database `url`, over TLS as its `sslmode` says,
    /// trusting `roots`, and brings its schema up to date.
    pub async fn connect(url: &str, roots: &TrustedRoots) -> Result<Self> {
        let pools = echo_sql::postgres::open_pools(
            url,
            roots,
            MAX_CONNECTIONS,
            &sqlx::migrate!("./migrations/postgres"),
        )
        .await?;
        Ok(Self { pools })
    }
}

/// PostgreSQL's text cannot hold NUL: a NUL becomes a space, as any other
/// separator would.
fn storable(text: &str) -> String {
    text.replace('\0', " ")
}

#[derive(sqlx::FromRow)]
struct PassageRow {
    document_id: String,
    name: String,
    position: i64,
    start: i64,
    text: String,
    score: f32,
}

impl From<PassageRow> for Passage {
    fn from(row: PassageRow) -> Self {
        Passage {
            document_id: row.document_id,
            name: row.name,
            position: u32::try_from(row.position).unwrap_or(u32::MAX),
            start: usize::try_from(row.start).unwrap_or(usize::MAX),
            text: row.text,
            score: row.score,
        }
    }
}

#[async_trait]
impl SearchIndex for PgSearchIndex {
    async fn replace(
        &self,
        document_id: &str,
        owner: &str,
        name: &str,
        chunks: Vec<Chunk>,
    ) -> Result<()> {
        let positions: Vec<i64> = chunks.iter().map(|c| i64::from(c.position)).collect();
        let starts = chunks
            .iter()
            .map(|c| i64::try_from(c.start))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| DocsError::BadRequest("a chunk's start is out of range".to_owned()))?;
        let texts: Vec<String> = chunks.iter().map(|c| storable(&c.text)).collect();
        let mut transaction = self.pools.write.begin().await?;
        // Two replicas replacing one document (a redelivered job) take
        // turns, or both deletes could run before both inserts.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('docs_chunks:' || $1))")
            .bind(document_id)
            .execute(&mut *transaction)
            .await?;
        sqlx::query("DELETE FROM docs_chunks WHERE document_id = $1")
            .bind(document_id)
            .execute(&mut *transaction)
            .await?;
        // A document whose record is gone (deleted meanwhile, through any
        // replica) is refused by the foreign key: NotFound.
        sqlx::query(
            "INSERT INTO docs_chunks (document_id, owner, name, position, start, text) \
             SELECT $1, $2, $3, chunk.position, chunk.start, chunk.text \
             FROM UNNEST($4::BIGINT[], $5::BIGINT[], $6::TEXT[]) AS chunk (position, start, text)",
        )
        .bind(document_id)
        .bind(storable(owner))
        .bind(storable(name))
        .bind(positions)
        .bind(starts)
        .bind(texts)
        .execute(&mut *transaction)
        .await
        .map_err(|e| {
            let orphan = matches!(&e, sqlx::Error::Database(db) if db.is_foreign_key_violation());
            if orphan {
                DocsError::NotFound
            } else {
                DocsError::Database(e)
            }
        })?;
        transaction.commit().await?;
        Ok(())
    }

    async fn remove(&self, document_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM docs_chunks WHERE document_id = $1")
            .bind(document_id)
            .execute(&self.pools.write)
            .await?;
        Ok(())
    }

    async fn search(&self, owner: &str, question: &str, limit: usize) -> Result<Vec<Passage>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The owner is a condition of the query itself: no row of another
        // owner is ever read into the result, whatever the question says.
        let rows: Vec<PassageRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT document_id, name, position, start, text, \
                    ts_rank_cd(terms, question, {RANK_NORMALIZATION}) AS score \
             FROM docs_chunks, (SELECT {QUESTION_QUERY} AS question) AS asked \
             WHERE owner = $1 AND terms @@ question \
             ORDER BY score DESC, document_id, position \
             LIMIT $3"
        )))
        .bind(storable(owner))
        .bind(storable(question))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pools.read)
        .await?;
        Ok(rows.into_iter().map(Passage::from).collect())
    }

    async fn chunk_count(&self, document_id: &str) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM docs_chunks WHERE document_id = $1")
                .bind(document_id)
                .fetch_one(&self.pools.read)
                .await?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}
