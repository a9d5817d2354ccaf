-- Each store its own database (docs/packaging.md): identity's is
-- POSTGRES_DB; the audit log and the document records get theirs here.
CREATE DATABASE audit;
CREATE DATABASE docs;
