-- One row per job. `run_at` (Unix ms) is when a queued job is due and, while
-- it is processing, when its lease expires: one index finds both.
CREATE TABLE queue_jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'processing', 'done', 'failed')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    run_at      BIGINT NOT NULL,
    lease_token TEXT,
    worker      TEXT,
    last_error  TEXT,
    progress    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

CREATE INDEX queue_jobs_due ON queue_jobs (run_at) WHERE state IN ('queued', 'processing');
