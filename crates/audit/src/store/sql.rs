//! The SQL both backends run, instantiated per backend by
//! [`sql_audit_store!`].

use crate::chain::{ChainedEvent, Hash};
use crate::event::{Event, Level};

use super::{AuditStoreError, Result};

pub(crate) const EVENT_COLUMNS: &str = "seq, id, time, service, level, action, actor, outcome, ip, user_agent, trace_id, message, context, hash";

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

/// Implements [`super::AuditStore`] for `$store` (with `read` and `write`
/// pools) over the sqlx database `$db`; `$optimize` is the backend's
/// statement that refreshes planner statistics.
macro_rules! sql_audit_store {
    ($store:ty, $db:ty, $optimize:literal) => {
        use $crate::chain::{link, Anchor, ChainedEvent};
        use $crate::checkpoint::Checkpoint;
        use $crate::event::Event;
        use $crate::store::sql::{to_hash, EventRow, EVENT_COLUMNS};
        use $crate::store::{Appended, AuditStore, EventQuery};

        #[async_trait::async_trait]
        impl AuditStore for $store {
            async fn append(&self, events: &[Event]) -> $crate::store::Result<Appended> {
                let mut tx = self.write.begin().await?;
                // Taking the head row's lock first serialises appenders.
                sqlx::query("UPDATE audit_head SET seq = seq WHERE one = 1").execute(&mut *tx).await?;
                let (mut seq, head): (i64, Vec<u8>) =
                    sqlx::query_as("SELECT seq, hash FROM audit_head WHERE one = 1").fetch_one(&mut *tx).await?;
                let mut hash = to_hash(head)?;
                let mut stored = 0;
                for event in events {
                    let next = link(&hash, event);
                    let context = serde_json::to_string(&event.context).unwrap_or_else(|_| "null".into());
                    let inserted = sqlx::query(&format!(
                        "INSERT INTO audit_events ({EVENT_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                         ON CONFLICT (service, id) DO NOTHING"
                    ))
                    .bind(seq + 1)
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
                    .bind(context)
                    .bind(next.to_vec())
                    .execute(&mut *tx)
                    .await?;
                    if inserted.rows_affected() == 1 {
                        seq += 1;
                        hash = next;
                        stored += 1;
                    }
                }
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE one = 1")
                    .bind(seq)
                    .bind(hash.to_vec())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Appended { stored, duplicates: events.len() - stored, head: Anchor { size: seq, head: hash } })
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
                let mut sql = sqlx::QueryBuilder::<$db>::new(format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE 1 = 1"));
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
                if let Some(text) = &q.text {
                    let pattern = format!("%{}%", text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
                    sql.push(" AND (message LIKE ").push_bind(pattern.clone()).push(" ESCAPE '\\'");
                    sql.push(" OR action LIKE ").push_bind(pattern.clone()).push(" ESCAPE '\\'");
                    sql.push(" OR actor LIKE ").push_bind(pattern).push(" ESCAPE '\\')");
                }
                if let Some(before) = q.before {
                    sql.push(" AND seq < ").push_bind(before);
                }
                sql.push(" ORDER BY seq DESC LIMIT ").push_bind(q.limit);
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
        }
    };
}

pub(crate) use sql_audit_store;
