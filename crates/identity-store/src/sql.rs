//! The SQL both backends run: [`SqlStore`], generic over the backend,
//! implements every repository trait (keys in `keys.rs`, accounts in
//! `accounts.rs`).
//!
//! The statements are plain SQL that SQLite and PostgreSQL both accept
//! (`$n` parameters, `RETURNING`), so each repository is written once. The
//! store runs them through two pools, `read` and `write` (SQLite serialises
//! writers on one connection; PostgreSQL uses one pool for both).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use echo_sql::{Backend, Column, Pools, RowsAffected as _, placeholders};
use sqlx::{AssertSqlSafe, ColumnIndex, Database, Encode, Executor, Pool, Transaction, Type};

use crate::batcher::Batcher;
use crate::{
    AuthCode, Client, ClientStore, CodeStore, CodeUse, HealthStore, PurgeStore, Purged,
    RefreshToken, RefreshTokenStore, Result, RevocationStore, SessionStore, SsoSession, StoreError,
    User, UserStore,
};

pub(crate) fn to_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

fn from_json(column: &str, text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A unique-key violation becomes [`StoreError::Conflict`] naming `what`.
pub(crate) fn conflict(what: &str) -> impl FnOnce(sqlx::Error) -> StoreError + '_ {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_owned())
        }
        _ => StoreError::Database(e),
    }
}

#[derive(sqlx::FromRow)]
struct RefreshGrantRow {
    #[sqlx(flatten)]
    token: RefreshRow,
    #[sqlx(flatten)]
    user: UserRow,
}

