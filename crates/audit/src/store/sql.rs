//! The SQL both backends run, instantiated per backend by
//! [`sql_audit_store!`].

use crate::chain::{ChainedEvent, Hash};
use crate::event::{Event, Level};

use super::{AuditStoreError, Result};

pub(crate) const EVENT_COLUMNS: &str = "seq, id, time, service, level, action, actor, outcome, ip, user_agent, trace_id, message, context, hash";

/// Positions of the text columns in [`EVENT_COLUMNS`] (all but `seq`,
/// `time` and `hash`), in the order [`super::RowPage`] keeps them.
pub(crate) const TEXT_COLUMNS: [usize; 11] = [1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

pub(crate) fn to_hash(bytes: Vec<u8>) -> Result<Hash> {
    bytes
        .try_into()
        .map_err(|_| AuditStoreError::Corrupt("hash is not 32 bytes".into()))
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
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
pub(crate) const INSERT_CHUNK: usize = 500;

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

/// Implements [`super::AuditStore`] for `$store` (with `read` and `write`
/// pools and its own `scan_page`) over the sqlx database `$db`, in a module
/// that imports `EVENT_COLUMNS`. The backends differ only in `scan_page` and
/// in what the arguments name:
///
/// - `optimize`: the statement that refreshes planner statistics;
/// - `index_new`: run after an append with `$1` = the seq before the batch,
///   to index the new rows for free text (`None` where an index expression
///   does it);
/// - `unindex_through`: run as pruning deletes rows with seq ≤ `$1`;
/// - `text_from`, `text_from_end`: the `FROM … WHERE` of a free-text query,
///   around the bound match expression `text_query` builds from the words;
/// - `text_order`: a free-text query's order, newest arrival first (by
///   `seq`), so the index can hand over hits in order and stop early.
macro_rules! sql_audit_store {
    (
        $store:ty, $db:ty,
        optimize: $optimize:literal,
        index_new: $index_new:expr,
        unindex_through: $unindex_through:expr,
        text_from: $text_from:literal,
        text_from_end: $text_from_end:literal,
        text_order: $text_order:literal,
        text_query: $text_query:expr $(,)?
    ) => {
        use $crate::chain::{link, Anchor, ChainedEvent};
        use $crate::checkpoint::Checkpoint;
        use $crate::event::Event;
        use $crate::store::sql::{to_hash, EventRow, INSERT_CHUNK};
        use $crate::store::{Appended, AuditStore, EventQuery};

        impl $store {
            /// One attempt at an append. Without `check_stored` it assumes no
            /// event was stored before (the common case: no look-up) and
            /// gives up, rolling back, if an insert hits a stored one;
            /// with it, stored events are looked up first and skipped.
            async fn append_once(&self, events: &[Event], check_stored: bool) -> $crate::store::Result<Option<Appended>> {
                let mut tx = self.write.begin().await?;
                // Taking the head row's lock first serialises appenders, so
                // neither the look-up nor the chain can race another append.
                sqlx::query("UPDATE audit_head SET seq = seq WHERE one = 1").execute(&mut *tx).await?;
                let (before, head): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one = 1").fetch_one(&mut *tx).await?;
                // Repeats within the batch are skipped either way.
                let mut seen = std::collections::HashSet::new();
                if check_stored {
                    let mut by_service: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
                    for event in events {
                        by_service.entry(&event.service).or_default().push(&event.id);
                    }
                    for (service, ids) in by_service {
                        for chunk in ids.chunks(INSERT_CHUNK) {
                            let mut sql = sqlx::QueryBuilder::<$db>::new("SELECT id FROM audit_events WHERE service = ");
                            sql.push_bind(service).push(" AND id IN (");
                            let mut list = sql.separated(", ");
                            for id in chunk {
                                list.push_bind(*id);
                            }
                            sql.push(")");
                            // Not prepared: PostgreSQL's generic plan for a
                            // long IN list scans the table; planned with the
                            // values, it uses the (service, id) index.
                            let stored: Vec<String> =
                                sql.build_query_scalar().persistent(false).fetch_all(&mut *tx).await?;
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
                    let mut sql = sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO audit_events ({EVENT_COLUMNS}) "));
                    sql.push_values(chunk.iter().enumerate(), |mut row, (i, (event, hash))| {
                        row.push_bind(first + i as i64)
                            .push_bind(&event.id)
                            .push_bind(event.time)
                            .push_bind(&event.service)
                            .push_bind(event.level.as_str())
                            .push_bind(&event.action)
                            .push_bind(&event.actor)
                            .push_bind(&event.outcome)
                            .push_bind(&event.ip)
                            .push_bind(&event.user_agent)
                            .push_bind(&event.trace_id)
                            .push_bind(&event.message)
                            .push_bind(event.context_json())
                            .push_bind(hash.to_vec());
                    });
                    sql.push(" ON CONFLICT (service, id) DO NOTHING");
                    let inserted = sql.build().execute(&mut *tx).await?.rows_affected();
                    if inserted != chunk.len() as u64 {
                        // A retried batch: the seqs and hashes assumed every
                        // event new. Dropping the transaction rolls it back.
                        return Ok(None);
                    }
                }
                let stored = chained.len();
                let seq = before + stored as i64;
                if stored > 0 {
                    let index_new: Option<&str> = $index_new;
                    if let Some(statement) = index_new {
                        sqlx::query(statement).bind(before).execute(&mut *tx).await?;
                    }
                    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1")
                        .bind(seq)
                        .bind(hash.to_vec())
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Some(Appended { stored, duplicates: events.len() - stored, head: Anchor { size: seq, head: hash } }))
            }
        }

        #[async_trait::async_trait]
        impl AuditStore for $store {
            async fn append(&self, events: &[Event]) -> $crate::store::Result<Appended> {
                if let Some(appended) = self.append_once(events, false).await? {
                    return Ok(appended);
                }
                self.append_once(events, true).await?.ok_or_else(|| {
                    $crate::store::AuditStoreError::Corrupt("an insert conflicted with no stored event".into())
                })
            }

            async fn head(&self) -> $crate::store::Result<Anchor> {
                let (size, head): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one = 1").fetch_one(&self.read).await?;
                Ok(Anchor { size, head: to_hash(head)? })
            }

            async fn rows(&self, after: i64, limit: i64) -> $crate::store::Result<Vec<ChainedEvent>> {
                sqlx::query_as::<_, EventRow>(&format!(
                    "SELECT {EVENT_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2"
                ))
                .bind(after)
                .bind(limit)
                .fetch_all(&self.read)
                .await?
                .into_iter()
                .map(ChainedEvent::try_from)
                .collect()
            }

            async fn query(&self, q: &EventQuery) -> $crate::store::Result<Vec<ChainedEvent>> {
                let text = !q.words.is_empty();
                let mut sql = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS}"));
                if text {
                    let text_query: fn(&[String]) -> String = $text_query;
                    sql.push($text_from).push_bind(text_query(&q.words)).push($text_from_end);
                } else {
                    sql.push(" FROM audit_events WHERE 1 = 1");
                }
                for (column, value) in [
                    ("service", &q.service),
                    ("action", &q.action),
                    ("actor", &q.actor),
                    ("level", &q.level),
                    ("outcome", &q.outcome),
                ] {
                    if let Some(value) = value {
                        sql.push(format!(" AND {column} = ")).push_bind(value.clone());
                    }
                }
                if let Some(since) = q.since {
                    sql.push(" AND time >= ").push_bind(since);
                }
                if let Some(until) = q.until {
                    sql.push(" AND time < ").push_bind(until);
                }
                match (q.before, text) {
                    (Some(before), true) => {
                        sql.push(" AND seq < ").push_bind(before.seq);
                    }
                    (Some(before), false) => {
                        sql.push(" AND (time, seq) < (").push_bind(before.time).push(", ").push_bind(before.seq).push(")");
                    }
                    (None, _) => {}
                }
                if text {
                    sql.push($text_order);
                } else {
                    // Each filter's index ends in (time, seq), so this order
                    // is an index walk that stops after `limit` rows.
                    sql.push(" ORDER BY time DESC, seq DESC");
                }
                sql.push(" LIMIT ").push_bind(q.limit);
                sql.build_query_as::<EventRow>()
                    .fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(ChainedEvent::try_from)
                    .collect()
            }

            async fn insert_checkpoint(&self, checkpoint: &Checkpoint, note: &str) -> $crate::store::Result<()> {
                sqlx::query(
                    "INSERT INTO audit_checkpoints (size, head, time, note) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (size) DO NOTHING",
                )
                .bind(checkpoint.size)
                .bind(checkpoint.head.to_vec())
                .bind(checkpoint.time)
                .bind(note)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn optimize(&self) -> $crate::store::Result<()> {
                sqlx::query($optimize).execute(&self.write).await?;
                Ok(())
            }

            async fn latest_checkpoint(&self) -> $crate::store::Result<Option<(i64, String)>> {
                Ok(sqlx::query_as("SELECT size, note FROM audit_checkpoints ORDER BY size DESC LIMIT 1")
                    .fetch_optional(&self.read)
                    .await?)
            }

            async fn checkpoint_notes(&self) -> $crate::store::Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT note FROM audit_checkpoints ORDER BY size")
                    .fetch_all(&self.read)
                    .await?)
            }

            async fn retained_start(&self) -> $crate::store::Result<Anchor> {
                let (size, head): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_retained WHERE one = 1").fetch_one(&self.read).await?;
                Ok(Anchor { size, head: to_hash(head)? })
            }

            async fn first_seq_since(&self, time: i64, after: i64) -> $crate::store::Result<Option<i64>> {
                // Walks the chain from `after`: the rows to prune, then one.
                Ok(sqlx::query_scalar(
                    "SELECT seq FROM audit_events WHERE seq > $1 AND time >= $2 ORDER BY seq LIMIT 1",
                )
                .bind(after)
                .bind(time)
                .fetch_optional(&self.read)
                .await?)
            }

            async fn scan(&self, after: i64, through: i64, limit: i64) -> $crate::store::Result<$crate::store::RowPage> {
                self.scan_page(after, through, limit).await
            }

            async fn row_hash(&self, seq: i64) -> $crate::store::Result<Option<$crate::chain::Hash>> {
                let hash: Option<Vec<u8>> = sqlx::query_scalar("SELECT hash FROM audit_events WHERE seq = $1")
                    .bind(seq)
                    .fetch_optional(&self.read)
                    .await?;
                hash.map(to_hash).transpose()
            }

            async fn set_retained_start(&self, start: &Anchor) -> $crate::store::Result<()> {
                sqlx::query("UPDATE audit_retained SET seq = $1, hash = $2 WHERE one = 1 AND seq < $1")
                    .bind(start.size)
                    .bind(start.head.to_vec())
                    .execute(&self.write)
                    .await?;
                Ok(())
            }

            async fn delete_oldest(&self, through: i64, max_rows: i64) -> $crate::store::Result<u64> {
                let mut tx = self.write.begin().await?;
                let upto: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(seq) FROM (SELECT seq FROM audit_events WHERE seq <= $1 ORDER BY seq LIMIT $2) oldest",
                )
                .bind(through)
                .bind(max_rows)
                .fetch_one(&mut *tx)
                .await?;
                let Some(upto) = upto else { return Ok(0) };
                let unindex_through: Option<&str> = $unindex_through;
                if let Some(statement) = unindex_through {
                    sqlx::query(statement).bind(upto).execute(&mut *tx).await?;
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
    };
}

pub(crate) use sql_audit_store;

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
