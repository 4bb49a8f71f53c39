-- zopp schema, version 2 (SQLite): teams (issue #3). Mirrored by migrations/postgres/0003_teams.sql.
--
-- Append-only like every migration. Adds key generations for workspace and project keys, how a
-- principal was admitted through a workspace invite, workspace invites, device exports, and the
-- indexes that grant listings and rotations need. Nothing here holds a plaintext key: invites and
-- exports hold keys sealed under secrets only their codes carry (THREAT-MODEL.md §4.7).

-- Workspace and project keys are rotated by replacement: each rotation draws a new random key and
-- bumps this generation, so the server can tell a current grant key from a stale one. Environment
-- keys keep their own epochs (environments.key_epoch) because sealed versions name them.
ALTER TABLE workspaces ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 1 CHECK (key_epoch >= 1);
ALTER TABLE projects ADD COLUMN key_epoch INTEGER NOT NULL DEFAULT 1 CHECK (key_epoch >= 1);

-- A principal admitted through a workspace invite: the admitter is the inviter, whose signature
-- vouches for the invite's one-time key, which signed `admission_signature` (FORMAT.md §6.3).
ALTER TABLE principals ADD COLUMN admission_invite_id TEXT;
ALTER TABLE principals ADD COLUMN admission_invite_key BLOB;
ALTER TABLE principals ADD COLUMN admission_invite_signature BLOB;
-- Live service principals of a workspace have distinct names.
CREATE UNIQUE INDEX principals_service_name ON principals (workspace_id, name)
    WHERE workspace_id IS NOT NULL AND revoked_at IS NULL;

-- Single-use workspace invites. The code carries a secret; the server keeps SHA-256 of the
-- authenticator derived from it, and the workspace key sealed under another key derived from it,
-- which it cannot open. The sealed key is erased once the invite is used, revoked or superseded.
CREATE TABLE workspace_invites (
    id                TEXT PRIMARY KEY,
    workspace_id      TEXT NOT NULL REFERENCES workspaces (id),
    role              SMALLINT NOT NULL CHECK (role IN (1, 2, 3)),
    auth_hash         BLOB NOT NULL,
    sealed_key        BLOB NOT NULL,
    key_epoch         INTEGER NOT NULL CHECK (key_epoch >= 1),
    invite_key        BLOB NOT NULL,
    invite_signature  BLOB NOT NULL,
    created_by        TEXT NOT NULL REFERENCES principals (id),
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_at           BIGINT,
    used_by           TEXT REFERENCES principals (id),
    revoked_at        BIGINT
);
CREATE INDEX workspace_invites_workspace ON workspace_invites (workspace_id, created_at);

-- A new device of an existing user, prepared by one of the user's devices: the new principal's
-- private keys sealed under a key derived from a passphrase (Argon2id) and the export code's
-- secret, waiting for `zopp principal import` until it expires.
CREATE TABLE device_exports (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id),
    principal_id  TEXT NOT NULL REFERENCES principals (id),
    auth_hash     BLOB NOT NULL,
    sealed_keys   BLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    fetches       INTEGER NOT NULL DEFAULT 0,
    completed_at  BIGINT
);
CREATE INDEX device_exports_user ON device_exports (user_id);

-- Grant listings and rotations read every live grant of a workspace; keys follow principals.
CREATE INDEX grants_live_workspace ON grants (workspace_id, scope_kind) WHERE revoked_at IS NULL;
CREATE INDEX grant_keys_principal ON grant_keys (principal_id);
