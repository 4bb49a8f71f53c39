-- zopp schema, version 5 (SQLite): signed key statements (threat-model/FORMAT.md §13). Mirrored
-- by migrations/postgres/0005_key_statements.sql.
--
-- Every key a client uses comes with statements signed by the principal that made it: the
-- creation or rotation of a scope key (with a public commitment to the key), a grant wrap, a
-- child wrap or an epoch link. The server stores and returns them and cannot make one; clients
-- verify them. Append-only: a statement is never changed or removed while its workspace lives.
CREATE TABLE key_statements (
    -- SHA-256 of body ‖ signature: the same statement stored twice is one row.
    hash          BLOB PRIMARY KEY,
    workspace_id  TEXT NOT NULL,
    -- The principal that signed it (also inside the body).
    signer_id     TEXT NOT NULL,
    -- Id of the scope whose key the statement is about (the child's, for a child statement).
    subject_id    TEXT NOT NULL,
    -- The principal a grant statement wraps to; NULL for other statements.
    recipient_id  TEXT,
    body          BLOB NOT NULL,
    signature     BLOB NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX key_statements_by_workspace ON key_statements (workspace_id, subject_id);

CREATE TRIGGER key_statements_no_update BEFORE UPDATE ON key_statements
BEGIN
    SELECT RAISE(ABORT, 'key statements are append-only');
END;
