-- zopp schema, version 3 (SQLite): version retention (issue #5). Mirrored by
-- migrations/postgres/0004_retention.sql.
--
-- Append-only like every migration. By default every secret version is kept forever (DESIGN.md
-- §1.3). An admin may set a per-environment limit: each write then prunes, in its own
-- transaction, the versions of each secret older than the newest `keep_versions`. The audit
-- trail is never pruned.

-- NULL: keep every version (the default). N >= 1: keep the newest N versions of each secret.
ALTER TABLE environments ADD COLUMN keep_versions BIGINT CHECK (keep_versions IS NULL OR keep_versions >= 1);
-- The oldest environment version whose state is still complete: a point-in-time read of an
-- earlier version would miss pruned versions, so the server refuses it instead of answering
-- with wrong data. 0 while nothing was ever pruned.
ALTER TABLE environments ADD COLUMN history_floor BIGINT NOT NULL DEFAULT 0 CHECK (history_floor >= 0);

-- Versions stay immutable and undeletable, except for what the environment's retention limit
-- allows: a version at least `keep_versions` behind its secret's head. The database itself keeps
-- refusing any other deletion, whatever the server's code does.
DROP TRIGGER secret_versions_no_delete;
CREATE TRIGGER secret_versions_no_delete BEFORE DELETE ON secret_versions
WHEN NOT EXISTS (
    SELECT 1 FROM environments e JOIN secret_heads h ON h.environment_id = e.id
    WHERE e.id = OLD.environment_id AND h.name_digest = OLD.name_digest
      AND e.keep_versions IS NOT NULL AND OLD.version <= h.version - e.keep_versions
)
BEGIN
    SELECT RAISE(ABORT, 'secret versions are immutable (only the retention limit prunes them)');
END;
