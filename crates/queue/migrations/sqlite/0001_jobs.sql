-- One row per job. `run_at` (Unix ms) is when a queued job is due and, while
-- it is processing, when its lease expires: one index finds both.
CREATE TABLE queue_jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'processing', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    run_at      INTEGER NOT NULL,
    lease_token TEXT,
    worker      TEXT,
    last_error  TEXT,
    progress    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);

CREATE INDEX queue_jobs_due ON queue_jobs (run_at) WHERE state IN ('queued', 'processing');
