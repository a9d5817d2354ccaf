-- Password-reset links: only the SHA-256 hash of the token is kept, never
-- the token. A link works once (used_at) and until expires_at (Unix
-- seconds); the purge deletes it after that.
CREATE TABLE password_resets (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE INDEX password_resets_expiry ON password_resets (expires_at);

CREATE INDEX users_email ON users (lower(email));
