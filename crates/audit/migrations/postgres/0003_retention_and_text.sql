-- Retention: the retained chain starts after the last pruned row, whose seq
-- and hash are kept here (a signed checkpoint at that size anchors them).
CREATE TABLE audit_retained (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
INSERT INTO audit_retained (one, seq, hash) VALUES (1, 0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Free text over message, action and actor. Everything but letters and
-- digits becomes a space, so words split as SQLite's FTS5 splits them (the
-- default parser would keep `auth.login.failure` whole, as a host name).
CREATE FUNCTION audit_text(message TEXT, action TEXT, actor TEXT) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN to_tsvector('simple', regexp_replace(
        message || ' ' || action || ' ' || coalesce(actor, ''), '[^[:alnum:]]+', ' ', 'g'));
CREATE INDEX audit_events_text ON audit_events USING GIN (audit_text(message, action, actor));
