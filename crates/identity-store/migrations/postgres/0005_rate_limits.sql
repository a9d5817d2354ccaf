-- Per-address and per-client rate limits counted by every identity replica
-- (rate_limits.rs): each key's current fixed window. Times: window_start in
-- Unix milliseconds, expires_at in Unix seconds (for the purge).
CREATE TABLE rate_limit_windows (
    limit_key TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX rate_limit_windows_expires_at ON rate_limit_windows (expires_at);
