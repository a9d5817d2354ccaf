-- Account security: user states, the login-failure counter behind the
-- progressive delay and lockout, TOTP credentials and recovery codes, and
-- the authentication methods (RFC 8176 `amr`) of SSO sessions and the codes
-- they issue. List-valued columns hold JSON arrays of strings. Times are
-- Unix seconds.

-- invited | active | suspended | deleted; existing users are active.
ALTER TABLE users ADD COLUMN state TEXT NOT NULL DEFAULT 'active';
-- Consecutive failed attempts (password or second factor) and when the
-- last was counted; 0 when none. Reset by a successful login or an unlock.
ALTER TABLE users ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN last_failed_at INTEGER NOT NULL DEFAULT 0;

ALTER TABLE sso_sessions ADD COLUMN amr TEXT NOT NULL DEFAULT '["pwd"]';
ALTER TABLE auth_codes ADD COLUMN amr TEXT NOT NULL DEFAULT '["pwd"]';

-- RFC 6238 TOTP: the secret sealed with a key derived from the master key;
-- unconfirmed (confirmed_at NULL) until the user proved the authenticator
-- works; last_step is the last time step accepted, so a code is never
-- accepted twice.
CREATE TABLE totp_credentials (
    user_id       TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    sealed_secret BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    confirmed_at  INTEGER,
    last_step     INTEGER NOT NULL DEFAULT 0
);

-- One-time recovery codes, stored as SHA-256 hashes.
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at   INTEGER,
    PRIMARY KEY (user_id, code_hash)
);
