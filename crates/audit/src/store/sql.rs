//! The SQL both backends run: [`SqlAuditStore`], generic over the backend,
//! and [`AuditBackend`], where the backends differ.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use echo_sql::{Backend, Column, Pools, RowsAffected as _, placeholders};
use sqlx::{Arguments as _, AssertSqlSafe, ColumnIndex, Database, Encode, Executor, Pool, Type};

use super::{Appended, AuditStore, AuditStoreError, EventQuery, Result, RowPage};
use crate::chain::{Anchor, ChainedEvent, Hash, link};
use crate::checkpoint::Checkpoint;
use crate::event::{Event, Level};

pub(crate) const EVENT_COLUMNS: &str = "seq, id, time, service, level, action, actor, outcome, ip, user_agent, trace_id, message, context, hash";

/// Positions of the text columns in [`EVENT_COLUMNS`] (all but `seq`,
/// `time` and `hash`), in the order [`super::RowPage`] keeps them.
pub(crate) const TEXT_COLUMNS: [usize; 11] = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

fn to_hash(bytes: Vec<u8>) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| AuditStoreError::Corrupt("hash is not 32 bytes".into()))
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    id: String,
    time: i64,
    service: String,
    level: String,
    action: String,
    actor: Option<String>,
    outcome: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    trace_id: Option<String>,
    message: String,
    context: String,
    hash: Vec<u8>,
}

impl TryFrom<EventRow> for ChainedEvent {
    type Error = AuditStoreError;
    fn try_from(r: EventRow) -> Result<Self> {
        let corrupt = |what: &str| AuditStoreError::Corrupt(format!("event {}: {what}", r.id));
        let level = Level::parse(&r.level).ok_or_else(|| corrupt("unknown level"))?;
        let context =
            serde_json::from_str(&r.context).map_err(|_| corrupt("context is not JSON"))?;
        Ok(ChainedEvent {
            seq: r.seq,
            hash: to_hash(r.hash)?,
            event: Event {
                id: r.id,
                time: r.time,
                service: r.service,
                level,
                action: r.action,
                actor: r.actor,
                outcome: r.outcome,
                ip: r.ip,
                user_agent: r.user_agent,
                trace_id: r.trace_id,
                message: r.message,
                context,
            },
        })
    }
}

/// Rows per multi-row `INSERT`: 14 binds each stays far below both
/// backends' bind limits (SQLite 32,766; PostgreSQL 65,535).
const INSERT_CHUNK: usize = 500;

/// Words of a free-text search: maximal runs of letters and digits, which
/// is how both backends' indexes split text (FTS5's `unicode61`, and the
/// PostgreSQL index expression that turns everything else into spaces),
/// lowercased; a word followed by `*` keeps it and matches as a prefix.
pub fn search_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if !c.is_alphanumeric() {
            continue;
        }
        let mut end = start + c.len_utf8();
        while let Some(&(i, c)) = chars.peek().filter(|(_, c)| c.is_alphanumeric()) {
            end = i + c.len_utf8();
            chars.next();
        }
        let mut word = text[start..end].to_lowercase();
        if chars.next_if(|&(_, c)| c == '*').is_some() {
            word.push('*');
        }
        words.push(word);
    }
    words
}

/// Where the audit log's two backends differ: free-text search, planner
/// statistics, and the verifier's bulk read.
pub trait AuditBackend: Backend {
    /// Refreshes the planner's statistics.
    const OPTIMIZE: &'static str;
    /// Run after an append with `$1` = the seq before the batch, to index
    /// the new rows for free text; `None` where an index expression does it.
    const INDEX_NEW: Option<&'static str>;
    /// Run as pruning deletes the rows with seq ≤ `$1`.
    const UNINDEX_THROUGH: Option<&'static str>;
    /// The `FROM … WHERE` of a free-text query, up to the bound match
    /// expression that [`AuditBackend::text_query`] builds from the words.
    const TEXT_FROM: &'static str;
    /// What follows the match expression.
    const TEXT_FROM_END: &'static str;
    /// A free-text query's order: newest arrival (`seq`) first, so the index
    /// can hand over hits in order and stop early.
    const TEXT_ORDER: &'static str;

