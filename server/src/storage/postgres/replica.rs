//! What several replicas on one PostgreSQL database must share beyond the tables themselves:
//! the replay cache ([`PgReplayCache`], the `replay_nonces` table) and the change feed
//! ([`PgFeed`], LISTEN/NOTIFY on [`CHANGE_CHANNEL`]).
//!
//! A signed request replayed to another replica is refused because every replica records nonces
//! in the same table; a `WatchEnvironment` stream open on one replica sees a write made through
//! another because each committed write sends a NOTIFY (in its own transaction, see
//! `write_secrets`) that every replica's listener turns into a local broadcast.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use sqlx::Row;
use tokio::sync::broadcast;
use zopp_crypto::ids::EnvironmentId;
use zopp_crypto::sign::NONCE_LEN;

use super::{PgResultExt, CHANGE_CHANNEL};
use crate::auth::ReplayCache;
use crate::feed::ChangeFeed;
use crate::lock;
use crate::storage::StorageError;

/// How often at most one replica deletes expired nonces.
const PRUNE_EVERY_MS: i64 = 10_000;
/// Buffered events per environment, as in the in-process feed.
const CAPACITY: usize = 16;
/// Pause between attempts to re-establish the listening connection during an outage.
const RELISTEN_BACKOFF: Duration = Duration::from_millis(500);
/// How long one attempt to open the LISTEN connection may take.
const RELISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The NOTIFY payload announcing that `env` reached `env_version`.
pub fn change_payload(env: EnvironmentId, env_version: u64) -> String {
    format!("{env}:{env_version}")
}

/// Parses a [`change_payload`]; `None` for anything else on the channel.
pub fn parse_change_payload(payload: &str) -> Option<(EnvironmentId, u64)> {
    let (env, version) = payload.split_once(':')?;
    Some((EnvironmentId::try_parse(env).ok()?, version.parse().ok()?))
}

/// The replay cache shared by every replica: nonces in the `replay_nonces` table.
pub struct PgReplayCache {
    pool: PgPool,
    last_prune_ms: AtomicI64,
}

impl PgReplayCache {
    /// A cache over `pool` (the migrated zopp database).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            last_prune_ms: AtomicI64::new(0),
        }
    }

    /// Deletes expired nonces, at most once per [`PRUNE_EVERY_MS`] per replica.
    async fn maybe_prune(&self, now_ms: i64) -> Result<(), StorageError> {
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now_ms - last < PRUNE_EVERY_MS
            || self
                .last_prune_ms
                .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
        sqlx::query("DELETE FROM replay_nonces WHERE expires_at <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await
            .pg()?;
        Ok(())
    }
}

