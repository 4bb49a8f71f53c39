-- zopp schema, version 4 (SQLite only): the read epoch.
--
-- A server keeps the two reads every signed secret read makes (the caller's principal, and the
-- names, grants and secret version it asks for) between changes to the rows they come from.
-- Each such change, by this server or by anything else that writes the file, raises `n` in the
-- same transaction, so a result read under an older `n` is never served again. The audit trail
-- is not among these tables: every read appends to it, and no cached read depends on it.
-- PostgreSQL has no such cache (its replicas would each need one) and no such table.

CREATE TABLE read_epoch (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    n   INTEGER NOT NULL
);
INSERT INTO read_epoch (id, n) VALUES (1, 1);

CREATE TRIGGER users_insert_read_epoch AFTER INSERT ON users
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER users_update_read_epoch AFTER UPDATE ON users
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER users_delete_read_epoch AFTER DELETE ON users
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER workspaces_insert_read_epoch AFTER INSERT ON workspaces
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER workspaces_update_read_epoch AFTER UPDATE ON workspaces
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER workspaces_delete_read_epoch AFTER DELETE ON workspaces
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER principals_insert_read_epoch AFTER INSERT ON principals
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER principals_update_read_epoch AFTER UPDATE ON principals
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER principals_delete_read_epoch AFTER DELETE ON principals
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER projects_insert_read_epoch AFTER INSERT ON projects
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER projects_update_read_epoch AFTER UPDATE ON projects
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER projects_delete_read_epoch AFTER DELETE ON projects
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER environments_insert_read_epoch AFTER INSERT ON environments
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER environments_update_read_epoch AFTER UPDATE ON environments
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER environments_delete_read_epoch AFTER DELETE ON environments
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grants_insert_read_epoch AFTER INSERT ON grants
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grants_update_read_epoch AFTER UPDATE ON grants
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grants_delete_read_epoch AFTER DELETE ON grants
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grant_keys_insert_read_epoch AFTER INSERT ON grant_keys
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grant_keys_update_read_epoch AFTER UPDATE ON grant_keys
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER grant_keys_delete_read_epoch AFTER DELETE ON grant_keys
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_versions_insert_read_epoch AFTER INSERT ON secret_versions
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_versions_update_read_epoch AFTER UPDATE ON secret_versions
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_versions_delete_read_epoch AFTER DELETE ON secret_versions
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_heads_insert_read_epoch AFTER INSERT ON secret_heads
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_heads_update_read_epoch AFTER UPDATE ON secret_heads
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;

CREATE TRIGGER secret_heads_delete_read_epoch AFTER DELETE ON secret_heads
BEGIN
    UPDATE read_epoch SET n = n + 1 WHERE id = 1;
END;
