-- Identity: users, clients, signing keys, authorization codes, SSO sessions.
-- List-valued columns hold JSON arrays of strings. Times are Unix seconds.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL
);

CREATE TABLE clients (
    id                        TEXT PRIMARY KEY,
    secret_hash               TEXT,
    redirect_uris             TEXT NOT NULL DEFAULT '[]',
    grant_types               TEXT NOT NULL DEFAULT '[]',
    audiences                 TEXT NOT NULL DEFAULT '[]',
    scopes                    TEXT NOT NULL DEFAULT '[]',
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]',
    allow_no_pkce             BOOLEAN NOT NULL DEFAULT FALSE,
    created_at                INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    sealed_private BLOB NOT NULL,
    public_jwk     TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE auth_codes (
    code_hash      TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    scope          TEXT NOT NULL,
    nonce          TEXT,
    code_challenge TEXT,
    audience       TEXT,
    auth_time      INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER
);
CREATE INDEX auth_codes_expires ON auth_codes (expires_at);

CREATE TABLE sso_sessions (
    id_hash    TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    auth_time  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sso_sessions_expires ON sso_sessions (expires_at);
