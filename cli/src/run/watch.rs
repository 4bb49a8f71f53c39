//! `zopp run --watch`: follows an environment's `WatchEnvironment` stream and reports each new
//! environment version, reconnecting with backoff whenever the stream drops (a server
//! restart, a network blip), so a long-running child keeps getting its updates.

use std::time::Duration;

use rand_core::{OsRng, RngCore};
use tonic::{Code, Streaming};
use zopp_proto::v1 as pb;

use crate::client::{method, Client, Target};
use crate::error::{Error, Result};
use crate::scope::EnvRef;

/// First wait before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Client {
    /// Opens the stream of `env`'s new versions after `after`.
    ///
    /// # Errors
    /// Transport and server errors.
    pub async fn watch_environment(
        &self,
        env: &EnvRef,
        after: u64,
    ) -> Result<Streaming<pb::WatchEnvironmentEvent>> {
        let req = self.signed(
            method::WATCH_ENVIRONMENT,
            pb::WatchEnvironmentRequest {
                env: Some(env.to_proto()),
                after_env_version: after,
            },
        );
        self.rpc()
            .watch_environment(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.status_error(s, Target::Environment(env)))
    }
}

/// Whether an error means watching cannot succeed by retrying (the principal was revoked, the
/// environment deleted or access withdrawn), as opposed to a passing outage.
pub fn is_permanent(e: &Error) -> bool {
    match e {
        Error::Unreachable { .. } => false,
        Error::Refused { code, .. } => !matches!(
            code,
            Code::Unavailable
                | Code::Internal
                | Code::Unknown
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Cancelled
        ),
        _ => true,
    }
}

/// A self-healing subscription to one environment's changes.
#[derive(Debug)]
pub struct Watcher {
    env: EnvRef,
    after: u64,
    stream: Option<Streaming<pb::WatchEnvironmentEvent>>,
    failures: u32,
}

impl Watcher {
    /// Watches `env` for versions after `after` (the version already running).
    pub fn new(env: EnvRef, after: u64) -> Self {
        Self {
            env,
            after,
            stream: None,
            failures: 0,
        }
    }

    /// Records that the caller now runs `version`, so older events are ignored.
    pub fn seen(&mut self, version: u64) {
        self.after = self.after.max(version);
    }

    /// The next environment version newer than the last one seen. Reconnects as often as
    /// needed; cancelling the future (in a `select!`) loses nothing.
    ///
    /// # Errors
    /// Only errors retrying cannot fix ([`is_permanent`]).
    pub async fn next(&mut self, client: &Client) -> Result<u64> {
        loop {
            if self.stream.is_none() {
                if self.failures > 0 {
                    tokio::time::sleep(backoff(self.failures)).await;
                }
                match client.watch_environment(&self.env, self.after).await {
                    Ok(s) => self.stream = Some(s),
                    Err(e) if is_permanent(&e) => return Err(e),
                    Err(e) => {
                        tracing::debug!(error = %e, "watch: cannot subscribe, retrying");
                        self.failures = self.failures.saturating_add(1);
                        continue;
                    }
                }
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.message().await {
                Ok(Some(ev)) => {
                    self.failures = 0;
                    if ev.env_version > self.after {
                        self.after = ev.env_version;
                        return Ok(ev.env_version);
                    }
                }
                Ok(None) => {
                    // The server ended the stream (draining for a restart): resubscribe.
                    self.stream = None;
                    self.failures = self.failures.saturating_add(1);
                }
                Err(s) => {
                    self.stream = None;
                    let e = client.status_error(s, Target::Environment(&self.env));
                    if is_permanent(&e) {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "watch: stream dropped, reconnecting");
                    self.failures = self.failures.saturating_add(1);
                }
            }
        }
    }
}

/// Exponential backoff with jitter: ~250 ms, 500 ms, 1 s … capped at 30 s.
fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(7))
        .min(MAX_BACKOFF);
    let jitter_ms = OsRng.next_u64() % (base.as_millis() as u64 / 4 + 1);
    base + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(1) >= FIRST_BACKOFF && backoff(1) < FIRST_BACKOFF * 2);
        assert!(backoff(3) >= FIRST_BACKOFF * 4);
        assert!(backoff(50) <= MAX_BACKOFF + MAX_BACKOFF / 4);
    }

    #[test]
    fn outages_are_retried_refusals_are_not() {
        assert!(!is_permanent(&Error::Unreachable {
            server: "s".into(),
            detail: String::new()
        }));
        assert!(!is_permanent(&Error::Refused {
            code: Code::Internal,
            message: String::new()
        }));
        assert!(is_permanent(&Error::Refused {
            code: Code::Unauthenticated,
            message: "principal revoked".into()
        }));
        assert!(is_permanent(&Error::Refused {
            code: Code::PermissionDenied,
            message: String::new()
        }));
    }
}