impl TryFrom<RefreshGrantRow> for (RefreshToken, User) {
    type Error = StoreError;
    fn try_from(r: RefreshGrantRow) -> Result<Self> {
        Ok((r.token.into(), r.user.try_into()?))
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    password_hash: String,
    roles: String,
    created_at: i64,
    state: String,
    email_verified: bool,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;
    fn try_from(r: UserRow) -> Result<Self> {
        Ok(User {
            roles: from_json("users.roles", &r.roles)?,
            id: r.id,
            username: r.username,
            email: r.email,
            password_hash: r.password_hash,
            created_at: r.created_at,
            state: r.state,
            email_verified: r.email_verified,
        })
    }
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    id: String,
    secret_hash: Option<String>,
    redirect_uris: String,
    grant_types: String,
    audiences: String,
    scopes: String,
    post_logout_redirect_uris: String,
    allow_no_pkce: bool,
    created_at: i64,
    jwks: Option<String>,
    previous_secret_hash: Option<String>,
    previous_secret_expires_at: Option<i64>,
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;
    fn try_from(r: ClientRow) -> Result<Self> {
        Ok(Client {
            redirect_uris: from_json("clients.redirect_uris", &r.redirect_uris)?,
            grant_types: from_json("clients.grant_types", &r.grant_types)?,
            audiences: from_json("clients.audiences", &r.audiences)?,
            scopes: from_json("clients.scopes", &r.scopes)?,
            post_logout_redirect_uris: from_json(
                "clients.post_logout_redirect_uris",
                &r.post_logout_redirect_uris,
            )?,
            id: r.id,
            secret_hash: r.secret_hash,
            allow_no_pkce: r.allow_no_pkce,
            created_at: r.created_at,
            jwks: r.jwks,
            previous_secret_hash: r.previous_secret_hash,
            previous_secret_expires_at: r.previous_secret_expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CodeRow {
    code_hash: String,
    client_id: String,
    user_id: String,
    redirect_uri: String,
    scope: String,
    nonce: Option<String>,
    code_challenge: Option<String>,
    audience: Option<String>,
    auth_time: i64,
    expires_at: i64,
    amr: String,
}

impl TryFrom<CodeRow> for AuthCode {
    type Error = StoreError;
    fn try_from(r: CodeRow) -> Result<Self> {
        Ok(AuthCode {
            amr: from_json("auth_codes.amr", &r.amr)?,
            code_hash: r.code_hash,
            client_id: r.client_id,
            user_id: r.user_id,
            redirect_uri: r.redirect_uri,
            scope: r.scope,
            nonce: r.nonce,
            code_challenge: r.code_challenge,
            audience: r.audience,
            auth_time: r.auth_time,
            expires_at: r.expires_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id_hash: String,
    user_id: String,
    auth_time: i64,
    expires_at: i64,
    amr: String,
    created_at: i64,
    last_seen_at: i64,
    user_agent: String,
    address: String,
}

impl TryFrom<SessionRow> for SsoSession {
    type Error = StoreError;
    fn try_from(r: SessionRow) -> Result<Self> {
        Ok(SsoSession {
            amr: from_json("sso_sessions.amr", &r.amr)?,
            id_hash: r.id_hash,
            user_id: r.user_id,
            auth_time: r.auth_time,
            expires_at: r.expires_at,
            created_at: r.created_at,
            last_seen_at: r.last_seen_at,
            user_agent: r.user_agent,
            address: r.address,
        })
    }
}

/// The columns of [`SessionRow`].
pub(crate) const SESSION_COLUMNS: &str =
    "id_hash, user_id, auth_time, expires_at, amr, created_at, last_seen_at, user_agent, address";

#[derive(sqlx::FromRow)]
struct RefreshRow {
    token_hash: String,
    family_id: String,
    client_id: String,
    user_id: String,
    scope: String,
    audience: Option<String>,
    auth_time: i64,
    issued_at: i64,
    expires_at: i64,
    family_expires_at: i64,
    access_jti: String,
    access_expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    successor: Option<Vec<u8>>,
}

impl From<RefreshRow> for RefreshToken {
    fn from(r: RefreshRow) -> Self {
        RefreshToken {
            token_hash: r.token_hash,
            family_id: r.family_id,
            client_id: r.client_id,
            user_id: r.user_id,
            scope: r.scope,
            audience: r.audience,
            auth_time: r.auth_time,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            family_expires_at: r.family_expires_at,
            access_jti: r.access_jti,
            access_expires_at: r.access_expires_at,
            used_at: r.used_at,
            revoked_at: r.revoked_at,
            successor: r.successor,
        }
    }
}

const USER_COLUMNS: &str =
    "id, username, email, password_hash, roles, created_at, state, email_verified";
const CLIENT_COLUMNS: &str = "id, secret_hash, redirect_uris, grant_types, audiences, scopes, \
     post_logout_redirect_uris, allow_no_pkce, created_at, jwks, previous_secret_hash, \
     previous_secret_expires_at";
const CODE_COLUMNS: &str = "code_hash, client_id, user_id, redirect_uri, scope, nonce, \
     code_challenge, audience, auth_time, expires_at, amr";
const REFRESH_COLUMNS: &str = "token_hash, family_id, client_id, user_id, scope, audience, \
     auth_time, issued_at, expires_at, family_expires_at, access_jti, access_expires_at, used_at, \
     revoked_at, successor";

/// Records the unexpired access tokens of family `$1` (at time `$2`) as revoked.
const REVOKE_FAMILY_ACCESS_TOKENS: &str = "INSERT INTO revoked_tokens (jti, expires_at) \
     SELECT access_jti, access_expires_at FROM refresh_tokens \
     WHERE family_id = $1 AND access_expires_at > $2 ON CONFLICT DO NOTHING";
/// Revokes the refresh tokens of family `$1` at time `$2`. They expire at
/// once too, so the next purge removes them.
const REVOKE_FAMILY: &str = "UPDATE refresh_tokens SET revoked_at = $2, expires_at = $2 \
     WHERE family_id = $1 AND revoked_at IS NULL";

/// Refresh-token rotations one transaction takes at most, and lookups one
/// query takes (a rotation binds 18 parameters; both backends allow
/// thousands).
const REFRESH_BATCH: usize = 64;

/// A refresh-token rotation waiting for its group commit.
struct Rotation {
    old_hash: String,
    now: i64,
    sealed_successor: Vec<u8>,
    successor: RefreshToken,
}

/// `columns` (a comma-separated list) each prefixed with `alias.`.
fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tables [`crate::PurgeStore::purge_expired`] trims, with their keys.
const PURGED_TABLES: [(&str, &str); 8] = [
    ("auth_codes", "code_hash"),
    ("refresh_tokens", "token_hash"),
    ("revoked_tokens", "jti"),
    ("client_assertions", "client_id, jti"),
    ("sso_sessions", "id_hash"),
    ("rate_limit_windows", "limit_key"),
    ("password_resets", "token_hash"),
    ("email_links", "token_hash"),
];

/// Identity's storage in the database `DB` ([`crate::SqliteStore`],
/// [`crate::PgStore`]).
#[derive(Debug)]
pub struct SqlStore<DB: Database> {
    pub(crate) pools: Pools<DB>,
    refresh_grants: Batcher<String, Option<(RefreshToken, User)>>,
    rotations: Batcher<Rotation, bool>,
}

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    Option<i64>: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<Vec<u8>>: Column<DB>,
{
    /// A store over `pools`, whose schema is up to date. A refresh goes
    /// through two batchers: concurrent lookups share one query
    /// ([`RefreshTokenStore::refresh_grant`]), concurrent rotations one
    /// transaction ([`RefreshTokenStore::rotate_refresh_token`]).
    pub(crate) fn new(pools: Pools<DB>) -> Self {
        let read = pools.read.clone();
        let write = pools.write.clone();
        Self {
            refresh_grants: Batcher::start(REFRESH_BATCH, move |hashes| {
                let read = read.clone();
                async move { Self::refresh_grant_batch(&read, hashes).await }
            }),
            rotations: Batcher::start(REFRESH_BATCH, move |batch| {
                let write = write.clone();
                async move { Self::rotate_batch(&write, batch).await }
            }),
            pools,
        }
    }

    /// Looks up a batch of tokens with their users in one query, answering
    /// in the order asked. A reader suffices: a rotation answers only after
    /// its commit.
    async fn refresh_grant_batch(
        read: &Pool<DB>,
        hashes: Vec<String>,
    ) -> Result<Vec<Option<(RefreshToken, User)>>> {
        let lookup = format!(
            "SELECT {}, {} FROM refresh_tokens r JOIN users u ON u.id = r.user_id \
             WHERE r.token_hash IN {}",
            qualified("r", REFRESH_COLUMNS),
            qualified("u", USER_COLUMNS),
            placeholders::<DB>(0, 1, hashes.len())
        );
        let mut query = sqlx::query_as::<_, RefreshGrantRow>(AssertSqlSafe(lookup));
        for hash in &hashes {
            query = query.bind(hash);
        }
        let mut found = HashMap::new();
        for row in query.fetch_all(read).await? {
            let (token, user) = <(RefreshToken, User)>::try_from(row)?;
            found.insert(token.token_hash.clone(), (token, user));
        }
        Ok(hashes.iter().map(|h| found.get(h).cloned()).collect())
    }

    /// Rotates a batch in one transaction: one `UPDATE` marks every
    /// presented token that is neither used nor revoked as spent (returning
    /// which ones it marked), one `INSERT` adds their successors. A token
    /// presented twice in one batch (two tabs at once) rotates once; its
    /// later copies lose, like a concurrent use.
    async fn rotate_batch(write: &Pool<DB>, batch: Vec<Rotation>) -> Result<Vec<bool>> {
        let mut seen = HashSet::new();
        let firsts: Vec<&Rotation> = batch
            .iter()
            .filter(|r| seen.insert(r.old_hash.as_str()))
            .collect();
        let mut tx = write.begin().await?;
        let update = format!(
            "UPDATE refresh_tokens SET used_at = v.column2, successor = v.column3 \
             FROM (VALUES {}) AS v \
             WHERE token_hash = v.column1 AND used_at IS NULL AND revoked_at IS NULL \
             RETURNING token_hash",
            placeholders::<DB>(0, firsts.len(), 3)
        );
        let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(update));
        for r in &firsts {
            query = query
                .bind(&r.old_hash)
                .bind(r.now)
                .bind(&r.sealed_successor);
        }
        let mut spent: HashSet<String> = query.fetch_all(&mut *tx).await?.into_iter().collect();
        let successors: Vec<&RefreshToken> = firsts
            .iter()
            .filter(|r| spent.contains(&r.old_hash))
            .map(|r| &r.successor)
            .collect();
        Self::insert_refresh_rows(&mut *tx, &successors).await?;
        tx.commit().await?;
        // `remove`: only a token's first copy in the batch rotated.
        Ok(batch.iter().map(|r| spent.remove(&r.old_hash)).collect())
    }

    /// Inserts refresh-token rows in one statement.
    async fn insert_refresh_rows<'e, E>(executor: E, rows: &[&RefreshToken]) -> Result<()>
    where
        E: Executor<'e, Database = DB>,
    {
        if rows.is_empty() {
            return Ok(());
        }
        let insert = format!(
            "INSERT INTO refresh_tokens ({REFRESH_COLUMNS}) VALUES {}",
            placeholders::<DB>(0, rows.len(), REFRESH_COLUMNS.split(',').count())
        );
        let mut query = sqlx::query(AssertSqlSafe(insert));
        for t in rows {
            query = query
                .bind(&t.token_hash)
                .bind(&t.family_id)
                .bind(&t.client_id)
                .bind(&t.user_id)
                .bind(&t.scope)
                .bind(&t.audience)
                .bind(t.auth_time)
                .bind(t.issued_at)
                .bind(t.expires_at)
                .bind(t.family_expires_at)
                .bind(&t.access_jti)
                .bind(t.access_expires_at)
                .bind(t.used_at)
                .bind(t.revoked_at)
                .bind(&t.successor);
        }
        query
            .execute(executor)
            .await
            .map_err(conflict("refresh token"))?;
        Ok(())
    }
}

impl<DB: Backend> SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
{
    /// Revokes a refresh-token family and its access tokens inside `tx`.
    async fn revoke_family_in(
        tx: &mut Transaction<'_, DB>,
        family_id: &str,
        now: i64,
    ) -> Result<u64> {
        sqlx::query(REVOKE_FAMILY_ACCESS_TOKENS)
            .bind(family_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        let revoked = sqlx::query(REVOKE_FAMILY)
            .bind(family_id)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        Ok(revoked.rows_affected())
    }
}

#[async_trait]
impl<DB: Backend> UserStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
{
    async fn insert_user(&self, u: &User) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        )))
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.password_hash)
        .bind(to_json(&u.roles))
        .bind(u.created_at)
        .bind(&u.state)
        .bind(u.email_verified)
        .execute(&self.pools.write)
        .await
        .map_err(conflict(&format!("user {}", u.username)))?;
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
        )))
        .bind(username)
        .fetch_optional(&self.pools.read)
        .await?
        .map(User::try_from)
        .transpose()
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1) \
             ORDER BY created_at, id LIMIT 1"
        )))
        .bind(email)
        .fetch_optional(&self.pools.read)
        .await?
        .map(User::try_from)
        .transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pools.read)
        .await?
        .map(User::try_from)
        .transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        )))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
    }

    async fn users_page(&self, search: Option<&str>, after: &str, limit: u32) -> Result<Vec<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE username > $1 \
             AND (lower(username) LIKE $2 ESCAPE '\\' \
                  OR lower(COALESCE(email, '')) LIKE $2 ESCAPE '\\') \
             ORDER BY username LIMIT $3"
        )))
        .bind(after)
        .bind(contains_pattern(search.unwrap_or("")))
        .bind(i64::from(limit))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
    }

    async fn invitations_page(&self, after: &str, limit: u32) -> Result<Vec<User>> {
        sqlx::query_as::<_, UserRow>(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users \
             WHERE username > $1 AND state = 'invited' AND password_hash = '' \
             ORDER BY username LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(User::try_from)
        .collect()
    }
}

