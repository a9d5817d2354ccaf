-- Accounts people manage themselves: whether a user's address is verified,
-- the links sent by mail that verify an address, complete a sign-up or
-- accept an invitation, and what the account page shows of SSO sessions.
-- Times are Unix seconds.

-- Whether the user followed a verification link sent to their current
-- address; a change of address clears it.
ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;

-- Links sent by mail: only the SHA-256 hash of the token is kept. purpose is
-- verify_email | registration | invitation; email is the address the link
-- was sent to, so a link proves nothing once the user's address changed.
-- A link works once (used_at) and until expires_at; the purge deletes it
-- after that.
CREATE TABLE email_links (
    token_hash TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    email      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX email_links_expiry ON email_links (expires_at);

-- What the account page lists of a session: when it began, when it was last
-- used (updated at most once a minute), the browser and the address.
ALTER TABLE sso_sessions ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sso_sessions ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sso_sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE sso_sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';
CREATE INDEX sso_sessions_user ON sso_sessions (user_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id, client_id);