    /// The match expression for `words` (see [`super::search_words`]).
    fn text_query(words: &[String]) -> String;

    /// Rows with `after < seq <= through`, ascending, at most `limit`, in one
    /// text arena: the verifier's lean read path.
    fn scan_page(
        read: &Pool<Self>,
        after: i64,
        through: i64,
        limit: i64,
    ) -> impl Future<Output = Result<RowPage>> + Send;
}

/// A query built at run time: its text, and its arguments in the order the
/// text binds them (sqlx's `QueryBuilder` cannot run in generic code; see
/// [`echo_sql::placeholders`]).
struct BuiltQuery<DB: Database> {
    sql: String,
    arguments: DB::Arguments,
}

impl<DB: Backend> BuiltQuery<DB> {
    fn new(sql: String) -> Self {
        Self {
            sql,
            arguments: DB::Arguments::default(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    fn push_bind<'t, T: Encode<'t, DB> + Type<DB>>(&mut self, value: T) -> &mut Self {
        // As sqlx's `QueryBuilder::push_bind`: a value that cannot encode is a bug.
        self.arguments.add(value).expect("Failed to add argument");
        self.sql.push_str(&DB::parameter(self.arguments.len()));
        self
    }

    fn into_parts(self) -> (String, DB::Arguments) {
        (self.sql, self.arguments)
    }
}

/// The audit chain in the database `DB` ([`super::SqliteAuditStore`],
/// [`super::PgAuditStore`]).
#[derive(Debug)]
pub struct SqlAuditStore<DB: Database> {
    pub(super) pools: Pools<DB>,
}

impl<DB: AuditBackend> SqlAuditStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    Vec<u8>: Column<DB>,
{
    /// One attempt at an append. Without `check_stored` it assumes no event
    /// was stored before (the common case: no look-up) and gives up, rolling
    /// back, if an insert hits a stored one; with it, stored events are
    /// looked up first and skipped.
    async fn append_once(&self, events: &[Event], check_stored: bool) -> Result<Option<Appended>> {
        let mut tx = self.pools.write.begin().await?;
        // Taking the head row's lock first serialises appenders, so neither
        // the look-up nor the chain can race another append.
        sqlx::query("UPDATE audit_head SET seq = seq WHERE one = 1")
            .execute(&mut *tx)
            .await?;
        let (before, head): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one = 1")
                .fetch_one(&mut *tx)
                .await?;
        // Repeats within the batch are skipped either way.
        let mut seen = HashSet::new();
        if check_stored {
            let mut by_service: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for event in events {
                by_service
                    .entry(&event.service)
                    .or_default()
                    .push(&event.id);
            }
            for (service, ids) in by_service {
                for chunk in ids.chunks(INSERT_CHUNK) {
                    let lookup = format!(
                        "SELECT id FROM audit_events WHERE service = {} AND id IN {}",
                        DB::parameter(1),
                        placeholders::<DB>(1, 1, chunk.len())
                    );
                    let mut query = sqlx::query_scalar(AssertSqlSafe(lookup)).bind(service);
                    for id in chunk {
                        query = query.bind(*id);
                    }
                    // Not prepared: PostgreSQL's generic plan for a long IN
                    // list scans the table; planned with the values, it uses
                    // the (service, id) index.
                    let stored: Vec<String> = query.persistent(false).fetch_all(&mut *tx).await?;
                    seen.extend(stored.into_iter().map(|id| (service.to_owned(), id)));
                }
            }
        }
        let mut hash = to_hash(head)?;
        let mut chained = Vec::with_capacity(events.len());
        for event in events {
            if seen.insert((event.service.clone(), event.id.clone())) {
                hash = link(&hash, event);
                chained.push((event, hash));
            }
        }
        for (offset, chunk) in chained.chunks(INSERT_CHUNK).enumerate() {
            let first = before + 1 + (offset * INSERT_CHUNK) as i64;
            let insert = format!(
                "INSERT INTO audit_events ({EVENT_COLUMNS}) VALUES {} ON CONFLICT (service, id) DO NOTHING",
                placeholders::<DB>(0, chunk.len(), EVENT_COLUMNS.split(',').count())
            );
            let mut query = sqlx::query(AssertSqlSafe(insert));
            for (i, (event, hash)) in chunk.iter().enumerate() {
                query = query
                    .bind(first + i as i64)
                    .bind(&event.id)
                    .bind(event.time)
                    .bind(&event.service)
                    .bind(event.level.as_str())
                    .bind(&event.action)
                    .bind(&event.actor)
                    .bind(&event.outcome)
                    .bind(&event.ip)
                    .bind(&event.user_agent)
                    .bind(&event.trace_id)
                    .bind(&event.message)
                    .bind(event.context_json())
                    .bind(hash.to_vec());
            }
            let inserted = query.execute(&mut *tx).await?.rows_affected();
            if inserted != chunk.len() as u64 {
                // A retried batch: the seqs and hashes assumed every event
                // new. Dropping the transaction rolls it back.
                return Ok(None);
            }
        }
        let stored = chained.len();
        let seq = before + stored as i64;
        if stored > 0 {
            if let Some(statement) = DB::INDEX_NEW {
                sqlx::query(AssertSqlSafe(statement))
                    .bind(before)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1")
                .bind(seq)
                .bind(hash.to_vec())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(Appended {
            stored,
            duplicates: events.len() - stored,
            head: Anchor {
                size: seq,
                head: hash,
            },
        }))
    }
}

#[async_trait]
impl<DB: AuditBackend> AuditStore for SqlAuditStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    Vec<u8>: Column<DB>,
{
    async fn append(&self, events: &[Event]) -> Result<Appended> {
        if let Some(appended) = self.append_once(events, false).await? {
            return Ok(appended);
        }
        self.append_once(events, true).await?.ok_or_else(|| {
            AuditStoreError::Corrupt("an insert conflicted with no stored event".into())
        })
    }

    async fn head(&self) -> Result<Anchor> {
        let (size, head): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one = 1")
                .fetch_one(&self.pools.read)
                .await?;
        Ok(Anchor {
            size,
            head: to_hash(head)?,
        })
    }

    async fn rows(&self, after: i64, limit: i64) -> Result<Vec<ChainedEvent>> {
        sqlx::query_as::<_, EventRow>(AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        )))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(ChainedEvent::try_from)
        .collect()
    }

    async fn query(&self, q: &EventQuery) -> Result<Vec<ChainedEvent>> {
        let text = !q.words.is_empty();
        let mut built = BuiltQuery::<DB>::new(format!("SELECT {EVENT_COLUMNS}"));
        if text {
            built
                .push(DB::TEXT_FROM)
                .push_bind(DB::text_query(&q.words))
                .push(DB::TEXT_FROM_END);
        } else {
            built.push(" FROM audit_events WHERE 1 = 1");
        }
        for (column, value) in [
            ("service", &q.service),
            ("action", &q.action),
            ("actor", &q.actor),
            ("level", &q.level),
            ("outcome", &q.outcome),
        ] {
            if let Some(value) = value {
                built
                    .push(&format!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(since) = q.since {
            built.push(" AND time >= ").push_bind(since);
        }
        if let Some(until) = q.until {
            built.push(" AND time < ").push_bind(until);
        }
        match (q.before, text) {
            (Some(before), true) => {
                built.push(" AND seq < ").push_bind(before.seq);
            }
            (Some(before), false) => {
                built
                    .push(" AND (time, seq) < (")
                    .push_bind(before.time)
                    .push(", ")
                    .push_bind(before.seq)
                    .push(")");
            }
            (None, _) => {}
        }
        if text {
            built.push(DB::TEXT_ORDER);
        } else {
            // Each filter's index ends in (time, seq), so this order is an
            // index walk that stops after `limit` rows.
            built.push(" ORDER BY time DESC, seq DESC");
        }
        built.push(" LIMIT ").push_bind(q.limit);
        let (sql, arguments) = built.into_parts();
        sqlx::query_as_with::<_, EventRow, _>(AssertSqlSafe(sql), arguments)
            .fetch_all(&self.pools.read)
            .await?
            .into_iter()
            .map(ChainedEvent::try_from)
            .collect()
    }

    async fn insert_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        note: &str,
        unless_since: Option<i64>,
    ) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        // The head row's lock (as appends take it) serialises replicas'
        // checkpoints: the second of two in one interval sees the first.
        sqlx::query("UPDATE audit_head SET seq = seq WHERE one = 1")
            .execute(&mut *tx)
            .await?;
        if let Some(since) = unless_since {
            let newest: Option<i64> =
                sqlx::query_scalar("SELECT time FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            if newest.is_some_and(|time| time >= since) {
                return Ok(false);
            }
        }
        let stored = sqlx::query(
            "INSERT INTO audit_checkpoints (size, head, time, note) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (size) DO NOTHING",
        )
        .bind(checkpoint.size)
        .bind(checkpoint.head.to_vec())
        .bind(checkpoint.time)
        .bind(note)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(stored)
    }

    async fn optimize(&self) -> Result<()> {
        sqlx::query(DB::OPTIMIZE).execute(&self.pools.write).await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<(i64, String)>> {
        Ok(
            sqlx::query_as("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                .fetch_optional(&self.pools.read)
                .await?,
        )
    }

    async fn checkpoint_notes(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT note FROM audit_checkpoints ORDER BY size")
                .fetch_all(&self.pools.read)
                .await?,
        )
    }

    async fn retained_start(&self) -> Result<Anchor> {
        let (size, head): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM audit_retained WHERE one = 1")
                .fetch_one(&self.pools.read)
                .await?;
        Ok(Anchor {
            size,
            head: to_hash(head)?,
        })
    }

    async fn first_seq_since(&self, time: i64, after: i64) -> Result<Option<i64>> {
        // Walks the chain from `after`: the rows to prune, then one.
        Ok(sqlx::query_scalar(
            "SELECT seq FROM audit_events WHERE seq > $1 AND time >= $2 ORDER BY seq LIMIT 1",
        )
        .bind(after)
        .bind(time)
        .fetch_optional(&self.pools.read)
        .await?)
    }

    async fn scan(&self, after: i64, through: i64, limit: i64) -> Result<RowPage> {
        DB::scan_page(&self.pools.read, after, through, limit).await
    }

    async fn row_hash(&self, seq: i64) -> Result<Option<Hash>> {
        let hash: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(&self.pools.read)
                .await?;
        hash.map(to_hash).transpose()
    }

    async fn set_retained_start(&self, start: &Anchor) -> Result<()> {
        sqlx::query("UPDATE audit_retained SET seq = $1, hash = $2 WHERE one = 1 AND seq < $1")
            .bind(start.size)
            .bind(start.head.to_vec())
            .execute(&self.pools.write)
            .await?;
        Ok(())
    }

    async fn delete_oldest(&self, through: i64, max_rows: i64) -> Result<u64> {
        let mut tx = self.pools.write.begin().await?;
        let upto: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(seq) FROM (SELECT seq FROM audit_events WHERE seq <= $1 ORDER BY seq LIMIT $2) oldest",
        )
        .bind(through)
        .bind(max_rows)
        .fetch_one(&mut *tx)
        .await?;
        let Some(upto) = upto else { return Ok(0) };
        if let Some(statement) = DB::UNINDEX_THROUGH {
            sqlx::query(AssertSqlSafe(statement))
                .bind(upto)
                .execute(&mut *tx)
                .await?;
        }
        let deleted = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::search_words;

    #[test]
    fn words_split_on_everything_but_letters_and_digits() {
        assert_eq!(
            search_words("auth.login.FAILURE user-42 é*"),
            ["auth", "login", "failure", "user", "42", "é*"]
        );
        assert_eq!(search_words("fail* *x **"), ["fail*", "x"]);
        assert!(search_words(" .-* ").is_empty());
    }
}
