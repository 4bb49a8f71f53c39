//! Change notifications for `WatchEnvironment`.
//!
//! Handlers publish an environment's new version after each committed write; watchers subscribe
//! per environment. [`LocalFeed`] is an in-process `tokio::sync::broadcast` per environment; a
//! PostgreSQL deployment with several replicas can implement [`ChangeFeed`] with LISTEN/NOTIFY
//! and feed the same local channels from its listener.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;
use zopp_crypto::ids::EnvironmentId;

use crate::lock;

/// Buffered events per environment; a watcher that falls further behind re-reads the version.
const CAPACITY: usize = 16;

/// Source of environment-version change events.
pub trait ChangeFeed: Send + Sync + 'static {
    /// Subscribes to `env`'s new versions.
    fn subscribe(&self, env: EnvironmentId) -> broadcast::Receiver<u64>;
    /// Announces that `env` reached `env_version` (called after the commit).
    fn publish(&self, env: EnvironmentId, env_version: u64);
}

/// The in-process feed.
#[derive(Default)]
pub struct LocalFeed {
    channels: Mutex<HashMap<EnvironmentId, broadcast::Sender<u64>>>,
}

impl LocalFeed {
    /// An empty feed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Environments with a live channel (for tests).
    pub fn channels(&self) -> usize {
        lock(&self.channels).len()
    }
}

impl ChangeFeed for LocalFeed {
    fn subscribe(&self, env: EnvironmentId) -> broadcast::Receiver<u64> {
        let mut map = lock(&self.channels);
        // Drop channels nobody listens to any more, so the map tracks live watchers only.
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(env)
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    fn publish(&self, env: EnvironmentId, env_version: u64) {
        let mut map = lock(&self.channels);
        if let Some(s) = map.get(&env) {
            if s.send(env_version).is_err() {
                map.remove(&env);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: EnvironmentId = EnvironmentId::from_bytes([1; 16]);
    const F: EnvironmentId = EnvironmentId::from_bytes([2; 16]);

    #[tokio::test]
    async fn delivers_to_subscribers_of_that_environment_only() {
        let feed = LocalFeed::new();
        let mut a = feed.subscribe(E);
        let mut b = feed.subscribe(F);
        feed.publish(E, 3);
        assert_eq!(a.recv().await.expect("event"), 3);
        assert!(b.try_recv().is_err());
    }

    #[test]
    fn forgets_environments_without_watchers() {
        let feed = LocalFeed::new();
        let a = feed.subscribe(E);
        assert_eq!(feed.channels(), 1);
        drop(a);
        feed.publish(E, 1);
        assert_eq!(feed.channels(), 0);
        // Publishing with no channel at all is a no-op.
        feed.publish(F, 1);
        assert_eq!(feed.channels(), 0);
    }
}
