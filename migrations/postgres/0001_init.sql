-- zopp schema, version 1 (PostgreSQL).
--
-- Mirrors migrations/sqlite/0001_init.sql table for table, constraint for constraint and index
-- for index, so both backends enforce the same rules and `zopp-server migrate-data` can copy rows
-- one to one. Differences are only those of the dialect: BYTEA for BLOB, and PL/pgSQL trigger
-- functions for SQLite's RAISE(ABORT) triggers.
--
-- Append-only: a released migration is never edited (sqlx checks its checksum); changes go in a
-- new numbered file, mirrored in the other backend's directory.
--
-- Nothing here holds a plaintext secret name or value: secrets are `name_digest` plus a sealed
-- `envelope`; every key is a wrapped key. Workspace, project and environment names are routing
-- labels and are stored in clear (docs/ARCHITECTURE.md "What the server sees").

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    email       TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
-- Emails are unique regardless of ASCII case.
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE UNIQUE INDEX workspaces_live_name ON workspaces (name) WHERE deleted_at IS NULL;

-- A principal is one device of a user, or a service principal owned by a workspace.
CREATE TABLE principals (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT REFERENCES users (id),
    workspace_id         TEXT REFERENCES workspaces (id),
    name                 TEXT NOT NULL,
    signing_key          BYTEA NOT NULL,
    agreement_key        BYTEA NOT NULL,
    admitted_by          TEXT REFERENCES principals (id),
    admission_signature  BYTEA NOT NULL,
    created_at           BIGINT NOT NULL,
    revoked_at           BIGINT,
    expires_at           BIGINT,
    -- The server's share of a service principal's X25519 secret (FORMAT.md §10); deleted on
    -- revocation so a leaked token decrypts nothing afterwards.
    server_key_share     BYTEA,
    CHECK ((user_id IS NULL) <> (workspace_id IS NULL))
);
CREATE UNIQUE INDEX principals_signing_key ON principals (signing_key);
CREATE INDEX principals_user ON principals (user_id);
CREATE INDEX principals_workspace ON principals (workspace_id);

-- Single-use server invites; only SHA-256 of the token's secret is kept.
CREATE TABLE server_invites (
    id           TEXT PRIMARY KEY,
    secret_hash  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT,
    used_by      TEXT REFERENCES principals (id)
);