#[async_trait]
impl ReplayCache for PgReplayCache {
    async fn check_and_insert(
        &self,
        nonce: &[u8; NONCE_LEN],
        expires_at_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StorageError> {
        self.maybe_prune(now_ms).await?;
        // One atomic statement: a new nonce is inserted; a known one is taken over only when
        // its entry has expired. No row back means a live entry exists, i.e. a replay. Two
        // replicas racing on the same nonce serialise on the primary key, and exactly one wins.
        let row = sqlx::query(
            "INSERT INTO replay_nonces (nonce, expires_at) VALUES ($1, $2) \
             ON CONFLICT (nonce) DO UPDATE SET expires_at = excluded.expires_at \
             WHERE replay_nonces.expires_at <= $3 \
             RETURNING 1",
        )
        .bind(&nonce[..])
        .bind(expires_at_ms)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .pg()?;
        Ok(row.is_some())
    }
}

/// The change feed of a replica: local broadcast channels fed by its own writes and by a
/// LISTEN connection that hears every replica's writes.
pub struct PgFeed {
    channels: Arc<Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>>,
    listener: tokio::task::JoinHandle<()>,
}

impl PgFeed {
    /// Starts listening on `pool`'s database. Must be called inside a Tokio runtime; the
    /// listening task ends when the feed is dropped.
    ///
    /// The LISTEN connection comes from a one-connection pool of its own (same URL and TLS
    /// settings), so it never takes a slot that calls need, whatever the pool size; `pool` serves
    /// the version re-reads after a reconnect.
    pub fn start(pool: PgPool) -> Self {
        let channels: Arc<Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>> = Arc::default();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(RELISTEN_TIMEOUT)
            .connect_lazy_with((*pool.connect_options()).clone());
        let listener = tokio::spawn(listen(listen_pool, pool, channels.clone()));
        Self { channels, listener }
    }
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn deliver(
    channels: &Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>,
    env: EnvironmentId,
    env_version: u64,
) {
    let mut map = lock(channels);
    if let Some(s) = map.get(&env) {
        if s.send(env_version).is_err() {
            map.remove(&env);
        }
    }
}

impl ChangeFeed for PgFeed {
    fn subscribe(&self, env: EnvironmentId) -> broadcast::Receiver<u64> {
        let mut map = lock(&self.channels);
        // Drop channels nobody listens to any more, so the map tracks live watchers only.
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(env)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, env: EnvironmentId, env_version: u64) {
        // Local watchers hear this replica's own writes at once; the NOTIFY arrives as well,
        // and watchers skip versions they have already seen.
        deliver(&self.channels, env, env_version);
    }
}

async fn connect_listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    // Notifications are only a hint while reconnecting: we re-read versions ourselves below.
    l.ignore_pool_close_event(true);
    l.listen(CHANGE_CHANNEL).await?;
    Ok(l)
}

/// Receives notifications until the feed is dropped. When the connection drops, notifications
/// sent meanwhile are lost, so once listening again it re-reads the version of every watched
/// environment and delivers it: a watcher misses nothing, it may only see a change late.
async fn listen(
    listen_pool: PgPool,
    pool: PgPool,
    channels: Arc<Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>>,
) {
    let mut resync = false;
    loop {
        let mut listener = match connect_listener(&listen_pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: cannot listen; retrying");
                resync = true;
                tokio::time::sleep(RELISTEN_BACKOFF).await;
                continue;
            }
        };
        if resync {
            if let Err(e) = resync_watched(&pool, &channels).await {
                tracing::warn!(error = %e, "change feed: cannot re-read watched versions");
                tokio::time::sleep(RELISTEN_BACKOFF).await;
                continue;
            }
            tracing::info!("change feed: listening again");
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match parse_change_payload(n.payload()) {
                    Some((env, v)) => deliver(&channels, env, v),
                    None => tracing::debug!("change feed: ignoring a malformed payload"),
                },
                // `None`: the connection was lost; `Err`: it failed. Either way start over.
                Ok(None) => {
                    tracing::warn!("change feed: connection lost");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: connection failed");
                    break;
                }
            }
        }
        resync = true;
        drop(listener);
        tokio::time::sleep(RELISTEN_BACKOFF).await;
    }
}

async fn resync_watched(
    pool: &PgPool,
    channels: &Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>,
) -> Result<(), StorageError> {
    let watched: Vec<String> = {
        let mut map = lock(channels);
        map.retain(|_, s| s.receiver_count() > 0);
        map.keys().map(|e| e.to_string()).collect()
    };
    if watched.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query("SELECT id, env_version FROM environments WHERE id = ANY($1)")
        .bind(&watched)
        .fetch_all(pool)
        .await
        .pg()?;
    for r in rows {
        let id: String = r.try_get(0).pg()?;
        let v: i64 = r.try_get(1).pg()?;
        if let (Ok(env), Ok(v)) = (EnvironmentId::try_parse(&id), u64::try_from(v)) {
            deliver(channels, env, v);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_rejects_garbage() {
        let env = EnvironmentId::from_bytes([9; 16]);
        assert_eq!(
            parse_change_payload(&change_payload(env, 42)),
            Some((env, 42))
        );
        assert_eq!(parse_change_payload("nonsense"), None);
        assert_eq!(parse_change_payload("not-an-id:1"), None);
        assert_eq!(parse_change_payload(&format!("{env}:x")), None);
    }
}
