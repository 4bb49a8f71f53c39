-- Shared replay cache (PostgreSQL only): several stateless replicas behind one load balancer
-- must refuse a signed request replayed to any of them, so the nonces seen inside the replay
-- window live in the database instead of each process's memory (DESIGN.md §4). SQLite runs a
-- single server process and keeps its replay cache in memory.
--
-- Rows are disposable: each expires 61 s after its request's timestamp and is pruned by the
-- servers; losing the table only reopens the window that the 60 s skew check already bounds.
CREATE TABLE replay_nonces (
    nonce       BYTEA PRIMARY KEY,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX replay_nonces_expiry ON replay_nonces (expires_at);
