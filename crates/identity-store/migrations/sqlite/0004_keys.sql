-- Signing-key lifecycle (RFC 7517 keys published in the JWKS). A key's
-- state is derived from these times, never stored: published from
-- created_at, signing from activates_at until its successor of the same
-- algorithm and audience activates or it is retired, published until the
-- last token it signed has expired, unpublished at once when revoked.
-- Times are Unix seconds.

-- The one audience whose tokens the key signs; NULL for a general key.
ALTER TABLE signing_keys ADD COLUMN audience TEXT;
-- Existing keys have signed since they were created.
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER NOT NULL DEFAULT 0;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ADD COLUMN retired_at INTEGER;
ALTER TABLE signing_keys ADD COLUMN revoked_at INTEGER;
