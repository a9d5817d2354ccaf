-- 1. `seq` becomes the rowid (INTEGER PRIMARY KEY; BIGINT PRIMARY KEY was a
--    separate unique index beside SQLite's hidden rowid, one more B-tree for
--    every append and every lookup by seq). The table is rebuilt once.
-- 2. Queries return events newest first by event time (ties by seq), so
--    every filter's index ends in (time, seq): a page is an index walk, not
--    a sort.
CREATE TABLE audit_events_by_seq (
    seq        INTEGER PRIMARY KEY,
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
INSERT INTO audit_events_by_seq SELECT * FROM audit_events ORDER BY seq;
DROP TABLE audit_events;
ALTER TABLE audit_events_by_seq RENAME TO audit_events;
CREATE INDEX audit_events_action ON audit_events (action, time, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, time, seq);
CREATE INDEX audit_events_service ON audit_events (service, time, seq);
CREATE INDEX audit_events_level_outcome ON audit_events (level, outcome, time, seq);
CREATE INDEX audit_events_time ON audit_events (time, seq);
