-- Browser logins in progress: one row per /login, consumed by /callback.
CREATE TABLE login_attempts (
    state_hash     TEXT PRIMARY KEY,   -- SHA-256 of `state`
    browser_hash   TEXT NOT NULL,      -- SHA-256 of the browser's binding cookie
    nonce          TEXT NOT NULL,
    pkce_verifier  TEXT NOT NULL,
    return_to      TEXT NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);

-- Server-side sessions; the browser holds only the id, stored hashed.
CREATE TABLE sessions (
    id_hash            TEXT PRIMARY KEY,   -- SHA-256 of the cookie value
    subject            TEXT NOT NULL,
    name               TEXT,
    roles              TEXT NOT NULL,      -- JSON array
    created_at         INTEGER NOT NULL,
    last_seen_at       INTEGER NOT NULL,
    expires_at         INTEGER NOT NULL,   -- absolute timeout
    access_expires_at  INTEGER NOT NULL,
    tokens             BLOB NOT NULL       -- AES-256-GCM sealed, bound to id_hash
);
CREATE INDEX sessions_expires ON sessions (expires_at);
CREATE INDEX sessions_last_seen ON sessions (last_seen_at);