CREATE TABLE projects (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    -- PK wrapped under WK.
    wrapped_key   BYTEA NOT NULL,
    created_by    TEXT NOT NULL REFERENCES principals (id),
    created_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE UNIQUE INDEX projects_live_name ON projects (workspace_id, name) WHERE deleted_at IS NULL;

CREATE TABLE environments (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects (id),
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    name          TEXT NOT NULL,
    -- EK of the current epoch wrapped under PK.
    wrapped_key   BYTEA NOT NULL,
    key_epoch     INTEGER NOT NULL DEFAULT 1 CHECK (key_epoch >= 1),
    env_version   BIGINT NOT NULL DEFAULT 0 CHECK (env_version >= 0),
    created_by    TEXT NOT NULL REFERENCES principals (id),
    created_at    BIGINT NOT NULL,
    deleted_at    BIGINT
);
CREATE UNIQUE INDEX environments_live_name ON environments (project_id, name) WHERE deleted_at IS NULL;

-- EK(epoch) wrapped under EK(epoch + 1), so current grantees can read history after rotation.
CREATE TABLE environment_key_epochs (
    environment_id  TEXT NOT NULL REFERENCES environments (id),
    epoch           INTEGER NOT NULL CHECK (epoch >= 1),
    wrapped_key     BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (environment_id, epoch)
);

-- A role at a scope, held by a user (all of its principals) or by one principal. The ancestors'
-- ids are stored with the scope so every grant of a caller in a workspace is one index range.
CREATE TABLE grants (
    id              TEXT PRIMARY KEY,
    scope_kind      SMALLINT NOT NULL CHECK (scope_kind IN (1, 2, 3)),
    workspace_id    TEXT NOT NULL REFERENCES workspaces (id),
    project_id      TEXT REFERENCES projects (id),
    environment_id  TEXT REFERENCES environments (id),
    role            SMALLINT NOT NULL CHECK (role IN (1, 2, 3)),
    user_id         TEXT REFERENCES users (id),
    principal_id    TEXT REFERENCES principals (id),
    granted_by      TEXT NOT NULL REFERENCES principals (id),
    created_at      BIGINT NOT NULL,
    revoked_at      BIGINT,
    CHECK ((user_id IS NULL) <> (principal_id IS NULL)),
    CHECK ((scope_kind = 1 AND project_id IS NULL AND environment_id IS NULL)
        OR (scope_kind = 2 AND project_id IS NOT NULL AND environment_id IS NULL)
        OR (scope_kind = 3 AND project_id IS NOT NULL AND environment_id IS NOT NULL))
);
CREATE INDEX grants_live_user ON grants (user_id, workspace_id) WHERE revoked_at IS NULL;
CREATE INDEX grants_live_principal ON grants (principal_id, workspace_id) WHERE revoked_at IS NULL;

-- The granted scope's key wrapped to one principal, per key epoch.
CREATE TABLE grant_keys (
    grant_id      TEXT NOT NULL REFERENCES grants (id),
    principal_id  TEXT NOT NULL REFERENCES principals (id),
    key_epoch     INTEGER NOT NULL CHECK (key_epoch >= 1),
    wrapped_key   BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (grant_id, principal_id, key_epoch)
);

-- Immutable secret versions. A delete is a tombstone version with an empty envelope.
CREATE TABLE secret_versions (
    environment_id  TEXT NOT NULL REFERENCES environments (id),
    name_digest     BYTEA NOT NULL,
    version         BIGINT NOT NULL CHECK (version >= 1),
    env_version     BIGINT NOT NULL CHECK (env_version >= 1),
    key_epoch       INTEGER NOT NULL CHECK (key_epoch >= 1),
    envelope        BYTEA NOT NULL,
    deleted         BOOLEAN NOT NULL,
    writer_id       TEXT NOT NULL REFERENCES principals (id),
    signature       BYTEA NOT NULL,
    prev_hash       BYTEA NOT NULL,
    hash            BYTEA NOT NULL,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (environment_id, name_digest, version)
);
-- Point-in-time reads by environment version or by time stay within one environment.
CREATE INDEX secret_versions_env_version ON secret_versions (environment_id, env_version);
CREATE INDEX secret_versions_env_time ON secret_versions (environment_id, created_at);

CREATE FUNCTION secret_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'secret versions are immutable' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER secret_versions_no_update BEFORE UPDATE ON secret_versions
    FOR EACH ROW EXECUTE FUNCTION secret_versions_immutable();
CREATE TRIGGER secret_versions_no_delete BEFORE DELETE ON secret_versions
    FOR EACH ROW EXECUTE FUNCTION secret_versions_immutable();
-- Row triggers do not fire on TRUNCATE; refuse it as well.
CREATE TRIGGER secret_versions_no_truncate BEFORE TRUNCATE ON secret_versions
    FOR EACH STATEMENT EXECUTE FUNCTION secret_versions_immutable();

-- Latest version of each secret, kept in the same transaction as the version it points to.
CREATE TABLE secret_heads (
    environment_id  TEXT NOT NULL,
    name_digest     BYTEA NOT NULL,
    version         BIGINT NOT NULL,
    deleted         BOOLEAN NOT NULL,
    hash            BYTEA NOT NULL,
    PRIMARY KEY (environment_id, name_digest),
    FOREIGN KEY (environment_id, name_digest, version)
        REFERENCES secret_versions (environment_id, name_digest, version)
);

-- Hash-chained, append-only audit trail: one chain per workspace (its id) and 'server'.
CREATE TABLE audit_entries (
    chain                 TEXT NOT NULL,
    seq                   BIGINT NOT NULL CHECK (seq >= 1),
    time_ms               BIGINT NOT NULL,
    actor                 TEXT NOT NULL,
    action                TEXT NOT NULL,
    scope                 TEXT NOT NULL,
    target                TEXT NOT NULL,
    method                TEXT NOT NULL,
    request_timestamp_ms  BIGINT NOT NULL,
    nonce                 BYTEA NOT NULL,
    request_hash          BYTEA NOT NULL,
    signature             BYTEA NOT NULL,
    result                TEXT NOT NULL,
    prev_hash             BYTEA NOT NULL,
    hash                  BYTEA NOT NULL,
    PRIMARY KEY (chain, seq)
);
CREATE INDEX audit_entries_time ON audit_entries (chain, time_ms);
CREATE INDEX audit_entries_action ON audit_entries (chain, action, seq);
CREATE INDEX audit_entries_actor ON audit_entries (chain, actor, seq);

CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit entries are append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_entries_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();
