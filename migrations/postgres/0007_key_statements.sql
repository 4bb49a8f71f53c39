-- zopp schema, version 5 (PostgreSQL): signed key statements (threat-model/FORMAT.md §13).
-- Mirrors migrations/sqlite/0005_key_statements.sql, which explains the columns.
CREATE TABLE key_statements (
    hash          BYTEA PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    signer_id     TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    recipient_id  TEXT,
    body          BYTEA NOT NULL,
    signature     BYTEA NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX key_statements_by_workspace ON key_statements (workspace_id, subject_id);

CREATE FUNCTION key_statements_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'key statements are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER key_statements_no_update BEFORE UPDATE ON key_statements
    FOR EACH ROW EXECUTE FUNCTION key_statements_append_only();
