-- Per-address and per-client rate limits counted by every identity replica
-- (rate_limits.rs): each key's current fixed window. Times: window_start in
-- Unix milliseconds, expires_at in Unix seconds (for the purge).
CREATE TABLE rate_limit_windows (
    limit_key TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    hits INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX rate_limit_windows_expires_at ON rate_limit_windows (expires_at);
