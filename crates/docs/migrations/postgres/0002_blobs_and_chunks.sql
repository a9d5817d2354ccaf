-- Shared state of docs replicas (docs/scale-out.md).
--
-- Blobs, when ECHO_DOCS_BLOB_URL names this database: the bytes of a
-- document, named by their SHA-256 (hex).
CREATE TABLE docs_blobs (
    sha256 TEXT PRIMARY KEY,
    bytes  BYTEA NOT NULL
);

-- The search index, with ECHO_DOCS_SEARCH=postgres: one row per chunk of a
-- document's text, its owner on every row (the filter of every search),
-- its English lexemes in `terms` for full-text search. Chunks go with
-- their document's record: a record deleted while a replica indexes it
-- takes the chunks with it, or refuses them.
CREATE TABLE docs_chunks (
    seq         BIGSERIAL PRIMARY KEY,
    document_id TEXT NOT NULL REFERENCES docs_documents (id) ON DELETE CASCADE,
    owner       TEXT NOT NULL,
    name        TEXT NOT NULL,
    position    BIGINT NOT NULL,
    start       BIGINT NOT NULL,
    text        TEXT NOT NULL,
    terms       TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);

CREATE INDEX docs_chunks_document ON docs_chunks (document_id);
CREATE INDEX docs_chunks_owner ON docs_chunks (owner);
CREATE INDEX docs_chunks_terms ON docs_chunks USING GIN (terms);
