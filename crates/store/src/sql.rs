//! The SQL both backends run, and the macro that implements the repository
//! traits for a backend's store type.
//!
//! The statements are plain SQL that SQLite and PostgreSQL both accept
//! (`$n` parameters, `RETURNING`), so each repository is written once and
//! instantiated per backend by [`sql_repositories!`]. A backend's store type
//! only has to provide two pools: `read` and `write` (SQLite serialises
//! writers on one connection; PostgreSQL uses one pool for both).

use crate::{AuthCode, Client, Result, SsoSession, StoreError, StoredKey, User};

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
pub(crate) struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    password_hash: String,
    roles: String,
    created_at: i64,
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
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    id: String,
    secret_hash: Option<String>,
    redirect_uris: String,
    grant_types: String,
    audiences: String,
    scopes: String,
    post_logout_redirect_uris: String,
    allow_no_pkce: bool,
    created_at: i64,
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
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    kid: String,
    alg: String,
    sealed_private: Vec<u8>,
    public_jwk: String,
    created_at: i64,
}

impl From<KeyRow> for StoredKey {
    fn from(r: KeyRow) -> Self {
        StoredKey {
            kid: r.kid,
            alg: r.alg,
            sealed_private: r.sealed_private,
            public_jwk: r.public_jwk,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CodeRow {
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
}

impl From<CodeRow> for AuthCode {
    fn from(r: CodeRow) -> Self {
        AuthCode {
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
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct SessionRow {
    id_hash: String,
    user_id: String,
    auth_time: i64,
    expires_at: i64,
}

impl From<SessionRow> for SsoSession {
    fn from(r: SessionRow) -> Self {
        SsoSession {
            id_hash: r.id_hash,
            user_id: r.user_id,
            auth_time: r.auth_time,
            expires_at: r.expires_at,
        }
    }
}

pub(crate) const USER_COLUMNS: &str = "id, username, email, password_hash, roles, created_at";
pub(crate) const CLIENT_COLUMNS: &str = "id, secret_hash, redirect_uris, grant_types, audiences, scopes, \
     post_logout_redirect_uris, allow_no_pkce, created_at";
pub(crate) const CODE_COLUMNS: &str = "code_hash, client_id, user_id, redirect_uri, scope, nonce, \
     code_challenge, audience, auth_time, expires_at";

/// Implements every repository trait for `$store`, a type with `read` and
/// `write` pools of one sqlx database.
macro_rules! sql_repositories {
    ($store:ty) => {
        use $crate::sql::{
            conflict, to_json, ClientRow, CodeRow, KeyRow, SessionRow, UserRow, CLIENT_COLUMNS,
            CODE_COLUMNS, USER_COLUMNS,
        };
        use $crate::{
            AuthCode, Client, ClientStore, CodeStore, CodeUse, KeyStore, SessionStore, SsoSession,
            StoredKey, User, UserStore,
        };

        #[async_trait::async_trait]
        impl UserStore for $store {
            async fn insert_user(&self, u: &User) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO users (id, username, email, password_hash, roles, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&u.id)
                .bind(&u.username)
                .bind(&u.email)
                .bind(&u.password_hash)
                .bind(to_json(&u.roles))
                .bind(u.created_at)
                .execute(&self.write)
                .await
                .map_err(conflict(&format!("user {}", u.username)))?;
                Ok(())
            }

            async fn user_by_username(&self, username: &str) -> $crate::Result<Option<User>> {
                sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1"))
                    .bind(username)
                    .fetch_optional(&self.read)
                    .await?
                    .map(User::try_from)
                    .transpose()
            }

            async fn user_by_id(&self, id: &str) -> $crate::Result<Option<User>> {
                sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?
                    .map(User::try_from)
                    .transpose()
            }

            async fn list_users(&self) -> $crate::Result<Vec<User>> {
                sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY username"))
                    .fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(User::try_from)
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl ClientStore for $store {
            async fn insert_client(&self, c: &Client) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO clients (id, secret_hash, redirect_uris, grant_types, audiences, scopes, \
                     post_logout_redirect_uris, allow_no_pkce, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&c.id)
                .bind(&c.secret_hash)
                .bind(to_json(&c.redirect_uris))
                .bind(to_json(&c.grant_types))
                .bind(to_json(&c.audiences))
                .bind(to_json(&c.scopes))
                .bind(to_json(&c.post_logout_redirect_uris))
                .bind(c.allow_no_pkce)
                .bind(c.created_at)
                .execute(&self.write)
                .await
                .map_err(conflict(&format!("client {}", c.id)))?;
                Ok(())
            }

            async fn client(&self, id: &str) -> $crate::Result<Option<Client>> {
                sqlx::query_as::<_, ClientRow>(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?
                    .map(Client::try_from)
                    .transpose()
            }

            async fn list_clients(&self) -> $crate::Result<Vec<Client>> {
                sqlx::query_as::<_, ClientRow>(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY id"))
                    .fetch_all(&self.read)
                    .await?
                    .into_iter()
                    .map(Client::try_from)
                    .collect()
            }
        }

        #[async_trait::async_trait]
        impl KeyStore for $store {
            async fn insert_key(&self, k: &StoredKey) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, sealed_private, public_jwk, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.sealed_private)
                .bind(&k.public_jwk)
                .bind(k.created_at)
                .execute(&self.write)
                .await
                .map_err(conflict(&format!("key {}", k.kid)))?;
                Ok(())
            }

            async fn keys(&self) -> $crate::Result<Vec<StoredKey>> {
                Ok(sqlx::query_as::<_, KeyRow>(
                    "SELECT kid, alg, sealed_private, public_jwk, created_at FROM signing_keys \
                     ORDER BY created_at, kid",
                )
                .fetch_all(&self.read)
                .await?
                .into_iter()
                .map(StoredKey::from)
                .collect())
            }
        }

        #[async_trait::async_trait]
        impl CodeStore for $store {
            async fn insert_code(&self, c: &AuthCode) -> $crate::Result<()> {
                sqlx::query(&format!(
                    "INSERT INTO auth_codes ({CODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ))
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
                .execute(&self.write)
                .await
                .map_err(conflict("authorization code"))?;
                Ok(())
            }

            async fn consume_code(&self, code_hash: &str, now: i64) -> $crate::Result<CodeUse> {
                let consumed = sqlx::query_as::<_, CodeRow>(&format!(
                    "UPDATE auth_codes SET used_at = $1 WHERE code_hash = $2 AND used_at IS NULL \
                     RETURNING {CODE_COLUMNS}"
                ))
                .bind(now)
                .bind(code_hash)
                .fetch_optional(&self.write)
                .await?;
                if let Some(row) = consumed {
                    return Ok(CodeUse::Consumed(row.into()));
                }
                let spent = sqlx::query_as::<_, CodeRow>(&format!(
                    "SELECT {CODE_COLUMNS} FROM auth_codes WHERE code_hash = $1"
                ))
                .bind(code_hash)
                .fetch_optional(&self.write)
                .await?;
                Ok(spent.map_or(CodeUse::NotFound, |row| CodeUse::Replayed(row.into())))
            }
        }

        #[async_trait::async_trait]
        impl SessionStore for $store {
            async fn insert_session(&self, s: &SsoSession) -> $crate::Result<()> {
                sqlx::query(
                    "INSERT INTO sso_sessions (id_hash, user_id, auth_time, expires_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&s.id_hash)
                .bind(&s.user_id)
                .bind(s.auth_time)
                .bind(s.expires_at)
                .execute(&self.write)
                .await
                .map_err(conflict("session"))?;
                Ok(())
            }

            async fn session(&self, id_hash: &str) -> $crate::Result<Option<SsoSession>> {
                Ok(sqlx::query_as::<_, SessionRow>(
                    "SELECT id_hash, user_id, auth_time, expires_at FROM sso_sessions WHERE id_hash = $1",
                )
                .bind(id_hash)
                .fetch_optional(&self.read)
                .await?
                .map(SsoSession::from))
            }

            async fn delete_session(&self, id_hash: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM sso_sessions WHERE id_hash = $1")
                    .bind(id_hash)
                    .execute(&self.write)
                    .await?;
                Ok(())
            }
        }
    };
}

pub(crate) use sql_repositories;
