-- Indexes for the filters of GET /v1/events (newest first by seq).
CREATE INDEX audit_events_service ON audit_events (service, seq);
CREATE INDEX audit_events_level_outcome ON audit_events (level, outcome, seq);
DROP INDEX audit_events_time;
CREATE INDEX audit_events_time ON audit_events (time, seq);
