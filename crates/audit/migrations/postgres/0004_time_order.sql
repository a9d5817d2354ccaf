-- Queries return events newest first by event time (ties by seq), so every
-- filter's index ends in (time, seq): a page is an index walk, not a sort.
DROP INDEX audit_events_action;
DROP INDEX audit_events_actor;
DROP INDEX audit_events_service;
DROP INDEX audit_events_level_outcome;
CREATE INDEX audit_events_action ON audit_events (action, time, seq);
CREATE INDEX audit_events_actor ON audit_events (actor, time, seq);
CREATE INDEX audit_events_service ON audit_events (service, time, seq);
CREATE INDEX audit_events_level_outcome ON audit_events (level, outcome, time, seq);
