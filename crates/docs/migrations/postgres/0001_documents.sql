-- One row per uploaded document. The bytes are the blob named by `sha256`
-- (shared by every row with the same content); `job_id` is the indexing
-- job, set right after the job is queued. `seq` orders uploads of the same
-- second.
CREATE TABLE docs_documents (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    owner      TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    size       BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    job_id     TEXT,
    created_at BIGINT NOT NULL
);

CREATE INDEX docs_documents_owner ON docs_documents (owner, created_at);
CREATE INDEX docs_documents_sha256 ON docs_documents (sha256);