/// A `LIKE … ESCAPE '\'` pattern matching text that contains `needle`,
/// lower-cased, with its wildcards taken literally.
fn contains_pattern(needle: &str) -> String {
    let mut pattern = String::from("%");
    for c in needle.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[async_trait]
impl<DB: Backend> ClientStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    Option<i64>: Column<DB>,
    bool: Column<DB>,
{
    async fn insert_client(&self, c: &Client) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO clients ({CLIENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        )))
        .bind(&c.id)
        .bind(&c.secret_hash)
        .bind(to_json(&c.redirect_uris))
        .bind(to_json(&c.grant_types))
        .bind(to_json(&c.audiences))
        .bind(to_json(&c.scopes))
        .bind(to_json(&c.post_logout_redirect_uris))
        .bind(c.allow_no_pkce)
        .bind(c.created_at)
        .bind(&c.jwks)
        .bind(&c.previous_secret_hash)
        .bind(c.previous_secret_expires_at)
        .execute(&self.pools.write)
        .await
        .map_err(conflict(&format!("client {}", c.id)))?;
        Ok(())
    }

    async fn client(&self, id: &str) -> Result<Option<Client>> {
        sqlx::query_as::<_, ClientRow>(AssertSqlSafe(format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pools.read)
        .await?
        .map(Client::try_from)
        .transpose()
    }

    async fn list_clients(&self) -> Result<Vec<Client>> {
        sqlx::query_as::<_, ClientRow>(AssertSqlSafe(format!(
            "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY id"
        )))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(Client::try_from)
        .collect()
    }

    async fn clients_page(&self, after: &str, limit: u32) -> Result<Vec<Client>> {
        sqlx::query_as::<_, ClientRow>(AssertSqlSafe(format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pools.read)
        .await?
        .into_iter()
        .map(Client::try_from)
        .collect()
    }

    async fn update_client(&self, c: &Client) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE clients SET redirect_uris = $2, grant_types = $3, audiences = $4, \
             scopes = $5, post_logout_redirect_uris = $6, allow_no_pkce = $7 WHERE id = $1",
        )
        .bind(&c.id)
        .bind(to_json(&c.redirect_uris))
        .bind(to_json(&c.grant_types))
        .bind(to_json(&c.audiences))
        .bind(to_json(&c.scopes))
        .bind(to_json(&c.post_logout_redirect_uris))
        .bind(c.allow_no_pkce)
        .execute(&self.pools.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_client(&self, id: &str, now: i64) -> Result<bool> {
        let mut tx = self.pools.write.begin().await?;
        for statement in [
            "INSERT INTO revoked_tokens (jti, expires_at) \
             SELECT access_jti, access_expires_at FROM refresh_tokens \
             WHERE client_id = $1 AND revoked_at IS NULL AND access_expires_at > $2 \
             ON CONFLICT DO NOTHING",
            "INSERT INTO revoked_tokens (jti, expires_at) \
             SELECT access_jti, access_expires_at FROM auth_codes \
             WHERE client_id = $1 AND access_jti IS NOT NULL AND access_expires_at > $2 \
             ON CONFLICT DO NOTHING",
            "UPDATE refresh_tokens SET revoked_at = $2, expires_at = $2 \
             WHERE client_id = $1 AND revoked_at IS NULL",
        ] {
            sqlx::query(statement)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM auth_codes WHERE client_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() != 1 {
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn rotate_client_secret(
        &self,
        id: &str,
        new_secret_hash: &str,
        previous_expires_at: i64,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE clients SET previous_secret_hash = secret_hash, \
             previous_secret_expires_at = $3, secret_hash = $2 \
             WHERE id = $1 AND secret_hash IS NOT NULL",
        )
        .bind(id)
        .bind(new_secret_hash)
        .bind(previous_expires_at)
        .execute(&self.pools.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn update_client_access(
        &self,
        id: &str,
        grant_types: &[String],
        audiences: &[String],
        scopes: &[String],
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE clients SET grant_types = $2, audiences = $3, scopes = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(to_json(grant_types))
        .bind(to_json(audiences))
        .bind(to_json(scopes))
        .execute(&self.pools.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl<DB: Backend> CodeStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
{
    async fn insert_code(&self, c: &AuthCode) -> Result<()> {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        )))
        .bind(&c.code_hash)
        .bind(&c.client_id)
        .bind(&c.user_id)
        .bind(&c.redirect_uri)
        .bind(&c.scope)
        .bind(&c.nonce)
        .bind(&c.code_challenge)
        .bind(&c.audience)
        .bind(c.auth_time)
        .bind(c.expires_at)
        .bind(to_json(&c.amr))
        .execute(&self.pools.write)
        .await
        .map_err(conflict("authorization code"))?;
        Ok(())
    }

    async fn consume_code(&self, code_hash: &str, now: i64) -> Result<CodeUse> {
        let consumed = sqlx::query_as::<_, CodeRow>(AssertSqlSafe(format!(
            "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL \
             RETURNING {CODE_COLUMNS}"
        )))
        .bind(now)
        .bind(code_hash)
        .fetch_optional(&self.pools.write)
        .await?;
        if let Some(row) = consumed {
            return Ok(CodeUse::Consumed(row.try_into()?));
        }
        let spent = sqlx::query_as::<_, CodeRow>(AssertSqlSafe(format!(
            "SELECT {CODE_COLUMNS} FROM auth_codes WHERE code_hash = $1"
        )))
        .bind(code_hash)
        .fetch_optional(&self.pools.write)
        .await?;
        Ok(match spent {
            Some(row) => CodeUse::Replayed(row.try_into()?),
            None => CodeUse::NotFound,
        })
    }

    async fn record_code_access_token(
        &self,
        code_hash: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE auth_codes SET access_jti = $2, access_expires_at = $3 WHERE code_hash = $1",
        )
        .bind(code_hash)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pools.write)
        .await?;
        Ok(())
    }

    async fn revoke_code_grant(&self, code_hash: &str, now: i64) -> Result<u64> {
        let mut tx = self.pools.write.begin().await?;
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) \
             SELECT access_jti, access_expires_at FROM auth_codes \
             WHERE code_hash = $1 AND access_jti IS NOT NULL AND access_expires_at > $2 \
             ON CONFLICT DO NOTHING",
        )
        .bind(code_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let revoked = Self::revoke_family_in(&mut tx, code_hash, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}

#[async_trait]
impl<DB: Backend> RefreshTokenStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
    String: Column<DB>,
    Option<String>: Column<DB>,
    i64: Column<DB>,
    bool: Column<DB>,
    Option<i64>: Column<DB>,
    Vec<u8>: Column<DB>,
    Option<Vec<u8>>: Column<DB>,
{
    async fn insert_refresh_token(&self, t: &RefreshToken) -> Result<()> {
        Self::insert_refresh_rows(&self.pools.write, &[t]).await
    }

    async fn refresh_token(&self, token_hash: &str) -> Result<Option<RefreshToken>> {
        // A reader suffices: a rotation answers only after its commit, so
        // whoever lost a race to it reads the winner's successor here.
        Ok(sqlx::query_as::<_, RefreshRow>(AssertSqlSafe(format!(
            "SELECT {REFRESH_COLUMNS} FROM refresh_tokens WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pools.read)
        .await?
        .map(RefreshToken::from))
    }

    async fn refresh_grant(&self, token_hash: &str) -> Result<Option<(RefreshToken, User)>> {
        self.refresh_grants.submit(token_hash.to_owned()).await
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        now: i64,
        sealed_successor: &[u8],
        successor: &RefreshToken,
    ) -> Result<bool> {
        self.rotations
            .submit(Rotation {
                old_hash: old_hash.to_owned(),
                now,
                sealed_successor: sealed_successor.to_vec(),
                successor: successor.clone(),
            })
            .await
    }

    async fn revoke_refresh_family(&self, family_id: &str, now: i64) -> Result<u64> {
        let mut tx = self.pools.write.begin().await?;
        let revoked = Self::revoke_family_in(&mut tx, family_id, now).await?;
        tx.commit().await?;
        Ok(revoked)
    }
}

#[async_trait]
impl<DB: Backend> RevocationStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    i64: Column<DB>,
{
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pools.write)
        .await?;
        Ok(())
    }

    async fn access_token_revoked(&self, jti: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_optional(&self.pools.read)
            .await?
            .is_some())
    }

    async fn record_client_assertion(
        &self,
        client_id: &str,
        jti: &str,
        expires_at: i64,
    ) -> Result<bool> {
        let recorded = sqlx::query(
            "INSERT INTO client_assertions (client_id, jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(client_id)
        .bind(jti)
        .bind(expires_at)
        .execute(&self.pools.write)
        .await?;
        Ok(recorded.rows_affected() == 1)
    }
}

#[async_trait]
impl<DB: Backend> HealthStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    async fn ping(&self) -> Result<()> {
        Ok(self.pools.ping().await?)
    }
}

#[async_trait]
impl<DB: Backend> PurgeStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    i64: Column<DB>,
{
    async fn purge_expired(&self, now: i64, batch: u32) -> Result<Purged> {
        let batch = i64::from(batch.max(1));
        let mut counts = [0u64; PURGED_TABLES.len()];
        for ((table, key), count) in PURGED_TABLES.iter().zip(&mut counts) {
            let statement = format!(
                "DELETE FROM {table} WHERE ({key}) IN \
                 (SELECT {key} FROM {table} WHERE expires_at <= $1 LIMIT $2)"
            );
            loop {
                let deleted = sqlx::query(AssertSqlSafe(statement.as_str()))
                    .bind(now)
                    .bind(batch)
                    .execute(&self.pools.write)
                    .await?
                    .rows_affected();
                *count += deleted;
                if deleted < batch as u64 {
                    break;
                }
            }
        }
        let [
            codes,
            refresh_tokens,
            revoked_tokens,
            client_assertions,
            sessions,
            rate_limit_windows,
            password_resets,
            email_links,
        ] = counts;
        Ok(Purged {
            codes,
            refresh_tokens,
            revoked_tokens,
            client_assertions,
            sessions,
            rate_limit_windows,
            password_resets,
            email_links,
        })
    }
}

#[async_trait]
impl<DB: Backend> SessionStore for SqlStore<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'a> &'a str: ColumnIndex<DB::Row> + Encode<'a, DB> + Type<DB>,
    String: Column<DB>,
    i64: Column<DB>,
{
    async fn insert_session(&self, s: &SsoSession) -> Result<()> {
        sqlx::query(
            "INSERT INTO sso_sessions (id_hash, user_id, auth_time, expires_at, amr, \
             created_at, last_seen_at, user_agent, address) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(s.auth_time)
        .bind(s.expires_at)
        .bind(to_json(&s.amr))
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(&s.user_agent)
        .bind(&s.address)
        .execute(&self.pools.write)
        .await
        .map_err(conflict("session"))?;
        Ok(())
    }

    async fn session(&self, id_hash: &str) -> Result<Option<SsoSession>> {
        sqlx::query_as::<_, SessionRow>(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sso_sessions WHERE id_hash = $1"
        )))
        .bind(id_hash)
        .fetch_optional(&self.pools.read)
        .await?
        .map(SsoSession::try_from)
        .transpose()
    }

    async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sso_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pools.write)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_prefixes_every_column() {
        assert_eq!(qualified("r", "a, b"), "r.a, r.b");
    }
}
