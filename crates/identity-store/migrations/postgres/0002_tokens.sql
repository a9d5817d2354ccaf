-- Token lifecycle: refresh tokens and their families, revoked access tokens,
-- used client-assertion ids, client-secret rotation and private_key_jwt
-- clients, and the access token each authorization code produced (so a
-- replayed code can revoke it). Times are Unix seconds.

ALTER TABLE clients ADD COLUMN jwks TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_expires_at BIGINT;

ALTER TABLE auth_codes ADD COLUMN access_jti TEXT;
ALTER TABLE auth_codes ADD COLUMN access_expires_at BIGINT;

CREATE TABLE refresh_tokens (
    token_hash        TEXT PRIMARY KEY,
    family_id         TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    user_id           TEXT NOT NULL,
    scope             TEXT NOT NULL,
    audience          TEXT,
    auth_time         BIGINT NOT NULL,
    issued_at         BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    family_expires_at BIGINT NOT NULL,
    access_jti        TEXT NOT NULL,
    access_expires_at BIGINT NOT NULL,
    used_at           BIGINT,
    revoked_at        BIGINT,
    successor         BYTEA
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);

CREATE TABLE client_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertions_expires ON client_assertions (expires_at);
