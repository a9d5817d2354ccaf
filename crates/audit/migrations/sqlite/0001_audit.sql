-- The audit chain. `seq` is the position in the chain (1-based, contiguous),
-- `hash` = SHA-256(previous row's hash ‖ canonical bytes of the event).
CREATE TABLE audit_events (
    seq        BIGINT PRIMARY KEY,
    id         TEXT NOT NULL,
    time       BIGINT NOT NULL,
    service    TEXT NOT NULL,
    level      TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT,
    outcome    TEXT,
    ip         TEXT,
    user_agent TEXT,
    trace_id   TEXT,
    message    TEXT NOT NULL,
    context    TEXT NOT NULL,
    hash       BLOB NOT NULL,
    UNIQUE (service, id)
);
CREATE INDEX audit_events_action ON audit_events (action, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, seq);
CREATE INDEX audit_events_time ON audit_events (time);

-- The chain's head, one row; appends lock it, so concurrent writers queue.
CREATE TABLE audit_head (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    seq  BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_head (one, seq, hash) VALUES (1, 0, X'0000000000000000000000000000000000000000000000000000000000000000');

-- Signed checkpoints handed out, in C2SP signed-note form.
CREATE TABLE audit_checkpoints (
    size BIGINT PRIMARY KEY,
    head BLOB NOT NULL,
    time BIGINT NOT NULL,
    note TEXT NOT NULL
);
