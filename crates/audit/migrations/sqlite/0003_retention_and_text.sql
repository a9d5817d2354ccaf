-- Retention: the retained chain starts after the last pruned row, whose seq
-- and hash are kept here (a signed checkpoint at that size anchors them).
CREATE TABLE audit_retained (
    one  INTEGER PRIMARY KEY CHECK (one = 1),
    seq  BIGINT NOT NULL,
    hash BLOB NOT NULL
);
INSERT INTO audit_retained (one, seq, hash) VALUES (1, 0, X'0000000000000000000000000000000000000000000000000000000000000000');

-- Free text over message, action and actor: a contentless FTS5 index keyed
-- by seq (the text stays in audit_events only), deletable by rowid. Its
-- columns have names of their own so a join with audit_events is unambiguous.
CREATE VIRTUAL TABLE audit_fts USING fts5 (
    fts_message, fts_action, fts_actor,
    content = '', contentless_delete = 1
);
INSERT INTO audit_fts (rowid, fts_message, fts_action, fts_actor)
    SELECT seq, message, action, actor FROM audit_events;
