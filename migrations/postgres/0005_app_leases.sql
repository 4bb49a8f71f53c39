-- zopp schema, version 5 (PostgreSQL): app leases and the last apply of each app (docs/platform.md).
--
-- An app is known only by its name digest, as every secret is. A lease is live while
-- `expires_at` is in the future: a holder that died stops blocking once its TTL runs out, and
-- the next taker overwrites the row. `app_applies` keeps the last apply of each app (the whole
-- history is in the audit trail): versions, digests and an exit code, never a name or a value.

CREATE TABLE app_leases (
    environment_id  TEXT NOT NULL REFERENCES environments (id),
    app_digest      BYTEA NOT NULL CHECK (octet_length(app_digest) = 32),
    lease_id        TEXT NOT NULL,
    holder_id       TEXT NOT NULL REFERENCES principals (id),
    acquired_at     BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    PRIMARY KEY (environment_id, app_digest)
);

CREATE TABLE app_applies (
    environment_id      TEXT NOT NULL REFERENCES environments (id),
    app_digest          BYTEA NOT NULL CHECK (octet_length(app_digest) = 32),
    principal_id        TEXT NOT NULL REFERENCES principals (id),
    app_version         BIGINT NOT NULL CHECK (app_version >= 0),
    kubeconfig_version  BIGINT NOT NULL CHECK (kubeconfig_version >= 0),
    rendering_sha256    BYTEA NOT NULL CHECK (octet_length(rendering_sha256) = 32),
    exit_code           INTEGER NOT NULL,
    -- Per secret used: environment id (16 bytes), name digest (32), version (8, big-endian).
    secrets             BYTEA NOT NULL,
    started_at          BIGINT NOT NULL,
    finished_at         BIGINT NOT NULL,
    PRIMARY KEY (environment_id, app_digest)
);
