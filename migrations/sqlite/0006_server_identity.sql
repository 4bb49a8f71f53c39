-- zopp schema, version 6 (SQLite): the deployment's server id. Mirrored by
-- migrations/postgres/0006_server_identity.sql.
--
-- Every request signature binds the id of the deployment it is meant for (FORMAT.md §4), so a
-- request signed for one deployment is refused by another that shares a copy of its database.
-- One row, written by the first `zopp-server serve` (random), copied by `migrate-data`, and
-- replaced by `zopp-server server-id --reset` when a copy becomes a deployment of its own.
CREATE TABLE server_identity (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    server_id  BLOB NOT NULL CHECK (length(server_id) = 16)
);
