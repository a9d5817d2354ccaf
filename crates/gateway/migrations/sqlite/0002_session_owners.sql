-- The user's sessions page: each session's browser and address at
-- sign-in, and a user's sessions found by subject.
ALTER TABLE sessions ADD COLUMN user_agent TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN address TEXT NOT NULL DEFAULT '';
CREATE INDEX sessions_subject ON sessions (subject, last_seen_at);
